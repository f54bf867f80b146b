//! The stand-in's world: tenants by SIP domain (their data is [`super::tenant`]'s), access
//! and refresh tokens judged by a clock tests can move, PortSIP-looking ids, the fault dice
//! and the request statistics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::PbxStats;
use super::faults::FaultState;
use super::tenant::{StoredUser, TenantState};

/// How long a refresh token works, on the stand-in's clock.
const REFRESH_LIFETIME_MS: u64 = 7 * 24 * 3600 * 1000;
/// PortSIP's default access token lifetime.
pub(crate) const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(1800);

/// A poisoned lock only means a test panicked elsewhere; the data is still usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Who a token belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub domain: String,
    pub user_id: String,
    /// Epoch milliseconds on the stand-in's clock.
    pub expires_at: u64,
}

/// Tokens handed out by a sign-in or a refresh.
pub(crate) struct Issued {
    pub access: String,
    pub refresh: String,
    pub lifetime_secs: u64,
    pub expires_at: u64,
}

/// A refresh token's due: a new session for its user. It keeps the user itself, since an
/// expired access token (what refreshing is for) may already be swept away.
struct RefreshGrant {
    access: String,
    session: Session,
}

#[derive(Default)]
pub(crate) struct Tokens {
    access: HashMap<String, Session>,
    refresh: HashMap<String, RefreshGrant>,
}

/// Ids that look like PortSIP's: base64 of a large decimal number, rising in steps the
/// seed decides, so a run repeats.
struct Ids {
    next: u64,
    rng: fastrand::Rng,
}

pub(crate) struct Inner {
    pub tenants: Mutex<HashMap<String, TenantState>>,
    pub tokens: Mutex<Tokens>,
    pub faults: Mutex<FaultState>,
    pub stats: Mutex<PbxStats>,
    token_lifetime_ms: AtomicU64,
    clock_offset_ms: AtomicU64,
    ids: Mutex<Ids>,
    seq: AtomicU64,
}

impl Inner {
    pub fn new(seed: u64) -> Inner {
        Inner {
            tenants: Mutex::new(HashMap::new()),
            tokens: Mutex::new(Tokens::default()),
            faults: Mutex::new(FaultState::new(seed)),
            stats: Mutex::new(PbxStats::default()),
            token_lifetime_ms: AtomicU64::new(DEFAULT_TOKEN_LIFETIME.as_millis() as u64),
            clock_offset_ms: AtomicU64::new(0),
            ids: Mutex::new(Ids {
                next: 700_551_909_773_148_160 + (seed % 1_000) * 1_000_000,
                rng: fastrand::Rng::with_seed(seed ^ 0x05EE_D1D5),
            }),
            seq: AtomicU64::new(0),
        }
    }

    /// A fresh PortSIP-looking id, unique across tenants.
    pub fn new_id(&self) -> String {
        use base64::Engine as _;
        let mut ids = lock(&self.ids);
        let step = ids.rng.u64(1..=4_096);
        ids.next += step;
        base64::engine::general_purpose::STANDARD.encode(ids.next.to_string())
    }

    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs `f` on a tenant; `None` when there is no such tenant.
    pub fn with_tenant<T>(&self, domain: &str, f: impl FnOnce(&mut TenantState) -> T) -> Option<T> {
        let mut tenants = lock(&self.tenants);
        tenants.get_mut(&domain.to_ascii_lowercase()).map(f)
    }

    /// Adds a user; its id.
    pub fn insert_user(
        &self,
        tenant: &mut TenantState,
        fields: Map<String, Value>,
        created_by: Option<String>,
        tenant_admin: bool,
    ) -> String {
        let id = self.new_id();
        let user = StoredUser {
            id: id.clone(),
            seq: self.next_seq(),
            fields,
            ms365_binding: None,
            created_by,
            created_at: self.now_ms(),
            tenant_admin,
        };
        tenant.add_user(user);
        id
    }

    /// Epoch milliseconds: the real clock plus what tests advanced it by.
    pub fn now_ms(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        real + self.clock_offset_ms.load(Ordering::Relaxed)
    }

    pub fn advance_clock(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX / 2);
        self.clock_offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    pub fn set_token_lifetime(&self, lifetime: Duration) {
        let ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX / 2);
        self.token_lifetime_ms.store(ms, Ordering::Relaxed);
    }

    /// A new session for a user. Expired tokens are dropped here, so a long benchmark's
    /// sign-ins do not pile up.
    pub fn open_session(&self, domain: &str, user_id: &str) -> Issued {
        let now = self.now_ms();
        let lifetime = self.token_lifetime_ms.load(Ordering::Relaxed);
        let issued = Issued {
            access: random_token(),
            refresh: random_token(),
            lifetime_secs: lifetime / 1000,
            expires_at: now.saturating_add(lifetime),
        };
        let session = Session {
            domain: domain.to_ascii_lowercase(),
            user_id: user_id.to_string(),
            expires_at: issued.expires_at,
        };
        let grant = RefreshGrant {
            access: issued.access.clone(),
            session: Session {
                expires_at: now.saturating_add(REFRESH_LIFETIME_MS),
                ..session.clone()
            },
        };
        let mut tokens = lock(&self.tokens);
        tokens.access.retain(|_, s| s.expires_at > now);
        tokens.refresh.retain(|_, g| g.session.expires_at > now);
        tokens.access.insert(issued.access.clone(), session);
        tokens.refresh.insert(issued.refresh.clone(), grant);
        issued
    }

    /// The live session of an access token.
    pub fn session(&self, access: &str) -> Option<Session> {
        let session = lock(&self.tokens).access.get(access).cloned()?;
        (session.expires_at > self.now_ms()).then_some(session)
    }

    /// Spends a refresh token: it and its access token stop working. Whose they were
    /// (`expires_at` is the refresh token's own expiry).
    pub fn redeem(&self, refresh: &str) -> Option<Session> {
        let mut tokens = lock(&self.tokens);
        let grant = tokens.refresh.remove(refresh)?;
        tokens.access.remove(&grant.access);
        (grant.session.expires_at > self.now_ms()).then_some(grant.session)
    }

    /// Counts a request under its operation (`POST /users/{id}`).
    pub fn count(&self, operation: &str) {
        let mut stats = lock(&self.stats);
        stats.total_requests += 1;
        *stats.requests.entry(operation.to_string()).or_default() += 1;
    }

    /// Counts a request refused by the schema or PortSIP's prose rules.
    pub fn reject(&self, operation: &str) {
        let mut stats = lock(&self.stats);
        *stats
            .schema_rejections
            .entry(operation.to_string())
            .or_default() += 1;
    }

    /// Counts a request refused because a username or number is taken.
    pub fn conflict(&self, operation: &str) {
        let mut stats = lock(&self.stats);
        *stats.conflicts.entry(operation.to_string()).or_default() += 1;
    }
}

pub(crate) fn as_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// 128 random bits, hex: opaque, as PortSIP's tokens are to a client.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 3339 (UTC, seconds) of epoch milliseconds.
pub(crate) fn rfc3339(epoch_ms: u64) -> String {
    let secs = i64::try_from(epoch_ms / 1000).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}
