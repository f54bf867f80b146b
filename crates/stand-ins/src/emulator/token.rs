//! The token endpoint: `client_credentials` (app-only Graph tokens carrying the app's
//! granted permissions as `roles`) and `authorization_code` (single-use, ten-minute codes,
//! PKCE S256, then a v2.0 ID token and a delegated Graph token). Clients authenticate only
//! with a certificate assertion (see `assertion`). Tokens are RS256 JWTs signed with the
//! current emulator key; Graph accepts them only when `aud` is the emulator's own base URL.

use std::collections::HashMap;

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde_json::{Value, json};

use super::Emulator;
use super::assertion::{ClientApp, authenticate};
use super::authorize::CODE_LIFETIME;
use super::identity::{AadError, correlation};
use super::model::User;
use super::state::{AuthCode, Tenant, lock};
use super::util::{b64url, guid, sha256};

pub(crate) const TOKEN_LIFETIME: i64 = 3599;
const ID_TOKEN_LIFETIME: i64 = 3600;

type FormMap = HashMap<String, String>;

pub(crate) async fn token(
    State(emu): State<Emulator>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    form: Result<Form<FormMap>, FormRejection>,
) -> Response {
    let result = match form {
        Ok(Form(form)) => handle(&emu, &tenant, &form),
        Err(_) => Err(AadError::missing("grant_type")),
    };
    match result {
        Ok(body) => (
            StatusCode::OK,
            [(header::CACHE_CONTROL, "no-store, no-cache")],
            Json(body),
        )
            .into_response(),
        Err(err) => err.render(&emu, correlation(&headers).as_deref()),
    }
}

fn handle(emu: &Emulator, tenant_key: &str, form: &FormMap) -> Result<Value, AadError> {
    let tenant = emu
        .inner
        .tenant(tenant_key)
        .ok_or_else(|| AadError::unknown_tenant(tenant_key))?;
    let grant = form
        .get("grant_type")
        .ok_or_else(|| AadError::missing("grant_type"))?;
    if grant != "client_credentials" && grant != "authorization_code" {
        return Err(AadError::bad_request(
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant}'."),
        ));
    }
    let app = authenticate(emu, &tenant, form)?;
    if grant == "client_credentials" {
        client_credentials(emu, &tenant, &app, form)
    } else {
        authorization_code(emu, &tenant, &app, form)
    }
}

fn client_credentials(
    emu: &Emulator,
    tenant: &Tenant,
    app: &ClientApp,
    form: &FormMap,
) -> Result<Value, AadError> {
    let scope = form
        .get("scope")
        .ok_or_else(|| AadError::missing("scope"))?;
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    let resource = match scopes.as_slice() {
        [one] => one.strip_suffix("/.default"),
        _ => None,
    };
    let Some(resource) = resource else {
        return Err(AadError::bad_request(
            "invalid_scope",
            70011,
            format!(
                "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
            ),
        ));
    };
    let base = emu.inner.base();
    // Another resource's token is issued too (as Entra would for a resource it knows); Graph
    // then rejects it with "Invalid audience", which is the failure a wrong cloud produces.
    let (aud, roles) = if resource.trim_end_matches('/').eq_ignore_ascii_case(&base) {
        (base, app.permissions.clone())
    } else {
        (resource.to_string(), Vec::new())
    };
    let access_token = app_token(emu, tenant, app, &aud, &roles);
    Ok(json!({
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME,
        "ext_expires_in": TOKEN_LIFETIME,
        "access_token": access_token,
    }))
}

