//! A faithful stand-in for Microsoft Entra ID and Microsoft Graph v1.0, served over plain
//! HTTP on loopback for the gateway's tests, benchmarks and demo; nothing here can reach
//! Microsoft. One base URL plays both hosts: `/{tenant}/...` is the login host (discovery,
//! JWKS, authorize, token with `private_key_jwt`), `/v1.0/...` is Graph (users, delta,
//! photos, contacts, groups, `$batch`), `/_emulator/...` is the control API. Errors, faults
//! and throttling follow Microsoft's documented shapes; `docs/emulator.md` maps each route
//! to the page it follows.
//!
//! Files (private modules): `state` (tenants, apps, users, change logs, contact overlays),
//! `seed` and `names` (the deterministic data); `identity`, `authorize`, `token`,
//! `assertion`, `keys` (Entra ID); `graph`, `delta`, `users`, `outlook`, `batch` (Graph);
//! `subscriptions` and `notify` (change-notification subscriptions, the validation
//! handshake, deliveries and lifecycle events); `faults` (injected faults, mailbox
//! concurrency, statistics); `control`, `directory`,
//! `admin` (the control API in process and over HTTP); `server` (hyper serving, HTTP/1.1 and
//! HTTP/2, including injected connection resets); `util`.

mod admin;
mod admin_notify;
mod assertion;
mod authorize;
mod batch;
mod control;
mod delta;
mod directory;
mod faults;
mod graph;
mod identity;
mod keys;
mod model;
mod names;
mod notify;
mod outlook;
mod seed;
mod server;
mod state;
mod subscriptions;
mod token;
mod users;
mod util;

#[cfg(test)]
mod tests;

use std::str::FromStr;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::middleware::from_fn_with_state;

pub use faults::{ClassStats, Faults, RouteClass, Stats};
pub use model::{
    AppRegistration, CertificateInfo, Contact, ContactPatch, EmailAddress, EmulatorError,
    NewContact, NewUser, PhysicalAddress, User, UserPatch,
};
pub use notify::{LifecycleEvent, NotificationFaults, NotificationStats, SubscriptionInfo};
pub use server::RunningEmulator;

/// The demo tenant's directory id.
pub const DEMO_TENANT_ID: &str = "00000000-0000-4000-8000-00000000d0e0";
/// The demo tenant's domain.
pub const DEMO_DOMAIN: &str = "contoso.onmicrosoft.com";

/// What to seed: the seed makes every id, name and photo repeat run after run.
#[derive(Debug, Clone, PartialEq)]
pub struct EmulatorConfig {
    pub seed: u64,
    pub tenants: Vec<TenantSpec>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            seed: 1,
            tenants: Vec::new(),
        }
    }
}

/// One tenant's directory. `disabled` and `users_without_names` are taken from `users`;
/// shared mailboxes and guests come on top.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantSpec {
    /// The tenant (directory) id, a GUID.
    pub directory_id: String,
    /// The initial domain, e.g. `contoso.onmicrosoft.com`.
    pub domain: String,
    pub users: usize,
    pub contacts_per_user: usize,
    /// Share of users with a profile photo, `0..=1`.
    pub photo_share: f64,
    pub shared_mailboxes: usize,
    pub guests: usize,
    pub disabled: usize,
    pub users_without_names: usize,
    /// Enabled, named members without an Exchange mailbox (unlicensed): their contacts
    /// answer 404 `MailboxNotEnabledForRESTAPI`, and they have no `mail`.
    pub users_without_mailbox: usize,
}

impl TenantSpec {
    /// An empty tenant.
    pub fn new(directory_id: &str, domain: &str) -> TenantSpec {
        TenantSpec {
            directory_id: directory_id.to_string(),
            domain: domain.to_string(),
            users: 0,
            contacts_per_user: 0,
            photo_share: 0.0,
            shared_mailboxes: 0,
            guests: 0,
            disabled: 0,
            users_without_names: 0,
            users_without_mailbox: 0,
        }
    }

    fn validate(&self) -> Result<(), String> {
        uuid::Uuid::parse_str(&self.directory_id)
            .map_err(|_| format!("tenant `{}` is not a GUID", self.directory_id))?;
        if !self.domain.contains('.') {
            return Err(format!("domain `{}` is not a domain name", self.domain));
        }
        if !(0.0..=1.0).contains(&self.photo_share) {
            return Err(format!(
                "photos={} is not between 0 and 1",
                self.photo_share
            ));
        }
        if self.disabled + self.users_without_names + self.users_without_mailbox > self.users {
            return Err("disabled + nameless + nomailbox must not exceed users".into());
        }
        Ok(())
    }

    /// The default directory id and domain of the `n`-th tenant of a `--seed` spec.
    fn nth(n: usize) -> TenantSpec {
        let domains = [
            DEMO_DOMAIN,
            "fabrikam.onmicrosoft.com",
            "northwind.onmicrosoft.com",
        ];
        let domain = domains
            .get(n)
            .map_or_else(|| format!("tenant{n}.onmicrosoft.com"), |d| d.to_string());
        TenantSpec::new(
            &format!("00000000-0000-4000-8000-0000{:08x}", 0xd0e0 + n),
            &domain,
        )
    }

