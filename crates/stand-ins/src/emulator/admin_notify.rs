//! The control API of change notifications, under `/_emulator/notifications` and
//! `/_emulator/tenants/{dir}/subscriptions`: what a benchmark running the emulator as its
//! own process (`ms365-gateway emulator`) needs to let it reach a gateway, and to see and
//! disturb what it delivers. Each route wraps the in-process method of the same name.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::Emulator;
use super::notify::{LifecycleEvent, NotificationFaults};

pub(crate) fn routes() -> Router<Emulator> {
    Router::new()
        .route("/_emulator/notifications/route", post(route))
        .route("/_emulator/notifications/trust", post(trust))
        .route("/_emulator/notifications/faults", post(faults))
        .route("/_emulator/notifications/lifetime-cap", post(lifetime_cap))
        .route("/_emulator/notifications/stats", get(stats))
        .route("/_emulator/tenants/{dir}/subscriptions", get(list))
        .route(
            "/_emulator/tenants/{dir}/subscriptions/{id}/lifecycle",
            post(lifecycle),
        )
}

fn bad(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

#[derive(Deserialize)]
struct RouteBody {
    host: String,
    addr: SocketAddr,
}

async fn route(State(emu): State<Emulator>, Json(b): Json<RouteBody>) -> StatusCode {
    emu.route_notifications(&b.host, b.addr);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct TrustBody {
    pem: String,
}

async fn trust(State(emu): State<Emulator>, Json(b): Json<TrustBody>) -> StatusCode {
    emu.trust_notification_ca(&b.pem);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct FaultsBody {
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    drop_next: u32,
}

async fn faults(State(emu): State<Emulator>, Json(b): Json<FaultsBody>) -> StatusCode {
    emu.set_notification_faults(NotificationFaults {
        delay: Duration::from_millis(b.delay_ms),
        drop_next: b.drop_next,
    });
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct CapBody {
    /// `null` restores Microsoft's limits.
    seconds: Option<u64>,
}

async fn lifetime_cap(State(emu): State<Emulator>, Json(b): Json<CapBody>) -> StatusCode {
    emu.set_subscription_lifetime_cap(b.seconds.map(Duration::from_secs));
    StatusCode::NO_CONTENT
}

async fn stats(State(emu): State<Emulator>) -> Response {
    Json(emu.notification_stats()).into_response()
}

async fn list(State(emu): State<Emulator>, Path(dir): Path<String>) -> Response {
    Json(emu.subscriptions(&dir)).into_response()
}

#[derive(Deserialize)]
struct LifecycleBody {
    event: String,
}

async fn lifecycle(
    State(emu): State<Emulator>,
    Path((dir, id)): Path<(String, String)>,
    Json(b): Json<LifecycleBody>,
) -> Response {
    let Some(event) = LifecycleEvent::parse(&b.event) else {
        return bad(format!("unknown lifecycle event `{}`", b.event));
    };
    match emu.fire_lifecycle(&dir, &id, event).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => bad(e.to_string()),
    }
}
