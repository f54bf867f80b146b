//! `[pbx]` and the PBX sign-in of each `[[tenant]]`: where the PBX connector writes (a
//! PortSIP v22 REST API, or nothing with the default `embedded`) and as whom. The password
//! file is read here, once; the password then lives in a [`PbxSecret`], which never prints.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;

use super::raw::{RawPbx, RawTenant};
use super::validate::duration;
use super::{ConfigError, Origin, UpstreamConfig};

/// Where the sync's result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PbxKind {
    /// The gateway's own tables only (nothing is pushed).
    #[default]
    Embedded,
    /// A PortSIP PBX through its REST API.
    PortSip,
}

impl PbxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PbxKind::Embedded => "embedded",
            PbxKind::PortSip => "portsip",
        }
    }
}

/// `[pbx]`.
#[derive(Debug, Clone)]
pub struct PbxConfig {
    pub kind: PbxKind,
    /// The REST API base, e.g. `https://pbx.example.com:8887/api`.
    pub api_url: Url,
    /// Extra CA certificates for an https `api_url`.
    pub ca_file: Option<PathBuf>,
    pub request_timeout: Duration,
    /// PBX requests in flight per tenant.
    pub concurrency: usize,
}

/// A password that never appears in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct PbxSecret(String);

impl PbxSecret {
    pub fn new(secret: String) -> PbxSecret {
        PbxSecret(secret)
    }

    /// The password itself, for the one request that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PbxSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for PbxSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The tenant administrator the gateway signs in to the PBX as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbxLogin {
    pub username: String,
    pub password: PbxSecret,
}

/// A login and the file its password came from (for `check-config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPbxLogin {
    pub login: PbxLogin,
    pub password_file: PathBuf,
}

pub(super) fn pbx(
    raw: RawPbx,
    upstream: &UpstreamConfig,
    o: &Origin<'_>,
) -> Result<PbxConfig, ConfigError> {
    let kind = match raw.kind.as_deref().unwrap_or("embedded") {
        "embedded" => PbxKind::Embedded,
        "portsip" => PbxKind::PortSip,
        other => {
            let message = format!("`{other}` is not \"embedded\" or \"portsip\"");
            return Err(o.invalid("pbx.kind", message));
        }
    };
    let default_url = format!("{}/api", upstream.url.to_string().trim_end_matches('/'));
    let text = raw.api_url.unwrap_or(default_url);
    let api_url = api_url(&text).map_err(|m| o.invalid("pbx.api_url", m))?;
    let concurrency = raw.concurrency.unwrap_or(8);
    if !(1..=64).contains(&concurrency) {
        return Err(o.invalid("pbx.concurrency", "must be between 1 and 64"));
    }
    let ca_file = raw.ca_file.map(PathBuf::from);
    if let Some(path) = &ca_file
        && let Err(e) = std::fs::File::open(path)
    {
        let message = format!("cannot read {}: {e}", path.display());
        return Err(o.invalid("pbx.ca_file", message));
    }
    Ok(PbxConfig {
        kind,
        api_url,
        ca_file,
        request_timeout: duration(
            raw.request_timeout,
            Duration::from_secs(15),
            "pbx.request_timeout",
            o,
        )?,
        concurrency,
    })
}

