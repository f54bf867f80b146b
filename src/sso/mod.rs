//! "Sign in with Microsoft": the login start, `/ms365/redirect`, PBX sessions.
//!
//! - [`state`]: what the handlers share ([`Sso`]).
//! - [`login`]: `/ms365/login`, `/api/login/by_microsoft`, `/ms365/info`.
//! - [`login_page`]: `/ms365/`, the sign-in entry page.
//! - [`redirect`]: `/ms365/redirect`: code redemption, ID token checks, user mapping.
//! - [`flow`]: the sealed per-sign-in state cookie; replay protection.
//! - [`identity`]: the session on proxied requests: identity headers, protected paths.
//! - [`pages`]: error pages with AADSTS codes and hints.
//! - [`ratelimit`]: per-IP limits on the sign-in endpoints.
//! - [`return_to`]: the same-origin path check for post-login destinations.
//! - [`seal`]: AES-256-GCM sealed cookies with rotating keys.
//! - [`session`]: PBX sessions: the cookie, the store record, resolution, session tokens.
//! - [`session_keys`]: the gateway's ES256 token-signing keys, rotation and JWKS.
//! - [`session_routes`]: `/ms365/session`, `/ms365/jwks.json`, `/ms365/logout`.

pub mod flow;
pub mod identity;
pub mod login;
pub mod login_page;
pub mod pages;
pub mod ratelimit;
pub mod redirect;
pub mod return_to;
pub mod seal;
pub mod session;
pub mod session_keys;
pub mod session_routes;
pub mod state;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

pub use state::Sso;

/// The `/ms365` routes of a public listener (and PortSIP's `/api/login/by_microsoft`).
pub fn routes(sso: Arc<Sso>) -> Router {
    let own = Router::new()
        .route("/ms365/", get(login_page::page))
        .route("/ms365/login", get(login::login_get))
        .route(
            "/api/login/by_microsoft",
            axum::routing::post(login::login_post),
        )
        .route(
            "/ms365/redirect",
            get(redirect::redirect_get).post(redirect::redirect_post),
        )
        .route("/ms365/info", get(login::info))
        .with_state(sso.clone());
    let sessions = session_routes::routes(sso.sessions.clone())
        .route_layer(axum::middleware::from_fn_with_state(sso, limit_per_client));
    own.merge(sessions)
}

/// Applies the sign-in rate limit to the session endpoints as well.
async fn limit_per_client(
    axum::extract::State(sso): axum::extract::State<Arc<Sso>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(conn) = req.extensions().get::<crate::edge::conn::ConnInfo>()
        && let Err(problem) = login::rate_limit(&sso, conn)
    {
        return problem.render(req.headers());
    }
    next.run(req).await
}
