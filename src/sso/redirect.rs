//! `/ms365/redirect` on both domains: Microsoft sends the browser back here with a code (or
//! an error). The flow cookie for the `state` must exist, open, match and not be used or
//! expired; the code is redeemed with the PKCE verifier and the tenant's certificate; the ID
//! token is validated; `(tid, oid)` must map to an enabled PBX user in the tenant's sign-in
//! scope. Only then is a session issued and the browser sent on. Every failure is a page
//! saying what happened and what to do, and nothing is issued.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Form, Query, State};
use axum::response::IntoResponse;
use http::header::{LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::flow::{self, FlowProblem, FlowState};
use super::login::{internal, retry_url};
use super::pages::{SignInEvent, SignInProblem};
use super::session::{ClientKind, cookie_header};
use super::state::Sso;
use crate::edge::conn::ConnInfo;
use crate::entra::OidcError;
use crate::entra::oidc::{IdTokenClaims, IdTokenExpectations, validate_id_token};
use crate::entra::token::{AppTokenClient, CodeExchange, TenantApp};
use crate::settings::Ms365Settings;
use crate::store::{DirectoryUser, Tenant};

/// What Microsoft sends back (query for `response_mode=query`, form for `form_post`).
#[derive(Debug, Default, Deserialize)]
pub struct RedirectParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

pub async fn redirect_get(
    State(sso): State<Arc<Sso>>,
    axum::Extension(conn): axum::Extension<ConnInfo>,
    headers: HeaderMap,
    Query(p): Query<RedirectParams>,
) -> Response<Body> {
    finish(&sso, &conn, &headers, p).await
}

pub async fn redirect_post(
    State(sso): State<Arc<Sso>>,
    axum::Extension(conn): axum::Extension<ConnInfo>,
    headers: HeaderMap,
    Form(p): Form<RedirectParams>,
) -> Response<Body> {
    finish(&sso, &conn, &headers, p).await
}

async fn finish(
    sso: &Sso,
    conn: &ConnInfo,
    headers: &HeaderMap,
    p: RedirectParams,
) -> Response<Body> {
    if p.state.is_none() && p.code.is_none() && p.error.is_none() {
        // Microsoft's sign-out returns here without parameters.
        return signed_out();
    }
    let Some(state) = p.state.clone().filter(|s| !s.is_empty() && s.len() <= 512) else {
        return flow_problem(FlowProblem::Missing, None).render(headers);
    };
    let sealer = sso.flow_keys.sealer_for(headers).await;
    let flow = match flow::take(&sealer, headers, &state) {
        Ok(f) if f.listener == conn.listener_index => f,
        Ok(f) => {
            return with_cleared(
                flow_problem(FlowProblem::Missing, Some(&f)),
                headers,
                &state,
            );
        }
        Err(problem) => return with_cleared(flow_problem(problem, None), headers, &state),
    };
    match sso.used_states.first_use(&state, flow.expires_at).await {
        Ok(true) => {}
        Ok(false) => {
            return with_cleared(
                flow_problem(FlowProblem::Replayed, Some(&flow)),
                headers,
                &state,
            );
        }
        Err(e) => {
            // Fail closed: without the record a replay could not be told from a first use.
            tracing::error!(error = %e, "cannot record a redeemed sign-in state");
            let problem = SignInProblem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "STORE_UNAVAILABLE",
                "Sign-in could not be completed",
                "The gateway cannot reach its database right now.",
            )
            .hint("Try again in a minute; if it persists, tell your PBX administrator.")
            .retry(Some(retry_url(&flow.domain, flow.client)));
            return with_cleared(problem, headers, &state);
        }
    }
    match complete(sso, conn, headers, &flow, p).await {
        Ok(response) => response,
        Err(problem) => with_cleared(problem.for_tenant(flow.tenant_id.as_str()), headers, &state),
    }
}

fn signed_out() -> Response<Body> {
    let mut response = StatusCode::FOUND.into_response();
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static("/ms365/?logged_out=1"));
    response
}

/// Renders `problem` and deletes the flow cookie of `state`.
fn with_cleared(problem: SignInProblem, headers: &HeaderMap, state: &str) -> Response<Body> {
    let mut response = problem.render(headers);
    response
        .headers_mut()
        .append(SET_COOKIE, flow::clear_cookie(&flow::cookie_name(state)));
    response
}

