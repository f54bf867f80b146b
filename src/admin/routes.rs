//! The admin API's route table: one entry per operation with the handler and what the
//! OpenAPI document says about it, so the router and `/api/ms365/openapi.json` cannot drift
//! apart. The document covers paths, operations, who may call them, parameters and
//! status codes; bodies are described in words and in `docs/admin-api.md`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::routing::{MethodRouter, delete, get, post};
use serde_json::{Map, Value, json};

use super::{AdminState, settings_api, status, sync_api, tenants_api, tokens_api};

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credential (the OpenAPI document itself).
    Public,
    /// A tenant administrator, or the system administrator naming the tenant.
    Tenant,
    /// The system administrator only.
    System,
}

/// One operation of the API.
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub id: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// Success status and what it carries.
    pub ok: (u16, &'static str),
    pub handler: MethodRouter<Arc<AdminState>>,
}

fn op(
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    access: Access,
    ok: (u16, &'static str),
    handler: MethodRouter<Arc<AdminState>>,
) -> Operation {
    Operation {
        method,
        path,
        id,
        summary,
        access,
        ok,
        handler,
    }
}

/// Every operation, in the order the page uses them.
pub fn operations() -> Vec<Operation> {
    use Access::{Public, System, Tenant};
    vec![
        op(
            "get",
            "/api/ms365",
            "getMs365Settings",
            "The tenant's Microsoft 365 settings with its redirect URIs",
            Tenant,
            (200, "the settings document"),
            get(settings_api::get_settings),
        ),
        op(
            "post",
            "/api/ms365",
            "updateMs365Settings",
            "Change some or all settings; answers the whole document",
            Tenant,
            (200, "the settings document"),
            post(settings_api::post_settings),
        ),
        op(
            "post",
            "/api/ms365/certificate",
            "generateMs365Certificate",
            "Generate New Key Pair; answers public_key.pem",
            Tenant,
            (200, "the certificate as a PEM attachment"),
            post(settings_api::generate_certificate),
        ),
        op(
            "get",
            "/api/ms365/certificate",
            "downloadMs365Certificate",
            "Download the current public_key.pem",
            Tenant,
            (200, "the certificate as a PEM attachment"),
            get(settings_api::download_certificate),
        ),
        op(
            "get",
            "/api/ms365/users",
            "listMs365Users",
            "Microsoft 365 users, read live from Graph",
            Tenant,
            (200, "{count, items:[{id, name, email}]}"),
            get(sync_api::list_ms365_users),
        ),
        op(
            "post",
            "/api/users/{id}/ms365_binding",
            "addUserMs365Binding",
            "Bind a PBX user to a Microsoft 365 user (OID or UPN)",
            Tenant,
            (200, "the binding"),
            post(sync_api::bind_user),
        ),
        op(
            "post",
            "/api/users/{id}/ms365_binding/destroy",
            "removeUserMs365Binding",
            "Unbind a PBX user from its Microsoft 365 user",
            Tenant,
            (204, "no content"),
            post(sync_api::unbind_user),
        ),
        op(
            "get",
            "/api/ms365/status",
            "getMs365Status",
            "Certificate expiry, warnings, last and next sync",
            Tenant,
            (200, "the status"),
            get(status::get_status),
        ),
        op(
            "post",
            "/api/ms365/test",
            "testMs365Connection",
            "Test connection: app token, a user, a photo, a contact folder",
            Tenant,
            (200, "{ok, checks:[{name, ok, message, aadsts, hint}]}"),
            post(status::test_connection),
        ),
        op(
            "post",
            "/api/ms365/sync",
            "startMs365Sync",
            "Sync now",
            Tenant,
            (202, "{outcome}"),
            post(sync_api::sync_now),
        ),
        op(
            "get",
            "/api/ms365/sync/runs",
            "listMs365SyncRuns",
            "The tenant's sync runs, newest first",
            Tenant,
            (200, "{count, items:[run]}"),
            get(sync_api::list_runs),
        ),
        op(
            "get",
            "/api/ms365/sync/runs/{id}",
            "getMs365SyncRun",
            "One sync run with its live progress",
            Tenant,
            (200, "the run"),
            get(sync_api::get_run),
        ),
        op(
            "post",
            "/api/ms365/sync/runs/{id}/approve",
            "approveMs365SyncRun",
            "Apply a run held by the deletion threshold",
            Tenant,
            (200, "the applied run's report"),
            post(sync_api::approve),
        ),
        op(
            "post",
            "/api/admin/tenants",
            "createTenant",
            "Create a tenant",
            System,
            (201, "the tenant"),
            post(tenants_api::create_tenant),
        ),
        op(
            "get",
            "/api/admin/tenants",
            "listTenants",
            "List tenants",
            System,
            (200, "{count, items:[tenant]}"),
            get(tenants_api::list_tenants),
        ),
        op(
            "post",
            "/api/admin/tenants/{id}/tokens",
            "issueTenantAdminToken",
            "Issue a tenant administrator token (shown once)",
            System,
            (201, "{id, tenant_id, label, created_at, expires_at, token}"),
            post(tokens_api::issue_token),
        ),
        op(
            "get",
            "/api/admin/tenants/{id}/tokens",
            "listTenantAdminTokens",
            "A tenant's administrator tokens (never the tokens themselves)",
            System,
            (
                200,
                "{count, items:[{id, label, created_at, last_used_at, expires_at}]}",
            ),
            get(tokens_api::system_list),
        ),
        op(
            "delete",
            "/api/admin/tenants/{id}/tokens/{token_id}",
            "revokeTenantAdminToken",
            "Revoke a tenant administrator token",
            System,
            (204, "revoked"),
            delete(tokens_api::system_revoke),
        ),
        op(
            "get",
            "/api/ms365/tokens",
            "listOwnAdminTokens",
            "The tenant's administrator tokens (never the tokens themselves)",
            Tenant,
            (
                200,
                "{count, items:[{id, label, created_at, last_used_at, expires_at}]}",
            ),
            get(tokens_api::tenant_list),
        ),
        op(
            "delete",
            "/api/ms365/tokens/{token_id}",
            "revokeOwnAdminToken",
            "Revoke one of the tenant's administrator tokens",
            Tenant,
            (204, "revoked"),
            delete(tokens_api::tenant_revoke),
        ),
        op(
            "get",
            "/api/admin/ms365",
            "getSystemMs365Settings",
            "System level: a tenant's settings (named by X-Tenant)",
            System,
            (200, "the settings document"),
            get(tenants_api::system_get_settings),
        ),
        op(
            "post",
            "/api/admin/ms365",
            "updateSystemMs365Settings",
            "System level: change a tenant's settings",
            System,
            (200, "the settings document"),
            post(tenants_api::system_post_settings),
        ),
        op(
            "post",
            "/api/admin/ms365/certificate",
            "generateSystemMs365Certificate",
            "System level: Generate New Key Pair for a tenant",
            System,
            (200, "the certificate as a PEM attachment"),
            post(tenants_api::system_generate_certificate),
        ),
        op(
            "get",
            "/api/admin/ms365/certificate",
            "downloadSystemMs365Certificate",
            "System level: download a tenant's public_key.pem",
            System,
            (200, "the certificate as a PEM attachment"),
            get(tenants_api::system_download_certificate),
        ),
        op(
            "get",
            "/api/ms365/openapi.json",
            "getOpenApi",
            "This document",
            Public,
            (200, "OpenAPI 3.1"),
            get(openapi_json),
        ),
    ]
}

/// The router of every operation (methods of one path merged).
pub fn api_router(state: Arc<AdminState>) -> Router {
    let mut by_path: BTreeMap<&str, MethodRouter<Arc<AdminState>>> = BTreeMap::new();
    for o in operations() {
        let merged = match by_path.remove(o.path) {
            Some(existing) => existing.merge(o.handler),
            None => o.handler,
        };
        by_path.insert(o.path, merged);
    }
    let router = by_path
        .into_iter()
        .fold(Router::new(), |r, (path, m)| r.route(path, m));
    router.with_state(state)
}

async fn openapi_json() -> axum::Json<Value> {
    axum::Json(openapi())
}

/// The OpenAPI 3.1 document of [`operations`].
pub fn openapi() -> Value {
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for o in operations() {
        paths
            .entry(o.path)
            .or_default()
            .insert(o.method.into(), operation_doc(&o));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "ms365-gateway administration API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "PortSIP v22 compatible Microsoft 365 integration endpoints, and the gateway's own. Errors use PortSIP's {\"errors\":[{code,message,detail}]} format.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "__Host-pbx_session"},
            },
            "schemas": {"Errors": errors_schema()},
        },
    })
}

