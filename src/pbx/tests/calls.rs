//! The API calls as PortSIP sees them: paths, bodies, the bearer token, paging, and the
//! answers read back (ids, records, 404s, validation errors).

use serde_json::json;

use super::{ADMIN, DOMAIN, PASSWORD, Pbx, Reply, error_body};
use crate::pbx::PbxError;
use crate::pbx::wire::{ContactFields, NewUser, UserUpdate};

fn user(i: usize) -> serde_json::Value {
    json!({
        "id": format!("u{i:03}"),
        "name": format!("user{i}"),
        "extension_number": format!("{}", 1000 + i),
        "enabled": true,
        "home_phone": "+1 555 0100",
        "created_at": "2024-01-02T03:04:05Z",
        "avatar_file_url": "ignored",
    })
}

fn new_user() -> NewUser {
    NewUser {
        name: "ann".into(),
        display_name: "Ann".into(),
        password: "Secret-pass-1".into(),
        email: "ann@acme.test".into(),
        role: "StandardUser".into(),
        extension_number: "1001".into(),
        extension_password: "ExtPass1".into(),
        voicemail_pin: "135792".into(),
        enabled: Some(true),
        mobile_phone: None,
        work_phone: Some("+1 555 0101".into()),
        department: None,
    }
}

#[tokio::test]
async fn signs_in_once_then_sends_the_bearer_token() {
    let pbx = Pbx::start(|h| match h.path.as_str() {
        "/api/users" => Reply::Json(200, json!({"count": 1, "items": [user(1)]})),
        _ => Reply::Default,
    })
    .await;
    let client = pbx.client();
    assert_eq!(client.list_users().await.unwrap().len(), 1);
    assert_eq!(client.count_users().await.unwrap(), 1);
    let hits = pbx.hits();
    assert_eq!(pbx.count("POST", "/api/login"), 1, "{hits:?}");
    assert_eq!(
        hits[0].body,
        json!({"username": ADMIN, "password": PASSWORD, "domain": DOMAIN})
    );
    assert!(hits[0].bearer.is_none());
    assert!(
        hits[1..]
            .iter()
            .all(|h| h.bearer.as_deref() == Some("tok-1"))
    );
    assert_eq!(hits[2].query, "top=1&skip=0", "the count asks for one user");
    let stats = client.stats();
    assert_eq!((stats.sign_ins, stats.requests, stats.retries), (1, 3, 0));
    let by_op: Vec<(&str, &str, u64)> = (stats.by_operation.iter())
        .map(|((op, outcome), n)| (op.as_str(), *outcome, *n))
        .collect();
    assert_eq!(
        by_op,
        vec![("GET /users", "ok", 2), ("POST /login", "ok", 1)],
        "attempts by operation and outcome"
    );
}

#[test]
fn operations_are_named_with_their_ids_templated() {
    use crate::pbx::client::operation;
    use reqwest::Method;
    let op = |m: Method, path: &str| operation(&m, "/api", path);
    assert_eq!(
        op(Method::POST, "/api/users/NzAw/ms365_binding"),
        "POST /users/{id}/ms365_binding"
    );
    assert_eq!(
        op(Method::POST, "/api/users/abc/destroy"),
        "POST /users/{id}/destroy"
    );
    assert_eq!(op(Method::GET, "/api/users"), "GET /users");
    assert_eq!(op(Method::POST, "/api/contacts/9"), "POST /contacts/{id}");
    assert_eq!(
        op(Method::POST, "/api/auth/refresh_token"),
        "POST /auth/refresh_token"
    );
    assert_eq!(operation(&Method::GET, "/", "/users/1"), "GET /users/{id}");
}

#[tokio::test]
async fn users_are_listed_100_a_page_until_count() {
    let all: Vec<_> = (0..250).map(user).collect();
    let pbx = Pbx::start(move |h| {
        if !h.is("GET", "/api/users") {
            return Reply::Default;
        }
        let q: std::collections::HashMap<&str, usize> = (h.query.split('&'))
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k, v.parse().unwrap()))
            .collect();
        let (top, skip) = (q["top"], q["skip"]);
        let items: Vec<_> = all.iter().skip(skip).take(top).cloned().collect();
        Reply::Json(200, json!({"count": 250, "items": items}))
    })
    .await;
    let users = pbx.client().list_users().await.unwrap();
    let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
    let want: Vec<String> = (0..250).map(|i| format!("u{i:03}")).collect();
    assert_eq!(ids, want, "every user once, in order");
    assert_eq!(users[7].home_phone.as_deref(), Some("+1 555 0100"));
    assert_eq!(users[7].created_at.as_deref(), Some("2024-01-02T03:04:05Z"));
    let pages: Vec<String> = (pbx.hits().into_iter())
        .filter(|h| h.is("GET", "/api/users"))
        .map(|h| h.query)
        .collect();
    assert_eq!(
        pages,
        ["top=100&skip=0", "top=100&skip=100", "top=100&skip=200"]
    );
}

#[tokio::test]
async fn a_short_page_ends_a_list_without_count() {
    let pbx = Pbx::start(|h| match (h.path.as_str(), h.nth) {
        ("/api/contacts", 0) => {
            let items: Vec<_> = (0..100)
                .map(|i| json!({"id": format!("c{i}"), "name": null}))
                .collect();
            Reply::Json(200, json!({ "items": items }))
        }
        ("/api/contacts", _) => {
            Reply::Json(200, json!({"items": [{"id": "last", "email": "x@y.test"}]}))
        }
        _ => Reply::Default,
    })
    .await;
    let contacts = pbx.client().list_contacts().await.unwrap();
    assert_eq!(contacts.len(), 101);
    assert_eq!(contacts[100].fields.email.as_deref(), Some("x@y.test"));
    assert_eq!(pbx.count("GET", "/api/contacts"), 2);
}