fn flow_problem(problem: FlowProblem, flow: Option<&FlowState>) -> SignInProblem {
    let (code, message) = match problem {
        FlowProblem::Missing => (
            "FLOW_MISSING",
            "This sign-in was not started in this browser, or it took longer than 10 minutes.",
        ),
        FlowProblem::Tampered => ("FLOW_INVALID", "The sign-in could not be verified."),
        FlowProblem::Expired => ("FLOW_EXPIRED", "The sign-in took longer than 10 minutes."),
        FlowProblem::Replayed => ("FLOW_REPLAYED", "This sign-in link was already used."),
    };
    SignInProblem::new(
        StatusCode::BAD_REQUEST,
        code,
        "Sign-in could not be completed",
        message,
    )
    .hint("Start the sign-in again from the login page.")
    .retry(flow.map(|f| retry_url(&f.domain, f.client)))
}

async fn complete(
    sso: &Sso,
    conn: &ConnInfo,
    headers: &HeaderMap,
    flow: &FlowState,
    p: RedirectParams,
) -> Result<Response<Body>, SignInProblem> {
    let retry = Some(retry_url(&flow.domain, flow.client));
    if let Some(error) = p.error.as_deref() {
        let description = p.error_description.as_deref().unwrap_or(error);
        return Err(SignInProblem::from_microsoft(
            aadsts_in(description),
            description,
            retry,
        ));
    }
    let code = p.code.as_deref().filter(|c| !c.is_empty()).ok_or_else(|| {
        SignInProblem::new(
            StatusCode::BAD_REQUEST,
            "NO_CODE",
            "Sign-in could not be completed",
            "Microsoft sent no authorization code.",
        )
        .retry(retry.clone())
    })?;
    let tenant = sso
        .store
        .tenant(&flow.tenant_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| internal("tenant vanished"))?;
    let settings = sso
        .store
        .ms365_settings(&tenant.id)
        .await
        .map_err(internal)?;
    let listener = sso
        .listener(flow.listener)
        .ok_or_else(|| internal("unknown listener"))?;
    let claims = redeem(
        sso,
        &tenant,
        &settings,
        code,
        &listener.redirect_uri(),
        flow,
    )
    .await
    .map_err(|e| oidc_problem(e, retry.clone()))?;
    let user = authorize_user(sso, &tenant, &settings, &claims, retry.clone()).await?;
    // Before the session: a PBX that refuses the user stops the sign-in with its reason.
    let grant = (sso.pbx.open(&tenant, &settings, &user).await)
        .map_err(|refusal| refusal.problem(retry.clone()))?;
    let pbx_state = grant.state;
    let (cookie, info) = sso
        .sessions
        .create(&tenant, &user, flow.client, &conn.listener)
        .await
        .map_err(internal)?;
    (sso.pbx.attach(&info.id_hash, grant).await)
        .map_err(|refusal| refusal.problem(retry.clone()))?;
    // The browser's earlier session (another user, or the same one) ends: one browser, one
    // session, and a stolen earlier cookie stops working at the next sign-in.
    if let Some(previous) = super::session::session_cookie(headers)
        && let Err(e) = sso.sessions.end(previous).await
    {
        tracing::warn!(error = %e, "cannot end the browser's previous session");
    }
    let destination = flow.return_to.clone().unwrap_or_else(|| match flow.client {
        ClientKind::Portal => settings.portal_landing_path.as_str().to_string(),
        ClientKind::Webrtc => settings.webrtc_landing_path.as_str().to_string(),
    });
    tracing::info!(tenant = %tenant.id, user = %user.pbx_user_id, client = flow.client.as_str(), listener = %conn.listener, pbx = pbx_state.as_str(), "signed in with Microsoft");
    let mut response = StatusCode::FOUND.into_response();
    let h = response.headers_mut();
    h.insert(
        LOCATION,
        HeaderValue::from_str(&destination).map_err(internal)?,
    );
    h.append(
        SET_COOKIE,
        flow::clear_cookie(&flow::cookie_name(&flow.state)),
    );
    h.append(SET_COOKIE, cookie_header(&cookie, sso.sessions.lifetime()));
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    let seconds = (crate::store::now_epoch() - flow.created_at).max(0) as f64;
    response.extensions_mut().insert(SignInEvent::Completed {
        tenant: tenant.id.to_string(),
        seconds,
    });
    Ok(response)
}

