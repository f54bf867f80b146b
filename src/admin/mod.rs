//! Tenant administration: the API behind PortSIP v22's "Advanced > Microsoft 365
//! Integration" page (`/api/ms365…`, same paths and shapes), the endpoints PortSIP lacks
//! (status, connection test, sync runs, tenants and tenant-administrator tokens), its
//! authentication ([`auth`]) and the page itself ([`page`]). Served on the public listeners
//! so the page and its API share one origin; nothing under these paths reaches the PBX.
//! `docs/admin-api.md` is the reference; `/api/ms365/openapi.json` is generated from
//! [`routes::ROUTES`].

pub(crate) mod auth;
pub(crate) mod error;
pub(crate) mod page;
pub(crate) mod routes;
mod settings_api;
pub(crate) mod status;
mod sync_api;
mod tenants_api;
mod tokens_api;

use std::sync::Arc;

use axum::Router;

use crate::config::{Config, ConfigError};
use crate::keyring::Keyring;
use crate::metrics::Metrics;
use crate::sso::Sso;
use crate::sso::session::Sessions;
use crate::store::Store;
use crate::sync::worker::SyncHandle;
use crate::tenant_keys::TenantKeys;

pub use auth::hash_token;
pub use error::ApiError;
pub use routes::{Access, Operation, operations};

/// Shortest system administrator token accepted from `[admin] token_file`.
pub const MIN_SYSTEM_TOKEN_LEN: usize = 16;

/// What the admin handlers share.
pub struct AdminState {
    pub config: Arc<Config>,
    pub store: Store,
    /// Sign-in sessions: tenant administrators authenticate with theirs.
    pub sessions: Arc<Sessions>,
    /// The tenants' key pairs ("Generate New Key Pair", `public_key.pem`).
    pub keys: TenantKeys,
    /// Tenants' private keys and the PBX passwords, for "Test connection" and "Sync now".
    pub keyring: Keyring,
    pub sync: SyncHandle,
    pub metrics: Arc<Metrics>,
    /// The system administrator's token; `None` when `[admin] token_file` is not set, and
    /// then only tenant credentials work.
    system_token: Option<String>,
    failures: auth::FailureLimiter,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field(
                "system_token",
                &self.system_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl AdminState {
    /// Reads the system administrator token; a missing, empty or short file is a
    /// configuration error naming `admin.token_file`.
    pub fn new(
        config: Arc<Config>,
        store: Store,
        sso: &Sso,
        sync: SyncHandle,
        metrics: Arc<Metrics>,
    ) -> Result<AdminState, ConfigError> {
        let system_token = match &config.admin.token_file {
            Some(path) => Some(read_system_token(&config, path)?),
            None => None,
        };
        Ok(AdminState {
            config,
            store,
            sessions: sso.sessions().clone(),
            keys: sso.tenant_keys().clone(),
            keyring: sso.keyring().clone(),
            sync,
            metrics,
            system_token,
            failures: auth::FailureLimiter::default(),
        })
    }
}

fn read_system_token(config: &Config, path: &std::path::Path) -> Result<String, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        origin: config.source.display().to_string(),
        key: "admin.token_file".into(),
        message,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    let token = text.trim();
    if token.len() < MIN_SYSTEM_TOKEN_LEN || token.contains(char::is_whitespace) {
        return Err(invalid(format!(
            "{} must hold one token of at least {MIN_SYSTEM_TOKEN_LEN} characters without spaces \
             (e.g. `openssl rand -base64 32`)",
            path.display()
        )));
    }
    Ok(token.to_string())
}

/// The admin API and page, to be merged into a public listener's router.
pub fn router(state: Arc<AdminState>) -> Router {
    routes::api_router(state).merge(page::routes())
}
