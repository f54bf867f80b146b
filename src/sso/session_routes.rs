//! The HTTP face of PBX sessions: `GET /ms365/jwks.json` (the session-token public keys),
//! `GET /ms365/session` (a session token for the same-origin page holding the cookie, and
//! whether the PBX knows the user: `pbx.state`, `pbx.message`) and
//! `GET|POST /ms365/logout`.
//!
//! The session endpoint hands out a bearer token, so it refuses anything a browser marks as
//! cross-origin (`Sec-Fetch-Site`, `Origin`); SameSite=Lax alone would still let a
//! same-site sibling host read it. Logout, by GET or POST, gets the same check (logout
//! CSRF: a link on another site must not end the session).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use serde::Deserialize;
use serde_json::json;

use super::pbx_state::PbxState;
use super::session::{Sessions, clear_cookie_header, session_cookie};
use crate::edge::conn::ConnInfo;
use crate::edge::problem;
use crate::web::origin::is_cross_origin;

/// Where logout lands when no acceptable `return_to` is given.
const LOGGED_OUT: &str = "/ms365/?logged_out=1";

/// The session routes, to be merged into the gateway router.
pub fn routes(sessions: Arc<Sessions>) -> Router {
    Router::new()
        .route("/ms365/jwks.json", get(jwks))
        .route("/ms365/session", get(session))
        .route("/ms365/logout", get(logout).post(logout))
        .with_state(sessions)
}

async fn jwks(State(sessions): State<Arc<Sessions>>) -> Response {
    let mut response = axum::Json(sessions.keys().jwks()).into_response();
    // Short enough that a rotation reaches verifiers long before the old key is retired.
    response.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

async fn session(
    State(sessions): State<Arc<Sessions>>,
    conn: Option<axum::Extension<ConnInfo>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let proto = conn.as_ref().map_or("https", |c| c.proto);
    if is_cross_origin(&headers, &uri, proto) {
        return json_error(
            StatusCode::FORBIDDEN,
            "CROSS_ORIGIN",
            "session tokens are only given to pages of this site",
        );
    }
    let unauthenticated = || {
        json_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "no valid session; sign in again",
        )
    };
    let Some(cookie) = session_cookie(&headers) else {
        return unauthenticated();
    };
    let info = match sessions.resolve(cookie).await {
        Ok(Some(info)) => info,
        Ok(None) => return unauthenticated(),
        Err(e) => return unavailable(&e),
    };
    // A client signing in to one tenant must not pick up another tenant's session.
    let asked_domain = uri
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("domain="));
    if asked_domain.is_some_and(|d| !d.eq_ignore_ascii_case(&info.domain)) {
        return json_error(
            StatusCode::FORBIDDEN,
            "WRONG_TENANT",
            "the session belongs to another organisation",
        );
    }
    let (token, expires_in) = match sessions.token(&info) {
        Ok(t) => t,
        Err(e) => return unavailable(&e),
    };
    let pbx = match sessions.pbx() {
        Some(pbx) => pbx.state(&info.id_hash).await,
        None => PbxState::NoPbx,
    };
    let body = json!({
        "pbx": { "state": pbx.as_str(), "message": pbx.message() },
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "extension": info.extension,
        "domain": info.domain,
        "display_name": info.display_name,
        "role": info.role,
    });
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Debug, Deserialize)]
struct LogoutQuery {
    return_to: Option<String>,
}

async fn logout(
    State(sessions): State<Arc<Sessions>>,
    conn: Option<axum::Extension<ConnInfo>>,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<LogoutQuery>, QueryRejection>,
) -> Response {
    let proto = conn.as_ref().map_or("https", |c| c.proto);
    // GET too: a link or image on another site must not sign the user out.
    if is_cross_origin(&headers, &uri, proto) {
        return problem::render(
            StatusCode::FORBIDDEN,
            "CROSS_ORIGIN",
            "sign-out must be started from this site",
            &headers,
        );
    }
    if let Some(cookie) = session_cookie(&headers)
        && let Err(e) = sessions.end(cookie).await
    {
        // The cookie is cleared anyway, but the user must know the session may live on.
        tracing::error!(error = %e, "cannot revoke a session at logout");
        let mut response = problem::render(
            StatusCode::SERVICE_UNAVAILABLE,
            "NOT_READY",
            "signing out failed; please try again",
            &headers,
        );
        response
            .headers_mut()
            .insert(SET_COOKIE, clear_cookie_header());
        return response;
    }
    let target = query
        .ok()
        .and_then(|Query(q)| q.return_to)
        .and_then(|r| crate::web::return_to::validate(&r).map(str::to_string))
        .unwrap_or_else(|| LOGGED_OUT.to_string());
    redirect_clearing_cookie(&target)
}

fn redirect_clearing_cookie(target: &str) -> Response {
    let location =
        HeaderValue::from_str(target).unwrap_or_else(|_| HeaderValue::from_static(LOGGED_OUT));
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::FOUND;
    let h = response.headers_mut();
    h.insert(LOCATION, location);
    h.insert(SET_COOKIE, clear_cookie_header());
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// PortSIP's error shape, always JSON: these endpoints are called by scripts.
fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "code": code, "message": message }] }).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn unavailable(e: &super::session::SessionError) -> Response {
    tracing::error!(error = %e, "session lookup failed");
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "NOT_READY",
        "sessions are unavailable; please try again",
    )
}