#[tokio::test]
async fn users_are_created_updated_bound_and_destroyed_with_portsips_bodies() {
    let pbx = Pbx::start(|h| match (h.method.as_str(), h.path.as_str()) {
        ("POST", "/api/users") => Reply::Json(201, json!({"id": "NzAw"})),
        ("POST", p) if p.starts_with("/api/users/NzAw") => Reply::Json(200, json!({})),
        ("GET", "/api/users/NzAw") => Reply::Json(200, user(5)),
        _ => Reply::Default,
    })
    .await;
    let client = pbx.client();
    assert_eq!(client.create_user(&new_user()).await.unwrap(), "NzAw");
    let update = UserUpdate {
        display_name: Some("Ann B".into()),
        enabled: Some(false),
        ..UserUpdate::default()
    };
    client.update_user("NzAw", &update).await.unwrap();
    client.bind_ms365("NzAw", "oid-1").await.unwrap();
    client.destroy_user("NzAw").await.unwrap();
    assert_eq!(client.get_user("NzAw").await.unwrap().unwrap().id, "u005");
    assert_eq!(client.get_user("gone").await.unwrap(), None, "404 is None");
    let err = client.destroy_user("gone/../x").await.unwrap_err();
    assert!(
        matches!(&err, PbxError::NotFound { what } if what.contains("gone%2F..%2Fx")),
        "{err:?}"
    );
    let hits = pbx.hits();
    let body = |path: &str| {
        hits.iter()
            .find(|h| h.path == path && h.method == "POST")
            .unwrap()
            .body
            .clone()
    };
    let created = body("/api/users");
    assert_eq!(created["voicemail_pin"], "135792");
    assert_eq!(created["role"], "StandardUser");
    assert!(
        created.get("mobile_phone").is_none(),
        "None is left out: {created}"
    );
    assert_eq!(
        body("/api/users/NzAw"),
        json!({"display_name": "Ann B", "enabled": false})
    );
    assert_eq!(
        body("/api/users/NzAw/ms365_binding"),
        json!({"id": "oid-1"})
    );
    assert_eq!(
        body("/api/users/NzAw/destroy"),
        serde_json::Value::Null,
        "no body"
    );
}

#[tokio::test]
async fn new_contacts_carry_only_their_fields_and_updates_carry_all() {
    let pbx = Pbx::start(|h| match (h.method.as_str(), h.path.as_str()) {
        ("POST", "/api/contacts") => Reply::Json(201, json!({"id": "c1"})),
        ("POST", _) if h.path.starts_with("/api/contacts/c1") => Reply::Json(200, json!({})),
        _ => Reply::Default,
    })
    .await;
    let client = pbx.client();
    let contact = ContactFields {
        name: "Front desk".into(),
        business: "+1 555 0199".into(),
        ..ContactFields::default()
    };
    assert_eq!(client.create_contact(&contact).await.unwrap(), "c1");
    client.update_contact("c1", &contact).await.unwrap();
    client.destroy_contact("c1").await.unwrap();
    let posts: Vec<_> = pbx
        .hits()
        .into_iter()
        .filter(|h| h.method == "POST")
        .collect();
    assert_eq!(
        posts[1].body,
        json!({"name": "Front desk", "business": "+1 555 0199"})
    );
    assert_eq!(posts[2].body["email"], "", "an update clears what is empty");
    assert_eq!(posts[3].path, "/api/contacts/c1/destroy");
}

#[tokio::test]
async fn a_validation_error_is_rejected_with_portsips_text_and_not_retried() {
    let pbx = Pbx::start(|h| match h.path.as_str() {
        "/api/users" => Reply::Json(
            400,
            error_body(
                "VALIDATE_FAILED",
                "extension_number must match ^[0-9]{3,64}$",
                Some("extension_number"),
            ),
        ),
        _ => Reply::Default,
    })
    .await;
    let client = pbx.client();
    let err = client.create_user(&new_user()).await.unwrap_err();
    let PbxError::Rejected {
        status,
        code,
        message,
        field,
    } = &err
    else {
        panic!("not Rejected: {err:?}");
    };
    assert_eq!((*status, code.as_str()), (400, "VALIDATE_FAILED"));
    assert!(message.contains("^[0-9]{3,64}$"), "{message}");
    assert_eq!(field.as_deref(), Some("extension_number"));
    assert!(!err.stops_phase() && !err.outcome_unknown());
    assert_eq!(pbx.count("POST", "/api/users"), 1);
}

#[tokio::test]
async fn the_client_never_prints_its_password_or_token() {
    let pbx = Pbx::start(|_| Reply::Default).await;
    let client = pbx.client();
    client.sign_in().await.unwrap();
    let shown = format!("{client:?}");
    assert!(shown.contains(ADMIN) && shown.contains(DOMAIN), "{shown}");
    assert!(
        !shown.contains(PASSWORD) && !shown.contains("tok-1"),
        "{shown}"
    );
    let shown = format!("{:?}", new_user());
    assert!(
        !shown.contains("Secret-pass-1") && !shown.contains("135792"),
        "{shown}"
    );
}
