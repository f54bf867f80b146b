//! JSON batching (`POST /v1.0/$batch`): up to 20 requests, each run through the emulator's
//! own router — so the same handlers, permission checks, faults and mailbox concurrency
//! apply to every item — and answered with its own status, headers and body. Like Graph,
//! at most four items run at once; with `dependsOn` they run in order and an item whose
//! dependency failed answers 424. Non-JSON bodies (photo `$value`) come back base64.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use super::Emulator;
use super::graph::{Caller, GraphError};
use super::util::b64std;

/// Graph's limit on requests per batch.
pub(crate) const MAX_BATCH: usize = 20;
/// Graph dispatches at most four batch items concurrently.
const BATCH_PARALLELISM: usize = 4;

/// Marks a request as a batch item: the fault layer never resets the shared connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchItem;

#[derive(Debug, Deserialize)]
struct BatchBody {
    requests: Vec<Item>,
}

#[derive(Debug, Clone, Deserialize)]
struct Item {
    id: String,
    method: String,
    url: String,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default, rename = "dependsOn")]
    depends_on: Vec<String>,
}

fn invalid(detail: &str) -> GraphError {
    GraphError::bad_request(
        "BadRequest",
        format!("Invalid batch payload format. {detail}")
            .trim()
            .to_string(),
    )
}

fn parse(body: &[u8]) -> Result<Vec<Item>, GraphError> {
    let parsed: BatchBody = serde_json::from_slice(body).map_err(|_| invalid(""))?;
    let n = parsed.requests.len();
    if n == 0 {
        return Err(invalid("The batch contains no requests."));
    }
    if n > MAX_BATCH {
        return Err(invalid(&format!(
            "The batch contains {n} requests; the maximum is {MAX_BATCH}."
        )));
    }
    let mut ids = HashSet::new();
    if let Some(dup) = parsed
        .requests
        .iter()
        .find(|r| r.id.is_empty() || !ids.insert(r.id.clone()))
    {
        return Err(invalid(&format!(
            "The request id '{}' is empty or not unique.",
            dup.id
        )));
    }
    Ok(parsed.requests)
}

pub(crate) async fn batch(
    State(emu): State<Emulator>,
    _caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, GraphError> {
    let items = parse(&body)?;
    let auth = headers.get(header::AUTHORIZATION).cloned();
    // One router for the batch's items: building it is most of what a small item costs.
    let runner = Runner {
        router: emu.router(),
        emu: emu.clone(),
        auth,
    };
    let responses = if items.iter().any(|i| !i.depends_on.is_empty()) {
        runner.sequential(items).await
    } else {
        runner.concurrent(items).await
    };
    Ok(Json(json!({ "responses": responses })).into_response())
}

#[derive(Clone)]
struct Runner {
    router: axum::Router,
    emu: Emulator,
    auth: Option<axum::http::HeaderValue>,
}

impl Runner {
    async fn concurrent(&self, items: Vec<Item>) -> Vec<Value> {
        let gate = Arc::new(Semaphore::new(BATCH_PARALLELISM));
        let mut tasks = tokio::task::JoinSet::new();
        for (pos, item) in items.iter().cloned().enumerate() {
            let (runner, gate) = (self.clone(), gate.clone());
            tasks.spawn(async move {
                let _permit = gate.acquire_owned().await;
                (pos, runner.run(item).await)
            });
        }
        let mut out = vec![Value::Null; items.len()];
        while let Some(done) = tasks.join_next().await {
            if let Ok((pos, value)) = done {
                out[pos] = value;
            }
        }
        out
    }

    async fn sequential(&self, items: Vec<Item>) -> Vec<Value> {
        let mut statuses: HashMap<String, u16> = HashMap::new();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let failed = item
                .depends_on
                .iter()
                .any(|d| !statuses.get(d).is_some_and(|s| (200..300).contains(s)));
            let value = if failed {
                json!({"id": item.id, "status": 424, "body": {"error": {"code": "FailedDependency",
                    "message": "The request depends on a request that failed."}}})
            } else {
                self.run(item.clone()).await
            };
            statuses.insert(item.id, value["status"].as_u64().unwrap_or(500) as u16);
            out.push(value);
        }
        out
    }

    /// Runs one item through the router and renders Graph's per-item response.
    async fn run(&self, item: Item) -> Value {
        let request = match self.request(&item) {
            Some(request) => request,
            None => {
                return json!({"id": item.id, "status": 400, "body": {"error": {
                "code": "BadRequest", "message": format!("Invalid request URL or method: '{}'.", item.url)}}});
            }
        };
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {});
        render(&item.id, response).await
    }

    fn request(&self, item: &Item) -> Option<Request<Body>> {
        let base = format!("{}/v1.0", self.emu.inner.base());
        let url = item.url.strip_prefix(&base).unwrap_or(&item.url);
        if url.contains("://") {
            return None;
        }
        // Batch URLs are often written unencoded ("$select=id, displayName").
        let uri = format!("/v1.0/{}", url.trim_start_matches('/').replace(' ', "%20"));
        let method = Method::from_bytes(item.method.to_uppercase().as_bytes()).ok()?;
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(auth) = &self.auth {
            builder = builder.header(header::AUTHORIZATION, auth.clone());
        }
        for (name, value) in &item.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let body = match &item.body {
            Some(value) => Body::from(value.to_string()),
            None => Body::empty(),
        };
        let mut request = builder.body(body).ok()?;
        request.extensions_mut().insert(BatchItem);
        Some(request)
    }
}

/// `retry-after` → `Retry-After`, `etag` → `ETag`.
fn header_name(name: &str) -> String {
    if name == "etag" {
        return "ETag".into();
    }
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
        })
        .collect::<Vec<_>>()
        .join("-")
}

async fn render(id: &str, response: Response) -> Value {
    let status = response.status().as_u16();
    let mut headers = Map::new();
    for (name, value) in response.headers() {
        if name == header::CONTENT_LENGTH {
            continue;
        }
        if let Ok(value) = value.to_str() {
            headers.insert(header_name(name.as_str()), json!(value));
        }
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let mut item = json!({"id": id, "status": status, "headers": headers});
    if !bytes.is_empty() {
        item["body"] = if content_type.starts_with("application/json") {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
        } else if content_type.starts_with("text/") {
            json!(String::from_utf8_lossy(&bytes))
        } else {
            json!(b64std(&bytes))
        };
    }
    item
}
