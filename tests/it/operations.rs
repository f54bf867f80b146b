//! What an operator loads (issue #19): the alert rules pass `promtool check rules`; a real
//! Prometheus server scrapes the gateway and evaluates every rule without error; and after a
//! sync through the gateway's own worker (with the PBX connector), a sign-in and a refused
//! sign-in, every metric the rules and the Grafana dashboard name is exposed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;

use crate::common::SYSTEM_TOKEN;
use crate::pbx_session::{PbxSessionWorld, SessionOptions, signed_in};

/// Generous: each wait below ends on an event a second or two away.
const BOUND: Duration = Duration::from_secs(90);

fn docs(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/prometheus")
        .join(name)
}

/// Every `ms365_…` metric name a file mentions.
fn metric_names(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let re = regex::Regex::new(r"\bms365_[a-z0-9_]+").unwrap();
    re.find_iter(&text)
        .map(|m| m.as_str().to_string())
        .collect()
}

/// Polls `check` until it gives a value (the events waited for are seconds away).
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn metrics_text(admin: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A Prometheus server on a free loopback port, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: ms365-gateway\n    static_configs:\n      - targets: ['{target}']\n",
                docs("alerts.yml").display()
            ),
        )
        .unwrap();
        let port = crate::common::closed_port().port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus runs (scripts/test installs Debian's prometheus)");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    async fn api(&self, path: &str) -> Option<Value> {
        let r = reqwest::get(format!("{}{path}", self.url)).await.ok()?;
        r.json::<Value>().await.ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_alert_rules_pass_promtool() {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(docs("alerts.yml"))
        .output()
        .expect("promtool runs (scripts/test installs Debian's prometheus)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("SUCCESS: 10 rules found"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_metric_the_rules_and_the_dashboard_name() {
    let w = PbxSessionWorld::new(SessionOptions {
        no_initial_sync: true,
        ..Default::default()
    })
    .await;
    let b = w.browser();
    let auth = format!("Bearer {SYSTEM_TOKEN}");
    let headers = [("authorization", auth.as_str()), ("x-tenant", "acme")];
    // A new key pair through the admin API sets the days-left gauge (the one in use keeps
    // signing until Microsoft has the new one).
    let key = (b.request(
        "POST",
        "https://pbx.test/api/ms365/certificate",
        &headers,
        None,
    ))
    .await;
    assert_eq!(key.status, StatusCode::OK, "{}", key.body);
    // A sync through the gateway's own worker ("Sync now").
    let started = b
        .request("POST", "https://pbx.test/api/ms365/sync", &headers, None)
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let admin = w.gateway.admin;
    eventually("the run in /metrics", || async {
        let text = metrics_text(admin).await;
        text.contains(
            "ms365_gateway_sync_runs_total{tenant=\"acme\",trigger=\"api\",status=\"succeeded\"} 1",
        )
        .then_some(())
    })
    .await;
    // A sign-in that opens the user's PBX session, and one refused.
    signed_in(&w, &w.people[0]).await;
    let refused = b
        .get("https://pbx.test/ms365/login?domain=nobody.test")
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{}", refused.body);

    let text = metrics_text(admin).await;
    let exposed = |name: &str| {
        text.lines()
            .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
    };
    let mut named = metric_names(&docs("alerts.yml"));
    named.extend(metric_names(&docs("dashboard.json")));
    assert!(named.len() >= 20, "{named:?}");
    let missing: Vec<&String> = named.iter().filter(|n| !exposed(n)).collect();
    assert!(
        missing.is_empty(),
        "named but not exposed: {missing:?}\n{text}"
    );
    assert!(text.contains("ms365_gateway_signins_completed_total{tenant=\"acme\"} 1"));
    assert!(exposed("ms365_gateway_session_store_reads_total"), "{text}");
    assert!(text.contains(
        "ms365_gateway_signins_failed_total{tenant=\"unknown\",reason=\"bad_request\"} 1"
    ));
    assert!(text.contains("ms365_gateway_pbx_up{tenant=\"acme\"} 1"));
    assert!(
        text.contains("ms365_gateway_pbx_requests_total{tenant=\"acme\",operation=\"POST /users/{id}/ms365_binding\",outcome=\"ok\"}"),
        "PBX requests by operation: {text}"
    );

    // A real Prometheus scrapes it and evaluates every rule without error.
    let prometheus = Prometheus::start(admin);
    eventually("a scrape of the gateway", || async {
        let q = prometheus
            .api("/api/v1/query?query=ms365_gateway_sync_last_success_timestamp_seconds")
            .await?;
        (q["data"]["result"].as_array()?.len() == 1).then_some(())
    })
    .await;
    let rules = eventually("every rule evaluated", || async {
        let r = prometheus.api("/api/v1/rules").await?;
        let rules: Vec<Value> = (r["data"]["groups"].as_array()?.iter())
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.iter().all(|r| {
            r["lastEvaluation"]
                .as_str()
                .is_some_and(|t| !t.starts_with("0001"))
        });
        (rules.len() == 10 && evaluated).then_some(rules)
    })
    .await;
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
}
