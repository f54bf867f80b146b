//! What the sign-in handlers share: configuration, the store, the keyring, tenant keys, the
//! outbound client, the JWKS cache, the flow-cookie keys, redeemed states, the rate limiter
//! and the session service. Built once at start-up; [`Sso::reload_keys_periodically`] keeps
//! the keys shared through the keyring in step with the other instances.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::flow::UsedStates;
use super::flow_keys::FlowKeys;
use super::pbx_session::PbxSessions;
use super::ratelimit::RateLimiter;
use super::session::{SessionError, Sessions};
use super::session_keys::SessionKeys;
use crate::config::{Config, ListenerConfig};
use crate::entra::oidc::JwksCache;
use crate::entra::{CloudEndpoints, NationalCloud};
use crate::keyring::Keyring;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tenant_keys::TenantKeys;

/// How often the session-signing and flow-cookie keys are re-read from the keyring, so a
/// rotation on one instance reaches every instance's JWKS and sealer within this time (and
/// how often the live-sessions gauge is refreshed).
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(60);

/// Everything the `/ms365` handlers need.
pub struct Sso {
    pub(super) config: Arc<Config>,
    pub(super) store: Store,
    pub(super) keyring: Keyring,
    pub(super) keys: TenantKeys,
    pub(super) http: reqwest::Client,
    pub(super) jwks: JwksCache,
    pub(super) flow_keys: FlowKeys,
    pub(super) used_states: UsedStates,
    pub(super) limiter: RateLimiter,
    pub(super) sessions: Arc<Sessions>,
    /// Users' own PBX sessions (off with `[pbx] kind = "embedded"`).
    pub(super) pbx: Arc<PbxSessions>,
    pub(super) metrics: Arc<Metrics>,
}

impl Sso {
    /// The signed-in users' sessions (the admin API authenticates tenant administrators
    /// with them and ends them when a binding goes).
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// Users' own PBX sessions, for the proxy's renewal on a 401.
    pub fn pbx_sessions(&self) -> &Arc<PbxSessions> {
        &self.pbx
    }

    /// The tenants' certificate key pairs.
    pub fn tenant_keys(&self) -> &TenantKeys {
        &self.keys
    }

    /// The secrets shared by the instances.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    pub async fn new(
        config: Arc<Config>,
        store: Store,
        keyring: Keyring,
        metrics: Arc<Metrics>,
    ) -> Result<Sso, SessionError> {
        let http = crate::entra::http::microsoft_client(Duration::from_secs(15));
        let session_keys = Arc::new(SessionKeys::load_or_create(&keyring).await?);
        let issuer = config
            .listeners
            .first()
            .map(|l| l.public_url.clone())
            .unwrap_or_default();
        let pbx = Arc::new(PbxSessions::new(
            config.clone(),
            store.clone(),
            keyring.clone(),
            metrics.clone(),
        )?);
        let sessions = Arc::new(
            Sessions::new(
                store.clone(),
                session_keys,
                config.sso.session_lifetime,
                issuer,
            )
            .with_pbx(pbx.clone())
            .with_store_reads(metrics.sign_in.session_store_reads()),
        );
        Ok(Sso {
            keys: TenantKeys::new(store.clone(), keyring.clone()),
            jwks: JwksCache::new(http.clone()),
            flow_keys: FlowKeys::load_or_create(&keyring).await?,
            used_states: UsedStates::new(store.clone()),
            limiter: RateLimiter::new(config.sso.login_rate_per_minute),
            sessions,
            pbx,
            metrics,
            http,
            keyring,
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

    /// Refreshes the live-sessions gauge from the store.
    async fn count_sessions(&self) {
        match self
            .store
            .count_live_sessions(crate::store::now_epoch())
            .await
        {
            Ok(n) => self.metrics.sign_in.set_active_sessions(n),
            Err(e) => tracing::debug!(error = %e, "cannot count the live sessions"),
        }
    }

    /// Re-reads the session-signing and flow-cookie keys every [`KEY_RELOAD_INTERVAL`]
    /// until `stop`; a failed reload keeps the keys loaded and is retried next time.
    pub async fn reload_keys_periodically(self: Arc<Self>, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(KEY_RELOAD_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate and the keys were just loaded.
        ticker.tick().await;
        self.count_sessions().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(e) = self.sessions.keys().reload().await {
                tracing::warn!(error = %e, "cannot reload the session signing keys");
            }
            if let Err(e) = self.flow_keys.reload().await {
                tracing::warn!(error = %e, "cannot reload the flow-cookie keys");
            }
            self.count_sessions().await;
        }
    }
}
