//! Configuration: one TOML file (plus `MS365GW_*` environment overrides) read and validated
//! once at start-up into the typed [`Config`] that the rest of the gateway uses. Every error
//! names the file (or environment variable) and the key, so an administrator can fix it
//! without reading code; the binary exits with status 2 on any of them.

mod database;
mod env;
mod pbx;
mod protected;
mod raw;
mod units;
pub(crate) mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ids::TenantId;
use http::Uri;

pub use database::{DATABASE_URL_KEY, DatabaseTransport, DatabaseUrl, redact_url};
pub use pbx::{PbxConfig, PbxKind, PbxLogin, PbxSecret, TenantPbxLogin};
pub use protected::{ProtectedPaths, canonical_path};
pub use units::IpNetwork;

/// Where a configuration value came from, for error messages.
const ENV_PREFIX: &str = "MS365GW_";

/// A configuration problem found before anything started.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the configuration file: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: not valid TOML: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{origin}: key `{key}`: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from (for messages and `check-config`).
    pub source: PathBuf,
    /// Where the SQLite database (unless `[store] database_url` is set), generated
    /// certificates and keys live.
    pub data_dir: PathBuf,
    /// The TLS (or explicitly plain) listeners, in file order.
    pub listeners: Vec<ListenerConfig>,
    /// The default upstream: the PBX web portal and REST API.
    pub upstream: UpstreamConfig,
    /// Operations endpoints and the system administrator credential.
    pub admin: AdminConfig,
    /// Connection limits and timeouts shared by all listeners.
    pub server: ServerLimits,
    /// Database settings.
    pub store: StoreConfig,
    /// Sign-in and session behaviour.
    pub sso: SsoConfig,
    /// The sync worker: concurrency, schedule checks, the cluster-wide lease.
    pub sync: SyncConfig,
    /// Per national cloud endpoint overrides (tests and the demo point these at the emulator).
    pub clouds: BTreeMap<String, CloudOverride>,
    /// Tenants created or updated at start-up.
    pub tenants: Vec<TenantSeed>,
    /// `[pbx]`: where the sync's result goes.
    pub pbx: PbxConfig,
}

/// `[sync]`: how the embedded sync worker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// How long a tenant's sync lease lasts without renewal (default 60 s): how soon
    /// another instance takes over the sync of an instance that died.
    pub lease_ttl: Duration,
    /// How often schedules and orphaned runs are checked (default 30 s).
    pub schedule_check_interval: Duration,
    /// How often tenants' Graph subscriptions are checked for renewal or change
    /// (default 30 s).
    pub subscription_check_interval: Duration,
    /// Tenants synced at once by this instance (default 2).
    pub concurrency: usize,
}

/// Which public domain a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// The PBX web domain (web portal, REST API).
    Pbx,
    /// The SBC domain, by convention on port 8883 (WebRTC client).
    Sbc,
}

impl ListenerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Pbx => "pbx",
            ListenerKind::Sbc => "sbc",
        }
    }
}

impl fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[listener]]`.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Position in the file, used in names (`listener[0]`) and metrics labels.
    pub index: usize,
    pub kind: ListenerKind,
    pub bind: SocketAddr,
    /// External origin (`scheme://host[:port]`, no trailing slash), never derived from
    /// request headers.
    pub public_url: String,
    /// `None` only when the file says `tls = false`.
    pub tls: Option<ListenerTls>,
    /// Overrides `[upstream] url` for this listener.
    pub upstream: Option<Uri>,
    /// Connections from `[server] trusted_proxies` start with a PROXY protocol header.
    pub proxy_protocol: bool,
}

impl ListenerConfig {
    /// The name used in logs, metrics and errors: `pbx#0`.
    pub fn name(&self) -> String {
        format!("{}#{}", self.kind, self.index)
    }

    /// The OAuth redirect URI this listener answers: `public_url` + `/ms365/redirect`.
    pub fn redirect_uri(&self) -> String {
        format!("{}/ms365/redirect", self.public_url)
    }

    /// The host part of `public_url` (brackets removed from IPv6 literals).
    pub fn public_host(&self) -> String {
        self.public_url
            .parse::<Uri>()
            .ok()
            .and_then(|u| {
                u.host()
                    .map(|h| h.trim_matches(|c| c == '[' || c == ']').to_string())
            })
            .unwrap_or_else(|| "localhost".to_string())
    }
}

/// Certificates of one listener.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// Served when no SNI entry matches (or the client sends no SNI).
    pub default: CertSource,
    /// Extra certificates chosen by SNI server name.
    pub sni: Vec<SniCertificate>,
}

/// Where a certificate and its key come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// PEM files on disk, reloaded when they change.
    Files {
        cert: PathBuf,
        key: PathBuf,
        /// The config key, for error messages (`listener[0].tls_cert`).
        key_name: String,
    },
    /// Generated once for the listener's host and kept in `data_dir/tls`.
    SelfSigned,
}

/// A `[[listener.sni]]` entry.
#[derive(Debug, Clone)]
pub struct SniCertificate {
    /// Lower-case DNS names; `*.example.com` matches one label.
    pub server_names: Vec<String>,
    pub source: CertSource,
}

/// `[upstream]`.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub url: Uri,
    /// Extra CA certificates for an `https` upstream (in addition to the system roots).
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// Time allowed for the upstream's response headers; past it the client gets 504.
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub bind: SocketAddr,
    /// File holding the system administrator's bearer token.
    pub token_file: Option<PathBuf>,
}

