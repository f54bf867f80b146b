//! The admin API over real TLS: PortSIP-shaped settings with validation errors naming the
//! field, "Generate New Key Pair" and `public_key.pem`, "Test connection" against the
//! emulator (missing certificate, unknown certificate, missing permission), "Sync now" and
//! the run records, bindings, tenants and tenant-administrator tokens, and the rules that
//! keep one tenant's administrator out of every other tenant.

use std::time::{Duration, Instant};

use http::StatusCode;
use ms365_gateway::ObjectId;
use ms365_gateway::admin::{Access, operations};
use ms365_gateway::store::{DirectoryUser, PbxProfile};
use ms365_stand_ins::emulator::AppRegistration;
use serde_json::{Value, json};

use crate::common::{SYSTEM_TOKEN, acme};
use crate::entra::DIRECTORY;
use crate::sso::{Page, SsoWorld, WorldOptions};

const PBX: &str = "https://pbx.test";

/// Calls the admin API on the PBX listener with a bearer token and optional tenant.
async fn call(
    w: &SsoWorld,
    method: &str,
    path: &str,
    token: Option<&str>,
    tenant: Option<&str>,
    body: Option<Value>,
) -> Page {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    if let Some(t) = tenant {
        headers.push(("x-tenant", t));
    }
    let body = body.map(|b| b.to_string());
    w.browser()
        .request(method, &format!("{PBX}{path}"), &headers, body)
        .await
}

async fn system(w: &SsoWorld, method: &str, path: &str, tenant: &str, body: Option<Value>) -> Page {
    call(w, method, path, Some(SYSTEM_TOKEN), Some(tenant), body).await
}

