//! Real-time updates benchmark (issue #15): how long a change in Microsoft 365 takes to
//! reach the gateway's store and the PBX through Graph change notifications, and how many
//! Graph requests each change costs, at the size of a large tenant.
//!
//! The emulator runs as its own process (default 50,000 users, 20 contacts each, photos
//! for half, one shared mailbox) and delivers notifications over HTTPS to this process's
//! gateway (`Gateway::bind` + `run`, as the binary does; a certificate from a throwaway CA
//! the emulator is told to trust), which syncs into the PortSIP stand-in (in this process).
//! After the first full run (not timed here; `cargo bench --bench sync` measures it) and
//! once the subscriptions exist, `CHANGES` changes are made one after another through the
//! emulator's control API, each waited for: four renames of a user for every new contact
//! in the shared mailbox. Per change: milliseconds until the store shows it, and until the
//! PBX does. Then real-time updates are turned off, 1 % of the users are renamed and one
//! scheduled run (users delta, photos, every mailbox's contacts delta, PBX) is timed for
//! comparison.
//!
//! Run: `cargo bench --bench realtime`; env: USERS (50000), CONTACTS (20), CHANGES (100),
//! DEBOUNCE (the tenant's `realtime.debounce_seconds`, default 2), DATABASE_URL (as in the
//! other benches).

#[path = "common.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Database, EmulatorProcess, env_num, start_emulator};
use ms365_gateway::config::TenantSeed;
use ms365_gateway::demo::{DemoUpstream, PBX_ADMIN};
use ms365_gateway::entra::KeyBits;
use ms365_gateway::settings::{Ms365Settings, SyncMode};
use ms365_gateway::store::{RunTrigger, Store};
use ms365_gateway::tenant_keys::TenantKeys;
use ms365_gateway::{Config, Gateway, ObjectId, TenantId};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const DIRECTORY: &str = "3f0a1b2c-4d5e-4f60-8a7b-9c0d1e2f3a4b";
const DOMAIN: &str = "big.pbx.test";
const PBX_PASSWORD: &str = "Bench-Admin-Pass-1";

/// The tenant the bench fills.
fn big() -> TenantId {
    TenantId::from_static("big")
}

/// A CA and a leaf for `pbx.test`, written as PEM files; returns (CA PEM, cert, key).
fn certificates(dir: &std::path::Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["pbx.test".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_path, key_path) = (dir.join("pbx.crt"), dir.join("pbx.key"));
    std::fs::write(&cert_path, leaf.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca_cert.pem(), cert_path, key_path)
}

