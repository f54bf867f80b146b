//! The Graph client and its request pipeline: one logical request = one `client-request-id`
//! kept across every retry (so Microsoft can trace it), a bearer token from the
//! [`TokenSource`] (one 401 invalidates it and retries once), a per-request timeout,
//! retries on 429/503/504 after `Retry-After` or jittered backoff, retries on transport
//! failures only for idempotent requests, bodies read with a size cap, redirects refused,
//! and counters for the sync report. Every URL is checked against the configured Graph
//! origin before the token goes out with it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, LOCATION};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::GraphError;
use super::mailbox::MailboxLimiter;
use super::resources::{CONTACTS_DELTA_PREFERENCE, is_contacts_delta};
use super::retry::{backoff, retry_after};
use crate::entra::{CloudEndpoints, NationalCloud, TokenSource};

/// Largest JSON answer read (a 999-user page with `$select` is a few MB; a `$batch` of 20
/// base64 photos somewhat more).
pub const MAX_JSON_BODY: usize = 32 * 1024 * 1024;
/// Error bodies are only read this far: enough for Graph's error JSON.
const MAX_ERROR_BODY: usize = 64 * 1024;
pub(crate) const JSON: &str = "application/json";

/// Tuning of the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphOptions {
    /// Retries of one request on throttling, 5xx gateway errors or transport failures.
    pub max_retries: u32,
    /// Bound on one HTTP exchange, body included.
    pub request_timeout: Duration,
    /// Cap of the computed backoff (not of Graph's own `Retry-After`).
    pub max_backoff: Duration,
    /// First backoff step; doubled per attempt.
    pub base_backoff: Duration,
    /// Concurrent requests per mailbox for Outlook resources (Exchange allows 4).
    pub mailbox_concurrency: usize,
    /// Users per `/users/delta` page asked for with `Prefer: odata.maxpagesize` (Graph's
    /// default is 100, its most 999).
    pub delta_page_size: u16,
}

impl Default for GraphOptions {
    fn default() -> Self {
        GraphOptions {
            max_retries: 6,
            request_timeout: Duration::from_secs(30),
            max_backoff: Duration::from_secs(60),
            base_backoff: Duration::from_millis(500),
            mailbox_concurrency: 4,
            delta_page_size: MAX_DELTA_PAGE_SIZE,
        }
    }
}

/// A snapshot of the client's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphStats {
    /// HTTP requests sent (each retry is one more).
    pub requests: u64,
    /// 429 and 503 answers seen, `$batch` items included.
    pub throttled: u64,
    /// Requests sent again: retries, the re-authorization after a 401, re-sent batch items.
    pub retries: u64,
    /// Requests sent per caller-given kind (`users`, `delta`, `photo`, `contacts`, `batch`).
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Time spent waiting before retries, in milliseconds (`Retry-After` or backoff).
    pub waited_ms: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    throttled: AtomicU64,
    retries: AtomicU64,
    by_kind: Mutex<BTreeMap<&'static str, u64>>,
    waited_ms: AtomicU64,
}

