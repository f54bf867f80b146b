//! The signed-in user's own PBX session (`[pbx] kind = "portsip"`). At a Microsoft sign-in
//! the gateway signs the user in to the PBX (`POST /login`) with the password the connector
//! set when it created the user (sealed under the master key); the PBX token is kept sealed
//! in the gateway session's row, so every instance can use it, renewed before it runs out
//! and when the PBX refuses it, and sent as the bearer of the session's proxied requests.
//!
//! Renewal is safe across instances: a renewal is written only over the token it renewed,
//! and an instance that loses that race (or whose refresh token another instance already
//! spent) takes the winner's token from the store instead of signing in again. At logout
//! the token's refresh token is spent and the answer dropped: PortSIP's refresh tokens work
//! once and end the access token they came with, and the v22 API has no logout call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reqwest::Url;

use super::pbx_state::{PbxRefusal, PbxState, open_token, seal_token};
use super::session::SessionInfo;
use crate::config::{Config, PbxKind};
use crate::keyring::Keyring;
use crate::metrics::Metrics;
use crate::pbx::{PbxError, PbxToken, login_as, refresh};
use crate::store::{SessionPbx, Store, now_epoch};

/// After a renewal failed because the PBX could not be reached, the next try waits this long
/// (requests meanwhile go out with the token held, or without one).
const UNREACHABLE_BACKOFF: i64 = 30;
/// Seconds between renewals caused by the PBX refusing a token (no renewal per request
/// when the PBX answers 401 to something else).
const REFUSAL_GRACE: i64 = 10;
/// Sessions whose PBX token is held in memory; beyond this, idle entries are dropped.
const CACHE_CAPACITY: usize = 10_000;

/// Where users' PBX sessions are opened: the PBX REST API and its HTTP client.
struct PbxApi {
    http: reqwest::Client,
    api_url: Url,
}

/// A session's PBX side as this instance holds it.
#[derive(Clone)]
struct Held {
    state: PbxState,
    token: Option<PbxToken>,
    /// The sealed value in the row, for the conditional write of a renewal.
    sealed: Option<String>,
    renew_at: i64,
    /// When a refusal last made this instance renew the token (epoch seconds): at most one
    /// such renewal per [`REFUSAL_GRACE`], whatever the PBX answers 401 to.
    renewed_on_refusal_at: i64,
}

impl Held {
    fn without(state: PbxState) -> Held {
        Held {
            state,
            token: None,
            sealed: None,
            renew_at: i64::MAX,
            renewed_on_refusal_at: 0,
        }
    }

    fn with(token: PbxToken, sealed: Option<String>, obtained: i64) -> Held {
        Held {
            state: PbxState::Active,
            renew_at: crate::pbx::renew_at(token.expires_at, obtained),
            token: Some(token),
            sealed,
            renewed_on_refusal_at: 0,
        }
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Held>>>;

/// The result of opening a user's PBX session at sign-in.
pub struct PbxGrant {
    pub state: PbxState,
    token: Option<PbxToken>,
}

impl PbxGrant {
    pub fn without(state: PbxState) -> PbxGrant {
        PbxGrant { state, token: None }
    }
}

/// Users' PBX sessions: opened at sign-in, attached to gateway sessions, renewed, ended.
pub struct PbxSessions {
    api: Option<PbxApi>,
    pub(super) config: Arc<Config>,
    pub(super) store: Store,
    pub(super) keyring: Keyring,
    pub(super) metrics: Arc<Metrics>,
    slots: Mutex<HashMap<String, Slot>>,
}

impl std::fmt::Debug for PbxSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PbxSessions")
            .field("api_url", &self.api.as_ref().map(|a| a.api_url.as_str()))
            .finish_non_exhaustive()
    }
}

