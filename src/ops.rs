//! Operations endpoints on the admin address (default `127.0.0.1:9090`, never the public
//! listeners): `/healthz` (the process answers), `/readyz` (listeners bound and the store
//! reachable) and `/metrics` (Prometheus text format).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::Metrics;
use crate::store::Store;

/// What the operations endpoints read.
#[derive(Clone)]
pub struct OpsState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Set once every listener is accepting.
    pub listeners_ready: Arc<AtomicBool>,
}

pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<OpsState>) -> Response {
    if !state.listeners_ready.load(Ordering::Acquire) {
        return not_ready("listeners are not accepting yet");
    }
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => axum::Json(serde_json::json!({ "status": "ready" })).into_response(),
        Ok(Err(e)) => not_ready(&format!("store unreachable: {e}")),
        Err(_) => not_ready("store did not answer within 2 s"),
    }
}

fn not_ready(reason: &str) -> Response {
    let body = axum::Json(serde_json::json!({ "status": "not ready", "reason": reason }));
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

async fn metrics(State(state): State<OpsState>) -> Response {
    let mut response = state.metrics.encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
