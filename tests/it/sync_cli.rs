//! `ms365-gateway sync`: the real binary syncs a tenant against the emulator, prints its
//! report, and `--dry-run` changes nothing.

use std::process::Command;

use crate::sso::{SsoWorld, WorldOptions};

/// Runs the binary off the runtime's thread: the emulator it talks to lives on that thread.
async fn sync(world: &SsoWorld, extra: &[&str]) -> serde_json::Value {
    let config = world.setup.path("gateway.toml");
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
        w.store.pbx_users("acme").await.unwrap().is_empty(),
        "dry run wrote users"
    );
    let real = sync(&w, &[]).await;
    assert_eq!(real["status"], "succeeded", "{real}");
    assert_eq!(
        real["counts"]["users"]["created"].as_u64().unwrap(),
        planned
    );
    let users = w.store.pbx_users("acme").await.unwrap();
    assert_eq!(users.len() as u64, planned);
    for u in &users {
        let number: u32 = u.extension_number.parse().unwrap();
        if u.ms365_oid.as_deref() == Some(w.user.0.as_str()) {
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
