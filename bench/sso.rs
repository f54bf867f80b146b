//! Sign-in benchmark: complete logins per second through a real gateway process (release
//! build, TLS) against the in-process emulator, the gateway's CPU time per login (from
//! /proc, so the emulator's and this driver's work are not counted), and the cost of
//! session checking on proxied requests (with and without a session cookie, interleaved).
//!
//! Run: `cargo bench --bench sso` (env: LOGINS, CONCURRENCY, PROXY_SECS, ROUNDS, and
//! DATABASE_URL: unset → SQLite in the gateway's temporary data directory; a `postgres://`
//! URL → a fresh schema `bench_<pid>` in that database for the gateway and this driver,
//! dropped at the end).

#[path = "common.rs"]
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ms365_gateway::entra::KeyBits;
use ms365_gateway::settings::Ms365Settings;
use ms365_gateway::store::DirectoryUser;
use ms365_gateway::tenant_keys::TenantKeys;
use ms365_gateway::{ObjectId, TenantId};
use ms365_stand_ins::emulator::{AppRegistration, Emulator, EmulatorConfig, TenantSpec};

use common::{Database, cpu_seconds, env_num, free_port, peak_rss_mb};

const DIRECTORY: &str = "5b1c6a2e-9d3f-4e8a-b7c1-0a2b3c4d5e6f";

struct World {
    gateway: Child,
    pbx: SocketAddr,
    admin: SocketAddr,
    upns: Vec<String>,
    client: reqwest::Client,
    _emulator: ms365_stand_ins::emulator::RunningEmulator,
    _dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.gateway.kill();
        let _ = self.gateway.wait();
    }
}

async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = "x".repeat(1024);
    let app = axum::Router::new().fallback(move || {
        let b = body.clone();
        async move { b }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn setup(db: &Database) -> World {
    let mut spec = TenantSpec::new(DIRECTORY, "bench.onmicrosoft.com");
    spec.users = 200;
    let emulator = Emulator::start(EmulatorConfig {
        seed: 3,
        tenants: vec![spec],
    })
    .await
    .unwrap();
    let app = AppRegistration {
        display_name: "bench".into(),
        redirect_uris: vec!["https://pbx.test/ms365/redirect".into()],
        permissions: vec!["User.Read.All".into()],
        client_id: None,
    };
    let client_id = emulator.emulator.register_app(DIRECTORY, app);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (pbx_port, admin_port) = (free_port(), free_port());
    let upstream = upstream().await;
    let config = format!(
        "data_dir = \"{}\"\n[[listener]]\nkind = \"pbx\"\nbind = \"127.0.0.1:{pbx_port}\"\npublic_url = \"https://pbx.test\"\n\
         tls_cert = \"self-signed\"\n[upstream]\nurl = \"http://{upstream}\"\n[admin]\nbind = \"127.0.0.1:{admin_port}\"\n\
         [sso]\nlogin_rate_per_minute = 100000000\n[clouds.GLOBAL]\nlogin = \"{e}\"\ngraph = \"{e}\"\n\
         [[tenant]]\nid = \"acme\"\ndomain = \"acme.test\"\n{store}",
        data.display(),
        e = emulator.base_url,
        store = db.store_toml(&data),
    );
    let config_path = dir.path().join("gateway.toml");
    std::fs::write(&config_path, config).unwrap();
    let upns = prepare_store(db, &data, &emulator.emulator, &client_id).await;
    let gateway = Command::new(env!("CARGO_BIN_EXE_ms365-gateway"))
        .args([
            "--log",
            "warn",
            "run",
            "--config",
            config_path.to_str().unwrap(),
        ])
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    wait_healthy(admin).await;
    let pbx: SocketAddr = format!("127.0.0.1:{pbx_port}").parse().unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(data.join("tls/pbx-0.crt")).unwrap())
        .unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve("pbx.test", pbx)
        .redirect(reqwest::redirect::Policy::none())
        .http1_only()
        .build()
        .unwrap();
    World {
        gateway,
        pbx,
        admin,
        upns,
        client,
        _emulator: emulator,
        _dir: dir,
    }
}

/// Tenant settings, a key pair uploaded to the emulator, and every enabled user bound.
async fn prepare_store(
    db: &Database,
    data: &Path,
    emulator: &Emulator,
    client_id: &str,
) -> Vec<String> {
    let store = db.open_store(data, 2).await;
    let seed = ms365_gateway::config::TenantSeed {
        pbx_login: None,
        id: TenantId::from_static("acme"),
        domain: "acme.test".into(),
        name: "Acme".into(),
    };
    let tenant = store.upsert_tenant(&seed).await.unwrap();
    let mut settings = Ms365Settings {
        directory_id: DIRECTORY.into(),
        application_id: client_id.into(),
        ..Default::default()
    };
    settings.sign_in_as_standard_user.enabled = true;
    store
        .save_ms365_settings(&TenantId::from_static("acme"), &settings)
        .await
        .unwrap();
    // On SQLite the gateway's own default (the master key generated into data_dir); on
    // PostgreSQL the key file `store_toml` wrote and named.
    let keyring = db.open_keyring(data, &store).await;
    let cert = TenantKeys::new(store.clone(), keyring)
        .generate(&tenant, KeyBits::Rsa2048, 365)
        .await
        .unwrap();
    emulator
        .upload_certificate(DIRECTORY, client_id, &cert.certificate_pem)
        .unwrap();
    let mut upns = Vec::new();
    for (i, u) in emulator
        .users(DIRECTORY)
        .into_iter()
        .filter(|u| u.account_enabled && u.given_name.is_some())
        .enumerate()
    {
        let entry = DirectoryUser {
            tenant_id: TenantId::from_static("acme"),
            oid: ObjectId::new(u.id.clone()),
            upn: u.user_principal_name.clone(),
            pbx_user_id: format!("u{i}"),
            extension: Some(format!("{}", 1000 + i)),
            display_name: u.display_name.clone(),
            email: None,
            role: ms365_gateway::store::Role::User,
            enabled: true,
            source: "sync".into(),
        };
        store.upsert_directory_user(&entry).await.unwrap();
        upns.push(u.user_principal_name);
    }
    store.close().await;
    upns
}

async fn wait_healthy(admin: SocketAddr) {
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http
            .get(format!("http://{admin}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gateway did not become healthy");
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap().to_string())
        .collect()
}

/// One complete login; returns the session cookie pair.
async fn login(w: &World, upn: &str) -> String {
    let start = w
        .client
        .get("https://pbx.test/ms365/login?domain=acme.test")
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 302);
    let flow = set_cookies(&start)
        .into_iter()
        .find(|c| c.starts_with("__Host-ms365_flow_"))
        .unwrap();
    let authorize = format!(
        "{}&login_hint={}",
        start.headers()["location"].to_str().unwrap(),
        upn
    );
    let at_ms = w.client.get(authorize).send().await.unwrap();
    assert_eq!(at_ms.status(), 302);
    let back = at_ms.headers()["location"].to_str().unwrap().to_string();
    let done = w
        .client
        .get(back)
        .header("cookie", flow)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 302, "{:?}", done.text().await);
    set_cookies(&done)
        .into_iter()
        .find(|c| c.starts_with("__Host-pbx_session="))
        .unwrap()
}

