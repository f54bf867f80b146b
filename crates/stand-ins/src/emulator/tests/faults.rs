//! Faults, batching and the control API: injected 429/503/resets with their headers and
//! counters, `$batch` items with their own statuses (one throttled), the per-mailbox
//! concurrency limit, and the `/_emulator/` HTTP API end to end.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::{ALL_PERMISSIONS, Cred, Fixture, TENANT, spec};
use crate::emulator::{Faults, RouteClass};

#[tokio::test]
async fn injected_429_and_503_have_graph_bodies() {
    let fx = Fixture::new(spec(5), ALL_PERMISSIONS).await;
    let (emu, token) = (fx.emu(), fx.app_token().await);
    emu.set_faults(
        RouteClass::Users,
        Faults {
            rate_429: 1.0,
            retry_after: Some(0.2),
            ..Faults::default()
        },
    );
    let response = fx.get(&token, "/v1.0/users").await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "0.2");
    assert!(response.headers().contains_key("request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "TooManyRequests");
    assert!(body["error"]["innerError"]["request-id"].is_string());
    emu.set_faults(
        RouteClass::Delta,
        Faults {
            rate_503: 1.0,
            ..Faults::default()
        },
    );
    let response = fx.get(&token, "/v1.0/users/delta").await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_none());
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "serviceNotAvailable"
    );
    emu.set_faults(RouteClass::All, Faults::default());
    assert_eq!(fx.get(&token, "/v1.0/users").await.status(), 200);
    let stats = emu.stats();
    assert_eq!(
        (
            stats.class(RouteClass::Users).requests,
            stats.class(RouteClass::Users).throttled
        ),
        (2, 1)
    );
    assert_eq!(stats.class(RouteClass::Delta).unavailable, 1);
}

#[tokio::test]
async fn injected_reset_closes_the_connection() {
    let fx = Fixture::new(spec(2), ALL_PERMISSIONS).await;
    fx.emu().set_faults(
        RouteClass::Token,
        Faults {
            rate_reset: 1.0,
            ..Faults::default()
        },
    );
    let scope = format!("{}/.default", fx.base());
    let assertion = fx.cred.assertion(
        jsonwebtoken::Algorithm::PS256,
        &fx.client_id,
        &fx.token_url(),
    );
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", &fx.client_id),
        ("scope", &scope),
        (
            "client_assertion_type",
            crate::emulator::assertion::ASSERTION_TYPE,
        ),
        ("client_assertion", &assertion),
    ];
    let outcome = fx.http.post(fx.token_url()).form(&form).send().await;
    assert!(outcome.is_err(), "no response at all: {outcome:?}");
    let stats = fx.emu().stats();
    assert_eq!(
        (stats.class(RouteClass::Token).resets, stats.token_requests),
        (1, 1)
    );
}

async fn batch(fx: &Fixture, token: &str, requests: Value) -> (u16, Value) {
    let url = format!("{}/v1.0/$batch", fx.base());
    let response = fx
        .http
        .post(url)
        .bearer_auth(token)
        .json(&json!({"requests": requests}))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn item(body: &Value, id: &str) -> Value {
    body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap()
        .clone()
}

#[tokio::test]
async fn batch_items_have_their_own_status() {
    let fx = Fixture::new(spec(10), ALL_PERMISSIONS).await;
    let (emu, token) = (fx.emu(), fx.app_token().await);
    let owner = emu.users(TENANT)[0].id.clone();
    emu.set_faults(
        RouteClass::Photos,
        Faults {
            rate_429: 1.0,
            retry_after: Some(0.5),
            ..Faults::default()
        },
    );
    let (status, body) = batch(
        &fx,
        &token,
        json!([
            {"id": "1", "method": "GET", "url": "/users?$top=2"},
            {"id": "2", "method": "GET", "url": format!("/users/{owner}/photo")},
            {"id": "3", "method": "GET", "url": format!("/users/{owner}/contacts")},
        ]),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(item(&body, "1")["status"], 200);
    assert_eq!(
        item(&body, "1")["body"]["value"].as_array().unwrap().len(),
        2
    );
    assert_eq!(item(&body, "2")["status"], 429);
    assert_eq!(item(&body, "2")["headers"]["Retry-After"], "0.5");
    assert_eq!(item(&body, "3")["status"], 200);
    assert_eq!(emu.stats().class(RouteClass::Photos).throttled, 1);
}

#[tokio::test]
async fn batch_returns_binary_base64_and_caps_at_20() {
    let fx = Fixture::new(spec(10), ALL_PERMISSIONS).await;
    let token = fx.app_token().await;
    let requests: Vec<Value> = fx.emu().users(TENANT).iter().take(20)
        .map(|u| json!({"id": u.id, "method": "GET", "url": format!("/users/{}/photo/$value", u.id)}))
        .collect();
    let (_, body) = batch(&fx, &token, Value::Array(requests)).await;
    let photo = body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == 200)
        .expect("a photo");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(photo["body"].as_str().unwrap())
        .unwrap();
    assert_eq!(&bytes[..3], &[0xFF, 0xD8, 0xFF]);
    let too_many: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/users"}))
        .collect();
    let (status, body) = batch(&fx, &token, Value::Array(too_many)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("BadRequest"))
    );
}

