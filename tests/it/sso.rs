//! "Sign in with Microsoft" end to end: a scripted browser (cookie jar, no automatic
//! redirects) talks TLS to the gateway's PBX and SBC listeners and plain HTTP to the
//! emulator, which signs users in non-interactively through `login_hint`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Request, StatusCode};
use ms365_gateway::entra::KeyBits;
use ms365_gateway::keyring::Keyring;
use ms365_gateway::settings::Ms365Settings;
use ms365_gateway::store::{DirectoryUser, Store};
use ms365_gateway::tenant_keys::TenantKeys;
use ms365_stand_ins::emulator::{AppRegistration, Emulator, EmulatorConfig, RunningEmulator};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::common::client::{self, ReqBody};
use crate::common::{Options, Setup, StubUpstream, TestGateway, acme};
use crate::entra::{DIRECTORY, tenant_spec};

const PBX_REDIRECT: &str = "https://pbx.test/ms365/redirect";
const SBC_REDIRECT: &str = "https://sbc.test:8883/ms365/redirect";

/// A gateway in front of a stub PBX, an emulator tenant, and tenant `acme` set up for SSO.
pub struct SsoWorld {
    pub setup: Setup,
    pub gateway: TestGateway,
    /// Kept alive for the gateway to proxy to.
    pub _upstream: StubUpstream,
    pub emulator: RunningEmulator,
    pub store: Store,
    /// The keyring the gateway keeps its keys in (same database, same master key).
    pub keyring: Keyring,
    pub client_id: String,
    /// An enabled emulator user with a directory entry: (oid, upn).
    pub user: (String, String),
}

pub struct WorldOptions<'a> {
    pub redirect_uris: &'a [&'a str],
    pub sso_extra: &'a str,
}

impl Default for WorldOptions<'_> {
    fn default() -> Self {
        WorldOptions {
            redirect_uris: &[PBX_REDIRECT, SBC_REDIRECT],
            sso_extra: "",
        }
    }
}

impl SsoWorld {
    /// The default world with `extra` added to its `[sso]` section.
    pub async fn with_sso(extra: &str) -> SsoWorld {
        SsoWorld::new(WorldOptions {
            sso_extra: extra,
            ..WorldOptions::default()
        })
        .await
    }

    pub async fn new(o: WorldOptions<'_>) -> SsoWorld {
        let emulator = Emulator::start(EmulatorConfig {
            seed: 11,
            tenants: vec![tenant_spec()],
        })
        .await
        .unwrap();
        let app = AppRegistration {
            display_name: "PBX".into(),
            redirect_uris: o.redirect_uris.iter().map(|s| s.to_string()).collect(),
            permissions: vec!["User.Read.All".into(), "Contacts.Read".into()],
            client_id: None,
        };
        let client_id = emulator.emulator.register_app(DIRECTORY, app);
        let setup = Setup::new();
        let upstream = StubUpstream::start().await;
        let url = upstream.url();
        let extra = format!(
            "[clouds.GLOBAL]\nlogin = \"{e}\"\ngraph = \"{e}\"\n\n[[tenant]]\nid = \"acme\"\ndomain = \"acme.test\"\nname = \"Acme\"\n\n[[tenant]]\nid = \"beta\"\ndomain = \"beta.test\"\n\n[sso]\n{}\n",
            o.sso_extra,
            e = emulator.base_url
        );
        let toml = setup.config_toml(&Options {
            upstream_url: &url,
            extra: &extra,
            ..Default::default()
        });
        let gateway = TestGateway::start(setup.config(&toml)).await;
        // Written out too, for tests that run the binary on the same configuration.
        std::fs::write(setup.path("gateway.toml"), &toml).unwrap();
        let store = crate::common::db::open_store(&setup.path("data"), 2).await;
        let keyring = crate::common::keys::open_keyring(&setup.path("data"), &store).await;
        let mut world = SsoWorld {
            setup,
            gateway,
            _upstream: upstream,
            emulator,
            store,
            keyring,
            client_id,
            user: (String::new(), String::new()),
        };
        world.configure_tenant().await;
        world
    }

