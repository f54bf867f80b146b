//! A small W3C WebDriver client over `reqwest` for the real-browser tests.
//!
//! [`Browser::start`] runs Debian's `chromedriver --port=0` as a child in its own process
//! group (it prints the port it picked), opens a headless Chromium session with a fresh
//! profile in a temporary directory, and ends both when dropped (session deleted, then the
//! process group killed by its id). Commands take CSS selectors; waiting is always bounded
//! polling of the browser's state ([`Browser::wait_until`]), never a fixed sleep.
//!
//! Screenshots are written to `target/browser-artifacts/<test name>/<step>.png`; a wait
//! that runs out saves `timeout-<n>.png` there before failing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a wait polls before failing.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Between two looks at the page while waiting.
const POLL: Duration = Duration::from_millis(100);

/// What a test asks of its browser.
pub struct BrowserOptions {
    /// Names the artifacts directory.
    pub test: &'static str,
    /// `host:port` the page asks for → the loopback address that answers it.
    pub hosts: Vec<(String, SocketAddr)>,
    /// Where downloads land (no prompt).
    pub downloads: Option<PathBuf>,
}

/// A headless Chromium driven through its own chromedriver.
pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`.
    session: String,
    driver: Driver,
    artifacts: PathBuf,
    timeouts: std::sync::atomic::AtomicUsize,
    _profile: tempfile::TempDir,
}

/// `target/browser-artifacts/<test>`, next to the binary under test.
pub fn artifacts_dir(test: &str) -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_ms365-gateway"));
    let target = bin.parent().and_then(Path::parent).expect("target dir");
    target.join("browser-artifacts").join(test)
}

impl Browser {
    pub async fn start(o: BrowserOptions) -> Browser {
        let driver = Driver::start();
        let profile = tempfile::tempdir().unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let caps = capabilities(&o, profile.path());
        let url = format!("http://127.0.0.1:{}/session", driver.port);
        let answer = send(http.post(&url).json(&caps)).await;
        let id = answer.unwrap_or_else(|e| panic!("new session: {e}"))["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        let artifacts = artifacts_dir(o.test);
        let _ = std::fs::remove_dir_all(&artifacts);
        std::fs::create_dir_all(&artifacts).unwrap();
        let browser = Browser {
            http,
            session: format!("{url}/{id}"),
            driver,
            artifacts,
            timeouts: Default::default(),
            _profile: profile,
        };
        if let Some(dir) = &o.downloads {
            browser.allow_downloads(dir).await;
        }
        browser
    }

    /// Downloads go to `dir` without asking (the profile pref alone is not always honoured
    /// by the headless shell, so the CDP command is sent too).
    async fn allow_downloads(&self, dir: &Path) {
        let params = json!({"behavior": "allow", "downloadPath": dir.to_str().unwrap()});
        if self
            .cdp("Browser.setDownloadBehavior", params.clone())
            .await
            .is_err()
        {
            self.cdp("Page.setDownloadBehavior", params).await.unwrap();
        }
    }

    /// One WebDriver command relative to the session.
    pub async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.session);
        let mut request = self.http.request(method.clone(), url);
        if method == reqwest::Method::POST {
            request = request.json(&body.unwrap_or_else(|| json!({})));
        }
        send(request).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        self.command(reqwest::Method::GET, path, None).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url}))
            .await
            .unwrap_or_else(|e| panic!("navigate to {url}: {e}"));
    }

    pub async fn current_url(&self) -> String {
        self.get("/url")
            .await
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A Chrome DevTools Protocol command through chromedriver's `goog/cdp/execute`.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Result<Value, String> {
        self.post("/goog/cdp/execute", json!({"cmd": cmd, "params": params}))
            .await
    }

    /// Runs `body` as a function body (`return …`; a returned promise is awaited) with
    /// `arguments`.
    pub async fn try_script(&self, body: &str, args: Value) -> Result<Value, String> {
        self.post("/execute/sync", json!({"script": body, "args": args}))
            .await
    }

    pub async fn script(&self, body: &str, args: Value) -> Value {
        self.try_script(body, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{body}"))
    }

    /// The element matching `css` now, if any.
    pub async fn find(&self, css: &str) -> Option<String> {
        let found = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await
            .ok()?;
        found[ELEMENT].as_str().map(str::to_string)
    }

    /// The element matching `css`, waiting for it to exist.
    pub async fn element(&self, css: &str) -> String {
        let what = format!("an element {css}");
        let probe = "return document.querySelector(arguments[0]) !== null";
        self.wait_until(&what, probe, json!([css])).await;
        self.find(css)
            .await
            .unwrap_or_else(|| panic!("{css} vanished"))
    }

    /// Clicks `css` once it is there, visible and enabled.
    pub async fn click(&self, css: &str) {
        self.wait_visible(css).await;
        let id = self.element(css).await;
        let path = format!("/element/{id}/click");
        self.post(&path, json!({}))
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Replaces the value of the input `css` with `text`, typed as keys.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.wait_visible(css).await;
        let id = self.element(css).await;
        self.post(&format!("/element/{id}/clear"), json!({}))
            .await
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        self.post(&format!("/element/{id}/value"), json!({"text": text}))
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// The rendered text of `css` (waits for the element).
    pub async fn text(&self, css: &str) -> String {
        let id = self.element(css).await;
        let text = self.get(&format!("/element/{id}/text")).await.unwrap();
        text.as_str().unwrap_or_default().to_string()
    }

    /// An attribute of `css` (waits for the element); `None` when it is not set.
    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let id = self.element(css).await;
        let value = self
            .get(&format!("/element/{id}/attribute/{name}"))
            .await
            .unwrap();
        value.as_str().map(str::to_string)
    }

    /// Waits until `css` exists, is rendered and is not disabled.
    pub async fn wait_visible(&self, css: &str) {
        let probe = "const e = document.querySelector(arguments[0]); \
            return !!e && !e.disabled && e.getClientRects().length > 0 \
            && getComputedStyle(e).visibility !== 'hidden'";
        self.wait_until(&format!("{css} to be visible"), probe, json!([css]))
            .await;
    }

    /// Polls `probe` (a function body) until it returns something truthy and returns that;
    /// script errors (a page being replaced) count as "not yet". Fails after [`DEADLINE`]
    /// with a screenshot and what the page showed.
    pub async fn wait_until(&self, what: &str, probe: &str, args: Value) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(v) = self.try_script(probe, args.clone()).await
                && truthy(&v)
            {
                return v;
            }
            if Instant::now() > deadline {
                self.fail(&format!("waited {DEADLINE:?} for {what}")).await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Fails the test with a screenshot, the URL and the page's text.
    pub async fn fail(&self, why: &str) -> ! {
        let n = self
            .timeouts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let shot = self.screenshot(&format!("timeout-{n}")).await;
        let url = self.current_url().await;
        let text = self
            .try_script(
                "return document.body ? document.body.innerText : ''",
                json!([]),
            )
            .await
            .unwrap_or_default();
        let text: String = text
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(2000)
            .collect();
        panic!(
            "{why}\nat {url}\nscreenshot {}\npage text:\n{text}",
            shot.display()
        );
    }

    /// Saves the viewport as `<artifacts>/<step>.png` and returns the path.
    pub async fn screenshot(&self, step: &str) -> PathBuf {
        let png = self.get("/screenshot").await.expect("screenshot");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 PNG"))
            .expect("valid base64");
        let path = self.artifacts.join(format!("{step}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Scrolls `css` to the middle of the viewport, then saves a screenshot like
    /// [`Browser::screenshot`].
    pub async fn screenshot_of(&self, css: &str, step: &str) -> PathBuf {
        let scroll = "document.querySelector(arguments[0]).scrollIntoView({block: 'center'})";
        self.element(css).await;
        self.script(scroll, json!([css])).await;
        self.screenshot(step).await
    }

    /// Emulates a device `width` CSS pixels wide (0 restores the window's own size).
    pub async fn viewport_width(&self, width: u32) {
        let result = if width == 0 {
            self.cdp("Emulation.clearDeviceMetricsOverride", json!({}))
                .await
        } else {
            let metrics =
                json!({"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": true});
            self.cdp("Emulation.setDeviceMetricsOverride", metrics)
                .await
        };
        result.unwrap_or_else(|e| panic!("viewport {width}: {e}"));
    }

    /// Whether the page is wider than the viewport (horizontal scrolling).
    pub async fn overflows_horizontally(&self) -> bool {
        let probe = "return [document.documentElement.scrollWidth, window.innerWidth]";
        let v = self.script(probe, json!([])).await;
        v[0].as_f64().unwrap() > v[1].as_f64().unwrap()
    }
}

/// Sends a request and unwraps WebDriver's `{"value": …}`; errors read `error: message`.
async fn send(request: reqwest::RequestBuilder) -> Result<Value, String> {
    let response = request
        .send()
        .await
        .map_err(|e| format!("chromedriver: {e}"))?;
    let ok = response.status().is_success();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("not JSON: {e}"))?;
    let value = body.get("value").cloned().unwrap_or(Value::Null);
    if ok {
        return Ok(value);
    }
    let message: String = value["message"]
        .as_str()
        .unwrap_or("")
        .chars()
        .take(600)
        .collect();
    Err(format!(
        "{}: {message}",
        value["error"].as_str().unwrap_or("error")
    ))
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// The new-session body: headless Chromium, loopback name mapping, certificates of the
/// test CA accepted, dialogs accepted, downloads without a prompt.
fn capabilities(o: &BrowserOptions, profile: &Path) -> Value {
    let rules: Vec<String> = o
        .hosts
        .iter()
        .map(|(name, addr)| format!("MAP {name} {addr}"))
        .collect();
    let args = vec![
        "--headless=new".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--window-size=1280,900".into(),
        "--ignore-certificate-errors".into(),
        "--no-first-run".into(),
        format!("--host-resolver-rules={}", rules.join(", ")),
        format!("--user-data-dir={}", profile.display()),
    ];
    let mut chrome = json!({"binary": "/usr/bin/chromium", "args": args});
    if let Some(dir) = &o.downloads {
        chrome["prefs"] = json!({
            "download.default_directory": dir.to_str().unwrap(),
            "download.prompt_for_download": false,
        });
    }
    json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "acceptInsecureCerts": true,
        "unhandledPromptBehavior": "accept",
        "goog:chromeOptions": chrome,
    }}})
}

impl Drop for Browser {
    /// Ends the session (Chromium exits with it), then chromedriver. Blocking on purpose:
    /// this also runs while a failed test unwinds.
    fn drop(&mut self) {
        let path = self
            .session
            .split_once("/session/")
            .map(|(_, id)| format!("/session/{id}"))
            .unwrap_or_default();
        delete_blocking(self.driver.port, &path);
    }
}

/// A bare HTTP/1.1 `DELETE`, for use where no runtime may be blocked on.
fn delete_blocking(port: u16, path: &str) {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "DELETE {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        let _ = stream.read_to_end(&mut Vec::new());
    }
}

/// `chromedriver` on a port of its choosing, in its own process group.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("chromedriver")
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver runs (scripts/test installs chromium-driver)");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        // Keeps draining stdout so chromedriver never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.split("started successfully on port ").nth(1) {
                    let _ = tx.send(port.trim_end_matches('.').trim().parse::<u16>());
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromedriver announces its port")
            .expect("a port number");
        Driver { child, port }
    }
}

impl Drop for Driver {
    /// Kills chromedriver's process group (it and any Chromium it left) by its id.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
