//! Directory sync benchmark (issue #5): the emulator, as its own process, seeded with a large
//! tenant (default 50,000 users, 20 contacts each, photos for half); this process syncs it
//! as the sync worker does (users, then photos, then personal contacts) into a fresh store,
//! then changes 1 % of the users and 1 % of the contacts through the emulator's control API
//! and syncs again (delta). Per phase: wall time, Graph requests by kind, throttled answers;
//! per run: this process's peak RSS (VmHWM, reset before the delta run), which is the
//! sync's own memory since the emulator lives in another process (its RSS is shown apart).
//!
//! Run: `cargo bench --bench sync`; env: USERS (50000), CONTACTS (20 per user),
//! CHANGED_PERCENT (1), DATABASE_URL (unset: SQLite in a temporary directory; a
//! `postgres://` URL: a fresh schema `bench_<pid>` in that database, dropped at the end).

#[path = "common.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use common::{
    Database, EmulatorProcess, cpu_seconds, env_num, own_peak_rss_mb, own_rss_mb, peak_rss_mb,
    reset_own_peak_rss, start_emulator,
};
use ms365_gateway::TenantId;
use ms365_gateway::config::TenantSeed;
use ms365_gateway::entra::KeyBits;
use ms365_gateway::keyring::Keyring;
use ms365_gateway::settings::{Ms365Settings, SyncType};
use ms365_gateway::store::Store;
use ms365_gateway::sync::{ContactOptions, sync_contacts};
use ms365_gateway::sync::{PhotoOptions, PhotoScope, sync_photos};
use ms365_gateway::sync::{SyncContext, SyncOptions, context_for_tenant, sync_users};
use ms365_gateway::tenant_keys::TenantKeys;
use serde_json::{Value, json};

const DIRECTORY: &str = "3f0a1b2c-4d5e-4f60-8a7b-9c0d1e2f3a4b";

