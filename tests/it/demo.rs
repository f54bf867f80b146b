//! `ms365-gateway demo` as a user runs it: the real binary on port 0 in a temporary data
//! folder. The test reads the banner from standard output (no sleeps: lines until the ready
//! line, with a deadline), then talks real TLS to the printed URLs, trusting only the
//! self-signed certificates the demo wrote: the sign-in page, the admin API with the printed
//! token, a whole "Sign in with Microsoft" through the emulator into the demo PBX, the
//! synced directory, contacts and photo. SIGINT must stop everything with status 0, and a
//! second run on the same folder must work as well.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use ms365_gateway::demo::READY_LINE;
use ms365_stand_ins::emulator::DEMO_TENANT_ID;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

/// A start on a loaded two-core machine: emulator and RSA keys, TLS certificates, a sync.
const READY_DEADLINE: Duration = Duration::from_secs(180);
/// SIGINT to exit; the demo's shutdown grace is 5 s.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// A running `ms365-gateway demo` process and its banner.
struct Demo {
    child: Option<Child>,
    pid: u32,
    data_dir: PathBuf,
    log: PathBuf,
    /// Banner lines `label: value`, by label.
    fields: BTreeMap<String, String>,
    /// The whole banner, for messages.
    banner: String,
}

impl Demo {
    /// Starts the binary with the global `options` (log filter and format) and waits for
    /// the banner's ready line.
    async fn start(data_dir: &Path, log: &Path, options: &[&str]) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ms365-gateway"))
            .args(options)
            .args(["demo", "--data-dir"])
            .arg(data_dir)
            .args(["--pbx-port", "0", "--sbc-port", "0", "--admin-port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("the binary starts");
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut demo = Demo {
            child: Some(child),
            pid,
            data_dir: data_dir.to_path_buf(),
            log: log.to_path_buf(),
            fields: BTreeMap::new(),
            banner: String::new(),
        };
        let ready = tokio::time::timeout(READY_DEADLINE, read_banner(stdout, &mut demo.banner));
        if !matches!(ready.await, Ok(true)) {
            panic!(
                "no ready line; stdout:\n{}\nlog:\n{}",
                demo.banner,
                demo.log()
            );
        }
        demo.fields = parse_banner(&demo.banner);
        demo
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn field(&self, label: &str) -> String {
        self.fields
            .get(label)
            .cloned()
            .unwrap_or_else(|| panic!("no `{label}` in the banner:\n{}", self.banner))
    }

    /// `https://127.0.0.1:PORT` of the PBX listener.
    fn pbx(&self) -> String {
        origin(&self.field("PBX portal sign-in"))
    }

    fn sbc(&self) -> String {
        origin(&self.field("WebRTC sign-in"))
    }

    /// The number before `extensions` on the first-sync line.
    fn synced_extensions(&self) -> (u64, u64) {
        let line = self.field("First sync");
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |i: usize| words[i].trim_start_matches('(').parse::<u64>().unwrap();
        assert_eq!(words[1], "extensions", "{line}");
        assert_eq!(words[3], "created,", "{line}");
        (number(0), number(2))
    }

    /// A client that trusts exactly the two self-signed certificates the demo generated and
    /// never follows redirects.
    fn client(&self) -> reqwest::Client {
        let cert = |name: &str| {
            let pem = std::fs::read(self.data_dir.join("tls").join(name)).expect("certificate");
            reqwest::Certificate::from_pem(&pem).unwrap()
        };
        reqwest::Client::builder()
            .tls_certs_only([cert("pbx-0.crt"), cert("sbc-1.crt")])
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    /// Sends SIGINT and returns the exit status, within [`STOP_DEADLINE`].
    async fn interrupt(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let sent = Command::new("kill")
            .args(["-INT", &self.pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let (tx, rx) = oneshot::channel();
        std::thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send((status, child));
        });
        match tokio::time::timeout(STOP_DEADLINE, rx).await {
            Ok(Ok((status, _))) => status.expect("wait"),
            _ => {
                let _ = Command::new("kill")
                    .args(["-KILL", &self.pid.to_string()])
                    .status();
                panic!("no exit within {STOP_DEADLINE:?}; log:\n{}", self.log());
            }
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Appends standard output lines to `banner` until the ready line (`false`: the process
/// closed its output first). A thread reads the pipe, and keeps draining it afterwards so
/// the demo never writes into a closed pipe.
async fn read_banner(stdout: std::process::ChildStdout, banner: &mut String) -> bool {
    let (tx, mut rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    while let Some(line) = rx.recv().await {
        banner.push_str(&line);
        banner.push('\n');
        if line == READY_LINE {
            return true;
        }
    }
    false
}

/// `  Label:   value` lines (the first colon splits; URLs keep theirs).
fn parse_banner(banner: &str) -> BTreeMap<String, String> {
    banner
        .lines()
        .filter_map(|l| l.trim().split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn origin(url: &str) -> String {
    let u = reqwest::Url::parse(url).unwrap();
    u.origin().ascii_serialization()
}

/// Cookies by name, updated from `Set-Cookie` (Max-Age=0 removes).
#[derive(Default)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn take(&mut self, response: &reqwest::Response) {
        for set in response.headers().get_all("set-cookie") {
            let text = set.to_str().unwrap();
            let (pair, attrs) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_string(), value.to_string());
            }
        }
    }

    fn header(&self) -> String {
        let pairs: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.join("; ")
    }
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_string()
}

/// A whole "Sign in with Microsoft" on the PBX listener: the gateway's login, the emulator
/// signing `upn` in through `login_hint`, the redirect back; returns the session cookies.
async fn sign_in(http: &reqwest::Client, pbx: &str, upn: &str) -> Jar {
    let mut jar = Jar::default();
    let start = format!("{pbx}/ms365/login?domain=contoso.demo&client=portal");
    let started = http.get(&start).send().await.unwrap();
    assert_eq!(started.status(), StatusCode::FOUND);
    jar.take(&started);
    let mut authorize = reqwest::Url::parse(&location(&started)).unwrap();
    authorize.query_pairs_mut().append_pair("login_hint", upn);
    let at_microsoft = http.get(authorize).send().await.unwrap();
    assert_eq!(at_microsoft.status(), StatusCode::FOUND, "emulator refused");
    let back = location(&at_microsoft);
    assert!(
        back.starts_with(&format!("{pbx}/ms365/redirect?")),
        "{back}"
    );
    let landed = http
        .get(&back)
        .header("cookie", jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(landed.status(), StatusCode::FOUND);
    assert_eq!(location(&landed), "/portal/");
    jar.take(&landed);
    assert!(
        jar.0.contains_key("__Host-pbx_session"),
        "no session cookie"
    );
    jar
}

async fn get_text(http: &reqwest::Client, url: &str, jar: &Jar) -> (StatusCode, String) {
    let r = http
        .get(url)
        .header("cookie", jar.header())
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

/// The value of `<td id="NAME">VALUE</td>` on a demo PBX page.
fn cell(page: &str, id: &str) -> String {
    let open = format!("<td id=\"{id}\">");
    let start = page
        .find(&open)
        .unwrap_or_else(|| panic!("no {id}: {page}"))
        + open.len();
    page[start..].split("</td>").next().unwrap().to_string()
}

async fn check_sign_in_pages_and_admin_api(demo: &Demo, http: &reqwest::Client) {
    let login = http
        .get(demo.field("PBX portal sign-in"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    assert!(login.text().await.unwrap().contains("id=\"ms365-signin\""));
    let webrtc = http.get(demo.field("WebRTC sign-in")).send().await.unwrap();
    let webrtc = webrtc.text().await.unwrap();
    assert!(webrtc.contains("id=\"ms365-signin\""), "{webrtc}");
    assert!(
        webrtc.contains("name=\"client\" value=\"webrtc\""),
        "{webrtc}"
    );
    let api = format!("{}/api/ms365", demo.pbx());
    let settings = http
        .get(&api)
        .bearer_auth(demo.field("Admin token"))
        .header("x-tenant", "contoso.demo")
        .send()
        .await
        .unwrap();
    assert_eq!(settings.status(), StatusCode::OK);
    let settings: Value = settings.json().await.unwrap();
    assert_eq!(settings["directory_id"], DEMO_TENANT_ID, "{settings}");
    assert_eq!(settings["users"]["enabled"], true, "{settings}");
    let redirect = format!("{}/ms365/redirect", demo.pbx());
    assert_eq!(settings["redirect_uri"], redirect.as_str(), "{settings}");
    let anonymous = http.get(&api).header("x-tenant", "contoso.demo").send();
    assert_eq!(anonymous.await.unwrap().status(), StatusCode::UNAUTHORIZED);
    check_pbx_connection(demo, http).await;
}

/// The status and the connection test tell about the demo PBX the sync writes to.
async fn check_pbx_connection(demo: &Demo, http: &reqwest::Client) {
    let call = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{}{path}", demo.pbx()))
            .bearer_auth(demo.field("Admin token"))
            .header("x-tenant", "contoso.demo")
            .send()
    };
    let status: Value = call(reqwest::Method::GET, "/api/ms365/status")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["pbx"]["kind"], "portsip", "{status}");
    assert_eq!(status["pbx"]["state"], "signed_in", "{status}");
    let last = &status["sync"]["last_run"];
    assert_eq!(last["status"], "succeeded", "{status}");
    assert!(
        last["counts"]["pbx"]["created"].as_u64().unwrap() > 0,
        "{status}"
    );
    let test: Value = call(reqwest::Method::POST, "/api/ms365/test")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let checks = test["checks"].as_array().unwrap();
    let pbx = checks
        .iter()
        .find(|c| c["name"] == "pbx")
        .expect("a pbx check");
    assert_eq!(pbx["ok"], true, "{test}");
    assert!(
        pbx["message"]
            .as_str()
            .unwrap()
            .contains("signed in to the PBX"),
        "{test}"
    );
}

async fn check_signed_in_user(demo: &Demo, http: &reqwest::Client) {
    let pbx = demo.pbx();
    let jar = sign_in(http, &pbx, &demo.field("Sign in as, e.g.")).await;
    let (status, portal) = get_text(http, &format!("{pbx}/portal/"), &jar).await;
    assert_eq!(status, StatusCode::OK);
    assert!(portal.contains("Demo PBX web portal"), "{portal}");
    assert_eq!(cell(&portal, "x-pbx-domain"), "contoso.demo");
    assert!(
        cell(&portal, "x-pbx-extension").starts_with('1'),
        "{portal}"
    );
    let user = cell(&portal, "x-pbx-user");
    let (status, users) = get_text(http, &format!("{pbx}/ms365/directory/users"), &jar).await;
    assert_eq!(status, StatusCode::OK);
    let users: Value = serde_json::from_str(&users).unwrap();
    // The directory lists the PBX's users: the synced ones and the PBX's own tenant
    // administrator, which the PBX connector found on the demo PBX.
    let items = users["items"].as_array().unwrap();
    let admin = ms365_gateway::demo::PBX_ADMIN;
    let synced = items.iter().filter(|u| u["name"] != admin).count() as u64;
    assert_eq!(synced, demo.synced_extensions().0, "{users}");
    assert!(items.iter().any(|u| u["name"] == admin), "{users}");
    // The demo PBX itself holds the synced users (enabled ones are the banner's
    // extensions), as the portal shows.
    let rows = (portal.matches("<td>enabled</td><td>Microsoft 365</td>")).count() as u64;
    assert_eq!(rows, demo.synced_extensions().0, "{portal}");
    let (_, contacts) = get_text(http, &format!("{pbx}/ms365/directory/contacts"), &jar).await;
    let contacts: Value = serde_json::from_str(&contacts).unwrap();
    let kinds: Vec<&str> = contacts["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"personal") && kinds.contains(&"company"),
        "{contacts}"
    );
    let photo = http
        .get(format!("{pbx}/ms365/photos/{user}"))
        .header("cookie", jar.header())
        .send()
        .await
        .unwrap();
    assert_eq!(photo.status(), StatusCode::OK);
    assert_eq!(photo.headers()["content-type"], "image/jpeg");
}

#[tokio::test]
async fn demo_signs_in_through_the_gateway_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let options = ["--log", "info"];
    let demo = Demo::start(
        &dir.path().join("demo"),
        &dir.path().join("demo.log"),
        &options,
    )
    .await;
    let (extensions, created) = demo.synced_extensions();
    assert!((20..=30).contains(&extensions), "{}", demo.banner);
    assert!(created >= extensions, "{}", demo.banner);
    let http = demo.client();
    check_sign_in_pages_and_admin_api(&demo, &http).await;
    let (status, root) = get_text(&http, &format!("{}/", demo.pbx()), &Jar::default()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(root.contains("demo PBX upstream"), "{root}");
    let anonymous = get_text(&http, &format!("{}/webrtc/", demo.sbc()), &Jar::default()).await;
    assert!(anonymous.1.contains("id=\"anonymous\""), "{}", anonymous.1);
    check_signed_in_user(&demo, &http).await;
    let log = demo.log.clone();
    let status = demo.interrupt().await;
    let log = std::fs::read_to_string(log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("gateway stopped"), "{log}");
    // The access log, written by the gateway itself when stderr is not a terminal.
    let root_line = log
        .lines()
        .find(|l| l.contains("INFO access: listener=pbx#0 method=GET ") && l.contains(" path=/ "))
        .unwrap_or_else(|| panic!("no access line for GET /:\n{log}"));
    assert!(root_line.contains(" status=200 "), "{root_line}");
    assert!(
        root_line.contains(" completed=true total_ms="),
        "{root_line}"
    );
    assert!(root_line.contains(" upstream_ms="), "{root_line}");
}

/// The JSON access lines of a log: one object per line with `"target":"access"`.
fn json_access_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect()
}

#[tokio::test]
async fn demo_runs_again_on_the_same_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let json = ["--log", "info", "--log-format", "json"];
    let first = Demo::start(&data, &dir.path().join("first.log"), &json).await;
    let (token, (extensions, _)) = (first.field("Admin token"), first.synced_extensions());
    let http = first.client();
    let (status, _) = get_text(&http, &format!("{}/", first.pbx()), &Jar::default()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first.interrupt().await.code(), Some(0));
    let log = std::fs::read_to_string(dir.path().join("first.log")).unwrap();
    let root = json_access_lines(&log)
        .into_iter()
        .find(|v| v["path"] == "/" && v["listener"] == "pbx#0")
        .unwrap_or_else(|| panic!("no JSON access line for GET /:\n{log}"));
    assert_eq!(root["method"], "GET", "{root}");
    assert_eq!(root["status"], 200, "{root}");
    assert_eq!(root["level"], "INFO", "{root}");
    assert!(
        root["total_ms"].as_str().is_some_and(|t| t.contains('.')),
        "{root}"
    );
    let config = std::fs::read_to_string(data.join("gateway.toml")).unwrap();
    let quiet = ["--log", "info,access=warn", "--log-format", "json"];
    let second = Demo::start(&data, &dir.path().join("second.log"), &quiet).await;
    assert_eq!(second.field("Admin token"), token);
    assert_eq!(
        second.synced_extensions(),
        (extensions, 0),
        "{}",
        second.banner
    );
    assert_ne!(
        std::fs::read_to_string(data.join("gateway.toml")).unwrap(),
        config,
        "gateway.toml names this run's emulator"
    );
    let http = second.client();
    check_signed_in_user(&second, &http).await;
    assert_eq!(second.interrupt().await.code(), Some(0));
    let log = std::fs::read_to_string(dir.path().join("second.log")).unwrap();
    assert!(log.contains("gateway stopped"), "{log}");
    assert_eq!(
        json_access_lines(&log),
        Vec::<Value>::new(),
        "access=warn turns the lines off"
    );
}
