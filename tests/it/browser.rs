//! Real-browser tests (issue #6): headless Chromium, driven over WebDriver by
//! `common::webdriver`, talks TLS to the real `ms365-gateway run` binary (a child process)
//! on its PBX and SBC listeners and plain HTTP to the Entra ID + Graph emulator, which runs
//! in this process as Microsoft's stand-in. The PBX is a small stub here that answers every
//! path with a page listing the `X-PBX-*` identity headers it received.
//!
//! Chromium reaches `https://pbx.test` and `https://sbc.test:8883` (the listeners'
//! `public_url`s) through `--host-resolver-rules`. Screenshots of every step are saved in
//! `target/browser-artifacts/<test name>/<step>.png`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ms365_gateway::ObjectId;
use ms365_gateway::config::TenantSeed;
use ms365_gateway::entra::KeyBits;
use ms365_gateway::settings::{Ms365Settings, SyncMode};
use ms365_gateway::store::{DirectoryUser, Store};
use ms365_gateway::tenant_keys::TenantKeys;
use ms365_stand_ins::emulator::{
    AppRegistration, Emulator, EmulatorConfig, Faults, RouteClass, RunningEmulator, TenantSpec,
};
use serde_json::{Value, json};

use crate::common::process::GatewayProcess;
use crate::common::webdriver::{Browser, BrowserOptions};
use crate::common::{Options, SYSTEM_TOKEN, Setup, acme};
use crate::entra::{DIRECTORY, tenant_spec};

const PBX: &str = "https://pbx.test";
const SBC: &str = "https://sbc.test:8883";

/// The gateway binary, its emulator and PBX stub, and tenants `acme` (acme.test, the one
/// tests configure) and `beta` (beta.test, never configured).
struct World {
    setup: Setup,
    emulator: RunningEmulator,
    client_id: String,
    pbx: PbxStub,
    gateway: Option<GatewayProcess>,
}

impl World {
    /// Everything but the gateway, which [`World::start`] runs once the store is seeded.
    async fn new(spec: TenantSpec) -> World {
        let emulator = Emulator::start(EmulatorConfig {
            seed: 6,
            tenants: vec![spec],
        })
        .await
        .unwrap();
        let app = AppRegistration {
            display_name: "PBX".into(),
            redirect_uris: vec![
                format!("{PBX}/ms365/redirect"),
                format!("{SBC}/ms365/redirect"),
            ],
            permissions: vec!["User.Read.All".into(), "Contacts.Read".into()],
            client_id: None,
        };
        let client_id = emulator.emulator.register_app(DIRECTORY, app);
        World {
            setup: Setup::new(),
            emulator,
            client_id,
            pbx: PbxStub::start().await,
            gateway: None,
        }
    }

    /// Writes gateway.toml and starts the binary on it. `config_toml` points
    /// `[admin] token_file` at the file `Setup` wrote [`SYSTEM_TOKEN`] to.
    fn start(&mut self) {
        let extra = format!(
            "[clouds.GLOBAL]\nlogin = \"{e}\"\ngraph = \"{e}\"\n\n\
             [[tenant]]\nid = \"acme\"\ndomain = \"acme.test\"\nname = \"Acme\"\n\n\
             [[tenant]]\nid = \"beta\"\ndomain = \"beta.test\"\nname = \"Beta\"\n",
            e = self.emulator.base_url
        );
        let toml = self.setup.config_toml(&Options {
            upstream_url: &self.pbx.url(),
            extra: &extra,
            ..Default::default()
        });
        let path = self.setup.path("gateway.toml");
        std::fs::write(&path, toml).unwrap();
        self.gateway = Some(GatewayProcess::start(&path));
    }

    fn gateway(&self) -> &GatewayProcess {
        self.gateway.as_ref().expect("World::start ran")
    }

    async fn browser(&self, test: &'static str, downloads: Option<PathBuf>) -> Browser {
        let g = self.gateway();
        Browser::start(BrowserOptions {
            test,
            hosts: vec![
                ("pbx.test:443".into(), g.pbx),
                ("sbc.test:8883".into(), g.sbc),
            ],
            downloads,
        })
        .await
    }

