//! PBX sessions: what a successful "Sign in with Microsoft" leaves behind. Owns the session
//! cookie (`__Host-pbx_session`: 32 random bytes, only its SHA-256 stored), creating and
//! resolving sessions against the store and the synced directory, ending them, and the
//! short-lived ES256 session token (JWT) handed to the portal and the WebRTC client.
//!
//! Resolution is on the path of every proxied request, so answers are cached in memory for at
//! most [`DEFAULT_CACHE_TTL`] (30 s): that bound is how quickly a user whom sync disables or
//! removes loses access, and it is enforced by the cache entry's age, never by a sweep.
//! Ending a session (logout) evicts it at once.

mod cache;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};

use self::cache::{Flight, ResolveCache};
use super::pbx_session::PbxSessions;
use super::session_keys::SessionKeys;
use crate::ids::{ObjectId, TenantId};
use crate::shard::{Padded, SHARDS};
use crate::store::{DirectoryUser, SessionRecord, Store, StoreError, Tenant};

/// Name of the session cookie. `__Host-` makes browsers insist on Secure, Path=/ and no
/// Domain, so a sibling subdomain cannot plant or overwrite it.
pub const SESSION_COOKIE: &str = "__Host-pbx_session";
/// Default session lifetime.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Longest a resolved session is served from memory without asking the store again.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30);
/// Most sessions cached at once in each cache shard; beyond this the oldest entries go first.
pub const CACHE_CAPACITY: usize = 10_000;
/// Longest lifetime of a session token (it is also capped by the session's own expiry).
const TOKEN_LIFETIME_SECS: i64 = 3600;
/// `last_seen_at` is written at most this often per session.
const TOUCH_EVERY_SECS: i64 = 60;
/// Bytes of randomness in a cookie value; base64url makes 43 characters of them.
const COOKIE_BYTES: usize = 32;
const COOKIE_CHARS: usize = 43;

/// Which client a session was issued to; also the session token's `aud`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// The PBX web portal.
    Portal,
    /// The WebRTC client (on the SBC domain).
    Webrtc,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Portal => "portal",
            ClientKind::Webrtc => "webrtc",
        }
    }

    pub fn parse(s: &str) -> Option<ClientKind> {
        match s {
            "portal" => Some(ClientKind::Portal),
            "webrtc" => Some(ClientKind::Webrtc),
            _ => None,
        }
    }
}

/// Session failures.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Keys(String),
    #[error(transparent)]
    Keyring(#[from] crate::keyring::KeyringError),
    #[error(transparent)]
    Pbx(#[from] crate::pbx::PbxError),
    /// The store read this resolution waited for, with others, failed.
    #[error("{0}")]
    SharedRead(Arc<SessionError>),
    /// A session was asked for a user who may not have one.
    #[error("no session can be issued: {0}")]
    Refused(&'static str),
}

/// How often ended sessions are purged.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(3600);
/// How long an ended (expired or revoked) session's record is kept, for audit.
pub const PURGE_KEEP: Duration = Duration::from_secs(7 * 86_400);

/// A live session and the PBX identity behind it, as of the last look at the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Lower-case hex SHA-256 of the cookie value; the token's `sid`.
    pub id_hash: String,
    pub tenant_id: TenantId,
    /// The tenant's SIP domain.
    pub domain: String,
    pub pbx_user_id: String,
    pub oid: ObjectId,
    pub extension: Option<String>,
    pub display_name: String,
    pub email: Option<String>,
    /// `user` or `admin`.
    pub role: crate::store::Role,
    pub client: ClientKind,
    /// Listener the session was issued on.
    pub listener: String,
    pub created_at: i64,
    pub expires_at: i64,
}

impl SessionInfo {
    fn new(tenant: &Tenant, user: &DirectoryUser, client: ClientKind, r: &SessionRecord) -> Self {
        SessionInfo {
            id_hash: r.id_hash.clone(),
            tenant_id: tenant.id.clone(),
            domain: tenant.domain.clone(),
            pbx_user_id: user.pbx_user_id.clone(),
            oid: user.oid.clone(),
            extension: user.extension.clone(),
            display_name: user.display_name.clone(),
            email: user.email.clone(),
            role: user.role,
            client,
            listener: r.listener.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
}

/// The claims of a PBX session token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The gateway's issuer URL.
    pub iss: String,
    /// `portal` or `webrtc`.
    pub aud: String,
    /// PBX user id.
    pub sub: String,
    pub tenant: String,
    pub domain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub role: crate::store::Role,
    /// Session id hash.
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
}

/// Time as the session service sees it; injectable so tests can move time without sleeping.
pub trait Clock: Send + Sync {
    /// Monotonic time, for cache ages.
    fn now(&self) -> Instant;
    /// Wall-clock Unix seconds, for expiry (the store's time format).
    fn epoch(&self) -> i64;
}

/// The real clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn epoch(&self) -> i64 {
        crate::store::now_epoch()
    }
}

