//! Several gateway instances on one PostgreSQL database (issue #7), as real processes: three
//! `ms365-gateway run` children share a database schema and a master key, the emulator
//! stands in for Microsoft in this process, and a scripted browser whose requests land on
//! whichever instance the test chooses plays the user behind a TCP load balancer. These tests
//! always use PostgreSQL, whatever backend the rest of the suite runs on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use ms365_gateway::ObjectId;
use ms365_gateway::store::{RunStatus, RunTrigger, Store};
use ms365_stand_ins::emulator::{
    AppRegistration, Emulator, EmulatorConfig, Faults, RouteClass, RunningEmulator, TenantSpec,
};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::common::process::GatewayProcess;
use crate::common::{SYSTEM_TOKEN, Setup, StubUpstream, acme};
use crate::entra::{DIRECTORY, tenant_spec};
use crate::sso::{Browser, Page, urlencode};

const PBX: &str = "https://pbx.test";

/// Three instances (A, B, C), their database, the emulator and the PBX stub.
struct Cluster {
    setup: Setup,
    emulator: RunningEmulator,
    client_id: String,
    _pbx: StubUpstream,
    instances: Vec<GatewayProcess>,
    store: Store,
    jar: Arc<Mutex<std::collections::BTreeMap<(String, String), String>>>,
}

impl Cluster {
    async fn start(spec: TenantSpec) -> Cluster {
        let emulator = Emulator::start(EmulatorConfig {
            seed: 17,
            tenants: vec![spec],
        })
        .await
        .unwrap();
        let app = AppRegistration {
            display_name: "PBX".into(),
            redirect_uris: vec![format!("{PBX}/ms365/redirect")],
            permissions: vec!["User.Read.All".into(), "Contacts.Read".into()],
            client_id: None,
        };
        let client_id = emulator.emulator.register_app(DIRECTORY, app);
        let setup = Setup::new();
        let key = base64_key();
        std::fs::write(setup.path("master.key"), key).unwrap();
        let pbx = StubUpstream::start().await;
        let db = crate::common::db::postgres_url(&setup.path("cluster"));
        let mut instances = Vec::new();
        for name in ["a", "b", "c"] {
            let path = write_config(&setup, name, &db, &pbx.url(), &emulator.base_url);
            instances.push(GatewayProcess::start(&path));
        }
        let store = Store::open_url(&db, 2).await.unwrap();
        Cluster {
            setup,
            emulator,
            client_id,
            _pbx: pbx,
            instances,
            store,
            jar: Arc::default(),
        }
    }

    /// The user's browser, its requests landing on instance `i`.
    fn on(&self, i: usize) -> Browser {
        let g = &self.instances[i];
        Browser::reaching(g.pbx, g.sbc, &self.setup.ca, self.jar.clone())
    }

    /// The admin API on instance `i` as the system administrator acting in `acme`.
    async fn admin(&self, i: usize, method: &str, path: &str, body: Option<Value>) -> Page {
        let auth = format!("Bearer {SYSTEM_TOKEN}");
        let headers = [
            ("authorization", auth.as_str()),
            ("x-tenant", "acme"),
            ("content-type", "application/json"),
        ];
        let url = format!("{PBX}{path}");
        let page = self
            .on(i)
            .request(method, &url, &headers, body.map(|b| b.to_string()))
            .await;
        assert!(
            page.status.is_success(),
            "{method} {path} on instance {i}: {} {}",
            page.status,
            page.body
        );
        page
    }

    /// Settings, key pair and certificate upload through instance A's admin API.
    async fn configure(&self, extra: Value) {
        let mut body = json!({"directory_id": DIRECTORY, "application_id": self.client_id,
            "sync_mode": "MANUAL", "users": {"enabled": true, "starting_extension_number": "100"},
            "sign_in_as_standard_user": {"enabled": true}});
        merge(&mut body, extra);
        self.admin(0, "POST", "/api/ms365", Some(body)).await;
        let pem = self
            .admin(0, "POST", "/api/ms365/certificate", None)
            .await
            .body;
        let em = &self.emulator.emulator;
        em.upload_certificate(DIRECTORY, &self.client_id, &pem)
            .unwrap();
    }