fn operation_doc(o: &Operation) -> Value {
    let mut parameters: Vec<Value> = o
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if o.access == Access::Tenant {
        parameters.push(json!({"name": "X-Tenant", "in": "header", "required": false,
            "description": "Tenant id or SIP domain; required for the system administrator, must be the caller's own tenant otherwise",
            "schema": {"type": "string"}}));
    }
    let mut responses = Map::new();
    responses.insert(o.ok.0.to_string(), json!({"description": o.ok.1}));
    for (status, what) in error_statuses(o.access) {
        responses.insert(
            status.to_string(),
            json!({"description": what,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}}}),
        );
    }
    let security = match o.access {
        Access::Public => json!([]),
        Access::Tenant => json!([{"bearer": []}, {"session": []}]),
        Access::System => json!([{"bearer": []}]),
    };
    json!({"operationId": o.id, "summary": o.summary, "tags": [tag(o.access)],
        "parameters": parameters, "responses": responses, "security": security})
}

fn tag(access: Access) -> &'static str {
    match access {
        Access::Public => "Meta",
        Access::Tenant => "Microsoft 365",
        Access::System => "System",
    }
}

fn error_statuses(access: Access) -> Vec<(u16, &'static str)> {
    if access == Access::Public {
        return Vec::new();
    }
    vec![
        (400, "VALIDATE_FAILED or BAD_REQUEST"),
        (401, "UNAUTHORIZED"),
        (403, "FORBIDDEN"),
        (404, "NOT_FOUND"),
        (429, "TOO_MANY_REQUESTS"),
    ]
}

fn errors_schema() -> Value {
    json!({"type": "object", "required": ["errors"], "properties": {"errors": {"type": "array",
        "items": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"}, "detail": {}}}}}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_documented_once() {
        let doc = openapi();
        let ops = operations();
        let mut seen = std::collections::HashSet::new();
        for o in &ops {
            assert!(
                seen.insert((o.method, o.path)),
                "{} {} twice",
                o.method,
                o.path
            );
            let entry = &doc["paths"][o.path][o.method];
            assert_eq!(entry["operationId"], o.id);
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(documented, ops.len());
        let binding = &doc["paths"]["/api/users/{id}/ms365_binding"]["post"]["parameters"][0];
        assert_eq!(binding["name"], "id");
    }
}