/// Redeems the code and validates the ID token.
async fn redeem(
    sso: &Sso,
    tenant: &Tenant,
    settings: &Ms365Settings,
    code: &str,
    redirect_uri: &str,
    flow: &FlowState,
) -> Result<IdTokenClaims, OidcError> {
    let endpoints = sso.endpoints(settings.national_cloud);
    let app = TenantApp {
        directory_id: &settings.directory_id,
        application_id: &settings.application_id,
        alg: settings.assertion_alg,
    };
    let client = AppTokenClient::for_tenant(
        sso.http.clone(),
        endpoints.clone(),
        Arc::new(sso.keys.clone()),
        &tenant.id,
        app,
    )
    .await?;
    let tokens = client
        .exchange_code(&CodeExchange {
            code,
            redirect_uri,
            code_verifier: &flow.verifier,
        })
        .await?;
    let issuer = endpoints.issuer(&settings.directory_id);
    let expect = IdTokenExpectations {
        issuer: &issuer,
        client_id: &settings.application_id,
        directory_id: &settings.directory_id,
        nonce: &flow.nonce,
        algorithms: if settings.allow_ps256_id_tokens {
            &[Algorithm::RS256, Algorithm::PS256]
        } else {
            &[Algorithm::RS256]
        },
    };
    validate_id_token(
        &sso.jwks,
        &endpoints.jwks_url(&settings.directory_id),
        &tokens.id_token,
        &expect,
    )
    .await
}

fn oidc_problem(e: OidcError, retry: Option<String>) -> SignInProblem {
    match &e {
        OidcError::Aad(aad) => SignInProblem::from_microsoft(aad.code(), aad.summary(), retry),
        OidcError::InvalidIdToken(reason) => {
            tracing::warn!(%reason, "ID token rejected");
            SignInProblem::new(
                StatusCode::UNAUTHORIZED,
                "ID_TOKEN_REJECTED",
                "Sign-in could not be verified",
                "Microsoft's answer did not pass the gateway's checks.",
            )
            .retry(retry)
        }
        _ => {
            tracing::error!(error = %e, "code redemption failed");
            SignInProblem::new(
                StatusCode::BAD_GATEWAY,
                "MICROSOFT_UNREACHABLE",
                "Microsoft could not be reached",
                "The gateway could not complete the sign-in with Microsoft.",
            )
            .retry(retry)
        }
    }
}

/// The PBX user for the token's `oid`, if enabled and in the tenant's sign-in scope.
async fn authorize_user(
    sso: &Sso,
    tenant: &Tenant,
    settings: &Ms365Settings,
    claims: &IdTokenClaims,
    retry: Option<String>,
) -> Result<DirectoryUser, SignInProblem> {
    let refuse = |code: &str, message: &str, hint: &str| {
        SignInProblem::new(
            StatusCode::FORBIDDEN,
            code,
            "You cannot sign in to the PBX",
            message,
        )
        .hint(hint)
        .retry(retry.clone())
    };
    let mut user = sso.store.directory_user(&tenant.id, &claims.oid).await.map_err(internal)?.ok_or_else(|| {
        refuse("USER_NOT_SYNCED", "Your Microsoft 365 account is not linked to a PBX extension.", "Ask your administrator to sync your account to the PBX, or to bind it to your extension.")
    })?;
    if !user.enabled {
        return Err(refuse(
            "USER_DISABLED",
            "Your PBX extension is disabled.",
            "Ask your administrator to enable it.",
        ));
    }
    // The synced UPN, never the token's `preferred_username` (mutable; a guest's home
    // address): anyone could otherwise pick a name that matches a selected user.
    let upn = user.upn.clone();
    let is_admin = settings
        .sign_in_as_administrator
        .covers(claims.oid.as_str(), &upn);
    if !is_admin
        && !settings
            .sign_in_as_standard_user
            .covers(claims.oid.as_str(), &upn)
    {
        return Err(refuse(
            "OUT_OF_SCOPE",
            "Microsoft 365 sign-in is not enabled for your account.",
            "Sign in with your extension and password, or ask your administrator to include you.",
        ));
    }
    if is_admin {
        user.role = crate::store::Role::Admin;
    }
    Ok(user)
}

/// `AADSTS50011: ...` → 50011.
fn aadsts_in(text: &str) -> Option<u64> {
    let rest = text.split("AADSTS").nth(1)?;
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}
