//! `[store]`: which database the gateway uses. Without `database_url` it is SQLite in
//! `data_dir`; `database_url = "postgres://…"` selects PostgreSQL (shared by several
//! instances). The URL may carry a password, so [`DatabaseUrl`] never shows it: its `Debug`
//! and `Display` print `user:***@`, and so does every message built from it.
//! `master_key_file` names the file of the master key sealing the keys kept in the store.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use percent_encoding::AsciiSet;
use sqlx::postgres::PgConnectOptions;

use super::raw::RawStore;
use super::validate::duration;
use super::{ConfigError, Origin, StoreConfig};
use crate::encoding;

/// The config key, for messages.
pub const DATABASE_URL_KEY: &str = "store.database_url";

/// A PostgreSQL connection URL whose password stays out of logs and messages.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL as written, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }

    /// How the connection is protected, in words (`check-config`, the start-up warning).
    pub fn transport(&self) -> DatabaseTransport {
        let options = PgConnectOptions::from_str(&self.0).ok();
        let host = options.as_ref().map(|o| o.get_host().to_string());
        if host.as_deref().is_some_and(|h| h.starts_with('/')) {
            return DatabaseTransport::LocalSocket;
        }
        let param = |name: &str| {
            let query = self.0.split_once('?').map(|(_, q)| q).unwrap_or("");
            (query.split('&'))
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        match param("sslmode").as_deref() {
            Some("disable") => DatabaseTransport::Plain,
            Some("require") => DatabaseTransport::EncryptedUnverified,
            Some("verify-ca") => DatabaseTransport::VerifiedCa,
            Some("verify-full") => DatabaseTransport::Verified {
                ca: param("sslrootcert"),
            },
            _ => DatabaseTransport::Opportunistic,
        }
    }

    /// The URL with `sslrootcert` set to `ca_file` (`[store] ca_file`).
    fn with_root_cert(self, ca_file: &str) -> DatabaseUrl {
        const PATH_VALUE: &AsciiSet = &encoding::NOT_UNRESERVED.remove(b'/');
        let encoded = encoding::percent_encode(ca_file, PATH_VALUE);
        let sep = if self.0.contains('?') { '&' } else { '?' };
        DatabaseUrl(format!("{}{sep}sslrootcert={encoded}", self.0))
    }

    /// `host:port` (or the socket directory) the URL points at, for messages.
    pub fn host(&self) -> String {
        match PgConnectOptions::from_str(&self.0) {
            Ok(o) => format!("{}:{}", o.get_host(), o.get_port()),
            Err(_) => "an unparsable address".to_string(),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// How the database connection is protected (libpq's `sslmode`, sqlx defaults to `prefer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTransport {
    /// A Unix socket on this machine.
    LocalSocket,
    /// `sslmode=disable`.
    Plain,
    /// `prefer`/`allow` (or unset): TLS when the server offers it, silently plain otherwise,
    /// and a man in the middle can make it plain.
    Opportunistic,
    /// `require`: encrypted, the server's certificate not checked.
    EncryptedUnverified,
    /// `verify-ca`: the certificate checked against the CA, not the host name.
    VerifiedCa,
    /// `verify-full`: certificate and host name checked (against `ca`, or the system roots).
    Verified { ca: Option<String> },
}

impl DatabaseTransport {
    /// Whether a man in the middle could read or change the traffic.
    pub fn is_verified(&self) -> bool {
        matches!(
            self,
            DatabaseTransport::LocalSocket | DatabaseTransport::Verified { .. }
        )
    }
}

impl fmt::Display for DatabaseTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseTransport::LocalSocket => f.write_str("local socket (not over the network)"),
            DatabaseTransport::Plain => f.write_str("NOT encrypted (sslmode=disable)"),
            DatabaseTransport::Opportunistic => f.write_str(
                "encrypted only if the server offers TLS, not verified (sslmode=prefer); add sslmode=verify-full and [store] ca_file",
            ),
            DatabaseTransport::EncryptedUnverified => f.write_str(
                "encrypted, server certificate not verified (sslmode=require); use sslmode=verify-full",
            ),
            DatabaseTransport::VerifiedCa => {
                f.write_str("encrypted, certificate verified, host name not (sslmode=verify-ca)")
            }
            DatabaseTransport::Verified { ca: Some(ca) } => {
                write!(f, "encrypted and verified (sslmode=verify-full, CA {ca})")
            }
            DatabaseTransport::Verified { ca: None } => {
                f.write_str("encrypted and verified (sslmode=verify-full, system CA roots)")
            }
        }
    }
}

