//! The stand-in, part three: injected faults over a real socket, PortSIP-looking ids that
//! repeat with the seed, hand edits that obey PortSIP's rules, and the control API driven
//! over HTTP as a test would drive a stand-in running as its own process.

use std::time::Duration;

use serde_json::{Value, json};

use super::tests::{ACME, ADMIN, Api, BETA, admin_password, error, new_user, start, tenant};
use super::*;

#[tokio::test]
async fn faults_fail_next_throttle_and_hold() {
    let pbx = start().await;
    let api = Api::new(&pbx);
    let t = api.token(ACME).await;
    pbx.emulator.set_faults(PbxFaults {
        class: Some("users".into()),
        fail_next: 2,
        ..PbxFaults::default()
    });
    for _ in 0..2 {
        let (status, answer) = api.call("GET", "/api/users", Some(&t), None).await;
        assert_eq!(status, 503);
        error(&answer, "INTERNAL");
    }
    assert_eq!(api.call("GET", "/api/users", Some(&t), None).await.0, 200);
    pbx.emulator.set_faults(PbxFaults {
        class: Some("contacts".into()),
        fail_next: 1,
        fail_status: 500,
        ..PbxFaults::default()
    });
    assert_eq!(
        api.call("GET", "/api/users", Some(&t), None).await.0,
        200,
        "another class"
    );
    assert_eq!(
        api.call("GET", "/api/contacts", Some(&t), None).await.0,
        500
    );
    pbx.emulator.set_faults(PbxFaults {
        throttle_rate: 1.0,
        retry_after_secs: 7,
        ..PbxFaults::default()
    });
    let response = api
        .request("GET", "/api/users", Some(&t))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    error(&response.json().await.unwrap(), "TOO_MANY_REQUESTS");
    assert_eq!(
        api.login(ADMIN, &admin_password(ACME), ACME).await.0,
        429,
        "no class: every class"
    );
    pbx.emulator.set_faults(PbxFaults::default());
    let stats = pbx.emulator.stats();
    assert_eq!(
        (stats.requests["GET /users"], stats.faults_injected),
        (5, 5)
    );
    let slow = PbxFaults {
        class: Some("users".into()),
        timeout_rate: 1.0,
        timeout_delay_ms: 400,
        ..PbxFaults::default()
    };
    pbx.emulator.set_faults(slow);
    let outcome = api
        .request("POST", "/api/users", Some(&t))
        .json(&new_user("held", "1500"))
        .timeout(Duration::from_millis(50))
        .send()
        .await;
    assert!(
        outcome.is_err_and(|e| e.is_timeout()),
        "the client times out"
    );
    // The worst case of a timeout: the PBX still carries the request out.
    let created = async {
        while !pbx.emulator.users(ACME).iter().any(|u| u["name"] == "held") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), created)
        .await
        .expect("the held request is carried out");
}