    async fn configure_tenant(&mut self) {
        let mut settings = Ms365Settings {
            directory_id: DIRECTORY.into(),
            application_id: self.client_id.clone(),
            ..Default::default()
        };
        settings.sign_in_as_standard_user.enabled = true;
        // Tests start their syncs themselves; a schedule firing mid-test would race them,
        // and so would subscription maintenance (real-time updates have their own tests).
        settings.sync_mode = ms365_gateway::settings::SyncMode::Manual;
        settings.realtime.enabled = false;
        self.store
            .save_ms365_settings(&acme(), &settings)
            .await
            .unwrap();
        let tenant = self.store.tenant(&acme()).await.unwrap().unwrap();
        let keys = TenantKeys::new(self.store.clone(), self.keyring.clone());
        let cert = keys.generate(&tenant, KeyBits::Rsa2048, 365).await.unwrap();
        self.emulator
            .emulator
            .upload_certificate(DIRECTORY, &self.client_id, &cert.certificate_pem)
            .unwrap();
        let users = self.emulator.emulator.users(DIRECTORY);
        let u = users
            .iter()
            .find(|u| u.account_enabled && u.given_name.is_some() && u.user_type == "Member")
            .unwrap();
        self.user = (u.id.clone(), u.user_principal_name.clone());
        self.bind_user(&u.id, &u.user_principal_name, "100", true)
            .await;
    }

    pub async fn bind_user(&self, oid: &str, upn: &str, extension: &str, enabled: bool) {
        let entry = DirectoryUser {
            tenant_id: acme(),
            oid: oid.into(),
            upn: upn.into(),
            pbx_user_id: format!("pbx-{extension}"),
            extension: Some(extension.into()),
            display_name: format!("User {extension}"),
            email: Some(upn.into()),
            role: ms365_gateway::store::Role::User,
            enabled,
            source: "sync".into(),
        };
        self.store.upsert_directory_user(&entry).await.unwrap();
    }

    pub async fn settings(&self, change: impl FnOnce(&mut Ms365Settings)) {
        let mut s = self.store.ms365_settings(&acme()).await.unwrap();
        change(&mut s);
        self.store.save_ms365_settings(&acme(), &s).await.unwrap();
    }

    /// A browser signed in as the tenant's first user on the PBX listener.
    pub async fn signed_in_browser(&self) -> Browser {
        let b = self.browser();
        b.login(
            "https://pbx.test/ms365/login?domain=acme.test",
            &self.user.1,
        )
        .await;
        b
    }

    pub fn browser(&self) -> Browser {
        let mut hosts = BTreeMap::new();
        hosts.insert("pbx.test".to_string(), self.gateway.pbx());
        hosts.insert("sbc.test".to_string(), self.gateway.sbc());
        Browser {
            hosts,
            roots: self.setup.ca.roots(),
            jar: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }
}

impl Browser {
    /// A browser reaching `pbx.test` at `pbx` and `sbc.test` at `sbc`, trusting `ca`, with
    /// the cookie jar `jar` (share one jar between browsers to play one user whose requests
    /// land on different gateway instances).
    pub fn reaching(
        pbx: SocketAddr,
        sbc: SocketAddr,
        ca: &crate::common::TestCa,
        jar: Arc<Mutex<BTreeMap<(String, String), String>>>,
    ) -> Browser {
        let hosts = BTreeMap::from([("pbx.test".to_string(), pbx), ("sbc.test".to_string(), sbc)]);
        Browser {
            hosts,
            roots: ca.roots(),
            jar,
        }
    }
}

/// What a response looked like to the browser.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> String {
        self.headers
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A cookie-keeping client that never follows redirects.
#[derive(Clone)]
pub struct Browser {
    hosts: BTreeMap<String, SocketAddr>,
    roots: rustls::RootCertStore,
    pub jar: Arc<Mutex<BTreeMap<(String, String), String>>>,
}

impl Browser {
    pub async fn get(&self, url: &str) -> Page {
        self.request("GET", url, &[], None).await
    }