/// Hides the password of a database URL: `user:secret@` and `password=secret` become `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    // The authority ends at the first `/`, `?` or `#`; its last `@` ends the user info.
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let mut out = match url[scheme_end..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &url[scheme_end..scheme_end + at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!(
                    "{}{user}:***{}",
                    &url[..scheme_end],
                    &url[scheme_end + at..]
                ),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    };
    if let Some(q) = out.find('?') {
        let query: Vec<String> = out[q + 1..]
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out = format!("{}?{}", &out[..q], query.join("&"));
    }
    out
}

/// Validates `[store]`.
pub(super) fn store(raw: RawStore, o: &Origin<'_>) -> Result<StoreConfig, ConfigError> {
    let max_connections = match raw.max_connections {
        Some(0) => return Err(o.invalid("store.max_connections", "must be at least 1")),
        Some(n) => n,
        None => 8,
    };
    let connect_timeout = duration(
        raw.connect_timeout,
        Duration::from_secs(10),
        "store.connect_timeout",
        o,
    )?;
    let mut database_url = raw
        .database_url
        .map(|url| database_url(url, o))
        .transpose()?;
    if let Some(ca) = raw.ca_file {
        let key = "store.ca_file";
        std::fs::File::open(&ca).map_err(|e| o.invalid(key, format!("cannot read {ca}: {e}")))?;
        let Some(url) = database_url.take() else {
            return Err(o.invalid(key, "only applies with store.database_url (PostgreSQL)"));
        };
        database_url = Some(url.with_root_cert(&ca));
    }
    let master_key_file = raw
        .master_key_file
        .map(|path| master_key_file(path, o))
        .transpose()?;
    Ok(StoreConfig {
        max_connections,
        database_url,
        connect_timeout,
        master_key_file,
    })
}

/// The key file must be readable now; its contents are checked when the keyring opens.
fn master_key_file(path: String, o: &Origin<'_>) -> Result<PathBuf, ConfigError> {
    let key = "store.master_key_file";
    if path.trim().is_empty() {
        return Err(o.invalid(key, "must name a file"));
    }
    match std::fs::File::open(&path) {
        Ok(_) => Ok(PathBuf::from(path)),
        Err(e) => Err(o.invalid(key, format!("cannot read {path}: {e}"))),
    }
}

