//! What the sign-in handlers share: configuration, the store, tenant keys, the outbound
//! client, the JWKS cache, the flow-cookie sealer, redeemed states, the rate limiter and the
//! session service. Built once at start-up.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::flow::UsedStates;
use super::ratelimit::RateLimiter;
use super::seal::{KEY_LEN, Sealer};
use super::session::{SessionError, Sessions};
use super::session_keys::SessionKeys;
use crate::config::{Config, ListenerConfig};
use crate::entra::keys::TenantKeys;
use crate::entra::oidc::JwksCache;
use crate::entra::{CloudEndpoints, NationalCloud};
use crate::store::Store;

/// Everything the `/ms365` handlers need.
pub struct Sso {
    pub config: Arc<Config>,
    pub store: Store,
    pub keys: TenantKeys,
    pub http: reqwest::Client,
    pub jwks: JwksCache,
    pub sealer: Sealer,
    pub used_states: UsedStates,
    pub limiter: RateLimiter,
    pub sessions: Arc<Sessions>,
}

impl Sso {
    pub fn new(config: Arc<Config>, store: Store) -> Result<Sso, SessionError> {
        let http = crate::entra::http::microsoft_client(Duration::from_secs(15));
        let session_keys = Arc::new(SessionKeys::load_or_create(&config.data_dir)?);
        let issuer = config
            .listeners
            .first()
            .map(|l| l.public_url.clone())
            .unwrap_or_default();
        let sessions = Arc::new(Sessions::new(
            store.clone(),
            session_keys,
            config.sso.session_lifetime,
            issuer,
        ));
        Ok(Sso {
            keys: TenantKeys::new(store.clone(), &config.data_dir),
            jwks: JwksCache::new(http.clone()),
            sealer: load_flow_sealer(&config.data_dir).map_err(|source| SessionError::Io {
                path: config.data_dir.join("keys"),
                source,
            })?,
            used_states: UsedStates::new(store.clone()),
            limiter: RateLimiter::new(config.sso.login_rate_per_minute),
            sessions,
            http,
            store,
            config,
        })
    }

    /// The endpoints of a cloud, with the config's overrides.
    pub fn endpoints(&self, cloud: NationalCloud) -> CloudEndpoints {
        CloudEndpoints::resolve(cloud, &self.config.clouds)
    }

    pub fn listener(&self, index: usize) -> Option<&ListenerConfig> {
        self.config.listeners.get(index)
    }
}

/// Loads the flow-cookie keys (`data_dir/keys/flow-<id>.key`, 32 raw bytes each), creating
/// the first. A new file with a higher id starts sealing; the older ones keep opening.
fn load_flow_sealer(data_dir: &Path) -> std::io::Result<Sealer> {
    let dir = data_dir.join("keys");
    std::fs::create_dir_all(&dir)?;
    let mut keys: Vec<(u8, [u8; KEY_LEN])> = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let Some(id) = name
            .strip_prefix("flow-")
            .and_then(|r| r.strip_suffix(".key"))
            .and_then(|n| n.parse::<u8>().ok())
        else {
            continue;
        };
        let bytes = std::fs::read(&path)?;
        let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a {KEY_LEN}-byte key", path.display()),
            )
        })?;
        keys.push((id, key));
    }
    if keys.is_empty() {
        let key = Sealer::generate_key();
        crate::fsutil::write_private(&dir.join("flow-1.key"), &key)?;
        keys.push((1, key));
    }
    keys.sort_by_key(|(id, _)| *id);
    Ok(Sealer::new(&keys))
}