/// A stable object id for the app's service principal in a tenant.
fn service_principal(tenant: &Tenant, client_id: &str) -> String {
    let digest = sha256(format!("{}|{}", tenant.id, client_id.to_lowercase()).as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn sts(tenant: &Tenant) -> String {
    format!("https://sts.windows.net/{}/", tenant.id)
}

fn app_token(
    emu: &Emulator,
    tenant: &Tenant,
    app: &ClientApp,
    aud: &str,
    roles: &[String],
) -> String {
    let now = emu.inner.now();
    let oid = service_principal(tenant, &app.client_id);
    let mut claims = json!({
        "aud": aud, "iss": sts(tenant), "iat": now, "nbf": now, "exp": now + TOKEN_LIFETIME,
        "app_displayname": app.display_name, "appid": app.client_id, "appidacr": "2",
        "idp": sts(tenant), "idtyp": "app", "oid": oid, "sub": oid, "tid": tenant.id,
        "uti": b64url(uuid::Uuid::new_v4().as_bytes()), "ver": "1.0",
    });
    if !roles.is_empty() {
        claims["roles"] = json!(roles);
    }
    emu.inner.keys.current().sign(&claims)
}

fn authorization_code(
    emu: &Emulator,
    tenant: &Tenant,
    app: &ClientApp,
    form: &FormMap,
) -> Result<Value, AadError> {
    let code = form.get("code").ok_or_else(|| AadError::missing("code"))?;
    let redirect = form
        .get("redirect_uri")
        .ok_or_else(|| AadError::missing("redirect_uri"))?;
    let grant = redeem(emu, tenant, app, code)?;
    if grant.redirect_uri != *redirect {
        return Err(AadError::bad_request(
            "invalid_grant",
            500112,
            format!(
                "The reply address '{redirect}' does not match the reply address '{}' provided when \
             requesting Authorization code.",
                grant.redirect_uri
            ),
        ));
    }
    let verifier = form
        .get("code_verifier")
        .ok_or_else(|| AadError::missing("code_verifier"))?;
    if b64url(&sha256(verifier.as_bytes())) != grant.challenge {
        return Err(AadError::bad_request(
            "invalid_grant",
            501481,
            "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
        ));
    }
    let user = tenant.read().users[grant.user as usize].user.clone();
    let oidc: Vec<&str> = grant
        .scope
        .split_whitespace()
        .filter(|s| matches!(*s, "openid" | "profile" | "email" | "offline_access"))
        .collect();
    Ok(json!({
        "token_type": "Bearer",
        "scope": format!("{} {}/User.Read", oidc.join(" "), emu.inner.base()),
        "expires_in": TOKEN_LIFETIME,
        "ext_expires_in": TOKEN_LIFETIME,
        "access_token": user_token(emu, tenant, app, &user, &oidc),
        "id_token": id_token(emu, tenant, app, &user, &grant),
    }))
}

/// Marks the code used, after checking it belongs to this tenant and client; a second
/// redemption (even after a failed PKCE check) is AADSTS54005.
fn redeem(
    emu: &Emulator,
    tenant: &Tenant,
    app: &ClientApp,
    code: &str,
) -> Result<AuthCode, AadError> {
    let invalid = |code: u32, message: &str| AadError::bad_request("invalid_grant", code, message);
    let mut codes = lock(&emu.inner.codes);
    let grant = codes.get_mut(code).ok_or_else(|| {
        invalid(
            70000,
            "The provided value for the 'code' parameter is not valid.",
        )
    })?;
    if grant.redeemed {
        return Err(invalid(
            54005,
            "OAuth2 Authorization code was already redeemed, please retry \
            with a new valid code or use an existing refresh token.",
        ));
    }
    if grant.tenant != tenant.idx {
        return Err(invalid(
            700005,
            "Provided Authorization Code is intended to use against other tenant, so rejected.",
        ));
    }
    if !grant.client_id.eq_ignore_ascii_case(&app.client_id) {
        return Err(invalid(
            70000,
            "The provided authorization code was issued to a different client.",
        ));
    }
    grant.redeemed = true;
    if grant.issued_at + CODE_LIFETIME < emu.inner.now() {
        return Err(invalid(
            70008,
            "The provided authorization code or refresh token has expired \
            due to inactivity. Send a new interactive authorization request for this user and resource.",
        ));
    }
    Ok(grant.clone())
}

/// Pairwise `sub`: stable per (user, app), different across apps, as Entra's.
fn pairwise_sub(oid: &str, client_id: &str) -> String {
    b64url(&sha256(
        format!("{oid}|{}", client_id.to_lowercase()).as_bytes(),
    ))[..43]
        .to_string()
}

fn id_token(
    emu: &Emulator,
    tenant: &Tenant,
    app: &ClientApp,
    user: &User,
    grant: &AuthCode,
) -> String {
    let now = emu.inner.now();
    let scopes: Vec<&str> = grant.scope.split_whitespace().collect();
    let mut claims = json!({
        "aud": app.client_id, "iss": format!("{}/{}/v2.0", emu.inner.base(), tenant.id),
        "iat": now, "nbf": now, "exp": now + ID_TOKEN_LIFETIME,
        "nonce": grant.nonce, "oid": user.id, "sub": pairwise_sub(&user.id, &app.client_id),
        "tid": tenant.id, "sid": guid(), "uti": b64url(uuid::Uuid::new_v4().as_bytes()), "ver": "2.0",
    });
    if scopes.contains(&"profile") {
        claims["name"] = json!(user.display_name);
        claims["preferred_username"] = json!(user.user_principal_name);
    }
    // Entra sends `email` only when asked for and only when the user has one; many don't.
    if let (true, Some(mail)) = (scopes.contains(&"email"), &user.mail) {
        claims["email"] = json!(mail);
    }
    emu.inner.keys.current().sign(&claims)
}

fn user_token(
    emu: &Emulator,
    tenant: &Tenant,
    app: &ClientApp,
    user: &User,
    oidc: &[&str],
) -> String {
    let now = emu.inner.now();
    let scp = format!("{} User.Read", oidc.join(" ")).trim().to_string();
    let claims = json!({
        "aud": emu.inner.base(), "iss": sts(tenant), "iat": now, "nbf": now, "exp": now + TOKEN_LIFETIME,
        "app_displayname": app.display_name, "appid": app.client_id, "appidacr": "2",
        "idtyp": "user", "name": user.display_name, "oid": user.id, "scp": scp,
        "sub": pairwise_sub(&user.id, &app.client_id), "tid": tenant.id,
        "unique_name": user.user_principal_name, "upn": user.user_principal_name,
        "uti": b64url(uuid::Uuid::new_v4().as_bytes()), "ver": "1.0",
    });
    emu.inner.keys.current().sign(&claims)
}