    /// Sends to the gateway (TLS, by host name) or to the emulator (plain HTTP).
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Page {
        let parsed = reqwest::Url::parse(url).unwrap();
        let host = parsed.host_str().unwrap().to_string();
        match self.hosts.get(&host) {
            Some(addr) => {
                self.gateway_request(*addr, &host, &parsed, method, headers, body)
                    .await
            }
            None => emulator_request(url).await,
        }
    }

    async fn gateway_request(
        &self,
        addr: SocketAddr,
        host: &str,
        url: &reqwest::Url,
        method: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Page {
        let mut sender = client::h1(addr, host, &self.roots).await;
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let authority = url
            .port()
            .map_or(host.to_string(), |p| format!("{host}:{p}"));
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", authority);
        let cookies = self.cookie_header(host).await;
        if !cookies.is_empty() {
            req = req.header("cookie", cookies);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body: ReqBody = body.map(client::body).unwrap_or_else(client::empty);
        let (parts, text) = client::fetch(&mut sender, req.body(body).unwrap()).await;
        self.store_cookies(host, &parts.headers).await;
        Page {
            status: parts.status,
            headers: parts.headers,
            body: text,
        }
    }

    async fn cookie_header(&self, host: &str) -> String {
        let jar = self.jar.lock().await;
        jar.iter()
            .filter(|((h, _), _)| h == host)
            .map(|((_, n), v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn store_cookies(&self, host: &str, headers: &HeaderMap) {
        let mut jar = self.jar.lock().await;
        for set in headers.get_all("set-cookie") {
            let text = set.to_str().unwrap();
            let (pair, attrs) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            assert!(
                name.starts_with("__Host-"),
                "gateway cookies are __Host-: {text}"
            );
            assert!(
                attrs.contains("Secure") && attrs.contains("HttpOnly") && attrs.contains("Path=/"),
                "{text}"
            );
            assert!(!attrs.contains("Domain"), "host-only: {text}");
            if attrs.contains("Max-Age=0") {
                jar.remove(&(host.to_string(), name.to_string()));
            } else {
                jar.insert((host.to_string(), name.to_string()), value.to_string());
            }
        }
    }

    /// Starts a login and has the emulator sign `upn` in; returns the redirect back.
    pub async fn login_until_redirect(&self, start: &str, upn: &str) -> String {
        let started = self.get(start).await;
        assert_eq!(started.status, StatusCode::FOUND, "{}", started.body);
        let authorize = format!("{}&login_hint={}", started.location(), urlencode(upn));
        let at_microsoft = self.get(&authorize).await;
        assert_eq!(
            at_microsoft.status,
            StatusCode::FOUND,
            "emulator refused: {}",
            at_microsoft.body
        );
        at_microsoft.location()
    }

    /// A whole login; returns the final redirect page from the gateway.
    pub async fn login(&self, start: &str, upn: &str) -> Page {
        let back = self.login_until_redirect(start, upn).await;
        self.get(&back).await
    }

    pub async fn cookie(&self, host: &str, name: &str) -> Option<String> {
        self.jar
            .lock()
            .await
            .get(&(host.to_string(), name.to_string()))
            .cloned()
    }
}

async fn emulator_request(url: &str) -> Page {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = http.get(url).send().await.unwrap();
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    let mut headers = HeaderMap::new();
    for (k, v) in r.headers() {
        headers.append(
            http::HeaderName::from_bytes(k.as_str().as_bytes()).unwrap(),
            http::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    Page {
        status,
        headers,
        body: r.text().await.unwrap(),
    }
}

pub fn urlencode(s: &str) -> String {
    let mut u = reqwest::Url::parse("http://x/").unwrap();
    u.query_pairs_mut().append_pair("v", s);
    u.query().unwrap()[2..].to_string()
}

fn jwt_part(jwt: &str, i: usize) -> Value {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwt.split('.').nth(i).unwrap())
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

#[tokio::test]
async fn full_login_on_the_pbx_listener_lands_on_the_portal_with_a_verifiable_session() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let b = w.browser();
    let done = b
        .login(
            "https://pbx.test/ms365/login?domain=acme.test&client=portal",
            &w.user.1,
        )
        .await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert_eq!(done.location(), "/portal/");
    assert!(b.cookie("pbx.test", "__Host-pbx_session").await.is_some());
    let session = b
        .request(
            "GET",
            "https://pbx.test/ms365/session",
            &[("sec-fetch-site", "same-origin")],
            None,
        )
        .await;
    assert_eq!(session.status, StatusCode::OK, "{}", session.body);
    let s = session.json();
    assert_eq!(s["extension"], "100");
    assert_eq!(s["domain"], "acme.test");
    assert_eq!(s["token_type"], "Bearer");
    let token = s["access_token"].as_str().unwrap();
    let jwks = b.get("https://pbx.test/ms365/jwks.json").await.json();
    let header = jwt_part(token, 0);
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == header["kid"])
            .expect("kid published")
            .clone(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["portal"]);
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], "pbx-100");
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["extension"], "100");
    assert_eq!(claims["role"], "user");
}

#[tokio::test]
async fn webrtc_login_on_the_sbc_listener_uses_the_sbc_redirect_uri() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let b = w.browser();
    let started = b
        .get("https://sbc.test:8883/ms365/login?domain=acme.test&client=webrtc")
        .await;
    let authorize = reqwest::Url::parse(&started.location()).unwrap();
    let redirect_uri = authorize
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .unwrap()
        .1
        .into_owned();
    assert_eq!(
        redirect_uri, SBC_REDIRECT,
        "built from the listener's public_url, not Host"
    );
    let done = b
        .login(
            "https://sbc.test:8883/ms365/login?domain=acme.test&client=webrtc",
            &w.user.1,
        )
        .await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert_eq!(done.location(), "/webrtc/");
    assert!(b.cookie("sbc.test", "__Host-pbx_session").await.is_some());
    assert!(
        b.cookie("pbx.test", "__Host-pbx_session").await.is_none(),
        "host-only cookie"
    );
}

#[tokio::test]
async fn an_unregistered_redirect_uri_shows_aadsts50011() {
    let w = SsoWorld::new(WorldOptions {
        redirect_uris: &[PBX_REDIRECT],
        ..Default::default()
    })
    .await;
    let b = w.browser();
    let started = b
        .get("https://sbc.test:8883/ms365/login?domain=acme.test&client=webrtc")
        .await;
    let page = b
        .get(&format!(
            "{}&login_hint={}",
            started.location(),
            urlencode(&w.user.1)
        ))
        .await;
    assert_ne!(page.status, StatusCode::FOUND);
    assert!(page.body.contains("AADSTS50011"), "{}", page.body);
}

#[tokio::test]
async fn identity_headers_reach_the_pbx_and_spoofed_ones_and_gateway_cookies_do_not() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let b = w.signed_in_browser().await;
    b.jar
        .lock()
        .await
        .insert(("pbx.test".into(), "app".into()), "keep".into());
    let seen = b
        .request(
            "GET",
            "https://pbx.test/headers",
            &[("x-pbx-user", "admin"), ("x_pbx_role", "admin")],
            None,
        )
        .await
        .json();
    let h = &seen["headers"];
    assert_eq!(h["x-pbx-user"], serde_json::json!(["pbx-100"]));
    assert_eq!(h["x-pbx-role"], serde_json::json!(["user"]));
    assert_eq!(h["x-pbx-extension"], serde_json::json!(["100"]));
    assert_eq!(h["x-pbx-tenant"], serde_json::json!(["acme"]));
    assert_eq!(h["x-pbx-domain"], serde_json::json!(["acme.test"]));
    assert!(h.get("x_pbx_role").is_none());
    assert_eq!(
        h["cookie"],
        serde_json::json!(["app=keep"]),
        "gateway cookies removed"
    );
    let anonymous = w
        .browser()
        .request(
            "GET",
            "https://pbx.test/headers",
            &[("x-pbx-user", "admin")],
            None,
        )
        .await
        .json();
    assert!(anonymous["headers"].get("x-pbx-user").is_none());
}

/// `forward_session_token = true`: the PBX gets the session's own token as the one bearer,
/// next to the identity headers; a client that sends its own credentials keeps them.
#[tokio::test]
async fn the_session_token_is_the_bearer_when_configured() {
    let w = SsoWorld::with_sso("forward_session_token = true").await;
    let b = w.signed_in_browser().await;
    let seen = b
        .request("GET", "https://pbx.test/headers", &[], None)
        .await
        .json();
    let h = &seen["headers"];
    let bearer = h["authorization"]
        .as_array()
        .expect("an authorization header");
    assert_eq!(bearer.len(), 1, "{bearer:?}");
    let token = (bearer[0].as_str().unwrap())
        .strip_prefix("Bearer ")
        .expect("a bearer token");
    assert_eq!(jwt_part(token, 1)["sub"], "pbx-100");
    assert_eq!(h["x-pbx-user"], serde_json::json!(["pbx-100"]));
    let own = (b.request(
        "GET",
        "https://pbx.test/headers",
        &[("authorization", "Basic b3du")],
        None,
    ))
    .await
    .json();
    assert_eq!(
        own["headers"]["authorization"],
        serde_json::json!(["Basic b3du"])
    );
    assert_eq!(own["headers"]["x-pbx-user"], serde_json::json!(["pbx-100"]));
}

#[tokio::test]
async fn protected_paths_send_browsers_to_sign_in_and_api_calls_get_401() {
    let w = SsoWorld::with_sso("protected_paths = [\"/portal/\"]").await;
    let b = w.browser();
    let nav = b
        .request(
            "GET",
            "https://pbx.test/portal/index.html",
            &[("accept", "text/html"), ("sec-fetch-mode", "navigate")],
            None,
        )
        .await;
    assert_eq!(nav.status, StatusCode::FOUND);
    assert!(
        nav.location()
            .starts_with("/ms365/?return_to=%2Fportal%2Findex.html"),
        "{}",
        nav.location()
    );
    let api = b
        .request(
            "GET",
            "https://pbx.test/portal/api/x",
            &[("accept", "application/json")],
            None,
        )
        .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    let ws = b
        .request(
            "GET",
            "https://pbx.test/portal/ws",
            &[("upgrade", "websocket"), ("connection", "upgrade")],
            None,
        )
        .await;
    assert_eq!(
        ws.status,
        StatusCode::UNAUTHORIZED,
        "never a redirect for WebSocket"
    );
    b.login("https://pbx.test/ms365/login?domain=acme.test", &w.user.1)
        .await;
    let after = b
        .request(
            "GET",
            "https://pbx.test/portal/index.html",
            &[("accept", "text/html")],
            None,
        )
        .await;
    assert_eq!(after.status, StatusCode::NOT_FOUND, "reached the stub PBX");
}

#[tokio::test]
async fn state_problems_are_refused_and_nothing_is_issued() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let b = w.browser();
    let back = b
        .login_until_redirect("https://pbx.test/ms365/login?domain=acme.test", &w.user.1)
        .await;
    let tampered_state = back.replace("state=", "state=x");
    let page = b.get(&tampered_state).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("FLOW_MISSING"), "{}", page.body);
    let stranger = w.browser();
    let page = stranger.get(&back).await;
    assert_eq!(
        page.status,
        StatusCode::BAD_REQUEST,
        "another browser has no flow cookie"
    );
    let ok = b.get(&back).await;
    assert_eq!(ok.status, StatusCode::FOUND, "{}", ok.body);
    let replay = b.get(&back).await;
    assert_eq!(
        replay.status,
        StatusCode::BAD_REQUEST,
        "flow cookie was cleared"
    );
    assert!(
        !b.jar
            .lock()
            .await
            .keys()
            .any(|(_, n)| n.starts_with("__Host-ms365_flow_"))
    );
}

