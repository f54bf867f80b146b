//! The sync side of the admin API: "Sync now", the run records (live progress while a run
//! goes), approving a run held by the deletion threshold, the Microsoft 365 user list the
//! page picks scopes from, and binding PBX users to Microsoft 365 accounts by hand.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use chrono::DateTime;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminState;
use super::auth::TenantScope;
use super::error::ApiError;
use crate::graph::{GraphError, User};
use crate::ids::TenantId;
use crate::store::{DirectoryUser, RunTrigger, StoreError, SyncRun};
use crate::sync::worker::RequestOutcome;
use crate::sync::{SyncError, SyncOptions};

/// Runs listed at most per request.
const MAX_RUNS: u32 = 200;

/// A run as the API shows it.
pub(super) fn run_json(run: &SyncRun) -> Value {
    let time = |t: i64| DateTime::from_timestamp(t, 0).map(|t| t.to_rfc3339());
    json!({
        "id": run.id,
        "trigger": run.trigger.as_str(),
        "mode": run.mode,
        "status": run.status.as_str(),
        "message": run.message,
        "started_at": time(run.started_at),
        "finished_at": run.finished_at.and_then(time),
        "phase": run.phase,
        "done": run.done,
        "total": run.total,
        "counts": run.counts,
        "errors": run.errors,
        "errors_total": run.errors_total,
        "graph_requests": run.graph_requests,
        "throttled": run.throttled,
        "pbx_requests": run.pbx_requests,
    })
}

pub async fn sync_now(
    State(state): State<Arc<AdminState>>,
    scope: TenantScope,
) -> Result<Response, ApiError> {
    let settings = state.store.ms365_settings(&scope.tenant.id).await?;
    if !settings.is_configured() {
        return Err(ApiError::Conflict(
            "enter the Application (client) ID and Directory (tenant) ID first".into(),
        ));
    }
    // Another instance running this tenant answers the request (one run cluster-wide).
    if !state.sync.holds_tenant(&scope.tenant.id)
        && let Some(holder) = state.store.sync_lease(&scope.tenant.id).await?
        && holder.expires_at >= crate::store::now_epoch()
        && !holder
            .owner
            .ends_with(crate::sync::lease::MAINTENANCE_SUFFIX)
    {
        let body = json!({ "outcome": "coalesced_into_running", "instance": holder.owner });
        return Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response());
    }
    let ticket = state
        .sync
        .request(&scope.tenant.id, RunTrigger::Api)
        .map_err(|_| ApiError::Unavailable)?;
    let outcome = match ticket.outcome {
        RequestOutcome::Queued => "queued",
        RequestOutcome::CoalescedIntoRunning => "coalesced_into_running",
        RequestOutcome::CoalescedIntoQueued => "coalesced_into_queued",
    };
    tracing::info!(tenant = %scope.tenant.id, outcome, "sync requested through the admin API");
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "outcome": outcome })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    limit: Option<u32>,
}

pub async fn list_runs(
    State(state): State<Arc<AdminState>>,
    scope: TenantScope,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::validation("limit", e.body_text()))?;
    let limit = q.limit.unwrap_or(20).clamp(1, MAX_RUNS);
    let runs = state.store.sync_runs(&scope.tenant.id, limit).await?;
    let items: Vec<Value> = runs.iter().map(run_json).collect();
    Ok(axum::Json(json!({ "count": items.len(), "items": items })))
}

/// The run `id` of the caller's tenant; another tenant's run does not exist for it.
async fn tenant_run(
    state: &AdminState,
    scope: &TenantScope,
    id: &str,
) -> Result<SyncRun, ApiError> {
    match state.store.sync_run(id).await? {
        Some(run) if run.tenant_id == scope.tenant.id => Ok(run),
        _ => Err(ApiError::NotFound(format!("no sync run {id}"))),
    }
}

pub async fn get_run(
    State(state): State<Arc<AdminState>>,
    scope: TenantScope,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let run = tenant_run(&state, &scope, &id).await?;
    Ok(axum::Json(run_json(&run)))
}

