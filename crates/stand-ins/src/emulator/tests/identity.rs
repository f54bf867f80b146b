//! Entra ID side: discovery and JWKS, client credentials with both assertion styles and
//! every assertion failure, the authorization-code flow with PKCE and its failures.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use time::{Duration as TimeDuration, OffsetDateTime};

use super::{Cred, DOMAIN, Fixture, REDIRECT, TENANT, aadsts, claims, pkce, spec};
use crate::emulator::assertion::ASSERTION_TYPE;

#[tokio::test]
async fn discovery_document_by_id_and_by_domain() {
    let fx = Fixture::new(spec(3), &[]).await;
    let base = fx.base();
    for key in [TENANT, DOMAIN] {
        let (status, doc) = fx
            .fetch(&format!("/{key}/v2.0/.well-known/openid-configuration"))
            .await;
        assert_eq!(status, 200);
        let tenant_url = |path: &str| json!(format!("{base}/{TENANT}/{path}"));
        assert_eq!(doc["issuer"], tenant_url("v2.0"));
        assert_eq!(doc["token_endpoint"], tenant_url("oauth2/v2.0/token"));
        assert_eq!(
            doc["authorization_endpoint"],
            tenant_url("oauth2/v2.0/authorize")
        );
        assert_eq!(doc["jwks_uri"], tenant_url("discovery/v2.0/keys"));
        assert_eq!(
            doc["end_session_endpoint"],
            tenant_url("oauth2/v2.0/logout")
        );
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            json!(["RS256"])
        );
        assert!(
            doc["response_types_supported"]
                .as_array()
                .unwrap()
                .contains(&json!("code"))
        );
    }
    let (status, body) = fx
        .fetch("/nobody.onmicrosoft.com/v2.0/.well-known/openid-configuration")
        .await;
    assert_eq!((status, aadsts(&body)), (400, 90002));
}

