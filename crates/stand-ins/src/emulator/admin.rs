//! The HTTP control API under `/_emulator/` (not a Microsoft path): what the demo and
//! out-of-process tests use to register apps, upload certificates, rotate keys, inject
//! faults, read statistics, age the clock, expire delta tokens and change users, contacts
//! and photos. Each route is a thin wrapper over the in-process method of the same name.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::Emulator;
use super::faults::{Faults, RouteClass};
use super::model::{AppRegistration, ContactPatch, EmulatorError, NewContact, NewUser, UserPatch};

pub(crate) fn routes() -> Router<Emulator> {
    Router::new()
        .route("/_emulator/tenants", get(tenants))
        .route("/_emulator/apps", post(register_app))
        .route(
            "/_emulator/apps/{client_id}/certificates",
            post(upload_certificate),
        )
        .route("/_emulator/keys/rotate", post(rotate_keys))
        .route("/_emulator/keys/retire", post(retire_keys))
        .route("/_emulator/faults", post(set_faults))
        .route("/_emulator/stats", get(stats))
        .route("/_emulator/clock/advance", post(advance_clock))
        .route("/_emulator/tenants/{dir}/expire-delta", post(expire_delta))
        .route("/_emulator/tenants/{dir}/auth-code", post(auth_code))
        .route("/_emulator/tenants/{dir}/users", get(users).post(add_user))
        .route(
            "/_emulator/tenants/{dir}/users/{id}",
            patch(update_user).delete(delete_user),
        )
        .route(
            "/_emulator/tenants/{dir}/users/{id}/restore",
            post(restore_user),
        )
        .route(
            "/_emulator/tenants/{dir}/users/{id}/photo",
            delete(remove_photo).put(put_photo),
        )
        .route(
            "/_emulator/tenants/{dir}/users/{id}/contacts",
            get(contacts).post(add_contact),
        )
        .route(
            "/_emulator/tenants/{dir}/users/{id}/contacts/{cid}",
            patch(update_contact).delete(delete_contact),
        )
}

struct AdminError(EmulatorError);

impl From<EmulatorError> for AdminError {
    fn from(e: EmulatorError) -> Self {
        AdminError(e)
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = match self.0 {
            EmulatorError::DuplicateUser(_) | EmulatorError::DuplicateApp(_) => {
                StatusCode::CONFLICT
            }
            EmulatorError::InvalidCertificate(_) | EmulatorError::Invalid(_) => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::NOT_FOUND,
        };
        (status, Json(json!({"error": self.0.to_string()}))).into_response()
    }
}

type Reply = Result<Response, AdminError>;

fn ok<T: serde::Serialize>(value: T) -> Reply {
    Ok(Json(value).into_response())
}

/// `?tenant=` names the directory; with a single tenant it may be left out.
fn tenant_param(emu: &Emulator, q: &HashMap<String, String>) -> Result<String, AdminError> {
    match q.get("tenant") {
        Some(t) => Ok(t.clone()),
        None if emu.inner.tenants.len() == 1 => Ok(emu.inner.tenants[0].id.clone()),
        None => Err(EmulatorError::Invalid("name the directory with ?tenant=".into()).into()),
    }
}

async fn tenants(State(emu): State<Emulator>) -> Reply {
    let list: Vec<_> = emu
        .tenants()
        .into_iter()
        .map(|(id, domain)| {
            let groups: Vec<_> = emu
                .groups(&id)
                .into_iter()
                .map(|(gid, name)| json!({"id": gid, "displayName": name}))
                .collect();
            json!({"id": id, "domain": domain, "groups": groups})
        })
        .collect();
    ok(list)
}

async fn register_app(
    State(emu): State<Emulator>,
    Query(q): Query<HashMap<String, String>>,
    Json(app): Json<AppRegistration>,
) -> Reply {
    let client_id = emu.try_register_app(&tenant_param(&emu, &q)?, app)?;
    ok(json!({"client_id": client_id}))
}