struct World {
    emulator: EmulatorProcess,
    http: reqwest::Client,
    store: Store,
    pbx: DemoUpstream,
    gateway: ms365_gateway::sync::SyncHandle,
    shutdown: CancellationToken,
    run: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl World {
    fn control(&self, path: &str) -> String {
        format!("{}/_emulator{path}", self.emulator.base)
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let reply = self.http.post(self.control(path)).json(&body).send().await;
        let reply = reply.unwrap().error_for_status().unwrap();
        reply.json().await.unwrap_or(Value::Null)
    }

    async fn patch(&self, path: &str, body: Value) {
        let reply = self.http.patch(self.control(path)).json(&body).send().await;
        reply.unwrap().error_for_status().unwrap();
    }

    async fn get(&self, path: &str) -> Value {
        let reply = self.http.get(self.control(path)).send().await.unwrap();
        reply.error_for_status().unwrap().json().await.unwrap()
    }

    /// Graph requests the emulator has answered (`/v1.0`: the login host's token and
    /// discovery requests and the control API are not Graph).
    async fn graph_requests(&self) -> u64 {
        let stats = self.get("/stats").await;
        (stats["classes"].as_object().into_iter().flatten())
            .filter(|(class, _)| !matches!(class.as_str(), "token" | "discovery"))
            .map(|(_, c)| c["requests"].as_u64().unwrap_or(0))
            .sum()
    }
}

async fn setup(db: &Database, users: usize, contacts: usize, debounce: u32) -> World {
    let started = Instant::now();
    let seed = format!(
        "users={users},contacts={contacts},photos=0.5,shared=1,tenant={DIRECTORY},domain=big.onmicrosoft.com,seed=5"
    );
    let emulator = start_emulator(&seed).await;
    eprintln!("emulator up in {:.1} s", started.elapsed().as_secs_f64());
    let http = reqwest::Client::new();
    let app = json!({"display_name": "bench", "redirect_uris": [],
        "permissions": ["User.Read.All", "Contacts.Read"]});
    let url = format!("{}/_emulator/apps?tenant={DIRECTORY}", emulator.base);
    let reply: Value = (http.post(url).json(&app).send().await.unwrap())
        .json()
        .await
        .unwrap();
    let client_id = reply["client_id"].as_str().unwrap().to_string();
    let pbx = DemoUpstream::start(DOMAIN, PBX_PASSWORD).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (ca_pem, cert, key) = certificates(dir.path());
    let password_file = dir.path().join("pbx.password");
    std::fs::write(&password_file, PBX_PASSWORD).unwrap();
    std::fs::set_permissions(
        &password_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let toml = format!(
        "data_dir = \"{data}\"\n[[listener]]\nkind = \"pbx\"\nbind = \"127.0.0.1:0\"\n\
         public_url = \"https://pbx.test\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n\
         [upstream]\nurl = \"{up}\"\n[admin]\nbind = \"127.0.0.1:0\"\n[pbx]\nkind = \"portsip\"\n\
         [[tenant]]\nid = \"big\"\n\
         domain = \"{DOMAIN}\"\nname = \"Big\"\npbx_username = \"{PBX_ADMIN}\"\n\
         pbx_password_file = \"{pw}\"\n[clouds.GLOBAL]\nlogin = \"{e}\"\ngraph = \"{e}\"\n{store}",
        data = data.display(),
        cert = cert.display(),
        key = key.display(),
        up = pbx.url,
        pw = password_file.display(),
        e = emulator.base,
        store = db.store_toml(&data),
    );
    let config = Config::from_toml(&dir.path().join("gateway.toml"), &toml, Vec::new()).unwrap();
    let gateway = Gateway::bind(config).await.unwrap();
    let pbx_addr = gateway.listener_addrs()[0];
    let sync = gateway.sync_worker();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(gateway.run(shutdown.clone()));
    let store = db.open_store(&data, 4).await;
    let keyring = db.open_keyring(&data, &store).await;
    let seed = TenantSeed {
        pbx_login: None,
        id: big(),
        domain: DOMAIN.into(),
        name: "Big".into(),
    };
    let tenant = store.upsert_tenant(&seed).await.unwrap();
    let world = World {
        emulator,
        http,
        store,
        pbx,
        gateway: sync,
        shutdown,
        run,
        _dir: dir,
    };
    let route = json!({"host": "pbx.test", "addr": pbx_addr.to_string()});
    world.post("/notifications/route", route).await;
    world
        .post("/notifications/trust", json!({"pem": ca_pem}))
        .await;
    let shared = (world.get(&format!("/tenants/{DIRECTORY}/users")).await)
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["accountEnabled"] == false && u["givenName"].is_null())
        .map(|u| u["id"].as_str().unwrap().to_string())
        .expect("a shared mailbox");
    let mut settings = Ms365Settings {
        directory_id: DIRECTORY.into(),
        application_id: client_id.clone(),
        sync_mode: SyncMode::Manual,
        ..Default::default()
    };
    settings.users.enabled = true;
    settings.users.starting_extension_number = "100000".into();
    settings.users.sync_photo = true;
    settings.personal_contacts.enabled = true;
    settings.shared_mailbox.enabled = true;
    settings.shared_mailbox.selected_users = vec![shared];
    settings.realtime.debounce_seconds = debounce;
    world
        .store
        .save_ms365_settings(&big(), &settings)
        .await
        .unwrap();
    let cert = TenantKeys::new(world.store.clone(), keyring)
        .generate(&tenant, KeyBits::Rsa2048, 365)
        .await
        .unwrap();
    let url = world.control(&format!(
        "/apps/{client_id}/certificates?tenant={DIRECTORY}"
    ));
    let upload = world.http.post(url).body(cert.certificate_pem).send().await;
    upload.unwrap().error_for_status().unwrap();
    world
}

/// Polls `check` every 10 ms until it holds; the time it took.
async fn until<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One change and the time until the store and the PBX show it (ms).
async fn one_change(w: &World, i: usize, users: &[ObjectId], shared: &str) -> (f64, f64) {
    let started = Instant::now();
    if i % 5 == 4 {
        let name = format!("Realtime contact {i}");
        let path = format!("/tenants/{DIRECTORY}/users/{shared}/contacts");
        w.post(&path, json!({"displayName": name})).await;
        let stored = until("the contact in the store", || async {
            let book = w
                .store
                .company_contacts(&big(), None, 100_000)
                .await
                .unwrap();
            book.iter().any(|c| c.fields.name == name)
        })
        .await;
        let _ = stored;
        let in_store = started.elapsed();
        until("the contact on the PBX", || async {
            (w.pbx.pbx.contacts(DOMAIN).iter()).any(|c| c["name"] == name.as_str())
        })
        .await;
        return (ms(in_store), ms(started.elapsed()));
    }
    let oid = &users[i * 7919 % users.len()];
    let name = format!("Renamed {i}");
    let path = format!("/tenants/{DIRECTORY}/users/{oid}");
    w.patch(&path, json!({"displayName": name})).await;
    until("the rename in the store", || async {
        let entry = w.store.directory_user(&big(), oid).await.unwrap();
        entry.is_some_and(|d| d.display_name == name)
    })
    .await;
    let in_store = started.elapsed();
    until("the rename on the PBX", || async {
        let user = w.pbx.pbx.user_bound_to(DOMAIN, oid.as_str());
        user.is_some_and(|u| u["display_name"] == name.as_str())
    })
    .await;
    (ms(in_store), ms(started.elapsed()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let users: usize = env_num("USERS", 50_000);
        let contacts: usize = env_num("CONTACTS", 20);
        let changes: usize = env_num("CHANGES", 100);
        let debounce: u32 = env_num("DEBOUNCE", 2);
        let db = Database::from_env().await;
        let w = setup(&db, users, contacts, debounce).await;
        let started = Instant::now();
        let first = w.gateway.request(&big(), RunTrigger::Api).unwrap().wait().await;
        let first = first.as_ref().as_ref().expect("the first run");
        assert!(first.pbx_error.is_none(), "{first:#?}");
        eprintln!("first run {:.1} s", started.elapsed().as_secs_f64());
        until("the subscriptions", || async {
            let subs = w.store.subscriptions(&big()).await.unwrap();
            subs.iter().filter(|s| s.active).count() >= 2
        })
        .await;
        let oids: Vec<ObjectId> = (w.store.directory_users(&big()).await.unwrap())
            .into_iter()
            .filter(|d| d.enabled)
            .map(|d| d.oid)
            .collect();
        let settings = w.store.ms365_settings(&big()).await.unwrap();
        let shared = settings.shared_mailbox.selected_users[0].clone();
        let graph_before = w.graph_requests().await;
        let runs_before = w.store.sync_runs(&big(), 10_000).await.unwrap().len();
        let (mut store_ms, mut pbx_ms) = (Vec::new(), Vec::new());
        for i in 0..changes {
            let (s, p) = one_change(&w, i, &oids, &shared).await;
            store_ms.push(s);
            pbx_ms.push(p);
        }
        let graph = w.graph_requests().await - graph_before;
        let runs = w.store.sync_runs(&big(), 10_000).await.unwrap();
        let targeted = runs.len() - runs_before;
        for v in [&mut store_ms, &mut pbx_ms] {
            v.sort_by(f64::total_cmp);
        }
        println!(
            "## Real-time updates: {users} users, {contacts} contacts each; {}; debounce {debounce} s\n",
            db.label()
        );
        println!("| measure | p50 | p95 | max |");
        println!("|---|---|---|---|");
        for (label, v) in [("change → store", &store_ms), ("change → PBX", &pbx_ms)] {
            println!(
                "| {label} | {:.0} ms | {:.0} ms | {:.0} ms |",
                percentile(v, 0.5),
                percentile(v, 0.95),
                v[v.len() - 1]
            );
        }
        println!(
            "\n{changes} changes ({} renames, {} shared-mailbox contacts), {targeted} targeted runs, \
             {graph} Graph requests in all: {:.2} per change.",
            changes - changes / 5,
            changes / 5,
            graph as f64 / changes as f64
        );

        // The comparison: no notifications, 1 % renamed, one scheduled run.
        let mut off = w.store.ms365_settings(&big()).await.unwrap();
        off.realtime.enabled = false;
        w.store.save_ms365_settings(&big(), &off).await.unwrap();
        until("the subscriptions deleted", || async {
            w.store.subscriptions(&big()).await.unwrap().is_empty()
        })
        .await;
        let step = 100;
        for (n, oid) in oids.iter().step_by(step).enumerate() {
            let path = format!("/tenants/{DIRECTORY}/users/{oid}");
            w.patch(&path, json!({"displayName": format!("Batch {n}")})).await;
        }
        let graph_before = w.graph_requests().await;
        let started = Instant::now();
        let result = w.gateway.request(&big(), RunTrigger::Schedule).unwrap().wait().await;
        let secs = started.elapsed().as_secs_f64();
        assert!(result.as_ref().is_ok(), "{result:?}");
        println!(
            "\nScheduled delta run after renaming {} users (1 %), real-time updates off: {secs:.1} s, {} Graph requests.",
            oids.len().div_ceil(step),
            w.graph_requests().await - graph_before
        );
        w.shutdown.cancel();
        let _ = w.run.await;
        w.store.close().await;
        drop(w.pbx);
        db.drop().await;
    });
}