impl PbxSessions {
    /// Off with `[pbx] kind = "embedded"`; with `portsip`, on the `[pbx]` HTTP client.
    pub fn new(
        config: Arc<Config>,
        store: Store,
        keyring: Keyring,
        metrics: Arc<Metrics>,
    ) -> Result<PbxSessions, PbxError> {
        let api = match config.pbx.kind {
            PbxKind::Embedded => None,
            PbxKind::PortSip => Some(PbxApi {
                http: crate::pbx::client::http_client(&config.pbx)?,
                api_url: config.pbx.api_url.clone(),
            }),
        };
        Ok(PbxSessions {
            api,
            config,
            store,
            keyring,
            metrics,
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// Whether sign-ins open PBX sessions at all.
    pub fn enabled(&self) -> bool {
        self.api.is_some()
    }

    /// Signs `username` in to the PBX on `domain`; the error says why not.
    pub(super) async fn login(
        &self,
        username: &str,
        password: &str,
        domain: &str,
    ) -> Result<PbxToken, PbxRefusal> {
        let Some(api) = &self.api else {
            return Err(PbxRefusal::Internal("no PBX is configured".into()));
        };
        match login_as(&api.http, &api.api_url, username, password, domain).await {
            Ok(token) => Ok(token),
            Err(PbxError::Rejected { status: 403, .. }) => Err(PbxRefusal::UserDisabled),
            Err(PbxError::Rejected { .. }) => Err(PbxRefusal::PasswordRejected),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open a user's PBX session");
                Err(PbxRefusal::Unreachable)
            }
        }
    }

    /// A grant of a token obtained now.
    pub(super) fn granted(&self, token: PbxToken) -> PbxGrant {
        PbxGrant {
            state: PbxState::Active,
            token: Some(token),
        }
    }

    /// Keeps `grant` with the gateway session `id_hash` (just created).
    pub async fn attach(&self, id_hash: &str, grant: PbxGrant) -> Result<(), PbxRefusal> {
        let sealed = grant
            .token
            .as_ref()
            .map(|t| seal_token(&self.keyring, id_hash, t));
        let row = SessionPbx {
            sealed_token: sealed.clone(),
            state: grant.state.as_str().to_string(),
        };
        let internal = |e: &dyn std::fmt::Display| PbxRefusal::Internal(e.to_string());
        self.store
            .swap_session_pbx(id_hash, None, &row)
            .await
            .map_err(|e| internal(&e))?;
        let held = match grant.token {
            Some(token) => Held::with(token, sealed, now_epoch()),
            None => Held::without(grant.state),
        };
        *self.slot(id_hash).lock().await = Some(held);
        Ok(())
    }

    /// The PBX bearer token for a request of this session, renewed first when due; `None`
    /// when the PBX does not know the user.
    pub async fn bearer(&self, info: &SessionInfo) -> Option<String> {
        let api = self.api.as_ref()?;
        let slot = self.slot(&info.id_hash);
        let mut held = slot.lock().await;
        let now = now_epoch();
        if held.is_none() {
            *held = self.load(&info.id_hash).await;
        }
        let current = held.as_ref()?;
        if current.token.is_some() && now >= current.renew_at {
            let next = self.renew(api, info, current.clone()).await;
            *held = Some(next);
        }
        held.as_ref()?
            .token
            .as_ref()
            .map(|t| t.access_token.clone())
    }

    /// The PBX refused `refused` (ended early: a PBX restart, another instance's renewal):
    /// renews now unless another request already did. The token to retry with, if any.
    pub async fn renew_refused(&self, info: &SessionInfo, refused: &str) -> Option<String> {
        let api = self.api.as_ref()?;
        let slot = self.slot(&info.id_hash);
        let mut held = slot.lock().await;
        let current = match held.as_ref() {
            Some(h) => h.clone(),
            None => self.load(&info.id_hash).await?,
        };
        let now = now_epoch();
        let still_refused = (current.token.as_ref()).is_some_and(|t| t.access_token == refused)
            && now - current.renewed_on_refusal_at >= REFUSAL_GRACE;
        let next = if still_refused {
            Held {
                renewed_on_refusal_at: now,
                ..self.renew(api, info, current).await
            }
        } else {
            current
        };
        let token = next.token.as_ref().map(|t| t.access_token.clone());
        *held = Some(next);
        token.filter(|t| t != refused)
    }

    /// The session's PBX state, as `/ms365/session` reports it.
    pub async fn state(&self, id_hash: &str) -> PbxState {
        if self.api.is_none() {
            return PbxState::NoPbx;
        }
        let slot = self.slot(id_hash);
        let mut held = slot.lock().await;
        if held.is_none() {
            *held = self.load(id_hash).await;
        }
        held.as_ref().map_or(PbxState::NoPbx, |h| h.state)
    }

    /// Ends the PBX session of a gateway session that ended (logout, revocation): the token
    /// leaves the row and its refresh token is spent, which ends it on the PBX.
    pub async fn end(&self, id_hash: &str) {
        let Some(api) = &self.api else {
            return;
        };
        self.forget(id_hash);
        let sealed = match self
            .store
            .take_session_pbx_token(id_hash, PbxState::Ended.as_str())
            .await
        {
            Ok(Some(sealed)) => sealed,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot remove a PBX token at logout");
                return;
            }
        };
        let refresh_token =
            open_token(&self.keyring, id_hash, &sealed).and_then(|t| t.refresh_token);
        if let Some(refresh_token) = refresh_token {
            // The new pair is dropped unseen: nobody can use it, and it expires on its own.
            match refresh(&api.http, &api.api_url, &refresh_token).await {
                Ok(_) => self.metrics.count_pbx_session("ended"),
                Err(e) => tracing::debug!(error = %e, "the PBX session was already over"),
            }
        }
    }

    /// Forgets what this instance holds of a session (its token stays in the store).
    pub fn forget(&self, id_hash: &str) {
        self.slots().remove(id_hash);
    }

    /// Reads the session's PBX side from the store; `None` when the store failed (nothing
    /// is cached then, so the next request reads again).
    async fn load(&self, id_hash: &str) -> Option<Held> {
        match self.store.session_pbx(id_hash).await {
            Ok(Some(row)) => Some(self.held_from_row(id_hash, row)),
            Ok(None) => Some(Held::without(PbxState::Ended)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a session's PBX token");
                None
            }
        }
    }

    fn held_from_row(&self, id_hash: &str, row: SessionPbx) -> Held {
        let state = PbxState::parse(&row.state);
        let token =
            (row.sealed_token.as_deref()).and_then(|s| open_token(&self.keyring, id_hash, s));
        match token {
            // Its start is unknown here: renewed on the usual schedule of its remaining life.
            Some(token) => Held {
                state,
                ..Held::with(token, row.sealed_token, now_epoch())
            },
            None if state == PbxState::Active => Held::without(PbxState::Ended),
            None => Held::without(state),
        }
    }

    /// Renews `current`: the store first (another instance may have renewed it), then the
    /// refresh token, then a new sign-in with the user's password. What to hold next.
    async fn renew(&self, api: &PbxApi, info: &SessionInfo, current: Held) -> Held {
        let id_hash = info.id_hash.as_str();
        let Some(stored) = self.load(id_hash).await else {
            return Held {
                renew_at: now_epoch() + UNREACHABLE_BACKOFF,
                ..current
            };
        };
        if stored.sealed != current.sealed {
            return stored;
        }
        let Some(token) = current.token.clone() else {
            return current;
        };
        let renewed = match &token.refresh_token {
            Some(r) => refresh(&api.http, &api.api_url, r).await,
            None => Err(PbxError::Protocol("no refresh token".into())),
        };
        let renewed = match renewed {
            Ok(t) => Ok(t),
            Err(e @ (PbxError::Timeout { .. } | PbxError::Unreachable { .. })) => Err(e),
            Err(_) => {
                // Spent by another instance a moment ago? Then its token is in the store.
                if let Some(stored) = self.load(id_hash).await
                    && stored.sealed != current.sealed
                {
                    return stored;
                }
                self.sign_in_again(info).await
            }
        };
        match renewed {
            Ok(token) => self.save_renewed(info, &current, token).await,
            Err(PbxError::Rejected { .. }) => self.ended(id_hash, &current).await,
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew a user's PBX session; retrying later");
                self.metrics.count_pbx_session("renew_unreachable");
                Held {
                    renew_at: now_epoch() + UNREACHABLE_BACKOFF,
                    ..current
                }
            }
        }
    }

