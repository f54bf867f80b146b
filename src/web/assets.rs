//! The gateway's embedded static assets under `/ms365/assets/` (the admin page's script and
//! stylesheet, and `ms365.css`, the look the sign-in page, the sign-in error pages and the
//! admin page share) and the headers every gateway-rendered page carries. Assets are linked
//! as `/ms365/assets/NAME?v=HASH` ([`asset_url`]) and cached for a year when the hash
//! matches, revalidated (`ETag`) otherwise.

use std::sync::LazyLock;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery};
use axum::routing::get;
use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::edge::problem::HttpError;

/// The Content-Security-Policy of every page the gateway renders itself.
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                       script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Where the assets live.
pub const ASSETS_PREFIX: &str = "/ms365/assets/";

pub(crate) const ADMIN_JS: &str = include_str!("../../assets/admin/admin.js");
pub(crate) const ADMIN_CSS: &str = include_str!("../../assets/admin/admin.css");
pub(crate) const SHARED_CSS: &str = include_str!("../../assets/admin/ms365.css");

/// The assets served under [`ASSETS_PREFIX`]: name, content type, body.
pub const ASSETS: [(&str, &str, &str); 3] = [
    ("admin.js", "text/javascript; charset=utf-8", ADMIN_JS),
    ("admin.css", "text/css; charset=utf-8", ADMIN_CSS),
    ("ms365.css", "text/css; charset=utf-8", SHARED_CSS),
];

/// Each asset's content hash (the first 12 hex digits of its SHA-256), in [`ASSETS`] order.
static VERSIONS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|(_, _, body)| {
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body.as_bytes());
            crate::encoding::hex_lower(&d.as_ref()[..6])
        })
        .collect()
});

fn find_asset(name: &str) -> Option<(usize, &'static str, &'static str)> {
    ASSETS
        .iter()
        .enumerate()
        .find(|(_, (n, _, _))| *n == name)
        .map(|(i, (_, ct, body))| (i, *ct, *body))
}

/// The URL to link an asset by (`/ms365/assets/ms365.css?v=…`), cacheable for a year.
/// Unknown names get their plain path.
pub fn asset_url(name: &str) -> String {
    match find_asset(name) {
        Some((i, _, _)) => format!("{ASSETS_PREFIX}{name}?v={}", VERSIONS[i]),
        None => format!("{ASSETS_PREFIX}{name}"),
    }
}

/// The stylesheet shared by the sign-in page, the sign-in error pages and the admin page.
pub fn shared_stylesheet_url() -> String {
    asset_url("ms365.css")
}

/// The headers every gateway-rendered HTML page carries: [`CSP`], `nosniff`, no framing,
/// same-origin referrers.
pub fn set_page_security_headers(headers: &mut HeaderMap) {
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
}

/// `GET /ms365/assets/{name}`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/ms365/assets/{name}", get(asset))
}

async fn asset(
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    request: HeaderMap,
) -> Response<Body> {
    let Some((i, content_type, body)) = find_asset(&name) else {
        return HttpError::NotFound.to_response(&request);
    };
    let version = VERSIONS[i].as_str();
    let asked = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("v="));
    let etag = format!("\"{version}\"");
    let fresh = request
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(Body::from(body))
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static(if asked == Some(version) {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(ETAG, v);
    }
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    response
}
