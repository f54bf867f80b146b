//! Directory sync benchmark: the emulator seeded with a large tenant (default 50,000 users,
//! photos for half), a full users sync and then a delta sync after 1 % of the users changed,
//! on SQLite in a temporary directory. Reports wall time, Graph requests by kind, throttled
//! responses and the process's peak RSS (emulator included: it runs in this process).
//!
//! Run: `cargo bench --bench sync` (env: USERS, CONTACTS, CHANGED_PERCENT).

use std::time::Instant;

use ms365_gateway::config::TenantSeed;
use ms365_gateway::emulator::{AppRegistration, Emulator, EmulatorConfig, TenantSpec, UserPatch};
use ms365_gateway::entra::credential::KeyBits;
use ms365_gateway::entra::keys::TenantKeys;
use ms365_gateway::keyring::Keyring;
use ms365_gateway::settings::Ms365Settings;
use ms365_gateway::store::Store;
use ms365_gateway::sync::{RunReport, SyncContext, SyncOptions, context, sync_users};

const DIRECTORY: &str = "3f0a1b2c-4d5e-4f60-8a7b-9c0d1e2f3a4b";

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    kb / 1024.0
}

async fn setup(
    users: usize,
    contacts: usize,
) -> (
    ms365_gateway::emulator::RunningEmulator,
    SyncContext,
    tempfile::TempDir,
) {
    let mut spec = TenantSpec::new(DIRECTORY, "big.onmicrosoft.com");
    spec.users = users;
    spec.contacts_per_user = contacts;
    spec.photo_share = 0.5;
    let emulator = Emulator::start(EmulatorConfig {
        seed: 5,
        tenants: vec![spec],
    })
    .await
    .unwrap();
    let app = AppRegistration {
        display_name: "bench".into(),
        redirect_uris: vec![],
        permissions: vec!["User.Read.All".into(), "Contacts.Read".into()],
        client_id: None,
    };
    let client_id = emulator.emulator.register_app(DIRECTORY, app);
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "data_dir = \"{}\"\n[[listener]]\nkind = \"pbx\"\nbind = \"127.0.0.1:0\"\npublic_url = \"https://pbx.test\"\n\
         tls_cert = \"self-signed\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n[clouds.GLOBAL]\nlogin = \"{e}\"\ngraph = \"{e}\"\n",
        dir.path().join("data").display(),
        e = emulator.base_url
    );
    let config =
        ms365_gateway::Config::from_toml(&dir.path().join("gateway.toml"), &toml, Vec::new())
            .unwrap();
    let store = Store::open_sqlite(&config.data_dir, 4).await.unwrap();
    let seed = TenantSeed {
        id: "big".into(),
        domain: "big.test".into(),
        name: "Big".into(),
    };
    let tenant = store.upsert_tenant(&seed).await.unwrap();
    let mut settings = Ms365Settings {
        directory_id: DIRECTORY.into(),
        application_id: client_id.clone(),
        ..Default::default()
    };
    settings.users.enabled = true;
    settings.users.starting_extension_number = "100000".into();
    store.save_ms365_settings("big", &settings).await.unwrap();
    let keyring = Keyring::open_configured(store.clone(), &config)
        .await
        .unwrap();
    let cert = TenantKeys::new(store.clone(), keyring.clone())
        .generate(&tenant, KeyBits::Rsa2048, 365)
        .await
        .unwrap();
    emulator
        .emulator
        .upload_certificate(DIRECTORY, &client_id, &cert.certificate_pem)
        .unwrap();
    let ctx = context::for_tenant(&config, &store, &keyring, "big")
        .await
        .unwrap();
    (emulator, ctx, dir)
}

fn report(label: &str, r: &RunReport, secs: f64, ctx: &SyncContext) {
    let stats = ctx.graph.stats();
    println!(
        "| {label} | {secs:.2} | {:?} | {} | {} | {:?} | {:.0} |",
        r.counts.get("users"),
        r.graph_requests,
        r.throttled,
        stats.by_kind,
        peak_rss_mb()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (users, contacts) = (env_num("USERS", 50_000), env_num("CONTACTS", 20));
        let changed_percent = env_num("CHANGED_PERCENT", 1);
        let (emulator, ctx, _dir) = setup(users, contacts).await;
        println!("## Sync: {users} users ({contacts} contacts each in the emulator), SQLite\n");
        println!("| run | wall s | users counts | graph requests | throttled | requests by kind (cumulative) | peak RSS MB (process) |");
        println!("|---|---|---|---|---|---|---|");
        let started = Instant::now();
        let full = sync_users(&ctx, &SyncOptions::default()).await.unwrap();
        report("full", &full, started.elapsed().as_secs_f64(), &ctx);
        let all = emulator.emulator.users(DIRECTORY);
        let step = (100 / changed_percent.max(1)).max(1);
        for (i, u) in all.iter().enumerate().filter(|(i, _)| i % step == 0) {
            let patch = UserPatch { job_title: Some(Some(format!("Changed {i}"))), ..Default::default() };
            emulator.emulator.update_user(DIRECTORY, &u.id, patch);
        }
        let started = Instant::now();
        let delta = sync_users(&ctx, &SyncOptions::default()).await.unwrap();
        report("delta", &delta, started.elapsed().as_secs_f64(), &ctx);
    });
}
