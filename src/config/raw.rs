//! The configuration file exactly as written: serde structs that mirror the TOML, with
//! `deny_unknown_fields` everywhere so a misspelt key stops start-up instead of being ignored.
//! Nothing here is trusted; `super::validate` turns it into the typed [`super::Config`].

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub data_dir: Option<String>,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<RawListener>,
    pub upstream: Option<RawUpstream>,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub sso: RawSso,
    #[serde(default)]
    pub sync: RawSync,
    #[serde(default)]
    pub pbx: RawPbx,
    #[serde(default)]
    pub clouds: BTreeMap<String, RawCloud>,
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<RawTenant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub kind: String,
    pub bind: String,
    pub public_url: String,
    pub tls: Option<bool>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub upstream: Option<String>,
    pub proxy_protocol: Option<bool>,
    #[serde(default)]
    pub sni: Vec<RawSniCertificate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSniCertificate {
    pub server_names: Vec<String>,
    pub tls_cert: String,
    pub tls_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: String,
    pub ca_file: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub pool_idle_timeout: Option<String>,
    pub pool_max_idle_per_host: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Option<String>,
    pub token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub threads: Option<usize>,
    pub max_connections: Option<usize>,
    pub tls_handshake_timeout: Option<String>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_header_bytes: Option<usize>,
    pub shutdown_grace: Option<String>,
    pub cert_reload_interval: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub body_min_rate: Option<u64>,
    pub body_grace: Option<String>,
    pub send_timeout: Option<String>,
    pub websocket_idle_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub max_connections: Option<u32>,
    pub database_url: Option<String>,
    pub ca_file: Option<String>,
    pub connect_timeout: Option<String>,
    pub master_key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSso {
    pub session_lifetime: Option<String>,
    pub protected_paths: Option<Vec<String>>,
    pub protected_paths_ignore_case: Option<bool>,
    pub forward_session_token: Option<bool>,
    pub login_rate_per_minute: Option<u32>,
    pub end_session_at_microsoft: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    pub lease_ttl: Option<String>,
    pub schedule_check_interval: Option<String>,
    pub subscription_check_interval: Option<String>,
    pub concurrency: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCloud {
    pub login: Option<String>,
    pub graph: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub id: String,
    pub domain: String,
    pub name: Option<String>,
    pub pbx_username: Option<String>,
    pub pbx_password_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPbx {
    pub kind: Option<String>,
    pub api_url: Option<String>,
    pub ca_file: Option<String>,
    pub request_timeout: Option<String>,
    pub concurrency: Option<usize>,
}
