//! Starting a sign-in: `GET /ms365/login` and PortSIP's `POST /api/login/by_microsoft` answer
//! 302 to the tenant's cloud `authorize` endpoint (code flow, PKCE S256, state, nonce) with
//! the redirect URI of the listener the request arrived on, never one built from `Host`.
//! Also `GET /ms365/info`, which tells clients whether to show the Microsoft icon.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Form, Query, State};
use axum::response::IntoResponse;
use http::header::{LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use serde::Deserialize;

use super::flow::{self, FlowState};
use super::pages::SignInProblem;
use super::session::ClientKind;
use super::state::Sso;
use crate::edge::conn::ConnInfo;
use crate::store::Tenant;

/// Query of `/ms365/login` (and form of `/api/login/by_microsoft`).
#[derive(Debug, Default, Deserialize)]
pub struct LoginRequest {
    pub domain: Option<String>,
    pub client: Option<String>,
    pub return_to: Option<String>,
    pub login_hint: Option<String>,
    pub domain_hint: Option<String>,
}

pub async fn login_get(
    State(sso): State<Arc<Sso>>,
    axum::Extension(conn): axum::Extension<ConnInfo>,
    headers: HeaderMap,
    Query(q): Query<LoginRequest>,
) -> Response<Body> {
    start(&sso, &conn, &headers, q)
        .await
        .unwrap_or_else(|p| p.render(&headers))
}

pub async fn login_post(
    State(sso): State<Arc<Sso>>,
    axum::Extension(conn): axum::Extension<ConnInfo>,
    headers: HeaderMap,
    Form(f): Form<LoginRequest>,
) -> Response<Body> {
    start(&sso, &conn, &headers, f)
        .await
        .unwrap_or_else(|p| p.render(&headers))
}

/// Where "Try again" starts a new sign-in.
pub fn retry_url(domain: &str, client: ClientKind) -> String {
    let mut url = reqwest::Url::parse("https://gateway.invalid/ms365/login").expect("static URL");
    url.query_pairs_mut()
        .append_pair("domain", domain)
        .append_pair("client", client.as_str());
    format!("{}?{}", url.path(), url.query().unwrap_or_default())
}

async fn start(
    sso: &Sso,
    conn: &ConnInfo,
    headers: &HeaderMap,
    q: LoginRequest,
) -> Result<Response<Body>, SignInProblem> {
    let client = match q.client.as_deref() {
        None | Some("") => ClientKind::Portal,
        Some(c) => ClientKind::parse(c)
            .ok_or_else(|| bad_request("BAD_CLIENT", "client must be \"portal\" or \"webrtc\""))?,
    };
    let return_to = match q.return_to.as_deref().filter(|r| !r.is_empty()) {
        None => None,
        Some(r) => Some(
            crate::web::return_to::validate(r)
                .ok_or_else(|| {
                    bad_request("BAD_RETURN_TO", "return_to must be a path on this site")
                })?
                .to_string(),
        ),
    };
    let tenant = tenant_for(sso, q.domain.as_deref()).await?;
    let settings = sso
        .store
        .ms365_settings(&tenant.id)
        .await
        .map_err(internal)?;
    if !settings.is_configured() {
        return Err(not_available("NOT_CONFIGURED", "Microsoft 365 sign-in is not set up for this organisation yet.")
            .hint("Your administrator must enter the Application (client) ID and Directory (tenant) ID on the Microsoft 365 Integration page."));
    }
    if !settings.sign_in_enabled() {
        return Err(not_available(
            "SSO_DISABLED",
            "Microsoft 365 sign-in is turned off for this organisation.",
        )
        .hint(
            "Sign in with your extension and password, or ask your administrator to enable it.",
        ));
    }
    if sso
        .keys
        .current_certificate(&tenant.id)
        .await
        .map_err(|e| internal(e.to_string()))?
        .is_none()
    {
        return Err(not_available("NO_CERTIFICATE", "Microsoft 365 sign-in is not ready: the key pair is missing.")
            .hint("Your administrator must generate a key pair and upload public_key.pem to the app registration."));
    }
    let listener = sso
        .listener(conn.listener_index)
        .ok_or_else(|| internal("unknown listener"))?;
    let flow = FlowState::new(
        &tenant.id,
        &tenant.domain,
        client,
        return_to,
        conn.listener_index,
    );
    let endpoints = sso.endpoints(settings.national_cloud);
    let mut url = reqwest::Url::parse(&endpoints.authorize_url(&settings.directory_id))
        .map_err(|e| internal(e.to_string()))?;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("client_id", &settings.application_id)
            .append_pair("response_type", "code")
            .append_pair("response_mode", "query")
            .append_pair("scope", "openid profile email")
            .append_pair("redirect_uri", &listener.redirect_uri())
            .append_pair("state", &flow.state)
            .append_pair("nonce", &flow.nonce)
            .append_pair("code_challenge", &flow.code_challenge())
            .append_pair("code_challenge_method", "S256");
        for (name, value) in [
            ("login_hint", &q.login_hint),
            ("domain_hint", &q.domain_hint),
        ] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty() && v.len() <= 256) {
                query.append_pair(name, v);
            }
        }
    }
    let sealer = sso.flow_keys.sealer_for(headers).await;
    let mut response = StatusCode::FOUND.into_response();
    let h = response.headers_mut();
    h.insert(
        LOCATION,
        HeaderValue::from_str(url.as_str()).map_err(|e| internal(e.to_string()))?,
    );
    for stale in flow::prune(&sealer, headers) {
        h.append(SET_COOKIE, stale);
    }
    h.append(SET_COOKIE, flow::set_cookie(&sealer, &flow));
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
        .extensions_mut()
        .insert(super::pages::SignInEvent::Started {
            tenant: tenant.id.into(),
        });
    Ok(response)
}