async fn bench_logins(w: &Arc<World>, total: u64, concurrency: u64) -> (f64, f64) {
    let pid = w.gateway.id();
    let next = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (w, next) = (w.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let upn = &w.upns[i as usize % w.upns.len()];
                login(&w, upn).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    (total as f64 / wall, cpu * 1000.0 / total as f64)
}

/// Requests/s and gateway CPU µs per request for `secs`, with or without a session cookie.
async fn bench_proxy(
    w: &Arc<World>,
    cookie: Option<&str>,
    secs: u64,
    concurrency: u64,
) -> (f64, f64) {
    let pid = w.gateway.id();
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (w, done, cookie) = (w.clone(), done.clone(), cookie.map(str::to_string));
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let mut req = w.client.get("https://pbx.test/portal/x");
                if let Some(c) = &cookie {
                    req = req.header("cookie", c);
                }
                let r = req.send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let n = done.load(Ordering::Relaxed) as f64;
    let wall = started.elapsed().as_secs_f64();
    (n / wall, (cpu_seconds(pid) - cpu_before) * 1e6 / n)
}

fn main() {
    ms365_gateway::edge::install_default_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let db = Database::from_env().await;
        let w = Arc::new(setup(&db).await);
        let (logins, concurrency) = (env_num("LOGINS", 400), env_num("CONCURRENCY", 8));
        let (secs, rounds) = (env_num("PROXY_SECS", 5), env_num("ROUNDS", 3));
        login(&w, &w.upns[0]).await;
        let (rate, cpu_ms) = bench_logins(&w, logins, concurrency).await;
        println!("## Sign-in (gateway {} on {}, admin {}; store: {})\n", env!("CARGO_PKG_VERSION"), w.pbx, w.admin, db.label());
        println!("| logins | concurrency | logins/s | gateway CPU ms/login |\n|---|---|---|---|");
        println!("| {logins} | {concurrency} | {rate:.0} | {cpu_ms:.2} |\n");
        let session = login(&w, &w.upns[1]).await;
        println!("| round | mode | req/s | gateway CPU µs/req |\n|---|---|---|---|");
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            for (mode, cookie) in [("no session", None), ("session", Some(session.as_str()))] {
                let (rps, us) = bench_proxy(&w, cookie, secs, concurrency).await;
                println!("| {round} | {mode} | {rps:.0} | {us:.1} |");
                if cookie.is_some() { with.push((rps, us)) } else { without.push((rps, us)) }
            }
        }
        let median = |v: &mut Vec<(f64, f64)>, f: fn(&(f64, f64)) -> f64| {
            let mut xs: Vec<f64> = v.iter().map(f).collect();
            xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
            xs[xs.len() / 2]
        };
        let (rps_with, rps_without) = (median(&mut with, |x| x.0), median(&mut without, |x| x.0));
        let (us_with, us_without) = (median(&mut with, |x| x.1), median(&mut without, |x| x.1));
        println!("\nmedian: session {rps_with:.0} req/s vs none {rps_without:.0} req/s (ratio {:.3}); added CPU per request {:.1} µs", rps_with / rps_without, us_with - us_without);
        println!("gateway peak RSS: {:.1} MB", peak_rss_mb(w.gateway.id()));
        drop(w);
        db.drop().await;
    });
}