#[tokio::test]
async fn a_replayed_state_with_its_cookie_is_refused() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let b = w.browser();
    let back = b
        .login_until_redirect("https://pbx.test/ms365/login?domain=acme.test", &w.user.1)
        .await;
    let copy = b.jar.lock().await.clone();
    assert_eq!(b.get(&back).await.status, StatusCode::FOUND);
    let attacker = w.browser();
    *attacker.jar.lock().await = copy;
    attacker
        .jar
        .lock()
        .await
        .retain(|(_, n), _| n.starts_with("__Host-ms365_flow_"));
    let page = attacker.get(&back).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("FLOW_REPLAYED"), "{}", page.body);
    assert!(
        attacker
            .cookie("pbx.test", "__Host-pbx_session")
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_tampered_flow_cookie_is_refused() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let b = w.browser();
    let back = b
        .login_until_redirect("https://pbx.test/ms365/login?domain=acme.test", &w.user.1)
        .await;
    for value in b.jar.lock().await.values_mut() {
        value.replace_range(10..11, if &value[10..11] == "A" { "B" } else { "A" });
    }
    let page = b.get(&back).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("FLOW_INVALID"), "{}", page.body);
}

#[tokio::test]
async fn a_reused_code_shows_aadsts54005() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let b = w.browser();
    let first = b
        .login_until_redirect("https://pbx.test/ms365/login?domain=acme.test", &w.user.1)
        .await;
    assert_eq!(b.get(&first).await.status, StatusCode::FOUND);
    let second = b
        .login_until_redirect("https://pbx.test/ms365/login?domain=acme.test", &w.user.1)
        .await;
    let old_code = reqwest::Url::parse(&first)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let new_state = reqwest::Url::parse(&second)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let page = b
        .get(&format!(
            "{PBX_REDIRECT}?code={}&state={}",
            urlencode(&old_code),
            urlencode(&new_state)
        ))
        .await;
    assert!(page.body.contains("AADSTS54005"), "{}", page.body);
    assert!(page.body.contains("Try again"), "{}", page.body);
}

