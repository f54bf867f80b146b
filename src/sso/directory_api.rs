//! The directory as signed-in users see it through the gateway: who they are
//! (`/ms365/directory/me`), the tenant's extensions (`/ms365/directory/users?q=`) and their
//! personal plus the company contacts (`/ms365/directory/contacts?q=`), in
//! PortSIP's field names, with the avatar pointing at the synced photo. Only the session's
//! own tenant is ever visible.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::session::{SessionInfo, session_cookie};
use super::state::Sso;
use crate::edge::problem::render;
use crate::store::PbxUser;

/// Most users one search returns.
const MAX_RESULTS: i64 = 200;

#[derive(Debug, Default, Deserialize)]
pub struct SearchQuery {
    pub q: Option<String>,
}

pub async fn me(State(sso): State<Arc<Sso>>, headers: HeaderMap) -> Response {
    let info = match signed_in(&sso, &headers).await {
        Ok(info) => info,
        Err(r) => return r,
    };
    match sso.store.pbx_user(&info.tenant_id, &info.pbx_user_id).await {
        Ok(Some(user)) => Json(with_session(user_json(&user), &info)).into_response(),
        // Bound users may not have a synced PBX record: answer with what the session knows.
        Ok(None) => Json(session_json(&info)).into_response(),
        Err(e) => unavailable(&e),
    }
}

pub async fn users(
    State(sso): State<Arc<Sso>>,
    headers: HeaderMap,
    Query(q): Query<SearchQuery>,
) -> Response {
    let (info, q) = match search_request(&sso, &headers, q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let q = q.as_deref().unwrap_or_default();
    match sso
        .store
        .search_pbx_users(&info.tenant_id, q, MAX_RESULTS)
        .await
    {
        Ok(found) => Json(json!({ "items": found.iter().map(user_json).collect::<Vec<_>>() }))
            .into_response(),
        Err(e) => unavailable(&e),
    }
}

pub async fn contacts(
    State(sso): State<Arc<Sso>>,
    headers: HeaderMap,
    Query(q): Query<SearchQuery>,
) -> Response {
    let (info, q) = match search_request(&sso, &headers, q).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let q = q.as_deref();
    let limit = MAX_RESULTS as usize;
    let personal = sso
        .store
        .personal_contacts(&info.tenant_id, &info.pbx_user_id, q, limit)
        .await;
    let company = sso.store.company_contacts(&info.tenant_id, q, limit).await;
    match (personal, company) {
        (Ok(p), Ok(c)) => {
            Json(json!({ "items": p.into_iter().chain(c).collect::<Vec<_>>() })).into_response()
        }
        (Err(e), _) | (_, Err(e)) => unavailable(&e),
    }
}

/// The session and the trimmed search text (`None` when empty) of a search request.
async fn search_request(
    sso: &Sso,
    headers: &HeaderMap,
    q: SearchQuery,
) -> Result<(SessionInfo, Option<String>), Response> {
    let info = signed_in(sso, headers).await?;
    let q = q.q.unwrap_or_default();
    if q.len() > 100 {
        return Err(render(
            StatusCode::BAD_REQUEST,
            "BAD_QUERY",
            "q is longer than 100 characters",
            headers,
        ));
    }
    let q = q.trim();
    Ok((info, (!q.is_empty()).then(|| q.to_string())))
}

async fn signed_in(sso: &Sso, headers: &HeaderMap) -> Result<SessionInfo, Response> {
    let unauthenticated = || {
        render(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "sign in first",
            headers,
        )
    };
    let cookie = session_cookie(headers).ok_or_else(unauthenticated)?;
    match sso.sessions.resolve(cookie).await {
        Ok(Some(info)) => Ok(info),
        Ok(None) => Err(unauthenticated()),
        Err(e) => Err(unavailable(&e)),
    }
}

fn unavailable(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "directory lookup failed");
    render(
        StatusCode::SERVICE_UNAVAILABLE,
        "NOT_READY",
        "the directory is unavailable; try again",
        &HeaderMap::new(),
    )
}

fn user_json(u: &PbxUser) -> Value {
    let p = &u.profile;
    json!({
        "id": u.id,
        "extension_number": u.extension_number,
        "name": u.username,
        "display_name": p.display_name,
        "first_name": p.first_name,
        "last_name": p.last_name,
        "email": p.email,
        "mobile_phone": p.mobile_phone,
        "work_phone": p.work_phone,
        "title": p.title,
        "department": p.department,
        "office": p.office,
        "avatar_file_url": format!("/ms365/photos/{}", u.id),
    })
}

fn session_json(info: &SessionInfo) -> Value {
    let user = json!({
        "id": info.pbx_user_id,
        "extension_number": info.extension,
        "display_name": info.display_name,
        "email": info.email,
        "avatar_file_url": format!("/ms365/photos/{}", info.pbx_user_id),
    });
    with_session(user, info)
}

fn with_session(mut user: Value, info: &SessionInfo) -> Value {
    user["domain"] = json!(info.domain);
    user["role"] = json!(info.role);
    user
}
