//! Turns a [`RawConfig`] into a [`Config`], checking every value once so the rest of the
//! gateway never re-validates. Relative paths are taken from the working directory, as the
//! shipped example (`config/admin.token`, `certs/pbx.crt`) expects when run from the checkout.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

use super::raw::{RawCloud, RawConfig, RawListener, RawServer, RawTenant, RawUpstream};
use super::units::{IpNetwork, parse_duration};
use super::*;

/// National clouds the gateway knows; `[clouds.X]` must name one of them.
pub const CLOUD_NAMES: &[&str] = &["GLOBAL", "CHINA", "USGOV", "USGOV_DOD"];

pub(super) fn validate(raw: RawConfig, o: &Origin<'_>) -> Result<Config, ConfigError> {
    let listeners = listeners(raw.listeners, o)?;
    let upstream = upstream(raw.upstream, o)?;
    let admin = AdminConfig {
        bind: socket_addr(
            raw.admin.bind.as_deref().unwrap_or("127.0.0.1:9090"),
            "admin.bind",
            o,
        )?,
        token_file: raw.admin.token_file.map(PathBuf::from),
    };
    if listeners
        .iter()
        .any(|l| l.bind == admin.bind && admin.bind.port() != 0)
    {
        return Err(o.invalid("admin.bind", "is the same address as a listener"));
    }
    let pbx = super::pbx::pbx(raw.pbx, &upstream, o)?;
    let tenants = tenants(raw.tenants, o)?;
    if pbx.kind == super::PbxKind::PortSip
        && let Some(i) = tenants.iter().position(|t| t.pbx_login.is_none())
    {
        let key = format!("tenant[{i}].pbx_username");
        return Err(o.invalid(&key, "is required with [pbx] kind = \"portsip\""));
    }
    let server = server(raw.server, o)?;
    if let Some(l) = listeners.iter().find(|l| l.proxy_protocol)
        && server.trusted_proxies.is_empty()
    {
        return Err(o.invalid(
            &format!("listener[{}].proxy_protocol", l.index),
            "needs [server] trusted_proxies: the balancers allowed to send the header",
        ));
    }
    Ok(Config {
        source: o.file.to_path_buf(),
        data_dir: PathBuf::from(raw.data_dir.as_deref().unwrap_or("data")),
        listeners,
        upstream,
        admin,
        server,
        store: super::database::store(raw.store, o)?,
        sso: sso(raw.sso, o)?,
        sync: sync(raw.sync, o)?,
        clouds: clouds(raw.clouds, o)?,
        tenants,
        pbx,
    })
}

fn listeners(raw: Vec<RawListener>, o: &Origin<'_>) -> Result<Vec<ListenerConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(o.invalid("listener", "at least one [[listener]] is required"));
    }
    let mut binds = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (index, l) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("listener[{index}].{k}");
        let kind = match l.kind.as_str() {
            "pbx" => ListenerKind::Pbx,
            "sbc" => ListenerKind::Sbc,
            other => {
                return Err(o.invalid(&key("kind"), format!("`{other}` is not \"pbx\" or \"sbc\"")));
            }
        };
        let bind = socket_addr(&l.bind, &key("bind"), o)?;
        if bind.port() != 0 && !binds.insert(bind) {
            return Err(o.invalid(&key("bind"), format!("{bind} is used by another listener")));
        }
        let public_url = public_url(&l.public_url, &key("public_url"), o)?;
        let upstream = l
            .upstream
            .as_deref()
            .map(|u| upstream_url(u, &key("upstream"), o))
            .transpose()?;
        let tls = listener_tls(&l, index, o)?;
        out.push(ListenerConfig {
            index,
            kind,
            bind,
            public_url,
            tls,
            upstream,
            proxy_protocol: l.proxy_protocol.unwrap_or(false),
        });
    }
    Ok(out)
}

