//! `$batch` over real HTTP: chunking, per-item throttling retried alone, answer order.

use std::time::Duration;

use serde_json::{Value, json as j};

use super::support::{Hit, TestServer, fast_options, json};
use crate::graph::{BatchRequest, GraphOptions};

/// The ids of the items of a recorded `$batch` POST.
fn item_ids(hit: &Hit) -> Vec<String> {
    let body: Value = serde_json::from_slice(&hit.body).unwrap();
    body["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn throttled_items_are_retried_alone_after_their_retry_after() {
    let server = TestServer::start(|hit| {
        assert_eq!((hit.method.as_str(), hit.path.as_str()), ("POST", "/v1.0/$batch"));
        assert_eq!(hit.header("content-type"), Some("application/json"));
        match hit.n {
            // Answers come back in any order; only ids tie them to requests.
            0 => json(200, j!({"responses": [
                {"id": "c", "status": 404, "headers": {}, "body": {"error": {"code": "ImageNotFound", "message": "x"}}},
                {"id": "b", "status": 429, "headers": {"Retry-After": "0.05"}, "body": {"error": {"code": "TooManyRequests"}}},
                {"id": "a", "status": 200, "headers": {"Content-Type": "application/json"}, "body": {"id": "a"}},
            ]})),
            _ => json(200, j!({"responses": [{"id": "b", "status": 200, "body": {"id": "b"}}]})),
        }
    })
    .await;
    let (client, _) = server.client(fast_options());
    let requests = vec![
        BatchRequest::get("a", "/users/a/photo").in_mailbox("a"),
        BatchRequest::get("b", "/users/b/photo").in_mailbox("b"),
        BatchRequest::get("c", "/users/c/photo").in_mailbox("c"),
    ];
    let answers = client.batch(requests).await.unwrap();
    let got: Vec<(&str, u16)> = answers.iter().map(|a| (a.id.as_str(), a.status)).collect();
    assert_eq!(got, [("a", 200), ("b", 200), ("c", 404)]);
    assert_eq!(answers[1].body.json()["id"], "b");

    let hits = server.hits();
    assert_eq!(hits.len(), 2);
    assert_eq!(item_ids(&hits[0]), ["a", "b", "c"]);
    assert_eq!(
        item_ids(&hits[1]),
        ["b"],
        "only the throttled item is sent again"
    );
    let first: Value = serde_json::from_slice(&hits[0].body).unwrap();
    assert_eq!(
        first["requests"][0],
        j!({"id": "a", "method": "GET", "url": "/users/a/photo"})
    );
    assert!(
        hits[1].at - hits[0].at >= Duration::from_millis(50),
        "item Retry-After honoured"
    );
    assert_ne!(
        hits[0].header("client-request-id"),
        hits[1].header("client-request-id")
    );

    let stats = client.stats();
    assert_eq!((stats.requests, stats.throttled, stats.retries), (2, 1, 1));
    assert_eq!(stats.by_kind.get("batch"), Some(&2));
    assert_eq!(client.mailboxes().tracked(), 0);
}

#[tokio::test]
async fn items_still_throttled_come_back_as_429() {
    let server = TestServer::start(|hit| {
        let answers: Vec<Value> = item_ids(hit)
            .into_iter()
            .map(|id| match id.as_str() {
                "hot" => j!({"id": id, "status": 429, "headers": {"Retry-After": "0"}}),
                _ => j!({"id": id, "status": 200, "body": {}}),
            })
            .collect();
        json(200, j!({ "responses": answers }))
    })
    .await;
    let options = GraphOptions {
        max_retries: 2,
        ..fast_options()
    };
    let (client, _) = server.client(options);
    let answers = client
        .batch(vec![
            BatchRequest::get("ok", "/users/1"),
            BatchRequest::get("hot", "/users/2"),
        ])
        .await
        .unwrap();
    assert_eq!(
        answers.iter().map(|a| a.status).collect::<Vec<_>>(),
        [200, 429]
    );
    assert_eq!(
        server.hits().len(),
        3,
        "first send and max_retries re-sends"
    );
    assert_eq!(client.stats().throttled, 3);
}

#[tokio::test]
async fn large_input_is_split_into_batches_of_twenty() {
    let server = TestServer::start(|hit| {
        let answers: Vec<Value> = item_ids(hit)
            .into_iter()
            .map(|id| j!({"id": id, "status": 200, "body": {"n": id}}))
            .collect();
        json(200, j!({ "responses": answers }))
    })
    .await;
    let (client, _) = server.client(fast_options());
    let requests: Vec<_> = (0..45)
        .map(|i| BatchRequest::get(i.to_string(), format!("/users/{i}")))
        .collect();
    let answers = client.batch(requests).await.unwrap();
    assert_eq!(answers.len(), 45);
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.id, i.to_string());
        assert_eq!(answer.body.json()["n"], i.to_string());
    }
    let sizes: Vec<usize> = server.hits().iter().map(|h| item_ids(h).len()).collect();
    assert_eq!(sizes, [20, 20, 5]);
    assert!(client.batch(Vec::new()).await.unwrap().is_empty());
    assert_eq!(server.hits().len(), 3, "an empty batch sends nothing");
}

#[tokio::test]
async fn missing_item_answer_is_an_error() {
    let server =
        TestServer::start(|_| json(200, j!({"responses": [{"id": "1", "status": 200}]}))).await;
    let (client, _) = server.client(fast_options());
    let err = client
        .batch(vec![
            BatchRequest::get("1", "/a"),
            BatchRequest::get("2", "/b"),
        ])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`2`"), "{err}");
}

#[test]
fn item_bodies_are_read_as_each_reader_asks() {
    let answers: Vec<crate::graph::batch::BatchResponse> = serde_json::from_value(j!([
        {"id": "1", "status": 404, "body": {"error": {"code": "MailboxNotEnabledForRESTAPI", "message": "x"}}},
        {"id": "2", "status": 200, "body": {"value": [{"id": "c1"}], "error": {"code": "not an error"}}},
        {"id": "3", "status": 200, "headers": {"Content-Type": "image/png"}, "body": "iVBORw=="},
        {"id": "4", "status": 204}
    ]))
    .unwrap();
    assert!(answers[0].is_no_mailbox());
    assert_eq!(
        answers[0].error_code().as_deref(),
        Some("MailboxNotEnabledForRESTAPI")
    );
    assert_eq!(answers[1].error_code(), None, "a success has no error code");
    let page: crate::graph::Page<crate::graph::model::Contact> = answers[1].body.parse().unwrap();
    assert_eq!(page.value[0].id, "c1");
    assert_eq!(answers[2].binary_body().unwrap(), b"\x89PNG");
    assert_eq!(answers[3].body.json(), Value::Null, "no body reads as null");
    assert_eq!(answers[3].binary_body(), None);
}
