//! The authorization endpoint: validates the request the way Entra does (errors about the
//! tenant, the client or the redirect URI are shown as a page, because Entra never redirects
//! to an address it cannot trust; everything else goes back to the app as `error=`), shows a
//! sign-in page listing the tenant's enabled users, and issues single-use authorization codes
//! bound to the client, the redirect URI, the PKCE challenge and the nonce. `login_hint`
//! signs that user in without a page, which is how tests and benchmarks drive the flow.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::Emulator;
use super::assertion::{ClientApp, lookup};
use super::identity::AadError;
use super::state::{AuthCode, Tenant, lock};
use super::util::{aad_timestamp, b64url, guid, html_escape, url_encode};

/// Codes live ten minutes, as Entra documents.
pub(crate) const CODE_LIFETIME: i64 = 600;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct AuthorizeParams {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    response_type: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    response_mode: Option<String>,
    login_hint: Option<String>,
    prompt: Option<String>,
}

pub(crate) async fn get(
    State(emu): State<Emulator>,
    Path(tenant): Path<String>,
    Query(p): Query<AuthorizeParams>,
) -> Response {
    authorize(&emu, &tenant, p)
}

/// The sign-in page posts the original parameters back with the chosen `login_hint`.
pub(crate) async fn post(
    State(emu): State<Emulator>,
    Path(tenant): Path<String>,
    Form(p): Form<AuthorizeParams>,
) -> Response {
    authorize(&emu, &tenant, p)
}

fn authorize(emu: &Emulator, tenant_key: &str, p: AuthorizeParams) -> Response {
    let (tenant, app) = match page_checks(emu, tenant_key, &p) {
        Ok(found) => found,
        Err(err) => return err.page(),
    };
    let reply = Reply::new(&p);
    if let Err(err) = request_checks(&p) {
        return reply.error(emu, &err);
    }
    let silent = p.prompt.as_deref() == Some("none");
    let login_required = AadError::bad_request(
        "login_required",
        50058,
        "A silent sign-in request was sent but no user is signed in.",
    );
    let Some(hint) = p.login_hint.as_deref().filter(|h| !h.trim().is_empty()) else {
        return if silent {
            reply.error(emu, &login_required)
        } else {
            sign_in_page(&tenant, tenant_key, &p, None)
        };
    };
    let found = tenant
        .read()
        .active(hint.trim())
        .map(|(idx, r)| (idx, r.user.account_enabled));
    match found {
        None if silent => reply.error(emu, &login_required),
        None => sign_in_page(&tenant, tenant_key, &p, Some("We couldn't find an account with that username.")),
        Some((_, false)) => reply.error(emu, &AadError::bad_request("access_denied", 50057,
            "The user account is disabled. The user object in Active Directory backing this account has been disabled.")),
        Some((user, true)) => {
            let code = issue_code(emu, &tenant, &app.client_id, &p, user);
            reply.send(vec![("code", code)])
        }
    }
}

/// Failures Entra shows as a page instead of redirecting.
fn page_checks(
    emu: &Emulator,
    tenant_key: &str,
    p: &AuthorizeParams,
) -> Result<(Arc<Tenant>, ClientApp), AadError> {
    let tenant = emu
        .inner
        .tenant(tenant_key)
        .ok_or_else(|| AadError::unknown_tenant(tenant_key))?;
    let client_id = p
        .client_id
        .as_deref()
        .ok_or_else(|| AadError::missing("client_id"))?;
    let app = lookup(&tenant, client_id)?;
    let redirect = p
        .redirect_uri
        .as_deref()
        .ok_or_else(|| AadError::missing("redirect_uri"))?;
    if !app.redirect_uris.iter().any(|r| r == redirect) {
        return Err(AadError::bad_request(
            "invalid_request",
            50011,
            format!(
                "The redirect URI '{redirect}' specified in the request does not match the redirect \
             URIs configured for the application '{}'. Make sure the redirect URI sent in the \
             request matches one added to your application in the Azure portal. Navigate to \
             https://aka.ms/redirectUriMismatchError to learn more about how to fix this.",
                app.client_id
            ),
        ));
    }
    Ok((tenant, app))
}

/// Failures Entra reports back to the (trusted) redirect URI.
fn request_checks(p: &AuthorizeParams) -> Result<(), AadError> {
    match p.response_type.as_deref() {
        None => return Err(AadError::missing("response_type")),
        Some("code") => {}
        Some(other) => {
            return Err(AadError::bad_request(
                "unsupported_response_type",
                70005,
                format!(
                    "The provided value for the input parameter 'response_type' is not allowed for this \
             request: '{other}'. Expected value is 'code'."
                ),
            ));
        }
    }
    let scope = p
        .scope
        .as_deref()
        .ok_or_else(|| AadError::missing("scope"))?;
    if !scope.split_whitespace().any(|s| s == "openid") {
        return Err(AadError::bad_request(
            "invalid_scope",
            70011,
            format!(
                "The provided value for the input parameter 'scope' is not valid. The scope '{scope}' \
             does not include 'openid'."
            ),
        ));
    }
    if p.nonce.as_deref().is_none_or(str::is_empty) {
        return Err(AadError::missing("nonce"));
    }
    let challenge = p.code_challenge.as_deref().ok_or_else(|| AadError::bad_request("invalid_request", 9002325,
        "Proof Key for Code Exchange is required for cross-origin authorization code redemption."))?;
    if p.code_challenge_method.as_deref() != Some("S256") {
        return Err(AadError::bad_request(
            "invalid_request",
            501491,
            "Invalid code_challenge_method: this tenant requires 'S256'.",
        ));
    }
    if challenge.len() != 43 {
        return Err(AadError::bad_request(
            "invalid_request",
            501491,
            "Invalid size of Code_Challenge parameter.",
        ));
    }
    Ok(())
}