#[tokio::test]
async fn microsoft_errors_are_shown_with_code_hint_and_retry() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let b = w.browser();
    let back = b
        .login_until_redirect("https://pbx.test/ms365/login?domain=acme.test", &w.user.1)
        .await;
    let state = reqwest::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let url = format!(
        "{PBX_REDIRECT}?error=invalid_client&error_description={}&state={}",
        urlencode("AADSTS700027: Client assertion contains an invalid signature."),
        urlencode(&state)
    );
    let page = b.get(&url).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(
        page.body.contains("AADSTS700027")
            && page.body.contains("public_key.pem")
            && page.body.contains("Try again"),
        "{}",
        page.body
    );
    assert!(b.cookie("pbx.test", "__Host-pbx_session").await.is_none());
}

#[tokio::test]
async fn users_not_synced_disabled_or_out_of_scope_get_no_session() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let others: Vec<_> = w
        .emulator
        .emulator
        .users(DIRECTORY)
        .into_iter()
        .filter(|u| u.account_enabled && u.id != w.user.0 && u.user_type == "Member")
        .take(2)
        .collect();
    let page = w
        .browser()
        .login(
            "https://pbx.test/ms365/login?domain=acme.test",
            &others[0].user_principal_name,
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("USER_NOT_SYNCED"), "{}", page.body);
    w.bind_user(&others[1].id, &others[1].user_principal_name, "101", false)
        .await;
    let page = w
        .browser()
        .login(
            "https://pbx.test/ms365/login?domain=acme.test",
            &others[1].user_principal_name,
        )
        .await;
    assert!(page.body.contains("USER_DISABLED"), "{}", page.body);
    let upn = w.user.1.clone();
    w.settings(|s| {
        s.sign_in_as_standard_user.sync_type = ms365_gateway::settings::SyncType::Exclude;
        s.sign_in_as_standard_user.selected_users = vec![upn];
    })
    .await;
    let page = w
        .browser()
        .login("https://pbx.test/ms365/login?domain=acme.test", &w.user.1)
        .await;
    assert!(page.body.contains("OUT_OF_SCOPE"), "{}", page.body);
}