pub(crate) fn rate_limit(sso: &Sso, conn: &ConnInfo) -> Result<(), Box<SignInProblem>> {
    sso.limiter.check(conn.peer.ip()).map_err(|wait| {
        let mut p = SignInProblem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            "Too many sign-in attempts",
            "Please wait a moment and try again.",
        );
        p.hint = Some(format!("Retry after {} seconds.", wait.as_secs()));
        p.retry_after = Some(u32::try_from(wait.as_secs().max(1)).unwrap_or(u32::MAX));
        Box::new(p)
    })
}

pub(super) async fn tenant_for(sso: &Sso, domain: Option<&str>) -> Result<Tenant, SignInProblem> {
    let domain = domain
        .map(str::trim)
        .filter(|d| !d.is_empty() && d.len() <= 280)
        .ok_or_else(|| bad_request("DOMAIN_REQUIRED", "Enter your organisation's SIP domain."))?;
    sso.store
        .tenant_by_domain(domain)
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            SignInProblem::new(
                StatusCode::NOT_FOUND,
                "TENANT_NOT_FOUND",
                "Unknown organisation",
                format!("No organisation uses the SIP domain {domain}."),
            )
            .hint("Check the domain you entered; it is the part after @ in your SIP address.")
        })
}

fn bad_request(code: &str, message: &str) -> SignInProblem {
    SignInProblem::new(
        StatusCode::BAD_REQUEST,
        code,
        "The sign-in request is not valid",
        message,
    )
}

fn not_available(code: &str, message: &str) -> SignInProblem {
    SignInProblem::new(
        StatusCode::FORBIDDEN,
        code,
        "Microsoft 365 sign-in is not available",
        message,
    )
}

pub(super) fn internal(e: impl std::fmt::Display) -> SignInProblem {
    tracing::error!(error = %e, "sign-in failed on the gateway side");
    SignInProblem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        "Something went wrong",
        "The gateway could not complete the request. Please try again.",
    )
}

/// `GET /ms365/info?domain=`: whether the tenant shows the Microsoft icon, and where it leads.
pub async fn info(
    State(sso): State<Arc<Sso>>,
    headers: HeaderMap,
    Query(q): Query<LoginRequest>,
) -> Response<Body> {
    match tenant_info(&sso, q.domain.as_deref()).await {
        Ok(json) => axum::Json(json).into_response(),
        Err(p) => p.render(&headers),
    }
}

/// The two fields PortSIP's `/api/info?domain=` carries, plus the gateway's login URL.
pub async fn tenant_info(
    sso: &Sso,
    domain: Option<&str>,
) -> Result<serde_json::Value, SignInProblem> {
    let tenant = tenant_for(sso, domain).await?;
    let settings = sso
        .store
        .ms365_settings(&tenant.id)
        .await
        .map_err(internal)?;
    let has_key = sso
        .keys
        .current_certificate(&tenant.id)
        .await
        .map_err(|e| internal(e.to_string()))?
        .is_some();
    let enabled = settings.sign_in_enabled() && has_key;
    let endpoint = if enabled {
        sso.endpoints(settings.national_cloud)
            .authorize_url(&settings.directory_id)
    } else {
        String::new()
    };
    let mut login = reqwest::Url::parse("https://gateway.invalid/ms365/login").expect("static URL");
    login
        .query_pairs_mut()
        .append_pair("domain", &tenant.domain);
    Ok(serde_json::json!({
        "enable_ms365_integration": enabled,
        "ms365_authorization_endpoint": endpoint,
        "login_url": if enabled { format!("{}?{}", login.path(), login.query().unwrap_or_default()) } else { String::new() },
    }))
}

/// Adds `enable_ms365_integration` and `ms365_authorization_endpoint` to an upstream JSON
/// object answer; anything else (errors, non-JSON, oversized) passes through unchanged.
pub async fn merge_info(response: Response<Body>, extra: serde_json::Value) -> Response<Body> {
    use http_body_util::BodyExt;
    const LIMIT: usize = 1024 * 1024;
    let is_json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !response.status().is_success() || !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match http_body_util::Limited::new(body, LIMIT).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return crate::edge::problem::HttpError::UpstreamProtocol
                .to_response(&HeaderMap::new());
        }
    };
    let mut json: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => return Response::from_parts(parts, Body::from(bytes)),
    };
    for key in ["enable_ms365_integration", "ms365_authorization_endpoint"] {
        json[key] = extra[key].clone();
    }
    let out = json.to_string();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.remove(http::header::ETAG);
    Response::from_parts(parts, Body::from(out))
}
