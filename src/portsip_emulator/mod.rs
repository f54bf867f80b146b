//! A stand-in for a PortSIP PBX v22 REST API, in memory, for the tests, the benchmarks and
//! `ms365-gateway demo` (nothing here can reach a real PortSIP). It serves `/api/login`,
//! `/api/auth/refresh_token`, `/api/users…` (with `ms365_binding`) and `/api/contacts…`
//! as the shared OpenAPI document describes them, validates **every** request body and
//! query against that document ([`schema`]) plus the rules PortSIP states in prose
//! (usernames, voicemail PINs, unique names and numbers), issues and expires per-user
//! tokens, pages lists, and injects faults on demand (5xx, slow answers that time the
//! client out, 429 with `Retry-After`). `/_pbx/…` is its control API.
//!
//! Files: `schema` (the OpenAPI validator), `state` (tenants, users, tokens, rules),
//! `api` (the PortSIP routes), `control` (faults, statistics and the control routes).

mod api;
mod control;
pub mod schema;
mod state;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use state::{Inner, as_map, lock};

/// The tenants to start with.
#[derive(Debug, Clone, Default)]
pub struct PbxEmulatorConfig {
    /// Seeds the fault dice, so a faulty run repeats.
    pub seed: u64,
    pub tenants: Vec<PbxTenantSpec>,
}

/// One tenant: its SIP domain, its administrator, users made by hand on the PBX.
#[derive(Debug, Clone)]
pub struct PbxTenantSpec {
    pub domain: String,
    pub admin_username: String,
    pub admin_password: String,
    pub local_users: Vec<LocalUserSpec>,
}

/// A user the PBX administrator created by hand.
#[derive(Debug, Clone)]
pub struct LocalUserSpec {
    pub name: String,
    pub extension_number: String,
    pub email: Option<String>,
    pub display_name: String,
    pub password: String,
}

/// Injected faults, for one class of routes (`login`, `users`, `contacts`) or all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PbxFaults {
    /// `None`: every class.
    pub class: Option<String>,
    /// Share of requests answered 503.
    pub error_rate: f64,
    /// Share of requests held `timeout_delay_ms` before they are carried out.
    pub timeout_rate: f64,
    /// Share of requests answered 429 with `Retry-After: retry_after_secs`.
    pub throttle_rate: f64,
    pub retry_after_secs: u64,
    pub timeout_delay_ms: u64,
    /// The next N requests of the class answer `fail_status` (503 when 0).
    pub fail_next: u32,
    pub fail_status: u16,
}

/// What the stand-in has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PbxStats {
    /// By operation, e.g. `POST /users` or `POST /users/{id}`.
    pub requests: BTreeMap<String, u64>,
    /// Requests refused by the OpenAPI validation, by operation.
    pub schema_rejections: BTreeMap<String, u64>,
    pub logins: u64,
    pub refreshes: u64,
    pub total_requests: u64,
    /// Requests answered with an injected failure (503, 429, `fail_next`) or held.
    pub faults_injected: u64,
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

/// A stand-in serving on `127.0.0.1`; dropping it stops the server.
pub struct RunningPbxEmulator {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// `base_url` + `/api`: what `[pbx] api_url` points at.
    pub api_url: String,
    pub addr: SocketAddr,
    pub emulator: PbxEmulator,
    shutdown: CancellationToken,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl RunningPbxEmulator {
    /// Stops serving and waits for the server task.
    pub async fn stop(mut self) -> io::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningPbxEmulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl PbxEmulator {
    pub fn new(config: PbxEmulatorConfig) -> PbxEmulator {
        PbxEmulator {
            inner: Arc::new(Inner::new(config.seed, &config.tenants)),
        }
    }

    /// PortSIP's routes under `/api` (faults and statistics applied) and the control API.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route("/api/login", post(api::login).get(api::current))
            .route("/api/auth/refresh_token", post(api::refresh))
            .route("/api/users", get(api::list_users).post(api::create_user))
            .route("/api/users/{id}", get(api::get_user).post(api::update_user))
            .route("/api/users/{id}/destroy", post(api::destroy_user))
            .route("/api/users/{id}/ms365_binding", post(api::bind))
            .route("/api/users/{id}/ms365_binding/destroy", post(api::unbind))
            .route(
                "/api/contacts",
                get(api::list_contacts).post(api::create_contact),
            )
            .route(
                "/api/contacts/{id}",
                get(api::get_contact).post(api::update_contact),
            )
            .route("/api/contacts/{id}/destroy", post(api::destroy_contact))
            .layer(from_fn_with_state(
                self.inner.clone(),
                control::faults_layer,
            ));
        api.merge(control::routes()).with_state(self.inner.clone())
    }

    /// Serves on an already-bound listener until `shutdown` fires.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> io::Result<()> {
        let app = self.router();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    }