    /// Applies one `key=value` of a `--seed` spec.
    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let count = || {
            value
                .parse::<usize>()
                .map_err(|_| format!("`{key}={value}`: not a count"))
        };
        match key {
            "users" => self.users = count()?,
            "contacts" => self.contacts_per_user = count()?,
            "photos" => {
                self.photo_share = value
                    .parse()
                    .map_err(|_| format!("`photos={value}`: not a number"))?
            }
            "mailboxes" | "shared" => self.shared_mailboxes = count()?,
            "guests" => self.guests = count()?,
            "disabled" => self.disabled = count()?,
            "nameless" => self.users_without_names = count()?,
            "nomailbox" => self.users_without_mailbox = count()?,
            "tenant" | "directory" => self.directory_id = value.to_string(),
            "domain" => self.domain = value.to_string(),
            _ => {
                return Err(format!(
                    "unknown seed key `{key}` (users, contacts, photos, \
                mailboxes, guests, disabled, nameless, nomailbox, tenant, domain, seed)"
                ));
            }
        }
        Ok(())
    }
}

/// `users=50000,contacts=20,photos=0.5,mailboxes=2` (one tenant, seed 1).
impl FromStr for TenantSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let config = parse_seed(spec)?;
        match <[TenantSpec; 1]>::try_from(config.tenants) {
            Ok([one]) => Ok(one),
            Err(_) => Err("expected exactly one tenant".into()),
        }
    }
}

/// The demo, which is also the emulator's default seed: one tenant with 25 users (photos
/// and contacts), a shared mailbox with contacts, a guest, a disabled user, a room-like
/// account with only a display name and two unlicensed users without a mailbox, as real
/// tenants have.
pub fn demo_config() -> EmulatorConfig {
    EmulatorConfig {
        seed: 1,
        tenants: vec![TenantSpec {
            users: 25,
            contacts_per_user: 5,
            photo_share: 0.8,
            shared_mailboxes: 1,
            guests: 1,
            disabled: 1,
            users_without_names: 1,
            users_without_mailbox: 2,
            ..TenantSpec::new(DEMO_TENANT_ID, DEMO_DOMAIN)
        }],
    }
}

/// Parses `ms365-gateway emulator --seed SPEC`: `demo`, or comma-separated `key=value`
/// per tenant with tenants separated by `;`, e.g.
/// `users=50000,contacts=20,photos=0.5,mailboxes=2;users=10,domain=fabrikam.onmicrosoft.com`.
/// `seed=N` (anywhere) sets the random seed.
pub fn parse_seed(spec: &str) -> Result<EmulatorConfig, String> {
    if spec.trim() == "demo" {
        return Ok(demo_config());
    }
    let mut config = EmulatorConfig::default();
    for (n, part) in spec
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .enumerate()
    {
        let mut tenant = TenantSpec::nth(n);
        for pair in part.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not key=value"))?;
            match key.trim() {
                "seed" => {
                    config.seed = value
                        .trim()
                        .parse()
                        .map_err(|_| format!("`{pair}`: not a number"))?
                }
                key => tenant.set(key, value.trim())?,
            }
        }
        tenant.validate()?;
        config.tenants.push(tenant);
    }
    if config.tenants.is_empty() {
        return Err("the seed spec names no tenant".into());
    }
    Ok(config)
}

/// The emulator; clones share one world (it is an `Arc` inside).
#[derive(Clone)]
pub struct Emulator {
    pub(crate) inner: Arc<state::Inner>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("base_url", &self.inner.base())
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Seeds the tenants and generates the first signing key.
    pub fn new(config: EmulatorConfig) -> Emulator {
        let tenants = config
            .tenants
            .iter()
            .enumerate()
            .map(|(i, spec)| Arc::new(state::Tenant::new(i as u32, config.seed, spec)))
            .collect();
        Emulator {
            inner: Arc::new(state::Inner {
                seed: config.seed,
                tenants,
                base_url: RwLock::new(String::new()),
                keys: keys::KeyRing::new(),
                codes: Mutex::new(Default::default()),
                jtis: Mutex::new(Default::default()),
                faults: faults::FaultState::new(config.seed),
                clock_offset: AtomicI64::new(0),
                subscriptions: Default::default(),
                delivery: Default::default(),
            }),
        }
    }

    /// Every route: login host, Graph, control API; faults and Graph's envelope applied.
    pub fn router(&self) -> Router {
        graph::routes()
            .merge(identity::routes())
            .merge(admin::routes())
            .merge(admin_notify::routes())
            .fallback(graph::fallback)
            .layer(from_fn_with_state(self.clone(), faults::layer))
            .layer(from_fn_with_state(self.clone(), graph::envelope))
            .with_state(self.clone())
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn parses_seed_specs() {
        let c = parse_seed("users=50000,contacts=20,photos=0.5,mailboxes=2").unwrap();
        assert_eq!(c.seed, 1);
        let t = &c.tenants[0];
        assert_eq!(
            (t.users, t.contacts_per_user, t.shared_mailboxes),
            (50000, 20, 2)
        );
        assert_eq!(t.photo_share, 0.5);
        assert_eq!(t.directory_id, DEMO_TENANT_ID);
        let two = parse_seed("seed=9,users=3;users=4,domain=x.onmicrosoft.com").unwrap();
        assert_eq!((two.seed, two.tenants.len()), (9, 2));
        assert_ne!(two.tenants[0].directory_id, two.tenants[1].directory_id);
        assert!(parse_seed("users=x").is_err());
        assert!(parse_seed("photos=2").is_err());
        assert!(parse_seed("bogus=1").is_err());
        assert!(parse_seed("users=1,disabled=2").is_err());
        assert_eq!(parse_seed("demo").unwrap(), demo_config());
        assert_eq!("users=5".parse::<TenantSpec>().unwrap().users, 5);
    }
}
