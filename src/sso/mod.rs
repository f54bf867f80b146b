//! "Sign in with Microsoft": the login start, `/ms365/redirect`, PBX sessions.
//!
//! - [`state`]: what the handlers share ([`Sso`]).
//! - [`login`]: `/ms365/login`, `/api/login/by_microsoft`, `/ms365/info`.
//! - [`login_page`]: `/ms365/`, the sign-in entry page.
//! - [`redirect`]: `/ms365/redirect`: code redemption, ID token checks, user mapping.
//! - [`directory_api`]: `/ms365/directory/{me,users,contacts}` for signed-in users.
//! - [`flow`]: the sealed per-sign-in state cookie; replay protection.
//! - [`flow_keys`]: the flow-cookie keys, shared by the instances through the keyring.
//! - [`identity`]: the session on proxied requests: identity headers, protected paths.
//! - [`pages`]: error pages with AADSTS codes and hints.
//! - [`pbx_session`]: the user's own PBX session behind the gateway session: kept sealed
//!   with it, renewed, sent as the bearer of proxied requests, ended at logout.
//! - `pbx_sign_in`: opening that PBX session at a Microsoft sign-in (which password).
//! - [`pbx_state`]: its states and the sign-in refusals it causes, in words.
//! - [`ratelimit`]: per-IP limits on the sign-in endpoints.
//! - [`session`]: PBX sessions: the cookie, the store record, resolution, session tokens.
//! - [`session_keys`]: the gateway's ES256 token-signing keys (in the keyring), rotation
//!   and JWKS.
//! - [`session_routes`]: `/ms365/session`, `/ms365/jwks.json`, `/ms365/logout`.

pub(crate) mod directory_api;
pub(crate) mod flow;
pub(crate) mod flow_keys;
pub(crate) mod identity;
pub(crate) mod login;
pub(crate) mod login_page;
pub(crate) mod pages;
pub(crate) mod pbx_session;
mod pbx_sign_in;
pub(crate) mod pbx_state;
pub(crate) mod photos_route;
pub(crate) mod ratelimit;
pub(crate) mod redirect;
pub(crate) mod session;
pub(crate) mod session_keys;
pub(crate) mod session_routes;
pub(crate) mod state;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

pub use flow_keys::{FlowKeys, NAME_PREFIX as FLOW_KEY_PREFIX};
pub use identity::strip_gateway_cookies;
pub use pbx_state::PbxState;
pub use session::{
    ClientKind, Clock, DEFAULT_LIFETIME, SESSION_COOKIE, SessionClaims, Sessions, hash_cookie,
    session_cookie,
};
pub use session_keys::{NAME_PREFIX as SESSION_KEY_PREFIX, SessionKeys};
pub use session_routes::routes as session_routes;
pub use state::Sso;

/// The `/ms365` routes of a public listener (and PortSIP's `/api/login/by_microsoft`).
pub fn routes(sso: Arc<Sso>) -> Router {
    // The sign-in steps are limited per client before anything of the request is read.
    let sign_in = Router::new()
        .route("/ms365/login", get(login::login_get))
        .route(
            "/api/login/by_microsoft",
            axum::routing::post(login::login_post),
        )
        .route(
            "/ms365/redirect",
            get(redirect::redirect_get).post(redirect::redirect_post),
        )
        .layer(axum::extract::DefaultBodyLimit::max(SIGN_IN_BODY_LIMIT))
        .route_layer(axum::middleware::from_fn_with_state(
            sso.clone(),
            sign_in_guard,
        ));
    let own = Router::new()
        .route("/ms365/", get(login_page::page))
        .merge(sign_in)
        .route("/ms365/info", get(login::info))
        .route("/ms365/directory/me", get(directory_api::me))
        .route("/ms365/directory/users", get(directory_api::users))
        .route("/ms365/directory/contacts", get(directory_api::contacts))
        .route("/ms365/photos/{user}", get(photos_route::photo))
        .with_state(sso.clone());
    let sessions = session_routes::routes(sso.sessions.clone())
        .route_layer(axum::middleware::from_fn_with_state(sso, limit_per_client));
    own.merge(sessions)
}

/// Largest sign-in form (`domain`, or Microsoft's `code`, `state` and ID token fields).
const SIGN_IN_BODY_LIMIT: usize = 64 * 1024;

/// The sign-in rate limit, checked before the handler reads the body, and the sign-in
/// metrics, read off the [`pages::SignInEvent`] each step's answer carries.
async fn sign_in_guard(
    axum::extract::State(sso): axum::extract::State<Arc<Sso>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let conn = req.extensions().get::<crate::edge::conn::ConnInfo>();
    let response = match conn.map(|conn| login::rate_limit(&sso, conn)) {
        Some(Err(problem)) => problem.render(req.headers()),
        _ => next.run(req).await,
    };
    let metrics = &sso.metrics.sign_in;
    match response.extensions().get::<pages::SignInEvent>() {
        Some(pages::SignInEvent::Started { tenant }) => metrics.started(tenant),
        Some(pages::SignInEvent::Completed { tenant, seconds }) => {
            metrics.completed(tenant, *seconds)
        }
        Some(pages::SignInEvent::Failed { tenant, code }) => {
            metrics.failed(tenant.as_deref(), code)
        }
        None => {}
    }
    response
}

/// Applies the sign-in rate limit to the session endpoints, and on logout (when configured)
/// sends the browser on to sign out at Microsoft too.
async fn limit_per_client(
    axum::extract::State(sso): axum::extract::State<Arc<Sso>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Some(conn) = req
        .extensions()
        .get::<crate::edge::conn::ConnInfo>()
        .cloned()
    else {
        return next.run(req).await;
    };
    if let Err(problem) = login::rate_limit(&sso, &conn) {
        return problem.render(req.headers());
    }
    let ending = if sso.config.sso.end_session_at_microsoft && req.uri().path() == "/ms365/logout" {
        match session::session_cookie(req.headers()) {
            Some(cookie) => sso.sessions.resolve(cookie).await.ok().flatten(),
            None => None,
        }
    } else {
        None
    };
    let mut response = next.run(req).await;
    if let Some(info) = ending
        && response.status() == http::StatusCode::FOUND
        && let Some(url) = end_session_url(&sso, &info, conn.listener_index).await
        && let Ok(value) = http::HeaderValue::from_str(&url)
    {
        response.headers_mut().insert(http::header::LOCATION, value);
    }
    response
}

/// The cloud's sign-out URL for the session's tenant, returning to this listener's
/// registered redirect URI (which sends a bare return on to the sign-in page).
async fn end_session_url(
    sso: &Sso,
    info: &session::SessionInfo,
    listener: usize,
) -> Option<String> {
    let settings = sso.store.ms365_settings(&info.tenant_id).await.ok()?;
    let back = sso.listener(listener)?.redirect_uri();
    let mut url = reqwest::Url::parse(
        &sso.endpoints(settings.national_cloud)
            .end_session_url(&settings.directory_id),
    )
    .ok()?;
    url.query_pairs_mut()
        .append_pair("post_logout_redirect_uri", &back);
    Some(url.to_string())
}
