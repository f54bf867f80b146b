//! Graph directory side: bearer checks (401/403 bodies, request ids), `/users` paging and
//! `$select`, delta rounds through changes and deletions and token expiry, groups.

use std::collections::HashSet;

use serde_json::Value;

use super::{ALL_PERMISSIONS, Fixture, TENANT, spec};
use crate::emulator::{NewUser, UserPatch};

#[tokio::test]
async fn wrong_audience_is_401_with_request_ids() {
    let fx = Fixture::new(spec(3), &["User.Read.All"]).await;
    let (status, body) = fx
        .credentials(
            &fx.client_id,
            &fx.cred,
            "https://graph.microsoft.com/.default",
        )
        .await;
    assert_eq!(status, 200, "Entra issues it; Graph refuses it: {body}");
    let url = format!("{}/v1.0/users", fx.base());
    let foreign = body["access_token"].as_str().unwrap();
    let response = fx
        .http
        .get(url)
        .bearer_auth(foreign)
        .header("client-request-id", "my-id-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["client-request-id"], "my-id-1");
    assert!(response.headers().contains_key("request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    assert_eq!(
        body["error"]["message"],
        "Access token validation failure. Invalid audience."
    );
    let inner = &body["error"]["innerError"];
    assert_eq!(inner["client-request-id"], "my-id-1");
    assert!(inner["date"].is_string() && inner["request-id"].is_string());
    assert_eq!(fx.get_json("", "/v1.0/users").await.0, 401);
}

#[tokio::test]
async fn missing_permissions_are_403() {
    let fx = Fixture::new(spec(3), &["User.Read.All"]).await;
    let token = fx.app_token().await;
    let user = fx.emu().users(TENANT)[0].id.clone();
    let (status, body) = fx
        .get_json(&token, &format!("/v1.0/users/{user}/contacts"))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("ErrorAccessDenied"))
    );
    let (contacts_only, cred) = Fixture::app(fx.emu(), &["Contacts.Read"]);
    let (_, body) = fx
        .credentials(&contacts_only, &cred, &format!("{}/.default", fx.base()))
        .await;
    let (status, body) = fx
        .get_json(body["access_token"].as_str().unwrap(), "/v1.0/users")
        .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "Authorization_RequestDenied");
    assert_eq!(
        body["error"]["message"],
        "Insufficient privileges to complete the operation."
    );
}

#[tokio::test]
async fn users_page_by_999_with_unique_ids() {
    let fx = Fixture::new(spec(2500), ALL_PERMISSIONS).await;
    let token = fx.app_token().await;
    let (mut next, mut pages, mut ids) =
        (Some("/v1.0/users?$top=999".to_string()), 0, HashSet::new());
    while let Some(url) = next {
        let (status, body) = fx.get_json(&token, &url).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body["@odata.context"]
                .as_str()
                .unwrap()
                .ends_with("$metadata#users")
        );
        for user in body["value"].as_array().unwrap() {
            assert!(
                ids.insert(user["id"].as_str().unwrap().to_string()),
                "duplicate {user}"
            );
            assert!(
                user.get("accountEnabled").is_none(),
                "not in the default property set"
            );
        }
        pages += 1;
        next = body["@odata.nextLink"].as_str().map(str::to_string);
    }
    assert_eq!(pages, 3);
    assert_eq!(
        ids.len(),
        2500 + 1 + 1,
        "members, the shared mailbox and the guest"
    );
}

#[tokio::test]
async fn users_select_and_top_limit() {
    let fx = Fixture::new(spec(5), ALL_PERMISSIONS).await;
    let token = fx.app_token().await;
    let (_, body) = fx
        .get_json(
            &token,
            "/v1.0/users?$select=displayName,accountEnabled,userType",
        )
        .await;
    let users = body["value"].as_array().unwrap();
    for user in users {
        let keys: HashSet<&str> = user
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            HashSet::from(["id", "displayName", "accountEnabled", "userType"])
        );
    }
    assert!(users.iter().any(|u| u["userType"] == "Guest"));
    let (status, body) = fx.get_json(&token, "/v1.0/users?$top=1000").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("Request_UnsupportedQuery"))
    );
    assert_eq!(
        fx.get_json(&token, "/v1.0/users?$select=shoeSize").await.0,
        400
    );
}

#[tokio::test]
async fn users_by_upn_and_unknown_id() {
    let fx = Fixture::new(spec(5), ALL_PERMISSIONS).await;
    let token = fx.app_token().await;
    let guest = fx
        .emu()
        .users(TENANT)
        .into_iter()
        .find(|u| u.user_type == "Guest")
        .unwrap();
    let path = format!(
        "/v1.0/users/{}",
        crate::emulator::util::url_encode(&guest.user_principal_name)
    );
    let (status, body) = fx.get_json(&token, &path).await;
    assert_eq!(
        (status, body["id"].as_str()),
        (200, Some(guest.id.as_str()))
    );
    let (status, body) = fx
        .get_json(&token, "/v1.0/users/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("Request_ResourceNotFound"))
    );
}

