//! Sign-in (`POST /login`), the current session (`GET /login`) and `POST
//! /auth/refresh_token`. The `domain` of a sign-in picks the tenant; any enabled user of
//! it may sign in (administrators and standard users alike), and the session is tied to
//! that (tenant, user). A refresh token works once and ends the access token it came with.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::state::{Inner, rfc3339};
use super::wire::{Answer, Fail, Op, caller, json_body};

const LOGIN: Op = Op::post("/login");
const REFRESH: Op = Op::post("/auth/refresh_token");

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `POST /login {username, password, domain}`.
pub(crate) async fn login(State(emu): State<Arc<Inner>>, bytes: Bytes) -> Answer {
    let v = json_body(&emu, LOGIN, &bytes)?;
    let (username, password) = (text(&v, "username"), text(&v, "password"));
    let domain = text(&v, "domain").to_ascii_lowercase();
    // One message for every wrong part, as a real sign-in does not tell which was wrong.
    let refused = || Fail::unauthorized("wrong username, password or domain");
    let found = emu.with_tenant(&domain, |t| {
        let user = t.user_named(username)?;
        (user.get("password") == password)
            .then(|| (user.id.clone(), user.role().to_string(), user.enabled()))
    });
    let (user_id, role, enabled) = found.flatten().ok_or_else(refused)?;
    if !enabled {
        return Err(Fail::forbidden(format!(
            "the user {username} is disabled and cannot sign in"
        )));
    }
    lock_stats(&emu, |s| s.logins += 1);
    let issued = emu.open_session(&domain, &user_id);
    Ok(Json(json!({
        "access_token": issued.access,
        "refresh_token": issued.refresh,
        "token_type": "Bearer",
        "expires_in": issued.lifetime_secs,
        "expires_at": rfc3339(issued.expires_at),
        "role": role,
        "id": user_id,
        "domain": domain,
    }))
    .into_response())
}

/// `GET /login`: who the bearer token belongs to.
pub(crate) async fn current(State(emu): State<Arc<Inner>>, headers: HeaderMap) -> Answer {
    let c = caller(&emu, &headers)?;
    let user = emu.with_tenant(&c.domain, |t| {
        t.user(&c.user_id).map(|u| {
            (
                u.get("display_name").to_string(),
                u.get("extension_number").to_string(),
            )
        })
    });
    let (display_name, extension_number) = user.flatten().unwrap_or_default();
    let expires_in = c.expires_at.saturating_sub(emu.now_ms()) / 1000;
    Ok(Json(json!({
        "access_token": c.access_token,
        "expires_at": rfc3339(c.expires_at),
        "expires_in": expires_in,
        "role": c.role,
        "id": c.user_id,
        "name": c.name,
        "display_name": display_name,
        "extension_number": extension_number,
        "domain": c.domain,
    }))
    .into_response())
}

/// `POST /auth/refresh_token {refresh_token}`.
pub(crate) async fn refresh(State(emu): State<Arc<Inner>>, bytes: Bytes) -> Answer {
    let v = json_body(&emu, REFRESH, &bytes)?;
    let session = emu
        .redeem(text(&v, "refresh_token"))
        .ok_or_else(|| Fail::unauthorized("the refresh token is unknown, used or expired"))?;
    // A user deleted or disabled since the sign-in gets no new token.
    let allowed = emu.with_tenant(&session.domain, |t| {
        t.user(&session.user_id).is_some_and(|u| u.enabled())
    });
    if allowed != Some(true) {
        return Err(Fail::unauthorized("the user can no longer sign in"));
    }
    lock_stats(&emu, |s| s.refreshes += 1);
    let issued = emu.open_session(&session.domain, &session.user_id);
    Ok(Json(json!({
        "token_type": "Bearer",
        "access_token": issued.access,
        "refresh_token": issued.refresh,
        "expires_in": issued.lifetime_secs,
    }))
    .into_response())
}

fn lock_stats(emu: &Inner, f: impl FnOnce(&mut super::PbxStats)) {
    f(&mut super::state::lock(&emu.stats));
}
