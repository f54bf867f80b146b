//! Builds what a sync run needs for a tenant from its stored settings: the national cloud's
//! endpoints (with the config's overrides), the tenant's signing credentials, an app-token
//! client that promotes a new key pair once Microsoft accepts it, and the Graph client.

use std::sync::Arc;
use std::time::Duration;

use super::{SyncContext, SyncError};
use crate::config::Config;
use crate::entra::CloudEndpoints;
use crate::entra::assertion::AssertionAlg;
use crate::entra::keys::TenantKeys;
use crate::entra::token::AppTokenClient;
use crate::graph::{GraphClient, GraphOptions};
use crate::keyring::Keyring;
use crate::store::Store;

/// The sync context of `tenant_id`, or why the tenant cannot be synced yet. `keyring` holds
/// the tenant's private keys.
pub async fn for_tenant(
    config: &Config,
    store: &Store,
    keyring: &Keyring,
    tenant_id: &str,
) -> Result<SyncContext, SyncError> {
    if store.tenant(tenant_id).await?.is_none() {
        return Err(SyncError::InvalidOptions(format!(
            "no tenant with id `{tenant_id}`"
        )));
    }
    let settings = store.ms365_settings(tenant_id).await?;
    if !settings.is_configured() {
        return Err(SyncError::InvalidOptions(format!(
            "tenant `{tenant_id}` has no Application (client) ID and Directory (tenant) ID yet"
        )));
    }
    let keys = TenantKeys::new(store.clone(), keyring.clone());
    let credentials = keys
        .signing_credentials(tenant_id)
        .await
        .map_err(|e| SyncError::InvalidOptions(format!("tenant `{tenant_id}`: {e}")))?;
    let endpoints = CloudEndpoints::resolve(settings.national_cloud, &config.clouds);
    let http = crate::entra::http::microsoft_client(Duration::from_secs(60));
    let alg = if settings.assertion_alg == "RS256" {
        AssertionAlg::Rs256
    } else {
        AssertionAlg::Ps256
    };
    let tokens = AppTokenClient::new(
        http.clone(),
        endpoints.clone(),
        &settings.directory_id,
        &settings.application_id,
        credentials,
        alg,
    )
    .with_rollover(keys, tenant_id);
    let graph = GraphClient::new(http, &endpoints, Arc::new(tokens), GraphOptions::default());
    Ok(SyncContext {
        store: store.clone(),
        graph,
        tenant_id: tenant_id.to_string(),
    })
}
