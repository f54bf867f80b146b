//! [`PbxClient`]: one tenant's PortSIP REST API, signed in as the tenant's PBX
//! administrator. Every request goes through one path: a permit of the tenant's semaphore
//! (`[pbx] concurrency` requests in flight), a fresh bearer token (see `session`), the retry
//! policy (see `retry`: 5xx, 429 and connection failures are retried with backoff, a
//! creation only when the PBX provably did not act on it), and on a 401 one new sign-in and
//! one more try, because a token can end early (the PBX restarted, an administrator ended
//! the session). Requests are logged at debug level by method, path and status; bodies,
//! tokens and passwords never are.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, Semaphore, SemaphorePermit};

use super::answer::{check, decode, segment};
use super::error::PbxError;
use super::retry::{Repeat, RetryPolicy, Verdict};
use super::session::Held;
use super::wire::{
    Binding, ContactFields, Created, ListPage, NewUser, PasswordChange, PbxContactRecord,
    PbxUserRecord, UserUpdate,
};
use crate::config::{PbxConfig, PbxLogin};

/// PortSIP's largest page.
pub const PAGE_SIZE: usize = 100;
/// A listing that has not ended after this many pages (a million objects) is a PBX that
/// ignores `skip`, not a tenant.
const MAX_PAGES: usize = 10_000;

/// Counters of one client (all clones of it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PbxStats {
    /// HTTP requests sent, retries, sign-ins and refreshes included.
    pub requests: u64,
    /// Requests sent again after a 5xx, 429 or connection failure.
    pub retries: u64,
    /// 429 answers.
    pub throttled: u64,
    /// `POST /login` exchanges (each with its own retries).
    pub sign_ins: u64,
    /// `POST /auth/refresh_token` exchanges.
    pub refreshes: u64,
    /// Attempts by operation (`POST /users/{id}`: ids templated) and outcome (`ok`,
    /// `client_error`, `server_error`, `throttled`, `timeout`, `unreachable`).
    pub by_operation: std::collections::BTreeMap<(String, &'static str), u64>,
}

#[derive(Default)]
pub(super) struct Counter(AtomicU64);

impl Counter {
    pub(super) fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub(super) struct Counters {
    pub requests: Counter,
    pub retries: Counter,
    pub throttled: Counter,
    pub sign_ins: Counter,
    pub refreshes: Counter,
    pub by_operation: std::sync::Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
}

impl Counters {
    fn attempt(&self, operation: String, outcome: &'static str) {
        let mut map = self.by_operation.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((operation, outcome)).or_default() += 1;
    }
}

pub(super) struct Inner {
    pub http: reqwest::Client,
    pub api_url: Url,
    pub login: PbxLogin,
    pub domain: String,
    pub session: Mutex<Option<Held>>,
    pub permits: Semaphore,
    pub counters: Counters,
}

/// One tenant's PBX; cheap to clone (clones share the session, the permits and counters).
#[derive(Clone)]
pub struct PbxClient {
    pub(super) inner: Arc<Inner>,
    policy: RetryPolicy,
}

impl std::fmt::Debug for PbxClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PbxClient")
            .field("api_url", &self.inner.api_url.as_str())
            .field("username", &self.inner.login.username)
            .field("domain", &self.inner.domain)
            .finish_non_exhaustive()
    }
}

/// One request as the retry loop needs it to send it again. No `Debug`: the body of a
/// sign-in holds the password.
pub(super) struct Req {
    pub method: Method,
    pub url: Url,
    /// `POST /users/{id}`, for logs and errors.
    pub what: String,
    pub body: Option<Bytes>,
    pub repeat: Repeat,
}

impl Req {
    fn new(method: Method, url: Url, repeat: Repeat) -> Req {
        let what = format!("{method} {}", url.path());
        Req {
            method,
            url,
            what,
            body: None,
            repeat,
        }
    }

    pub(super) fn json<B: Serialize>(
        method: Method,
        url: Url,
        body: &B,
        repeat: Repeat,
    ) -> Result<Req, PbxError> {
        let bytes = serde_json::to_vec(body).map_err(|e| PbxError::Protocol(e.to_string()))?;
        Ok(Req {
            body: Some(Bytes::from(bytes)),
            ..Req::new(method, url, repeat)
        })
    }
}

