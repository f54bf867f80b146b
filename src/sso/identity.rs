//! The session on proxied requests: the gateway's own cookies never reach the PBX, a valid
//! session becomes the `X-PBX-*` identity headers and the user's own PBX token as the bearer
//! (or, if configured and there is none, the gateway's session token), unless the client
//! sent its own `Authorization`; and `protected_paths` (matched on the canonical path, so
//! `/%70ortal/` or `//portal/` is `/portal/`) without a session send browsers to sign in
//! while API, XHR and WebSocket requests get a 401 — never a redirect to Microsoft they
//! cannot follow.

use std::sync::Arc;

use axum::body::Body;
use axum::response::IntoResponse;
use http::header::{ACCEPT, AUTHORIZATION, COOKIE, LOCATION};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};

use super::flow::FLOW_COOKIE_PREFIX;
use super::session::{SESSION_COOKIE, SessionInfo, session_cookie};
use super::state::Sso;
use crate::edge::added_headers::AddedHeaders;
use crate::edge::problem::render;

pub const X_PBX_TENANT: HeaderName = HeaderName::from_static("x-pbx-tenant");
pub const X_PBX_DOMAIN: HeaderName = HeaderName::from_static("x-pbx-domain");
pub const X_PBX_USER: HeaderName = HeaderName::from_static("x-pbx-user");
pub const X_PBX_EXTENSION: HeaderName = HeaderName::from_static("x-pbx-extension");
pub const X_PBX_ROLE: HeaderName = HeaderName::from_static("x-pbx-role");

/// What the proxy adds to a request: the identity headers and, when the user's PBX token
/// went as the bearer, which one (so a refusal by the PBX can renew it and retry). In wire
/// form: the proxy writes them after the request's own, sanitised headers.
#[derive(Default)]
pub struct Identity {
    pub headers: AddedHeaders,
    pub pbx: Option<PbxBearer>,
}

/// The PBX token a request carries and the session it belongs to.
pub struct PbxBearer {
    pub session: Arc<SessionInfo>,
    pub token: String,
}

/// Resolves the request's session, removes the gateway's cookies, and returns what to add
/// for the PBX — or the answer to give instead when a protected path has no session.
pub async fn identify(sso: &Sso, req: &mut Request<Body>) -> Result<Identity, Response<Body>> {
    if cross_site_upgrade(req) {
        return Err(render(
            StatusCode::FORBIDDEN,
            "CROSS_ORIGIN",
            "a WebSocket with this site's session must be opened by a page of this site",
            req.headers(),
        ));
    }
    // The store and PBX-token lookups are boxed: their futures (a database query, a call
    // to the PBX) are large, and every proxied request's future, copied once per request,
    // would otherwise be as large as they are. A session the cache knows needs neither.
    let session = match session_cookie(req.headers()) {
        Some(value) => match sso.sessions.resolve_cached(value) {
            Ok(cached) => cached,
            Err(miss) => Box::pin(sso.sessions.resolve_missed(miss))
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "session lookup failed; treating the request as anonymous");
                    None
                }),
        },
        None => None,
    };
    strip_gateway_cookies(req.headers_mut());
    let Some(info) = session else {
        if is_protected(sso, req.uri().path()) {
            return Err(unauthenticated(req));
        }
        return Ok(Identity::default());
    };
    // A client that brings its own credentials keeps them.
    if req.headers().contains_key(AUTHORIZATION) {
        return Ok(Identity {
            headers: identity_headers(&info, None),
            pbx: None,
        });
    }
    // Checked first: the boxed lookup allocates, and without a PBX API it finds nothing.
    let pbx_token = match sso.pbx.enabled() {
        true => Box::pin(sso.pbx.bearer(&info)).await,
        false => None,
    };
    if let Some(token) = pbx_token {
        return Ok(Identity {
            headers: identity_headers(&info, Some(&token)),
            pbx: Some(PbxBearer {
                session: info,
                token,
            }),
        });
    }
    let session_token = match sso.config.sso.forward_session_token {
        true => signed_session_token(sso, &info),
        false => None,
    };
    Ok(Identity {
        headers: identity_headers(&info, session_token.as_deref()),
        pbx: None,
    })
}

/// The gateway's session token for `info`, for PBX setups that read it as the bearer.
fn signed_session_token(sso: &Sso, info: &SessionInfo) -> Option<String> {
    match sso.sessions.token(info) {
        Ok((token, _)) => Some(token),
        Err(e) => {
            tracing::warn!(error = %e, "could not sign the session token for the PBX");
            None
        }
    }
}

/// The identity headers of `info` with `token` as the bearer: what a request sent again
/// after a renewal carries.
pub fn with_bearer(info: &SessionInfo, token: &str) -> AddedHeaders {
    identity_headers(info, Some(token))
}