/// Issues a code for `user` (a user index of `tenant`).
pub(crate) fn issue_code(
    emu: &Emulator,
    tenant: &Tenant,
    client_id: &str,
    p: &AuthorizeParams,
    user: u32,
) -> String {
    let mut raw = uuid::Uuid::new_v4().as_bytes().to_vec();
    raw.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    let code = format!("1.A{}", b64url(&raw));
    let now = emu.inner.now();
    let mut codes = lock(&emu.inner.codes);
    codes.retain(|_, c| c.issued_at + 3600 > now);
    codes.insert(
        code.clone(),
        AuthCode {
            tenant: tenant.idx,
            client_id: client_id.to_string(),
            redirect_uri: p.redirect_uri.clone().unwrap_or_default(),
            challenge: p.code_challenge.clone().unwrap_or_default(),
            nonce: p.nonce.clone().unwrap_or_default(),
            user,
            scope: p.scope.clone().unwrap_or_else(|| "openid".into()),
            issued_at: now,
            redeemed: false,
        },
    );
    code
}

/// Parameters for [`issue_code`] when a test asks for a code directly.
pub(crate) fn params_for(redirect_uri: &str, code_challenge: &str, nonce: &str) -> AuthorizeParams {
    AuthorizeParams {
        redirect_uri: Some(redirect_uri.into()),
        code_challenge: Some(code_challenge.into()),
        nonce: Some(nonce.into()),
        scope: Some("openid profile email".into()),
        ..AuthorizeParams::default()
    }
}

/// How the answer goes back to the app (`response_mode`).
struct Reply {
    uri: String,
    mode: String,
    state: Option<String>,
}

impl Reply {
    fn new(p: &AuthorizeParams) -> Reply {
        let mode = match p.response_mode.as_deref() {
            Some(m @ ("form_post" | "fragment")) => m.to_string(),
            _ => "query".to_string(),
        };
        Reply {
            uri: p.redirect_uri.clone().unwrap_or_default(),
            mode,
            state: p.state.clone(),
        }
    }

    fn send(&self, mut params: Vec<(&'static str, String)>) -> Response {
        if let Some(state) = &self.state {
            params.push(("state", state.clone()));
        }
        if self.mode == "form_post" {
            return form_post(&self.uri, &params);
        }
        let encoded: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", url_encode(v)))
            .collect();
        let sep = match (self.mode.as_str(), self.uri.contains('?')) {
            ("fragment", _) => '#',
            (_, true) => '&',
            _ => '?',
        };
        let location = format!("{}{sep}{}", self.uri, encoded.join("&"));
        (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
    }

    fn error(&self, emu: &Emulator, err: &AadError) -> Response {
        let description = err.description(&guid(), &guid(), &aad_timestamp(emu.inner.now()));
        self.send(vec![
            ("error", err.error.to_string()),
            ("error_description", description),
        ])
    }
}

/// Entra's `form_post` page: a hidden form that submits itself.
fn form_post(uri: &str, params: &[(&str, String)]) -> Response {
    let inputs: String = params
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\" />",
                html_escape(v)
            )
        })
        .collect();
    Html(format!(
        "<html><head><title>Working...</title></head><body><form method=\"POST\" name=\"hiddenform\" \
         action=\"{}\">{inputs}<noscript><p>Script is disabled. Click Submit to continue.</p>\
         <input type=\"submit\" value=\"Submit\" /></noscript></form><script \
         language=\"javascript\">document.forms[0].submit();</script></body></html>",
        html_escape(uri)))
    .into_response()
}

/// The account picker: one button per enabled user (the first 50) and a free-text field.
fn sign_in_page(
    tenant: &Tenant,
    tenant_key: &str,
    p: &AuthorizeParams,
    problem: Option<&str>,
) -> Response {
    let action = format!("/{}/oauth2/v2.0/authorize", url_encode(tenant_key));
    let mut hidden = p.clone();
    hidden.login_hint = None;
    let fields: String = serde_json::to_value(&hidden)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, v)| {
            v.as_str().map(|v| {
                format!(
                    "<input type=\"hidden\" name=\"{k}\" value=\"{}\"/>",
                    html_escape(v)
                )
            })
        })
        .collect();
    let data = tenant.read();
    let buttons: String = data.users.iter()
        .filter(|u| u.life == super::state::Life::Active && u.user.account_enabled)
        .take(50)
        .map(|u| format!(
            "<li><form method=\"post\" action=\"{action}\">{fields}<button name=\"login_hint\" value=\"{upn}\">{name} &lt;{upn}&gt;</button></form></li>",
            upn = html_escape(&u.user.user_principal_name), name = html_escape(&u.user.display_name)))
        .collect();
    let problem = problem.map_or_else(String::new, |m| {
        format!("<p id=\"problem\">{}</p>", html_escape(m))
    });
    Html(format!(
        "<!doctype html><html><head><title>Sign in to your account</title></head><body>\
         <h1>Sign in</h1><p>{domain} (emulated)</p>{problem}<ul id=\"accounts\">{buttons}</ul>\
         <form method=\"post\" action=\"{action}\">{fields}<input name=\"login_hint\" placeholder=\"someone@{domain}\"/>\
         <button>Next</button></form></body></html>",
        domain = html_escape(&tenant.domain)))
    .into_response()
}