    async fn runs(&self) -> Vec<ms365_gateway::store::SyncRun> {
        self.store.sync_runs(&acme(), 50).await.unwrap()
    }

    /// Waits (bounded) until `check` holds on the runs.
    async fn until_runs(
        &self,
        what: &str,
        secs: u64,
        check: impl Fn(&[ms365_gateway::store::SyncRun]) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let runs = self.runs().await;
            if check(&runs) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {runs:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn merge(doc: &mut Value, extra: Value) {
    if let (Some(d), Value::Object(e)) = (doc.as_object_mut(), extra) {
        for (k, v) in e {
            d.insert(k, v);
        }
    }
}

fn base64_key() -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One instance's configuration: its own data directory and ports, the shared database,
/// master key, certificates and public URLs.
fn write_config(setup: &Setup, name: &str, db: &str, upstream: &str, emulator: &str) -> PathBuf {
    let toml = format!(
        r#"data_dir = "{dir}/data-{name}"

[[listener]]
kind = "pbx"
bind = "127.0.0.1:0"
public_url = "https://pbx.test"
tls_cert = "{pbx_cert}"
tls_key = "{pbx_key}"

[[listener]]
kind = "sbc"
bind = "127.0.0.1:0"
public_url = "https://sbc.test:8883"
tls_cert = "{sbc_cert}"
tls_key = "{sbc_key}"

[upstream]
url = "{upstream}"

[admin]
bind = "127.0.0.1:0"
token_file = "{dir}/admin.token"

[store]
database_url = "{db}"
master_key_file = "{dir}/master.key"

[sync]
lease_ttl = "3s"
schedule_check_interval = "200ms"
subscription_check_interval = "200ms"

[clouds.GLOBAL]
login = "{emulator}"
graph = "{emulator}"

[[tenant]]
id = "acme"
domain = "acme.test"
name = "Acme"
"#,
        dir = setup.dir.path().display(),
        pbx_cert = setup.pbx_cert.cert.display(),
        pbx_key = setup.pbx_cert.key.display(),
        sbc_cert = setup.sbc_cert.cert.display(),
        sbc_key = setup.sbc_cert.key.display(),
    );
    let path = setup.path(&format!("gateway-{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    path
}

fn slow_delta(c: &Cluster, latency: Duration) {
    let faults = Faults {
        latency,
        ..Faults::default()
    };
    c.emulator.emulator.set_faults(RouteClass::Delta, faults);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_sign_in_and_run_one_sync() {
    let c = Cluster::start(tenant_spec()).await;
    c.configure(json!({})).await;
    slow_delta(&c, Duration::from_millis(700));
    let requests = (0..3).map(|i| c.admin(i, "POST", "/api/ms365/sync", None));
    futures_util::future::join_all(requests).await;
    c.until_runs("the run to finish", 60, |runs| {
        runs.iter().any(|r| r.status != RunStatus::Running)
    })
    .await;
    // Whoever lost the lease must not have started a second run meanwhile.
    let runs = c.runs().await;
    assert_eq!(runs.len(), 1, "one run for three requests: {runs:#?}");
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    slow_delta(&c, Duration::ZERO);

    let mut jwks = Vec::new();
    for i in 0..3 {
        jwks.push(c.on(i).get(&format!("{PBX}/ms365/jwks.json")).await.body);
    }
    assert!(
        jwks.iter().all(|j| *j == jwks[0]),
        "the same JWKS everywhere: {jwks:?}"
    );

    let users = c.emulator.emulator.users(DIRECTORY);
    let upn = &users
        .iter()
        .find(|u| u.account_enabled && u.given_name.is_some() && u.user_type == "Member")
        .unwrap()
        .user_principal_name;
    let started = c
        .on(0)
        .get(&format!("{PBX}/ms365/login?domain=acme.test"))
        .await;
    assert_eq!(started.status, StatusCode::FOUND, "{}", started.body);
    let at_microsoft = c
        .on(0)
        .get(&format!(
            "{}&login_hint={}",
            started.location(),
            urlencode(upn)
        ))
        .await;
    let back = c.on(1).get(&at_microsoft.location()).await;
    assert_eq!(
        back.status,
        StatusCode::FOUND,
        "B completes A's login: {}",
        back.body
    );
    let session = c.on(2).get(&format!("{PBX}/ms365/session")).await;
    assert_eq!(
        session.status,
        StatusCode::OK,
        "C knows B's session: {}",
        session.body
    );
    let info = session.json();
    assert_eq!(info["domain"], "acme.test");
    let oid = &users
        .iter()
        .find(|u| &u.user_principal_name == upn)
        .unwrap()
        .id;
    let synced = c
        .store
        .pbx_user_by_oid(&acme(), &ObjectId::new(oid))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        info["extension"],
        synced.extension_number.as_str(),
        "{info}"
    );

    let origin = [("origin", PBX)];
    let out = c
        .on(2)
        .request("POST", &format!("{PBX}/ms365/logout"), &origin, None)
        .await;
    assert!(out.status.is_redirection(), "{}", out.status);
    // The jar lost the cookie with the logout; replay the old one against A.
    let cookie = session_cookie_from(&back);
    let replay = c
        .on(0)
        .request(
            "GET",
            &format!("{PBX}/ms365/session"),
            &[("cookie", &cookie)],
            None,
        )
        .await;
    assert_eq!(
        replay.status,
        StatusCode::UNAUTHORIZED,
        "A sees C's logout: {}",
        replay.body
    );
}

fn session_cookie_from(page: &Page) -> String {
    page.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-pbx_session="))
        .and_then(|v| v.split(';').next())
        .expect("the redirect sets the session cookie")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_syncing_instance_hands_its_run_to_another() {
    let spec = TenantSpec {
        users: 3_000,
        contacts_per_user: 0,
        ..tenant_spec()
    };
    let mut c = Cluster::start(spec).await;
    c.configure(json!({})).await;
    slow_delta(&c, Duration::from_millis(800));
    c.admin(0, "POST", "/api/ms365/sync", None).await;
    let pid = c.instances[0].pid().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The lease comes first, the run record a moment later: wait for both.
        let lease = c.store.sync_lease(&acme()).await.unwrap();
        let held = lease.is_some_and(|l| l.owner.split(':').nth(1) == Some(pid.as_str()));
        if held && !c.runs().await.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "instance A never started its run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead_run = c.runs().await[0].id.clone();
    c.instances[0].kill();
    c.until_runs("another instance to finish the work", 90, |runs| {
        runs.iter()
            .any(|r| r.id != dead_run && r.status == RunStatus::Succeeded)
    })
    .await;
    let runs = c.runs().await;
    let dead = runs.iter().find(|r| r.id == dead_run).unwrap();
    assert_ne!(dead.status, RunStatus::Running, "the killed run is closed");

    let users = c.store.pbx_users(&acme()).await.unwrap();
    let mut numbers: Vec<&str> = users.iter().map(|u| u.extension_number.as_str()).collect();
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), users.len(), "no extension twice");
    // An uninterrupted run would have left nothing to do: a fresh run changes nothing.
    slow_delta(&c, Duration::ZERO);
    c.admin(1, "POST", "/api/ms365/sync", None).await;
    c.until_runs("the check run", 60, |runs| {
        runs.len() == 3 && runs[0].status != RunStatus::Running
    })
    .await;
    let check = &c.runs().await[0];
    let counts = check.counts["users"];
    assert_eq!(
        (counts.created, counts.updated, counts.disabled),
        (0, 0, 0),
        "{check:#?}"
    );
    assert_eq!(c.store.pbx_users(&acme()).await.unwrap().len(), users.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_minute_fires_once_across_instances() {
    let c = Cluster::start(tenant_spec()).await;
    c.configure(json!({"sync_mode": "AUTOMATIC", "sync_time": "* * * * *"}))
        .await;
    c.until_runs("the scheduled run", 75, |runs| {
        runs.iter()
            .any(|r| r.trigger == RunTrigger::Schedule && r.status != RunStatus::Running)
    })
    .await;
    let first = c
        .runs()
        .await
        .into_iter()
        .find(|r| r.trigger == RunTrigger::Schedule)
        .unwrap();
    // Every instance sees the minute come due once and either claims it or logs that
    // another did; once all three have decided, no further run can start for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.instances.iter().all(|g| {
        let log = g.log_tail();
        log.contains("scheduled sync due")
            || log.contains("scheduled sync taken by another instance")
    }) {
        assert!(
            Instant::now() < deadline,
            "not every instance checked the schedule"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let same_minute: Vec<_> = c
        .runs()
        .await
        .into_iter()
        .filter(|r| r.trigger == RunTrigger::Schedule && r.started_at / 60 == first.started_at / 60)
        .collect();
    assert_eq!(same_minute.len(), 1, "{same_minute:#?}");
}

/// Graph subscriptions are created by exactly one instance, whichever takes the tenant's
/// lease; a notification delivered to another instance is run by whoever takes it next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_instance_manages_the_subscriptions() {
    let c = Cluster::start(tenant_spec()).await;
    let em = &c.emulator.emulator;
    em.route_notifications("pbx.test", c.instances[1].pbx);
    em.trust_notification_ca(&c.setup.ca.cert_pem);
    c.configure(json!({"realtime": {"enabled": true, "debounce_seconds": 1}}))
        .await;
    c.admin(0, "POST", "/api/ms365/sync", None).await;
    let store = &c.store;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !store
        .subscriptions(&acme())
        .await
        .unwrap()
        .iter()
        .any(|s| s.active)
    {
        assert!(Instant::now() < deadline, "no subscription was created");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A change delivered to instance B becomes a targeted run on some instance, while all
    // three keep checking the subscriptions every 200 ms.
    let someone = (em.users(DIRECTORY).into_iter())
        .find(|u| u.account_enabled && u.given_name.is_some() && u.user_type == "Member")
        .unwrap();
    let patch = ms365_stand_ins::emulator::UserPatch {
        display_name: Some("Renamed Across Instances".into()),
        ..Default::default()
    };
    em.update_user(DIRECTORY, &someone.id, patch);
    c.until_runs("the targeted run", 60, |runs| {
        runs.iter()
            .any(|r| r.trigger == RunTrigger::Notification && r.status == RunStatus::Succeeded)
    })
    .await;
    let entry = store
        .directory_user(&acme(), &ObjectId::new(&someone.id))
        .await
        .unwrap();
    assert_eq!(entry.unwrap().display_name, "Renamed Across Instances");
    let stored = store.subscriptions(&acme()).await.unwrap();
    let at_graph = em.subscriptions(DIRECTORY);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(at_graph.len(), 1, "one subscription at Graph: {at_graph:?}");
    assert_eq!(at_graph[0].id, stored[0].id);
    let calls = em.stats().class(RouteClass::Subscriptions).requests;
    assert_eq!(calls, 1, "one creation, by one instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refuses_a_missing_or_wrong_master_key() {
    let c = Cluster::start(tenant_spec()).await;
    let db = crate::common::db::postgres_url(&c.setup.path("cluster"));
    let path = write_config(
        &c.setup,
        "d",
        &db,
        "http://127.0.0.1:9",
        &c.emulator.base_url,
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let without = c.setup.path("gateway-nokey.toml");
    std::fs::write(
        &without,
        text.replace(
            &format!(
                "master_key_file = \"{}/master.key\"\n",
                c.setup.dir.path().display()
            ),
            "",
        ),
    )
    .unwrap();
    let refused = run_to_exit(&without, None);
    assert!(!refused.0, "started without a master key");
    assert!(refused.1.contains("MS365GW_MASTER_KEY"), "{}", refused.1);
    let wrong = run_to_exit(&without, Some(&base64_key()));
    assert!(!wrong.0, "started with another master key");
    assert!(wrong.1.contains("does not open"), "{}", wrong.1);
}

/// Runs the binary on `config` (optionally with `MS365GW_MASTER_KEY`) until it exits;
/// (succeeded, stderr).
fn run_to_exit(config: &std::path::Path, key: Option<&str>) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ms365-gateway"));
    cmd.args(["run", "--config"]).arg(config);
    cmd.env_remove("MS365GW_MASTER_KEY");
    if let Some(k) = key {
        cmd.env("MS365GW_MASTER_KEY", k);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