/// `[server]`: limits applied to every listener.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Edge worker threads (one event loop each) serving client connections.
    pub threads: usize,
    /// Open client connections across all listeners; further connections wait in the backlog.
    pub max_connections: usize,
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    /// A connection with no bytes moving for this long is closed gracefully.
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// How often certificate files are checked for changes.
    pub cert_reload_interval: Duration,
    /// Peers whose `X-Forwarded-*` / `Forwarded` headers are kept and extended.
    pub trusted_proxies: Vec<IpNetwork>,
    /// Slow clients: request bodies, responses nobody reads, idle WebSocket tunnels.
    pub slow: SlowClientLimits,
}

impl ServerLimits {
    /// Whether `ip` is one of `[server] trusted_proxies`.
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(ip))
    }
}

/// How slow a client may be before its connection is closed (so that a few dripping or
/// non-reading clients cannot hold every `max_connections` permit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowClientLimits {
    /// Bytes per second a request body must average once `body_grace` has passed (0: off).
    pub body_min_rate: u64,
    pub body_grace: Duration,
    /// A response the client has not read a byte of for this long ends the connection.
    pub send_timeout: Duration,
    /// A WebSocket tunnel with no byte either way for this long is closed.
    pub websocket_idle_timeout: Duration,
}

/// `[store]`.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Database connection pool size.
    pub max_connections: u32,
    /// PostgreSQL; `None` is SQLite (`gateway.db`) in `data_dir`.
    pub database_url: Option<DatabaseUrl>,
    /// Time allowed to obtain a database connection (at start-up and from the pool).
    pub connect_timeout: Duration,
    /// The file holding the master key that seals the private keys kept in the store
    /// (`MS365GW_MASTER_KEY` takes precedence; see [`crate::keyring::source_for`]).
    pub master_key_file: Option<PathBuf>,
}

/// `[sso]`.
#[derive(Debug, Clone)]
pub struct SsoConfig {
    /// Lifetime of a PBX session (default 8 h).
    pub session_lifetime: Duration,
    /// Path prefixes that need a session: browsers are sent to sign in, API calls get 401.
    /// Matched on the canonical path (see [`ProtectedPaths`]).
    pub protected_paths: ProtectedPaths,
    /// Also send `Authorization: Bearer <session token>` to the PBX.
    pub forward_session_token: bool,
    /// Login, redirect and session requests allowed per client IP and minute.
    pub login_rate_per_minute: u32,
    /// Logout also signs the user out at Microsoft (the cloud's `end_session_endpoint`).
    pub end_session_at_microsoft: bool,
}

/// `[clouds.NAME]`.
#[derive(Debug, Clone)]
pub struct CloudOverride {
    pub login: Option<Uri>,
    pub graph: Option<Uri>,
}

/// `[[tenant]]`.
#[derive(Debug, Clone)]
pub struct TenantSeed {
    pub id: TenantId,
    pub domain: String,
    pub name: String,
    /// `pbx_username` + `pbx_password_file`: how the PBX connector signs in.
    pub pbx_login: Option<TenantPbxLogin>,
}

impl Config {
    /// The PBX administrator sign-in configured for tenant `tenant_id` (`pbx_username` +
    /// `pbx_password_file`), if any.
    pub fn pbx_login(&self, tenant_id: &TenantId) -> Option<&PbxLogin> {
        (self.tenants.iter())
            .find(|t| &t.id == tenant_id)
            .and_then(|t| t.pbx_login.as_ref().map(|l| &l.login))
    }

    /// The `[clouds.*]` overrides that point at plain `http://` (keys `clouds.NAME.login`
    /// and their URL): tokens and client assertions would travel unencrypted.
    pub fn plain_http_clouds(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, c) in &self.clouds {
            for (key, url) in [("login", &c.login), ("graph", &c.graph)] {
                if let Some(url) = url.as_ref().filter(|u| u.scheme_str() == Some("http")) {
                    out.push((format!("clouds.{name}.{key}"), url.to_string()));
                }
            }
        }
        out
    }

    /// Reads `path`, applies `MS365GW_*` overrides from `vars`, and validates.
    pub fn load(
        path: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(path, &text, vars)
    }

    /// Like [`Config::load`] with the text already read (tests use it).
    pub fn from_toml(
        path: &Path,
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut value: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let overrides = env::apply_overrides(&mut value, vars)?;
        let origin = Origin {
            file: path,
            overrides: &overrides,
        };
        let raw: raw::RawConfig = serde_path_to_error::deserialize(toml::Value::Table(value))
            .map_err(|e| {
                let key = e.path().to_string();
                let message = e.into_inner().to_string();
                // toml appends "in `table`" lines; the key path already says where.
                let first_line = message.lines().next().unwrap_or_default().to_string();
                origin.invalid(&key, first_line)
            })?;
        validate::validate(raw, &origin)
    }

    /// The listener of a kind, if configured (first one wins).
    pub fn listener(&self, kind: ListenerKind) -> Option<&ListenerConfig> {
        self.listeners.iter().find(|l| l.kind == kind)
    }
}

/// Names where a key was set, so errors point at the file or at the environment variable.
pub(crate) struct Origin<'a> {
    file: &'a Path,
    /// (config key, environment variable) pairs applied on top of the file.
    overrides: &'a [(String, String)],
}

impl Origin<'_> {
    pub(crate) fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let origin = match self.overrides.iter().find(|(k, _)| k == key) {
            Some((_, var)) => format!("{} (overridden by {var})", self.file.display()),
            None => self.file.display().to_string(),
        };
        ConfigError::Invalid {
            origin,
            key: key.to_string(),
            message: message.into(),
        }
    }
}
