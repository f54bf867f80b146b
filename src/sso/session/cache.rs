//! The session service's memory of recent resolutions, one per edge worker, and the store
//! reads in flight for it. Entries are served for at most the TTL and are refused once a
//! logout evicted anything meanwhile (`generation`). A read in flight is shared: when a
//! session's entry ages out while a page (or an HTTP/2 client with hundreds of streams)
//! has many requests under way, the requests that miss together wait for one store read
//! instead of each holding a lookup of its own against the database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::{SessionError, SessionInfo};
use crate::ids::{ObjectId, TenantId};

/// The answer of one store read for a session: the live session, none, or the read's failure.
pub(super) type Flight = Arc<OnceCell<Result<Option<Arc<SessionInfo>>, Arc<SessionError>>>>;

/// Recent resolutions. `generation` moves on every eviction so a resolution that started
/// before a logout cannot put the ended session back.
pub(super) struct ResolveCache {
    entries: HashMap<String, Cached>,
    /// Store reads under way, by session id hash; dropped with every eviction, so a miss
    /// after a logout starts a read of its own rather than waiting for one begun before.
    flights: HashMap<String, Flight>,
    capacity: usize,
    pub(super) generation: u64,
}

struct Cached {
    at: Instant,
    info: Arc<SessionInfo>,
}

impl ResolveCache {
    pub(super) fn new(capacity: usize) -> Self {
        ResolveCache {
            entries: HashMap::new(),
            flights: HashMap::new(),
            capacity: capacity.max(1),
            generation: 0,
        }
    }

    pub(super) fn get(
        &self,
        id_hash: &str,
        now: Instant,
        ttl: Duration,
    ) -> Option<Arc<SessionInfo>> {
        self.entries
            .get(id_hash)
            .filter(|c| now.saturating_duration_since(c.at) < ttl)
            .map(|c| c.info.clone())
    }

    pub(super) fn insert(
        &mut self,
        info: Arc<SessionInfo>,
        now: Instant,
        ttl: Duration,
        generation: u64,
    ) {
        if generation != self.generation {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&info.id_hash) {
            self.make_room(now, ttl);
        }
        self.entries
            .insert(info.id_hash.clone(), Cached { at: now, info });
    }

    /// The store read under way for `id_hash`, begun now if there is none.
    pub(super) fn join_flight(&mut self, id_hash: &str) -> Flight {
        self.flights.entry(id_hash.to_string()).or_default().clone()
    }

    /// Forgets `flight` once it has landed (or every caller waiting on it gave up); a newer
    /// read of the same session, begun after an eviction, stays.
    pub(super) fn land(&mut self, id_hash: &str, flight: &Flight) {
        if self
            .flights
            .get(id_hash)
            .is_some_and(|f| Arc::ptr_eq(f, flight))
        {
            self.flights.remove(id_hash);
        }
    }

    /// Drops stale entries; if the cache is still full, the older half (amortised O(1)).
    fn make_room(&mut self, now: Instant, ttl: Duration) {
        self.entries
            .retain(|_, c| now.saturating_duration_since(c.at) < ttl);
        if self.entries.len() < self.capacity {
            return;
        }
        let mut ages: Vec<Instant> = self.entries.values().map(|c| c.at).collect();
        let mid = ages.len() / 2;
        let (_, median, _) = ages.select_nth_unstable(mid);
        let median = *median;
        self.entries.retain(|_, c| c.at > median);
    }

    pub(super) fn remove(&mut self, id_hash: &str) {
        self.evicted();
        self.entries.remove(id_hash);
    }

    pub(super) fn remove_user(&mut self, tenant_id: &TenantId, oid: &ObjectId) {
        self.evicted();
        self.entries
            .retain(|_, c| !(&c.info.tenant_id == tenant_id && &c.info.oid == oid));
    }

    fn evicted(&mut self) {
        self.generation += 1;
        self.flights.clear();
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(super) fn flights_in_the_air(&self) -> usize {
        self.flights.len()
    }
}
