//! The keys instances share, sealed in the store with the master key (issue #7): no private
//! key is ever in the database (or under `data_dir`) in clear; a wrong master key, or none
//! on PostgreSQL, refuses start-up with a message saying so; instances starting together on
//! one database end up with one session-signing key (the same JWKS) and one flow key.

use std::process::Command;

use base64::Engine;
use ms365_gateway::keyring::{KeyringError, MASTER_KEY_ENV};
use ms365_gateway::sso::{FLOW_KEY_PREFIX, FlowKeys};
use ms365_gateway::sso::{SESSION_KEY_PREFIX, SessionKeys};
use ms365_gateway::{Config, Gateway, StartError};

use crate::common::{Options, Setup, TestGateway, client, db, keys};
use crate::sso::{SsoWorld, WorldOptions};

fn toml(setup: &Setup) -> String {
    setup.config_toml(&Options {
        upstream_url: "http://127.0.0.1:9",
        ..Default::default()
    })
}

/// The base64 lines of a PEM's body.
fn pem_body_lines(pem: &str) -> Vec<&str> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 32)
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn private_keys_are_only_in_the_store_and_only_sealed() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let b = w.browser();
    let start = "https://pbx.test/ms365/login?domain=acme.test&client=portal";
    assert_eq!(
        b.login(start, &w.user.1).await.status,
        http::StatusCode::FOUND
    );
    let data = w.setup.path("data");
    let stored = db::stored_bytes(&data).await;
    assert!(!stored.is_empty());
    assert!(
        !contains(&stored, b"PRIVATE KEY"),
        "a PEM private key in clear"
    );
    let mut checked = 0;
    for prefix in [SESSION_KEY_PREFIX, "tenant-key:acme:"] {
        let names = w.keyring.names(prefix).await.unwrap();
        assert!(!names.is_empty(), "no `{prefix}` secret");
        for name in names {
            let pem = String::from_utf8(w.keyring.get(&name).await.unwrap().unwrap()).unwrap();
            assert!(pem.contains("PRIVATE KEY"), "{name}");
            for line in pem_body_lines(&pem) {
                assert!(!contains(&stored, line.as_bytes()), "{name} in clear");
                checked += 1;
            }
        }
    }
    let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
    let url = |k: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k);
    for name in w.keyring.names(FLOW_KEY_PREFIX).await.unwrap() {
        let key = w.keyring.get(&name).await.unwrap().unwrap();
        assert_eq!(key.len(), 32);
        assert!(!contains(&stored, &key), "{name} raw");
        assert!(
            !contains(&stored, b64(&key).as_bytes()) && !contains(&stored, url(&key).as_bytes())
        );
        checked += 1;
    }
    assert!(checked > 10, "{checked}");
    for dir in ["keys", "tenants"] {
        assert!(!data.join(dir).exists(), "{dir}/ under data_dir");
    }
}

#[tokio::test]
async fn a_wrong_master_key_refuses_start_up() {
    let setup = Setup::new();
    let text = toml(&setup);
    TestGateway::start(setup.config(&text)).await.stop().await;
    let other = setup.path("other.key");
    std::fs::write(&other, keys::random_key()).unwrap();
    let vars = vec![(
        "MS365GW_STORE__MASTER_KEY_FILE".to_string(),
        other.display().to_string(),
    )];
    let config = Config::from_toml(&setup.path("gateway.toml"), &text, vars).unwrap();
    let err = Gateway::bind(config).await.err().expect("refused");
    assert!(
        matches!(err, StartError::Keyring(KeyringError::WrongKey { .. })),
        "{err}"
    );
    assert!(err.is_config_error());
    let msg = err.to_string();
    assert!(
        msg.contains("does not open this database's secrets"),
        "{msg}"
    );
    assert!(msg.contains(&other.display().to_string()), "{msg}");

    // The binary: the environment variable wins over the file, and is named.
    let path = setup.path("gateway.toml");
    std::fs::write(&path, &text).unwrap();
    for (key, says) in [
        (keys::random_key(), "does not open this database's secrets"),
        ("c2hvcnQ=".to_string(), "is not 32 bytes of base64"),
    ] {
        let path = path.clone();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_ms365-gateway"))
                .args(["--log", "warn", "run", "--config", path.to_str().unwrap()])
                .env(MASTER_KEY_ENV, key)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(says) && stderr.contains(MASTER_KEY_ENV),
            "{stderr}"
        );
    }
    // The right key still opens it.
    TestGateway::start(setup.config(&text)).await.stop().await;
}