/// The session service: create, resolve, end, and mint tokens.
pub struct Sessions {
    store: Store,
    keys: Arc<SessionKeys>,
    lifetime: Duration,
    issuer: String,
    cache_ttl: Duration,
    clock: Arc<dyn Clock>,
    /// Recent resolutions, a cache per [`crate::shard`]: an edge worker looks up and fills
    /// its own, so a request never takes a lock the other workers take (a session used on
    /// both workers is loaded once by each). Evictions go to every shard.
    cache: [Padded<Mutex<ResolveCache>>; SHARDS],
    rng: SystemRandom,
    /// Users' PBX sessions, ended with the gateway sessions they belong to.
    pbx: Option<Arc<PbxSessions>>,
    /// Resolutions that read the store (cache misses that were not joined to a read under
    /// way); the `session_store_reads` metric when the gateway shares it.
    store_reads: Counter,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("issuer", &self.issuer)
            .field("lifetime", &self.lifetime)
            .field("cache_ttl", &self.cache_ttl)
            .finish_non_exhaustive()
    }
}

/// A cookie the session cache could not answer: its hash, the cache it was looked up in,
/// and that cache's generation then (an insert after a logout's eviction is refused).
pub struct CacheMiss {
    hash: crate::encoding::Sha256Hex,
    shard: usize,
    generation: u64,
}

impl Sessions {
    /// Sessions lasting `lifetime` (see [`DEFAULT_LIFETIME`]); tokens name `issuer` as `iss`.
    pub fn new(store: Store, keys: Arc<SessionKeys>, lifetime: Duration, issuer: String) -> Self {
        Sessions {
            store,
            keys,
            lifetime,
            issuer,
            cache_ttl: DEFAULT_CACHE_TTL,
            clock: Arc::new(SystemClock),
            cache: std::array::from_fn(|_| Padded(Mutex::new(ResolveCache::new(CACHE_CAPACITY)))),
            rng: SystemRandom::new(),
            pbx: None,
            store_reads: Counter::default(),
        }
    }

    /// Ends users' PBX sessions together with their gateway sessions.
    pub fn with_pbx(mut self, pbx: Arc<PbxSessions>) -> Self {
        self.pbx = Some(pbx);
        self
    }

    /// Counts the resolutions that read the store on `counter` (the gateway's metric).
    pub fn with_store_reads(mut self, counter: Counter) -> Self {
        self.store_reads = counter;
        self
    }

    /// Overrides how long a resolution is served from memory (at most this stale).
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Users' PBX sessions, when sessions carry them.
    pub fn pbx(&self) -> Option<&Arc<PbxSessions>> {
        self.pbx.as_ref()
    }

