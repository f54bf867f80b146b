//! `check-config`: validates a configuration the way start-up does (certificates included)
//! and describes what would run, without binding sockets or touching the database.

use std::fmt::Write;

use crate::config::{CertSource, Config};
use crate::edge::tls::{self, TlsError};

/// Loads every certificate file and returns a human-readable summary.
pub fn describe(config: &Config) -> Result<String, TlsError> {
    let provider = tls::crypto_provider();
    let mut out = String::new();
    let _ = writeln!(out, "configuration {} is valid", config.source.display());
    let _ = writeln!(out, "data_dir: {}", config.data_dir.display());
    let _ = match &config.store.database_url {
        Some(url) => writeln!(
            out,
            "store: PostgreSQL {url}\n  database link: {}",
            url.transport()
        ),
        None => writeln!(
            out,
            "store: SQLite {}",
            config.data_dir.join("gateway.db").display()
        ),
    };
    if let Ok(source) = crate::keyring::source_for(config) {
        let _ = writeln!(out, "master key: {}", source.describe());
    }
    for l in &config.listeners {
        let _ = writeln!(
            out,
            "listener {} on {} ({})",
            l.name(),
            l.bind,
            l.public_url
        );
        let _ = writeln!(out, "  redirect URI: {}", l.redirect_uri());
        let upstream = l.upstream.as_ref().unwrap_or(&config.upstream.url);
        let _ = writeln!(out, "  upstream: {upstream}");
        match &l.tls {
            None => {
                let _ = writeln!(out, "  TLS: off (plain HTTP behind another terminator)");
            }
            Some(t) => {
                let sources = std::iter::once((None, &t.default))
                    .chain(t.sni.iter().map(|s| (Some(&s.server_names), &s.source)));
                for (names, source) in sources {
                    let which =
                        names.map_or("default".to_string(), |n| format!("SNI {}", n.join(", ")));
                    let _ = writeln!(
                        out,
                        "  certificate ({which}): {}",
                        describe_source(&provider, source)?
                    );
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "admin endpoints: http://{}/{{healthz,readyz,metrics}}",
        config.admin.bind
    );
    for (name, c) in &config.clouds {
        let _ = writeln!(
            out,
            "cloud {name}: login {:?}, graph {:?}",
            c.login.as_ref().map(ToString::to_string),
            c.graph.as_ref().map(ToString::to_string)
        );
    }
    match config.pbx.kind {
        crate::config::PbxKind::Embedded => {
            let _ = writeln!(out, "pbx: embedded (the sync stays in the gateway's store)");
        }
        crate::config::PbxKind::PortSip => {
            let _ = writeln!(
                out,
                "pbx: portsip REST API at {} (timeout {:?}, {} requests in flight per tenant)",
                config.pbx.api_url, config.pbx.request_timeout, config.pbx.concurrency
            );
            if let Some(ca) = &config.pbx.ca_file {
                let _ = writeln!(out, "  extra CA certificates: {}", ca.display());
            }
        }
    }
    for t in &config.tenants {
        let _ = writeln!(out, "tenant {} ({}): {}", t.id, t.domain, t.name);
        if let Some(l) = &t.pbx_login {
            let _ = writeln!(
                out,
                "  PBX sign-in: {} (password: set, from {})",
                l.login.username,
                l.password_file.display()
            );
        }
    }
    Ok(out)
}

fn describe_source(
    provider: &rustls::crypto::CryptoProvider,
    source: &CertSource,
) -> Result<String, TlsError> {
    match source {
        CertSource::SelfSigned => {
            Ok("self-signed (generated in data_dir/tls at first start)".into())
        }
        CertSource::Files {
            cert,
            key,
            key_name,
        } => {
            let ck = tls::load_certified_key(provider, cert, key, key_name)?;
            Ok(format!("{} ({} in chain)", cert.display(), ck.cert.len()))
        }
    }
}