/// The PortSIP error's code and `detail.field`.
fn error_of(page: &Page) -> (String, String) {
    let v = page.json();
    let e = &v["errors"][0];
    (
        e["code"].as_str().unwrap_or_default().to_string(),
        e["detail"]["field"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

async fn tenant_token(w: &SsoWorld, tenant: &str) -> String {
    let path = format!("/api/admin/tenants/{tenant}/tokens");
    let page = system(w, "POST", &path, tenant, Some(json!({"label": "test"}))).await;
    assert_eq!(page.status, StatusCode::CREATED, "{}", page.body);
    page.json()["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn settings_read_write_and_name_the_bad_field() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let got = system(&w, "GET", "/api/ms365", "acme", None).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    let doc = got.json();
    assert_eq!(doc["redirect_uri"], "https://pbx.test/ms365/redirect");
    assert_eq!(
        doc["sbc_redirect_uri"],
        "https://sbc.test:8883/ms365/redirect"
    );
    assert_eq!(doc["application_id"], w.client_id.as_str());
    assert_eq!(doc["national_cloud"], "GLOBAL");

    let change = json!({"users": {"enabled": true, "starting_extension_number": "2000"},
        "national_cloud": "USGOV", "redirect_uri": "https://evil.test/x"});
    let saved = system(&w, "POST", "/api/ms365", "acme.test", Some(change)).await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    let doc = saved.json();
    assert_eq!(doc["users"]["starting_extension_number"], "2000");
    assert_eq!(doc["national_cloud"], "USGOV");
    assert_eq!(
        doc["application_id"],
        w.client_id.as_str(),
        "unnamed fields are kept"
    );
    assert_eq!(doc["redirect_uri"], "https://pbx.test/ms365/redirect");

    for (body, field) in [
        (json!({"directory_id": "not-a-guid"}), "directory_id"),
        (json!({"application_id": "1234"}), "application_id"),
        (json!({"sync_time": "61 * * * *"}), "sync_time"),
        (json!({"sync_time": "0 0 * *"}), "sync_time"),
        (
            json!({"users": {"starting_extension_number": "0100"}}),
            "users.starting_extension_number",
        ),
        (json!({"national_cloud": "MARS"}), "national_cloud"),
        (json!({"time_zone": "Mars/Base"}), "time_zone"),
        (json!({"users": {"enabled": "yes"}}), "users.enabled"),
        (json!({"no_such_field": 1}), ""),
    ] {
        let page = system(&w, "POST", "/api/ms365", "acme", Some(body.clone())).await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            page.body
        );
        let (code, named) = error_of(&page);
        assert_eq!(code, "VALIDATE_FAILED", "{body}");
        if !field.is_empty() {
            assert_eq!(named, field, "{body}: {}", page.body);
        }
    }
    let stored = w.store.ms365_settings(&acme()).await.unwrap();
    assert_eq!(
        stored.users.starting_extension_number, "2000",
        "failed posts change nothing"
    );
    let not_json = w
        .browser()
        .request(
            "POST",
            &format!("{PBX}/api/ms365"),
            &[
                ("authorization", &format!("Bearer {SYSTEM_TOKEN}")),
                ("x-tenant", "acme"),
            ],
            Some("{".into()),
        )
        .await;
    assert_eq!(error_of(&not_json).0, "BAD_REQUEST");
}

#[tokio::test]
async fn credentials_are_checked_and_tenants_kept_apart() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let anonymous = call(&w, "GET", "/api/ms365", None, None, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers.contains_key("www-authenticate"));
    assert_eq!(error_of(&anonymous).0, "UNAUTHORIZED");
    let wrong = call(&w, "GET", "/api/ms365", Some("m365a_wrong"), None, None).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let unnamed = call(&w, "GET", "/api/ms365", Some(SYSTEM_TOKEN), None, None).await;
    assert_eq!(
        unnamed.status,
        StatusCode::BAD_REQUEST,
        "the system administrator names a tenant"
    );
    let unknown = system(&w, "GET", "/api/ms365", "nobody", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let beta = tenant_token(&w, "beta").await;
    let own = call(&w, "GET", "/api/ms365", Some(&beta), None, None).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    assert_eq!(
        own.json()["application_id"],
        "",
        "beta sees its own (empty) settings"
    );
    for o in operations() {
        let path = o.path.replace("{id}", "x");
        let method = o.method.to_ascii_uppercase();
        let page = call(
            &w,
            &method,
            &path,
            Some(&beta),
            Some("acme"),
            Some(json!({})),
        )
        .await;
        match o.access {
            Access::Tenant | Access::System => assert_eq!(
                page.status,
                StatusCode::FORBIDDEN,
                "{method} {path} as beta's administrator naming acme: {}",
                page.body
            ),
            Access::Public => assert_eq!(page.status, StatusCode::OK),
        }
    }
    let system_only = call(&w, "GET", "/api/admin/tenants", Some(&beta), None, None).await;
    assert_eq!(system_only.status, StatusCode::FORBIDDEN);

    // Only the hash is stored: the token is nowhere in the database files.
    for entry in std::fs::read_dir(w.setup.path("data")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let needle = beta.as_bytes();
            assert!(
                !bytes.windows(needle.len()).any(|win| win == needle),
                "{} holds the token in clear",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn failed_attempts_lock_the_address_out() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    for _ in 0..10 {
        let page = call(&w, "GET", "/api/ms365", Some("m365a_guess"), None, None).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    }
    let locked = system(&w, "GET", "/api/ms365", "acme", None).await;
    assert_eq!(
        locked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right token waits"
    );
    let retry: u64 = locked.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(error_of(&locked).0, "TOO_MANY_REQUESTS");
}

#[tokio::test]
async fn an_admin_session_acts_in_its_tenant_from_its_own_pages_only() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let (oid, upn) = w.user.clone();
    let mut entry = w
        .store
        .directory_user(&acme(), &ObjectId::new(&oid))
        .await
        .unwrap()
        .unwrap();
    let b = w.browser();
    b.login("https://pbx.test/ms365/login?domain=acme.test", &upn)
        .await;
    let as_user = b.get(&format!("{PBX}/api/ms365")).await;
    assert_eq!(
        as_user.status,
        StatusCode::FORBIDDEN,
        "a standard user is no administrator"
    );

    entry.role = ms365_gateway::store::Role::Admin;
    w.store.upsert_directory_user(&entry).await.unwrap();
    let b = w.browser();
    b.login("https://pbx.test/ms365/login?domain=acme.test", &upn)
        .await;
    let read = b.get(&format!("{PBX}/api/ms365")).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.json()["application_id"], w.client_id.as_str());
    let url = format!("{PBX}/api/ms365");
    let body = Some(json!({"sync_time": "30 1 * * *"}).to_string());
    let cross = b
        .request(
            "POST",
            &url,
            &[
                ("origin", "https://evil.test"),
                ("content-type", "application/json"),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN, "{}", cross.body);
    let same = b
        .request(
            "POST",
            &url,
            &[("origin", PBX), ("content-type", "application/json")],
            body,
        )
        .await;
    assert_eq!(same.status, StatusCode::OK, "{}", same.body);
    assert_eq!(same.json()["sync_time"], "30 1 * * *");
    let other = b.request("GET", &url, &[("x-tenant", "beta")], None).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
}

/// Configures tenant beta on the emulator app through the API; returns beta's token.
async fn configure_beta(w: &SsoWorld, client_id: &str) -> String {
    let token = tenant_token(w, "beta").await;
    let body = json!({"directory_id": DIRECTORY, "application_id": client_id, "sync_mode": "MANUAL",
        "users": {"enabled": true, "starting_extension_number": "500"}});
    let page = call(w, "POST", "/api/ms365", Some(&token), None, Some(body)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    token
}

async fn test_connection(w: &SsoWorld, token: &str) -> Value {
    let page = call(w, "POST", "/api/ms365/test", Some(token), None, None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.json()
}

fn check<'a>(result: &'a Value, name: &str) -> &'a Value {
    result["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {result}"))
}

#[tokio::test]
async fn key_pair_download_and_connection_test_walk_the_guide() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let token = configure_beta(&w, &w.client_id).await;
    let none = call(
        &w,
        "GET",
        "/api/ms365/certificate",
        Some(&token),
        None,
        None,
    )
    .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    let before = test_connection(&w, &token).await;
    assert_eq!(before["ok"], false);
    assert!(
        check(&before, "token")["message"]
            .as_str()
            .unwrap()
            .contains("key pair"),
        "{before}"
    );

    let made = call(
        &w,
        "POST",
        "/api/ms365/certificate",
        Some(&token),
        None,
        None,
    )
    .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    assert_eq!(
        made.headers["content-disposition"],
        "attachment; filename=\"public_key.pem\""
    );
    assert!(
        made.body.starts_with("-----BEGIN CERTIFICATE-----"),
        "{}",
        made.body
    );
    let again = call(
        &w,
        "GET",
        "/api/ms365/certificate",
        Some(&token),
        None,
        None,
    )
    .await;
    assert_eq!(
        again.body, made.body,
        "the download is the generated certificate"
    );

    let unknown = test_connection(&w, &token).await;
    let token_check = check(&unknown, "token");
    assert_eq!(token_check["ok"], false);
    assert_eq!(token_check["aadsts"], 700027, "{unknown}");
    assert!(
        token_check["hint"]
            .as_str()
            .unwrap()
            .contains("public_key.pem")
    );

    w.emulator
        .emulator
        .upload_certificate(DIRECTORY, &w.client_id, &made.body)
        .unwrap();
    let good = test_connection(&w, &token).await;
    assert_eq!(good["ok"], true, "{good}");
    for name in ["token", "users", "photo", "contacts"] {
        assert_eq!(check(&good, name)["ok"], true, "{good}");
    }

    let status = call(&w, "GET", "/api/ms365/status", Some(&token), None, None)
        .await
        .json();
    let thumbprint = made.headers["x-certificate-thumbprint"].to_str().unwrap();
    assert_eq!(status["certificate"]["thumbprint"], thumbprint);
    let days = status["certificate"]["days_left"].as_i64().unwrap();
    assert!((363..=365).contains(&days), "{status}");
    assert_eq!(status["warnings"], json!([]), "{status}");
    assert_eq!(status["configured"], true);
    assert_eq!(status["sync"]["mode"], "MANUAL");
    assert_eq!(
        status["sync"]["next_run"],
        Value::Null,
        "manual tenants have no schedule"
    );
    let metrics = reqwest::get(format!("http://{}/metrics", w.gateway.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ms365_certificate_days_left{tenant=\"beta\"} 36")),
        "{metrics}"
    );
}

#[tokio::test]
async fn connection_test_names_a_missing_permission() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let app = AppRegistration {
        display_name: "PBX without contacts".into(),
        redirect_uris: vec![],
        permissions: vec!["User.Read.All".into()],
        client_id: None,
    };
    let client_id = w.emulator.emulator.register_app(DIRECTORY, app);
    let token = configure_beta(&w, &client_id).await;
    let made = call(
        &w,
        "POST",
        "/api/ms365/certificate",
        Some(&token),
        None,
        None,
    )
    .await;
    w.emulator
        .emulator
        .upload_certificate(DIRECTORY, &client_id, &made.body)
        .unwrap();
    let result = test_connection(&w, &token).await;
    assert_eq!(result["ok"], false);
    assert_eq!(check(&result, "users")["ok"], true, "{result}");
    let contacts = check(&result, "contacts");
    assert_eq!(contacts["ok"], false);
    assert!(
        contacts["hint"].as_str().unwrap().contains("Contacts.Read"),
        "{result}"
    );
}

/// Polls the run list until the newest run has ended (bounded).
async fn finished_run(w: &SsoWorld, token: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = call(
            w,
            "GET",
            "/api/ms365/sync/runs?limit=5",
            Some(token),
            None,
            None,
        )
        .await;
        let first = runs.json()["items"][0].clone();
        if first["status"].is_string() && first["status"] != "running" {
            return first;
        }
        assert!(Instant::now() < deadline, "no finished run: {}", runs.body);
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sync_now_records_a_run_the_api_shows() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let token = tenant_token(&w, "acme").await;
    let on = json!({"users": {"enabled": true, "starting_extension_number": "3000"}});
    assert_eq!(
        call(&w, "POST", "/api/ms365", Some(&token), None, Some(on))
            .await
            .status,
        StatusCode::OK
    );
    let started = call(&w, "POST", "/api/ms365/sync", Some(&token), None, None).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    assert!(
        started.json()["outcome"]
            .as_str()
            .unwrap()
            .starts_with("queued")
            || started.json()["outcome"]
                .as_str()
                .unwrap()
                .starts_with("coalesced")
    );
    let run = finished_run(&w, &token).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "api");
    let created = run["counts"]["users"]["created"].as_u64().unwrap();
    assert!(created > 5, "{run}");
    let id = run["id"].as_str().unwrap();
    let one = call(
        &w,
        "GET",
        &format!("/api/ms365/sync/runs/{id}"),
        Some(&token),
        None,
        None,
    )
    .await;
    assert_eq!(one.json(), run);
    let approve = call(
        &w,
        "POST",
        &format!("/api/ms365/sync/runs/{id}/approve"),
        Some(&token),
        None,
        None,
    )
    .await;
    assert_eq!(approve.status, StatusCode::CONFLICT, "{}", approve.body);
    let status = call(&w, "GET", "/api/ms365/status", Some(&token), None, None)
        .await
        .json();
    assert_eq!(status["sync"]["last_run"]["id"], id);
    assert_eq!(status["sync"]["running"], false);

    let beta = tenant_token(&w, "beta").await;
    let hidden = call(
        &w,
        "GET",
        &format!("/api/ms365/sync/runs/{id}"),
        Some(&beta),
        None,
        None,
    )
    .await;
    assert_eq!(
        hidden.status,
        StatusCode::NOT_FOUND,
        "another tenant's run does not exist for beta"
    );

    let users = call(&w, "GET", "/api/ms365/users", Some(&token), None, None).await;
    assert_eq!(users.status, StatusCode::OK, "{}", users.body);
    let listed = users.json();
    assert_eq!(
        listed["count"].as_u64().unwrap() as usize,
        w.emulator.emulator.users(DIRECTORY).len()
    );
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["id"] == w.user.0.as_str())
    );
}

