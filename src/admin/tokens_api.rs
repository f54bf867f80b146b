//! Tenant-administrator tokens: issued by the system administrator (shown once, optionally
//! expiring), listed without their secret, and revoked, by the system administrator for any
//! tenant and by a tenant administrator for its own tenant (the page lists them with a
//! "Revoke" button). A revoked or expired token stops working at its next request.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use super::auth::{SystemAdmin, TenantScope, hash_token, new_tenant_token};
use super::error::ApiError;
use crate::ids::TenantId;
use crate::store::{AdminToken, Tenant};

/// Longest lifetime a token may be given.
const MAX_DAYS: u32 = 3650;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    label: Option<String>,
    /// Days until it stops working; absent: until revoked.
    expires_in_days: Option<u32>,
}

fn token_json(t: &AdminToken) -> Value {
    json!({
        "id": t.id,
        "tenant_id": t.tenant_id,
        "label": t.label,
        "created_at": t.created_at,
        "last_used_at": t.last_used_at,
        "expires_at": t.expires_at,
    })
}

/// The tenant named in the path; an id that breaks the rule names no tenant.
async fn tenant(state: &AdminState, id: &str) -> Result<Tenant, ApiError> {
    let found = match TenantId::parse(id) {
        Ok(id) => state.store.tenant(&id).await?,
        Err(_) => None,
    };
    found.ok_or_else(|| ApiError::NotFound(format!("no tenant {id}")))
}

/// `POST /api/admin/tenants/{id}/tokens {label?, expires_in_days?}`.
pub async fn issue_token(
    State(state): State<Arc<AdminState>>,
    _: SystemAdmin,
    Path(tenant_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: NewToken = if body.is_empty() {
        NewToken::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::validation("body", e.to_string()))?
    };
    let tenant = tenant(&state, &tenant_id).await?;
    let label = request
        .label
        .unwrap_or_else(|| "tenant administrator".into());
    if label.len() > 200 {
        return Err(ApiError::validation("label", "at most 200 characters"));
    }
    let expires_at = match request.expires_in_days {
        None => None,
        Some(d) if (1..=MAX_DAYS).contains(&d) => {
            Some(crate::store::now_epoch() + i64::from(d) * 86_400)
        }
        Some(_) => {
            return Err(ApiError::validation(
                "expires_in_days",
                format!("1 to {MAX_DAYS} days, or absent for no expiry"),
            ));
        }
    };
    let token = new_tenant_token();
    let record = (state.store)
        .insert_admin_token(&tenant.id, &hash_token(&token), &label, expires_at)
        .await?;
    tracing::info!(tenant = %tenant.id, token_id = %record.id, "tenant administrator token issued");
    let mut body = token_json(&record);
    body["token"] = json!(token);
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

async fn list(state: &AdminState, tenant: &Tenant) -> Result<Response, ApiError> {
    let items: Vec<Value> = (state.store.admin_tokens(&tenant.id).await?)
        .iter()
        .map(token_json)
        .collect();
    Ok(axum::Json(json!({ "count": items.len(), "items": items })).into_response())
}

async fn revoke(state: &AdminState, tenant: &Tenant, token_id: &str) -> Result<Response, ApiError> {
    if !state.store.revoke_admin_token(&tenant.id, token_id).await? {
        return Err(ApiError::NotFound(format!(
            "no token {token_id} for this tenant"
        )));
    }
    tracing::info!(tenant = %tenant.id, %token_id, "tenant administrator token revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/admin/tenants/{id}/tokens`.
pub async fn system_list(
    State(state): State<Arc<AdminState>>,
    _: SystemAdmin,
    Path(tenant_id): Path<String>,
) -> Result<Response, ApiError> {
    list(&state, &tenant(&state, &tenant_id).await?).await
}

/// `DELETE /api/admin/tenants/{id}/tokens/{token_id}`.
pub async fn system_revoke(
    State(state): State<Arc<AdminState>>,
    _: SystemAdmin,
    Path((tenant_id, token_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    revoke(&state, &tenant(&state, &tenant_id).await?, &token_id).await
}

/// `GET /api/ms365/tokens`: the caller's tenant's tokens.
pub async fn tenant_list(
    State(state): State<Arc<AdminState>>,
    scope: TenantScope,
) -> Result<Response, ApiError> {
    list(&state, &scope.tenant).await
}

/// `DELETE /api/ms365/tokens/{token_id}`.
pub async fn tenant_revoke(
    State(state): State<Arc<AdminState>>,
    scope: TenantScope,
    Path(token_id): Path<String>,
) -> Result<Response, ApiError> {
    revoke(&state, &scope.tenant, &token_id).await
}
