//! Faults, statistics and the control API. Every `/api` request is counted under its
//! operation (`POST /users/{id}`) and then rolled against the faults of its class: a
//! scheduled failure (`fail_next`), a 503, a 429 with `Retry-After`, or a hold long enough
//! to time the client out, after which the request is still carried out (the worst case of
//! a timeout: the PBX did it, the client does not know). `/_pbx/…` drives all of this over
//! HTTP when the stand-in runs as its own process.

use std::sync::Arc;

use axum::Json;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::api::Fail;
use super::state::{Inner, as_map, delay, lock, pin_problem, username_problem};
use super::{LocalUserSpec, PbxEmulator, PbxFaults};

/// The fault class of an API path.
fn class_of(path: &str) -> &'static str {
    if path.starts_with("/api/users") {
        "users"
    } else if path.starts_with("/api/contacts") {
        "contacts"
    } else {
        "login"
    }
}

/// What the dice say for one request.
enum Roll {
    Pass,
    Hold(u64),
    Fail(StatusCode, Option<u64>),
}

fn roll(emu: &Inner, class: &str) -> Roll {
    let mut state = lock(&emu.faults);
    let f = state.faults.clone();
    if f.class.as_deref().is_some_and(|c| c != class) {
        return Roll::Pass;
    }
    if f.fail_next > 0 {
        state.faults.fail_next -= 1;
        let status = StatusCode::from_u16(f.fail_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let status = if f.fail_status == 0 {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            status
        };
        return Roll::Fail(status, None);
    }
    let dice = state.rng.f64();
    if dice < f.error_rate {
        return Roll::Fail(StatusCode::SERVICE_UNAVAILABLE, None);
    }
    if dice < f.error_rate + f.throttle_rate {
        return Roll::Fail(StatusCode::TOO_MANY_REQUESTS, Some(f.retry_after_secs));
    }
    if dice < f.error_rate + f.throttle_rate + f.timeout_rate {
        return Roll::Hold(f.timeout_delay_ms);
    }
    Roll::Pass
}

pub(crate) async fn faults_layer(
    State(emu): State<Arc<Inner>>,
    request: Request,
    next: Next,
) -> Response {
    let path = (request.extensions().get::<MatchedPath>()).map_or_else(
        || request.uri().path().to_string(),
        |m| m.as_str().to_string(),
    );
    let operation = format!("{} {}", request.method(), path.trim_start_matches("/api"));
    emu.count(&operation);
    let dice = roll(&emu, class_of(&path));
    if !matches!(dice, Roll::Pass) {
        lock(&emu.stats).faults_injected += 1;
    }
    match dice {
        Roll::Pass => next.run(request).await,
        Roll::Hold(ms) => {
            tokio::time::sleep(delay(ms)).await;
            next.run(request).await
        }
        Roll::Fail(status, retry_after) => {
            let code = if status == StatusCode::TOO_MANY_REQUESTS {
                "TOO_MANY_REQUESTS"
            } else {
                "INTERNAL"
            };
            let mut response = Fail::new(status, code, "injected fault").into_response();
            if let Some(secs) = retry_after {
                response.headers_mut().insert("retry-after", secs.into());
            }
            response
        }
    }
}

pub(crate) fn with_id(id: &str, fields: &Map<String, Value>) -> Value {
    let mut out = fields.clone();
    out.insert("id".into(), Value::from(id));
    Value::Object(out)
}

pub(crate) fn add_local_user(
    emu: &Inner,
    domain: &str,
    user: &LocalUserSpec,
) -> Result<String, String> {
    if let Some(p) = username_problem(&user.name) {
        return Err(format!("name {p}"));
    }
    let mut tenants = lock(&emu.tenants);
    let tenant = tenants
        .get_mut(&domain.to_lowercase())
        .ok_or("no such tenant")?;
    if let Some(clash) = tenant.clash(Some(&user.name), Some(&user.extension_number), None) {
        return Err(clash);
    }
    let mut fields = as_map(json!({"name": user.name, "password": user.password,
        "display_name": user.display_name, "role": "StandardUser", "enabled": true,
        "extension_number": user.extension_number}));
    if let Some(email) = &user.email {
        fields.insert("email".into(), Value::from(email.clone()));
    }
    Ok(emu.insert_user(tenant, fields, None))
}

type Emu = State<Arc<Inner>>;

fn emulator(emu: &Arc<Inner>) -> PbxEmulator {
    PbxEmulator { inner: emu.clone() }
}

fn refused(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

/// `/_pbx/…`.
pub(crate) fn routes() -> axum::Router<Arc<Inner>> {
    axum::Router::new()
        .route("/_pbx/stats", get(stats))
        .route("/_pbx/reset_stats", post(reset_stats))
        .route("/_pbx/faults", post(set_faults))
        .route("/_pbx/token_lifetime", post(token_lifetime))
        .route("/_pbx/tenants/{domain}/users", get(users).post(new_user))
        .route("/_pbx/tenants/{domain}/users/{id}", post(edit_user))
        .route(
            "/_pbx/tenants/{domain}/users/{id}/destroy",
            post(delete_user),
        )
        .route("/_pbx/tenants/{domain}/contacts", get(contacts))
}

async fn stats(State(emu): Emu) -> Response {
    Json(emulator(&emu).stats()).into_response()
}

async fn reset_stats(State(emu): Emu) -> StatusCode {
    emulator(&emu).reset_stats();
    StatusCode::NO_CONTENT
}

async fn set_faults(State(emu): Emu, Json(faults): Json<PbxFaults>) -> StatusCode {
    emulator(&emu).set_faults(faults);
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
struct Lifetime {
    seconds: u64,
}

async fn token_lifetime(State(emu): Emu, Json(l): Json<Lifetime>) -> StatusCode {
    emulator(&emu).set_token_lifetime(std::time::Duration::from_secs(l.seconds));
    StatusCode::NO_CONTENT
}

async fn users(State(emu): Emu, Path(domain): Path<String>) -> Response {
    Json(emulator(&emu).users(&domain)).into_response()
}

async fn contacts(State(emu): Emu, Path(domain): Path<String>) -> Response {
    Json(emulator(&emu).contacts(&domain)).into_response()
}

#[derive(serde::Deserialize)]
struct NewLocal {
    name: String,
    extension_number: String,
    email: Option<String>,
    display_name: Option<String>,
    password: String,
}

async fn new_user(
    State(emu): Emu,
    Path(domain): Path<String>,
    Json(u): Json<NewLocal>,
) -> Response {
    let spec = LocalUserSpec {
        display_name: u.display_name.unwrap_or_else(|| u.name.clone()),
        name: u.name,
        extension_number: u.extension_number,
        email: u.email,
        password: u.password,
    };
    match add_local_user(&emu, &domain, &spec) {
        Ok(id) => (StatusCode::CREATED, Json(json!({ "id": id }))).into_response(),
        Err(e) => refused(e),
    }
}

async fn edit_user(
    State(emu): Emu,
    Path((domain, id)): Path<(String, String)>,
    Json(fields): Json<Value>,
) -> Response {
    if let Some(p) = fields
        .get("voicemail_pin")
        .and_then(Value::as_str)
        .and_then(pin_problem)
    {
        return refused(format!("voicemail_pin {p}"));
    }
    match emulator(&emu).edit_user(&domain, &id, fields) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => refused(e),
    }
}

async fn delete_user(State(emu): Emu, Path((domain, id)): Path<(String, String)>) -> StatusCode {
    if emulator(&emu).delete_user(&domain, &id) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}