#[tokio::test]
async fn ids_look_like_portsips_and_repeat_with_the_seed() {
    use base64::Engine as _;
    let ids = |seed| {
        let emu = PbxEmulator::new(PbxEmulatorConfig {
            seed,
            tenants: vec![tenant(ACME)],
        });
        (0..3)
            .map(|i| {
                emu.add_contact(ACME, json!({"name": format!("c{i}")}))
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    let first = ids(4);
    assert_eq!(first, ids(4));
    assert_ne!(first, ids(5));
    for id in &first {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(id)
            .unwrap();
        let text = String::from_utf8(decoded).unwrap();
        assert!(
            text.len() >= 18 && text.bytes().all(|b| b.is_ascii_digit()),
            "{id} → {text}"
        );
    }
    let unique: std::collections::BTreeSet<&String> = first.iter().collect();
    assert_eq!(unique.len(), first.len());
}

#[test]
fn hand_edits_obey_portsips_rules() {
    let emu = PbxEmulator::new(PbxEmulatorConfig {
        seed: 1,
        tenants: vec![tenant(ACME)],
    });
    let local = |name: &str, ext: &str| LocalUserSpec {
        name: name.into(),
        extension_number: ext.into(),
        email: Some(format!("{name}@acme.test")),
        display_name: String::new(),
        password: "pw".into(),
    };
    let id = emu
        .add_local_user(ACME, local("reception", "1000"))
        .unwrap();
    for (name, ext) in [
        ("root", "1001"),
        ("desk", "1000"),
        ("Reception", "1002"),
        ("desk", "10x"),
        ("desk", "101"),
    ] {
        assert!(
            emu.add_local_user(ACME, local(name, ext)).is_err(),
            "{name} {ext}"
        );
    }
    assert!(
        emu.add_local_user("nowhere.test", local("desk", "1003"))
            .unwrap_err()
            .contains("nowhere.test")
    );
    let shown = emu.users(ACME);
    let reception = shown.iter().find(|u| u["id"] == id.as_str()).unwrap();
    assert_eq!(
        (
            reception["display_name"].as_str(),
            reception["created_by"].clone()
        ),
        (Some("reception"), Value::Null)
    );
    assert!(
        emu.edit_user(ACME, &id, json!({"extension_number": "200"}))
            .is_err(),
        "carol's number"
    );
    assert!(
        emu.edit_user(ACME, &id, json!({"voicemail_pin": "123456"}))
            .is_err()
    );
    assert!(emu.edit_user(ACME, &id, json!({"id": "x"})).is_err());
    assert!(emu.edit_user(ACME, "nope", json!({})).is_err());
    emu.edit_user(
        ACME,
        &id,
        json!({"email": null, "ms365_binding": "oid-1", "department": "Front"}),
    )
    .unwrap();
    let reception = emu
        .users(ACME)
        .into_iter()
        .find(|u| u["id"] == id.as_str())
        .unwrap();
    assert_eq!(
        (
            reception.get("email"),
            reception["ms365_binding"].as_str(),
            reception["department"].as_str()
        ),
        (None, Some("oid-1"), Some("Front"))
    );
    assert_eq!(
        emu.users(ACME).len(),
        2,
        "carol and reception; the administrator is the PBX's own"
    );
    assert!(emu.delete_user(ACME, &id));
    assert!(!emu.delete_user(ACME, &id));
}

#[test]
#[should_panic(expected = "local user admin")]
fn a_fixture_the_pbx_would_refuse_is_a_loud_mistake() {
    let mut spec = tenant(ACME);
    spec.local_users[0].name = "admin".into();
    PbxEmulator::new(PbxEmulatorConfig {
        seed: 1,
        tenants: vec![spec],
    });
}

#[tokio::test]
async fn the_control_api_over_http() {
    let pbx = start().await;
    let api = Api::new(&pbx);
    let local = json!({"name": "lobby", "extension_number": "1900", "password": "Lobby-1", "display_name": "Lobby Phone"});
    let (status, created) = api
        .call(
            "POST",
            &format!("/_pbx/tenants/{ACME}/users"),
            None,
            Some(local),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let (status, users) = api
        .call("GET", &format!("/_pbx/tenants/{ACME}/users"), None, None)
        .await;
    assert_eq!(status, 200);
    let lobby = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == id)
        .unwrap()
        .clone();
    assert_eq!(
        (
            lobby["display_name"].as_str(),
            lobby["created_by"].clone(),
            lobby.get("password")
        ),
        (Some("Lobby Phone"), Value::Null, None)
    );
    let edit = json!({"password": "Lobby-2", "display_name": "Drifted"});
    assert_eq!(
        api.call(
            "POST",
            &format!("/_pbx/tenants/{ACME}/users/{id}"),
            None,
            Some(edit)
        )
        .await
        .0,
        204
    );
    assert_eq!(
        api.login("lobby", "Lobby-1", ACME).await.0,
        401,
        "the old password"
    );
    let (status, session) = api.login("lobby", "Lobby-2", ACME).await;
    assert_eq!(status, 200);
    let owner = json!({"access_token": session["access_token"]});
    let (_, owner) = api
        .call("POST", "/_pbx/token_owner", None, Some(owner))
        .await;
    assert_eq!(owner, json!({"domain": ACME, "username": "lobby"}));
    let destroy = format!("/_pbx/tenants/{ACME}/users/{id}/destroy");
    assert_eq!(api.call("POST", &destroy, None, None).await.0, 204);
    assert_eq!(api.call("POST", &destroy, None, None).await.0, 404);
    let contact = json!({"name": "Hand Made"});
    assert_eq!(
        api.call(
            "POST",
            &format!("/_pbx/tenants/{BETA}/contacts"),
            None,
            Some(contact)
        )
        .await
        .0,
        201
    );
    let (_, contacts) = api
        .call("GET", &format!("/_pbx/tenants/{BETA}/contacts"), None, None)
        .await;
    assert_eq!(contacts[0]["name"], "Hand Made");
    assert_eq!(
        api.call("GET", "/_pbx/tenants/nowhere.test/users", None, None)
            .await
            .0,
        404
    );
    let (status, bad) = api
        .call(
            "POST",
            "/_pbx/faults",
            None,
            Some(json!({"class": "photos"})),
        )
        .await;
    assert_eq!(status, 400);
    error(&bad, "VALIDATE_FAILED");
    assert_eq!(
        api.call(
            "POST",
            "/_pbx/faults",
            None,
            Some(json!({"error_rte": 1.0}))
        )
        .await
        .0,
        400,
        "a typo is refused"
    );
    let faults =
        json!({"class": "login", "fail_next": 1, "fail_status": 429, "retry_after_secs": 2});
    assert_eq!(
        api.call("POST", "/_pbx/faults", None, Some(faults)).await.0,
        204
    );
    let response = api
        .request("POST", "/api/login", None)
        .json(&json!({"username": "x", "password": "y", "domain": ACME}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            response.status().as_u16(),
            response.headers()["retry-after"].to_str().unwrap()
        ),
        (429, "2")
    );
    let (_, stats) = api.call("GET", "/_pbx/stats", None, None).await;
    let stats: PbxStats = serde_json::from_value(stats).unwrap();
    assert_eq!(
        (
            stats.requests["POST /login"],
            stats.logins,
            stats.faults_injected
        ),
        (3, 1, 1)
    );
    assert_eq!(
        api.call("POST", "/_pbx/reset_stats", None, None).await.0,
        204
    );
    assert_eq!(pbx.emulator.stats(), PbxStats::default());
    let (status, missing) = api.call("GET", "/api/nothing", None, None).await;
    assert_eq!(status, 404);
    error(&missing, "NOT_FOUND");
}
