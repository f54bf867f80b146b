//! A stand-in for a PortSIP PBX v22 REST API, in memory, for the tests, the benchmarks and
//! `ms365-gateway demo` (nothing here can reach a real PortSIP). It serves `/api/login`,
//! `/api/auth/refresh_token`, `/api/users…` (with `ms365_binding`) and `/api/contacts…`
//! as the shared OpenAPI document describes them, validates **every** request body and
//! `top`/`skip` against that document ([`schema`]) and then against the rules PortSIP
//! states in prose (usernames, voicemail PINs, digits-only extension numbers, unique names
//! and numbers), issues per-user tokens that expire on a clock tests can move, pages
//! lists, and injects faults on demand (5xx, holds that time the client out, 429 with
//! `Retry-After`). `/_pbx/…` is its control API; each route mirrors a method here.
//!
//! Files: `schema` (the OpenAPI validator), `rules` (PortSIP's prose rules), `tenant`
//! (users and contacts, indexed), `state` (tenants, tokens, clock, ids, statistics), `wire`
//! (errors, bodies, paging, guards),
//! `auth`, `users`, `contacts` (the PortSIP routes), `faults` (faults and counting),
//! `control` (hand edits and `/_pbx/`), `server` (routers and serving).

mod auth;
mod contacts;
mod control;
mod faults;
mod rules;
pub mod schema;
mod server;
mod state;
mod tenant;
mod users;
mod wire;

#[cfg(test)]
mod control_tests;
#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use faults::{FAULT_CLASSES, PbxFaults};
pub use server::RunningPbxEmulator;

use state::{Inner, as_map, lock};
use tenant::TenantState;

/// The tenants to start with.
#[derive(Debug, Clone, Default)]
pub struct PbxEmulatorConfig {
    /// Seeds the fault dice and the ids, so a run repeats.
    pub seed: u64,
    pub tenants: Vec<PbxTenantSpec>,
}

/// One tenant: its SIP domain (which `POST /login` names), its administrator (role
/// `Admin`), and users the PBX administrator made by hand.
#[derive(Clone)]
pub struct PbxTenantSpec {
    pub domain: String,
    pub admin_username: String,
    pub admin_password: String,
    pub local_users: Vec<LocalUserSpec>,
}

/// A user the PBX administrator created by hand: a standard user, bound to nobody.
#[derive(Clone)]
pub struct LocalUserSpec {
    pub name: String,
    pub extension_number: String,
    pub email: Option<String>,
    pub display_name: String,
    pub password: String,
}

impl std::fmt::Debug for PbxTenantSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PbxTenantSpec")
            .field("domain", &self.domain)
            .field("admin_username", &self.admin_username)
            .field("admin_password", &"<redacted>")
            .field("local_users", &self.local_users)
            .finish()
    }
}

impl std::fmt::Debug for LocalUserSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalUserSpec")
            .field("name", &self.name)
            .field("extension_number", &self.extension_number)
            .field("email", &self.email)
            .field("display_name", &self.display_name)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What the stand-in has seen since the start or the last reset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PbxStats {
    /// `/api` requests by operation, e.g. `POST /users` or `POST /users/{id}`.
    pub requests: BTreeMap<String, u64>,
    /// Requests refused by the OpenAPI schema or PortSIP's prose rules, by operation.
    pub schema_rejections: BTreeMap<String, u64>,
    /// Requests refused because a username, number or binding was taken (409), by operation.
    pub conflicts: BTreeMap<String, u64>,
    /// Successful sign-ins.
    pub logins: u64,
    /// Successful token refreshes.
    pub refreshes: u64,
    pub total_requests: u64,
    /// Requests answered with an injected failure (503, 429, `fail_next`) or held.
    pub faults_injected: u64,
}

/// Parses `DOMAIN:ADMIN_USERNAME:ADMIN_PASSWORD` (the password may hold colons).
pub fn parse_tenant(spec: &str) -> Result<PbxTenantSpec, String> {
    let mut parts = spec.splitn(3, ':');
    let (Some(domain), Some(user), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!(
            "`{spec}` is not DOMAIN:ADMIN_USERNAME:ADMIN_PASSWORD"
        ));
    };
    if domain.is_empty() || user.is_empty() || password.is_empty() {
        return Err(format!("`{domain}:{user}:…` has an empty part"));
    }
    Ok(PbxTenantSpec {
        domain: domain.to_string(),
        admin_username: user.to_string(),
        admin_password: password.to_string(),
        local_users: Vec::new(),
    })
}

/// The stand-in; clones share one world.
#[derive(Clone)]
pub struct PbxEmulator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PbxEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PbxEmulator").finish_non_exhaustive()
    }
}

impl PbxEmulator {
    /// A world with the configured tenants, each with its administrator (extension 101,
    /// or the next number no local user holds) and its local users.
    ///
    /// # Panics
    /// When a local user breaks PortSIP's rules or clashes with another user: a fixture
    /// the PBX itself would have refused is a mistake in the test.
    pub fn new(config: PbxEmulatorConfig) -> PbxEmulator {
        let inner = Arc::new(Inner::new(config.seed));
        for spec in &config.tenants {
            add_tenant(&inner, spec);
        }
        PbxEmulator { inner }
    }