fn listener_tls(
    l: &RawListener,
    index: usize,
    o: &Origin<'_>,
) -> Result<Option<ListenerTls>, ConfigError> {
    let key = |k: &str| format!("listener[{index}].{k}");
    if l.tls == Some(false) {
        if l.tls_cert.is_some() || l.tls_key.is_some() || !l.sni.is_empty() {
            return Err(o.invalid(
                &key("tls"),
                "is false, so tls_cert, tls_key and sni must not be set",
            ));
        }
        return Ok(None);
    }
    let default = match (l.tls_cert.as_deref(), l.tls_key.as_deref()) {
        (Some("self-signed"), None) => CertSource::SelfSigned,
        (Some("self-signed"), Some(_)) => {
            return Err(o.invalid(
                &key("tls_key"),
                "must be left out when tls_cert = \"self-signed\"",
            ));
        }
        (Some(cert), Some(k)) => cert_files(cert, k, &key("tls_cert"), &key("tls_key"), o)?,
        (Some(_), None) => return Err(o.invalid(&key("tls_key"), "is required with tls_cert")),
        (None, _) => {
            return Err(o.invalid(
                &key("tls_cert"),
                "is required (a PEM file, or \"self-signed\"); set tls = false only behind another TLS terminator",
            ));
        }
    };
    let mut sni = Vec::with_capacity(l.sni.len());
    for (i, s) in l.sni.iter().enumerate() {
        let skey = |k: &str| format!("listener[{index}].sni[{i}].{k}");
        if s.server_names.is_empty() {
            return Err(o.invalid(&skey("server_names"), "needs at least one name"));
        }
        let mut names = Vec::with_capacity(s.server_names.len());
        for name in &s.server_names {
            names.push(server_name(name).map_err(|m| o.invalid(&skey("server_names"), m))?);
        }
        let source = cert_files(
            &s.tls_cert,
            &s.tls_key,
            &skey("tls_cert"),
            &skey("tls_key"),
            o,
        )?;
        sni.push(SniCertificate {
            server_names: names,
            source,
        });
    }
    Ok(Some(ListenerTls { default, sni }))
}

fn cert_files(
    cert: &str,
    key: &str,
    cert_key: &str,
    key_key: &str,
    o: &Origin<'_>,
) -> Result<CertSource, ConfigError> {
    for (path, name) in [(cert, cert_key), (key, key_key)] {
        if let Err(e) = std::fs::File::open(path) {
            return Err(o.invalid(name, format!("cannot read {path}: {e}")));
        }
    }
    Ok(CertSource::Files {
        cert: cert.into(),
        key: key.into(),
        key_name: cert_key.to_string(),
    })
}

pub(crate) fn server_name(name: &str) -> Result<String, String> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let body = lower.strip_prefix("*.").unwrap_or(&lower);
    let ok = !body.is_empty()
        && body.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(lower)
    } else {
        Err(format!("`{name}` is not a DNS name"))
    }
}

fn upstream(raw: Option<RawUpstream>, o: &Origin<'_>) -> Result<UpstreamConfig, ConfigError> {
    let raw =
        raw.ok_or_else(|| o.invalid("upstream", "the [upstream] table with `url` is required"))?;
    let ca_file = match raw.ca_file {
        Some(path) => {
            std::fs::File::open(&path)
                .map_err(|e| o.invalid("upstream.ca_file", format!("cannot read {path}: {e}")))?;
            Some(PathBuf::from(path))
        }
        None => None,
    };
    Ok(UpstreamConfig {
        url: upstream_url(&raw.url, "upstream.url", o)?,
        ca_file,
        connect_timeout: duration(
            raw.connect_timeout,
            Duration::from_secs(3),
            "upstream.connect_timeout",
            o,
        )?,
        response_timeout: duration(
            raw.response_timeout,
            Duration::from_secs(60),
            "upstream.response_timeout",
            o,
        )?,
        pool_idle_timeout: duration(
            raw.pool_idle_timeout,
            Duration::from_secs(90),
            "upstream.pool_idle_timeout",
            o,
        )?,
        pool_max_idle_per_host: raw.pool_max_idle_per_host.unwrap_or(DEFAULT_POOL_MAX_IDLE),
    })
}

/// Idle upstream connections kept by default. Each request in flight to the PBX holds an
/// HTTP/1.1 connection of its own, and one HTTP/2 client alone may have 256 streams open: a
/// pool smaller than what is in flight closes connections that the next requests open again
/// (measured: a pool of 64 under 320 streams opened ~7,000 connections a second and cost
/// the proxy a quarter of its throughput).
const DEFAULT_POOL_MAX_IDLE: usize = 512;

