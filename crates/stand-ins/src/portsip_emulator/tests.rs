//! The stand-in over a real socket, part one: users and contacts round trips, each kind of
//! violation refused as PortSIP refuses it (400 `VALIDATE_FAILED` naming the field) and
//! counted, conflicts, and paging. The harness here is shared with `session_tests`.

use serde_json::{Value, json};

use super::*;

pub(super) const ACME: &str = "acme.test";
pub(super) const BETA: &str = "beta.test";
pub(super) const ADMIN: &str = "boss";

pub(super) fn admin_password(domain: &str) -> String {
    format!("{domain}-Boss-Pass-1")
}

pub(super) fn tenant(domain: &str) -> PbxTenantSpec {
    PbxTenantSpec {
        domain: domain.into(),
        admin_username: ADMIN.into(),
        admin_password: admin_password(domain),
        local_users: vec![LocalUserSpec {
            name: "carol".into(),
            extension_number: "200".into(),
            email: None,
            display_name: "Carol Local".into(),
            password: "Carol-Pass-1".into(),
        }],
    }
}

pub(super) async fn start() -> RunningPbxEmulator {
    let config = PbxEmulatorConfig {
        seed: 1,
        tenants: vec![tenant(ACME), tenant(BETA)],
    };
    PbxEmulator::new(config).start().await.unwrap()
}

/// A small client: every call answers (status, JSON body or `Null`).
pub(super) struct Api {
    pub http: reqwest::Client,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Api {
    pub fn new(pbx: &RunningPbxEmulator) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: pbx.base_url.clone(),
        }
    }

    pub async fn login(&self, user: &str, password: &str, domain: &str) -> (u16, Value) {
        let body = json!({"username": user, "password": password, "domain": domain});
        self.call("POST", "/api/login", None, Some(body)).await
    }

    /// The tenant administrator's access token.
    pub async fn token(&self, domain: &str) -> String {
        let (status, v) = self.login(ADMIN, &admin_password(domain), domain).await;
        assert_eq!(status, 200, "{v}");
        v["access_token"].as_str().unwrap().to_string()
    }

    /// `path` from the server root (`/api/users`, `/_pbx/stats`).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.request(method, path, token);
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let request = self.http.request(method, format!("{}{path}", self.base));
        match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    }
}

pub(super) fn new_user(name: &str, ext: &str) -> Value {
    json!({"name": name, "display_name": name, "password": "Pw-123456",
           "email": format!("{name}@x.test"), "role": "StandardUser", "extension_number": ext,
           "extension_password": "sip-pass", "voicemail_pin": "135792"})
}

