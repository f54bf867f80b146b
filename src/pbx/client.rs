//! [`PbxClient`]: one tenant's PortSIP REST API, signed in as the tenant's PBX
//! administrator. The access token is renewed with `/auth/refresh_token` a minute before it
//! expires (falling back to a new `POST /login`), and a 401 signs in again once before the
//! request is retried. 5xx, 429 (`Retry-After`) and connection failures are retried with
//! full-jitter backoff; a timeout is retried only for requests that are safe to repeat,
//! never for a creation (`POST /users`, `POST /contacts`), whose outcome is then unknown and
//! left to the caller. A semaphore keeps `[pbx] concurrency` requests in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, Semaphore};

use super::error::PbxError;
use super::wire::{
    Binding, ContactFields, Created, ErrorBody, ListPage, LoginRequest, NewUser, PbxContactRecord,
    PbxUserRecord, RefreshRequest, TokenAnswer, UserUpdate,
};
use crate::config::{PbxConfig, PbxLogin};
use crate::graph::retry::{backoff, retry_after};
use crate::store::now_epoch;

/// PortSIP's largest page.
pub const PAGE_SIZE: u64 = 100;
/// Attempts of one request (the first included).
const ATTEMPTS: u32 = 5;
/// Renew the token this long before it expires.
const RENEW_BEFORE: i64 = 60;
/// Lifetime assumed when the PBX does not say (PortSIP's default is 30 minutes).
const DEFAULT_LIFETIME: i64 = 1800;

/// An access token and when it expires.
#[derive(Clone)]
pub struct PbxToken {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Epoch seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for PbxToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PbxToken")
            .field("access_token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl From<TokenAnswer> for PbxToken {
    fn from(a: TokenAnswer) -> Self {
        let lifetime = a.expires_in.filter(|s| *s > 0).unwrap_or(DEFAULT_LIFETIME);
        PbxToken {
            access_token: a.access_token,
            refresh_token: a.refresh_token,
            expires_at: now_epoch() + lifetime,
        }
    }
}

/// Counters of one client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PbxStats {
    /// HTTP requests sent, retries and sign-ins included.
    pub requests: u64,
    pub retries: u64,
    /// 429 answers.
    pub throttled: u64,
    pub sign_ins: u64,
    pub refreshes: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    sign_ins: AtomicU64,
    refreshes: AtomicU64,
}

struct Inner {
    http: reqwest::Client,
    api_url: Url,
    login: PbxLogin,
    domain: String,
    token: Mutex<Option<PbxToken>>,
    permits: Semaphore,
    counters: Counters,
    backoff_base: Duration,
}

/// One tenant's PBX; cheap to clone.
#[derive(Clone)]
pub struct PbxClient {
    inner: Arc<Inner>,
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

/// What a request needs to be retried safely.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Reads, updates, bindings, destroys: doing them twice is doing them once.
    Safe,
    /// Creations: a timeout leaves the outcome unknown.
    Once,
}