#[tokio::test]
async fn login_refuses_unknown_domains_disabled_tenants_and_foreign_return_to() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let b = w.browser();
    let json = [("accept", "application/json")];
    let page = b
        .request(
            "GET",
            "https://pbx.test/ms365/login?domain=nobody.test",
            &json,
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert_eq!(page.json()["errors"][0]["code"], "TENANT_NOT_FOUND");
    let page = b
        .request(
            "GET",
            "https://pbx.test/ms365/login?domain=beta.test",
            &json,
            None,
        )
        .await;
    assert_eq!(page.json()["errors"][0]["code"], "NOT_CONFIGURED");
    for evil in [
        "//evil.com",
        "https://evil.com",
        "/\\evil.com",
        "/%2f%2fevil.com",
        "javascript:alert(1)",
    ] {
        let page = b
            .get(&format!(
                "https://pbx.test/ms365/login?domain=acme.test&return_to={}",
                urlencode(evil)
            ))
            .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{evil}");
        assert!(page.location().is_empty());
    }
    w.settings(|s| s.sign_in_as_standard_user.enabled = false)
        .await;
    let page = b
        .request(
            "GET",
            "https://pbx.test/ms365/login?domain=acme.test",
            &json,
            None,
        )
        .await;
    assert_eq!(page.json()["errors"][0]["code"], "SSO_DISABLED");
}