/// Asserts PortSIP's error shape; the first error.
pub(super) fn error(answer: &Value, code: &str) -> Value {
    let first = answer["errors"][0].clone();
    assert_eq!(first["code"], code, "{answer}");
    assert!(
        first["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{answer}"
    );
    first
}

#[tokio::test]
async fn a_user_is_created_read_updated_bound_and_destroyed() {
    let pbx = start().await;
    let api = Api::new(&pbx);
    let t = api.token(ACME).await;
    let (status, created) = api
        .call(
            "POST",
            "/api/users",
            Some(&t),
            Some(new_user("dave", "1001")),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let path = format!("/api/users/{id}");
    let update = json!({"display_name": "David", "voicemail_pin": "246801"});
    assert_eq!(api.call("POST", &path, Some(&t), Some(update)).await.0, 200);
    let bind = json!({"id": "0a1b2c3d-oid"});
    let (status, _) = api
        .call(
            "POST",
            &format!("{path}/ms365_binding"),
            Some(&t),
            Some(bind),
        )
        .await;
    assert_eq!(status, 200);
    let (status, dave) = api.call("GET", &path, Some(&t), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            dave["display_name"].as_str(),
            dave["extension_number"].as_str()
        ),
        (Some("David"), Some("1001"))
    );
    assert_eq!(
        (dave["voicemail_pin"].as_str(), dave["sync_type"].as_str()),
        (Some("246801"), Some("Microsoft 365"))
    );
    assert!(
        dave.get("password").is_none() && dave.get("extension_password").is_none(),
        "{dave}"
    );
    let shown = pbx.emulator.users(ACME);
    let shown = shown.iter().find(|u| u["id"] == id.as_str()).unwrap();
    assert_eq!(
        (
            shown["ms365_binding"].as_str(),
            shown["created_by"].as_str()
        ),
        (Some("0a1b2c3d-oid"), Some(ADMIN))
    );
    assert!(
        shown.get("password").is_none(),
        "the control API shows no password either"
    );
    let unbind = format!("{path}/ms365_binding/destroy");
    assert_eq!(api.call("POST", &unbind, Some(&t), None).await.0, 204);
    assert_eq!(
        pbx.emulator
            .users(ACME)
            .iter()
            .find(|u| u["id"] == id.as_str())
            .unwrap()["ms365_binding"],
        ""
    );
    assert_eq!(
        api.call("POST", &format!("{path}/destroy"), Some(&t), None)
            .await
            .0,
        204
    );
    let (status, gone) = api.call("GET", &path, Some(&t), None).await;
    assert_eq!(status, 404);
    error(&gone, "NOT_FOUND");
    assert_eq!(
        api.call("POST", &format!("{path}/destroy"), Some(&t), None)
            .await
            .0,
        404
    );
    let stats = pbx.emulator.stats();
    assert_eq!(stats.requests["POST /users"], 1);
    assert_eq!(stats.requests["POST /users/{id}/destroy"], 2);
    assert!(
        stats.schema_rejections.is_empty(),
        "{:?}",
        stats.schema_rejections
    );
}

#[tokio::test]
async fn each_violation_answers_validate_failed_naming_the_field_and_is_counted() {
    let pbx = start().await;
    let api = Api::new(&pbx);
    let t = api.token(ACME).await;
    let cases = [
        (
            "extension_password",
            Value::Null,
            "extension_password",
            "required",
        ),
        ("enabled", json!("yes"), "enabled", "type boolean"),
        (
            "display_name",
            json!("x".repeat(1025)),
            "display_name",
            "at most 1024",
        ),
        (
            "extension_number",
            json!("ab-cd"),
            "extension_number",
            "pattern",
        ),
        (
            "extension_number",
            json!("ext-123"),
            "extension_number",
            "digits only",
        ),
        (
            "favourite_colour",
            json!("blue"),
            "favourite_colour",
            "not a field",
        ),
        ("sms", json!("SOMETIMES"), "sms", "one of"),
        (
            "voicemail_pin",
            json!("111357"),
            "voicemail_pin",
            "three equal",
        ),
        (
            "voicemail_pin",
            json!("135012"),
            "voicemail_pin",
            "in a row",
        ),
        ("name", json!("Administrator"), "name", "reserved"),
        ("name", json!(".dave"), "name", "period"),
        ("name", json!("da ve"), "name", "letters, digits"),
    ];
    for (key, value, field, message) in &cases {
        let mut body = new_user("erin", "1002");
        match value {
            Value::Null => drop(body.as_object_mut().unwrap().remove(*key)),
            value => body[*key] = value.clone(),
        }
        let (status, answer) = api.call("POST", "/api/users", Some(&t), Some(body)).await;
        assert_eq!(status, 400, "{key}: {answer}");
        let e = error(&answer, "VALIDATE_FAILED");
        assert_eq!(e["detail"]["field"], *field, "{answer}");
        assert!(e["message"].as_str().unwrap().contains(message), "{answer}");
    }
    let response = api
        .request("POST", "/api/users", Some(&t))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(error(&answer, "VALIDATE_FAILED")["detail"]["field"], "body");
    let stats = pbx.emulator.stats();
    assert_eq!(
        stats.schema_rejections["POST /users"],
        cases.len() as u64 + 1
    );
    assert!(
        pbx.emulator.users(ACME).iter().all(|u| u["name"] != "erin"),
        "nothing was created"
    );
}

#[tokio::test]
async fn taken_names_numbers_and_bindings_conflict_and_updates_are_validated() {
    let pbx = start().await;
    let api = Api::new(&pbx);
    let t = api.token(ACME).await;
    let (_, created) = api
        .call(
            "POST",
            "/api/users",
            Some(&t),
            Some(new_user("dave", "1001")),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    for (body, field) in [
        (new_user("frank", "1001"), "extension_number"),
        (new_user("DAVE", "1003"), "name"),
        (new_user("gina", "200"), "extension_number"),
    ] {
        let (status, answer) = api.call("POST", "/api/users", Some(&t), Some(body)).await;
        assert_eq!(status, 409, "{answer}");
        assert_eq!(error(&answer, "CONFLICT")["detail"]["field"], field);
    }
    // The same number in another tenant is no clash.
    let beta = api.token(BETA).await;
    assert_eq!(
        api.call(
            "POST",
            "/api/users",
            Some(&beta),
            Some(new_user("dave", "1001"))
        )
        .await
        .0,
        201
    );
    let carol = pbx
        .emulator
        .users(ACME)
        .into_iter()
        .find(|u| u["name"] == "carol")
        .unwrap();
    let bind = |who: &str| {
        (
            format!("/api/users/{who}/ms365_binding"),
            json!({"id": "oid-7"}),
        )
    };
    let (path, body) = bind(&id);
    assert_eq!(api.call("POST", &path, Some(&t), Some(body)).await.0, 200);
    let (path, body) = bind(carol["id"].as_str().unwrap());
    assert_eq!(
        api.call("POST", &path, Some(&t), Some(body)).await.0,
        409,
        "one OID, one user"
    );
    assert_eq!(pbx.emulator.stats().conflicts["POST /users"], 3);
    let path = format!("/api/users/{id}");
    let cases = [
        (json!({"extension_number": "1009"}), "extension_number"),
        (json!({"voicemail_pin": "987654"}), "voicemail_pin"),
        (json!({"display_name": null}), "display_name"),
    ];
    for (body, field) in cases {
        let (status, answer) = api.call("POST", &path, Some(&t), Some(body)).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(error(&answer, "VALIDATE_FAILED")["detail"]["field"], field);
    }
    assert_eq!(
        pbx.emulator.stats().schema_rejections["POST /users/{id}"],
        3
    );
    let (status, _) = api
        .call("POST", "/api/users/Tm9wZQ/destroy", Some(&t), None)
        .await;
    assert_eq!(status, 404, "an unknown id");
}

#[tokio::test]
async fn lists_page_in_creation_order_and_top_is_bounded() {
    let pbx = start().await;
    let api = Api::new(&pbx);
    let t = api.token(ACME).await;
    for i in 0..5 {
        let (status, _) = api
            .call(
                "POST",
                "/api/users",
                Some(&t),
                Some(new_user(&format!("u{i}"), &format!("10{i}0"))),
            )
            .await;
        assert_eq!(status, 201);
    }
    let (_, all) = api.call("GET", "/api/users", Some(&t), None).await;
    let names: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [ADMIN, "carol", "u0", "u1", "u2", "u3", "u4"]);
    assert_eq!(all["count"], 7);
    let (_, first) = api
        .call("GET", "/api/users?top=3&skip=0", Some(&t), None)
        .await;
    assert_eq!(
        (
            first["count"].as_u64(),
            first["items"].as_array().unwrap().len()
        ),
        (Some(7), 3)
    );
    let (_, last) = api
        .call("GET", "/api/users?top=3&skip=6", Some(&t), None)
        .await;
    assert_eq!(last["items"][0]["name"], "u4");
    assert_eq!(last["items"].as_array().unwrap().len(), 1);
    let item = &first["items"][2];
    assert!(
        item.get("created_at").is_some() && item.get("voicemail_pin").is_none(),
        "{item}"
    );
    for (query, field) in [
        ("top=101", "top"),
        ("top=0", "top"),
        ("top=ten", "top"),
        ("skip=-1", "skip"),
        ("top=2.5", "top"),
        ("filter=x", "filter"),
        ("colour=red", "colour"),
    ] {
        let (status, answer) = api
            .call("GET", &format!("/api/users?{query}"), Some(&t), None)
            .await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(error(&answer, "VALIDATE_FAILED")["detail"]["field"], field);
    }
    assert_eq!(pbx.emulator.stats().schema_rejections["GET /users"], 7);
    assert_eq!(
        api.call("GET", "/api/contacts?top=101", Some(&t), None)
            .await
            .0,
        400
    );
}

#[tokio::test]
async fn company_contacts_round_trip_and_are_validated() {
    let pbx = start().await;
    let api = Api::new(&pbx);
    let t = api.token(ACME).await;
    let contact = json!({"name": "Supplier", "company": "Parts Ltd", "business": "+1 555 0100"});
    let (status, created) = api
        .call("POST", "/api/contacts", Some(&t), Some(contact))
        .await;
    assert_eq!(status, 201, "{created}");
    let path = format!("/api/contacts/{}", created["id"].as_str().unwrap());
    let update = json!({"company": "", "title": "Sales"});
    assert_eq!(api.call("POST", &path, Some(&t), Some(update)).await.0, 200);
    let (_, got) = api.call("GET", &path, Some(&t), None).await;
    assert_eq!(
        (
            got["company"].as_str(),
            got["title"].as_str(),
            got["name"].as_str()
        ),
        (Some(""), Some("Sales"), Some("Supplier"))
    );
    let (_, list) = api.call("GET", "/api/contacts?top=1", Some(&t), None).await;
    assert_eq!(
        (list["count"].as_u64(), list["items"][0]["id"].clone()),
        (Some(1), got["id"].clone())
    );
    assert_eq!(pbx.emulator.contacts(ACME), vec![got.clone()]);
    for (body, field) in [
        (json!({"company": "No name"}), "name"),
        (json!({"name": "x".repeat(65)}), "name"),
        (json!({"name": "A", "fax": "1"}), "fax"),
    ] {
        let (status, answer) = api
            .call("POST", "/api/contacts", Some(&t), Some(body))
            .await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(error(&answer, "VALIDATE_FAILED")["detail"]["field"], field);
    }
    assert_eq!(pbx.emulator.stats().schema_rejections["POST /contacts"], 3);
    assert_eq!(
        api.call("POST", &format!("{path}/destroy"), Some(&t), None)
            .await
            .0,
        204
    );
    assert_eq!(api.call("GET", &path, Some(&t), None).await.0, 404);
    assert!(pbx.emulator.contacts(ACME).is_empty());
}