    /// `POST /login` again with the user's sealed password.
    async fn sign_in_again(&self, info: &SessionInfo) -> Result<PbxToken, PbxError> {
        let user = self
            .store
            .pbx_user(&info.tenant_id, &info.pbx_user_id)
            .await?
            .ok_or_else(|| PbxError::Rejected {
                status: 404,
                code: "GONE".into(),
                message: "the user is no longer in the gateway's record".into(),
                field: None,
            })?;
        let name = crate::pbx::credentials::user_password_secret(&info.tenant_id, &user.id);
        let password = self
            .keyring
            .get(&name)
            .await
            .map_err(|e| PbxError::Local(e.to_string()))?;
        let Some(password) = password.and_then(|p| String::from_utf8(p).ok()) else {
            return Err(PbxError::Rejected {
                status: 401,
                code: "NO_PASSWORD".into(),
                message: "no password is kept for the user".into(),
                field: None,
            });
        };
        match self.login(&user.username, &password, &info.domain).await {
            Ok(token) => Ok(token),
            Err(PbxRefusal::Unreachable) => Err(PbxError::Unreachable {
                url: String::new(),
                reason: "sign-in failed".into(),
            }),
            Err(refusal) => {
                self.metrics.count_pbx_session(refusal.outcome());
                Err(PbxError::Rejected {
                    status: 401,
                    code: refusal.outcome().into(),
                    message: "the PBX refused the user's password".into(),
                    field: None,
                })
            }
        }
    }

