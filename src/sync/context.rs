//! Builds what a sync run needs for a tenant from its stored settings: the national cloud's
//! endpoints (with the config's overrides), the tenant's signing credentials, an app-token
//! client that promotes a new key pair once Microsoft accepts it, the Graph client, and
//! (with `[pbx] kind = "portsip"`) the PBX REST client signed in as the tenant's PBX
//! administrator.

use std::sync::Arc;
use std::time::Duration;

use super::pbx_push::PbxTarget;
use super::{SyncContext, SyncError};
use crate::config::{Config, PbxKind};
use crate::entra::CloudEndpoints;
use crate::entra::token::{AppTokenClient, TenantApp};
use crate::graph::{GraphClient, GraphOptions};
use crate::ids::TenantId;
use crate::keyring::Keyring;
use crate::pbx::PbxClient;
use crate::store::Store;
use crate::tenant_keys::TenantKeys;

/// The sync context of `tenant_id`, or why the tenant cannot be synced yet. `keyring` holds
/// the tenant's private keys.
pub async fn for_tenant(
    config: &Config,
    store: &Store,
    keyring: &Keyring,
    tenant_id: &TenantId,
) -> Result<SyncContext, SyncError> {
    let Some(tenant) = store.tenant(tenant_id).await? else {
        return Err(SyncError::InvalidOptions(format!(
            "no tenant with id `{tenant_id}`"
        )));
    };
    let settings = store.ms365_settings(tenant_id).await?;
    if !settings.is_configured() {
        return Err(SyncError::InvalidOptions(format!(
            "tenant `{tenant_id}` has no Application (client) ID and Directory (tenant) ID yet"
        )));
    }
    let keys = Arc::new(TenantKeys::new(store.clone(), keyring.clone()));
    let endpoints = CloudEndpoints::resolve(settings.national_cloud, &config.clouds);
    let http = crate::entra::http::microsoft_client(Duration::from_secs(60));
    let app = TenantApp {
        directory_id: &settings.directory_id,
        application_id: &settings.application_id,
        alg: settings.assertion_alg,
    };
    let tokens = AppTokenClient::for_tenant(http.clone(), endpoints.clone(), keys, tenant_id, app)
        .await
        .map_err(|e| SyncError::InvalidOptions(format!("tenant `{tenant_id}`: {e}")))?;
    let graph = GraphClient::new(http, &endpoints, Arc::new(tokens), GraphOptions::default());
    Ok(SyncContext {
        store: store.clone(),
        graph,
        tenant_id: tenant_id.clone(),
        pbx: pbx_target(config, keyring, tenant_id, &tenant.domain)?,
    })
}

/// The tenant's PBX, when the connector is on. A tenant without PBX credentials cannot
/// get here: the configuration is refused at start-up.
pub fn pbx_target(
    config: &Config,
    keyring: &Keyring,
    tenant_id: &TenantId,
    domain: &str,
) -> Result<Option<PbxTarget>, SyncError> {
    if config.pbx.kind != PbxKind::PortSip {
        return Ok(None);
    }
    let login = (config.pbx_login(tenant_id).cloned()).ok_or_else(|| {
        SyncError::InvalidOptions(format!(
            "tenant `{tenant_id}` has no pbx_username / pbx_password_file for the PBX connector"
        ))
    })?;
    let client = PbxClient::new(&config.pbx, login, domain.to_string())?;
    Ok(Some(PbxTarget {
        client,
        keyring: keyring.clone(),
    }))
}
