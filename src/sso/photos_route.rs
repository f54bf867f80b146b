//! `GET /ms365/photos/{user}`: the stored Microsoft 365 profile photo of a PBX user of the
//! signed-in user's own tenant, with an ETag and private caching. Another tenant's user,
//! a user without a synced photo, or an unknown user are all 404.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::json;

use super::session::session_cookie;
use super::state::Sso;

/// How long a browser may reuse a photo before asking again (with `If-None-Match`).
const CACHE: &str = "private, max-age=3600";

pub async fn photo(
    State(sso): State<Arc<Sso>>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    let session = match session_cookie(&headers) {
        Some(cookie) => match sso.sessions.resolve(cookie).await {
            Ok(session) => session,
            Err(e) => {
                tracing::error!(error = %e, "session lookup failed");
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "NOT_READY",
                    "sessions are unavailable; please try again",
                );
            }
        },
        None => None,
    };
    let Some(session) = session else {
        return json_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "sign in first");
    };
    let found = async {
        let Some(pbx_user) = sso.store.pbx_user(&session.tenant_id, &user).await? else {
            return Ok(None);
        };
        let Some(oid) = pbx_user.ms365_oid else {
            return Ok(None);
        };
        sso.store.photo(&session.tenant_id, &oid).await
    }
    .await;
    let photo = match found {
        Ok(Some(photo)) => photo,
        Ok(None) => return json_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no photo"),
        Err(e) => {
            tracing::error!(error = %e, "photo lookup failed");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "NOT_READY",
                "photos are unavailable; please try again",
            );
        }
    };
    let etag = quoted(&photo.etag);
    let not_modified = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag);
    let mut response = if not_modified {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::from(photo.bytes));
        if let Ok(ct) = HeaderValue::from_str(&photo.content_type) {
            r.headers_mut().insert(CONTENT_TYPE, ct);
            // The type comes from Microsoft's answer: never let a browser guess another.
            r.headers_mut().insert(
                http::header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
        }
        r
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static(CACHE));
    h.insert(VARY, HeaderValue::from_static("Cookie"));
    response
}

/// The stored ETag as an HTTP entity tag: Graph's `mediaEtag` is usually quoted already;
/// anything that is not a valid quoted tag is re-quoted from its safe characters.
fn quoted(etag: &str) -> String {
    let inner = etag
        .strip_prefix('"')
        .and_then(|e| e.strip_suffix('"'))
        .unwrap_or(etag);
    let safe: String = inner
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"')
        .collect();
    format!("\"{safe}\"")
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "code": code, "message": message }] }).to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn etags_are_quoted_once() {
        assert_eq!(super::quoted("\"BA09\""), "\"BA09\"");
        assert_eq!(super::quoted("BA09"), "\"BA09\"");
        assert_eq!(super::quoted("a\"b"), "\"ab\"");
    }
}
