//! ID token validation, one test per rejection, modelled on the OpenID Foundation's
//! relying-party conformance tests, against a key set served over real HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_lc_rs::signature::KeyPair as _;
use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ms365_gateway::entra::OidcError;
use ms365_gateway::entra::microsoft_client;
use ms365_gateway::entra::{IdTokenExpectations, JwksCache, validate_id_token};
use serde_json::{Value, json};
use tokio::sync::Mutex;

const ISS: &str = "https://login.test/dir-1/v2.0";
const CLIENT: &str = "app-1";
const DIR: &str = "dir-1";
const NONCE: &str = "n-0S6_WzA2Mj";

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
    pkcs8_pem: String,
}

fn signing_key(kid: &str) -> SigningKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let pem = pair.serialize_pem();
    let rsa = aws_lc_rs::rsa::KeyPair::from_pkcs8(&pair.serialize_der()).unwrap();
    let public = rsa.public_key();
    let jwk = json!({
        "kty": "RSA", "use": "sig", "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
        "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
    });
    SigningKey {
        kid: kid.into(),
        encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        jwk,
        pkcs8_pem: pem,
    }
}

/// A key set server whose contents and availability the test controls.
struct JwksServer {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    down: Arc<AtomicBool>,
}

async fn jwks_server(initial: Vec<Value>) -> JwksServer {
    let keys = Arc::new(Mutex::new(initial));
    let down = Arc::new(AtomicBool::new(false));
    let (k, d) = (keys.clone(), down.clone());
    let app = Router::new().route(
        "/keys",
        get(move || {
            let (k, d) = (k.clone(), d.clone());
            async move {
                if d.load(Ordering::SeqCst) {
                    return (http::StatusCode::SERVICE_UNAVAILABLE, "down".to_string());
                }
                (
                    http::StatusCode::OK,
                    json!({ "keys": *k.lock().await }).to_string(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    JwksServer { url, keys, down }
}

fn good_claims() -> Value {
    let now = ms365_gateway::store::now_epoch();
    json!({
        "iss": ISS, "aud": CLIENT, "tid": DIR, "oid": "00000000-0000-0000-0000-0000000000a1",
        "sub": "pairwise-sub", "nonce": NONCE, "iat": now, "nbf": now, "exp": now + 3600,
        "name": "Adele Vance", "preferred_username": "adele@contoso.test", "ver": "2.0"
    })
}

fn sign(key: &SigningKey, alg: Algorithm, with_kid: bool, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = with_kid.then(|| key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

struct Case {
    server: JwksServer,
    cache: JwksCache,
    key: SigningKey,
}

async fn case() -> Case {
    let key = signing_key("k1");
    let server = jwks_server(vec![key.jwk.clone()]).await;
    Case {
        server,
        cache: JwksCache::new(microsoft_client(Duration::from_secs(5))),
        key,
    }
}

impl Case {
    async fn check(&self, token: &str) -> Result<ms365_gateway::entra::IdTokenClaims, OidcError> {
        let expect = IdTokenExpectations {
            issuer: ISS,
            client_id: CLIENT,
            directory_id: DIR,
            nonce: NONCE,
            algorithms: &[Algorithm::RS256],
        };
        validate_id_token(&self.cache, &self.server.url, token, &expect).await
    }

    async fn rejects(&self, claims: Value, why: &str) {
        let token = sign(&self.key, Algorithm::RS256, true, &claims);
        let err = self.check(&token).await.expect_err(why);
        assert!(matches!(err, OidcError::InvalidIdToken(_)), "{why}: {err}");
    }
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

#[tokio::test]
async fn a_good_token_is_accepted_and_email_may_be_absent() {
    let c = case().await;
    let claims = c
        .check(&sign(
            &c.key,
            Algorithm::RS256,
            true,
            &without(good_claims(), "email"),
        ))
        .await
        .unwrap();
    assert_eq!(claims.oid, "00000000-0000-0000-0000-0000000000a1");
    assert_eq!(claims.tid, DIR);
    assert_eq!(claims.email, None);
    assert_eq!(
        claims.preferred_username.as_deref(),
        Some("adele@contoso.test")
    );
}

#[tokio::test]
async fn bad_signature_is_rejected() {
    let c = case().await;
    let token = sign(&c.key, Algorithm::RS256, true, &good_claims());
    let (head, rest) = token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(rest).unwrap();
    sig[10] ^= 0x01;
    let forged = format!("{head}.{}", URL_SAFE_NO_PAD.encode(sig));
    assert!(matches!(
        c.check(&forged).await,
        Err(OidcError::InvalidIdToken(_))
    ));
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let c = case().await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
    let body = URL_SAFE_NO_PAD.encode(good_claims().to_string());
    assert!(c.check(&format!("{header}.{body}.")).await.is_err());
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_rejected() {
    let c = case().await;
    let secret = EncodingKey::from_secret(c.key.pkcs8_pem.as_bytes());
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let token = jsonwebtoken::encode(&header, &good_claims(), &secret).unwrap();
    let err = c.check(&token).await.unwrap_err();
    assert!(err.to_string().contains("not allowed"), "{err}");
}

#[tokio::test]
async fn wrong_issuer_is_rejected() {
    case()
        .await
        .rejects(
            with(good_claims(), "iss", json!("https://login.test/other/v2.0")),
            "wrong iss",
        )
        .await;
}

#[tokio::test]
async fn wrong_audience_is_rejected() {
    case()
        .await
        .rejects(
            with(good_claims(), "aud", json!("another-app")),
            "wrong aud",
        )
        .await;
}

#[tokio::test]
async fn extra_audience_without_azp_is_rejected_and_with_azp_accepted() {
    let c = case().await;
    let multi = with(good_claims(), "aud", json!([CLIENT, "another-app"]));
    c.rejects(multi.clone(), "extra aud without azp").await;
    c.rejects(
        with(multi.clone(), "azp", json!("another-app")),
        "azp of another app",
    )
    .await;
    let ok = sign(
        &c.key,
        Algorithm::RS256,
        true,
        &with(multi, "azp", json!(CLIENT)),
    );
    c.check(&ok).await.expect("azp names us");
}

#[tokio::test]
async fn wrong_nonce_is_rejected() {
    case()
        .await
        .rejects(with(good_claims(), "nonce", json!("other")), "wrong nonce")
        .await;
}

#[tokio::test]
async fn missing_nonce_is_rejected() {
    case()
        .await
        .rejects(without(good_claims(), "nonce"), "missing nonce")
        .await;
}

#[tokio::test]
async fn expired_token_is_rejected() {
    let now = ms365_gateway::store::now_epoch();
    let claims = with(
        with(good_claims(), "exp", json!(now - 301)),
        "iat",
        json!(now - 4000),
    );
    case()
        .await
        .rejects(claims, "expired beyond the skew")
        .await;
}

#[tokio::test]
async fn iat_in_the_future_is_rejected() {
    let now = ms365_gateway::store::now_epoch();
    case()
        .await
        .rejects(with(good_claims(), "iat", json!(now + 3000)), "iat ahead")
        .await;
}

#[tokio::test]
async fn nbf_in_the_future_is_rejected() {
    let now = ms365_gateway::store::now_epoch();
    case()
        .await
        .rejects(
            with(good_claims(), "nbf", json!(now + 3000)),
            "not yet valid",
        )
        .await;
}

#[tokio::test]
async fn missing_sub_is_rejected() {
    case()
        .await
        .rejects(without(good_claims(), "sub"), "no sub")
        .await;
}

#[tokio::test]
async fn missing_oid_is_rejected() {
    case()
        .await
        .rejects(without(good_claims(), "oid"), "no oid")
        .await;
}

#[tokio::test]
async fn wrong_tid_is_rejected() {
    case()
        .await
        .rejects(
            with(good_claims(), "tid", json!("dir-2")),
            "other directory",
        )
        .await;
}

#[tokio::test]
async fn kid_absent_with_a_single_key_is_accepted() {
    let c = case().await;
    c.check(&sign(&c.key, Algorithm::RS256, false, &good_claims()))
        .await
        .expect("single key, no kid");
}

/// A token signed with a key published after the cache filled is accepted once the set is
/// refetched; a second unknown kid within five minutes does not cause another fetch.
#[tokio::test]
async fn unknown_kid_refetches_once_and_is_rate_limited() {
    let c = case().await;
    c.check(&sign(&c.key, Algorithm::RS256, true, &good_claims()))
        .await
        .unwrap();
    assert_eq!(c.cache.fetches(), 1);
    let rotated = signing_key("k2");
    c.server.keys.lock().await.push(rotated.jwk.clone());
    c.check(&sign(&rotated, Algorithm::RS256, true, &good_claims()))
        .await
        .expect("new key after refetch");
    assert_eq!(c.cache.fetches(), 2);
    let stranger = signing_key("k3");
    assert!(
        c.check(&sign(&stranger, Algorithm::RS256, true, &good_claims()))
            .await
            .is_err()
    );
    assert_eq!(c.cache.fetches(), 2, "refetch is rate-limited");
}

#[tokio::test]
async fn the_last_good_key_set_is_kept_when_a_fetch_fails() {
    let c = case().await;
    c.check(&sign(&c.key, Algorithm::RS256, true, &good_claims()))
        .await
        .unwrap();
    c.server.down.store(true, Ordering::SeqCst);
    let unknown = signing_key("k9");
    assert!(
        c.check(&sign(&unknown, Algorithm::RS256, true, &good_claims()))
            .await
            .is_err()
    );
    assert_eq!(
        c.cache.fetches(),
        2,
        "the unknown kid tried a refetch, which failed"
    );
    c.check(&sign(&c.key, Algorithm::RS256, true, &good_claims()))
        .await
        .expect("cached keys still verify");
}

#[tokio::test]
async fn ps256_is_accepted_only_when_allowed() {
    let c = case().await;
    let token = sign(&c.key, Algorithm::PS256, true, &good_claims());
    let err = c.check(&token).await.unwrap_err();
    assert!(err.to_string().contains("not allowed"), "{err}");
    let expect = IdTokenExpectations {
        issuer: ISS,
        client_id: CLIENT,
        directory_id: DIR,
        nonce: NONCE,
        algorithms: &[Algorithm::RS256, Algorithm::PS256],
    };
    validate_id_token(&c.cache, &c.server.url, &token, &expect)
        .await
        .expect("PS256 allowed by the tenant");
}
