//! The system administrator's endpoints: tenants, tenant-administrator tokens, and the
//! system-level `/api/admin/ms365…` twins of the tenant endpoints (the system administrator
//! names the tenant with `X-Tenant`, as PortSIP's "switch to the tenant scope").

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use super::auth::{Caller, SystemAdmin, TenantScope};
use super::error::ApiError;
use super::settings_api;
use crate::config::TenantSeed;
use crate::config::validate::server_name;
use crate::ids::TenantId;
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
    let id = TenantId::parse(&id).map_err(|_| ApiError::validation("id", TenantId::RULE))?;
    if state.store.tenant(&id).await?.is_some() {
        return Err(ApiError::Conflict(format!("tenant {id} exists")));
    }
    let seed = TenantSeed {
        name: new.name.unwrap_or_else(|| id.to_string()),
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
