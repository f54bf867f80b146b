//! `GET|POST /api/ms365` (the settings document, PortSIP v22 shape, with the read-only
//! redirect URIs the administrator copies into the Entra app registration) and
//! `GET|POST /api/ms365/certificate` ("Generate New Key Pair" and the `public_key.pem`
//! download).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use serde_json::{Map, Value};

use super::AdminState;
use super::auth::TenantScope;
use super::error::ApiError;
use crate::config::ListenerKind;
use crate::entra::credential::{CertificateInfo, KeyBits};
use crate::settings::Ms365Settings;
use crate::store::Tenant;
use crate::tenant_keys::DEFAULT_VALID_DAYS;

/// Fields the server computes; accepted in a POST body (a page posts back what it read)
/// and ignored.
const READ_ONLY: &[&str] = &["redirect_uri", "sbc_redirect_uri"];

pub async fn get_settings(
    State(state): State<Arc<AdminState>>,
    scope: TenantScope,
) -> Result<Response, ApiError> {
    let settings = state.store.ms365_settings(&scope.tenant.id).await?;
    Ok(axum::Json(settings_document(&state, &settings)).into_response())
}

pub async fn post_settings(
    State(state): State<Arc<AdminState>>,
    scope: TenantScope,
    body: Bytes,
) -> Result<Response, ApiError> {
    let saved = update_settings(&state, &scope.tenant, &body).await?;
    Ok(axum::Json(settings_document(&state, &saved)).into_response())
}

/// The document `GET /api/ms365` answers.
pub(super) fn settings_document(state: &AdminState, settings: &Ms365Settings) -> Value {
    let mut doc = serde_json::to_value(settings).unwrap_or_default();
    let uri_of = |kind: ListenerKind| {
        state
            .config
            .listeners
            .iter()
            .find(|l| l.kind == kind)
            .map(|l| l.redirect_uri())
            .unwrap_or_default()
    };
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("redirect_uri".into(), uri_of(ListenerKind::Pbx).into());
        obj.insert("sbc_redirect_uri".into(), uri_of(ListenerKind::Sbc).into());
    }
    doc
}

/// Applies a partial document onto the stored one, validates the result and saves it.
pub(super) async fn update_settings(
    state: &AdminState,
    tenant: &Tenant,
    body: &[u8],
) -> Result<Ms365Settings, ApiError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    let Value::Object(mut patch) = patch else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    };
    for key in READ_ONLY {
        patch.remove(*key);
    }
    let current = state.store.ms365_settings(&tenant.id).await?;
    let mut doc = serde_json::to_value(&current).unwrap_or_default();
    merge(&mut doc, Value::Object(patch));
    let next: Ms365Settings = serde_path_to_error::deserialize(&doc).map_err(|e| {
        let field = e.path().to_string();
        ApiError::validation(field, e.into_inner().to_string())
    })?;
    next.validate()
        .map_err(|(field, message)| ApiError::validation(field, message))?;
    state.store.save_ms365_settings(&tenant.id, &next).await?;
    // Real-time updates follow the settings (turned on or off, mailboxes in scope).
    let _ = state.sync.request_maintenance(&tenant.id);
    tracing::info!(tenant = %tenant.id, "Microsoft 365 settings changed");
    Ok(next)
}

/// Merges `patch` into `doc`: objects field by field, anything else replaced.
fn merge(doc: &mut Value, patch: Value) {
    match (doc, patch) {
        (Value::Object(doc), Value::Object(patch)) => merge_objects(doc, patch),
        (doc, patch) => *doc = patch,
    }
}

fn merge_objects(doc: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (key, value) in patch {
        match doc.get_mut(&key) {
            Some(existing) if existing.is_object() && value.is_object() => merge(existing, value),
            _ => {
                doc.insert(key, value);
            }
        }
    }
}

pub async fn generate_certificate(
    State(state): State<Arc<AdminState>>,
    scope: TenantScope,
) -> Result<Response, ApiError> {
    let info = generate(&state, &scope.tenant).await?;
    super::status::refresh_tenant_expiry(&state, &scope.tenant.id).await?;
    Ok(pem_attachment(&info))
}

pub async fn download_certificate(
    State(state): State<Arc<AdminState>>,
    scope: TenantScope,
) -> Result<Response, ApiError> {
    let info = current(&state, &scope.tenant).await?;
    Ok(pem_attachment(&info))
}

pub(super) async fn generate(
    state: &AdminState,
    tenant: &Tenant,
) -> Result<CertificateInfo, ApiError> {
    Ok(state
        .keys
        .generate(tenant, KeyBits::default(), DEFAULT_VALID_DAYS)
        .await?)
}

pub(super) async fn current(
    state: &AdminState,
    tenant: &Tenant,
) -> Result<CertificateInfo, ApiError> {
    state
        .keys
        .current_certificate(&tenant.id)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(
                "no key pair yet: use Generate New Key Pair (POST /api/ms365/certificate)".into(),
            )
        })
}

/// `public_key.pem` as a download, as PortSIP answers it.
pub(super) fn pem_attachment(info: &CertificateInfo) -> Response {
    let mut response = info.certificate_pem.clone().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-pem-file"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"public_key.pem\""),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&info.thumbprint_sha1) {
        headers.insert("x-certificate-thumbprint", v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_partial_document_keeps_the_fields_it_does_not_name() {
        let mut doc =
            json!({"users": {"enabled": false, "sync_photo": true}, "sync_time": "0 0 * * *"});
        merge(
            &mut doc,
            json!({"users": {"enabled": true}, "directory_id": "x"}),
        );
        assert_eq!(
            doc,
            json!({"users": {"enabled": true, "sync_photo": true}, "sync_time": "0 0 * * *", "directory_id": "x"})
        );
        merge(&mut doc, json!({"users": {"selected_users": ["a"]}}));
        assert_eq!(doc["users"]["selected_users"], json!(["a"]));
        assert_eq!(doc["users"]["sync_photo"], true);
    }
}