#[tokio::test]
async fn postgres_without_a_master_key_refuses_start_up() {
    // Always on PostgreSQL, whatever backend the suite runs on: SQLite has its default key.
    let setup = Setup::new();
    let text: String = toml(&setup)
        .lines()
        .filter(|l| !l.starts_with("master_key_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    let url = db::postgres_url(&setup.path("data"));
    let vars = vec![("MS365GW_STORE__DATABASE_URL".to_string(), url)];
    let config = Config::from_toml(&setup.path("gateway.toml"), &text, vars).unwrap();
    assert!(config.store.master_key_file.is_none());
    let err = Gateway::bind(config).await.err().expect("refused");
    assert!(
        matches!(err, StartError::Keyring(KeyringError::Missing)),
        "{err}"
    );
    assert!(err.is_config_error());
    let msg = err.to_string();
    assert!(
        msg.contains(MASTER_KEY_ENV) && msg.contains("store.master_key_file"),
        "{msg}"
    );
}

#[tokio::test]
async fn instances_starting_together_share_one_session_key_and_one_flow_key() {
    let data = tempfile::tempdir().unwrap();
    let (one, two) = tokio::join!(
        db::open_store(data.path(), 2),
        db::open_store(data.path(), 2)
    );
    let (a, b) = tokio::join!(
        keys::open_keyring(data.path(), &one),
        keys::open_keyring(data.path(), &two)
    );
    let (sa, sb) = tokio::join!(
        SessionKeys::load_or_create(&a),
        SessionKeys::load_or_create(&b)
    );
    let (sa, sb) = (sa.unwrap(), sb.unwrap());
    assert_eq!(sa.jwks(), sb.jwks());
    assert_eq!(sa.kids().len(), 1);
    let (fa, fb) = tokio::join!(FlowKeys::load_or_create(&a), FlowKeys::load_or_create(&b));
    let (fa, fb) = (fa.unwrap(), fb.unwrap());
    let sealed = fa.sealer().seal("__Host-ms365_flow_x", b"flow");
    assert_eq!(
        fb.sealer().open("__Host-ms365_flow_x", &sealed).unwrap(),
        b"flow"
    );
    assert_eq!(a.names(FLOW_KEY_PREFIX).await.unwrap().len(), 1);

    // A rotation on one reaches the other at its next reload.
    let kid = sa.rotate().await.unwrap();
    assert_ne!(sb.current_kid(), kid);
    sb.reload().await.unwrap();
    assert_eq!(sb.current_kid(), kid);
    assert_eq!(sa.jwks(), sb.jwks());
}

#[tokio::test]
async fn gateways_starting_together_publish_the_same_jwks() {
    let setup = Setup::new();
    let text = toml(&setup);
    let (one, two) = tokio::join!(
        Gateway::bind(setup.config(&text)),
        Gateway::bind(setup.config(&text))
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    let addrs = [one.listener_addrs()[0], two.listener_addrs()[0]];
    let shutdown = tokio_util::sync::CancellationToken::new();
    let runs = [
        tokio::spawn(one.run(shutdown.clone())),
        tokio::spawn(two.run(shutdown.clone())),
    ];
    let mut jwks = Vec::new();
    for addr in addrs {
        let mut c = client::h1(addr, "pbx.test", &setup.ca.roots()).await;
        let (parts, body) =
            client::fetch(&mut c, client::get("pbx.test", "/ms365/jwks.json")).await;
        assert_eq!(parts.status, http::StatusCode::OK, "{body}");
        jwks.push(serde_json::from_str::<serde_json::Value>(&body).unwrap());
    }
    assert_eq!(jwks[0], jwks[1]);
    assert_eq!(jwks[0]["keys"].as_array().unwrap().len(), 1);
    shutdown.cancel();
    for run in runs {
        run.await.unwrap();
    }
}
