//! ms365-gateway: the Microsoft 365 integration of a multi-tenant IP-PBX, as a
//! TLS-terminating reverse proxy in front of the PBX.
//!
//! Module map (each module's own header says what it owns):
//! - [`admin`]: the tenant administration API (PortSIP v22 `/api/ms365` shapes), its
//!   authentication, and the `/ms365/admin` page.
//! - [`demo`]: `ms365-gateway demo`: the stand-ins (crate `ms365-stand-ins`), gateway and a
//!   demo PBX in one process; feature `demo`, on by default.
//! - [`config`]: the TOML file and `MS365GW_*` overrides, validated once into typed structs.
//! - [`edge`]: TLS (SNI, reload), the HTTP/1.1 + HTTP/2 server, the reverse proxy.
//! - [`entra`]: national clouds, the tenant certificate credential, client assertions,
//!   app-only tokens, AADSTS errors with hints.
//! - [`graph`]: the Microsoft Graph client: paging, delta, `$batch`, throttling, per-mailbox
//!   concurrency.
//! - [`pbx`]: the PBX connector's PortSIP v22 REST client (sign-in, users, bindings,
//!   company contacts), its errors and random credentials.
//! - [`tenant_keys`]: a tenant's certificate key pairs over time (store + keyring), the
//!   signing keys [`entra`] asks for through its `SigningKeys` trait.
//! - [`keyring`]: the master key and the secrets sealed with it in the store (session,
//!   flow-cookie and tenant certificate keys).
//! - [`settings`]: a tenant's Microsoft 365 settings (PortSIP v22 shape), validated.
//! - [`schedule`]: the sync schedule: cron expressions in a tenant's time zone.
//! - [`seal`]: AES-256-GCM sealing with rotating key ids (cookies, the keyring).
//! - [`sso`]: sign-in with Microsoft and PBX sessions.
//! - [`realtime`]: Graph change notifications on the public listener, queued for targeted
//!   runs.
//! - [`sync`]: one-way directory sync, Microsoft 365 → PBX (users → extensions), run records.
//! - [`store`]: SQLite (embedded default) or PostgreSQL (several instances) behind one
//!   driver-neutral type; migrations; the tables instances coordinate through.
//! - [`gateway`]: assembly, the bound-then-run lifecycle and the shutdown tree.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics` on the admin address.
//! - [`metrics`]: the Prometheus registry.
//! - [`check`]: what `check-config` prints.
//! - [`clock`]: Unix-seconds wall-clock time.
//! - `ids`: [`TenantId`] and [`ObjectId`], the identifiers every layer passes along.
//! - [`signals`]: SIGTERM/SIGINT to shutdown, SIGHUP to certificate reload.
//! - [`fsutil`]: owner-only files for secrets.
//! - `log_writer`: log lines queued to one writer thread, never blocking a request.
//! - `shard`: which shard of a per-request value (metrics, log buffer) a thread writes.
//! - `encoding`: hex and percent-encoding, written once.
//! - [`web`]: what the gateway's pages and browser endpoints share: same-origin checks, the
//!   post-login path check, embedded assets and page security headers.
#![forbid(unsafe_code)]

pub mod admin;
pub(crate) mod check;
pub(crate) mod clock;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod edge;
pub(crate) mod encoding;
pub mod entra;
pub(crate) mod fsutil;
pub(crate) mod gateway;
pub mod graph;
pub(crate) mod ids;
pub mod keyring;
pub(crate) mod log_writer;
pub(crate) mod metrics;
pub(crate) mod ops;
pub mod pbx;
pub(crate) mod realtime;
pub(crate) mod schedule;
pub(crate) mod seal;
pub mod settings;
pub(crate) mod shard;
pub(crate) mod signals;
pub mod sso;
pub mod store;
pub mod sync;
pub mod tenant_keys;
pub(crate) mod web;

// The curated surface of the crate-private modules: what the binary, the tests, the
// benches and the fuzz targets use of them.
pub use check::describe as describe_config;
pub use config::{Config, ConfigError};
pub use edge::{AccessLogFormat, install_access_log};
pub use gateway::{Gateway, GatewayHandle, StartError};
pub use ids::{InvalidTenantId, ObjectId, TenantId};
pub use log_writer::{DEFAULT_BUFFER_BYTES, LogFlush, QueuedWriter, spawn as spawn_log_writer};
pub use metrics::{ListenerMetrics, Metrics};
pub use seal::Sealer;
pub use signals::forward_signals;
pub use web::return_to::validate as validate_return_to;