#[tokio::test]
async fn a_local_user_is_bound_and_unbound_by_hand() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let token = tenant_token(&w, "acme").await;
    let profile = PbxProfile {
        display_name: "Front desk".into(),
        ..Default::default()
    };
    let local = w
        .store
        .create_local_pbx_user(&acme(), "777", "frontdesk", &profile)
        .await
        .unwrap();
    let other = w
        .emulator
        .emulator
        .users(DIRECTORY)
        .into_iter()
        .find(|u| u.id != w.user.0 && u.account_enabled)
        .unwrap();
    let path = format!("/api/users/{}/ms365_binding", local.id);
    let bound = call(
        &w,
        "POST",
        &path,
        Some(&token),
        None,
        Some(json!({"id": other.user_principal_name})),
    )
    .await;
    assert_eq!(bound.status, StatusCode::OK, "{}", bound.body);
    assert_eq!(bound.json()["id"], other.id.to_ascii_lowercase());
    let entry: DirectoryUser = w
        .store
        .directory_user(&acme(), &ObjectId::new(&other.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (entry.source.as_str(), entry.pbx_user_id.as_str()),
        ("binding", local.id.as_str())
    );
    assert_eq!(entry.extension.as_deref(), Some("777"));

    let synced = call(
        &w,
        "POST",
        &path,
        Some(&token),
        None,
        Some(json!({"id": w.user.0})),
    )
    .await;
    assert_eq!(synced.status, StatusCode::CONFLICT, "{}", synced.body);
    let missing = call(
        &w,
        "POST",
        &path,
        Some(&token),
        None,
        Some(json!({"id": "ghost@nowhere.test"})),
    )
    .await;
    assert_eq!(
        error_of(&missing),
        ("VALIDATE_FAILED".into(), "id".into()),
        "{}",
        missing.body
    );
    let no_user = call(
        &w,
        "POST",
        "/api/users/nope/ms365_binding",
        Some(&token),
        None,
        Some(json!({"id": other.id})),
    )
    .await;
    assert_eq!(no_user.status, StatusCode::NOT_FOUND);

    let destroy = format!("{path}/destroy");
    assert_eq!(
        call(&w, "POST", &destroy, Some(&token), None, None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert!(
        w.store
            .directory_user(&acme(), &ObjectId::new(&other.id))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        call(&w, "POST", &destroy, Some(&token), None, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_system_administrator_creates_tenants() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let call_sys = |method: &'static str, body: Value| {
        let w = &w;
        async move {
            call(
                w,
                method,
                "/api/admin/tenants",
                Some(SYSTEM_TOKEN),
                None,
                Some(body),
            )
            .await
        }
    };
    let made = call_sys("POST", json!({"domain": "Gamma.Test", "name": "Gamma"})).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    assert_eq!(
        made.json(),
        json!({"id": "gamma-test", "domain": "gamma.test", "name": "Gamma"})
    );
    assert_eq!(
        call_sys("POST", json!({"domain": "gamma.test", "id": "g2"}))
            .await
            .status,
        StatusCode::CONFLICT
    );
    let bad = call_sys("POST", json!({"domain": "not a domain"})).await;
    assert_eq!(error_of(&bad), ("VALIDATE_FAILED".into(), "domain".into()));
    let listed = call(
        &w,
        "GET",
        "/api/admin/tenants",
        Some(SYSTEM_TOKEN),
        None,
        None,
    )
    .await
    .json();
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "beta", "gamma-test"]);
    let at_system_level = system(&w, "GET", "/api/admin/ms365", "gamma.test", None).await;
    assert_eq!(at_system_level.status, StatusCode::OK);
    assert_eq!(at_system_level.json()["sync_time"], "0 0 * * *");
}

#[tokio::test]
async fn the_openapi_document_lists_every_operation() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let page = call(&w, "GET", "/api/ms365/openapi.json", None, None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    let doc = page.json();
    assert_eq!(doc["openapi"], "3.1.0");
    for o in operations() {
        assert!(
            doc["paths"][o.path][o.method]["operationId"].is_string(),
            "{} {}",
            o.method,
            o.path
        );
    }
}

#[tokio::test]
async fn an_unreadable_token_file_stops_start_up_naming_the_key() {
    let setup = crate::common::Setup::new();
    std::fs::write(setup.path("admin.token"), "short\n").unwrap();
    let toml = setup.config_toml(&crate::common::Options {
        upstream_url: "http://127.0.0.1:9",
        ..Default::default()
    });
    let err = ms365_gateway::Gateway::bind(setup.config(&toml))
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("admin.token_file") && text.contains("at least 16"),
        "{text}"
    );
    assert!(err.is_config_error());
}