    /// The tenant's users as the control API shows them: every stored field but the
    /// passwords, with `ms365_binding` (`""` when unbound) and `created_by`, in creation
    /// order. The configured tenant administrator is left out (it is the PBX's own
    /// account, not one a sync made or adopts); `GET /api/users` does list it.
    pub fn users(&self, domain: &str) -> Vec<Value> {
        let users = self.inner.with_tenant(domain, |t| {
            (t.users_page(0, usize::MAX))
                .filter(|u| !u.tenant_admin)
                .map(|u| u.shown())
                .collect()
        });
        users.unwrap_or_default()
    }

    /// The user bound to Microsoft 365 user `oid`, shown as [`Self::users`] shows it;
    /// without copying every user (benchmarks poll it).
    pub fn user_bound_to(&self, domain: &str, oid: &str) -> Option<Value> {
        let found = self.inner.with_tenant(domain, |t| {
            (t.users_page(0, usize::MAX))
                .find(|u| u.ms365_binding.as_deref() == Some(oid))
                .map(|u| u.shown())
        });
        found.flatten()
    }

    /// The tenant's company contacts, in creation order.
    pub fn contacts(&self, domain: &str) -> Vec<Value> {
        (self
            .inner
            .with_tenant(domain, |t| t.contacts_page(0, usize::MAX)))
        .unwrap_or_default()
    }

    /// A user made by hand on the PBX; its id.
    pub fn add_local_user(&self, domain: &str, user: LocalUserSpec) -> Result<String, String> {
        control::add_local_user(&self.inner, domain, &user).map_err(|e| e.to_string())
    }

    /// A company contact made by hand on the PBX (a JSON object of fields); its id.
    pub fn add_contact(&self, domain: &str, fields: Value) -> Result<String, String> {
        control::add_contact(&self.inner, domain, fields).map_err(|e| e.to_string())
    }

    /// Deletes a user by hand; false when there was none.
    pub fn delete_user(&self, domain: &str, id: &str) -> bool {
        (self
            .inner
            .with_tenant(domain, |t| t.remove_user(id).is_some()))
        .unwrap_or(false)
    }

    /// Changes a user by hand (drift, a new password): a JSON object of fields, `null`
    /// removing one; `ms365_binding` binds or (`""`/`null`) unbinds.
    pub fn edit_user(&self, domain: &str, id: &str, fields: Value) -> Result<(), String> {
        control::edit_user(&self.inner, domain, id, fields).map_err(|e| e.to_string())
    }

    /// Replaces the injected faults (rates above 1 act as 1; see [`PbxFaults::problem`]).
    pub fn set_faults(&self, faults: PbxFaults) {
        lock(&self.inner.faults).faults = faults;
    }

    /// The faults in force (`fail_next` counts down as it fires).
    pub fn faults(&self) -> PbxFaults {
        lock(&self.inner.faults).faults.clone()
    }

    /// The lifetime of access tokens issued from now on (1800 s unless set).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.inner.set_token_lifetime(lifetime);
    }

    /// Moves the stand-in's clock forward: tokens expire without a test sleeping.
    pub fn advance_clock(&self, by: Duration) {
        self.inner.advance_clock(by);
    }

    pub fn stats(&self) -> PbxStats {
        lock(&self.inner.stats).clone()
    }

    pub fn reset_stats(&self) {
        *lock(&self.inner.stats) = PbxStats::default();
    }

    /// Who a live access token belongs to: (domain, username).
    pub fn token_owner(&self, access_token: &str) -> Option<(String, String)> {
        let session = self.inner.session(access_token)?;
        let name = self.inner.with_tenant(&session.domain, |t| {
            t.user(&session.user_id).map(|u| u.get("name").to_string())
        });
        Some((session.domain, name.flatten()?))
    }
}

fn add_tenant(inner: &Inner, spec: &PbxTenantSpec) {
    let domain = spec.domain.to_ascii_lowercase();
    let taken: BTreeSet<u64> = (spec.local_users.iter())
        .filter_map(|u| u.extension_number.parse().ok())
        .collect();
    let number = (101..).find(|n| !taken.contains(n)).unwrap_or(101);
    let admin = json!({"name": spec.admin_username, "password": spec.admin_password,
        "display_name": "Tenant Administrator", "role": "Admin", "enabled": true,
        "extension_number": number.to_string(),
        "email": format!("{}@{domain}", spec.admin_username)});
    let mut tenant = TenantState::default();
    inner.insert_user(&mut tenant, as_map(admin), None, true);
    lock(&inner.tenants).insert(domain.clone(), tenant);
    for user in &spec.local_users {
        if let Err(e) = control::add_local_user(inner, &domain, user) {
            panic!("PbxEmulator: local user {} of {domain}: {e}", user.name);
        }
    }
}