#[tokio::test]
async fn jwks_lists_keys_newest_first_with_overlap() {
    let fx = Fixture::new(spec(3), &[]).await;
    let path = format!("/{TENANT}/discovery/v2.0/keys");
    let (_, keys) = fx.fetch(&path).await;
    let key = &keys["keys"][0];
    for field in ["kty", "use", "kid", "x5t", "n", "e", "issuer"] {
        assert!(key[field].is_string(), "{field} missing in {key}");
    }
    assert_eq!(
        (key["kty"].as_str(), key["use"].as_str()),
        (Some("RSA"), Some("sig"))
    );
    assert_eq!(key["issuer"], format!("{}/{TENANT}/v2.0", fx.base()));
    fx.emu().rotate_signing_key();
    let (_, rotated) = fx.fetch(&path).await;
    assert_eq!(rotated["keys"].as_array().unwrap().len(), 2);
    assert_ne!(rotated["keys"][0]["kid"], key["kid"]);
    assert_eq!(
        rotated["keys"][1]["kid"], key["kid"],
        "the previous key stays listed"
    );
    fx.emu().retire_old_signing_keys();
    assert_eq!(fx.fetch(&path).await.1["keys"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn client_credentials_with_ps256_and_rs256() {
    let fx = Fixture::new(spec(3), &["User.Read.All"]).await;
    let scope = format!("{}/.default", fx.base());
    for alg in [Algorithm::PS256, Algorithm::RS256] {
        let assertion = fx.cred.assertion(alg, &fx.client_id, &fx.token_url());
        let (status, body) = fx
            .token_request(&[
                ("grant_type", "client_credentials"),
                ("client_id", &fx.client_id),
                ("scope", &scope),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &assertion),
            ])
            .await;
        assert_eq!(status, 200, "{alg:?}: {body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3599);
        assert_eq!(body["ext_expires_in"], 3599);
        let access = claims(body["access_token"].as_str().unwrap());
        assert_eq!(access["aud"], fx.base());
        assert_eq!(access["tid"], TENANT);
        assert_eq!(access["appid"], fx.client_id.as_str());
        assert_eq!(access["roles"], json!(["User.Read.All"]));
    }
    assert_eq!(fx.emu().stats().token_requests, 2);
}

/// `(status, AADSTS code, description)` of a client-credentials request with `assertion`.
async fn attempt(fx: &Fixture, client_id: &str, assertion: &str) -> (u16, u64, String) {
    let scope = format!("{}/.default", fx.base());
    let (status, body) = fx
        .token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("scope", &scope),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion),
        ])
        .await;
    (
        status,
        aadsts(&body),
        body["error_description"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn unknown_thumbprint_is_700027_key_not_found() {
    let fx = Fixture::new(spec(2), &[]).await;
    let stranger = Cred::new();
    let (status, code, text) = attempt(
        &fx,
        &fx.client_id,
        &stranger.assertion(Algorithm::PS256, &fx.client_id, &fx.token_url()),
    )
    .await;
    assert_eq!((status, code), (401, 700027));
    assert!(text.contains("The key was not found."), "{text}");
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert!(lines[0].starts_with("AADSTS700027: "));
    assert!(
        lines[1].starts_with("Trace ID: ")
            && lines[2].starts_with("Correlation ID: ")
            && lines[3].starts_with("Timestamp: ")
    );
}

#[tokio::test]
async fn expired_certificate_is_700027() {
    let fx = Fixture::new(spec(2), &[]).await;
    let now = OffsetDateTime::now_utc();
    let old = Cred::valid(now - TimeDuration::days(400), now - TimeDuration::days(35));
    fx.emu()
        .upload_certificate(TENANT, &fx.client_id, &old.cert_pem)
        .unwrap();
    let (status, code, text) = attempt(
        &fx,
        &fx.client_id,
        &old.assertion(Algorithm::RS256, &fx.client_id, &fx.token_url()),
    )
    .await;
    assert_eq!((status, code), (401, 700027));
    assert!(text.contains("The key used is expired."), "{text}");
}

#[tokio::test]
async fn assertion_claim_failures_have_their_codes() {
    let fx = Fixture::new(spec(2), &[]).await;
    let (id, url) = (fx.client_id.clone(), fx.token_url());
    let wrong_aud = fx.cred.assertion(
        Algorithm::PS256,
        &id,
        &format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"),
    );
    assert_eq!(attempt(&fx, &id, &wrong_aud).await.1, 50012);
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let claims = |extra: Value| {
        let mut c = json!({"aud": url, "iss": id, "sub": id, "jti": uuid::Uuid::new_v4().to_string(), "nbf": now, "exp": now + 300});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let expired = fx.cred.sign(
        Algorithm::PS256,
        &claims(json!({"nbf": now - 1200, "exp": now - 900})),
    );
    assert_eq!(attempt(&fx, &id, &expired).await.1, 700024);
    let too_long = fx
        .cred
        .sign(Algorithm::PS256, &claims(json!({"exp": now + 3600})));
    assert_eq!(attempt(&fx, &id, &too_long).await.1, 700024);
    let other_iss = fx.cred.sign(
        Algorithm::PS256,
        &claims(json!({"iss": "someone", "sub": "someone"})),
    );
    assert_eq!(attempt(&fx, &id, &other_iss).await.1, 700021);
    let forged = Cred::new().sign_as(&fx.cred, &claims(json!({})));
    let (_, code, text) = attempt(&fx, &id, &forged).await;
    assert_eq!(code, 700027);
    assert!(
        text.contains("did not match the expected signature value"),
        "{text}"
    );
    let once = fx.cred.sign(Algorithm::PS256, &claims(json!({})));
    assert_eq!(attempt(&fx, &id, &once).await.0, 200);
    assert_eq!(
        attempt(&fx, &id, &once).await.1,
        50013,
        "a replayed jti is refused"
    );
}

#[tokio::test]
async fn request_level_failures() {
    let fx = Fixture::new(spec(2), &[]).await;
    let scope = format!("{}/.default", fx.base());
    let (status, body) = fx
        .token_request(&[
            ("grant_type", "client_credentials"),
            ("client_id", &fx.client_id),
            ("scope", &scope),
        ])
        .await;
    assert_eq!(
        (status, aadsts(&body), body["error"].as_str()),
        (401, 7000218, Some("invalid_client"))
    );
    let stranger = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        attempt(
            &fx,
            &stranger,
            &fx.cred
                .assertion(Algorithm::PS256, &stranger, &fx.token_url())
        )
        .await
        .1,
        700016
    );
    let (status, body) = fx.credentials(&fx.client_id, &fx.cred, "User.Read").await;
    assert_eq!((status, aadsts(&body)), (400, 70011));
    let response = fx
        .http
        .post(format!("{}/nowhere.example/oauth2/v2.0/token", fx.base()))
        .header("client-request-id", "abc-123")
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (aadsts(&body), body["correlation_id"].as_str()),
        (90002, Some("abc-123"))
    );
    for field in [
        "error",
        "error_description",
        "error_codes",
        "timestamp",
        "trace_id",
        "correlation_id",
        "error_uri",
    ] {
        assert!(!body[field].is_null(), "{field} missing");
    }
}

fn authorize_url(fx: &Fixture, challenge: &str, extra: &[(&str, &str)]) -> String {
    let mut params = vec![
        ("client_id", fx.client_id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
        ("scope", "openid profile email"),
        ("state", "st-1"),
        ("nonce", "n-1"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ];
    params.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    params.extend_from_slice(extra);
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", crate::emulator::util::url_encode(v)))
        .collect();
    format!(
        "{}/{TENANT}/oauth2/v2.0/authorize?{}",
        fx.base(),
        query.join("&")
    )
}

/// The query parameters of a redirect's `Location`.
fn redirect_params(response: &reqwest::Response) -> Vec<(String, String)> {
    let location = response.headers()["location"].to_str().unwrap();
    let url = reqwest::Url::parse(location).unwrap();
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn redeem(fx: &Fixture, code: &str, verifier: &str) -> (u16, Value) {
    let assertion = fx
        .cred
        .assertion(Algorithm::PS256, &fx.client_id, &fx.token_url());
    fx.token_request(&[
        ("grant_type", "authorization_code"),
        ("client_id", &fx.client_id),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", &assertion),
    ])
    .await
}

#[tokio::test]
async fn authorization_code_flow_with_pkce() {
    let fx = Fixture::new(spec(10), &[]).await;
    let users = fx.emu().users(TENANT);
    let (with_mail, without_mail) = (
        users
            .iter()
            .find(|u| u.mail.is_some() && u.account_enabled && u.user_type == "Member")
            .unwrap(),
        users
            .iter()
            .find(|u| u.mail.is_none() && u.account_enabled)
            .unwrap(),
    );
    for (user, email) in [(with_mail, true), (without_mail, false)] {
        let (verifier, challenge) = pkce();
        let response = fx
            .http
            .get(authorize_url(
                &fx,
                &challenge,
                &[("login_hint", &user.user_principal_name)],
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 302);
        let params = redirect_params(&response);
        assert_eq!(param(&params, "state"), Some("st-1"));
        let code = param(&params, "code").unwrap().to_string();
        let (status, body) = redeem(&fx, &code, &verifier).await;
        assert_eq!(status, 200, "{body}");
        let id = claims(body["id_token"].as_str().unwrap());
        assert_eq!(id["iss"], format!("{}/{TENANT}/v2.0", fx.base()));
        assert_eq!(
            (id["aud"].as_str(), id["tid"].as_str(), id["nonce"].as_str()),
            (Some(fx.client_id.as_str()), Some(TENANT), Some("n-1"))
        );
        assert_eq!(
            (id["oid"].as_str(), id["ver"].as_str()),
            (Some(user.id.as_str()), Some("2.0"))
        );
        assert_eq!(id["preferred_username"], user.user_principal_name.as_str());
        assert_eq!(
            id.get("email").is_some(),
            email,
            "email only for users with mail"
        );
        assert!(body["access_token"].is_string());
        let (status, again) = redeem(&fx, &code, &verifier).await;
        assert_eq!(
            (status, aadsts(&again), again["error"].as_str()),
            (400, 54005, Some("invalid_grant"))
        );
    }
}

#[tokio::test]
async fn code_failures_pkce_expiry_redirect_page() {
    let fx = Fixture::new(spec(4), &[]).await;
    let upn = fx.emu().users(TENANT)[0].user_principal_name.clone();
    let (_, challenge) = pkce();
    let code = fx
        .emu()
        .auth_code_for(TENANT, &fx.client_id, REDIRECT, &upn, &challenge, "n")
        .unwrap();
    let (status, body) = redeem(
        &fx,
        &code,
        "not-the-verifier-not-the-verifier-not-the-verifier",
    )
    .await;
    assert_eq!((status, aadsts(&body)), (400, 501481));

    let (verifier, challenge) = pkce();
    let code = fx
        .emu()
        .auth_code_for(TENANT, &fx.client_id, REDIRECT, &upn, &challenge, "n")
        .unwrap();
    fx.emu().advance_clock(Duration::from_secs(11 * 60));
    let (status, body) = redeem(&fx, &code, &verifier).await;
    assert_eq!(
        (status, aadsts(&body)),
        (401, 700024),
        "the assertion is now stale too: {body}"
    );

    let page = fx
        .http
        .get(authorize_url(
            &fx,
            &challenge,
            &[("redirect_uri", "https://evil.example/cb")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 400);
    assert!(
        page.headers().get("location").is_none(),
        "never redirects to an unregistered URI"
    );
    assert!(page.text().await.unwrap().contains("AADSTS50011"));
}

#[tokio::test]
async fn code_expires_after_ten_minutes() {
    let fx = Fixture::new(spec(4), &[]).await;
    let upn = fx.emu().users(TENANT)[0].user_principal_name.clone();
    let (verifier, challenge) = pkce();
    let code = fx
        .emu()
        .auth_code_for(TENANT, &fx.client_id, REDIRECT, &upn, &challenge, "n")
        .unwrap();
    fx.emu().advance_clock(Duration::from_secs(11 * 60));
    let now = OffsetDateTime::now_utc().unix_timestamp() + 11 * 60;
    let id = fx.client_id.clone();
    let assertion = fx.cred.sign(
        Algorithm::PS256,
        &json!({"aud": fx.token_url(), "iss": id, "sub": id,
        "jti": uuid::Uuid::new_v4().to_string(), "nbf": now, "exp": now + 300}),
    );
    let (status, body) = fx
        .token_request(&[
            ("grant_type", "authorization_code"),
            ("client_id", &id),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &assertion),
        ])
        .await;
    assert_eq!((status, aadsts(&body)), (400, 70008));
}

#[tokio::test]
async fn sign_in_page_lists_users_and_posts_back() {
    let fx = Fixture::new(spec(6), &[]).await;
    let (_, challenge) = pkce();
    let page = fx
        .http
        .get(authorize_url(&fx, &challenge, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let enabled = fx
        .emu()
        .users(TENANT)
        .into_iter()
        .find(|u| u.account_enabled)
        .unwrap();
    assert!(html.contains(&enabled.user_principal_name));
    let form = [
        ("client_id", fx.client_id.as_str()),
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
        ("scope", "openid"),
        ("nonce", "n"),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("response_mode", "form_post"),
        ("login_hint", &enabled.user_principal_name),
    ];
    let url = format!("{}/{TENANT}/oauth2/v2.0/authorize", fx.base());
    let chosen = fx.http.post(url).form(&form).send().await.unwrap();
    assert_eq!(chosen.status(), 200);
    let html = chosen.text().await.unwrap();
    assert!(
        html.contains("name=\"code\"") && html.contains(REDIRECT),
        "{html}"
    );
}

#[tokio::test]
async fn disabled_silent_and_plain_pkce_go_back_as_errors() {
    let fx = Fixture::new(spec(6), &[]).await;
    let (_, challenge) = pkce();
    let error_of = |extra: Vec<(&'static str, String)>| {
        let (fx, challenge) = (&fx, challenge.clone());
        async move {
            let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let response = fx
                .http
                .get(authorize_url(fx, &challenge, &extra))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 302);
            let params = redirect_params(&response);
            let description = param(&params, "error_description")
                .unwrap_or("")
                .to_string();
            (
                param(&params, "error").unwrap_or("").to_string(),
                description,
            )
        }
    };
    let disabled = fx
        .emu()
        .users(TENANT)
        .into_iter()
        .find(|u| !u.account_enabled && u.given_name.is_some())
        .unwrap();
    let (error, description) = error_of(vec![("login_hint", disabled.user_principal_name)]).await;
    assert_eq!(error, "access_denied");
    assert!(description.starts_with("AADSTS50057"), "{description}");
    assert_eq!(
        error_of(vec![("prompt", "none".into())]).await.0,
        "login_required"
    );
    let plain = error_of(vec![("code_challenge_method", "plain".into())]).await;
    assert_eq!(plain.0, "invalid_request");
}