#[tokio::test]
async fn more_than_four_requests_to_one_mailbox_are_throttled() {
    let fx = Fixture::new(spec(3), ALL_PERMISSIONS).await;
    let (emu, token) = (fx.emu().clone(), fx.app_token().await);
    // Requests hold their mailbox slot for the (emulated) latency, so five in flight overlap.
    emu.set_faults(
        RouteClass::Contacts,
        Faults {
            latency: Duration::from_secs(60),
            ..Faults::default()
        },
    );
    let owner = emu.users(TENANT)[0].id.clone();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let (http, url, token) = (
            fx.http.clone(),
            format!("{}/v1.0/users/{owner}/contacts", fx.base()),
            token.clone(),
        );
        tasks.spawn(async move { http.get(url).bearer_auth(token).send().await.unwrap() });
    }
    let first = tasks.join_next().await.unwrap().unwrap();
    assert_eq!(
        first.status(),
        429,
        "the fifth concurrent request is refused at once"
    );
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ApplicationThrottled");
    assert_eq!(
        body["error"]["message"],
        "Application is over its MailboxConcurrency limit."
    );
    let stats = emu.stats();
    assert_eq!(stats.mailbox_violations, 1);
    assert_eq!(stats.max_mailbox_concurrency, 5);
    assert_eq!(stats.mailbox_peaks[&owner], 5);
    tasks.abort_all();
}

#[tokio::test]
async fn control_api_registers_apps_certificates_and_faults() {
    let fx = Fixture::new(spec(4), ALL_PERMISSIONS).await;
    let app =
        json!({"display_name": "Demo", "redirect_uris": [], "permissions": ["User.Read.All"]});
    let (_, created) = fx
        .post_json(&format!("/_emulator/apps?tenant={TENANT}"), &app)
        .await;
    let client_id = created["client_id"].as_str().unwrap().to_string();
    let cred = Cred::new();
    let url = format!(
        "{}/_emulator/apps/{client_id}/certificates?tenant={TENANT}",
        fx.base()
    );
    let info: Value = fx
        .http
        .post(url)
        .body(cred.cert_pem.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["thumbprint"].as_str().unwrap().len(), 40);
    let (status, body) = fx
        .credentials(&client_id, &cred, &format!("{}/.default", fx.base()))
        .await;
    assert_eq!(status, 200, "{body}");
    let faults = json!({"class": "users", "rate_429": 1.0, "retry_after": 0.5});
    assert_eq!(fx.post_json("/_emulator/faults", &faults).await.0, 204);
    let throttled = fx
        .get(body["access_token"].as_str().unwrap(), "/v1.0/users")
        .await;
    assert_eq!(throttled.status(), 429);
    assert_eq!(throttled.headers()["retry-after"], "0.5");
    let (_, stats) = fx.fetch("/_emulator/stats").await;
    assert_eq!(
        (
            stats["classes"]["users"]["throttled"].as_u64(),
            stats["token_requests"].as_u64()
        ),
        (Some(1), Some(1))
    );
}

#[tokio::test]
async fn control_api_changes_users_keys_and_delta_state() {
    let fx = Fixture::new(spec(4), ALL_PERMISSIONS).await;
    let new =
        json!({"userPrincipalName": format!("temp@{}", super::DOMAIN), "displayName": "Temp"});
    let (status, user) = fx
        .post_json(&format!("/_emulator/tenants/{TENANT}/users"), &new)
        .await;
    assert_eq!(status, 201);
    let url = format!(
        "{}/_emulator/tenants/{TENANT}/users/{}?hard=true",
        fx.base(),
        user["id"].as_str().unwrap()
    );
    assert_eq!(fx.http.delete(url).send().await.unwrap().status(), 204);
    let (_, kids) = fx.post_json("/_emulator/keys/rotate", &Value::Null).await;
    assert_eq!(kids["kids"].as_array().unwrap().len(), 2);
    let (status, _) = fx
        .post_json(
            &format!("/_emulator/tenants/{TENANT}/expire-delta"),
            &Value::Null,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        fx.post_json("/_emulator/tenants/nope/expire-delta", &Value::Null)
            .await
            .0,
        404
    );
}
