//! Test doubles and a scripted Graph stand-in: an axum server on 127.0.0.1:0 that records
//! every request it gets (with the instant it arrived) and answers what the test's script
//! says, and a token source that counts its calls.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::entra::error::OidcError;
use crate::entra::{AccessToken, CloudEndpoints, NationalCloud, TokenFuture, TokenSource};
use crate::graph::{GraphClient, GraphOptions};

/// Hands out `tok-N`, N = how often it was invalidated; counts fetches.
#[derive(Default)]
pub(crate) struct FakeTokens {
    pub fetched: AtomicUsize,
    pub invalidated: AtomicUsize,
    pub broken: bool,
}

impl TokenSource for FakeTokens {
    fn token(&self) -> TokenFuture<'_> {
        self.fetched.fetch_add(1, Ordering::SeqCst);
        let generation = self.invalidated.load(Ordering::SeqCst);
        let broken = self.broken;
        Box::pin(async move {
            if broken {
                return Err(OidcError::NotConfigured("no application id".into()));
            }
            let secret = format!("tok-{generation}").into();
            Ok(AccessToken {
                secret,
                expires_at: Instant::now() + Duration::from_secs(3600),
            })
        })
    }

    fn invalidate(&self) {
        self.invalidated.fetch_add(1, Ordering::SeqCst);
    }
}

/// Short waits so the retry tests run in milliseconds.
pub(crate) fn fast_options() -> GraphOptions {
    GraphOptions {
        max_retries: 3,
        request_timeout: Duration::from_secs(5),
        max_backoff: Duration::from_millis(40),
        base_backoff: Duration::from_millis(5),
        mailbox_concurrency: 4,
        ..GraphOptions::default()
    }
}

pub(crate) fn client_with(
    graph: &str,
    cloud: NationalCloud,
    tokens: Arc<FakeTokens>,
    options: GraphOptions,
) -> GraphClient {
    let endpoints = CloudEndpoints {
        cloud,
        login: "http://127.0.0.1:9".into(),
        graph: graph.to_string(),
    };
    let http = crate::entra::http::microsoft_client(Duration::from_secs(10));
    GraphClient::new(http, &endpoints, tokens, options)
}

pub(crate) fn client_for(graph: &str, cloud: NationalCloud) -> GraphClient {
    client_with(graph, cloud, Arc::default(), fast_options())
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    /// 0 for the first request this server got.
    pub n: usize,
    pub method: Method,
    /// Path and query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Hit {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Script = Arc<dyn Fn(Hit) -> Pin<Box<dyn Future<Output = Response> + Send>> + Send + Sync>;

/// The scripted server. Dropping it stops it.
pub(crate) struct TestServer {
    /// `http://127.0.0.1:PORT`: the "Graph host" of the client under test.
    pub base: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Answers each request with `script(hit)`.
    pub async fn start(script: impl Fn(&Hit) -> Response + Send + Sync + 'static) -> TestServer {
        Self::start_async(move |hit| std::future::ready(script(&hit))).await
    }

    /// Like [`TestServer::start`], for scripts that must wait before answering.
    pub async fn start_async<F, Fut>(script: F) -> TestServer
    where
        F: Fn(Hit) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        let script: Script = Arc::new(move |hit| Box::pin(script(hit)));
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let recorded = hits.clone();
        let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (script, recorded) = (script.clone(), recorded.clone());
            async move {
                let path = uri
                    .path_and_query()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let hit = {
                    let mut hits = recorded.lock().unwrap();
                    let hit = Hit {
                        n: hits.len(),
                        method,
                        path,
                        headers,
                        body,
                        at: Instant::now(),
                    };
                    hits.push(hit.clone());
                    hit
                };
                script(hit).await
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().fallback(handler);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestServer { base, hits, task }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// A client pointed at this server, and its token source.
    pub fn client(&self, options: GraphOptions) -> (GraphClient, Arc<FakeTokens>) {
        let tokens = Arc::new(FakeTokens::default());
        (
            client_with(&self.base, NationalCloud::Global, tokens.clone(), options),
            tokens,
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A JSON answer.
pub(crate) fn json(status: u16, body: serde_json::Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// Graph's error body.
pub(crate) fn graph_error(status: u16, code: &str) -> Response {
    json(
        status,
        serde_json::json!({"error": {"code": code, "message": format!("{code} happened"),
            "innerError": {"request-id": "server-req-id", "date": "2026-01-01T00:00:00"}}}),
    )
}

pub(crate) fn with_header(mut response: Response, name: &'static str, value: &str) -> Response {
    response.headers_mut().insert(name, value.parse().unwrap());
    response
}
