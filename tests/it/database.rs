//! The database at start-up: an unreachable PostgreSQL stops the gateway (in-process and the
//! real binary) with a message naming `store.database_url` and the host, never the password;
//! a schema newer than the binary is refused on whichever backend the suite runs on.

use std::process::Command;
use std::time::{Duration, Instant};

use ms365_gateway::{Config, Gateway};

use crate::common::{Options, Setup, TestGateway, closed_port, db};

const OVERRIDE: &str = "MS365GW_STORE__DATABASE_URL";
const TIMEOUT: &str = "MS365GW_STORE__CONNECT_TIMEOUT";

fn good_toml(setup: &Setup) -> String {
    setup.config_toml(&Options {
        upstream_url: "http://127.0.0.1:9",
        ..Default::default()
    })
}

#[tokio::test]
async fn unreachable_postgres_stops_start_up_naming_the_key_and_the_host() {
    let setup = Setup::new();
    let port = closed_port().port();
    let url = format!("postgres://gateway:hunter2@127.0.0.1:{port}/test");
    let vars = vec![
        (OVERRIDE.to_string(), url),
        (TIMEOUT.to_string(), "1s".to_string()),
    ];
    let toml = good_toml(&setup);
    let config = Config::from_toml(&setup.path("gateway.toml"), &toml, vars.clone()).unwrap();
    let started = Instant::now();
    let err = Gateway::bind(config)
        .await
        .err()
        .expect("no database, no gateway")
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    let host = format!("127.0.0.1:{port}");
    for needle in ["store.database_url", host.as_str(), "refused"] {
        assert!(err.contains(needle), "`{needle}` missing from: {err}");
    }
    assert!(!err.contains("hunter2"), "password shown: {err}");

    // The real binary, pointed at the same address through the environment.
    let path = setup.path("gateway.toml");
    std::fs::write(&path, &toml).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ms365-gateway"))
            .args(["--log", "warn", "run", "--config", path.to_str().unwrap()])
            .envs(vars)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needle in ["gateway.toml", "store.database_url", host.as_str()] {
        assert!(stderr.contains(needle), "`{needle}` missing from: {stderr}");
    }
    assert!(!stderr.contains("hunter2"), "password shown: {stderr}");
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused() {
    let setup = Setup::new();
    let toml = good_toml(&setup);
    let gw = TestGateway::start(setup.config(&toml)).await;
    gw.stop().await;
    db::execute(
        &setup.path("data"),
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (100000, 'from the future', 0)",
    )
    .await;
    let err = Gateway::bind(setup.config(&toml))
        .await
        .err()
        .expect("a newer schema is refused")
        .to_string();
    assert!(
        err.contains("schema is at version 100000, newer than this gateway knows"),
        "{err}"
    );
}

/// The PostgreSQL every machine runs has TLS on (Debian's default, a self-signed
/// certificate): `sslmode=require` gets an encrypted link, which takes the TLS support the
/// gateway is built with, and `verify-full` without a CA that signed the server's
/// certificate is refused at start-up, naming the key.
#[tokio::test]
async fn the_database_link_is_encrypted_when_asked_and_verified_when_required() {
    let setup = Setup::new();
    let url = db::postgres_url(&setup.path("tls"));
    let store = ms365_gateway::store::Store::open_url(&format!("{url}&sslmode=require"), 1)
        .await
        .expect("an encrypted connection");
    assert_eq!(
        store.encrypted_link().await.unwrap(),
        Some(true),
        "the link is TLS"
    );
    store.close().await;

    let strict = format!("{url}&sslmode=verify-full");
    let vars = vec![
        (OVERRIDE.to_string(), strict),
        (TIMEOUT.to_string(), "2s".to_string()),
        (
            "MS365GW_STORE__MASTER_KEY_FILE".to_string(),
            crate::common::keys::ensure_master_key(&setup.path("tls"))
                .display()
                .to_string(),
        ),
    ];
    let toml = good_toml(&setup);
    let config = Config::from_toml(&setup.path("gateway.toml"), &toml, vars).unwrap();
    let described = ms365_gateway::describe_config(&config).unwrap();
    assert!(
        described.contains(
            "database link: encrypted and verified (sslmode=verify-full, system CA roots)"
        ),
        "{described}"
    );
    let err = Gateway::bind(config)
        .await
        .err()
        .expect("an unverifiable server certificate, no gateway")
        .to_string();
    assert!(err.contains("store.database_url"), "{err}");
}