    pub fn keys(&self) -> &Arc<SessionKeys> {
        &self.keys
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Starts a session for `user` of `tenant` on `listener`. Returns the cookie value (give it
    /// to the browser; it is not kept anywhere) and the session.
    pub async fn create(
        &self,
        tenant: &Tenant,
        user: &DirectoryUser,
        client: ClientKind,
        listener: &str,
    ) -> Result<(String, SessionInfo), SessionError> {
        if user.tenant_id != tenant.id {
            return Err(SessionError::Refused("the user belongs to another tenant"));
        }
        if !user.enabled {
            return Err(SessionError::Refused("the user is disabled"));
        }
        let value = self.random_cookie_value();
        let now = self.clock.epoch();
        let lifetime = i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX);
        let record = SessionRecord {
            id_hash: hash_cookie(&value),
            tenant_id: tenant.id.clone(),
            oid: user.oid.clone(),
            pbx_user_id: user.pbx_user_id.clone(),
            client_kind: client.as_str().to_string(),
            listener: listener.to_string(),
            created_at: now,
            expires_at: now.saturating_add(lifetime),
            last_seen_at: now,
            revoked_at: None,
        };
        self.store.create_session(&record).await?;
        let info = SessionInfo::new(tenant, user, client, &record);
        let mut cache = self.cache(crate::shard::current());
        let generation = cache.generation;
        cache.insert(
            Arc::new(info.clone()),
            self.clock.now(),
            self.cache_ttl,
            generation,
        );
        Ok((value, info))
    }

    /// The live session behind a cookie value: not expired, not revoked, and its user still
    /// present and enabled in the directory under the same PBX user id. At most
    /// `cache_ttl` stale.
    pub async fn resolve(&self, cookie_value: &str) -> Result<Option<SessionInfo>, SessionError> {
        Ok(self
            .resolve_shared(cookie_value)
            .await?
            .map(|info| (*info).clone()))
    }

    /// What the session cache alone says about a cookie: the final answer (a live cached
    /// session, one that has expired, or a value that cannot be a session cookie), or the
    /// miss that [`Sessions::resolve_missed`] takes to the store. The proxy's hot path: no
    /// future to allocate when the cache knows.
    pub fn resolve_cached(
        &self,
        cookie_value: &str,
    ) -> Result<Option<Arc<SessionInfo>>, CacheMiss> {
        if !plausible_cookie(cookie_value) {
            return Ok(None);
        }
        let hash = crate::encoding::Sha256Hex::of(cookie_value.as_bytes());
        // Taken once: a task off the edge may resume on another thread after the load.
        let shard = crate::shard::current();
        let (now, epoch) = (self.clock.now(), self.clock.epoch());
        let mut cache = self.cache(shard);
        match cache.get(hash.as_str(), now, self.cache_ttl) {
            Some(info) if info.expires_at > epoch => Ok(Some(info)),
            Some(_) => {
                cache.remove(hash.as_str());
                Ok(None)
            }
            None => Err(CacheMiss {
                generation: cache.generation,
                hash,
                shard,
            }),
        }
    }

    /// Reads from the store the session a cache miss was for, and caches it. Misses of the
    /// same session on the same worker wait for one read: the first to arrive reads and the
    /// others take its answer, a failure included; if the reader's request is dropped
    /// midway, one of those waiting reads in its place.
    pub async fn resolve_missed(
        &self,
        miss: CacheMiss,
    ) -> Result<Option<Arc<SessionInfo>>, SessionError> {
        let flight = self.cache(miss.shard).join_flight(miss.hash.as_str());
        let _landing = Landing {
            sessions: self,
            miss: &miss,
            flight: &flight,
        };
        // The reader's failure is every joined caller's too: retrying one after another
        // against a store that just failed would only make the last of them wait longest.
        // Boxed: only the reader pays for the read's future; those waiting stay small.
        let read = || Box::pin(async { self.read_and_cache(&miss).await.map_err(Arc::new) });
        match flight.get_or_init(read).await {
            Ok(info) => Ok(info.clone()),
            Err(e) => Err(SessionError::SharedRead(e.clone())),
        }
    }

    async fn read_and_cache(
        &self,
        miss: &CacheMiss,
    ) -> Result<Option<Arc<SessionInfo>>, SessionError> {
        self.store_reads.inc();
        let (now, epoch) = (self.clock.now(), self.clock.epoch());
        let info = self.load(miss.hash.as_str(), epoch).await?.map(Arc::new);
        if let Some(info) = &info {
            // Skipped when a logout evicted anything meanwhile: what was read may be stale.
            self.cache(miss.shard)
                .insert(info.clone(), now, self.cache_ttl, miss.generation);
        }
        Ok(info)
    }

    /// How many resolutions have read the store so far; the rest were answered from memory.
    /// The gateway reads the count from its metric; the tests ask here.
    #[cfg(test)]
    fn store_reads(&self) -> u64 {
        self.store_reads.get()
    }

    /// Like [`Sessions::resolve`] without copying the cached session.
    pub async fn resolve_shared(
        &self,
        cookie_value: &str,
    ) -> Result<Option<Arc<SessionInfo>>, SessionError> {
        match self.resolve_cached(cookie_value) {
            Ok(answer) => Ok(answer),
            Err(miss) => self.resolve_missed(miss).await,
        }
    }

    /// Ends the session behind a cookie value (logout). `false` when there was none live.
    pub async fn end(&self, cookie_value: &str) -> Result<bool, SessionError> {
        if !plausible_cookie(cookie_value) {
            return Ok(false);
        }
        let id_hash = hash_cookie(cookie_value);
        // Revoke first, then evict: a resolution racing with this either reads the
        // revocation or is refused a cache slot by the generation bump.
        let revoked = self.store.revoke_session(&id_hash).await?;
        self.each_cache(|cache| cache.remove(&id_hash));
        if let Some(pbx) = &self.pbx {
            pbx.end(&id_hash).await;
        }
        Ok(revoked)
    }

    /// Ends every session of Microsoft user `oid` in `tenant_id`; returns how many.
    pub async fn end_user_sessions(
        &self,
        tenant_id: &TenantId,
        oid: &ObjectId,
    ) -> Result<u64, SessionError> {
        let ended = self.store.revoke_user_sessions(tenant_id, oid).await?;
        self.each_cache(|cache| cache.remove_user(tenant_id, oid));
        if let Some(pbx) = &self.pbx {
            for id_hash in &ended {
                pbx.end(id_hash).await;
            }
        }
        Ok(ended.len() as u64)
    }

    /// Deletes records that expired or were revoked more than `keep` ago; returns how many.
    pub async fn purge_expired(&self, keep: Duration) -> Result<u64, SessionError> {
        let keep = i64::try_from(keep.as_secs()).unwrap_or(i64::MAX);
        let before = self.clock.epoch().saturating_sub(keep);
        Ok(self.store.delete_expired_sessions(before).await?)
    }

    /// Purges ended sessions every [`PURGE_INTERVAL`], keeping [`PURGE_KEEP`] of history,
    /// and the redeemed sign-in states whose flows have expired, until `stop` fires.
    pub async fn purge_periodically(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut ticker = tokio::time::interval(PURGE_INTERVAL);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => match self.purge_expired(PURGE_KEEP).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "ended sessions purged"),
                    Err(e) => tracing::warn!(error = %e, "session purge failed"),
                },
            }
            if let Err(e) = self.store.purge_used_states().await {
                tracing::warn!(error = %e, "purge of redeemed sign-in states failed");
            }
        }
    }

    /// A session token for `info` and its lifetime in seconds: at most an hour, never past
    /// the session's own expiry.
    pub fn token(&self, info: &SessionInfo) -> Result<(String, u64), SessionError> {
        let now = self.clock.epoch();
        let exp = info.expires_at.min(now.saturating_add(TOKEN_LIFETIME_SECS));
        let claims = SessionClaims {
            iss: self.issuer.clone(),
            aud: info.client.as_str().to_string(),
            sub: info.pbx_user_id.clone(),
            tenant: info.tenant_id.to_string(),
            domain: info.domain.clone(),
            extension: info.extension.clone(),
            name: info.display_name.clone(),
            email: info.email.clone(),
            role: info.role,
            sid: info.id_hash.clone(),
            iat: now,
            exp,
        };
        let jwt = self.keys.sign(&claims)?;
        Ok((jwt, u64::try_from(exp - now).unwrap_or(0)))
    }

    /// Reads the session and its user from the store and judges them at `epoch`.
    async fn load(&self, id_hash: &str, epoch: i64) -> Result<Option<SessionInfo>, SessionError> {
        let Some(record) = self.store.session(id_hash).await? else {
            return Ok(None);
        };
        if !record.is_live(epoch) {
            return Ok(None);
        }
        let Some(client) = ClientKind::parse(&record.client_kind) else {
            tracing::warn!(kind = %record.client_kind, "session with an unknown client kind");
            return Ok(None);
        };
        let user = self
            .store
            .directory_user(&record.tenant_id, &record.oid)
            .await?;
        // A user re-bound to another PBX account must sign in again, not inherit it.
        let Some(user) = user.filter(|u| u.enabled && u.pbx_user_id == record.pbx_user_id) else {
            return Ok(None);
        };
        let Some(tenant) = self.store.tenant(&record.tenant_id).await? else {
            return Ok(None);
        };
        // The role granted at sign-in, decided again from the settings: the same answer on
        // every instance and after every reload, and gone once the user leaves the list.
        let settings = self.store.ms365_settings(&record.tenant_id).await?;
        let mut user = user;
        if settings
            .sign_in_as_administrator
            .covers(user.oid.as_str(), &user.upn)
        {
            user.role = crate::store::Role::Admin;
        }
        if epoch - record.last_seen_at >= TOUCH_EVERY_SECS
            && let Err(e) = self.store.touch_session(id_hash, epoch).await
        {
            // Bookkeeping only: a failed write must not sign the user out.
            tracing::warn!(error = %e, "cannot record session activity");
        }
        Ok(Some(SessionInfo::new(&tenant, &user, client, &record)))
    }

    fn random_cookie_value(&self) -> String {
        let mut bytes = [0u8; COOKIE_BYTES];
        self.rng.fill(&mut bytes).expect("system randomness");
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn cache(&self, shard: usize) -> MutexGuard<'_, ResolveCache> {
        // Every critical section leaves the map consistent, so a poisoned lock is usable.
        self.cache[shard]
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn each_cache(&self, mut evict: impl FnMut(&mut ResolveCache)) {
        (0..SHARDS).for_each(|shard| evict(&mut self.cache(shard)));
    }
}