fn server(raw: RawServer, o: &Origin<'_>) -> Result<ServerLimits, ConfigError> {
    let slow = slow_clients(&raw, o)?;
    let mut trusted = Vec::new();
    for (i, net) in raw.trusted_proxies.unwrap_or_default().iter().enumerate() {
        let parsed: IpNetwork = net
            .parse()
            .map_err(|m| o.invalid(&format!("server.trusted_proxies[{i}]"), m))?;
        trusted.push(parsed);
    }
    let max_header_bytes = raw.max_header_bytes.unwrap_or(64 * 1024);
    if !(8192..=1024 * 1024).contains(&max_header_bytes) {
        return Err(o.invalid(
            "server.max_header_bytes",
            "must be between 8192 and 1048576",
        ));
    }
    let threads = match raw.threads {
        Some(0) => return Err(o.invalid("server.threads", "must be at least 1")),
        Some(n) if n > 1024 => return Err(o.invalid("server.threads", "must be at most 1024")),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    Ok(ServerLimits {
        threads,
        max_connections: match raw.max_connections {
            Some(0) => return Err(o.invalid("server.max_connections", "must be at least 1")),
            Some(n) => n,
            None => 10_000,
        },
        tls_handshake_timeout: duration(
            raw.tls_handshake_timeout,
            Duration::from_secs(10),
            "server.tls_handshake_timeout",
            o,
        )?,
        header_read_timeout: duration(
            raw.header_read_timeout,
            Duration::from_secs(15),
            "server.header_read_timeout",
            o,
        )?,
        idle_timeout: duration(
            raw.idle_timeout,
            Duration::from_secs(120),
            "server.idle_timeout",
            o,
        )?,
        max_header_bytes,
        shutdown_grace: duration(
            raw.shutdown_grace,
            Duration::from_secs(30),
            "server.shutdown_grace",
            o,
        )?,
        cert_reload_interval: duration(
            raw.cert_reload_interval,
            Duration::from_secs(10),
            "server.cert_reload_interval",
            o,
        )?,
        trusted_proxies: trusted,
        slow,
    })
}

fn slow_clients(raw: &RawServer, o: &Origin<'_>) -> Result<super::SlowClientLimits, ConfigError> {
    let d = |v: &Option<String>, default: u64, key: &str| {
        duration(v.clone(), Duration::from_secs(default), key, o)
    };
    Ok(super::SlowClientLimits {
        body_min_rate: raw.body_min_rate.unwrap_or(1024),
        body_grace: d(&raw.body_grace, 10, "server.body_grace")?,
        send_timeout: d(&raw.send_timeout, 60, "server.send_timeout")?,
        websocket_idle_timeout: d(
            &raw.websocket_idle_timeout,
            300,
            "server.websocket_idle_timeout",
        )?,
    })
}

fn sync(raw: super::raw::RawSync, o: &Origin<'_>) -> Result<super::SyncConfig, ConfigError> {
    let lease_ttl = duration(raw.lease_ttl, Duration::from_secs(60), "sync.lease_ttl", o)?;
    if lease_ttl < Duration::from_secs(3) {
        return Err(o.invalid("sync.lease_ttl", "must be at least 3s"));
    }
    let check = duration(
        raw.schedule_check_interval,
        Duration::from_secs(30),
        "sync.schedule_check_interval",
        o,
    )?;
    if check < Duration::from_millis(100) || check > Duration::from_secs(60) {
        return Err(o.invalid(
            "sync.schedule_check_interval",
            "must be between 100ms and 60s",
        ));
    }
    let subscriptions = duration(
        raw.subscription_check_interval,
        Duration::from_secs(30),
        "sync.subscription_check_interval",
        o,
    )?;
    if subscriptions < Duration::from_millis(100) || subscriptions > Duration::from_secs(3600) {
        return Err(o.invalid(
            "sync.subscription_check_interval",
            "must be between 100ms and 1h",
        ));
    }
    let concurrency = raw.concurrency.unwrap_or(2);
    if concurrency == 0 {
        return Err(o.invalid("sync.concurrency", "must be at least 1"));
    }
    Ok(super::SyncConfig {
        lease_ttl,
        schedule_check_interval: check,
        subscription_check_interval: subscriptions,
        concurrency,
    })
}

fn sso(raw: super::raw::RawSso, o: &Origin<'_>) -> Result<SsoConfig, ConfigError> {
    let mut protected = Vec::new();
    for (i, p) in raw
        .protected_paths
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        if !p.starts_with('/') {
            return Err(o.invalid(&format!("sso.protected_paths[{i}]"), "must start with /"));
        }
        protected.push(p);
    }
    let lifetime = duration(
        raw.session_lifetime,
        Duration::from_secs(8 * 3600),
        "sso.session_lifetime",
        o,
    )?;
    if lifetime < Duration::from_secs(60) {
        return Err(o.invalid("sso.session_lifetime", "must be at least 1m"));
    }
    Ok(SsoConfig {
        session_lifetime: lifetime,
        protected_paths: super::ProtectedPaths::new(
            &protected,
            raw.protected_paths_ignore_case.unwrap_or(true),
        ),
        forward_session_token: raw.forward_session_token.unwrap_or(false),
        login_rate_per_minute: match raw.login_rate_per_minute {
            Some(0) => return Err(o.invalid("sso.login_rate_per_minute", "must be at least 1")),
            Some(n) => n,
            None => 60,
        },
        end_session_at_microsoft: raw.end_session_at_microsoft.unwrap_or(false),
    })
}

