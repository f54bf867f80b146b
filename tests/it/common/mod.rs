//! The fixture: a test CA, certificates, a stub upstream and a gateway started in-process on
//! 127.0.0.1:0 with the same `Gateway::bind` + `run` path the binary uses.

#![allow(dead_code)]

pub mod client;
pub mod db;
pub mod keys;
pub mod pki;
pub mod process;
pub mod upstream;
pub mod webdriver;

use std::net::SocketAddr;
use std::path::PathBuf;

use ms365_gateway::{Config, Gateway, GatewayHandle, TenantId};
use tokio_util::sync::CancellationToken;

pub use pki::{Leaf, TestCa};
pub use upstream::StubUpstream;

/// The system administrator's token every test configuration has (`[admin] token_file`).
/// The tenant most worlds create (`[[tenant]] id = "acme"`).
pub fn acme() -> TenantId {
    TenantId::from_static("acme")
}

pub const SYSTEM_TOKEN: &str = "system-admin-token-for-tests-0123456789";

/// Files shared by a test: a temporary directory, a CA and one certificate per listener.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub pbx_cert: Leaf,
    pub sbc_cert: Leaf,
}

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let pbx_cert = ca.issue(dir.path(), "pbx", &["pbx.test", "localhost"]);
        let sbc_cert = ca.issue(dir.path(), "sbc", &["sbc.test"]);
        std::fs::write(dir.path().join("admin.token"), format!("{SYSTEM_TOKEN}\n")).unwrap();
        Setup {
            dir,
            ca,
            pbx_cert,
            sbc_cert,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A configuration with a pbx and an sbc listener on port 0.
    pub fn config_toml(&self, o: &Options<'_>) -> String {
        let Options {
            upstream_url,
            upstream_extra,
            pbx_extra,
            extra,
        } = o;
        format!(
            r#"
data_dir = "{data}"

[[listener]]
kind = "pbx"
bind = "127.0.0.1:0"
public_url = "https://pbx.test"
tls_cert = "{pbx_cert}"
tls_key = "{pbx_key}"
{pbx_extra}

[[listener]]
kind = "sbc"
bind = "127.0.0.1:0"
public_url = "https://sbc.test:8883"
tls_cert = "{sbc_cert}"
tls_key = "{sbc_key}"

[upstream]
url = "{upstream_url}"
{upstream_extra}

[admin]
bind = "127.0.0.1:0"
token_file = "{token_file}"

{store}
{extra}
"#,
            data = self.path("data").display(),
            store = db::store_toml(&self.path("data")),
            token_file = self.path("admin.token").display(),
            pbx_cert = self.pbx_cert.cert.display(),
            pbx_key = self.pbx_cert.key.display(),
            sbc_cert = self.sbc_cert.cert.display(),
            sbc_key = self.sbc_cert.key.display(),
        )
    }

    pub fn config(&self, toml: &str) -> Config {
        Config::from_toml(&self.path("gateway.toml"), toml, Vec::new()).expect("valid test config")
    }
}

/// Variations of the test configuration.
#[derive(Default)]
pub struct Options<'a> {
    pub upstream_url: &'a str,
    /// Lines inside `[upstream]`.
    pub upstream_extra: &'a str,
    /// Lines after the pbx listener (e.g. `[[listener.sni]]`).
    pub pbx_extra: &'a str,
    /// Tables appended at the end (`[server]`, `[[tenant]]`).
    pub extra: &'a str,
}

/// Starts a stub upstream and a gateway in front of it.
pub async fn start_with(
    setup: &Setup,
    upstream_extra: &str,
    extra: &str,
) -> (StubUpstream, TestGateway) {
    let upstream = StubUpstream::start().await;
    let url = upstream.url();
    let toml = setup.config_toml(&Options {
        upstream_url: &url,
        upstream_extra,
        extra,
        ..Default::default()
    });
    let gateway = TestGateway::start(setup.config(&toml)).await;
    (upstream, gateway)
}

/// A gateway running in this process.
pub struct TestGateway {
    /// Listener addresses in config order (pbx, sbc).
    pub listeners: Vec<SocketAddr>,
    pub admin: SocketAddr,
    pub handle: GatewayHandle,
    /// "Sync now" on this gateway's own worker.
    pub sync: ms365_gateway::sync::SyncHandle,
    pub shutdown: CancellationToken,
    pub run: Option<tokio::task::JoinHandle<()>>,
}

impl TestGateway {
    pub async fn start(config: Config) -> TestGateway {
        let gateway = Gateway::bind(config).await.expect("gateway binds");
        let listeners = gateway.listener_addrs();
        let admin = gateway.admin_addr();
        let handle = gateway.handle();
        let sync = gateway.sync_worker();
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(gateway.run(shutdown.clone()));
        TestGateway {
            listeners,
            admin,
            handle,
            sync,
            shutdown,
            run: Some(run),
        }
    }

    pub fn pbx(&self) -> SocketAddr {
        self.listeners[0]
    }

    pub fn sbc(&self) -> SocketAddr {
        self.listeners[1]
    }

    /// Cancels and waits for the whole shutdown tree.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(run) = self.run.take() {
            run.await.expect("gateway task");
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits (bounded, 30 s) until `check` holds: for what another task makes true.
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while !check().await {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}
