//! The Entra ID login host: the tenant's OpenID Connect discovery document, its JWKS, the
//! logout endpoint, and Microsoft's token-error body (`error`, `error_description` with the
//! AADSTS code and trace lines, `error_codes`, `trace_id`, `correlation_id`, ...). The
//! authorize page lives in `authorize`, the token endpoint in `token`.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::state::Tenant;
use super::util::{aad_timestamp, guid, html_escape};
use super::{Emulator, authorize, token};

/// The login-host routes; `{tenant}` is a directory id or a verified domain.
pub(crate) fn routes() -> Router<Emulator> {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(jwks))
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(authorize::get).post(authorize::post),
        )
        .route("/{tenant}/oauth2/v2.0/token", post(token::token))
        .route("/{tenant}/oauth2/v2.0/logout", get(logout))
        .route("/error", get(error_page))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ErrorParams {
    code: Option<String>,
}

/// Where `error_uri` points, like `login.microsoftonline.com/error?code=`.
async fn error_page(Query(p): Query<ErrorParams>) -> Response {
    let code = p.code.unwrap_or_default();
    let text = format!(
        "AADSTS{}: see docs/emulator.md and Microsoft's error code reference.",
        html_escape(&code)
    );
    Html(format!(
        "<!doctype html><html><body><h1>Error lookup</h1><p>{text}</p></body></html>"
    ))
    .into_response()
}

/// A token-endpoint (or login page) failure in Microsoft's words.
#[derive(Debug, Clone)]
pub(crate) struct AadError {
    pub status: StatusCode,
    pub error: &'static str,
    pub code: u32,
    pub message: String,
}

impl AadError {
    pub fn new(
        status: StatusCode,
        error: &'static str,
        code: u32,
        message: impl Into<String>,
    ) -> Self {
        AadError {
            status,
            error,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(error: &'static str, code: u32, message: impl Into<String>) -> Self {
        AadError::new(StatusCode::BAD_REQUEST, error, code, message)
    }

    pub fn invalid_client(code: u32, message: impl Into<String>) -> Self {
        AadError::new(StatusCode::UNAUTHORIZED, "invalid_client", code, message)
    }

    /// AADSTS900144: a required form or query parameter is absent.
    pub fn missing(name: &str) -> Self {
        AadError::bad_request(
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    pub fn unknown_tenant(tenant: &str) -> Self {
        AadError::bad_request(
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and \
             are signing into the correct cloud. Check with your subscription administrator, \
             this may happen if there are no active subscriptions for the tenant."
            ),
        )
    }

    pub fn unknown_client(client_id: &str, tenant: &Tenant) -> Self {
        AadError::bad_request(
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. \
             This can happen if the application has not been installed by the administrator \
             of the tenant or consented to by any user in the tenant. You may have sent your \
             authentication request to the wrong tenant.",
                tenant.domain
            ),
        )
    }

    /// `AADSTSnnnn: message\r\nTrace ID: ...\r\nCorrelation ID: ...\r\nTimestamp: ...`
    pub fn description(&self, trace: &str, correlation: &str, timestamp: &str) -> String {
        format!(
            "AADSTS{}: {}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {timestamp}",
            self.code, self.message
        )
    }

    /// The JSON body; the correlation id echoes the caller's `client-request-id`.
    pub fn body(&self, emu: &Emulator, correlation: Option<&str>) -> Value {
        let (trace, timestamp) = (guid(), aad_timestamp(emu.inner.now()));
        let correlation = correlation.map_or_else(guid, str::to_string);
        json!({
            "error": self.error,
            "error_description": self.description(&trace, &correlation, &timestamp),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("{}/error?code={}", emu.inner.base(), self.code),
        })
    }

    pub fn render(&self, emu: &Emulator, correlation: Option<&str>) -> Response {
        (self.status, Json(self.body(emu, correlation))).into_response()
    }

    /// The error as Entra's sign-in page shows it when it cannot redirect back.
    pub fn page(&self) -> Response {
        let body = format!(
            "<!doctype html><html><head><title>Sign in to your account</title></head><body>\
             <h1>Sorry, but we're having trouble signing you in.</h1>\
             <p id=\"error\">AADSTS{}: {}</p></body></html>",
            self.code,
            html_escape(&self.message)
        );
        (self.status, Html(body)).into_response()
    }
}

pub(crate) fn correlation(headers: &HeaderMap) -> Option<String> {
    headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The v2.0 discovery document; URLs always carry the tenant id, even when asked by domain.
pub(crate) async fn discovery(
    State(emu): State<Emulator>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(t) = emu.inner.tenant(&tenant) else {
        return AadError::unknown_tenant(&tenant).render(&emu, correlation(&headers).as_deref());
    };
    let base = emu.inner.base();
    let host = base.split("://").nth(1).unwrap_or(&base).to_string();
    let tid = &t.id;
    Json(json!({
        "token_endpoint": format!("{base}/{tid}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/{tid}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/{tid}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{base}/oidc/userinfo"),
        "authorization_endpoint": format!("{base}/{tid}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/{tid}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/{tid}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
            "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr",
            "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "kerberos_endpoint": format!("{base}/{tid}/kerberos"),
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": host,
        "rbac_url": "https://pas.windows.net",
    }))
    .into_response()
}

/// The signing keys, newest first, each naming this tenant's issuer.
pub(crate) async fn jwks(
    State(emu): State<Emulator>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(t) = emu.inner.tenant(&tenant) else {
        return AadError::unknown_tenant(&tenant).render(&emu, correlation(&headers).as_deref());
    };
    let issuer = format!("{}/{}/v2.0", emu.inner.base(), t.id);
    let keys: Vec<Value> = emu
        .inner
        .keys
        .all()
        .iter()
        .map(|k| k.jwk(&issuer))
        .collect();
    (
        [(header::CACHE_CONTROL, "max-age=86400, private")],
        Json(json!({ "keys": keys })),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct LogoutParams {
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
}

/// Front-channel sign-out: there is no session to end, so it only redirects back.
pub(crate) async fn logout(Query(p): Query<LogoutParams>) -> Response {
    match p.post_logout_redirect_uri {
        Some(uri) => {
            let sep = if uri.contains('?') { '&' } else { '?' };
            let target = match p.state {
                Some(state) => format!("{uri}{sep}state={}", super::util::url_encode(&state)),
                None => uri,
            };
            Redirect::to(&target).into_response()
        }
        None => {
            Html("<!doctype html><html><body><p>You signed out of your account.</p></body></html>")
                .into_response()
        }
    }
}
