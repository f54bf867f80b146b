//! The request pipeline: headers, retries on throttling and transport failures, the 401
//! re-authorization, typed errors, redirects and foreign hosts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json as j};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::support::{
    FakeTokens, TestServer, client_with, fast_options, graph_error, json, with_header,
};
use crate::entra::NationalCloud;
use crate::graph::{GraphError, GraphOptions};

#[tokio::test]
async fn throttled_then_ok_honours_fractional_retry_after() {
    let server = TestServer::start(|hit| match hit.n {
        0 | 1 => with_header(graph_error(429, "TooManyRequests"), "retry-after", "0.05"),
        _ => json(200, j!({"id": "u1"})),
    })
    .await;
    let (client, tokens) = server.client(fast_options());
    let user: Value = client.get_json("/users/u1", "users").await.unwrap();
    assert_eq!(user["id"], "u1");

    let hits = server.hits();
    assert_eq!(hits.len(), 3);
    let crid = hits[0]
        .header("client-request-id")
        .expect("client-request-id sent")
        .to_string();
    uuid::Uuid::parse_str(&crid).expect("a UUID");
    for hit in &hits {
        assert_eq!(
            hit.header("client-request-id"),
            Some(crid.as_str()),
            "same id across retries"
        );
        assert_eq!(hit.header("return-client-request-id"), Some("true"));
        assert_eq!(hit.header("accept"), Some("application/json"));
        assert_eq!(hit.header("authorization"), Some("Bearer tok-0"));
        assert_eq!(hit.path, "/v1.0/users/u1");
    }
    for pair in hits.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(50),
            "Retry-After 0.05 not honoured: {gap:?}"
        );
    }
    assert_eq!(tokens.invalidated.load(Ordering::SeqCst), 0);

    let stats = client.stats();
    assert_eq!((stats.requests, stats.throttled, stats.retries), (3, 2, 2));
    assert_eq!(stats.by_kind.get("users"), Some(&3));

    let _: Value = client.get_json("/users/u1", "users").await.unwrap();
    let next = server.hits()[3]
        .header("client-request-id")
        .unwrap()
        .to_string();
    assert_ne!(next, crid, "a new logical request gets a new id");
}

#[tokio::test]
async fn unavailable_and_gateway_timeout_back_off_without_retry_after() {
    let server = TestServer::start(|hit| match hit.n {
        0 => graph_error(503, "serviceNotAvailable"),
        1 => graph_error(504, "UnknownError"),
        _ => json(200, j!({"ok": true})),
    })
    .await;
    let (client, _) = server.client(fast_options());
    let _: Value = client.get_json("/organization", "org").await.unwrap();
    assert_eq!(server.hits().len(), 3);
    let stats = client.stats();
    assert_eq!(
        (stats.requests, stats.throttled, stats.retries),
        (3, 1, 2),
        "504 is not throttling"
    );
}

#[tokio::test]
async fn gives_up_after_max_retries() {
    let server = TestServer::start(|hit| match hit.path.as_str() {
        "/v1.0/throttled" => with_header(graph_error(429, "TooManyRequests"), "retry-after", "0"),
        _ => graph_error(504, "UnknownError"),
    })
    .await;
    let (client, _) = server.client(fast_options());
    let err = client
        .get_json::<Value>("/throttled", "users")
        .await
        .unwrap_err();
    assert!(
        matches!(err, GraphError::Throttled { retries: 3 }),
        "{err:?}"
    );
    assert_eq!(server.hits().len(), 4, "one try and max_retries retries");

    let err = client
        .get_json::<Value>("/gateway", "users")
        .await
        .unwrap_err();
    assert!(
        matches!(err, GraphError::Api { status: 504, .. }),
        "{err:?}"
    );
    assert_eq!(server.hits().len(), 8);
}

/// A raw listener that drops the first `drops` connections without answering, then
/// answers `{"ok":true}`; returns its base URL and the count of accepted connections.
async fn dropping_server(drops: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            if count.fetch_add(1, Ordering::SeqCst) < drops {
                drop(socket);
                continue;
            }
            let mut buf = vec![0u8; 16 * 1024];
            let mut read = 0;
            while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf[read..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
            let body = r#"{"ok":true}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
        }
    });
    (base, accepted)
}

#[tokio::test]
async fn closed_connection_is_retried_for_get() {
    let (base, accepted) = dropping_server(2).await;
    let client = client_with(&base, NationalCloud::Global, Arc::default(), fast_options());
    let answer: Value = client.get_json("/users", "users").await.unwrap();
    assert_eq!(answer["ok"], true);
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    assert_eq!(client.stats().retries, 2);
}

#[tokio::test]
async fn closed_connection_is_not_retried_for_a_write() {
    let (base, accepted) = dropping_server(usize::MAX).await;
    let client = client_with(&base, NationalCloud::Global, Arc::default(), fast_options());
    let write = crate::graph::BatchRequest {
        method: "POST".into(),
        ..crate::graph::BatchRequest::get("1", "/users")
    };
    let err = client.batch(vec![write]).await.unwrap_err();
    assert!(matches!(err, GraphError::Transport(_)), "{err:?}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "a write is never sent twice"
    );
}