    async fn save_renewed(&self, info: &SessionInfo, current: &Held, token: PbxToken) -> Held {
        let id_hash = info.id_hash.as_str();
        let sealed = seal_token(&self.keyring, id_hash, &token);
        let row = SessionPbx {
            sealed_token: Some(sealed.clone()),
            state: PbxState::Active.as_str().to_string(),
        };
        match self
            .store
            .swap_session_pbx(id_hash, current.sealed.as_deref(), &row)
            .await
        {
            Ok(true) => {
                self.metrics.count_pbx_session("renewed");
                Held::with(token, Some(sealed), now_epoch())
            }
            // Another instance renewed first, or the session was revoked meanwhile.
            Ok(false) => {
                (self.load(id_hash).await).unwrap_or_else(|| Held::without(PbxState::Ended))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot store a renewed PBX token");
                Held::with(token, current.sealed.clone(), now_epoch())
            }
        }
    }

    /// The PBX refused both the refresh and the password: the PBX session is over for this
    /// gateway session (never retried in a loop; a new sign-in tries again).
    async fn ended(&self, id_hash: &str, current: &Held) -> Held {
        let row = SessionPbx {
            sealed_token: None,
            state: PbxState::Ended.as_str().to_string(),
        };
        if let Err(e) = (self.store)
            .swap_session_pbx(id_hash, current.sealed.as_deref(), &row)
            .await
        {
            tracing::warn!(error = %e, "cannot record an ended PBX session");
        }
        tracing::info!("a user's PBX session ended: the PBX refused its renewal and password");
        Held::without(PbxState::Ended)
    }

    fn slot(&self, id_hash: &str) -> Slot {
        let mut slots = self.slots();
        if slots.len() >= CACHE_CAPACITY && !slots.contains_key(id_hash) {
            // Entries nobody is using right now: what they hold is in the store.
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        slots.entry(id_hash.to_string()).or_default().clone()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // Every critical section leaves the map consistent, so a poisoned lock is usable.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}
