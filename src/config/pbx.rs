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
    let api_url = Url::parse(&text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| o.invalid("pbx.api_url", format!("`{text}` is not an http(s) URL")))?;
    let concurrency = raw.concurrency.unwrap_or(8);
    if !(1..=64).contains(&concurrency) {
        return Err(o.invalid("pbx.concurrency", "must be between 1 and 64"));
    }
    let ca_file = raw.ca_file.map(PathBuf::from);
    if let Some(path) = &ca_file
        && std::fs::metadata(path).is_err()
    {
        let message = format!("{} cannot be read", path.display());
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
