//! What the client does when the PBX does not simply answer: refused and expired tokens,
//! server errors, throttling, timeouts (and why a creation is not sent twice), an absent
//! PBX, and the limit of requests in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Semaphore;

use super::{ADMIN, DOMAIN, PASSWORD, Pbx, Reply, error_body, token_body};
use crate::pbx::PbxError;
use crate::pbx::wire::ContactFields;

fn contact() -> ContactFields {
    ContactFields {
        name: "Reception".into(),
        ..ContactFields::default()
    }
}

fn empty_list() -> Reply {
    Reply::Json(200, json!({"count": 0, "items": []}))
}

#[tokio::test]
async fn a_401_signs_in_again_once_and_sends_the_request_again() {
    let pbx = Pbx::start(|h| match (h.path.as_str(), h.nth) {
        ("/api/users", 0) => Reply::Json(401, error_body("UNAUTHORIZED", "token expired", None)),
        ("/api/users", _) => empty_list(),
        _ => Reply::Default,
    })
    .await;
    let client = pbx.client();
    assert!(client.list_users().await.unwrap().is_empty());
    let gets: Vec<_> = (pbx.hits().into_iter())
        .filter(|h| h.path == "/api/users")
        .map(|h| h.bearer.unwrap())
        .collect();
    assert_eq!(
        gets,
        ["tok-1", "tok-2"],
        "the second try carries the new token"
    );
    assert_eq!(client.stats().sign_ins, 2);
}

#[tokio::test]
async fn a_second_401_is_a_sign_in_error_in_plain_words() {
    let pbx = Pbx::start(|h| match h.path.as_str() {
        "/api/users" => Reply::Json(401, error_body("UNAUTHORIZED", "no", None)),
        _ => Reply::Default,
    })
    .await;
    let err = pbx.client().list_users().await.unwrap_err();
    assert!(matches!(err, PbxError::SignIn { .. }), "{err:?}");
    assert!(err.stops_phase());
    assert_eq!(
        pbx.count("GET", "/api/users"),
        2,
        "one new sign-in, not a loop"
    );
    assert_eq!(pbx.count("POST", "/api/login"), 2);
}

#[tokio::test]
async fn a_refused_sign_in_names_the_user_and_domain_and_never_the_password() {
    let pbx = Pbx::start(|h| match h.path.as_str() {
        "/api/login" => Reply::Json(
            401,
            error_body("UNAUTHORIZED", "wrong username, password or domain", None),
        ),
        _ => empty_list(),
    })
    .await;
    let client = pbx.client();
    let err = client.list_users().await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, PbxError::SignIn { .. }), "{err:?}");
    assert!(
        message.contains(ADMIN) && message.contains(DOMAIN),
        "{message}"
    );
    assert!(message.contains("pbx_password_file"), "{message}");
    assert!(!message.contains(PASSWORD), "{message}");
    assert_eq!(
        pbx.count("POST", "/api/login"),
        1,
        "a refusal is not retried"
    );
    assert_eq!(pbx.count("GET", "/api/users"), 0);
    assert!(matches!(
        client.sign_in().await,
        Err(PbxError::SignIn { .. })
    ));
}

#[tokio::test]
async fn server_errors_are_retried_until_an_answer() {
    let pbx = Pbx::start(|h| match (h.path.as_str(), h.nth) {
        ("/api/users", 0 | 1) => Reply::Json(503, json!({})),
        ("/api/users", _) => empty_list(),
        ("/api/login", 0) => Reply::Json(502, json!({})),
        _ => Reply::Default,
    })
    .await;
    let client = pbx.client();
    assert!(client.list_users().await.unwrap().is_empty());
    assert_eq!(pbx.count("GET", "/api/users"), 3);
    let stats = client.stats();
    assert_eq!((stats.retries, stats.requests, stats.sign_ins), (3, 5, 1));
}

#[tokio::test]
async fn a_pbx_that_keeps_failing_is_unreachable_after_five_attempts() {
    let pbx = Pbx::start(|h| match h.path.as_str() {
        "/api/users/u1" => Reply::Json(500, json!({})),
        _ => Reply::Default,
    })
    .await;
    let err = pbx.client().get_user("u1").await.unwrap_err();
    assert!(
        matches!(&err, PbxError::Unreachable { reason, .. } if reason.contains("500")),
        "{err:?}"
    );
    assert!(err.stops_phase());
    assert_eq!(pbx.count("GET", "/api/users/u1"), 5);
}

#[tokio::test]
async fn throttling_waits_for_retry_after() {
    let pbx = Pbx::start(|h| match (h.path.as_str(), h.nth) {
        ("/api/users/u1", 0) => Reply::WithHeader(429, "retry-after", "1".into(), json!({})),
        ("/api/users/u1", _) => Reply::Json(200, json!({"id": "u1"})),
        _ => Reply::Default,
    })
    .await;
    let client = pbx.client();
    client.sign_in().await.unwrap();
    let started = Instant::now();
    assert!(client.get_user("u1").await.unwrap().is_some());
    // The backoff alone would be a millisecond or two.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    let stats = client.stats();
    assert_eq!((stats.throttled, stats.retries), (1, 1));
}

#[tokio::test]
async fn a_timed_out_creation_is_not_sent_again_and_its_outcome_is_unknown() {
    let pbx = Pbx::start(|h| match h.path.as_str() {
        "/api/contacts" if h.method == "POST" => Reply::Hang,
        _ => Reply::Default,
    })
    .await;
    let client = pbx.client_with(4, Duration::from_millis(200));
    let err = client.create_contact(&contact()).await.unwrap_err();
    assert!(matches!(err, PbxError::Timeout { .. }), "{err:?}");
    assert!(err.outcome_unknown() && !err.stops_phase());
    assert_eq!(pbx.count("POST", "/api/contacts"), 1, "never sent twice");
    assert_eq!(client.stats().retries, 0);
}