#[tokio::test]
async fn tenant_admin_tokens_are_listed_revoked_and_expire() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let issued = system(
        &w,
        "POST",
        "/api/admin/tenants/acme/tokens",
        "acme",
        Some(json!({"label": "ops laptop", "expires_in_days": 30})),
    )
    .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
    let issued = issued.json();
    let token = issued["token"].as_str().unwrap().to_string();
    let in_30_days =
        issued["expires_at"].as_i64().unwrap() - issued["created_at"].as_i64().unwrap();
    assert_eq!(in_30_days, 30 * 86_400);
    let other = tenant_token(&w, "acme").await;
    let beta = tenant_token(&w, "beta").await;

    // A tenant administrator sees its tenant's tokens, never a secret, never beta's.
    let mine = call(&w, "GET", "/api/ms365/tokens", Some(&token), None, None).await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.body);
    let listed = mine.json();
    assert_eq!(listed["count"], 2, "{listed}");
    assert!(!mine.body.contains(&token) && !mine.body.contains(&other));
    assert!(!mine.body.contains("\"token\""), "{}", mine.body);

    // It revokes one of its own; the revoked token stops working at once.
    let other_id = (listed["items"].as_array().unwrap().iter())
        .find(|t| t["label"] == "test")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/api/ms365/tokens/{other_id}");
    let revoked = call(&w, "DELETE", &path, Some(&token), None, None).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.body);
    let gone = call(&w, "GET", "/api/ms365", Some(&other), None, None).await;
    assert_eq!(gone.status, StatusCode::UNAUTHORIZED);

    // Beta's tokens are out of acme's reach; the system administrator revokes them.
    let beta_list = system(&w, "GET", "/api/admin/tenants/beta/tokens", "beta", None).await;
    let beta_id = beta_list.json()["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let across = call(
        &w,
        "DELETE",
        &format!("/api/ms365/tokens/{beta_id}"),
        Some(&token),
        None,
        None,
    )
    .await;
    assert_eq!(across.status, StatusCode::NOT_FOUND);
    let path = format!("/api/admin/tenants/beta/tokens/{beta_id}");
    assert_eq!(
        system(&w, "DELETE", &path, "beta", None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&w, "GET", "/api/ms365", Some(&beta), None, None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // An expired token is refused.
    let expired = "m365a_expired-token-for-the-test-0123456789";
    w.store
        .insert_admin_token(
            &acme(),
            &ms365_gateway::admin::hash_token(expired),
            "expired",
            Some(ms365_gateway::store::now_epoch() - 1),
        )
        .await
        .unwrap();
    let page = call(&w, "GET", "/api/ms365", Some(expired), None, None).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    let bad = system(
        &w,
        "POST",
        "/api/admin/tenants/acme/tokens",
        "acme",
        Some(json!({"expires_in_days": 0})),
    )
    .await;
    assert_eq!(
        error_of(&bad),
        ("VALIDATE_FAILED".into(), "expires_in_days".into())
    );
}
