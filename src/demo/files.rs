//! The demo's data folder: the folder itself, the system administrator token
//! (`admin.token`) and the demo PBX administrator's password (`pbx-admin.password`), both
//! kept across runs, and `gateway.toml` (rewritten at every start, because
//! the emulator and the demo PBX get new ports each run), plus choosing concrete ports for
//! listeners asked for on port 0 (their `public_url` must name the real port).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use base64::Engine;

use super::{DemoError, SIP_DOMAIN, TENANT_ID};

/// Name of the configuration file in the data folder.
pub const CONFIG_FILE: &str = "gateway.toml";
/// Name of the system administrator token file in the data folder.
pub const TOKEN_FILE: &str = "admin.token";
/// Name of the demo PBX administrator's password file in the data folder.
pub const PBX_PASSWORD_FILE: &str = "pbx-admin.password";

/// Where the gateway listens.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub pbx: SocketAddr,
    pub sbc: SocketAddr,
    pub admin: SocketAddr,
}

/// Creates the data folder and returns its absolute path.
pub fn prepare_data_dir(dir: &Path) -> Result<PathBuf, DemoError> {
    let what = || format!("data folder {}", dir.display());
    std::fs::create_dir_all(dir).map_err(DemoError::io(what()))?;
    std::fs::canonicalize(dir).map_err(DemoError::io(what()))
}

/// The token in `data_dir/admin.token`, generated (32 random bytes, base64url) when the file
/// is missing or does not hold a usable token.
pub fn ensure_admin_token(data_dir: &Path) -> Result<String, DemoError> {
    ensure_secret(&data_dir.join(TOKEN_FILE))
}

/// The demo PBX administrator's password in `data_dir/pbx-admin.password`, made like the
/// admin token; the demo's `gateway.toml` names the file as the tenant's `pbx_password_file`.
pub fn ensure_pbx_password(data_dir: &Path) -> Result<String, DemoError> {
    ensure_secret(&data_dir.join(PBX_PASSWORD_FILE))
}

/// A secret kept in an owner-only file, (re)generated when the file is missing or does not
/// hold a usable one.
fn ensure_secret(path: &Path) -> Result<String, DemoError> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let token = text.trim();
        if token.len() >= crate::admin::MIN_SYSTEM_TOKEN_LEN && !token.contains(char::is_whitespace)
        {
            return Ok(token.to_string());
        }
        tracing::warn!(file = %path.display(), "unusable secret; writing a new one");
    }
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| DemoError::Io {
        what: "the system random source".into(),
        source: std::io::Error::other("no random bytes"),
    })?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    crate::fsutil::write_private(path, format!("{token}\n").as_bytes())
        .map_err(DemoError::io(format!("writing {}", path.display())))?;
    Ok(token)
}

/// `port`, or for 0 a port that was free a moment ago (bound and released at once: the
/// listener's `public_url`, and so the redirect URI registered at the emulator, must name
/// the real port before the gateway binds it).
pub fn resolve_port(ip: IpAddr, port: u16) -> Result<u16, DemoError> {
    if port != 0 {
        return Ok(port);
    }
    let probe = std::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|l| l.local_addr())
        .map_err(DemoError::io(format!("finding a free port on {ip}")))?;
    Ok(probe.port())
}

/// The origin browsers use for a listener: an unspecified bind address reads as loopback.
pub fn public_url(addr: SocketAddr) -> String {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("https://{addr}")
}

/// Writes `data_dir/gateway.toml` and returns its path.
pub fn write_config(
    data_dir: &Path,
    ports: &Ports,
    upstream_url: &str,
    emulator_url: &str,
) -> Result<PathBuf, DemoError> {
    let path = data_dir.join(CONFIG_FILE);
    let text = config_text(data_dir, ports, upstream_url, emulator_url);
    std::fs::write(&path, text).map_err(DemoError::io(format!("writing {}", path.display())))?;
    Ok(path)
}

