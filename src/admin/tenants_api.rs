//! The system administrator's endpoints: tenants, tenant-administrator tokens, and the
//! system-level `/api/admin/ms365…` twins of the tenant endpoints (the system administrator
//! names the tenant with `X-Tenant`, as PortSIP's "switch to the tenant scope").

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use super::auth::{Caller, SystemAdmin, TenantScope, hash_token, new_tenant_token};
use super::error::ApiError;
use super::settings_api;
use crate::config::TenantSeed;
use crate::config::validate::{server_name, tenant_id_ok};
use crate::store::{StoreError, Tenant};

fn tenant_json(t: &Tenant) -> Value {
    json!({ "id": t.id, "domain": t.domain, "name": t.name })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    id: Option<String>,
    domain: String,
    name: Option<String>,
}

pub async fn create_tenant(
    State(state): State<Arc<AdminState>>,
    _: SystemAdmin,
    body: Bytes,
) -> Result<Response, ApiError> {
    let new: NewTenant =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body))
            .map_err(|e| ApiError::validation(e.path().to_string(), e.into_inner().to_string()))?;
    let domain = server_name(&new.domain).map_err(|m| ApiError::validation("domain", m))?;
    let id = new.id.unwrap_or_else(|| domain.replace('.', "-"));
    if !tenant_id_ok(&id) {
        return Err(ApiError::validation(
            "id",
            "use 1-64 letters, digits, '-' or '_'",
        ));
    }
    if state.store.tenant(&id).await?.is_some() {
        return Err(ApiError::Conflict(format!("tenant {id} exists")));
    }
    let seed = TenantSeed {
        name: new.name.unwrap_or_else(|| id.clone()),
        id,
        domain,
        pbx_login: None,
    };
    let tenant = state
        .store
        .upsert_tenant(&seed)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => ApiError::Conflict(m),
            other => other.into(),
        })?;
    tracing::info!(tenant = %tenant.id, domain = %tenant.domain, "tenant created");
    Ok((StatusCode::CREATED, axum::Json(tenant_json(&tenant))).into_response())
}

pub async fn list_tenants(
    State(state): State<Arc<AdminState>>,
    _: SystemAdmin,
) -> Result<axum::Json<Value>, ApiError> {
    let items: Vec<Value> = state
        .store
        .tenants()
        .await?
        .iter()
        .map(tenant_json)
        .collect();
    Ok(axum::Json(json!({ "count": items.len(), "items": items })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    label: Option<String>,
}

pub async fn issue_token(
    State(state): State<Arc<AdminState>>,
    _: SystemAdmin,
    Path(tenant_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: NewToken = if body.is_empty() {
        NewToken::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::validation("label", e.to_string()))?
    };
    let tenant = state
        .store
        .tenant(&tenant_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no tenant {tenant_id}")))?;
    let label = request
        .label
        .unwrap_or_else(|| "tenant administrator".into());
    if label.len() > 200 {
        return Err(ApiError::validation("label", "at most 200 characters"));
    }
    let token = new_tenant_token();
    let record = state
        .store
        .insert_admin_token(&tenant.id, &hash_token(&token), &label)
        .await?;
    tracing::info!(tenant = %tenant.id, token_id = %record.id, "tenant administrator token issued");
    let body =
        json!({ "id": record.id, "tenant_id": tenant.id, "label": record.label, "token": token });
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// The tenant endpoints' scope, for the system administrator only.
fn system_scope(scope: TenantScope) -> Result<TenantScope, ApiError> {
    match scope.caller {
        Caller::System => Ok(scope),
        Caller::TenantAdmin { .. } => Err(ApiError::Forbidden(
            "the /api/admin endpoints are for the system administrator; use /api/ms365".into(),
        )),
    }
}

pub async fn system_get_settings(
    state: State<Arc<AdminState>>,
    scope: TenantScope,
) -> Result<Response, ApiError> {
    settings_api::get_settings(state, system_scope(scope)?).await
}

pub async fn system_post_settings(
    state: State<Arc<AdminState>>,
    scope: TenantScope,
    body: Bytes,
) -> Result<Response, ApiError> {
    settings_api::post_settings(state, system_scope(scope)?, body).await
}

pub async fn system_generate_certificate(
    state: State<Arc<AdminState>>,
    scope: TenantScope,
) -> Result<Response, ApiError> {
    settings_api::generate_certificate(state, system_scope(scope)?).await
}

pub async fn system_download_certificate(
    state: State<Arc<AdminState>>,
    scope: TenantScope,
) -> Result<Response, ApiError> {
    settings_api::download_certificate(state, system_scope(scope)?).await
}