fn database_url(url: String, o: &Origin<'_>) -> Result<DatabaseUrl, ConfigError> {
    let url = DatabaseUrl(url.trim().to_string());
    let scheme = url.0.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("postgres" | "postgresql")) {
        return Err(o.invalid(
            DATABASE_URL_KEY,
            format!(
                "`{}` is not a postgres:// URL (leave the key out to use SQLite in data_dir)",
                url.redacted()
            ),
        ));
    }
    match PgConnectOptions::from_str(url.expose()) {
        Ok(_) => Ok(url),
        Err(e) => Err(o.invalid(
            DATABASE_URL_KEY,
            format!("`{}` is not a valid PostgreSQL URL: {e}", url.redacted()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(store: &str, vars: &[(&str, &str)]) -> Result<super::super::Config, ConfigError> {
        let toml = format!(
            "[[listener]]\nkind = \"pbx\"\nbind = \"127.0.0.1:0\"\npublic_url = \"https://pbx.test\"\n\
             tls_cert = \"self-signed\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n{store}"
        );
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        super::super::Config::from_toml(std::path::Path::new("gw.toml"), &toml, vars)
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=secret&sslmode=disable"),
            "postgres://h/db?user=u&password=***&sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_url("postgres://u:secret@h/db?options=a@b"),
            "postgres://u:***@h/db?options=a@b"
        );
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[test]
    fn the_link_is_described_by_sslmode_and_the_ca_file_joins_the_url() {
        let t = |url: &str| DatabaseUrl(url.into()).transport();
        assert_eq!(t("postgres://u@db/x"), DatabaseTransport::Opportunistic);
        assert_eq!(
            t("postgres://u@db/x?sslmode=disable"),
            DatabaseTransport::Plain
        );
        assert_eq!(
            t("postgres://u@db/x?sslmode=require"),
            DatabaseTransport::EncryptedUnverified
        );
        assert!(!t("postgres://u@db/x?sslmode=require").is_verified());
        assert!(t("postgres://u@db/x?SSLMODE=verify-full").is_verified());
        assert!(
            t("postgres://u@%2Fvar%2Frun%2Fpostgresql/x").is_verified(),
            "a local socket"
        );
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("root ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let store = format!(
            "[store]\ndatabase_url = \"postgres://u:pw@db/x?sslmode=verify-full\"\nca_file = \"{}\"\nmaster_key_file = \"{}\"",
            ca.display(),
            ca.display()
        );
        let config = load(&store, &[]).unwrap();
        let url = config.store.database_url.unwrap();
        assert!(
            url.expose().contains("sslrootcert=") && url.expose().contains("root%20ca.pem"),
            "{}",
            url.expose()
        );
        assert!(
            url.transport().to_string().contains("root%20ca.pem"),
            "{}",
            url.transport()
        );
        let err = load("[store]\nca_file = \"/nonexistent/ca.pem\"", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("store.ca_file"), "{err}");
    }

    #[test]
    fn sqlite_is_the_default() {
        let config = load("", &[]).unwrap();
        assert!(config.store.database_url.is_none());
        assert_eq!(config.store.max_connections, 8);
        assert_eq!(config.store.connect_timeout, Duration::from_secs(10));
        assert!(config.store.master_key_file.is_none());
    }

    #[test]
    fn master_key_file_must_be_readable_and_may_come_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("master.key");
        std::fs::write(&file, "k").unwrap();
        let path = file.display().to_string();
        let config = load(&format!("[store]\nmaster_key_file = \"{path}\"\n"), &[]).unwrap();
        assert_eq!(
            config.store.master_key_file.as_deref(),
            Some(file.as_path())
        );
        let config = load("", &[("MS365GW_STORE__MASTER_KEY_FILE", &path)]).unwrap();
        assert_eq!(config.store.master_key_file, Some(file.clone()));
        let missing = dir.path().join("nope").display().to_string();
        let msg = load("", &[("MS365GW_STORE__MASTER_KEY_FILE", &missing)])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("store.master_key_file") && msg.contains(&missing),
            "{msg}"
        );
        assert!(msg.contains("MS365GW_STORE__MASTER_KEY_FILE"), "{msg}");
        let config = load("", &[("MS365GW_MASTER_KEY", "not a config key")]).unwrap();
        assert!(
            config.store.master_key_file.is_none(),
            "MS365GW_MASTER_KEY is no override"
        );
    }

    #[test]
    fn postgres_url_is_read_and_never_shown() {
        let config = load(
            "[store]\ndatabase_url = \"postgres://gw:hunter2@db.internal:6432/gateway\"\nconnect_timeout = \"2s\"\n",
            &[],
        )
        .unwrap();
        let url = config.store.database_url.as_ref().unwrap();
        assert_eq!(
            url.expose(),
            "postgres://gw:hunter2@db.internal:6432/gateway"
        );
        assert_eq!(url.host(), "db.internal:6432");
        assert_eq!(config.store.connect_timeout, Duration::from_secs(2));
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("postgres://gw:***@db.internal:6432/gateway"));
        assert!(!url.to_string().contains("hunter2"));
    }

    #[test]
    fn environment_override_selects_postgres() {
        let config = load(
            "",
            &[(
                "MS365GW_STORE__DATABASE_URL",
                "postgresql://u@127.0.0.1/test",
            )],
        )
        .unwrap();
        let url = config.store.database_url.unwrap();
        assert_eq!(url.expose(), "postgresql://u@127.0.0.1/test");
    }

    #[test]
    fn other_schemes_are_refused_without_the_password() {
        for (url, vars) in [
            ("mysql://u:hunter2@h/db", vec![]),
            ("sqlite://data/gw.db", vec![]),
            ("postgres://u:hunter2@h:notaport/db", vec![]),
        ] {
            let store = format!("[store]\ndatabase_url = \"{url}\"\n");
            let msg = load(&store, &vars).unwrap_err().to_string();
            assert!(msg.starts_with("gw.toml"), "{msg}");
            assert!(msg.contains("store.database_url"), "{msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
        let msg = load(
            "",
            &[("MS365GW_STORE__DATABASE_URL", "redis://u:hunter2@h")],
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("MS365GW_STORE__DATABASE_URL"), "{msg}");
        assert!(
            msg.contains("store.database_url") && !msg.contains("hunter2"),
            "{msg}"
        );
    }
}