/// The HTTP client `[pbx]` asks for: rustls with the system roots plus `ca_file`,
/// `request_timeout` per request, no redirects (a redirected request would carry the bearer
/// token elsewhere). Shared by the connector and the users' own PBX sessions.
pub fn http_client(config: &PbxConfig) -> Result<reqwest::Client, PbxError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
        .timeout(config.request_timeout)
        .user_agent(concat!("ms365-gateway/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &config.ca_file {
        let setup = |e: &dyn std::fmt::Display| {
            PbxError::Setup(format!("[pbx] ca_file {}: {e}", path.display()))
        };
        let pem = std::fs::read(path).map_err(|e| setup(&e))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| setup(&e))?;
        if certs.is_empty() {
            return Err(setup(&"no PEM certificate in the file"));
        }
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| PbxError::Setup(super::retry::error_chain(&e)))
}

impl PbxClient {
    /// The client of `[pbx]` for a tenant signing in with `login` on `domain` (on
    /// [`http_client`]).
    pub fn new(config: &PbxConfig, login: PbxLogin, domain: String) -> Result<PbxClient, PbxError> {
        Ok(PbxClient::with_http(
            http_client(config)?,
            config.api_url.clone(),
            login,
            domain,
            config.concurrency,
        ))
    }

    /// A client on a given HTTP client (tests and benchmarks set their own timeouts).
    pub fn with_http(
        http: reqwest::Client,
        api_url: Url,
        login: PbxLogin,
        domain: String,
        concurrency: usize,
    ) -> PbxClient {
        PbxClient {
            inner: Arc::new(Inner {
                http,
                api_url,
                login,
                domain,
                session: Mutex::new(None),
                permits: Semaphore::new(concurrency.max(1)),
                counters: Counters::default(),
            }),
            policy: RetryPolicy::default(),
        }
    }

    /// The first backoff step (default 200 ms), doubled per attempt; tests make it short.
    pub fn with_backoff_base(mut self, base: Duration) -> PbxClient {
        self.policy.base = base;
        self
    }

    pub fn api_url(&self) -> &Url {
        &self.inner.api_url
    }

