//! PBX connector benchmark (issue #13): a store holding a synced tenant (default 50,000
//! Microsoft 365 users, written straight into the store so that only the PBX side is
//! measured), the PortSIP stand-in in its own process (`ms365-gateway pbx-emulator`), and
//! this process running the connector's two phases as a sync run does: read the PBX, then
//! push. Three runs: the first (every user created and bound), one with no change, and one
//! after 1 % of the users changed. Per run: wall time, PBX requests (and per user), this
//! process's CPU time and peak RSS (VmHWM, reset before each run), the stand-in's CPU time.
//!
//! Run: `cargo bench --bench pbx`; env: USERS (50000), CONCURRENCY (8), QUIET_RUNS (1: runs
//! with no change after the first), DATABASE_URL (unset:
//! SQLite in a temporary directory; a `postgres://` URL: a fresh schema in that database).

#[path = "common.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Database, cpu_seconds, env_num, own_peak_rss_mb, reset_own_peak_rss};
use ms365_gateway::config::{PbxLogin, PbxSecret, TenantSeed};
use ms365_gateway::pbx::PbxClient;
use ms365_gateway::store::{
    DirectoryUser, DirectoryWrite, PbxProfile, PbxUser, PbxUserSource, Store,
};
use ms365_gateway::sync::read_pbx;
use ms365_gateway::sync::{PbxTarget, TenantRecord, push_to_pbx};
use ms365_gateway::{ObjectId, TenantId};

const TENANT: &str = "bench";
const DOMAIN: &str = "bench.pbx.test";
const ADMIN: &str = "bench-admin";
const PASSWORD: &str = "Bench-Admin-Pass-1";

fn tenant() -> TenantId {
    TenantId::from_static(TENANT)
}