#[tokio::test]
async fn slow_answer_times_out_and_is_retried() {
    let server = TestServer::start_async(|hit| async move {
        if hit.n == 0 {
            std::future::pending::<()>().await;
        }
        json(200, j!({"ok": true}))
    })
    .await;
    let options = GraphOptions {
        request_timeout: Duration::from_millis(200),
        ..fast_options()
    };
    let (client, _) = server.client(options);
    let answer: Value = client.get_json("/users", "users").await.unwrap();
    assert_eq!(answer["ok"], true);
    assert_eq!(server.hits().len(), 2);
}

#[tokio::test]
async fn unauthorized_fetches_a_new_token_once() {
    let server = TestServer::start(|hit| match hit.header("authorization") {
        Some("Bearer tok-1") => json(200, j!({"ok": true})),
        _ => graph_error(401, "InvalidAuthenticationToken"),
    })
    .await;
    let (client, tokens) = server.client(fast_options());
    let _: Value = client.get_json("/users", "users").await.unwrap();
    assert_eq!(tokens.invalidated.load(Ordering::SeqCst), 1);
    assert_eq!(tokens.fetched.load(Ordering::SeqCst), 2);
    let hits = server.hits();
    assert_eq!(hits.len(), 2);
    assert_eq!(
        hits[0].header("client-request-id"),
        hits[1].header("client-request-id")
    );
}

#[tokio::test]
async fn unauthorized_twice_is_an_error() {
    let server = TestServer::start(|_| graph_error(401, "InvalidAuthenticationToken")).await;
    let (client, tokens) = server.client(fast_options());
    let err = client
        .get_json::<Value>("/users", "users")
        .await
        .unwrap_err();
    assert!(
        matches!(err, GraphError::Api { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(server.hits().len(), 2);
    assert_eq!(tokens.invalidated.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn token_failure_sends_nothing() {
    let server = TestServer::start(|_| json(200, j!({}))).await;
    let tokens = Arc::new(FakeTokens {
        broken: true,
        ..FakeTokens::default()
    });
    let client = client_with(&server.base, NationalCloud::Global, tokens, fast_options());
    let err = client
        .get_json::<Value>("/users", "users")
        .await
        .unwrap_err();
    assert!(matches!(err, GraphError::Token(_)), "{err:?}");
    assert!(server.hits().is_empty());
}

#[tokio::test]
async fn error_answer_is_typed_and_not_retried() {
    let server = TestServer::start(|_| graph_error(403, "Authorization_RequestDenied")).await;
    let (client, _) = server.client(fast_options());
    let err = client
        .get_json::<Value>("/users", "users")
        .await
        .unwrap_err();
    let sent = server.hits()[0]
        .header("client-request-id")
        .unwrap()
        .to_string();
    match err {
        GraphError::Api {
            status,
            code,
            request_id,
            client_request_id,
            ..
        } => {
            assert_eq!(status, 403);
            assert_eq!(code, "Authorization_RequestDenied");
            assert_eq!(request_id.as_deref(), Some("server-req-id"));
            assert_eq!(client_request_id, sent);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(server.hits().len(), 1);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let thief = TestServer::start(|_| json(200, j!({"stolen": true}))).await;
    let target = format!("{}/steal", thief.base);
    let server =
        TestServer::start(move |_| with_header(json(302, j!({})), "location", &target)).await;
    let (client, _) = server.client(fast_options());
    let err = client
        .get_json::<Value>("/users", "users")
        .await
        .unwrap_err();
    match err {
        GraphError::Redirect { status, location } => {
            assert_eq!(status, 302);
            assert!(location.ends_with("/steal"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        thief.hits().is_empty(),
        "the token never reached the other host"
    );
}

#[tokio::test]
async fn foreign_urls_are_refused_before_sending() {
    let server = TestServer::start(|_| json(200, j!({}))).await;
    let (client, tokens) = server.client(fast_options());
    let port: u16 = server.base.rsplit(':').next().unwrap().parse().unwrap();
    for url in [
        "https://evil.example/v1.0/users".to_string(),
        format!("https://127.0.0.1:{port}/v1.0/users"),
        format!("http://127.0.0.1:{}/v1.0/users", port.wrapping_add(1)),
        format!("http://user@127.0.0.1:{port}/v1.0/users"),
        "not a url://x".to_string(),
    ] {
        let err = client.get_json::<Value>(&url, "users").await.unwrap_err();
        assert!(matches!(err, GraphError::ForeignUrl(_)), "{url}: {err:?}");
    }
    assert!(server.hits().is_empty());
    assert_eq!(tokens.fetched.load(Ordering::SeqCst), 0);
    let same = format!("{}/v1.0/users", server.base);
    let _: Value = client.get_json(&same, "users").await.unwrap();
}