/// The configuration of the demo, commented for an administrator who opens it.
pub fn config_text(
    data_dir: &Path,
    ports: &Ports,
    upstream_url: &str,
    emulator_url: &str,
) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let path = |p: PathBuf| q(&p.to_string_lossy());
    format!(
        r#"# Written by `ms365-gateway demo` at every start: the Entra ID + Graph emulator and the
# demo PBX listen on new ports each run. Check it with
#   ms365-gateway check-config --config {config}
# The tenant's Microsoft 365 settings live in the database (admin page, /api/ms365).

data_dir = {data_dir}

[[listener]]
kind = "pbx"
bind = {pbx}
public_url = {pbx_url}
tls_cert = "self-signed"

[[listener]]
kind = "sbc"
bind = {sbc}
public_url = {sbc_url}
tls_cert = "self-signed"

# The built-in demo PBX (portal and WebRTC client stand-ins).
[upstream]
url = {upstream}

[admin]
bind = {admin}
token_file = {token_file}

[server]
shutdown_grace = "5s"

# The sync writes to the demo PBX's REST API (the PortSIP stand-in at [upstream] url + /api).
[pbx]
kind = "portsip"

# The emulator plays both Microsoft hosts.
[clouds.GLOBAL]
login = {emulator}
graph = {emulator}

[[tenant]]
id = {tenant}
domain = {domain}
name = "Contoso (demo)"
pbx_username = {pbx_admin}
pbx_password_file = {pbx_password}
"#,
        config = data_dir.join(CONFIG_FILE).display(),
        data_dir = path(data_dir.to_path_buf()),
        pbx = q(&ports.pbx.to_string()),
        pbx_url = q(&public_url(ports.pbx)),
        sbc = q(&ports.sbc.to_string()),
        sbc_url = q(&public_url(ports.sbc)),
        upstream = q(upstream_url),
        admin = q(&ports.admin.to_string()),
        token_file = path(data_dir.join(TOKEN_FILE)),
        emulator = q(emulator_url),
        tenant = q(TENANT_ID),
        domain = q(SIP_DOMAIN),
        pbx_admin = q(super::upstream::PBX_ADMIN),
        pbx_password = path(data_dir.join(PBX_PASSWORD_FILE)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_configuration_loads() {
        let dir = tempfile::tempdir().unwrap();
        let ports = Ports {
            pbx: "127.0.0.1:8443".parse().unwrap(),
            sbc: "127.0.0.1:8883".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
        };
        let data = dir.path().join("with \"quote\"");
        std::fs::create_dir_all(&data).unwrap();
        ensure_pbx_password(&data).unwrap();
        let text = config_text(&data, &ports, "http://127.0.0.1:1", "http://127.0.0.1:2");
        let config = crate::Config::from_toml(&data.join(CONFIG_FILE), &text, Vec::new()).unwrap();
        assert_eq!(config.data_dir, data);
        assert_eq!(
            config.listeners[1].redirect_uri(),
            "https://127.0.0.1:8883/ms365/redirect"
        );
        assert_eq!(config.tenants[0].domain, SIP_DOMAIN);
        assert_eq!(config.pbx.kind, crate::config::PbxKind::PortSip);
        assert!(config.tenants[0].pbx_login.is_some());
    }

    #[test]
    fn the_admin_token_is_kept_across_runs() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_admin_token(dir.path()).unwrap();
        assert_eq!(first.len(), 43);
        assert_eq!(ensure_admin_token(dir.path()).unwrap(), first);
        std::fs::write(dir.path().join(TOKEN_FILE), "short").unwrap();
        assert_ne!(ensure_admin_token(dir.path()).unwrap(), first);
    }

    #[test]
    fn unspecified_addresses_read_as_loopback() {
        assert_eq!(
            public_url("0.0.0.0:8443".parse().unwrap()),
            "https://127.0.0.1:8443"
        );
        assert_eq!(
            public_url("[::1]:8883".parse().unwrap()),
            "https://[::1]:8883"
        );
    }
}
