//! The PBX client against scripted PortSIP stand-ins (not `portsip_emulator`: these tests
//! pin the client's own behaviour, answer by answer). An axum server on 127.0.0.1:0 records
//! every request and answers what the test's script says for the n-th request of a route;
//! sign-in and refresh answer with numbered tokens unless the script says otherwise.

mod calls;
mod resilience;
mod tls;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::PbxClient;
use crate::config::{PbxLogin, PbxSecret};

pub const ADMIN: &str = "acme-admin";
pub const PASSWORD: &str = "Pw-never-shown-7";
pub const DOMAIN: &str = "acme.pbx.test";

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Hit {
    pub method: String,
    /// Without the query, e.g. `/api/users`.
    pub path: String,
    pub query: String,
    pub bearer: Option<String>,
    pub body: Value,
    /// How many requests of the same method and path came before this one.
    pub nth: usize,
}

impl Hit {
    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }
}

/// What the stand-in answers.
pub enum Reply {
    Json(u16, Value),
    WithHeader(u16, &'static str, String, Value),
    /// Never answers: the client's timeout is the only way out.
    Hang,
    /// Answers once the test adds a permit to the semaphore.
    Gated(Arc<Semaphore>, u16, Value),
    /// The stand-in's sign-in and refresh, or 404 for anything else.
    Default,
}

type Script = dyn Fn(&Hit) -> Reply + Send + Sync;

/// What the stand-in saw, shared with its handler.
#[derive(Default)]
pub struct Seen {
    pub hits: Mutex<Vec<Hit>>,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// The number of requests received, for tests that wait for arrivals.
    pub arrivals: watch::Sender<usize>,
}

pub struct Pbx {
    pub api_url: reqwest::Url,
    pub seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Pbx {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Pbx {
    pub async fn start(script: impl Fn(&Hit) -> Reply + Send + Sync + 'static) -> Pbx {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_url = format!("http://{}/api", listener.local_addr().unwrap());
        let (router, seen) = router(Arc::new(script));
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Pbx {
            api_url: api_url.parse().unwrap(),
            seen,
            task,
        }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.seen.hits.lock().unwrap().clone()
    }

    /// Waits until `n` requests have arrived.
    pub async fn arrived(&self, n: usize) {
        let mut rx = self.seen.arrivals.subscribe();
        rx.wait_for(|count| *count >= n).await.unwrap();
    }

    /// How many `method path` requests arrived.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.hits().iter().filter(|h| h.is(method, path)).count()
    }

    /// A client with a 400 ms request timeout and 1 ms backoff steps.
    pub fn client(&self) -> PbxClient {
        self.client_with(4, Duration::from_millis(400))
    }

    pub fn client_with(&self, concurrency: usize, timeout: Duration) -> PbxClient {
        let http = reqwest::Client::builder().timeout(timeout).build().unwrap();
        PbxClient::with_http(
            http,
            self.api_url.clone(),
            login(),
            DOMAIN.into(),
            concurrency,
        )
        .with_backoff_base(Duration::from_millis(1))
    }
}

pub fn login() -> PbxLogin {
    PbxLogin {
        username: ADMIN.into(),
        password: PbxSecret::new(PASSWORD.into()),
    }
}

/// The stand-in's routes, shared with the TLS test.
pub fn router(script: Arc<Script>) -> (Router, Arc<Seen>) {
    let seen: Arc<Seen> = Arc::default();
    let shared = seen.clone();
    let handler = move |request: Request| {
        let (script, seen) = (script.clone(), shared.clone());
        async move {
            let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let hit = record(request, &seen).await;
            let response = answer(&hit, script(&hit)).await;
            seen.in_flight.fetch_sub(1, Ordering::SeqCst);
            response
        }
    };
    (Router::new().fallback(handler), seen)
}

async fn record(request: Request, seen: &Seen) -> Hit {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let bearer = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let mut hits = seen.hits.lock().unwrap();
    let (method, path) = (parts.method.to_string(), parts.uri.path().to_string());
    let nth = hits.iter().filter(|h| h.is(&method, &path)).count();
    let hit = Hit {
        method,
        path,
        query: parts.uri.query().unwrap_or_default().to_string(),
        bearer,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        nth,
    };
    hits.push(hit.clone());
    seen.arrivals.send_replace(hits.len());
    hit
}

async fn answer(hit: &Hit, reply: Reply) -> Response {
    let (status, header, body) = match reply {
        Reply::Json(status, body) => (status, None, body),
        Reply::WithHeader(status, name, value, body) => (status, Some((name, value)), body),
        Reply::Hang => std::future::pending().await,
        Reply::Gated(gate, status, body) => {
            gate.acquire().await.unwrap().forget();
            (status, None, body)
        }
        Reply::Default => default_reply(hit),
    };
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    if let Some((name, value)) = header {
        headers.insert(name, HeaderValue::from_str(&value).unwrap());
    }
    response
}

fn default_reply(hit: &Hit) -> (u16, Option<(&'static str, String)>, Value) {
    let n = hit.nth + 1;
    if hit.is("POST", "/api/login") {
        (
            200,
            None,
            token_body(&format!("tok-{n}"), &format!("ref-{n}"), 1800),
        )
    } else if hit.is("POST", "/api/auth/refresh_token") {
        (
            200,
            None,
            token_body(&format!("rtok-{n}"), &format!("rref-{n}"), 1800),
        )
    } else {
        (404, None, error_body("NOT_FOUND", "no such resource", None))
    }
}

pub fn token_body(access: &str, refresh: &str, expires_in: i64) -> Value {
    json!({
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": expires_in,
    })
}

pub fn error_body(code: &str, message: &str, field: Option<&str>) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(field) = field {
        error["detail"] = json!({ "field": field });
    }
    json!({ "errors": [error] })
}
