//! Paging and delta rounds over real HTTP: nextLink chains, the deltaLink, an expired
//! delta token, and links that point somewhere else.

use std::sync::atomic::Ordering;

use serde_json::json as j;

use super::support::{TestServer, fast_options, graph_error, json};
use crate::graph::{GraphError, User};

#[tokio::test]
async fn next_link_chain_ends_with_delta_link() {
    let server = TestServer::start(|hit| {
        // The links are absolute, on the server's own origin, as Graph sends them.
        let base = format!("http://{}/v1.0", hit.header("host").unwrap());
        match hit.path.as_str() {
            "/v1.0/users/delta?$select=id,displayName" => json(
                200,
                j!({
                    "value": [{"id": "u1", "displayName": "Ada"}, {"id": "u2"}],
                    "@odata.nextLink": format!("{base}/users/delta?$skiptoken=p2"),
                }),
            ),
            "/v1.0/users/delta?$skiptoken=p2" => json(
                200,
                j!({
                    "value": [{"id": "u3", "@removed": {"reason": "changed"}}],
                    "@odata.nextLink": format!("{base}/users/delta?$skiptoken=p3"),
                }),
            ),
            "/v1.0/users/delta?$skiptoken=p3" => json(
                200,
                j!({
                    "value": [{"id": "u4", "businessPhones": ["+1 555 0100"]}],
                    "@odata.deltaLink": format!("{base}/users/delta?$deltatoken=D1"),
                }),
            ),
            other => graph_error(400, &format!("unexpected {other}")),
        }
    })
    .await;
    let (client, _) = server.client(fast_options());
    let mut pages = client.pages::<User>(client.users_delta_url(&["id", "displayName"]), "delta");
    let mut ids = Vec::new();
    let mut removed = Vec::new();
    while let Some(page) = pages.next().await {
        for user in page.unwrap().value {
            if user.removed.is_some() {
                removed.push(user.id.clone());
            }
            ids.push(user.id);
        }
    }
    assert_eq!(ids, ["u1", "u2", "u3", "u4"]);
    assert_eq!(removed, ["u3"]);
    let delta = pages
        .delta_link()
        .expect("the round ends with a deltaLink")
        .to_string();
    assert_eq!(
        delta,
        format!("{}/v1.0/users/delta?$deltatoken=D1", server.base)
    );
    assert!(pages.pending_link().is_none());
    assert!(pages.next().await.is_none());
    assert_eq!(server.hits().len(), 3);
    assert_eq!(client.stats().by_kind.get("delta"), Some(&3));
}

#[tokio::test]
async fn expired_delta_token_asks_for_a_full_resync() {
    let server = TestServer::start(|_| graph_error(410, "syncStateNotFound")).await;
    let (client, _) = server.client(fast_options());
    let stored = format!("{}/v1.0/users/delta?$deltatoken=old", server.base);
    let mut pages = client.pages::<User>(stored.clone(), "delta");
    let err = pages.next().await.unwrap().unwrap_err();
    assert!(matches!(err, GraphError::SyncStateNotFound), "{err:?}");
    assert!(pages.next().await.is_none());
    assert_eq!(pages.pending_link(), Some(stored.as_str()));
    assert_eq!(server.hits().len(), 1, "not retried");
}

#[tokio::test]
async fn foreign_next_link_is_refused() {
    let server = TestServer::start(|hit| match hit.n {
        0 => json(
            200,
            j!({
                "value": [{"id": "u1"}],
                "@odata.nextLink": "https://graph.evil.example/v1.0/users?$skiptoken=x",
            }),
        ),
        _ => json(200, j!({"value": []})),
    })
    .await;
    let (client, tokens) = server.client(fast_options());
    let mut pages = client.pages::<User>(client.users_first_url(&["id"], 999), "users");
    let err = pages.next().await.unwrap().unwrap_err();
    match err {
        GraphError::ForeignUrl(url) => assert!(url.contains("graph.evil.example")),
        other => panic!("unexpected {other:?}"),
    }
    assert!(pages.next().await.is_none());
    assert_eq!(server.hits().len(), 1);
    assert_eq!(
        tokens.fetched.load(Ordering::SeqCst),
        1,
        "the token went only to the Graph host"
    );
    let stored = "https://graph.evil.example/v1.0/users/delta?$deltatoken=x";
    let err = client.get_page::<User>(stored, "delta").await.unwrap_err();
    assert!(matches!(err, GraphError::ForeignUrl(_)), "{err:?}");
}

#[tokio::test]
async fn mailbox_pages_of_contacts() {
    let server = TestServer::start(|hit| {
        assert!(
            hit.path.starts_with("/v1.0/users/m1/contacts?$select="),
            "{}",
            hit.path
        );
        json(
            200,
            j!({"value": [{"id": "c1", "emailAddresses": [{"address": "a@x"}]}]}),
        )
    })
    .await;
    let (client, _) = server.client(fast_options());
    let mut pages = client
        .pages::<crate::graph::Contact>(client.contacts_url("m1", 1000), "contacts")
        .for_mailbox("m1");
    let page = pages.next().await.unwrap().unwrap();
    assert_eq!(
        page.value[0].email_addresses[0].address.as_deref(),
        Some("a@x")
    );
    assert!(pages.next().await.is_none());
    assert_eq!(client.mailboxes().tracked(), 0, "the slot was released");
}