/// The REST API base: http(s) with a host. No credentials (they belong in the password
/// file, and the URL is printed), no query or fragment (paths are appended to it).
fn api_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    // The URL standard reads `http:///api` as host `api`; a missing host is a typo.
    let written_host = text
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.starts_with('/'));
    if !matches!(url.scheme(), "http" | "https") || !written_host {
        return Err(format!("`{text}` is not an http(s) URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        let message = "must not carry a username or password; use pbx_username and \
                       pbx_password_file of each [[tenant]]";
        return Err(message.into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{text}` must not have a query or fragment"));
    }
    Ok(url)
}

/// A tenant's `pbx_username` + `pbx_password_file`, which come together.
pub(super) fn tenant_login(
    t: &RawTenant,
    index: usize,
    o: &Origin<'_>,
) -> Result<Option<TenantPbxLogin>, ConfigError> {
    let key = |k: &str| format!("tenant[{index}].{k}");
    let (username, file) = match (&t.pbx_username, &t.pbx_password_file) {
        (None, None) => return Ok(None),
        (Some(u), Some(f)) => (u.trim().to_string(), PathBuf::from(f)),
        (Some(_), None) => {
            return Err(o.invalid(&key("pbx_password_file"), "is required with pbx_username"));
        }
        (None, Some(_)) => {
            return Err(o.invalid(&key("pbx_username"), "is required with pbx_password_file"));
        }
    };
    if username.is_empty() || username.len() > 64 {
        return Err(o.invalid(&key("pbx_username"), "must be 1-64 characters"));
    }
    let password = read_password(&file).map_err(|m| o.invalid(&key("pbx_password_file"), m))?;
    Ok(Some(TenantPbxLogin {
        login: PbxLogin {
            username,
            password: PbxSecret::new(password),
        },
        password_file: file,
    }))
}

/// The first line of the file, without its line ending.
fn read_password(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{} cannot be read: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    warn_if_shared(path);
    Ok(line.to_string())
}

#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(file = %path.display(), "the PBX password file is readable by others; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};

    /// A valid file with `extra` appended (`[pbx]`, `[[tenant]]` tables).
    fn load(extra: &str) -> Result<Config, ConfigError> {
        let toml = format!(
            "[[listener]]\nkind = \"pbx\"\nbind = \"127.0.0.1:0\"\npublic_url = \"https://pbx.test\"\n\
             tls_cert = \"self-signed\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n{extra}"
        );
        Config::from_toml(Path::new("gw.toml"), &toml, Vec::new())
    }

    fn rejected(extra: &str) -> (String, String) {
        match load(extra) {
            Err(ConfigError::Invalid { key, message, .. }) => (key, message),
            other => panic!("expected a rejected key, got {other:?}"),
        }
    }

    fn tenant(lines: &str) -> String {
        format!("[[tenant]]\nid = \"acme\"\ndomain = \"acme.test\"\n{lines}")
    }

    fn password_file(dir: &Path, text: &str) -> String {
        let path = dir.join("acme.pbx-password");
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn defaults_push_nothing_and_derive_the_api_from_the_upstream() {
        let config = load(&tenant("")).unwrap();
        let pbx = &config.pbx;
        assert_eq!(pbx.kind, PbxKind::Embedded);
        assert_eq!(pbx.api_url.as_str(), "http://127.0.0.1:9/api");
        assert_eq!(pbx.request_timeout, Duration::from_secs(15));
        assert_eq!((pbx.concurrency, pbx.ca_file.as_ref()), (8, None));
        assert!(config.tenants[0].pbx_login.is_none());
    }

    #[test]
    fn a_portsip_pbx_with_its_sign_in() {
        let dir = tempfile::tempdir().unwrap();
        let file = password_file(dir.path(), "s3cret-Pass\n");
        let extra = format!(
            "[pbx]\nkind = \"portsip\"\napi_url = \"https://pbx.acme.test:8887/api\"\n\
             request_timeout = \"5s\"\nconcurrency = 3\n\
             {}",
            tenant(&format!(
                "pbx_username = \"admin\"\npbx_password_file = \"{file}\"\n"
            ))
        );
        let config = load(&extra).unwrap();
        assert_eq!(config.pbx.kind, PbxKind::PortSip);
        assert_eq!(
            config.pbx.api_url.as_str(),
            "https://pbx.acme.test:8887/api"
        );
        assert_eq!(config.pbx.request_timeout, Duration::from_secs(5));
        assert_eq!(config.pbx.concurrency, 3);
        let login = config.tenants[0].pbx_login.as_ref().unwrap();
        assert_eq!(login.login.username, "admin");
        assert_eq!(login.login.password.expose(), "s3cret-Pass");
        assert_eq!(login.password_file, PathBuf::from(&file));
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cret"),
            "Debug shows the password: {shown}"
        );
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn bad_api_urls_are_named() {
        for url in [
            "ftp://pbx/api",
            "pbx.acme.test/api",
            "http:///api",
            "https://admin:pw@pbx.test/api",
            "https://pbx.test/api?x=1",
        ] {
            let (key, message) = rejected(&format!("[pbx]\napi_url = \"{url}\"\n"));
            assert_eq!(key, "pbx.api_url", "{url}");
            assert!(!message.contains(":pw@"), "{message}");
        }
        let (key, _) = rejected("[pbx]\nkind = \"freepbx\"\n");
        assert_eq!(key, "pbx.kind");
        for n in [0, 65] {
            let (key, _) = rejected(&format!("[pbx]\nconcurrency = {n}\n"));
            assert_eq!(key, "pbx.concurrency");
        }
        let (key, _) = rejected("[pbx]\nrequest_timeout = \"soon\"\n");
        assert_eq!(key, "pbx.request_timeout");
        let (key, message) = rejected("[pbx]\nca_file = \"/nowhere/ca.pem\"\n");
        assert_eq!(key, "pbx.ca_file");
        assert!(message.contains("/nowhere/ca.pem"), "{message}");
    }

    #[test]
    fn the_password_file_must_exist_and_hold_a_password() {
        let (key, message) = rejected(&tenant(
            "pbx_username = \"admin\"\npbx_password_file = \"/nowhere/acme.pbx-password\"\n",
        ));
        assert_eq!(key, "tenant[0].pbx_password_file");
        assert!(message.contains("/nowhere/acme.pbx-password"), "{message}");
        let dir = tempfile::tempdir().unwrap();
        let file = password_file(dir.path(), "\n");
        let lines = format!("pbx_username = \"admin\"\npbx_password_file = \"{file}\"\n");
        let (key, message) = rejected(&tenant(&lines));
        assert_eq!(key, "tenant[0].pbx_password_file");
        assert!(message.contains("empty"), "{message}");
    }

    #[test]
    fn username_and_password_file_come_together() {
        let (key, _) = rejected(&tenant("pbx_username = \"admin\"\n"));
        assert_eq!(key, "tenant[0].pbx_password_file");
        let dir = tempfile::tempdir().unwrap();
        let file = password_file(dir.path(), "pw\n");
        let (key, _) = rejected(&tenant(&format!("pbx_password_file = \"{file}\"\n")));
        assert_eq!(key, "tenant[0].pbx_username");
        let (key, message) = rejected(&format!("[pbx]\nkind = \"portsip\"\n{}", tenant("")));
        assert_eq!(key, "tenant[0].pbx_username");
        assert!(message.contains("portsip"), "{message}");
    }

    #[test]
    fn secrets_never_print() {
        let login = PbxLogin {
            username: "admin".into(),
            password: PbxSecret::new("hunter2-but-longer".into()),
        };
        let shown = format!("{login:?} {}", login.password);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(login.password.expose(), "hunter2-but-longer");
    }

    #[test]
    fn the_password_is_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        std::fs::write(&path, "line one\r\nline two\n").unwrap();
        assert_eq!(read_password(&path).unwrap(), "line one");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_password(&path).unwrap_err().contains("empty"));
        assert!(read_password(&dir.path().join("none")).is_err());
    }
}