fn clouds(
    raw: BTreeMap<String, RawCloud>,
    o: &Origin<'_>,
) -> Result<BTreeMap<String, CloudOverride>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, c) in raw {
        if !CLOUD_NAMES.contains(&name.as_str()) {
            return Err(o.invalid(
                &format!("clouds.{name}"),
                format!(
                    "unknown national cloud; use one of {}",
                    CLOUD_NAMES.join(", ")
                ),
            ));
        }
        let url = |v: Option<String>, k: &str| -> Result<Option<Uri>, ConfigError> {
            v.map(|u| endpoint_url(&u, &format!("clouds.{name}.{k}"), o))
                .transpose()
        };
        let login = url(c.login, "login")?;
        let graph = url(c.graph, "graph")?;
        out.insert(name, CloudOverride { login, graph });
    }
    Ok(out)
}

/// Tenant ids: 1-64 letters, digits, '-' or '_' (they appear in paths and file names).
fn tenants(raw: Vec<RawTenant>, o: &Origin<'_>) -> Result<Vec<TenantSeed>, ConfigError> {
    let (mut ids, mut domains) = (HashSet::new(), HashSet::new());
    let mut out = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("tenant[{i}].{k}");
        let id = TenantId::parse(&t.id).map_err(|_| o.invalid(&key("id"), TenantId::RULE))?;
        let domain = server_name(&t.domain).map_err(|m| o.invalid(&key("domain"), m))?;
        if !ids.insert(id.clone()) {
            return Err(o.invalid(&key("id"), format!("`{id}` appears twice")));
        }
        if !domains.insert(domain.clone()) {
            return Err(o.invalid(&key("domain"), format!("`{domain}` appears twice")));
        }
        let pbx_login = super::pbx::tenant_login(&t, i, o)?;
        let name = t.name.unwrap_or_else(|| t.id.clone());
        out.push(TenantSeed {
            id,
            domain,
            name,
            pbx_login,
        });
    }
    Ok(out)
}

pub(super) fn duration(
    v: Option<String>,
    default: Duration,
    key: &str,
    o: &Origin<'_>,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(text) => match parse_duration(&text) {
            Ok(d) if d.is_zero() => Err(o.invalid(key, "must be more than zero")),
            Ok(d) => Ok(d),
            Err(m) => Err(o.invalid(key, m)),
        },
    }
}

fn socket_addr(text: &str, key: &str, o: &Origin<'_>) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        o.invalid(
            key,
            format!("`{text}` is not an address like \"0.0.0.0:443\" or \"[::]:8883\""),
        )
    })
}

fn parse_uri(text: &str, key: &str, o: &Origin<'_>) -> Result<Uri, ConfigError> {
    let uri: Uri = text
        .parse()
        .map_err(|_| o.invalid(key, format!("`{text}` is not a URL")))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(o.invalid(key, format!("`{text}` has no host")));
    }
    Ok(uri)
}

/// An external origin: `https://host[:port]`, no path; plain http only for loopback hosts.
fn public_url(text: &str, key: &str, o: &Origin<'_>) -> Result<String, ConfigError> {
    let uri = endpoint_url(text, key, o)?;
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(o.invalid(key, "must be an origin (scheme, host, port) without a path"));
    }
    Ok(text.trim_end_matches('/').to_string())
}

/// A URL the gateway calls or hands out: https, or http on a loopback host.
fn endpoint_url(text: &str, key: &str, o: &Origin<'_>) -> Result<Uri, ConfigError> {
    let uri = parse_uri(text, key, o)?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback_host(uri.host().unwrap_or_default()) => Ok(uri),
        Some("http") => Err(o.invalid(
            key,
            "plain http is allowed only for loopback hosts; use https",
        )),
        _ => Err(o.invalid(key, format!("`{text}` must start with https://"))),
    }
}

/// The PBX: http or https, any host (it usually sits on the same machine or a private network).
fn upstream_url(text: &str, key: &str, o: &Origin<'_>) -> Result<Uri, ConfigError> {
    let uri = parse_uri(text, key, o)?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(o.invalid(key, format!("`{text}` must start with http:// or https://")));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(o.invalid(key, "must not have a path; requests keep their own"));
    }
    Ok(uri)
}

pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
