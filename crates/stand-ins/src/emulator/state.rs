//! The emulator's mutable world: tenants with their users, groups, app registrations and
//! uploaded certificates; per-tenant change logs (one monotonic sequence number per
//! mutation) that delta queries read instead of copying the tenant; contact overlays that sit
//! on top of the generated contacts; issued authorization codes and seen assertion `jti`s.
//! Locks are plain `std` locks: nothing awaits while holding one.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::TenantSpec;
use super::faults::FaultState;
use super::keys::KeyRing;
use super::model::{AppRegistration, CertificateInfo, Contact, EmulatorError, User};
use super::seed;

/// Where a user is in its life: deleted users stay in the vector so indices never move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Life {
    Active,
    /// In the recycle bin: delta reports `@removed` reason `changed`; restorable.
    SoftDeleted,
    /// Gone for good: delta reports `@removed` reason `deleted`.
    HardDeleted,
}

#[derive(Debug, Clone)]
pub(crate) enum Photo {
    None,
    /// A generated JPEG; the version changes the bytes (and so the ETag).
    Generated(u32),
    Custom(Arc<Vec<u8>>),
}

#[derive(Debug, Clone)]
pub(crate) struct UserRecord {
    pub user: User,
    pub life: Life,
    pub photo: Photo,
    pub mailbox: bool,
    /// How many generated contacts the mailbox starts with.
    pub base_contacts: u32,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Member {
    User(u32),
    Group(u32),
}

#[derive(Debug, Clone)]
pub(crate) struct GroupRecord {
    pub id: String,
    pub display_name: String,
    pub mail_nickname: String,
    pub members: Vec<Member>,
}

/// Mutations of one mailbox's contacts; everything not named here is generated.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    /// Contacts added after seeding (indices `base..base + added`).
    pub added: u32,
    /// Replaced contacts (`Some`) and deleted ones (`None`).
    pub edits: HashMap<u32, Option<Contact>>,
    /// `(sequence, contact index)` per mutation, in sequence order.
    pub log: Vec<(u64, u32)>,
}

#[derive(Debug)]
pub(crate) struct TenantData {
    pub users: Vec<UserRecord>,
    by_id: HashMap<String, u32>,
    by_upn: HashMap<String, u32>,
    /// The last sequence number handed out; delta tokens carry one.
    pub seq: u64,
    /// `(sequence, user index)` per user mutation, in sequence order.
    pub user_log: Vec<(u64, u32)>,
    /// Bumped by "expire delta tokens": older tokens answer 410.
    pub generation: u32,
    pub mailboxes: HashMap<u32, Mailbox>,
    pub groups: Vec<GroupRecord>,
}

pub(crate) struct CertRecord {
    pub sha1: Vec<u8>,
    pub sha256: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
    /// PKCS#1 `RSAPublicKey` DER, what the signature check needs.
    pub public_key: Vec<u8>,
    pub info: CertificateInfo,
}

pub(crate) struct AppRecord {
    pub client_id: String,
    pub reg: AppRegistration,
    pub certs: Vec<CertRecord>,
}

pub(crate) struct Tenant {
    pub idx: u32,
    pub id: String,
    pub domain: String,
    data: RwLock<TenantData>,
    apps: RwLock<HashMap<String, AppRecord>>,
}

/// An issued authorization code; kept after redemption so a replay gets AADSTS54005.
#[derive(Debug, Clone)]
pub(crate) struct AuthCode {
    pub tenant: u32,
    pub client_id: String,
    pub redirect_uri: String,
    pub challenge: String,
    pub nonce: String,
    pub user: u32,
    pub scope: String,
    pub issued_at: i64,
    pub redeemed: bool,
}

pub(crate) struct Inner {
    pub seed: u64,
    pub tenants: Vec<Arc<Tenant>>,
    pub base_url: RwLock<String>,
    pub keys: KeyRing,
    pub codes: Mutex<HashMap<String, AuthCode>>,
    /// `client|jti` → assertion expiry, for replay detection.
    pub jtis: Mutex<HashMap<String, i64>>,
    pub faults: FaultState,
    /// Seconds added to the wall clock (tests age codes and tokens without sleeping).
    pub clock_offset: AtomicI64,
    /// Graph change-notification subscriptions.
    pub subscriptions: super::subscriptions::Registry,
    /// How notifications reach their endpoints.
    pub delivery: super::notify::Delivery,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    pub fn now(&self) -> i64 {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        wall + self.clock_offset.load(Ordering::Relaxed)
    }

    /// `http://127.0.0.1:PORT`, no trailing slash: both the login and the Graph host.
    pub fn base(&self) -> String {
        read(&self.base_url).clone()
    }

    /// A tenant by directory id or by its domain, as `login.microsoftonline.com` accepts.
    pub fn tenant(&self, key: &str) -> Option<Arc<Tenant>> {
        self.tenants
            .iter()
            .find(|t| t.id.eq_ignore_ascii_case(key) || t.domain.eq_ignore_ascii_case(key))
            .cloned()
    }

    pub fn require_tenant(&self, key: &str) -> Result<Arc<Tenant>, EmulatorError> {
        self.tenant(key)
            .ok_or_else(|| EmulatorError::UnknownTenant(key.to_string()))
    }
}

