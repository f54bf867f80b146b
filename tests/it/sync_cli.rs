//! `ms365-gateway sync`: the real binary syncs a tenant against the emulator, prints its
//! report, and `--dry-run` changes nothing (on the PBX either).

use std::process::Command;

use crate::common::acme;
use crate::sso::{SsoWorld, WorldOptions};
use ms365_gateway::ObjectId;

/// Runs the binary off the runtime's thread: the emulator it talks to lives on that thread.
async fn sync(world: &SsoWorld, extra: &[&str]) -> serde_json::Value {
    sync_with(world, "gateway.toml", extra).await
}

async fn sync_with(world: &SsoWorld, file: &str, extra: &[&str]) -> serde_json::Value {
    let config = world.setup.path(file);
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ms365-gateway"))
            .args([
                "--log",
                "warn",
                "sync",
                "--config",
                config.to_str().unwrap(),
                "--tenant",
                "acme",
                "--json",
            ])
            .args(extra)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test]
async fn sync_command_runs_once_and_dry_run_changes_nothing() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    w.settings(|s| {
        s.users.enabled = true;
        s.users.starting_extension_number = "2000".into();
    })
    .await;
    let dry = sync(&w, &["--dry-run"]).await;
    assert_eq!(dry["dry_run"], true);
    let planned = dry["counts"]["users"]["created"].as_u64().unwrap();
    assert!(planned > 10, "{dry}");
    assert!(
        w.store.pbx_users(&acme()).await.unwrap().is_empty(),
        "dry run wrote users"
    );
    let real = sync(&w, &[]).await;
    assert_eq!(real["status"], "succeeded", "{real}");
    assert_eq!(
        real["counts"]["users"]["created"].as_u64().unwrap(),
        planned
    );
    let users = w.store.pbx_users(&acme()).await.unwrap();
    assert_eq!(users.len() as u64, planned);
    for u in &users {
        let number: u32 = u.extension_number.parse().unwrap();
        if u.ms365_oid.as_ref().map(ObjectId::as_str) == Some(w.user.0.as_str()) {
            assert_eq!(number, 100, "a user keeps the number it already had");
        } else {
            assert!(
                number >= 2000,
                "{} below the starting number",
                u.extension_number
            );
        }
    }
    let again = sync(&w, &[]).await;
    assert_eq!(
        again["counts"]["users"]["created"], 0,
        "a second run has nothing new: {again}"
    );
}

/// With the PBX connector on, the command runs every phase: the PortSIP stand-in gets the
/// users; a dry run sends the PBX nothing and says what it would send.
#[tokio::test]
async fn sync_command_writes_to_the_pbx_and_its_dry_run_sends_nothing() {
    use ms365_stand_ins::portsip_emulator::{PbxEmulator, PbxEmulatorConfig, parse_tenant};
    let w = SsoWorld::new(WorldOptions::default()).await;
    w.settings(|s| s.users.enabled = true).await;
    let tenants = [
        "acme.test:acme-admin:Acme-PBX-pass",
        "beta.test:beta-admin:Beta-PBX-pass",
    ];
    let config = PbxEmulatorConfig {
        seed: 1,
        tenants: tenants.iter().map(|t| parse_tenant(t).unwrap()).collect(),
    };
    let pbx = PbxEmulator::new(config).start().await.unwrap();
    let toml = std::fs::read_to_string(w.setup.path("gateway.toml")).unwrap();
    let mut with_pbx = String::new();
    for (id, line) in [
        ("acme", "name = \"Acme\"\n"),
        ("beta", "domain = \"beta.test\"\n"),
    ] {
        let password = w.setup.path(&format!("{id}.pbx-password"));
        let secret = if id == "acme" {
            "Acme-PBX-pass"
        } else {
            "Beta-PBX-pass"
        };
        std::fs::write(&password, format!("{secret}\n")).unwrap();
        let creds = format!(
            "{line}pbx_username = \"{id}-admin\"\npbx_password_file = \"{}\"\n",
            password.display()
        );
        with_pbx = if with_pbx.is_empty() {
            toml.replacen(line, &creds, 1)
        } else {
            with_pbx.replacen(line, &creds, 1)
        };
    }
    with_pbx.push_str(&format!(
        "\n[pbx]\nkind = \"portsip\"\napi_url = \"{}\"\n",
        pbx.api_url
    ));
    std::fs::write(w.setup.path("gateway-pbx.toml"), with_pbx).unwrap();

    let dry = sync_with(&w, "gateway-pbx.toml", &["--dry-run"]).await;
    let planned = dry["counts"]["users"]["created"].as_u64().unwrap();
    let preview: Vec<&str> = dry["preview"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    let line = format!(
        "PBX: POST /users and its ms365_binding for each of the {planned} users created above"
    );
    assert!(preview.contains(&line.as_str()), "{preview:?}");
    assert_eq!(
        pbx.emulator.stats().total_requests,
        0,
        "a dry run sends the PBX nothing"
    );

    let real = sync_with(&w, "gateway-pbx.toml", &[]).await;
    assert_eq!(real["status"], "succeeded", "{real}");
    assert_eq!(
        real["counts"]["pbx"]["created"].as_u64(),
        Some(planned),
        "{real}"
    );
    assert_eq!(pbx.emulator.users("acme.test").len() as u64, planned);
    assert!(
        pbx.emulator.users("beta.test").is_empty(),
        "tenants stay apart"
    );
    assert!(pbx.emulator.stats().schema_rejections.is_empty());
}