pub async fn approve(
    State(state): State<Arc<AdminState>>,
    scope: TenantScope,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    tenant_run(&state, &scope, &id).await?;
    if state.sync.is_busy(&scope.tenant.id) {
        return Err(ApiError::Conflict(
            "a sync of this tenant is running; approve when it has finished".into(),
        ));
    }
    let report = crate::sync::approve_run(&state.store, &id, &SyncOptions::default())
        .await
        .map_err(|e| match e {
            SyncError::NotAwaitingApproval { .. } => ApiError::Conflict(e.to_string()),
            SyncError::RunNotFound(_) => ApiError::NotFound(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        })?;
    tracing::info!(tenant = %scope.tenant.id, run = %id, "held sync run approved");
    let run = tenant_run(&state, &scope, &report.run_id).await?;
    Ok(axum::Json(run_json(&run)))
}

async fn tenant_graph(
    state: &AdminState,
    tenant_id: &TenantId,
) -> Result<crate::graph::GraphClient, ApiError> {
    let ctx =
        crate::sync::context::for_tenant(&state.config, &state.store, &state.keyring, tenant_id)
            .await
            .map_err(|e| ApiError::Conflict(e.to_string()))?;
    Ok(ctx.graph)
}

const LIST_FIELDS: &[&str] = &["id", "displayName", "mail", "userPrincipalName"];

pub async fn list_ms365_users(
    State(state): State<Arc<AdminState>>,
    scope: TenantScope,
) -> Result<axum::Json<Value>, ApiError> {
    let graph = tenant_graph(&state, &scope.tenant.id).await?;
    let mut pages = graph.pages::<User>(graph.users_first_url(LIST_FIELDS, 999), "users");
    let mut items = Vec::new();
    while let Some(page) = pages.next().await {
        for u in page?.value {
            let email = u.mail.or(u.user_principal_name);
            items.push(json!({ "id": u.id, "name": u.display_name, "email": email }));
        }
    }
    Ok(axum::Json(json!({ "count": items.len(), "items": items })))
}

#[derive(Debug, Deserialize)]
struct BindingBody {
    id: String,
}

pub async fn bind_user(
    State(state): State<Arc<AdminState>>,
    scope: TenantScope,
    Path(pbx_user_id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let body: BindingBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::validation("id", format!("expected {{\"id\": \"OID or UPN\"}}: {e}"))
    })?;
    let account = body.id.trim();
    if account.is_empty() || account.contains(['/', '?', '#']) {
        return Err(ApiError::validation("id", "an OID or user principal name"));
    }
    let tenant = &scope.tenant;
    let pbx = state
        .store
        .pbx_user(&tenant.id, &pbx_user_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no PBX user {pbx_user_id}")))?;
    let user = lookup_ms365_user(&state, &tenant.id, account).await?;
    let entry = DirectoryUser {
        tenant_id: tenant.id.clone(),
        oid: user.id.clone(),
        upn: user.user_principal_name.clone().unwrap_or_default(),
        pbx_user_id: pbx.id.clone(),
        extension: Some(pbx.extension_number.clone()),
        display_name: pbx.profile.display_name.clone(),
        email: pbx.profile.email.clone().or(user.mail.clone()),
        role: crate::store::Role::User,
        enabled: pbx.enabled,
        source: "binding".into(),
    };
    state
        .store
        .bind_directory_user(&entry)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => ApiError::Conflict(m),
            other => other.into(),
        })?;
    tracing::info!(tenant = %tenant.id, pbx_user = %pbx.id, oid = %entry.oid, "PBX user bound to a Microsoft 365 account");
    Ok(axum::Json(
        json!({ "id": entry.oid, "name": user.display_name, "email": entry.email,
        "user_id": pbx.id, "extension_number": pbx.extension_number }),
    ))
}

/// The Microsoft 365 user with this OID or UPN, read from Graph.
async fn lookup_ms365_user(
    state: &AdminState,
    tenant_id: &TenantId,
    account: &str,
) -> Result<User, ApiError> {
    let graph = tenant_graph(state, tenant_id).await?;
    let path = format!(
        "/users/{}?$select={}",
        crate::graph::resources::path_segment(account),
        LIST_FIELDS.join(",")
    );
    match graph.get_json::<User>(&path, "user").await {
        Ok(u) => Ok(u),
        Err(GraphError::Api { status: 404, .. }) => Err(ApiError::validation(
            "id",
            format!("Microsoft 365 has no user {account}"),
        )),
        Err(e) => Err(e.into()),
    }
}

pub async fn unbind_user(
    State(state): State<Arc<AdminState>>,
    scope: TenantScope,
    Path(pbx_user_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = &scope.tenant;
    let Some(oid) = state
        .store
        .unbind_directory_user(&tenant.id, &pbx_user_id)
        .await?
    else {
        return Err(ApiError::NotFound(format!(
            "PBX user {pbx_user_id} has no Microsoft 365 binding"
        )));
    };
    // Sessions issued through the binding end with it.
    state
        .sessions
        .end_user_sessions(&tenant.id, &oid)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tracing::info!(tenant = %tenant.id, pbx_user = %pbx_user_id, %oid, "Microsoft 365 binding removed");
    Ok(StatusCode::NO_CONTENT)
}