/// Follows a delta round to its end: `(items, deltaLink)`.
async fn delta_round(fx: &Fixture, token: &str, start: &str) -> (Vec<Value>, String) {
    let (mut url, mut items) = (start.to_string(), Vec::new());
    loop {
        let (status, body) = fx.get_json(token, &url).await;
        assert_eq!(status, 200, "{body}");
        items.extend(body["value"].as_array().unwrap().iter().cloned());
        match (
            body["@odata.nextLink"].as_str(),
            body["@odata.deltaLink"].as_str(),
        ) {
            (Some(next), None) => url = next.to_string(),
            (None, Some(delta)) => return (items, delta.to_string()),
            other => panic!("a page needs exactly one link: {other:?}"),
        }
    }
}

fn by_id<'a>(items: &'a [Value], id: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {items:?}"))
}

#[tokio::test]
async fn delta_rounds_report_changes_and_deletions() {
    let fx = Fixture::new(spec(250), ALL_PERMISSIONS).await;
    let (emu, token) = (fx.emu(), fx.app_token().await);
    let (first, link) =
        delta_round(&fx, &token, "/v1.0/users/delta?$select=displayName,mail").await;
    assert_eq!(first.len(), 252);
    assert!(
        first.iter().all(|u| u.get("userPrincipalName").is_none()),
        "$select rides in the links"
    );
    let users = emu.users(TENANT);
    let (renamed, soft, hard) = (&users[0], &users[1], &users[2]);
    let patch = UserPatch {
        display_name: Some("Renamed".into()),
        ..Default::default()
    };
    emu.update_user(TENANT, &renamed.id, patch);
    emu.delete_user(TENANT, &soft.id);
    emu.hard_delete_user(TENANT, &hard.id);
    let upn = format!("new.person@{}", super::DOMAIN);
    let added = emu.add_user(
        TENANT,
        NewUser {
            user_principal_name: upn,
            display_name: "New Person".into(),
            ..Default::default()
        },
    );
    let (changes, link) = delta_round(&fx, &token, &link).await;
    assert_eq!(changes.len(), 4);
    assert_eq!(by_id(&changes, &renamed.id)["displayName"], "Renamed");
    assert_eq!(by_id(&changes, &soft.id)["@removed"]["reason"], "changed");
    assert_eq!(by_id(&changes, &hard.id)["@removed"]["reason"], "deleted");
    assert_eq!(by_id(&changes, &added.id)["displayName"], "New Person");
    let (quiet, link) = delta_round(&fx, &token, &link).await;
    assert!(quiet.is_empty());
    emu.restore_user(TENANT, &soft.id);
    let (restored, _) = delta_round(&fx, &token, &link).await;
    assert_eq!(restored.len(), 1);
    assert!(by_id(&restored, &soft.id).get("@removed").is_none());
}

#[tokio::test]
async fn expired_and_malformed_delta_tokens() {
    let fx = Fixture::new(spec(30), ALL_PERMISSIONS).await;
    let token = fx.app_token().await;
    let (_, link) = delta_round(&fx, &token, "/v1.0/users/delta").await;
    fx.emu().expire_delta_tokens(TENANT);
    let (status, body) = fx.get_json(&token, &link).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("syncStateNotFound"))
    );
    let (status, _) = fx
        .get_json(&token, "/v1.0/users/delta?$deltatoken=garbage")
        .await;
    assert_eq!(status, 400);
    let (fresh, _) = delta_round(&fx, &token, "/v1.0/users/delta").await;
    assert_eq!(fresh.len(), 32, "a full resync works after expiry");
}

/// Every member id of a group's `transitiveMembers/microsoft.graph.user`, page by page.
async fn members(fx: &Fixture, token: &str, group: &str) -> HashSet<String> {
    let mut url =
        format!("/v1.0/groups/{group}/transitiveMembers/microsoft.graph.user?$top=50&$select=id");
    let mut ids = HashSet::new();
    loop {
        let (status, body) = fx.get_json(token, &url).await;
        assert_eq!(status, 200, "{body}");
        ids.extend(
            body["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["id"].as_str().unwrap().to_string()),
        );
        match body["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn groups_flatten_nested_members() {
    let fx = Fixture::new(spec(120), ALL_PERMISSIONS).await;
    let token = fx.app_token().await;
    let (_, groups) = fx.get_json(&token, "/v1.0/groups").await;
    let id_of = |name: &str| {
        let groups = groups["value"].as_array().unwrap();
        groups.iter().find(|g| g["displayName"] == name).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let engineering = members(&fx, &token, &id_of("Engineering")).await;
    let all = members(&fx, &token, &id_of("All Staff")).await;
    assert!(!engineering.is_empty());
    assert!(
        engineering.is_subset(&all),
        "the nested group's members are transitive members"
    );
    let users = fx.emu().users(TENANT);
    let named = users
        .iter()
        .filter(|u| u.user_type == "Member" && u.given_name.is_some())
        .count();
    assert_eq!(all.len(), named);
}
