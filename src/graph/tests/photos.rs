//! Photo calls over real HTTP: metadata, bytes with a size cap, missing photos, and the
//! per-mailbox concurrency limit seen from the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::response::Response;
use serde_json::json as j;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::support::{TestServer, fast_options, graph_error, json};
use crate::graph::GraphError;

fn image(bytes: Vec<u8>) -> Response {
    Response::builder()
        .status(200)
        .header("content-type", "image/png")
        .body(Body::from(bytes))
        .unwrap()
}

#[tokio::test]
async fn photo_meta_and_missing_photo() {
    let server = TestServer::start(|hit| match hit.path.as_str() {
        "/v1.0/users/u1/photo" => json(200, j!({
            "@odata.mediaContentType": "image/jpeg", "@odata.mediaEtag": "\"E1\"", "id": "96X96", "width": 96, "height": 96,
        })),
        _ => graph_error(404, "ImageNotFound"),
    })
    .await;
    let (client, _) = server.client(fast_options());
    let meta = client.photo_meta("u1").await.unwrap().unwrap();
    assert_eq!(meta.media_etag.as_deref(), Some("\"E1\""));
    assert_eq!(meta.width, Some(96));
    assert!(client.photo_meta("u2").await.unwrap().is_none());
    assert_eq!(client.stats().by_kind.get("photo"), Some(&2));
}

#[tokio::test]
async fn photo_bytes_are_capped() {
    let server = TestServer::start(|hit| match hit.path.as_str() {
        "/v1.0/users/u1/photo/$value" => image(vec![7; 100]),
        "/v1.0/users/big/photo/$value" => image(vec![7; 5000]),
        "/v1.0/users/chunked/photo/$value" => {
            // No content-length: the cap must hold while streaming.
            let chunks =
                (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![1u8; 300])));
            Response::builder()
                .status(200)
                .body(Body::from_stream(futures_util::stream::iter(chunks)))
                .unwrap()
        }
        _ => graph_error(404, "ImageNotFound"),
    })
    .await;
    let (client, _) = server.client(fast_options());
    let (bytes, content_type) = client.photo_bytes("u1", 1000).await.unwrap().unwrap();
    assert_eq!((bytes.len(), content_type.as_str()), (100, "image/png"));
    assert!(client.photo_bytes("nobody", 1000).await.unwrap().is_none());
    let err = client.photo_bytes("big", 1000).await.unwrap_err();
    assert!(
        matches!(err, GraphError::TooLarge { limit: 1000 }),
        "{err:?}"
    );
    let err = client.photo_bytes("chunked", 1000).await.unwrap_err();
    assert!(
        matches!(err, GraphError::TooLarge { limit: 1000 }),
        "{err:?}"
    );
    let accept = server.hits()[0].header("accept").unwrap().to_string();
    assert!(
        accept.starts_with("image/") && accept.contains("application/json"),
        "{accept}"
    );
}

#[tokio::test]
async fn at_most_four_requests_per_mailbox_in_flight() {
    // The server holds every request until the test releases them, and publishes how
    // many it holds.
    let (release, _) = watch::channel(false);
    let (held_tx, mut held) = watch::channel(0usize);
    let (release, held_tx) = (Arc::new(release), Arc::new(held_tx));
    let peak = Arc::new(AtomicUsize::new(0));
    let (gate, counter, max) = (release.clone(), held_tx.clone(), peak.clone());
    let server = TestServer::start_async(move |_| {
        let (gate, counter, max) = (gate.clone(), counter.clone(), max.clone());
        async move {
            let mut open = gate.subscribe();
            counter.send_modify(|n| *n += 1);
            max.fetch_max(*counter.borrow(), Ordering::SeqCst);
            open.wait_for(|o| *o).await.unwrap();
            counter.send_modify(|n| *n -= 1);
            json(200, j!({"@odata.mediaEtag": "\"E\""}))
        }
    })
    .await;
    let (client, _) = server.client(fast_options());
    let mut tasks = JoinSet::new();
    for _ in 0..10 {
        let client = client.clone();
        tasks.spawn(async move { client.photo_meta("shared-mailbox").await });
    }
    held.wait_for(|n| *n >= 4).await.unwrap();
    // Four requests are at the server and each holds one of the mailbox's four slots, so
    // the other six wait in the client (the limiter's own tests show the fifth waits).
    assert_eq!(client.mailboxes().available("shared-mailbox"), 0);
    assert_eq!(client.mailboxes().available("other-mailbox"), 4);
    release.send_replace(true);
    while let Some(done) = tasks.join_next().await {
        assert!(done.unwrap().unwrap().is_some());
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        4,
        "never more than four at the server"
    );
    assert_eq!(server.hits().len(), 10);
    assert_eq!(client.mailboxes().tracked(), 0);
}