impl Counters {
    fn request(&self, kind: &'static str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        *self
            .by_kind
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    pub(crate) fn throttled(&self, n: u64) {
        self.throttled.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits `wait` before a retry, counting the time.
    pub(crate) async fn wait(&self, wait: Duration) {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        self.waited_ms.fetch_add(ms, Ordering::Relaxed);
        tokio::time::sleep(wait).await;
    }
}

/// Microsoft Graph v1.0 client for one tenant. Clones share the connection pool, the
/// token source, the counters and the per-mailbox limiter.
#[derive(Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("base", &self.inner.base)
            .field("cloud", &self.inner.cloud)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

struct Inner {
    http: reqwest::Client,
    base: String,
    origin: Option<Url>,
    cloud: NationalCloud,
    tokens: Arc<dyn TokenSource>,
    options: GraphOptions,
    counters: Counters,
    mailboxes: MailboxLimiter,
}

/// The request kind of directory delta rounds (`/users/delta`).
pub const DELTA_KIND: &str = "delta";
/// A users delta round pages 100 users at a time unless asked for more; 999 is the most
/// Graph gives, which cuts a 50,000-user round from 500 requests to 51.
pub const MAX_DELTA_PAGE_SIZE: u16 = 999;

/// One logical request, as the pipeline needs it to send it again.
pub(crate) struct Call<'a> {
    pub method: Method,
    /// Absolute and already checked by [`GraphClient::resolve`].
    pub url: &'a str,
    pub kind: &'static str,
    pub body: Option<Bytes>,
    pub accept: &'static str,
    pub max_body: usize,
    /// Safe to send twice: transport failures are retried only then.
    pub idempotent: bool,
}

impl<'a> Call<'a> {
    pub(crate) fn get(url: &'a str, kind: &'static str) -> Self {
        Call {
            method: Method::GET,
            url,
            kind,
            body: None,
            accept: JSON,
            max_body: MAX_JSON_BODY,
            idempotent: true,
        }
    }
}

/// A successful answer.
pub(crate) struct Reply {
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What one attempt tells the retry loop to do.
enum Step {
    Done(Reply),
    Unauthorized(GraphError),
    Retry {
        after: Option<Duration>,
        throttled: bool,
        error: GraphError,
    },
    Fail(GraphError),
}

impl GraphClient {
    /// A client for `endpoints.graph_base()`. `http` should come from
    /// [`crate::entra::http::microsoft_client`] (no redirects followed).
    pub fn new(
        http: reqwest::Client,
        endpoints: &CloudEndpoints,
        tokens: Arc<dyn TokenSource>,
        options: GraphOptions,
    ) -> GraphClient {
        let base = endpoints.graph_base();
        let origin = Url::parse(&base).ok().filter(|u| u.has_host());
        if origin.is_none() {
            tracing::error!(graph = %base, "the Graph base URL is not an absolute URL; every request will be refused");
        }
        let mailboxes = MailboxLimiter::new(options.mailbox_concurrency);
        let counters = Counters::default();
        let inner = Inner {
            http,
            base,
            origin,
            cloud: endpoints.cloud,
            tokens,
            options,
            counters,
            mailboxes,
        };
        GraphClient {
            inner: Arc::new(inner),
        }
    }

    /// `{graph}/v1.0`, without a trailing slash.
    pub fn graph_base(&self) -> &str {
        &self.inner.base
    }

    /// The national cloud (some APIs, like contacts delta, are missing in some clouds).
    pub fn cloud(&self) -> NationalCloud {
        self.inner.cloud
    }

    pub fn options(&self) -> &GraphOptions {
        &self.inner.options
    }

    /// The per-mailbox limiter shared by this client's Outlook calls.
    pub fn mailboxes(&self) -> &MailboxLimiter {
        &self.inner.mailboxes
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The counters so far.
    pub fn stats(&self) -> GraphStats {
        let c = &self.inner.counters;
        GraphStats {
            requests: c.requests.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            by_kind: c.by_kind.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            waited_ms: c.waited_ms.load(Ordering::Relaxed),
        }
    }

    /// The absolute URL for a path relative to `{graph}/v1.0`, or an absolute URL checked
    /// to be on the Graph origin. Links come back from Graph and are stored by the sync;
    /// a tampered one must not receive the bearer token.
    pub fn resolve(&self, url_or_path: &str) -> Result<String, GraphError> {
        if url_or_path.starts_with('/') {
            return Ok(format!("{}{url_or_path}", self.inner.base));
        }
        if !url_or_path.contains("://") {
            return Ok(format!("{}/{url_or_path}", self.inner.base));
        }
        self.check_origin(url_or_path)?;
        Ok(url_or_path.to_string())
    }

    /// Refuses an absolute URL whose scheme, host or port differ from the Graph base.
    pub fn check_origin(&self, url: &str) -> Result<(), GraphError> {
        let same = match (&self.inner.origin, Url::parse(url)) {
            (Some(base), Ok(u)) => {
                u.scheme() == base.scheme()
                    && u.host_str() == base.host_str()
                    && u.port_or_known_default() == base.port_or_known_default()
                    && u.username().is_empty()
                    && u.password().is_none()
            }
            _ => false,
        };
        if same {
            Ok(())
        } else {
            Err(GraphError::ForeignUrl(url.to_string()))
        }
    }

    /// GET a JSON resource (path relative to `{graph}/v1.0`, or a Graph URL).
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        url_or_path: &str,
        kind: &'static str,
    ) -> Result<T, GraphError> {
        let url = self.resolve(url_or_path)?;
        let reply = self.execute(&Call::get(&url, kind)).await?;
        decode(&reply.body)
    }