    /// Binds `127.0.0.1:0` and serves in a task.
    pub async fn start(self) -> io::Result<RunningPbxEmulator> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(self.clone().serve(listener, shutdown.clone()));
        let base_url = format!("http://{addr}");
        Ok(RunningPbxEmulator {
            api_url: format!("{base_url}/api"),
            base_url,
            addr,
            emulator: self,
            shutdown,
            task: Some(task),
        })
    }

    /// The tenant's users as the control API shows them (no secrets), by id.
    pub fn users(&self, domain: &str) -> Vec<Value> {
        let tenants = lock(&self.inner.tenants);
        (tenants.get(&domain.to_lowercase()).into_iter())
            .flat_map(|t| {
                t.users
                    .values()
                    .filter(|u| u.role() != "Admin")
                    .map(|u| u.shown())
            })
            .collect()
    }

    /// The tenant's company contacts.
    pub fn contacts(&self, domain: &str) -> Vec<Value> {
        let tenants = lock(&self.inner.tenants);
        (tenants.get(&domain.to_lowercase()).into_iter())
            .flat_map(|t| t.contacts.iter().map(|(id, c)| control::with_id(id, c)))
            .collect()
    }

    /// A user made by hand on the PBX; its id.
    pub fn add_local_user(&self, domain: &str, user: LocalUserSpec) -> Result<String, String> {
        control::add_local_user(&self.inner, domain, &user)
    }

    /// A contact made by hand on the PBX; its id.
    pub fn add_contact(&self, domain: &str, fields: Value) -> Result<String, String> {
        let id = self.inner.new_id();
        let mut tenants = lock(&self.inner.tenants);
        let tenant = tenants
            .get_mut(&domain.to_lowercase())
            .ok_or("no such tenant")?;
        tenant.contacts.insert(id.clone(), as_map(fields));
        Ok(id)
    }

    /// Deletes a user by hand; false when there was none.
    pub fn delete_user(&self, domain: &str, id: &str) -> bool {
        let mut tenants = lock(&self.inner.tenants);
        (tenants.get_mut(&domain.to_lowercase())).is_some_and(|t| t.users.remove(id).is_some())
    }

    /// Changes a user's fields by hand (drift, a new password).
    pub fn edit_user(&self, domain: &str, id: &str, fields: Value) -> Result<(), String> {
        let mut tenants = lock(&self.inner.tenants);
        let tenant = tenants
            .get_mut(&domain.to_lowercase())
            .ok_or("no such tenant")?;
        let user = tenant.users.get_mut(id).ok_or("no such user")?;
        user.fields.extend(as_map(fields));
        Ok(())
    }

    pub fn set_faults(&self, faults: PbxFaults) {
        lock(&self.inner.faults).faults = faults;
    }

    /// Lifetime of new access tokens.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        let secs = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        self.inner.token_lifetime.store(secs, Ordering::Relaxed);
    }

    /// Moves the stand-in's clock (token expiry) forward.
    pub fn advance_clock(&self, by: Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        self.inner.clock_offset.fetch_add(secs, Ordering::Relaxed);
    }

    pub fn stats(&self) -> PbxStats {
        lock(&self.inner.stats).clone()
    }

    pub fn reset_stats(&self) {
        *lock(&self.inner.stats) = PbxStats::default();
    }

    /// Who an access token belongs to: (domain, username), while it is valid.
    pub fn token_owner(&self, access_token: &str) -> Option<(String, String)> {
        let session = self.inner.session(access_token)?;
        let tenants = lock(&self.inner.tenants);
        let user = tenants.get(&session.domain)?.users.get(&session.user_id)?;
        Some((session.domain.clone(), user.get("name").to_string()))
    }
}