#[tokio::test]
async fn return_to_is_honoured_after_sign_in() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let page = w
        .browser()
        .login(
            "https://pbx.test/ms365/login?domain=acme.test&return_to=%2Fportal%2F%23%2Fcontacts",
            &w.user.1,
        )
        .await;
    assert_eq!(page.location(), "/portal/#/contacts");
}

#[tokio::test]
async fn portsip_login_by_microsoft_form_starts_the_same_flow() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let b = w.browser();
    let page = b
        .request(
            "POST",
            "https://pbx.test/api/login/by_microsoft",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some("domain=acme.test".into()),
        )
        .await;
    assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    assert!(
        page.location().contains("/oauth2/v2.0/authorize?"),
        "{}",
        page.location()
    );
}

#[tokio::test]
async fn twenty_parallel_logins_in_one_cookie_jar_all_complete() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let b = w.browser();
    let mut backs = Vec::new();
    for _ in 0..20 {
        backs.push(
            b.login_until_redirect("https://pbx.test/ms365/login?domain=acme.test", &w.user.1)
                .await,
        );
    }
    backs.reverse();
    for back in backs {
        let page = b.get(&back).await;
        assert_eq!(page.status, StatusCode::FOUND, "{}", page.body);
    }
    assert!(
        !b.jar
            .lock()
            .await
            .keys()
            .any(|(_, n)| n.starts_with("__Host-ms365_flow_")),
        "no flow cookies left behind"
    );
}