struct World {
    emulator: EmulatorProcess,
    http: reqwest::Client,
    ctx: SyncContext,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn setup(db: &Database, users: usize, contacts: usize) -> World {
    let started = Instant::now();
    let seed = format!(
        "users={users},contacts={contacts},photos=0.5,tenant={DIRECTORY},domain=big.onmicrosoft.com,seed=5"
    );
    let emulator = start_emulator(&seed).await;
    eprintln!(
        "emulator up in {:.1} s (pid {})",
        started.elapsed().as_secs_f64(),
        emulator.child.id()
    );
    let http = reqwest::Client::new();
    let app = json!({
        "display_name": "bench",
        "redirect_uris": [],
        "permissions": ["User.Read.All", "Contacts.Read"],
    });
    let reply: Value = http
        .post(format!(
            "{}/_emulator/apps?tenant={DIRECTORY}",
            emulator.base
        ))
        .json(&app)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = reply["client_id"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let toml = format!(
        "data_dir = \"{}\"\n[[listener]]\nkind = \"pbx\"\nbind = \"127.0.0.1:0\"\npublic_url = \"https://pbx.test\"\n\
         tls_cert = \"self-signed\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n[clouds.GLOBAL]\nlogin = \"{e}\"\ngraph = \"{e}\"\n{store}",
        data.display(),
        e = emulator.base,
        store = db.store_toml(&data),
    );
    // `MS365GW_*` overrides apply as they do to the gateway (`MS365GW_STORE__MAX_CONNECTIONS=4`).
    let overrides = std::env::vars().filter(|(k, _)| k.starts_with("MS365GW_"));
    let config =
        ms365_gateway::Config::from_toml(&dir.path().join("gateway.toml"), &toml, overrides)
            .unwrap();
    let store = Store::open(&config).await.unwrap();
    let seed = TenantSeed {
        pbx_login: None,
        id: TenantId::from_static("big"),
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
    settings.users.sync_photo = true;
    settings.personal_contacts.enabled = true;
    settings.personal_contacts.sync_type = SyncType::All;
    store
        .save_ms365_settings(&TenantId::from_static("big"), &settings)
        .await
        .unwrap();
    let keyring = Keyring::open_configured(store.clone(), &config)
        .await
        .unwrap();
    let cert = TenantKeys::new(store.clone(), keyring.clone())
        .generate(&tenant, KeyBits::Rsa2048, 365)
        .await
        .unwrap();
    http.post(format!(
        "{}/_emulator/apps/{client_id}/certificates?tenant={DIRECTORY}",
        emulator.base
    ))
    .body(cert.certificate_pem.clone())
    .send()
    .await
    .unwrap()
    .error_for_status()
    .unwrap();
    let ctx = context_for_tenant(&config, &store, &keyring, &TenantId::from_static("big"))
        .await
        .unwrap();
    World {
        emulator,
        http,
        ctx,
        store,
        _dir: dir,
    }
}

/// Graph requests by kind sent between two snapshots.
fn kinds_between(before: &BTreeMap<&str, u64>, after: &BTreeMap<&str, u64>) -> String {
    let parts: Vec<String> = after
        .iter()
        .filter_map(|(k, n)| {
            let d = n - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| format!("{k} {d}"))
        })
        .collect();
    if parts.is_empty() {
        "—".into()
    } else {
        parts.join(", ")
    }
}

/// One run of the worker's phases (users → photos → contacts); prints a row per phase.
async fn run(w: &World, label: &str) -> f64 {
    let ctx = &w.ctx;
    let mut total = 0.0;
    let mut changed = Vec::new();
    for phase in ["users", "photos", "contacts"] {
        let before = ctx.graph.stats();
        let emulator = w.emulator.child.id();
        let cpu_before = (cpu_seconds(std::process::id()), cpu_seconds(emulator));
        let started = Instant::now();
        let result = match phase {
            "users" => {
                let r = sync_users(ctx, &SyncOptions::default()).await.unwrap();
                changed = r.changed_oids.clone();
                let c = r.counts.get("users").cloned().unwrap_or_default();
                format!(
                    "{:?} {}: {} created, {} updated, {} disabled, {} skipped, {} failed",
                    r.status,
                    r.mode.as_deref().unwrap_or("?"),
                    c.created,
                    c.updated,
                    c.disabled,
                    c.skipped,
                    c.failed
                )
            }
            "photos" => {
                // As a run does: everyone after a full users round, one slice (and the
                // users the round changed) after a delta round.
                let scope = match label {
                    "delta" => PhotoScope::Slice {
                        index: 0,
                        also: std::mem::take(&mut changed),
                    },
                    _ => PhotoScope::All,
                };
                let options = PhotoOptions {
                    scope,
                    ..PhotoOptions::default()
                };
                let r = sync_photos(ctx, &options).await.unwrap();
                format!(
                    "{} checked, {} downloaded, {} unchanged, {} removed, {} without, {} skipped",
                    r.checked,
                    r.downloaded,
                    r.unchanged,
                    r.removed,
                    r.without_photo,
                    r.skipped.len()
                )
            }
            _ => {
                let r = sync_contacts(ctx, &ContactOptions::default())
                    .await
                    .unwrap();
                format!(
                    "{} mailboxes ({} full listings): {} created, {} updated, {} unchanged, {} removed, {} skipped",
                    r.personal_mailboxes,
                    r.full_listings,
                    r.created,
                    r.updated,
                    r.unchanged,
                    r.removed,
                    r.skipped.len()
                )
            }
        };
        let secs = started.elapsed().as_secs_f64();
        total += secs;
        let after = ctx.graph.stats();
        let own_cpu = cpu_seconds(std::process::id()) - cpu_before.0;
        let emulator_cpu = cpu_seconds(emulator) - cpu_before.1;
        println!(
            "| {label} | {phase} | {secs:.2} | {own_cpu:.2} | {emulator_cpu:.2} | {result} | {} | {} | {} | {} | {:.0} |",
            after.requests - before.requests,
            kinds_between(&before.by_kind, &after.by_kind),
            after.throttled - before.throttled,
            after.retries - before.retries,
            own_peak_rss_mb(),
        );
    }
    total
}

/// Runs `jobs` with `workers` tasks at a time.
async fn for_each<T, F, Fut>(items: Vec<T>, workers: usize, f: F)
where
    T: Send + Sync + 'static,
    F: Fn(Arc<Vec<T>>, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let items = Arc::new(items);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (items, next, f) = (items.clone(), next.clone(), f.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items.len() {
                    return;
                }
                f(items.clone(), i).await;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

/// Changes `percent` % of the users (job title) and `percent` % of all contacts (job
/// title; every `100/percent`-th contact of the tenant in listing order, so they spread
/// over many mailboxes) through the control API. Returns (users, contacts) changed.
async fn change(w: &World, percent: usize, contacts_per_user: usize) -> (usize, usize) {
    let base = format!("{}/_emulator/tenants/{DIRECTORY}", w.emulator.base);
    // Only the ids: 50,000 users read as `serde_json::Value`s took 130 MB of this process,
    // which glibc kept and the delta run's peak RSS then counted as the sync's.
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    let users: Vec<Id> = w
        .http
        .get(format!("{base}/users"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<String> = users.into_iter().map(|u| u.id).collect();
    let step = (100 / percent.max(1)).max(1);
    let changed_users: Vec<(usize, String)> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % step == 0)
        .map(|(i, id)| (i, id.clone()))
        .collect();
    let n_users = changed_users.len();
    let (http, b) = (w.http.clone(), base.clone());
    for_each(changed_users, 8, move |items, i| {
        let (http, b) = (http.clone(), b.clone());
        async move {
            let (n, id) = &items[i];
            http.patch(format!("{b}/users/{id}"))
                .json(&json!({"jobTitle": format!("Changed {n}")}))
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap();
        }
    })
    .await;
    // Contact g of the tenant = contact g % C of user g / C.
    let total = ids.len() * contacts_per_user;
    let mut per_user: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for g in (0..total).step_by(step) {
        per_user
            .entry(g / contacts_per_user)
            .or_default()
            .push(g % contacts_per_user);
    }
    let jobs: Vec<(String, Vec<usize>)> = per_user
        .into_iter()
        .map(|(u, idx)| (ids[u].clone(), idx))
        .collect();
    let n_contacts = Arc::new(AtomicUsize::new(0));
    let (http, counter) = (w.http.clone(), n_contacts.clone());
    for_each(jobs, 8, move |items, i| {
        let (http, b, counter) = (http.clone(), base.clone(), counter.clone());
        async move {
            let (user, idx) = &items[i];
            let list: Vec<Value> = http
                .get(format!("{b}/users/{user}/contacts"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for &k in idx {
                let Some(cid) = list.get(k).and_then(|c| c["id"].as_str()) else {
                    continue;
                };
                http.patch(format!("{b}/users/{user}/contacts/{cid}"))
                    .json(&json!({"jobTitle": format!("Changed {k}")}))
                    .send()
                    .await
                    .unwrap()
                    .error_for_status()
                    .unwrap();
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
    .await;
    (n_users, n_contacts.load(Ordering::Relaxed))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let users: usize = env_num("USERS", 50_000);
        let contacts: usize = env_num("CONTACTS", 20);
        let changed_percent: usize = env_num("CHANGED_PERCENT", 1);
        let db = Database::from_env().await;
        let w = setup(&db, users, contacts).await;
        println!(
            "## Sync: {users} users, {contacts} contacts each ({} in all), photos for half; {}\n",
            users * contacts,
            db.label()
        );
        println!(
            "Peak RSS is this process's (the sync's) VmHWM, reset before the delta run. \
             Emulator RSS after setup: {:.0} MiB; bench RSS after setup: {:.0} MiB.\n",
            peak_rss_mb(w.emulator.child.id()),
            own_rss_mb()
        );
        println!(
            "| run | phase | wall s | sync CPU s | emulator CPU s | result | Graph requests | by kind | throttled | retries | peak RSS MiB (sync) |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        let full = run(&w, "full").await;
        let full_rss = own_peak_rss_mb();
        let started = Instant::now();
        let (cu, cc) = change(&w, changed_percent, contacts).await;
        let change_secs = started.elapsed().as_secs_f64();
        reset_own_peak_rss();
        // What glibc kept from the full run and the change step: where the delta peak starts.
        let delta_start_rss = own_rss_mb();
        let delta = run(&w, "delta").await;
        let delta_rss = own_peak_rss_mb();
        println!(
            "\nfull sync {full:.2} s (peak RSS {full_rss:.0} MiB); changed {cu} users and {cc} contacts \
             in the emulator ({change_secs:.1} s, not timed); delta sync {delta:.2} s (RSS {delta_start_rss:.0} MiB \
             at its start, peak {delta_rss:.0} MiB); emulator peak RSS {:.0} MiB",
            peak_rss_mb(w.emulator.child.id())
        );
        let stats = w.ctx.graph.stats();
        println!(
            "Graph in all: {} requests, {} throttled, {} retries, by kind {:?}",
            stats.requests, stats.throttled, stats.retries, stats.by_kind
        );
        w.store.close().await;
        drop(w);
        db.drop().await;
    });
}