    /// The store the gateway uses (SQLite in its data directory, or the test's PostgreSQL
    /// schema, see `common::db`), opened before the binary starts or alongside it.
    async fn store(&self) -> Store {
        crate::common::db::open_store(&self.setup.path("data"), 2).await
    }

    /// Before start: tenant `acme` with only `sync_mode = MANUAL` stored, so no schedule
    /// races the "Sync now" under test.
    async fn seed_manual_tenant(&self) -> Store {
        let store = self.store().await;
        let seed = TenantSeed {
            pbx_login: None,
            id: acme(),
            domain: "acme.test".into(),
            name: "Acme".into(),
        };
        store.upsert_tenant(&seed).await.unwrap();
        let settings = Ms365Settings {
            sync_mode: SyncMode::Manual,
            ..Default::default()
        };
        store.save_ms365_settings(&acme(), &settings).await.unwrap();
        store
    }

    /// Before start: `acme` fully set up for sign-in (IDs, key pair uploaded to the
    /// emulator's app, standard users allowed) and one emulator user bound to extension
    /// 100. Returns that user's UPN.
    async fn seed_sso(&self) -> String {
        let store = self.seed_manual_tenant().await;
        let mut settings = store.ms365_settings(&acme()).await.unwrap();
        settings.directory_id = DIRECTORY.into();
        settings.application_id = self.client_id.clone();
        settings.sign_in_as_standard_user.enabled = true;
        store.save_ms365_settings(&acme(), &settings).await.unwrap();
        let tenant = store.tenant(&acme()).await.unwrap().unwrap();
        let keyring = crate::common::keys::open_keyring(&self.setup.path("data"), &store).await;
        let keys = TenantKeys::new(store.clone(), keyring);
        let cert = keys.generate(&tenant, KeyBits::Rsa2048, 365).await.unwrap();
        let emulator = &self.emulator.emulator;
        emulator
            .upload_certificate(DIRECTORY, &self.client_id, &cert.certificate_pem)
            .unwrap();
        let user = emulator
            .users(DIRECTORY)
            .into_iter()
            .find(|u| u.account_enabled && u.given_name.is_some() && u.user_type == "Member")
            .unwrap();
        let entry = DirectoryUser {
            tenant_id: acme(),
            oid: ObjectId::new(user.id.clone()),
            upn: user.user_principal_name.clone(),
            pbx_user_id: "pbx-100".into(),
            extension: Some("100".into()),
            display_name: "User 100".into(),
            email: Some(user.user_principal_name.clone()),
            role: ms365_gateway::store::Role::User,
            enabled: true,
            source: "sync".into(),
        };
        store.upsert_directory_user(&entry).await.unwrap();
        store.close().await;
        user.user_principal_name
    }
}