impl PbxClient {
    /// The client of `[pbx]` for a tenant signing in with `login` on `domain`.
    pub fn new(config: &PbxConfig, login: PbxLogin, domain: String) -> Result<PbxClient, PbxError> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(config.request_timeout)
            .user_agent(concat!("ms365-gateway/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| PbxError::Setup(format!("{}: {e}", path.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| PbxError::Setup(format!("{}: {e}", path.display())))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| PbxError::Setup(e.to_string()))?;
        Ok(PbxClient::with_http(
            http,
            config.api_url.clone(),
            login,
            domain,
            config.concurrency,
        ))
    }

    /// A client on a given HTTP client (tests set their own timeouts).
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
                token: Mutex::new(None),
                permits: Semaphore::new(concurrency.max(1)),
                counters: Counters::default(),
                backoff_base: Duration::from_millis(200),
            }),
        }
    }

    /// Shorter backoff (tests).
    pub fn with_backoff_base(self, base: Duration) -> PbxClient {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| panic!("client not shared yet"));
        PbxClient {
            inner: Arc::new(Inner {
                backoff_base: base,
                ..inner
            }),
        }
    }

    pub fn api_url(&self) -> &Url {
        &self.inner.api_url
    }

    pub fn stats(&self) -> PbxStats {
        let c = &self.inner.counters;
        PbxStats {
            requests: c.requests.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            sign_ins: c.sign_ins.load(Ordering::Relaxed),
            refreshes: c.refreshes.load(Ordering::Relaxed),
        }
    }

    /// Signs in now (the connection test); other calls sign in when they need to.
    pub async fn sign_in(&self) -> Result<(), PbxError> {
        let token = self.login().await?;
        *self.inner.token.lock().await = Some(token);
        Ok(())
    }

    /// How many users the PBX holds (`GET /users?top=1`): the cheap check for changes.
    pub async fn count_users(&self) -> Result<u64, PbxError> {
        let page: ListPage<PbxUserRecord> = self.get("users?top=1&skip=0").await?;
        Ok(page.count.unwrap_or(page.items.len() as u64))
    }

    /// Every user of the tenant, page after page.
    pub async fn list_users(&self) -> Result<Vec<PbxUserRecord>, PbxError> {
        self.list_all("users").await
    }

    /// Every company contact of the tenant.
    pub async fn list_contacts(&self) -> Result<Vec<PbxContactRecord>, PbxError> {
        self.list_all("contacts").await
    }

    pub async fn get_user(&self, id: &str) -> Result<Option<PbxUserRecord>, PbxError> {
        match self.get(&format!("users/{}", segment(id))).await {
            Ok(user) => Ok(Some(user)),
            Err(PbxError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /users`; the new user's id.
    pub async fn create_user(&self, user: &NewUser) -> Result<String, PbxError> {
        let created: Created = self
            .send_json(Method::POST, "users", user, Repeat::Once)
            .await?;
        Ok(created.id)
    }

    pub async fn update_user(&self, id: &str, update: &UserUpdate) -> Result<(), PbxError> {
        let path = format!("users/{}", segment(id));
        self.send_empty(Method::POST, &path, Some(update)).await
    }

    pub async fn destroy_user(&self, id: &str) -> Result<(), PbxError> {
        let path = format!("users/{}/destroy", segment(id));
        self.send_empty::<()>(Method::POST, &path, None).await
    }

    /// Binds the PBX user to a Microsoft 365 user (OID or UPN).
    pub async fn bind_ms365(&self, id: &str, oid: &str) -> Result<(), PbxError> {
        let path = format!("users/{}/ms365_binding", segment(id));
        self.send_empty(Method::POST, &path, Some(&Binding { id: oid }))
            .await
    }

    /// `POST /contacts`; the new contact's id.
    pub async fn create_contact(&self, contact: &ContactFields) -> Result<String, PbxError> {
        let body = present_fields(contact);
        let created: Created = self
            .send_json(Method::POST, "contacts", &body, Repeat::Once)
            .await?;
        Ok(created.id)
    }

    /// Writes every field (an empty one clears what the PBX had).
    pub async fn update_contact(&self, id: &str, contact: &ContactFields) -> Result<(), PbxError> {
        let path = format!("contacts/{}", segment(id));
        self.send_empty(Method::POST, &path, Some(contact)).await
    }

    pub async fn destroy_contact(&self, id: &str) -> Result<(), PbxError> {
        let path = format!("contacts/{}/destroy", segment(id));
        self.send_empty::<()>(Method::POST, &path, None).await
    }

    async fn list_all<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, PbxError> {
        let mut out = Vec::new();
        loop {
            let url = format!("{path}?top={PAGE_SIZE}&skip={}", out.len());
            let page: ListPage<T> = self.get(&url).await?;
            let got = page.items.len() as u64;
            out.extend(page.items);
            let total = page.count.unwrap_or(0);
            if got < PAGE_SIZE || (page.count.is_some() && out.len() as u64 >= total) {
                return Ok(out);
            }
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, PbxError> {
        let response = self.call(Method::GET, path, None, Repeat::Safe).await?;
        decode(response, path).await
    }

    async fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
        repeat: Repeat,
    ) -> Result<T, PbxError> {
        let body = serde_json::to_vec(body).map_err(|e| PbxError::Protocol(e.to_string()))?;
        let response = self.call(method, path, Some(body), repeat).await?;
        decode(response, path).await
    }

    async fn send_empty<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), PbxError> {
        let body = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| PbxError::Protocol(e.to_string()))?),
            None => None,
        };
        self.call(method, path, body, Repeat::Safe).await.map(drop)
    }

    /// One request with the token, re-sign-in on 401 (once) and the retry policy.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        repeat: Repeat,
    ) -> Result<reqwest::Response, PbxError> {
        let url = self.url(path)?;
        let _permit = self.inner.permits.acquire().await.expect("never closed");
        let mut signed_in_again = false;
        let mut attempt = 0;
        loop {
            let token = self.token().await?;
            let request = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(&token.access_token);
            let request = match &body {
                Some(b) => request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone()),
                None => request,
            };
            self.count(&self.inner.counters.requests);
            let outcome = request.send().await;
            tracing::debug!(%method, path, status = ?outcome.as_ref().map(|r| r.status().as_u16()), "PBX request");
            let wait = match outcome {
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED && !signed_in_again => {
                    signed_in_again = true;
                    *self.inner.token.lock().await = None;
                    continue;
                }
                Ok(r) if retryable(r.status()) && attempt + 1 < ATTEMPTS => {
                    if r.status() == StatusCode::TOO_MANY_REQUESTS {
                        self.count(&self.inner.counters.throttled);
                    }
                    retry_after(r.headers()).unwrap_or_else(|| self.backoff(attempt))
                }
                Ok(r) => return check(r, path).await,
                Err(e) if e.is_timeout() && repeat == Repeat::Once => {
                    return Err(PbxError::Timeout {
                        what: format!("{method} /{path}"),
                    });
                }
                Err(e) if attempt + 1 < ATTEMPTS => {
                    tracing::debug!(error = %e, path, "PBX request failed; retrying");
                    self.backoff(attempt)
                }
                Err(e) if e.is_timeout() => {
                    return Err(PbxError::Timeout {
                        what: format!("{method} /{path}"),
                    });
                }
                Err(e) => return Err(self.unreachable(e.to_string())),
            };
            attempt += 1;
            self.count(&self.inner.counters.retries);
            tokio::time::sleep(wait.min(Duration::from_secs(30))).await;
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        backoff(
            self.inner.backoff_base,
            Duration::from_secs(10),
            attempt + 1,
        )
    }

    fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn url(&self, path: &str) -> Result<Url, PbxError> {
        let base = self.inner.api_url.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/{path}")).map_err(|e| PbxError::Protocol(e.to_string()))
    }

    fn unreachable(&self, reason: String) -> PbxError {
        PbxError::Unreachable {
            url: self.inner.api_url.to_string(),
            reason,
        }
    }

    /// A token good for another minute: the held one, a refreshed one, or a new sign-in.
    async fn token(&self) -> Result<PbxToken, PbxError> {
        let mut held = self.inner.token.lock().await;
        if let Some(t) = held.as_ref()
            && t.expires_at - RENEW_BEFORE > now_epoch()
        {
            return Ok(t.clone());
        }
        let refreshed = match held.as_ref().and_then(|t| t.refresh_token.clone()) {
            Some(r) => {
                self.count(&self.inner.counters.refreshes);
                self.count(&self.inner.counters.requests);
                refresh(&self.inner.http, &self.inner.api_url, &r)
                    .await
                    .ok()
            }
            None => None,
        };
        let token = match refreshed {
            Some(t) => t,
            None => self.login().await?,
        };
        *held = Some(token.clone());
        Ok(token)
    }

    async fn login(&self) -> Result<PbxToken, PbxError> {
        self.count(&self.inner.counters.sign_ins);
        self.count(&self.inner.counters.requests);
        let login = &self.inner.login;
        let result = login_as(
            &self.inner.http,
            &self.inner.api_url,
            &login.username,
            login.password.expose(),
            &self.inner.domain,
        )
        .await;
        match result {
            Err(PbxError::Rejected {
                status, message, ..
            }) => Err(PbxError::SignIn {
                username: login.username.clone(),
                domain: self.inner.domain.clone(),
                reason: format!("HTTP {status}: {message}"),
            }),
            other => other,
        }
    }
}

/// Signs `username` in on `domain`: a user's own PBX session.
pub async fn login_as(
    http: &reqwest::Client,
    api_url: &Url,
    username: &str,
    password: &str,
    domain: &str,
) -> Result<PbxToken, PbxError> {
    let body = LoginRequest {
        username,
        password,
        domain,
    };
    token_request(http, api_url, "login", &body).await
}

/// Renews a session with its refresh token.
pub async fn refresh(
    http: &reqwest::Client,
    api_url: &Url,
    refresh_token: &str,
) -> Result<PbxToken, PbxError> {
    let body = RefreshRequest { refresh_token };
    token_request(http, api_url, "auth/refresh_token", &body).await
}

async fn token_request<B: Serialize>(
    http: &reqwest::Client,
    api_url: &Url,
    path: &str,
    body: &B,
) -> Result<PbxToken, PbxError> {
    let url = format!("{}/{path}", api_url.as_str().trim_end_matches('/'));
    let response = http.post(&url).json(body).send().await.map_err(|e| {
        if e.is_timeout() {
            PbxError::Timeout {
                what: format!("POST /{path}"),
            }
        } else {
            PbxError::Unreachable {
                url: api_url.to_string(),
                reason: e.to_string(),
            }
        }
    })?;
    let response = check(response, path).await?;
    let answer: TokenAnswer = decode(response, path).await?;
    Ok(answer.into())
}

fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// A success passes; an error answer becomes the error PortSIP's body describes.
async fn check(response: reqwest::Response, path: &str) -> Result<reqwest::Response, PbxError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(PbxError::Unreachable {
            url: response.url().to_string(),
            reason: format!("still answering HTTP {} after retries", status.as_u16()),
        });
    }
    if status == StatusCode::NOT_FOUND {
        return Err(PbxError::NotFound {
            what: format!("/{path}"),
        });
    }
    let body: ErrorBody = response.json().await.unwrap_or_default();
    let first = body.errors.into_iter().next().unwrap_or_default();
    let field = first
        .detail
        .as_ref()
        .and_then(|d| d.get("field"))
        .and_then(|f| f.as_str())
        .map(str::to_string);
    Err(PbxError::Rejected {
        status: status.as_u16(),
        code: first.code.unwrap_or_else(|| "ERROR".into()),
        message: first
            .message
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string()),
        field,
    })
}

async fn decode<T: DeserializeOwned>(
    response: reqwest::Response,
    path: &str,
) -> Result<T, PbxError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| PbxError::Protocol(format!("/{path}: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| PbxError::Protocol(format!("/{path}: {e}")))
}

/// A path segment: ids are opaque, so anything but unreserved characters is encoded.
fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A new contact carries only the fields it has (PortSIP's `minLength` on `name`).
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