/// The stand-in's process; killed when dropped.
struct StandIn {
    child: Child,
    api_url: String,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_stand_in() -> StandIn {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ms365-gateway"))
        .args([
            "--log",
            "warn",
            "pbx-emulator",
            "--bind",
            "127.0.0.1:0",
            "--tenant",
        ])
        .arg(format!("{DOMAIN}:{ADMIN}:{PASSWORD}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    StandIn {
        child,
        api_url: line.trim().to_string(),
    }
}

/// `n` synced users written into the store in transactions of 1,000.
async fn seed_store(store: &Store, n: usize) {
    let seed = TenantSeed {
        id: tenant(),
        domain: DOMAIN.into(),
        name: "Bench".into(),
        pbx_login: None,
    };
    store.upsert_tenant(&seed).await.unwrap();
    let writes: Vec<DirectoryWrite> = (0..n).map(synced_user).collect();
    for chunk in writes.chunks(1000) {
        store
            .apply_directory_writes(&tenant(), chunk)
            .await
            .unwrap();
    }
}

fn synced_user(i: usize) -> DirectoryWrite {
    let (oid, name, ext) = (
        format!("00000000-0000-4000-8000-{i:012}"),
        format!("user{i}"),
        format!("{}", 10_000 + i),
    );
    let profile = PbxProfile {
        display_name: format!("User Number {i}"),
        email: Some(format!("{name}@bench.example")),
        department: Some(["Sales", "Support", "Engineering"][i % 3].into()),
        work_phone: Some(format!("+1 555 {:04}", i % 10_000)),
        ..PbxProfile::default()
    };
    let id = uuid::Uuid::new_v4().to_string();
    let user = PbxUser {
        id: id.clone(),
        tenant_id: tenant(),
        extension_number: ext.clone(),
        username: name.clone(),
        profile: profile.clone(),
        enabled: true,
        source: PbxUserSource::Ms365,
        ms365_oid: Some(ObjectId::new(oid.clone())),
        sync_disabled: None,
        sync_disabled_at: None,
        created_at: 0,
        updated_at: 0,
    };
    let directory = DirectoryUser {
        tenant_id: tenant(),
        oid: ObjectId::new(oid),
        upn: format!("{name}@bench.example"),
        pbx_user_id: id,
        extension: Some(ext),
        display_name: profile.display_name,
        email: profile.email,
        role: ms365_gateway::store::Role::User,
        enabled: true,
        source: "sync".into(),
    };
    DirectoryWrite::Create {
        user: Box::new(user),
        directory: Box::new(directory),
    }
}

/// Changes the display name of every hundredth user, as a users phase would.
async fn change_one_percent(store: &Store, n: usize) -> usize {
    let mut writes = Vec::new();
    let synced = (store.pbx_users(&tenant()).await.unwrap().into_iter())
        .filter(|u| u.source == PbxUserSource::Ms365);
    for user in synced.take(n).step_by(100) {
        let profile = PbxProfile {
            display_name: format!("{} (renamed)", user.profile.display_name),
            ..user.profile
        };
        writes.push(DirectoryWrite::Update {
            oid: user.ms365_oid.unwrap(),
            upn: format!("{}@bench.example", user.username),
            profile: Box::new(profile),
            disabled: None,
        });
    }
    store
        .apply_directory_writes(&tenant(), &writes)
        .await
        .unwrap();
    writes.len()
}

async fn run(label: &str, record: &TenantRecord, target: &PbxTarget, stand_in: u32, users: usize) {
    reset_own_peak_rss();
    let (cpu_before, pbx_cpu_before) = (cpu_seconds(std::process::id()), cpu_seconds(stand_in));
    let requests_before = target.client.stats().requests;
    let started = Instant::now();
    let (listing, _) = read_pbx(record, target, false).await.unwrap();
    let report = push_to_pbx(record, target, listing.as_ref(), None, false)
        .await
        .unwrap();
    let wall = started.elapsed().as_secs_f64();
    let requests = target.client.stats().requests - requests_before;
    assert!(
        report.errors.is_empty(),
        "{:?}",
        &report.errors[..report.errors.len().min(5)]
    );
    println!(
        "| {label} | {wall:.1} s | {requests} | {:.2} | {} created, {} updated | {:.1} s | {:.1} s | {:.0} MiB |",
        requests as f64 / users as f64,
        report.users.created,
        report.users.updated,
        cpu_seconds(std::process::id()) - cpu_before,
        cpu_seconds(stand_in) - pbx_cpu_before,
        own_peak_rss_mb(),
    );
}

fn main() {
    let users: usize = env_num("USERS", 50_000);
    let concurrency: usize = env_num("CONCURRENCY", 8);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let db = Database::from_env().await;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        db.store_toml(&data);
        std::fs::create_dir_all(&data).unwrap();
        let store = db.open_store(&data, 8).await;
        let keyring = db.open_keyring(&data, &store).await;
        let seeded = Instant::now();
        seed_store(&store, users).await;
        eprintln!("{users} users in the store in {:.1} s", seeded.elapsed().as_secs_f64());
        let stand_in = start_stand_in();
        let login = PbxLogin {
            username: ADMIN.into(),
            password: PbxSecret::new(PASSWORD.into()),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let api = stand_in.api_url.parse().unwrap();
        let client = PbxClient::with_http(http, api, login, DOMAIN.into(), concurrency);
        let target = PbxTarget { client, keyring };
        let record = TenantRecord {
            store: store.clone(),
            tenant_id: tenant(),
        };
        let pid = stand_in.child.id();
        println!("{} users, {} requests in flight, {}", users, concurrency, db.label());
        println!("| run | wall | PBX requests | per user | users | gateway CPU | stand-in CPU | gateway peak RSS |");
        println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
        run("first run", &record, &target, pid, users).await;
        for _ in 0..env_num("QUIET_RUNS", 1) {
            run("no change", &record, &target, pid, users).await;
        }
        let changed = change_one_percent(&store, users).await;
        run(&format!("{changed} renamed (1 %)"), &record, &target, pid, users).await;
        store.close().await;
        drop(stand_in);
        db.drop().await;
    });
}