impl Tenant {
    pub fn new(idx: u32, seed_value: u64, spec: &TenantSpec) -> Tenant {
        let users = seed::users(seed_value, idx as u64, spec);
        let groups = seed::groups(seed_value, idx as u64, &users);
        let mut data = TenantData {
            users: Vec::new(),
            by_id: HashMap::new(),
            by_upn: HashMap::new(),
            seq: 0,
            user_log: Vec::new(),
            generation: 1,
            mailboxes: HashMap::new(),
            groups,
        };
        for record in users {
            data.index_user(record);
        }
        Tenant {
            idx,
            id: spec.directory_id.to_lowercase(),
            domain: spec.domain.clone(),
            data: RwLock::new(data),
            apps: RwLock::new(HashMap::new()),
        }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, TenantData> {
        read(&self.data)
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, TenantData> {
        write(&self.data)
    }

    pub fn apps(&self) -> RwLockReadGuard<'_, HashMap<String, AppRecord>> {
        read(&self.apps)
    }

    pub fn apps_mut(&self) -> RwLockWriteGuard<'_, HashMap<String, AppRecord>> {
        write(&self.apps)
    }
}

impl TenantData {
    /// Adds a seeded or new user without logging a change (the caller decides).
    fn index_user(&mut self, record: UserRecord) -> u32 {
        let idx = self.users.len() as u32;
        self.by_id.insert(record.user.id.to_lowercase(), idx);
        self.by_upn
            .insert(record.user.user_principal_name.to_lowercase(), idx);
        self.users.push(record);
        idx
    }

    pub fn insert_user(&mut self, record: UserRecord) -> Result<u32, EmulatorError> {
        let upn = record.user.user_principal_name.to_lowercase();
        if self
            .by_upn
            .get(&upn)
            .is_some_and(|&i| self.users[i as usize].life != Life::HardDeleted)
        {
            return Err(EmulatorError::DuplicateUser(
                record.user.user_principal_name,
            ));
        }
        let idx = self.index_user(record);
        self.touch_user(idx);
        Ok(idx)
    }

    /// Re-keys the UPN index after a rename.
    pub fn rename_upn(&mut self, idx: u32, old: &str, new: &str) {
        self.by_upn.remove(&old.to_lowercase());
        self.by_upn.insert(new.to_lowercase(), idx);
    }

    /// A user index by object id or UPN, whatever its life state.
    pub fn index(&self, key: &str) -> Option<u32> {
        let key = key.to_lowercase();
        self.by_id
            .get(&key)
            .or_else(|| self.by_upn.get(&key))
            .copied()
    }

    /// A user that `/users/{id|upn}` can see (not deleted).
    pub fn active(&self, key: &str) -> Option<(u32, &UserRecord)> {
        let idx = self.index(key)?;
        let record = &self.users[idx as usize];
        (record.life == Life::Active).then_some((idx, record))
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn touch_user(&mut self, idx: u32) {
        let seq = self.next_seq();
        self.user_log.push((seq, idx));
    }

    /// Users changed in `(since, upto]`, each once, in order of first change.
    pub fn changed_users(&self, since: u64, upto: u64) -> Vec<u32> {
        changed(&self.user_log, since, upto)
    }

    pub fn contact_total(&self, user: u32) -> u32 {
        let base = self.users[user as usize].base_contacts;
        base + self.mailboxes.get(&user).map_or(0, |m| m.added)
    }

    /// Contact `c` of mailbox `user` as it stands now; `None` when deleted or absent.
    pub fn contact(&self, seed_value: u64, tenant: u32, user: u32, c: u32) -> Option<Contact> {
        if c >= self.contact_total(user) {
            return None;
        }
        match self.mailboxes.get(&user).and_then(|m| m.edits.get(&c)) {
            Some(edit) => edit.clone(),
            None => Some(seed::contact(seed_value, tenant, user, c)),
        }
    }

    /// Whether contact `c` exists, without generating it.
    pub fn contact_exists(&self, user: u32, c: u32) -> bool {
        c < self.contact_total(user)
            && !matches!(
                self.mailboxes.get(&user).and_then(|m| m.edits.get(&c)),
                Some(None)
            )
    }

    pub fn touch_contact(&mut self, user: u32, c: u32) {
        let seq = self.next_seq();
        self.mailboxes.entry(user).or_default().log.push((seq, c));
    }

    pub fn changed_contacts(&self, user: u32, since: u64, upto: u64) -> Vec<u32> {
        self.mailboxes
            .get(&user)
            .map_or_else(Vec::new, |m| changed(&m.log, since, upto))
    }
}

/// The distinct indices logged in `(since, upto]`; the log is sorted by sequence, so the
/// start is a binary search and the cost is O(changes), not O(tenant).
fn changed(log: &[(u64, u32)], since: u64, upto: u64) -> Vec<u32> {
    let start = log.partition_point(|(seq, _)| *seq <= since);
    let mut seen = HashSet::new();
    log[start..]
        .iter()
        .take_while(|(seq, _)| *seq <= upto)
        .filter(|(_, idx)| seen.insert(*idx))
        .map(|(_, idx)| *idx)
        .collect()
}
