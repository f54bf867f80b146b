//! The stand-in over a real socket: a valid round trip, each kind of violation refused and
//! counted, paging, token expiry and refresh, roles, tenant isolation, and faults.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;

const ACME: &str = "acme.test";
const BETA: &str = "beta.test";

fn tenant(domain: &str) -> PbxTenantSpec {
    PbxTenantSpec {
        domain: domain.into(),
        admin_username: "boss".into(),
        admin_password: "Boss-Pass-1".into(),
        local_users: vec![LocalUserSpec {
            name: "carol".into(),
            extension_number: "200".into(),
            email: None,
            display_name: "Carol".into(),
            password: "Carol-Pass-1".into(),
        }],
    }
}

async fn start() -> RunningPbxEmulator {
    let config = PbxEmulatorConfig {
        seed: 1,
        tenants: vec![tenant(ACME), tenant(BETA)],
    };
    PbxEmulator::new(config).start().await.unwrap()
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(pbx: &RunningPbxEmulator) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: pbx.api_url.clone(),
        }
    }

    async fn login(&self, user: &str, password: &str, domain: &str) -> (u16, Value) {
        let body = json!({"username": user, "password": password, "domain": domain});
        self.call("POST", "login", None, Some(body)).await
    }

    async fn token(&self, domain: &str) -> String {
        let (status, v) = self.login("boss", "Boss-Pass-1", domain).await;
        assert_eq!(status, 200, "{v}");
        v["access_token"].as_str().unwrap().to_string()
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}/{path}", self.base));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn new_user(name: &str, ext: &str) -> Value {
    json!({"name": name, "display_name": name, "password": "Pw-123456", "email": format!("{name}@x.test"),
           "role": "StandardUser", "extension_number": ext, "extension_password": "sip-pass",
           "voicemail_pin": "135792"})
}

#[tokio::test]
async fn users_round_trip_and_violations_are_refused_and_counted() {
    let pbx = start().await;
    let api = Api::new(&pbx);
    let t = api.token(ACME).await;
    let (status, created) = api
        .call("POST", "users", Some(&t), Some(new_user("dave", "1001")))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let (status, _) = api
        .call(
            "POST",
            &format!("users/{id}"),
            Some(&t),
            Some(json!({"display_name": "David"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .call(
            "POST",
            &format!("users/{id}/ms365_binding"),
            Some(&t),
            Some(json!({"id": "oid-1"})),
        )
        .await;
    assert_eq!(status, 200);
    let shown = pbx.emulator.users(ACME);
    let dave = shown.iter().find(|u| u["id"] == id.as_str()).unwrap();
    assert_eq!(
        (
            dave["display_name"].as_str(),
            dave["ms365_binding"].as_str()
        ),
        (Some("David"), Some("oid-1"))
    );
    assert!(dave.get("password").is_none(), "secrets are never shown");
    let cases = [
        (json!({"name": null}), "name"),
        (json!({"extension_number": "12"}), "extension_number"),
        (json!({"display_name": 3}), "display_name"),
        (json!({"colour": "red"}), "colour"),
        (json!({"voicemail_pin": "111222"}), "voicemail_pin"),
        (json!({"name": "Admin"}), "name"),
    ];
    for (change, field) in cases {
        let mut body = new_user("erin", "1002");
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        let (status, answer) = api.call("POST", "users", Some(&t), Some(body)).await;
        assert_eq!(status, 400, "{field}: {answer}");
        assert_eq!(answer["errors"][0]["code"], "VALIDATE_FAILED");
        assert_eq!(answer["errors"][0]["detail"]["field"], field, "{answer}");
    }
    let (status, _) = api
        .call("POST", "users", Some(&t), Some(new_user("frank", "1001")))
        .await;
    assert_eq!(status, 409, "a taken extension");
    assert!(pbx.emulator.stats().schema_rejections["POST /users"] >= 4);
    let (status, _) = api
        .call("POST", &format!("users/{id}/destroy"), Some(&t), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call("GET", &format!("users/{id}"), Some(&t), None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn lists_page_and_tenants_are_isolated() {
    let pbx = start().await;
    let api = Api::new(&pbx);
    let t = api.token(ACME).await;
    for i in 0..5 {
        let (status, _) = api
            .call(
                "POST",
                "users",
                Some(&t),
                Some(new_user(&format!("u{i}"), &format!("10{i}0"))),
            )
            .await;
        assert_eq!(status, 201);
    }
    let (_, page) = api.call("GET", "users?top=3&skip=0", Some(&t), None).await;
    assert_eq!(
        (
            page["count"].as_u64(),
            page["items"].as_array().unwrap().len()
        ),
        (Some(7), 3)
    );
    let (_, rest) = api.call("GET", "users?top=3&skip=6", Some(&t), None).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    let (status, _) = api.call("GET", "users?top=101", Some(&t), None).await;
    assert_eq!(status, 400, "top is at most 100");
    let beta = api.token(BETA).await;
    let (_, other) = api.call("GET", "users", Some(&beta), None).await;
    assert_eq!(
        other["count"].as_u64(),
        Some(2),
        "beta sees its own users only"
    );
}

#[tokio::test]
async fn tokens_expire_refresh_once_and_roles_are_enforced() {
    let pbx = start().await;
    let api = Api::new(&pbx);
    let (status, carol) = api.login("carol", "Carol-Pass-1", ACME).await;
    assert_eq!(status, 200);
    let t = carol["access_token"].as_str().unwrap();
    let (status, me) = api.call("GET", "login", Some(t), None).await;
    assert_eq!(
        (status, me["name"].as_str(), me["extension_number"].as_str()),
        (200, Some("carol"), Some("200"))
    );
    assert_eq!(
        pbx.emulator.token_owner(t),
        Some((ACME.into(), "carol".into()))
    );
    let (status, _) = api.call("GET", "users", Some(t), None).await;
    assert_eq!(status, 403, "a standard user is no administrator");
    let (status, _) = api.login("carol", "wrong", ACME).await;
    assert_eq!(status, 401);
    let refresh = carol["refresh_token"].as_str().unwrap();
    let (status, renewed) = api
        .call(
            "POST",
            "auth/refresh_token",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api.call("GET", "login", Some(t), None).await;
    assert_eq!(status, 401, "the old token ends with the refresh");
    let (status, _) = api
        .call(
            "POST",
            "auth/refresh_token",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(status, 401, "a refresh token works once");
    let new = renewed["access_token"].as_str().unwrap();
    pbx.emulator.advance_clock(Duration::from_secs(1801));
    let (status, _) = api.call("GET", "login", Some(new), None).await;
    assert_eq!(status, 401, "expired");
}

#[tokio::test]
async fn faults_fail_throttle_and_count() {
    let pbx = start().await;
    let api = Api::new(&pbx);
    let t = api.token(ACME).await;
    pbx.emulator.set_faults(PbxFaults {
        class: Some("users".into()),
        fail_next: 2,
        ..PbxFaults::default()
    });
    for _ in 0..2 {
        assert_eq!(api.call("GET", "users", Some(&t), None).await.0, 503);
    }
    assert_eq!(api.call("GET", "users", Some(&t), None).await.0, 200);
    assert_eq!(api.call("GET", "contacts", Some(&t), None).await.0, 200);
    pbx.emulator.set_faults(PbxFaults {
        throttle_rate: 1.0,
        retry_after_secs: 7,
        ..PbxFaults::default()
    });
    let response = api
        .http
        .get(format!("{}/users", api.base))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(pbx.emulator.stats().requests["GET /users"], 4);
}