async fn upload_certificate(
    State(emu): State<Emulator>,
    Path(client_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    pem: String,
) -> Reply {
    ok(emu.upload_certificate(&tenant_param(&emu, &q)?, &client_id, &pem)?)
}

async fn rotate_keys(State(emu): State<Emulator>) -> Reply {
    emu.rotate_signing_key();
    ok(json!({"kids": emu.signing_key_ids()}))
}

async fn retire_keys(State(emu): State<Emulator>) -> Reply {
    emu.retire_old_signing_keys();
    ok(json!({"kids": emu.signing_key_ids()}))
}

#[derive(Debug, Deserialize)]
struct FaultsBody {
    class: RouteClass,
    #[serde(default)]
    rate_429: f64,
    #[serde(default)]
    retry_after: Option<f64>,
    #[serde(default)]
    rate_503: f64,
    #[serde(default)]
    rate_reset: f64,
    #[serde(default)]
    latency_ms: u64,
}

async fn set_faults(State(emu): State<Emulator>, Json(b): Json<FaultsBody>) -> Reply {
    let faults = Faults {
        rate_429: b.rate_429,
        retry_after: b.retry_after,
        rate_503: b.rate_503,
        rate_reset: b.rate_reset,
        latency: Duration::from_millis(b.latency_ms),
    };
    emu.set_faults(b.class, faults);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn stats(State(emu): State<Emulator>) -> Reply {
    ok(emu.stats())
}

#[derive(Debug, Deserialize)]
struct Advance {
    seconds: u64,
}

async fn advance_clock(State(emu): State<Emulator>, Json(a): Json<Advance>) -> Reply {
    emu.advance_clock(Duration::from_secs(a.seconds));
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn expire_delta(State(emu): State<Emulator>, Path(dir): Path<String>) -> Reply {
    emu.inner.require_tenant(&dir)?;
    emu.expire_delta_tokens(&dir);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
struct CodeRequest {
    client_id: String,
    redirect_uri: String,
    user: String,
    code_challenge: String,
    nonce: String,
}

async fn auth_code(
    State(emu): State<Emulator>,
    Path(dir): Path<String>,
    Json(r): Json<CodeRequest>,
) -> Reply {
    let code = emu.auth_code_for(
        &dir,
        &r.client_id,
        &r.redirect_uri,
        &r.user,
        &r.code_challenge,
        &r.nonce,
    )?;
    ok(json!({"code": code}))
}

async fn users(State(emu): State<Emulator>, Path(dir): Path<String>) -> Reply {
    emu.inner.require_tenant(&dir)?;
    ok(emu.users(&dir))
}

async fn add_user(
    State(emu): State<Emulator>,
    Path(dir): Path<String>,
    Json(new): Json<NewUser>,
) -> Reply {
    Ok((StatusCode::CREATED, Json(emu.try_add_user(&dir, new)?)).into_response())
}

async fn update_user(
    State(emu): State<Emulator>,
    Path((dir, id)): Path<(String, String)>,
    Json(p): Json<UserPatch>,
) -> Reply {
    ok(emu.try_update_user(&dir, &id, p)?)
}

async fn delete_user(
    State(emu): State<Emulator>,
    Path((dir, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    match q.get("hard").map(String::as_str) {
        Some("true" | "1") => emu.try_hard_delete_user(&dir, &id)?,
        _ => emu.try_delete_user(&dir, &id)?,
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn restore_user(
    State(emu): State<Emulator>,
    Path((dir, id)): Path<(String, String)>,
) -> Reply {
    ok(emu.try_restore_user(&dir, &id)?)
}

async fn put_photo(
    State(emu): State<Emulator>,
    Path((dir, id)): Path<(String, String)>,
    body: Bytes,
) -> Reply {
    emu.try_set_photo(&dir, &id, Some(body.to_vec()))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove_photo(
    State(emu): State<Emulator>,
    Path((dir, id)): Path<(String, String)>,
) -> Reply {
    emu.try_set_photo(&dir, &id, None)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn contacts(State(emu): State<Emulator>, Path((dir, id)): Path<(String, String)>) -> Reply {
    ok(emu.try_contacts(&dir, &id)?)
}

async fn add_contact(
    State(emu): State<Emulator>,
    Path((dir, id)): Path<(String, String)>,
    Json(new): Json<NewContact>,
) -> Reply {
    Ok((
        StatusCode::CREATED,
        Json(emu.try_add_contact(&dir, &id, new)?),
    )
        .into_response())
}

async fn update_contact(
    State(emu): State<Emulator>,
    Path((dir, id, cid)): Path<(String, String, String)>,
    Json(p): Json<ContactPatch>,
) -> Reply {
    ok(emu.try_update_contact(&dir, &id, &cid, p)?)
}

async fn delete_contact(
    State(emu): State<Emulator>,
    Path((dir, id, cid)): Path<(String, String, String)>,
) -> Reply {
    emu.try_delete_contact(&dir, &id, &cid)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