    /// Sends one logical request, retrying as Graph documents, until success or the error.
    pub(crate) async fn execute(&self, call: &Call<'_>) -> Result<Reply, GraphError> {
        let client_request_id = Uuid::new_v4().to_string();
        let (mut retries, mut reauthorized) = (0u32, false);
        loop {
            let token = self.inner.tokens.token().await?;
            match self.attempt(call, &token.secret, &client_request_id).await {
                Step::Done(reply) => return Ok(reply),
                Step::Unauthorized(_) if !reauthorized => {
                    // An access token can be revoked or rotated before its expiry.
                    tracing::debug!(kind = call.kind, %client_request_id, "Graph answered 401; fetching a new token");
                    self.inner.tokens.invalidate();
                    self.inner.counters.retried();
                    reauthorized = true;
                }
                Step::Unauthorized(error) | Step::Fail(error) => return Err(error),
                Step::Retry {
                    after,
                    throttled,
                    error,
                } => {
                    if retries >= self.inner.options.max_retries {
                        return Err(give_up(call, retries, throttled, error));
                    }
                    let wait = after.unwrap_or_else(|| self.backoff(retries));
                    tracing::debug!(kind = call.kind, %client_request_id, retry = retries + 1, ?wait, %error, "retrying Graph request");
                    retries += 1;
                    self.inner.counters.retried();
                    self.inner.counters.wait(wait).await;
                }
            }
        }
    }

    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let o = &self.inner.options;
        backoff(o.base_backoff, o.max_backoff, attempt)
    }

    async fn attempt(&self, call: &Call<'_>, token: &str, client_request_id: &str) -> Step {
        self.inner.counters.request(call.kind);
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), call.url)
            .bearer_auth(token)
            .header(ACCEPT, call.accept)
            .header("client-request-id", client_request_id)
            .header("return-client-request-id", "true")
            .timeout(self.inner.options.request_timeout);
        if let Some(body) = &call.body {
            request = request.header(CONTENT_TYPE, JSON).body(body.clone());
        }
        if call.kind == DELTA_KIND {
            let size = self
                .inner
                .options
                .delta_page_size
                .clamp(1, MAX_DELTA_PAGE_SIZE);
            request = request.header("prefer", format!("odata.maxpagesize={size}"));
        } else if is_contacts_delta(call.url) {
            request = request.header("prefer", CONTACTS_DELTA_PREFERENCE);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return transport_step(call, &e),
        };
        if !response.status().is_success() {
            return self.failure_step(response, client_request_id).await;
        }
        let headers = response.headers().clone();
        match read_capped(response, call.max_body).await {
            Ok(body) => Step::Done(Reply { headers, body }),
            Err(ReadError::TooLarge) => Step::Fail(GraphError::TooLarge {
                limit: call.max_body,
            }),
            Err(ReadError::Transport(e)) => transport_step(call, &e),
        }
    }

    async fn failure_step(&self, response: reqwest::Response, client_request_id: &str) -> Step {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if response.status().is_redirection() {
            let location = headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            return Step::Fail(GraphError::Redirect { status, location });
        }
        let body = read_capped(response, MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        let error = GraphError::from_answer(status, &headers, &body, client_request_id);
        match status {
            401 => Step::Unauthorized(error),
            429 | 503 => {
                self.inner.counters.throttled(1);
                Step::Retry {
                    after: retry_after(&headers),
                    throttled: true,
                    error,
                }
            }
            504 => Step::Retry {
                after: retry_after(&headers),
                throttled: false,
                error,
            },
            _ => Step::Fail(error),
        }
    }
}

fn transport_step(call: &Call<'_>, e: &reqwest::Error) -> Step {
    let error = GraphError::Transport(describe(e));
    if call.idempotent && !e.is_builder() {
        Step::Retry {
            after: None,
            throttled: false,
            error,
        }
    } else {
        Step::Fail(error)
    }
}

fn give_up(call: &Call<'_>, retries: u32, throttled: bool, error: GraphError) -> GraphError {
    tracing::warn!(kind = call.kind, retries, %error, "giving up on a Graph request");
    if throttled {
        GraphError::Throttled { retries }
    } else {
        error
    }
}

/// The error and its causes on one line ("error sending request: connection reset ...").
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, GraphError> {
    serde_json::from_slice(body).map_err(|e| GraphError::Decode(e.to_string()))
}

#[derive(Debug)]
pub(crate) enum ReadError {
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads a body chunk by chunk, stopping as soon as it exceeds `limit`: a hostile or broken
/// answer must not be buffered whole.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, ReadError> {
    let declared = response.content_length().unwrap_or(0);
    if declared > limit as u64 {
        return Err(ReadError::TooLarge);
    }
    let mut buf = BytesMut::with_capacity(usize::try_from(declared).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        if buf.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}