/// The `X-PBX-*` fields of `info` and, with a `bearer`, `Authorization: Bearer <bearer>`.
/// A field whose value is not a valid header value is left out.
fn identity_headers(info: &SessionInfo, bearer: Option<&str>) -> AddedHeaders {
    let extension = info.extension.as_deref().unwrap_or("");
    let fields = [
        (&X_PBX_TENANT, info.tenant_id.as_str()),
        (&X_PBX_DOMAIN, &info.domain),
        (&X_PBX_USER, &info.pbx_user_id),
        (&X_PBX_EXTENSION, extension),
        (&X_PBX_ROLE, info.role.as_str()),
    ];
    // Names, ": " and CRLF, plus the bearer's line.
    let size: usize = fields
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let mut added = AddedHeaders::builder(size + bearer.map_or(0, |t| t.len() + 30));
    for (name, value) in fields {
        added.push(name, value);
    }
    if let Some(token) = bearer {
        added.push(&AUTHORIZATION, &format!("Bearer {token}"));
    }
    added.build()
}

/// A WebSocket upgrade carrying the session cookie from a page of another origin: the
/// cookie would otherwise let any site open the user's PBX socket (cross-site WebSocket
/// hijacking; SameSite=Lax does not stop a same-site sibling).
fn cross_site_upgrade(req: &Request<Body>) -> bool {
    let h = req.headers();
    if !crate::edge::headers::is_upgrade_request(h) || session_cookie(h).is_none() {
        return false;
    }
    let proto =
        (req.extensions().get::<crate::edge::conn::ConnInfo>()).map_or("https", |c| c.proto);
    crate::web::origin::is_cross_origin(h, req.uri(), proto)
}

fn is_protected(sso: &Sso, path: &str) -> bool {
    sso.config.sso.protected_paths.covers(path)
}

/// A browser navigation goes to the login page; everything else gets 401 JSON.
fn unauthenticated(req: &Request<Body>) -> Response<Body> {
    let h = req.headers();
    let navigation = h.get("sec-fetch-mode").is_some_and(|v| v == "navigate")
        || (req.method() == http::Method::GET
            && h.get(ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("text/html"))
            && h.get("x-requested-with").is_none()
            && !h.contains_key(http::header::UPGRADE));
    if !navigation {
        let mut json = HeaderMap::new();
        json.insert(ACCEPT, HeaderValue::from_static("application/json"));
        return render(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "sign in first",
            &json,
        );
    }
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut url = reqwest::Url::parse("https://gateway.invalid/ms365/").expect("static URL");
    url.query_pairs_mut().append_pair("return_to", path);
    let location = format!("{}?{}", url.path(), url.query().unwrap_or_default());
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, v);
    }
    response
}

/// Removes the session and flow cookies from the Cookie header(s) the PBX will see. Works on
/// bytes: a header with non-UTF-8 bytes in another cookie must not carry ours through.
pub fn strip_gateway_cookies(headers: &mut HeaderMap) {
    let ours = |pair: &[u8]| {
        let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
        name == SESSION_COOKIE.as_bytes() || name.starts_with(FLOW_COOKIE_PREFIX.as_bytes())
    };
    // Most proxied requests carry none of ours: leave their headers untouched.
    let any_ours = headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .any(|pair| ours(pair.trim_ascii()));
    if !any_ours {
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for pair in (headers.get_all(COOKIE).iter()).flat_map(|v| v.as_bytes().split(|b| *b == b';')) {
        let pair = pair.trim_ascii();
        if pair.is_empty() || ours(pair) {
            continue;
        }
        if !kept.is_empty() {
            kept.extend_from_slice(b"; ");
        }
        kept.extend_from_slice(pair);
    }
    headers.remove(COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_bytes(&kept)
    {
        headers.insert(COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_gateways_cookies_are_removed() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; __Host-pbx_session=secret; __Host-ms365_flow_abc=x"),
        );
        h.append(COOKIE, HeaderValue::from_static("b=2"));
        strip_gateway_cookies(&mut h);
        assert_eq!(h.get_all(COOKIE).iter().count(), 1);
        assert_eq!(h[COOKIE], "a=1; b=2");
        let mut only = HeaderMap::new();
        only.insert(
            COOKIE,
            HeaderValue::from_static("__Host-pbx_session=secret"),
        );
        strip_gateway_cookies(&mut only);
        assert!(only.get(COOKIE).is_none());
        let mut binary = HeaderMap::new();
        binary.insert(
            COOKIE,
            HeaderValue::from_bytes(b"pref=caf\xe9; __Host-pbx_session=secret").unwrap(),
        );
        strip_gateway_cookies(&mut binary);
        assert_eq!(binary[COOKIE].as_bytes(), b"pref=caf\xe9");
    }
}