#[tokio::test]
async fn info_endpoints_tell_clients_to_show_the_microsoft_icon() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let b = w.browser();
    let info = b
        .get("https://pbx.test/ms365/info?domain=acme.test")
        .await
        .json();
    assert_eq!(info["enable_ms365_integration"], true);
    assert!(
        info["ms365_authorization_endpoint"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/{DIRECTORY}/oauth2/v2.0/authorize"))
    );
    let off = b
        .get("https://pbx.test/ms365/info?domain=beta.test")
        .await
        .json();
    assert_eq!(off["enable_ms365_integration"], false);
    let page = b.get("https://pbx.test/ms365/?domain=acme.test").await;
    assert!(page.body.contains("Sign in with Microsoft"));
    let page = b.get("https://pbx.test/ms365/?domain=beta.test").await;
    assert!(!page.body.contains("Sign in with Microsoft"));
}

#[tokio::test]
async fn sign_in_endpoints_are_rate_limited_per_client() {
    let w = SsoWorld::with_sso("login_rate_per_minute = 3").await;
    let b = w.browser();
    for _ in 0..3 {
        assert_eq!(
            b.get("https://pbx.test/ms365/login?domain=acme.test")
                .await
                .status,
            StatusCode::FOUND
        );
    }
    let limited = b.get("https://pbx.test/ms365/login?domain=acme.test").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers.contains_key("retry-after"));
    let session = b.get("https://pbx.test/ms365/session").await;
    assert_eq!(
        session.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the session endpoint shares the limit"
    );
}

#[tokio::test]
async fn a_session_of_one_tenant_is_not_handed_out_for_another() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let b = w.signed_in_browser().await;
    let own = b
        .get("https://pbx.test/ms365/session?domain=acme.test")
        .await;
    assert_eq!(own.status, StatusCode::OK);
    let other = b
        .get("https://pbx.test/ms365/session?domain=beta.test")
        .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert_eq!(other.json()["errors"][0]["code"], "WRONG_TENANT");
}

#[tokio::test]
async fn logout_ends_the_session_everywhere_it_was_used() {
    let w = SsoWorld::new(WorldOptions::default()).await;
    let b = w.signed_in_browser().await;
    let cookie = b.cookie("pbx.test", "__Host-pbx_session").await.unwrap();
    let out = b.get("https://pbx.test/ms365/logout").await;
    assert_eq!(out.status, StatusCode::FOUND);
    assert!(
        b.cookie("pbx.test", "__Host-pbx_session").await.is_none(),
        "cookie cleared"
    );
    let stale = w.browser();
    stale
        .jar
        .lock()
        .await
        .insert(("pbx.test".into(), "__Host-pbx_session".into()), cookie);
    assert_eq!(
        stale.get("https://pbx.test/ms365/session").await.status,
        StatusCode::UNAUTHORIZED
    );
    let seen = stale.get("https://pbx.test/headers").await.json();
    assert!(
        seen["headers"].get("x-pbx-user").is_none(),
        "a revoked session carries no identity"
    );
}

#[tokio::test]
async fn logout_can_also_sign_out_at_microsoft_and_come_back() {
    let w = SsoWorld::with_sso("end_session_at_microsoft = true").await;
    let b = w.signed_in_browser().await;
    let out = b.get("https://pbx.test/ms365/logout").await;
    assert_eq!(out.status, StatusCode::FOUND);
    let location = reqwest::Url::parse(&out.location()).expect("absolute URL at Microsoft");
    assert!(
        location
            .path()
            .ends_with(&format!("/{DIRECTORY}/oauth2/v2.0/logout")),
        "{location}"
    );
    let back = location
        .query_pairs()
        .find(|(k, _)| k == "post_logout_redirect_uri")
        .unwrap()
        .1
        .into_owned();
    assert_eq!(back, PBX_REDIRECT);
    assert!(b.cookie("pbx.test", "__Host-pbx_session").await.is_none());
    let returned = b.get(&back).await;
    assert_eq!(returned.status, StatusCode::FOUND);
    assert_eq!(returned.location(), "/ms365/?logged_out=1");
}