/// Forgets a store read in flight once a caller that joined it is done with it, even when
/// that caller's request was dropped midway.
struct Landing<'a> {
    sessions: &'a Sessions,
    miss: &'a CacheMiss,
    flight: &'a Flight,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        let mut cache = self.sessions.cache(self.miss.shard);
        // Those still waiting hold the flight; only the last one out forgets it.
        if Arc::strong_count(self.flight) <= 2 || self.flight.initialized() {
            cache.land(self.miss.hash.as_str(), self.flight);
        }
    }
}

/// Lower-case hex SHA-256 of a cookie value: the session's id in the store.
pub fn hash_cookie(value: &str) -> String {
    crate::encoding::sha256_hex(value.as_bytes())
}

/// Shape check before any lookup, so garbage never costs a database round trip.
fn plausible_cookie(value: &str) -> bool {
    value.len() == COOKIE_CHARS
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `Set-Cookie` for a session: host-only, HTTPS-only, invisible to scripts, not sent on
/// cross-site subresource requests. `value` must be what [`Sessions::create`] returned.
pub fn cookie_header(value: &str, max_age: Duration) -> HeaderValue {
    if !plausible_cookie(value) {
        debug_assert!(false, "not a session cookie value");
        return clear_cookie_header();
    }
    let header = format!(
        "{SESSION_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
        max_age.as_secs()
    );
    HeaderValue::from_str(&header).expect("base64url and ASCII attributes")
}

/// `Set-Cookie` that deletes the session cookie.
pub fn clear_cookie_header() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-pbx_session=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
    )
}