    pub fn stats(&self) -> PbxStats {
        let c = &self.inner.counters;
        PbxStats {
            requests: c.requests.get(),
            retries: c.retries.get(),
            throttled: c.throttled.get(),
            sign_ins: c.sign_ins.get(),
            refreshes: c.refreshes.get(),
            by_operation: (c.by_operation.lock())
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Signs in now, replacing any session (the connection test); other calls sign in
    /// when they need to.
    pub async fn sign_in(&self) -> Result<(), PbxError> {
        let _permit = self.permit().await?;
        let obtained = crate::store::now_epoch();
        let token = self.sign_in_now().await?;
        *self.inner.session.lock().await = Some(Held::new(token, obtained));
        Ok(())
    }

    /// How many users the PBX holds (`GET /users?top=1`): the cheap check for changes.
    pub async fn count_users(&self) -> Result<u64, PbxError> {
        let page: ListPage<PbxUserRecord> = self.page("users", 1, 0).await?;
        Ok(page.count.unwrap_or(page.items.len() as u64))
    }

    /// Every user of the tenant, [`PAGE_SIZE`] a page.
    pub async fn list_users(&self) -> Result<Vec<PbxUserRecord>, PbxError> {
        self.list_all("users").await
    }

    /// Every company contact of the tenant.
    pub async fn list_contacts(&self) -> Result<Vec<PbxContactRecord>, PbxError> {
        self.list_all("contacts").await
    }

    /// `GET /users/{id}`; `None` when the PBX has no such user.
    pub async fn get_user(&self, id: &str) -> Result<Option<PbxUserRecord>, PbxError> {
        let req = Req::new(
            Method::GET,
            self.endpoint(&format!("users/{}", segment(id)?))?,
            Repeat::Safe,
        );
        match self.call(&req).await {
            Ok(response) => decode(response, &req.what).await.map(Some),
            Err(PbxError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /users`; the new user's id. Not repeated after a timeout: see `retry`.
    pub async fn create_user(&self, user: &NewUser) -> Result<String, PbxError> {
        self.create("users", user).await
    }

    /// `POST /users/{id}`: only the fields `update` carries change.
    pub async fn update_user(&self, id: &str, update: &UserUpdate) -> Result<(), PbxError> {
        self.post(&format!("users/{}", segment(id)?), Some(update))
            .await
    }

    /// `POST /users/{id} {password}`: sets a user's login password (see [`PasswordChange`]).
    pub async fn set_password(&self, id: &str, password: &str) -> Result<(), PbxError> {
        let body = PasswordChange { password };
        self.post(&format!("users/{}", segment(id)?), Some(&body))
            .await
    }

    /// `POST /users/{id}/destroy`.
    pub async fn destroy_user(&self, id: &str) -> Result<(), PbxError> {
        self.post::<()>(&format!("users/{}/destroy", segment(id)?), None)
            .await
    }

    /// Binds the PBX user to a Microsoft 365 user (OID or UPN).
    pub async fn bind_ms365(&self, id: &str, oid: &str) -> Result<(), PbxError> {
        let path = format!("users/{}/ms365_binding", segment(id)?);
        self.post(&path, Some(&Binding { id: oid })).await
    }

    /// `POST /contacts` with the fields the contact has (PortSIP's `minLength` on `name`
    /// refuses empty strings); the new contact's id.
    pub async fn create_contact(&self, contact: &ContactFields) -> Result<String, PbxError> {
        self.create("contacts", &present_fields(contact)).await
    }

    /// `POST /contacts/{id}` with every field (an empty one clears what the PBX had).
    pub async fn update_contact(&self, id: &str, contact: &ContactFields) -> Result<(), PbxError> {
        self.post(&format!("contacts/{}", segment(id)?), Some(contact))
            .await
    }

    /// `POST /contacts/{id}/destroy`.
    pub async fn destroy_contact(&self, id: &str) -> Result<(), PbxError> {
        self.post::<()>(&format!("contacts/{}/destroy", segment(id)?), None)
            .await
    }

    async fn list_all<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, PbxError> {
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let page: ListPage<T> = self.page(path, PAGE_SIZE, out.len()).await?;
            let got = page.items.len();
            out.extend(page.items);
            // A short page ends the list even when `count` says more: the list shrank
            // while it was read, and asking again would loop.
            if got < PAGE_SIZE || page.count.is_some_and(|c| out.len() as u64 >= c) {
                return Ok(out);
            }
        }
        Err(PbxError::Protocol(format!(
            "GET /{path} did not end after {MAX_PAGES} pages"
        )))
    }

    async fn page<T: DeserializeOwned>(
        &self,
        path: &str,
        top: usize,
        skip: usize,
    ) -> Result<ListPage<T>, PbxError> {
        let mut url = self.endpoint(path)?;
        url.query_pairs_mut()
            .append_pair("top", &top.to_string())
            .append_pair("skip", &skip.to_string());
        let req = Req::new(Method::GET, url, Repeat::Safe);
        let response = self.call(&req).await?;
        decode(response, &req.what).await
    }

    /// A creation: an answer that cannot be read leaves the outcome unknown, like a timeout.
    async fn create<B: Serialize>(&self, path: &str, body: &B) -> Result<String, PbxError> {
        let req = Req::json(Method::POST, self.endpoint(path)?, body, Repeat::Once)?;
        let response = self.call(&req).await?;
        let unknown = |reason: String| PbxError::OutcomeUnknown {
            what: req.what.clone(),
            reason,
        };
        match decode::<Created>(response, &req.what).await {
            Ok(created) if !created.id.is_empty() => Ok(created.id),
            Ok(_) => Err(unknown("the answer has no id".into())),
            Err(e) => Err(unknown(e.to_string())),
        }
    }

    /// A POST whose answer body is not needed (updates, bindings, destroys).
    async fn post<B: Serialize>(&self, path: &str, body: Option<&B>) -> Result<(), PbxError> {
        let url = self.endpoint(path)?;
        let req = match body {
            Some(b) => Req::json(Method::POST, url, b, Repeat::Safe)?,
            None => Req::new(Method::POST, url, Repeat::Safe),
        };
        self.call(&req).await.map(drop)
    }

    /// One API request: permit, token, retries, and one new sign-in on a 401.
    async fn call(&self, req: &Req) -> Result<reqwest::Response, PbxError> {
        let _permit = self.permit().await?;
        let token = self.bearer().await?;
        let response = self.send(req, Some(&token)).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return check(response, &req.what).await;
        }
        self.invalidate(&token).await;
        let token = self.bearer().await?;
        let response = self.send(req, Some(&token)).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let reason = format!("HTTP 401 to {} right after a new sign-in", req.what);
            return Err(self.refused(reason));
        }
        check(response, &req.what).await
    }

    /// Sends `req` until the retry policy hands over an answer or gives up.
    pub(super) async fn send(
        &self,
        req: &Req,
        token: Option<&str>,
    ) -> Result<reqwest::Response, PbxError> {
        let mut attempt = 0;
        loop {
            self.inner.counters.requests.bump();
            let outcome = self.request(req, token).send().await;
            let operation = operation(&req.method, self.inner.api_url.path(), req.url.path());
            (self.inner.counters).attempt(operation, attempt_outcome(&outcome));
            let wait = match self.verdict(&outcome, req, attempt) {
                Verdict::Answer => return outcome.map_err(|e| self.unreachable(e.to_string())),
                Verdict::Retry(wait) => wait,
                Verdict::Timeout => {
                    let what = req.what.clone();
                    return Err(PbxError::Timeout { what });
                }
                Verdict::Unknown(reason) => {
                    let what = req.what.clone();
                    return Err(PbxError::OutcomeUnknown { what, reason });
                }
                Verdict::Unreachable(reason) => return Err(self.unreachable(reason)),
            };
            self.inner.counters.retries.bump();
            attempt += 1;
            tokio::time::sleep(wait).await;
        }
    }

    fn request(&self, req: &Req, token: Option<&str>) -> reqwest::RequestBuilder {
        let mut builder = (self.inner.http).request(req.method.clone(), req.url.clone());
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        if let Some(body) = &req.body {
            builder = builder
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        builder
    }

    /// Logs one attempt (method, path, status or error; never headers or bodies) and
    /// judges it.
    fn verdict(
        &self,
        outcome: &Result<reqwest::Response, reqwest::Error>,
        req: &Req,
        attempt: u32,
    ) -> Verdict {
        let (method, path) = (&req.method, req.url.path());
        match outcome {
            Ok(r) => {
                let status = r.status().as_u16();
                tracing::debug!(%method, path, status, attempt, "PBX request");
                if r.status() == StatusCode::TOO_MANY_REQUESTS {
                    self.inner.counters.throttled.bump();
                }
                (self.policy).on_status(r.status(), r.headers(), req.repeat, attempt)
            }
            Err(e) => {
                let error = super::retry::error_chain(e);
                tracing::debug!(%method, path, %error, attempt, "PBX request failed");
                self.policy.on_error(e, req.repeat, attempt)
            }
        }
    }

    async fn permit(&self) -> Result<SemaphorePermit<'_>, PbxError> {
        (self.inner.permits.acquire().await)
            .map_err(|_| PbxError::Local("the PBX client was closed".into()))
    }

    /// `api_url` + `/` + `path` (whose ids are already encoded).
    pub(super) fn endpoint(&self, path: &str) -> Result<Url, PbxError> {
        let base = self.inner.api_url.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/{path}")).map_err(|e| PbxError::Protocol(e.to_string()))
    }

    fn unreachable(&self, reason: String) -> PbxError {
        PbxError::Unreachable {
            url: self.inner.api_url.to_string(),
            reason,
        }
    }
}

/// A new contact carries only the fields it has.
fn present_fields(c: &ContactFields) -> serde_json::Map<String, serde_json::Value> {
    let value = serde_json::to_value(c).unwrap_or_default();
    let mut map = serde_json::Map::new();
    if let serde_json::Value::Object(fields) = value {
        for (k, v) in fields {
            if v.as_str().is_some_and(|s| !s.is_empty()) {
                map.insert(k, v);
            }
        }
    }
    map
}

/// `POST /users/{id}/ms365_binding` for a request to `path` under the API base `base`: the
/// ids replaced, so the metric has one series per kind of call.
pub(super) fn operation(method: &Method, base: &str, path: &str) -> String {
    let rest = path
        .strip_prefix(base.trim_end_matches('/'))
        .unwrap_or(path);
    let mut out = String::new();
    let mut previous = "";
    for segment in rest.split('/').filter(|s| !s.is_empty()) {
        let is_id = matches!(previous, "users" | "contacts")
            && !matches!(
                segment,
                "destroy" | "ms365_binding" | "profile" | "sync_tokens"
            );
        out.push('/');
        out.push_str(if is_id { "{id}" } else { segment });
        previous = segment;
    }
    format!("{method} {out}")
}

/// The outcome label of one attempt.
fn attempt_outcome(outcome: &Result<reqwest::Response, reqwest::Error>) -> &'static str {
    match outcome {
        Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS => "throttled",
        Ok(r) if r.status().is_server_error() => "server_error",
        Ok(r) if r.status().is_client_error() => "client_error",
        Ok(_) => "ok",
        Err(e) if e.is_timeout() => "timeout",
        Err(_) => "unreachable",
    }
}
