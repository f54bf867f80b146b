//! The stand-in over a real socket, part two: sign-in, token expiry on the stand-in's clock
//! and single-use refresh, settable token lifetimes, roles, and tenant isolation.

use std::time::Duration;

use serde_json::json;

use super::tests::{ACME, ADMIN, Api, BETA, admin_password, error, new_user, start};

#[tokio::test]
async fn sign_in_refresh_once_and_expiry_on_the_stand_ins_clock() {
    let pbx = start().await;
    let api = Api::new(&pbx);
    let (status, session) = api.login(ADMIN, &admin_password(ACME), "ACME.test").await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(
        (
            session["token_type"].as_str(),
            session["role"].as_str(),
            session["domain"].as_str()
        ),
        (Some("Bearer"), Some("Admin"), Some(ACME))
    );
    assert_eq!(session["expires_in"], 1800);
    assert!(
        chrono::DateTime::parse_from_rfc3339(session["expires_at"].as_str().unwrap()).is_ok(),
        "{session}"
    );
    let t = session["access_token"].as_str().unwrap();
    let (status, me) = api.call("GET", "/api/login", Some(t), None).await;
    assert_eq!(
        (status, me["id"].clone(), me["name"].as_str()),
        (200, session["id"].clone(), Some(ADMIN))
    );
    assert_eq!(
        pbx.emulator.token_owner(t),
        Some((ACME.into(), ADMIN.into()))
    );
    let refresh = json!({"refresh_token": session["refresh_token"]});
    let (status, renewed) = api
        .call(
            "POST",
            "/api/auth/refresh_token",
            None,
            Some(refresh.clone()),
        )
        .await;
    assert_eq!(
        (status, renewed["token_type"].as_str()),
        (200, Some("Bearer")),
        "{renewed}"
    );
    assert_eq!(
        api.call("GET", "/api/login", Some(t), None).await.0,
        401,
        "the old token ends with the refresh"
    );
    let (status, again) = api
        .call("POST", "/api/auth/refresh_token", None, Some(refresh))
        .await;
    assert_eq!(status, 401, "a refresh token works once");
    error(&again, "UNAUTHORIZED");
    let new = renewed["access_token"].as_str().unwrap();
    assert_eq!(api.call("GET", "/api/users", Some(new), None).await.0, 200);
    pbx.emulator.advance_clock(Duration::from_secs(1801));
    let (status, expired) = api.call("GET", "/api/users", Some(new), None).await;
    assert_eq!(status, 401, "expired");
    error(&expired, "UNAUTHORIZED");
    assert_eq!(pbx.emulator.token_owner(new), None);
    // Refreshing is what an expired access token is for, even once another sign-in has
    // swept the expired tokens away.
    api.token(BETA).await;
    let refresh = json!({"refresh_token": renewed["refresh_token"]});
    let (status, third) = api
        .call("POST", "/api/auth/refresh_token", None, Some(refresh))
        .await;
    assert_eq!(status, 200, "{third}");
    let third = third["access_token"].as_str().unwrap();
    assert_eq!(
        pbx.emulator.token_owner(third),
        Some((ACME.into(), ADMIN.into()))
    );
    let stats = pbx.emulator.stats();
    assert_eq!((stats.logins, stats.refreshes), (2, 2));
    assert_eq!(
        api.call("GET", "/api/login", None, None).await.0,
        401,
        "no token"
    );
    assert_eq!(
        api.call("GET", "/api/login", Some("nonsense"), None)
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn the_token_lifetime_is_settable_in_process_and_over_http() {
    let pbx = start().await;
    let api = Api::new(&pbx);
    pbx.emulator.set_token_lifetime(Duration::from_secs(1));
    let (_, session) = api.login(ADMIN, &admin_password(ACME), ACME).await;
    assert_eq!(session["expires_in"], 1);
    let t = session["access_token"].as_str().unwrap();
    assert_eq!(api.call("GET", "/api/login", Some(t), None).await.0, 200);
    pbx.emulator.advance_clock(Duration::from_millis(1001));
    assert_eq!(api.call("GET", "/api/login", Some(t), None).await.0, 401);
    let (status, _) = api
        .call(
            "POST",
            "/_pbx/token_lifetime",
            None,
            Some(json!({"seconds": 60})),
        )
        .await;
    assert_eq!(status, 204);
    let (_, session) = api.login(ADMIN, &admin_password(ACME), ACME).await;
    assert_eq!(session["expires_in"], 60);
    let t = session["access_token"].as_str().unwrap();
    let (status, _) = api
        .call(
            "POST",
            "/_pbx/advance_clock",
            None,
            Some(json!({"seconds": 61})),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(api.call("GET", "/api/login", Some(t), None).await.0, 401);
}

#[tokio::test]
async fn a_standard_user_signs_in_but_is_no_administrator_and_disabled_users_are_refused() {
    let pbx = start().await;
    let api = Api::new(&pbx);
    let (status, carol) = api.login("Carol", "Carol-Pass-1", ACME).await;
    assert_eq!(
        (status, carol["role"].as_str()),
        (200, Some("StandardUser")),
        "{carol}"
    );
    let t = carol["access_token"].as_str().unwrap();
    let (status, me) = api.call("GET", "/api/login", Some(t), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            me["name"].as_str(),
            me["extension_number"].as_str(),
            me["display_name"].as_str()
        ),
        (Some("carol"), Some("200"), Some("Carol Local"))
    );
    assert_eq!(me["id"], carol["id"]);
    let (status, refused) = api.call("GET", "/api/users", Some(t), None).await;
    assert_eq!(status, 403);
    error(&refused, "FORBIDDEN");
    assert_eq!(
        api.call("POST", "/api/users", Some(t), Some(new_user("x", "1001")))
            .await
            .0,
        403
    );
    assert_eq!(api.call("GET", "/api/contacts", Some(t), None).await.0, 403);
    for (user, password, domain) in [
        ("carol", "wrong", ACME),
        ("carol", "Carol-Pass-1", "nowhere.test"),
        ("nobody", "x", ACME),
    ] {
        let (status, answer) = api.login(user, password, domain).await;
        assert_eq!(status, 401, "{user}@{domain}");
        error(&answer, "UNAUTHORIZED");
    }
    let id = carol["id"].as_str().unwrap();
    pbx.emulator
        .edit_user(ACME, id, json!({"enabled": false}))
        .unwrap();
    let (status, answer) = api.login("carol", "Carol-Pass-1", ACME).await;
    assert_eq!(status, 403);
    assert!(
        error(&answer, "FORBIDDEN")["message"]
            .as_str()
            .unwrap()
            .contains("disabled")
    );
    assert_eq!(
        api.call("GET", "/api/login", Some(t), None).await.0,
        403,
        "the session of a disabled user"
    );
    assert_eq!(pbx.emulator.stats().logins, 1);
}

#[tokio::test]
async fn one_tenants_token_never_reaches_another_tenants_data() {
    let pbx = start().await;
    let api = Api::new(&pbx);
    let (acme, beta) = (api.token(ACME).await, api.token(BETA).await);
    let (_, created) = api
        .call(
            "POST",
            "/api/users",
            Some(&beta),
            Some(new_user("bea", "3001")),
        )
        .await;
    let bea = created["id"].as_str().unwrap().to_string();
    let (_, contact) = api
        .call(
            "POST",
            "/api/contacts",
            Some(&beta),
            Some(json!({"name": "Beta Supplier"})),
        )
        .await;
    let contact = contact["id"].as_str().unwrap().to_string();
    let (_, list) = api.call("GET", "/api/users", Some(&acme), None).await;
    assert_eq!(
        list["count"], 2,
        "acme sees its administrator and carol only: {list}"
    );
    assert_eq!(
        api.call("GET", &format!("/api/users/{bea}"), Some(&acme), None)
            .await
            .0,
        404
    );
    assert_eq!(
        api.call(
            "POST",
            &format!("/api/users/{bea}"),
            Some(&acme),
            Some(json!({"display_name": "Hijacked"}))
        )
        .await
        .0,
        404
    );
    assert_eq!(
        api.call(
            "POST",
            &format!("/api/users/{bea}/destroy"),
            Some(&acme),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        api.call(
            "POST",
            &format!("/api/contacts/{contact}/destroy"),
            Some(&acme),
            None
        )
        .await
        .0,
        404
    );
    let (_, contacts) = api.call("GET", "/api/contacts", Some(&acme), None).await;
    assert_eq!(contacts["count"], 0);
    let beta_users = pbx.emulator.users(BETA);
    let kept = beta_users
        .iter()
        .find(|u| u["id"] == bea.as_str())
        .expect("still there");
    assert_eq!(kept["display_name"], "bea");
    assert_eq!(pbx.emulator.contacts(BETA).len(), 1);
    // One tenant's administrator password does not open the other tenant.
    assert_eq!(api.login(ADMIN, &admin_password(ACME), BETA).await.0, 401);
}