/// The session cookie's value from the request's `Cookie` headers (HTTP/2 may split them):
/// the first non-empty one. Read as bytes, on every proxied request that has cookies: a
/// byte outside ASCII in another cookie does not hide ours.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    let value = (headers.get_all(COOKIE).iter())
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(session_cookie_in)?;
    std::str::from_utf8(value).ok()
}

/// The value of a `name=value` pair if it is a non-empty session cookie.
fn session_cookie_in(pair: &[u8]) -> Option<&[u8]> {
    let value = (pair.trim_ascii())
        .strip_prefix(SESSION_COOKIE.as_bytes())?
        .strip_prefix(b"=")?;
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> SessionInfo {
        SessionInfo {
            id_hash: id.to_string(),
            tenant_id: TenantId::from_static("t"),
            domain: "t.example".into(),
            pbx_user_id: "u".into(),
            oid: ObjectId::new(format!("oid-{id}")),
            extension: None,
            display_name: "U".into(),
            email: None,
            role: crate::store::Role::User,
            client: ClientKind::Portal,
            listener: "pbx#0".into(),
            created_at: 0,
            expires_at: i64::MAX,
        }
    }

    #[test]
    fn cookie_is_found_among_several_headers_and_pairs() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; b=2"));
        h.append(
            COOKIE,
            HeaderValue::from_static("x=y;__Host-pbx_session=abc ; z=1"),
        );
        assert_eq!(session_cookie(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("__host-pbx_session=no; pbx_session=no"),
        );
        assert_eq!(session_cookie(&h), None, "name is case-sensitive and exact");
        let mut h = HeaderMap::new();
        let v =
            b"pref=caf\xe9; __Host-pbx_session=; __Host-pbx_session_x=no; __Host-pbx_session=v2";
        h.append(COOKIE, HeaderValue::from_bytes(v).unwrap());
        assert_eq!(
            session_cookie(&h),
            Some("v2"),
            "first non-empty, next to non-ASCII"
        );
    }

    #[test]
    fn cookie_headers_have_the_host_prefix_attributes() {
        let v = "A".repeat(COOKIE_CHARS);
        let set = cookie_header(&v, Duration::from_secs(60));
        assert_eq!(
            set.to_str().unwrap(),
            format!("__Host-pbx_session={v}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=60")
        );
        assert!(
            clear_cookie_header()
                .to_str()
                .unwrap()
                .ends_with("Max-Age=0")
        );
    }

    /// Sessions over a fresh store with one synced user, and a live portal session's cookie.
    /// The test database lives as long as the returned guard (PostgreSQL drops its schema).
    async fn one_session() -> (crate::store::test_db::TestDb, Sessions, String) {
        let (db, keyring) = crate::keyring::test_keyring().await;
        let store = db.open(2).await.unwrap();
        let tenant_id = crate::store::test_db::add_tenant(&store, "t").await;
        let tenant = store.tenant(&tenant_id).await.unwrap().unwrap();
        let user = crate::store::DirectoryUser {
            tenant_id,
            oid: ObjectId::new("oid-1".to_string()),
            upn: "u@t.test".into(),
            pbx_user_id: "pbx-1".into(),
            extension: Some("101".into()),
            display_name: "U".into(),
            email: None,
            role: crate::store::Role::User,
            enabled: true,
            source: "sync".into(),
        };
        store.upsert_directory_user(&user).await.unwrap();
        let keys = Arc::new(SessionKeys::load_or_create(&keyring).await.unwrap());
        let sessions = Sessions::new(store, keys, DEFAULT_LIFETIME, "iss".into());
        let (cookie, _) = (sessions.create(&tenant, &user, ClientKind::Portal, "pbx#0"))
            .await
            .unwrap();
        (db, sessions, cookie)
    }

    /// A session an edge worker cached is gone from that worker's cache once it is ended
    /// from another one: logout evicts every shard, not only the caller's.
    #[tokio::test]
    async fn ending_a_session_evicts_it_from_every_workers_cache() {
        let (_db, sessions, cookie) = one_session().await;
        // This test's thread plays edge worker 2, then worker 4 for the logout.
        crate::shard::enter(2);
        assert!(sessions.resolve_shared(&cookie).await.unwrap().is_some());
        crate::shard::enter(4);
        assert!(sessions.end(&cookie).await.unwrap());
        crate::shard::enter(2);
        assert!(sessions.resolve_shared(&cookie).await.unwrap().is_none());
    }

    /// The cache-only lookup answers for what this worker's cache holds and defers to the
    /// store for everything else: a session not cached yet, or evicted by a logout, is a
    /// miss (`None`), never an anonymous answer.
    #[tokio::test]
    async fn the_cache_only_lookup_answers_only_what_the_cache_knows() {
        let (_db, sessions, cookie) = one_session().await;
        crate::shard::enter(1);
        assert!(sessions.resolve_cached(&cookie).is_err(), "not cached yet");
        let stored = sessions.resolve_shared(&cookie).await.unwrap().unwrap();
        let cached = sessions.resolve_cached(&cookie).ok().flatten().unwrap();
        assert_eq!(cached.id_hash, stored.id_hash);
        crate::shard::enter(3);
        assert!(
            sessions.resolve_cached(&cookie).is_err(),
            "another worker's cache"
        );
        assert!(matches!(sessions.resolve_cached("short"), Ok(None)));
        assert!(sessions.end(&cookie).await.unwrap());
        crate::shard::enter(1);
        assert!(
            sessions.resolve_cached(&cookie).is_err(),
            "evicted: ask the store"
        );
        assert!(sessions.resolve_shared(&cookie).await.unwrap().is_none());
    }

    /// Requests of one session that miss the cache together (its entry aged out under a
    /// page load, or an HTTP/2 client's streams) wait for one store read and all get its
    /// answer; nothing is left in flight afterwards.
    #[tokio::test]
    async fn misses_of_one_session_share_one_store_read() {
        let (_db, sessions, cookie) = one_session().await;
        crate::shard::enter(3); // a worker whose cache does not hold the new session
        let before = sessions.store_reads();
        let answers =
            futures_util::future::join_all((0..50).map(|_| sessions.resolve_shared(&cookie))).await;
        assert!(answers.iter().all(|a| matches!(a, Ok(Some(_)))));
        assert_eq!(sessions.store_reads() - before, 1);
        assert_eq!(sessions.cache(3).flights_in_the_air(), 0);
        assert!(
            sessions.resolve_cached(&cookie).is_ok(),
            "cached for the rest"
        );
    }

    /// A request that started the read and was dropped (its client went away) leaves the
    /// read to those that joined it, and nothing behind once they are done.
    #[tokio::test]
    async fn a_dropped_reader_leaves_the_read_to_those_waiting() {
        let (_db, sessions, cookie) = one_session().await;
        crate::shard::enter(5);
        let mut first = Box::pin(sessions.resolve_shared(&cookie));
        let _ = first
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        let second = sessions.resolve_shared(&cookie);
        drop(first);
        assert!(second.await.unwrap().is_some());
        assert_eq!(sessions.cache(5).flights_in_the_air(), 0);
        // Alone and dropped mid-read: the flight is forgotten with it.
        crate::shard::enter(6);
        let mut alone = Box::pin(sessions.resolve_shared(&cookie));
        let _ = alone
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        drop(alone);
        assert_eq!(sessions.cache(6).flights_in_the_air(), 0);
    }

    /// A logout drops the reads in flight with the entries: a miss after it reads anew
    /// instead of taking an answer read before it.
    #[test]
    fn an_eviction_drops_the_reads_in_flight() {
        let mut cache = ResolveCache::new(4);
        let flight = cache.join_flight("a");
        assert!(Arc::ptr_eq(&flight, &cache.join_flight("a")));
        cache.remove("b");
        assert_eq!(cache.flights_in_the_air(), 0);
        let fresh = cache.join_flight("a");
        assert!(!Arc::ptr_eq(&flight, &fresh));
        cache.land("a", &flight);
        assert_eq!(cache.flights_in_the_air(), 1, "the newer read stays");
        cache.land("a", &fresh);
        assert_eq!(cache.flights_in_the_air(), 0);
        cache.join_flight("a");
        cache.remove_user(&TenantId::from_static("t"), &ObjectId::new("oid-x"));
        assert_eq!(cache.flights_in_the_air(), 0);
    }

    #[test]
    fn cache_expires_by_age_and_stays_bounded() {
        let ttl = Duration::from_secs(30);
        let t0 = Instant::now();
        let mut cache = ResolveCache::new(4);
        cache.insert(Arc::new(info("a")), t0, ttl, 0);
        assert!(cache.get("a", t0 + Duration::from_secs(29), ttl).is_some());
        assert!(cache.get("a", t0 + ttl, ttl).is_none());
        for (i, id) in ["b", "c", "d", "e", "f", "g"].iter().enumerate() {
            cache.insert(
                Arc::new(info(id)),
                t0 + Duration::from_secs(i as u64),
                ttl,
                0,
            );
        }
        assert!(cache.len() <= 4);
        assert!(cache.get("g", t0 + Duration::from_secs(6), ttl).is_some());
        cache.remove("g");
        cache.insert(Arc::new(info("h")), t0, ttl, 0);
        assert!(
            cache.get("h", t0, ttl).is_none(),
            "stale generation refused"
        );
        cache.remove_user(&TenantId::from_static("t"), &ObjectId::new("oid-f"));
        assert!(cache.get("f", t0 + Duration::from_secs(6), ttl).is_none());
    }

    #[test]
    fn implausible_cookies_are_refused_early() {
        assert!(plausible_cookie(&"a".repeat(43)));
        assert!(!plausible_cookie(&"a".repeat(44)));
        assert!(!plausible_cookie(&format!("{}=", "a".repeat(42))));
        assert_eq!(hash_cookie("x").len(), 64);
    }
}