#[tokio::test]
async fn a_timed_out_read_is_sent_again() {
    let pbx = Pbx::start(|h| match (h.path.as_str(), h.nth) {
        ("/api/users", 0) => Reply::Hang,
        ("/api/users", _) => empty_list(),
        _ => Reply::Default,
    })
    .await;
    let client = pbx.client_with(4, Duration::from_millis(200));
    assert!(client.list_users().await.unwrap().is_empty());
    assert_eq!(pbx.count("GET", "/api/users"), 2);
}

#[tokio::test]
async fn creations_are_repeated_only_when_the_pbx_declined_them() {
    let pbx = Pbx::start(|h| match (h.path.as_str(), h.nth) {
        ("/api/contacts", 0) => Reply::Json(503, json!({})),
        ("/api/contacts", 1) => Reply::WithHeader(429, "retry-after", "0".into(), json!({})),
        ("/api/contacts", 2) => Reply::Json(201, json!({"id": "c1"})),
        ("/api/contacts", _) => Reply::Json(500, json!({})),
        _ => Reply::Default,
    })
    .await;
    let client = pbx.client();
    assert_eq!(client.create_contact(&contact()).await.unwrap(), "c1");
    let err = client.create_contact(&contact()).await.unwrap_err();
    assert!(
        matches!(&err, PbxError::OutcomeUnknown { reason, .. } if reason == "HTTP 500"),
        "{err:?}"
    );
    assert!(err.outcome_unknown());
    assert_eq!(
        pbx.count("POST", "/api/contacts"),
        4,
        "the 500 was not repeated"
    );
}

#[tokio::test]
async fn an_absent_pbx_is_unreachable_after_five_connection_attempts() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let http = reqwest::Client::new();
    let url: reqwest::Url = format!("http://127.0.0.1:{port}/api").parse().unwrap();
    let client = crate::pbx::PbxClient::with_http(http, url, super::login(), DOMAIN.into(), 2)
        .with_backoff_base(Duration::from_millis(1));
    let err = client.count_users().await.unwrap_err();
    assert!(
        matches!(&err, PbxError::Unreachable { url, .. } if url.contains(&port.to_string())),
        "{err:?}"
    );
    assert!(err.stops_phase());
    assert_eq!((client.stats().requests, client.stats().retries), (5, 4));
}

#[tokio::test]
async fn the_token_is_refreshed_before_it_expires_and_a_refused_refresh_signs_in() {
    let pbx = Pbx::start(|h| match (h.path.as_str(), h.nth) {
        ("/api/auth/refresh_token", 1) => {
            Reply::Json(401, error_body("UNAUTHORIZED", "used", None))
        }
        ("/api/users", _) => empty_list(),
        _ => Reply::Default,
    })
    .await;
    let client = pbx.client();
    client.sign_in().await.unwrap();
    let due = async || client.inner.session.lock().await.as_mut().unwrap().renew_at = 0;
    due().await;
    client.list_users().await.unwrap();
    due().await;
    client.list_users().await.unwrap();
    let hits = pbx.hits();
    let refresh: Vec<_> = (hits.iter())
        .filter(|h| h.path == "/api/auth/refresh_token")
        .map(|h| h.body.clone())
        .collect();
    assert_eq!(
        refresh,
        [
            json!({"refresh_token": "ref-1"}),
            json!({"refresh_token": "rref-1"})
        ]
    );
    let bearers: Vec<_> = (hits.iter())
        .filter(|h| h.path == "/api/users")
        .map(|h| h.bearer.clone().unwrap())
        .collect();
    assert_eq!(
        bearers,
        ["rtok-1", "tok-2"],
        "refreshed, then signed in again"
    );
    let stats = client.stats();
    assert_eq!((stats.refreshes, stats.sign_ins), (2, 2));
}

#[tokio::test]
async fn a_token_with_a_short_life_is_kept_for_half_of_it() {
    let pbx = Pbx::start(|h| match h.path.as_str() {
        "/api/login" => Reply::Json(200, token_body("short", "r", 60)),
        _ => empty_list(),
    })
    .await;
    let client = pbx.client();
    client.list_users().await.unwrap();
    client.list_users().await.unwrap();
    let stats = client.stats();
    assert_eq!((stats.sign_ins, stats.refreshes), (1, 0));
}

#[tokio::test]
async fn no_more_requests_are_in_flight_than_the_concurrency() {
    let gate = Arc::new(Semaphore::new(0));
    let held = gate.clone();
    let pbx = Pbx::start(move |h| match h.path.as_str() {
        "/api/login" => Reply::Default,
        _ => Reply::Gated(held.clone(), 200, json!({"id": "u"})),
    })
    .await;
    let client = pbx.client_with(2, Duration::from_secs(10));
    client.sign_in().await.unwrap();
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.get_user(&format!("u{i}")).await })
        })
        .collect();
    pbx.arrived(1 + 2).await;
    for released in 1..=6 {
        gate.add_permits(1);
        pbx.arrived((1 + 2 + released).min(7)).await;
    }
    for call in calls {
        assert!(call.await.unwrap().unwrap().is_some());
    }
    let max = pbx
        .seen
        .max_in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(max, 2, "the sign-in ran alone, then two at a time");
}