/// The PBX stand-in: every path answers a page naming the path and the `X-PBX-*` headers,
/// each in an element whose id is the header name (`#x-pbx-extension`).
struct PbxStub {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl PbxStub {
    async fn start() -> PbxStub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(pbx_page);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        PbxStub { addr, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for PbxStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pbx_page(uri: http::Uri, headers: http::HeaderMap) -> axum::response::Html<String> {
    let rows: String = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-pbx-"))
        .map(|(name, value)| {
            let value = value.to_str().unwrap_or("?");
            format!("<dt>{name}</dt><dd id=\"{name}\">{value}</dd>")
        })
        .collect();
    axum::response::Html(format!(
        "<!doctype html><html><head><title>PBX</title></head><body>\
         <h1 id=\"landing\">PBX page {}</h1><dl>{rows}</dl></body></html>",
        uri.path()
    ))
}

/// Fails when the page scrolls sideways at 360 CSS pixels; leaves a screenshot of it.
async fn assert_fits_360(b: &Browser, step: &str) {
    b.viewport_width(360).await;
    b.wait_until(
        "the 360 px layout",
        "return window.innerWidth === 360",
        json!([]),
    )
    .await;
    b.screenshot(step).await;
    let overflows = b.overflows_horizontally().await;
    b.viewport_width(0).await;
    if overflows {
        b.fail(&format!("{step}: horizontal overflow at 360 px"))
            .await;
    }
}

/// `fetch(path)` from the page (same origin, the page's cookies): `{status, body}`.
async fn page_fetch(b: &Browser, path: &str, headers: Value) -> Value {
    let script = "return fetch(arguments[0], {headers: arguments[1], credentials: 'same-origin'})\
        .then(r => r.text().then(t => ({status: r.status, body: t})))";
    let r = b.script(script, json!([path, headers])).await;
    let body = r["body"].as_str().unwrap_or_default();
    json!({"status": r["status"], "body": serde_json::from_str::<Value>(body).unwrap_or(json!(body))})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_signs_in_with_microsoft_on_the_sbc_listener_and_lands_on_webrtc() {
    let mut w = World::new(tenant_spec()).await;
    let upn = w.seed_sso().await;
    w.start();
    let b = w.browser("user_flow_sbc", None).await;
    b.goto(&format!("{SBC}/ms365/?domain=acme.test&client=webrtc"))
        .await;
    microsoft_icon_shows(&b).await;
    b.screenshot("1-login-page").await;
    assert_fits_360(&b, "2-login-page-360px").await;
    sign_in_by_picking(&b, &w, &upn).await;
    landed_on_webrtc_as_extension_100(&b).await;
    session_matches_extension_100(&b).await;
    logout_ends_the_session(&b).await;
}

/// The "Sign in with Microsoft" button with the four-squares logo, rendered.
async fn microsoft_icon_shows(b: &Browser) {
    b.wait_visible("#ms365-signin .logo").await;
    let logo = "const r = document.querySelector('#ms365-signin .logo'); \
        return [r.getBoundingClientRect().width, getComputedStyle(r).backgroundImage, \
                document.querySelector('#ms365-signin').textContent]";
    let logo = b.script(logo, json!([])).await;
    assert!(logo[0].as_f64().unwrap() >= 16.0, "icon size: {logo}");
    assert!(
        logo[1].as_str().unwrap().contains("conic-gradient"),
        "four squares: {logo}"
    );
    assert!(
        logo[2].as_str().unwrap().contains("Sign in with Microsoft"),
        "{logo}"
    );
}

/// Clicks the Microsoft button, then the user's button on the emulator's account picker.
async fn sign_in_by_picking(b: &Browser, w: &World, upn: &str) {
    b.click("#ms365-signin").await;
    let pick = format!("#accounts button[value=\"{upn}\"]");
    b.wait_visible(&pick).await;
    assert!(b.current_url().await.starts_with(&w.emulator.base_url));
    b.screenshot("3-emulator-sign-in").await;
    b.click(&pick).await;
}

/// The PBX's WebRTC page, reached through the SBC listener with the user's identity.
async fn landed_on_webrtc_as_extension_100(b: &Browser) {
    b.element("#x-pbx-extension").await;
    b.screenshot("4-webrtc-landing").await;
    assert_eq!(b.current_url().await, format!("{SBC}/webrtc/"));
    assert_eq!(b.text("#landing").await, "PBX page /webrtc/");
    assert_eq!(b.text("#x-pbx-extension").await, "100");
    assert_eq!(b.text("#x-pbx-domain").await, "acme.test");
    assert_eq!(b.text("#x-pbx-tenant").await, "acme");
    assert_eq!(b.text("#x-pbx-role").await, "user");
}

/// `/ms365/session`, fetched by the page, names the same extension.
async fn session_matches_extension_100(b: &Browser) {
    let session = page_fetch(b, "/ms365/session", json!({})).await;
    assert_eq!(session["status"], 200, "{session}");
    let s = &session["body"];
    assert_eq!(
        (&s["extension"], &s["domain"], &s["display_name"]),
        (&json!("100"), &json!("acme.test"), &json!("User 100")),
        "{s}"
    );
    let token = s["access_token"].as_str().unwrap_or_default();
    assert_eq!(token.split('.').count(), 3, "a JWT: {s}");
}

/// `/ms365/logout` lands on the signed-out page; the session and the identity are gone.
async fn logout_ends_the_session(b: &Browser) {
    b.goto(&format!("{SBC}/ms365/logout")).await;
    let signed_out = "return location.pathname === '/ms365/' \
        && document.body.innerText.includes('You are signed out.')";
    b.wait_until("the signed-out page", signed_out, json!([]))
        .await;
    b.screenshot("5-logged-out").await;
    let after = page_fetch(b, "/ms365/session", json!({})).await;
    assert_eq!(after["status"], 401, "the session ended: {after}");
    b.goto(&format!("{SBC}/webrtc/")).await;
    b.element("#landing").await;
    b.screenshot("6-webrtc-after-logout").await;
    let identity = b.find("#x-pbx-extension").await;
    assert!(
        identity.is_none(),
        "no identity reaches the PBX after logout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_sso_off_shows_no_microsoft_icon() {
    let mut w = World::new(tenant_spec()).await;
    w.seed_sso().await;
    w.start();
    let b = w.browser("sso_off", None).await;
    for (n, (listener, base)) in [("pbx", PBX), ("sbc", SBC)].into_iter().enumerate() {
        b.goto(&format!("{base}/ms365/?domain=beta.test")).await;
        b.wait_visible("#no-ms365").await;
        b.screenshot(&format!("{}-beta-login-page-{listener}", n + 1))
            .await;
        assert!(
            b.find("#ms365-signin").await.is_none(),
            "{base}: no Microsoft button"
        );
        assert!(b.find(".logo").await.is_none(), "{base}: no Microsoft icon");
    }
    // The same page for the configured tenant does offer it: the difference is the tenant.
    b.goto(&format!("{PBX}/ms365/?domain=acme.test")).await;
    b.wait_visible("#ms365-signin .logo").await;
    b.screenshot("3-acme-login-page").await;
}

/// A tenant big enough for three `/users/delta` pages (the gateway asks for 999 users a
/// page), which the emulator serves slowly (see [`sync_now_and_watch`]), so the run's
/// fetch phase outlasts several of the page's once-a-second status polls.
fn slow_sync_spec() -> TenantSpec {
    TenantSpec {
        users: 2500,
        contacts_per_user: 0,
        photo_share: 0.0,
        ..tenant_spec()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_configures_microsoft_365_and_syncs_users_in_the_admin_page() {
    let mut w = World::new(slow_sync_spec()).await;
    w.seed_manual_tenant().await.close().await;
    w.start();
    let downloads = w.setup.path("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let b = w.browser("admin_flow", Some(downloads.clone())).await;

    b.goto(&format!("{PBX}/ms365/admin?tenant=acme")).await;
    b.wait_visible("#token").await;
    b.screenshot("1-token").await;
    b.type_into("#token", SYSTEM_TOKEN).await;
    b.click("#token-submit").await;
    b.wait_visible("#application_id").await;
    b.screenshot("2-settings-empty").await;
    assert_fits_360(&b, "3-settings-360px").await;

    fill_settings(&b, &w.client_id).await;
    let auth = json!({"Authorization": format!("Bearer {SYSTEM_TOKEN}"), "X-Tenant": "acme"});
    settings_were_saved(&b, &w, &auth).await;

    let pem = generate_and_download_key(&b, &downloads).await;
    w.emulator
        .emulator
        .upload_certificate(DIRECTORY, &w.client_id, &pem)
        .expect("the downloaded public_key.pem is a certificate Entra accepts");

    test_connection(&b).await;
    sync_now_and_watch(&b, &w).await;
    users_appear(&b, &w, &auth).await;
    a_token_is_listed_and_revoked(&b, &auth).await;
}

/// A token the system administrator issued shows in the tokens panel; "Revoke" ends it.
async fn a_token_is_listed_and_revoked(b: &Browser, auth: &Value) {
    let issue = "return fetch('/api/admin/tenants/acme/tokens', {method: 'POST', \
        headers: Object.assign({'Content-Type': 'application/json'}, arguments[0]), \
        body: JSON.stringify({label: 'front desk laptop'})}).then(r => r.status)";
    assert_eq!(b.script(issue, json!([auth])).await, 201);
    b.goto(&format!("{PBX}/ms365/admin?tenant=acme")).await;
    b.wait_visible("button[data-token]").await;
    b.screenshot_of("#tokens", "10-tokens").await;
    let row = b.text("#tokens tr").await;
    assert!(
        row.contains("front desk laptop") && row.contains("never"),
        "{row}"
    );
    b.script("window.confirm = () => true; return true", json!([]))
        .await;
    b.click("button[data-token]").await;
    b.wait_visible("#tokens-empty").await;
    let listed = page_fetch(b, "/api/ms365/tokens", auth.clone()).await;
    assert_eq!(listed["body"]["count"], 0, "{listed}");
}

/// Fills the IDs and region, turns user sync and sign-in on, saves.
async fn fill_settings(b: &Browser, client_id: &str) {
    b.type_into("#application_id", client_id).await;
    b.type_into("#directory_id", DIRECTORY).await;
    let select = "const e = document.querySelector('#national_cloud'); e.value = arguments[0]; \
        e.dispatchEvent(new Event('input', {bubbles: true})); \
        e.dispatchEvent(new Event('change', {bubbles: true})); return e.value";
    assert_eq!(b.script(select, json!(["GLOBAL"])).await, "GLOBAL");
    check(b, "#users-enabled").await;
    b.type_into("#starting_extension_number", "2000").await;
    check(b, "#sign-in-enabled").await;
    b.screenshot("4-settings-filled").await;
    b.click("#save").await;
    let message = "const e = document.querySelector('#message'); return e && e.textContent.trim()";
    b.wait_until("the save message", message, json!([])).await;
    b.screenshot_of("#message", "5-saved").await;
}

/// The admin API, asked from the page, has what the form saved.
async fn settings_were_saved(b: &Browser, w: &World, auth: &Value) {
    let saved = page_fetch(b, "/api/ms365", auth.clone()).await;
    assert_eq!(saved["status"], 200, "{saved}");
    let s = &saved["body"];
    let ids = (
        &s["application_id"],
        &s["directory_id"],
        &s["national_cloud"],
    );
    let want = (&json!(w.client_id), &json!(DIRECTORY), &json!("GLOBAL"));
    assert_eq!(ids, want, "{s}");
    assert_eq!(s["users"]["enabled"], true, "{s}");
    assert_eq!(s["users"]["starting_extension_number"], "2000", "{s}");
    assert_eq!(s["sign_in_as_standard_user"]["enabled"], true, "{s}");
}

/// Ticks a checkbox unless it already is.
async fn check(b: &Browser, css: &str) {
    b.wait_visible(css).await;
    let checked = "return document.querySelector(arguments[0]).checked";
    if b.script(checked, json!([css])).await != true {
        b.click(css).await;
    }
    assert_eq!(b.script(checked, json!([css])).await, true, "{css} ticked");
}

/// "Generate New Key Pair" (which downloads the certificate), then "Download" again;
/// both must save the same `public_key.pem`, which is returned.
async fn generate_and_download_key(b: &Browser, downloads: &Path) -> String {
    let file = downloads.join("public_key.pem");
    b.click("#generate-key").await;
    let generated = downloaded(b, &file).await;
    std::fs::remove_file(&file).unwrap();
    b.click("#download-key").await;
    let pem = downloaded(b, &file).await;
    assert_eq!(
        pem, generated,
        "Download gives the certificate just generated"
    );
    assert!(pem.contains("-----BEGIN CERTIFICATE-----"), "{pem}");
    pem
}

/// Waits for Chromium to finish a download (it renames its `.crdownload` only when
/// complete) and reads it.
async fn downloaded(b: &Browser, file: &Path) -> String {
    let deadline = Instant::now() + crate::common::webdriver::DEADLINE;
    while !file.exists() {
        if Instant::now() > deadline {
            b.fail(&format!("{} was not downloaded", file.display()))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::read_to_string(file).unwrap()
}

/// "Test connection": the result says it works and every check (token, users, …) is ok.
async fn test_connection(b: &Browser) {
    b.click("#test-connection").await;
    let verdict = "const n = document.querySelector('#test-result .notice'); \
        return n && (n.classList.contains('ok') ? 'ok' : n.textContent)";
    let verdict = b
        .wait_until("the connection test result", verdict, json!([]))
        .await;
    b.screenshot_of("#test-result", "6-test-connection").await;
    let checks = "return [...document.querySelectorAll('#test-result li[data-check]')]\
        .map(li => li.dataset.check + ':' + li.className)";
    let checks = b.script(checks, json!([])).await;
    assert_eq!(
        verdict,
        "ok",
        "Test connection: {}",
        b.text("#test-result").await
    );
    let checks: Vec<&str> = checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        checks.contains(&"token:ok") && checks.contains(&"users:ok"),
        "{checks:?}"
    );
    assert!(checks.iter().all(|c| c.ends_with(":ok")), "{checks:?}");
}

/// "Sync now", then watches `#sync-progress` and `#sync-phase` until the newest run row
/// (`#runs tr.run`) has finished. While the page marks the sync as running (`aria-busy`
/// around the bar) it must show at least two different states: the bar moves.
async fn sync_now_and_watch(b: &Browser, w: &World) {
    let slow = Faults {
        latency: Duration::from_millis(1500),
        ..Faults::default()
    };
    w.emulator.emulator.set_faults(RouteClass::Delta, slow);
    b.click("#sync-now").await;
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        let (state, status) = sync_state(b).await;
        if !matches!(status.as_str(), "running" | "") {
            break status;
        }
        if let Some(state) = state
            && seen.last() != Some(&state)
        {
            b.screenshot_of("#sync-progress", &format!("7-sync-progress-{}", seen.len()))
                .await;
            seen.push(state);
        }
        if Instant::now() > deadline {
            b.fail(&format!("the sync did not finish; progress seen: {seen:?}"))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    w.emulator
        .emulator
        .set_faults(RouteClass::Delta, Faults::default());
    b.screenshot_of("#sync-progress", "8-sync-finished").await;
    assert_eq!(status, "succeeded", "run status; progress seen: {seen:?}");
    assert!(
        seen.len() >= 2,
        "the progress bar moved while running: {seen:?}"
    );
}

/// The bar and phase text while the page shows a running sync (else `None`), and the
/// status of the newest run row.
async fn sync_state(b: &Browser) -> (Option<String>, String) {
    let probe = "const p = document.querySelector('#sync-progress'); \
        const run = document.querySelector('#runs tr.run'); \
        const bar = p.hasAttribute('value') ? p.value + ' of ' + p.max : 'indeterminate'; \
        return {busy: p.parentElement.getAttribute('aria-busy') === 'true', \
                state: bar + ', ' + document.querySelector('#sync-phase').textContent.trim(), \
                status: run ? run.dataset.status : ''}";
    let s = b.script(probe, json!([])).await;
    let state = (s["busy"] == true).then(|| s["state"].as_str().unwrap().to_string());
    (state, s["status"].as_str().unwrap_or_default().to_string())
}

/// The run created the tenant's users as extensions from 2000 on: in the run the page
/// lists, in the API and in the gateway's store.
async fn users_appear(b: &Browser, w: &World, auth: &Value) {
    let runs = page_fetch(b, "/api/ms365/sync/runs?limit=1", auth.clone()).await;
    let created = runs["body"]["items"][0]["counts"]["users"]["created"]
        .as_u64()
        .unwrap_or_else(|| panic!("a run with counts: {runs}"));
    assert!(
        created >= 2400,
        "the 2,500 users but a few were created: {runs}"
    );
    let row = b.text("#runs tr.run").await;
    assert!(
        row.contains(&created.to_string()),
        "the run row shows {created}: {row}"
    );
    let store = w.store().await;
    let users = store.pbx_users(&acme()).await.unwrap();
    store.close().await;
    assert_eq!(users.len() as u64, created);
    let mut numbers: Vec<u64> = users
        .iter()
        .map(|u| u.extension_number.parse().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(
        numbers[0], 2000,
        "extensions start at the configured number"
    );
    b.screenshot_of("#runs", "9-users-synced").await;
}
