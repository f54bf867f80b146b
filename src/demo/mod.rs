//! `ms365-gateway demo`: a whole Microsoft 365 integration on one machine, in one process.
//!
//! [`run_demo`] starts, in this order: the Entra ID + Graph emulator seeded with
//! [`emulator::demo_config`] (plain HTTP on a free loopback port), the demo PBX ([`upstream`]),
//! a `gateway.toml` written into the data folder and loaded through the normal config
//! loader ([`files`]), the gateway with its PBX and SBC listeners on self-signed
//! certificates, then the demo tenant ([`tenant`]: app registration, settings, key pair,
//! certificate upload) and its first sync through the gateway's sync worker, and prints the
//! [`banner::Banner`]. It then serves until the cancellation token fires (SIGINT/SIGTERM
//! through [`crate::signals`]) and stops the gateway, the demo PBX and the emulator in that
//! order, awaiting each.
//!
//! Re-running on an existing data folder works: see [`tenant`] for what is kept and what
//! is redone. [`commands`] serves each stand-in alone (`emulator`, `pbx-emulator`).
//!
//! The stand-ins come from the `ms365-stand-ins` crate; this module and that dependency
//! exist only with the `demo` feature (on by default).

pub(crate) mod banner;
mod commands;
pub(crate) mod files;
pub(crate) mod tenant;
pub(crate) mod upstream;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Config, Gateway};
use ms365_stand_ins::emulator::{self, Emulator, RunningEmulator};

pub use banner::{Banner, READY_LINE};
pub use commands::{serve_emulator, serve_pbx_emulator};
pub use upstream::{DemoUpstream, PBX_ADMIN};

/// The demo tenant's id in the gateway.
pub const TENANT_ID: &str = "contoso";

/// [`TENANT_ID`] as the type the store and the sync take.
pub(crate) fn demo_tenant() -> crate::TenantId {
    crate::TenantId::from_static(TENANT_ID)
}
/// The demo tenant's SIP domain (what users type on the sign-in page).
pub const SIP_DOMAIN: &str = "contoso.demo";

/// What `ms365-gateway demo` was asked for.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Configuration, SQLite database, key pairs, certificates and the admin token.
    pub data_dir: PathBuf,
    /// PBX web listener port; 0 picks a free one.
    pub pbx_port: u16,
    /// SBC (WebRTC client) listener port; 0 picks a free one.
    pub sbc_port: u16,
    /// `/healthz`, `/readyz`, `/metrics`; 0 picks a free one.
    pub admin_port: u16,
    /// Address the PBX and SBC listeners bind to.
    pub bind: IpAddr,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            data_dir: PathBuf::from("ms365-demo"),
            pbx_port: 8443,
            sbc_port: 8883,
            admin_port: 9090,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// Why the demo could not start (or stop) cleanly.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
    #[error("the gateway cannot start: {0}")]
    Start(#[from] crate::StartError),
    #[error("the emulator refused: {0}")]
    Emulator(#[from] emulator::EmulatorError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the tenant's key pair: {0}")]
    Keys(#[from] crate::tenant_keys::TenantKeyError),
    #[error("the first sync failed: {0}")]
    Sync(String),
    #[error("{0}")]
    Setup(String),
}

impl DemoError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
        let what = what.into();
        move |source| DemoError::Io { what, source }
    }
}

/// Runs the demo until `shutdown` is cancelled; prints the banner on standard output once
/// everything is ready. SIGINT and SIGTERM cancel `shutdown` from the moment the gateway is
/// bound.
pub async fn run_demo(opts: DemoOptions, shutdown: CancellationToken) -> Result<(), DemoError> {
    let Some(running) = start(opts, shutdown).await? else {
        return Ok(());
    };
    println!("{}", running.banner);
    running.wait().await
}

/// A started demo; [`DemoRunning::wait`] serves until the token fires, then stops it all.
pub struct DemoRunning {
    pub banner: Banner,
    services: Services,
    shutdown: CancellationToken,
    gateway: JoinHandle<()>,
    signals: JoinHandle<std::io::Result<()>>,
}

impl DemoRunning {
    /// Serves: signals (SIGINT/SIGTERM cancel `shutdown`, SIGHUP reloads certificates) and
    /// the gateway. The tenant is prepared after this; nobody knows the URLs before the
    /// banner anyway.
    fn spawn(gateway: Gateway, services: Services, shutdown: CancellationToken) -> DemoRunning {
        let signals = tokio::spawn(crate::signals::forward_signals(
            gateway.handle(),
            shutdown.clone(),
        ));
        DemoRunning {
            banner: Banner::default(),
            services,
            gateway: tokio::spawn(gateway.run(shutdown.clone())),
            shutdown,
            signals,
        }
    }

    /// Waits for the cancellation token, then stops everything in order.
    pub async fn wait(self) -> Result<(), DemoError> {
        self.shutdown.cancelled().await;
        self.stop().await
    }

    /// Cancels and awaits: the gateway (it drains requests that may still need the demo PBX
    /// or the emulator), the signal task, then the demo PBX and the emulator.
    async fn stop(self) -> Result<(), DemoError> {
        self.shutdown.cancel();
        if let Err(e) = self.gateway.await {
            tracing::error!(error = %e, "the gateway task ended abnormally");
        }
        match self.signals.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "signal handling failed"),
            Err(e) => tracing::warn!(error = %e, "the signal task ended abnormally"),
            Ok(Ok(())) => {}
        }
        self.services.stop().await
    }
}

/// The emulator and the demo PBX: what runs beside the gateway.
pub(crate) struct Services {
    emulator: RunningEmulator,
    upstream: upstream::DemoUpstream,
}

impl Services {
    async fn start(pbx_password: &str) -> Result<Services, DemoError> {
        let emulator = Emulator::start(emulator::demo_config())
            .await
            .map_err(DemoError::io("starting the emulator"))?;
        let upstream = upstream::DemoUpstream::start(SIP_DOMAIN, pbx_password)
            .await
            .map_err(DemoError::io("starting the demo PBX"))?;
        Ok(Services { emulator, upstream })
    }

    async fn stop(self) -> Result<(), DemoError> {
        let upstream = self.upstream.stop().await;
        let emulator = self.emulator.stop().await;
        upstream.map_err(DemoError::io("stopping the demo PBX"))?;
        emulator.map_err(DemoError::io("stopping the emulator"))
    }
}

/// Starts everything; `None` when `shutdown` fired before the demo was ready (everything
/// started is stopped again).
pub async fn start(
    opts: DemoOptions,
    shutdown: CancellationToken,
) -> Result<Option<DemoRunning>, DemoError> {
    let data_dir = files::prepare_data_dir(&opts.data_dir)?;
    let admin_token = files::ensure_admin_token(&data_dir)?;
    let pbx_password = files::ensure_pbx_password(&data_dir)?;
    let services = Services::start(&pbx_password).await?;
    let (config, gateway) = match bind_gateway(&opts, &data_dir, &services).await {
        Ok(v) => v,
        Err(e) => {
            services.stop().await?;
            return Err(e);
        }
    };
    trust_own_certificate(&config, &services.emulator.emulator);
    let (store, worker) = (gateway.store().clone(), gateway.sync_worker());
    let keyring = gateway.keyring().clone();
    let admin_addr = gateway.admin_addr();
    let mut running = DemoRunning::spawn(gateway, services, shutdown.clone());
    let first_sync = async {
        tenant::prepare(&store, &keyring, &running.services.emulator.emulator).await?;
        tenant::first_sync(&worker, &store, &shutdown).await
    }
    .await;
    match first_sync {
        Ok(Some(sync)) => {
            running.banner = Banner::new(&config, admin_addr, admin_token, sync, &running.services);
            Ok(Some(running))
        }
        Ok(None) => running.stop().await.map(|()| None),
        // Interrupted while starting: what failed on the way down is not an error.
        Err(_) if shutdown.is_cancelled() => running.stop().await.map(|()| None),
        Err(e) => {
            running.stop().await?;
            Err(e)
        }
    }
}

/// Lets the emulator deliver change notifications to the demo gateway as Microsoft would
/// to a real one: over HTTPS to the pbx listener's public URL, whose self-signed
/// certificate the emulator is told to trust (Microsoft would require a public CA).
fn trust_own_certificate(config: &Config, emulator: &Emulator) {
    let Some(listener) = config.listeners.first() else {
        return;
    };
    let loader =
        crate::edge::tls::CertLoader::new(crate::edge::tls::crypto_provider(), &config.data_dir);
    let (cert, _) = loader.self_signed_paths(listener);
    match std::fs::read_to_string(&cert) {
        Ok(pem) => emulator.trust_notification_ca(&pem),
        Err(e) => {
            tracing::warn!(path = %cert.display(), error = %e, "real-time updates stay off in the demo: the certificate is unreadable")
        }
    }
}

/// Writes and loads `gateway.toml`, registers the demo app for its redirect URIs and binds
/// the gateway's sockets.
async fn bind_gateway(
    opts: &DemoOptions,
    data_dir: &std::path::Path,
    services: &Services,
) -> Result<(Config, Gateway), DemoError> {
    let ports = files::Ports {
        pbx: SocketAddr::new(opts.bind, files::resolve_port(opts.bind, opts.pbx_port)?),
        sbc: SocketAddr::new(opts.bind, files::resolve_port(opts.bind, opts.sbc_port)?),
        admin: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), opts.admin_port),
    };
    let path = files::write_config(
        data_dir,
        &ports,
        &services.upstream.url,
        &services.emulator.base_url,
    )?;
    // The demo owns its configuration: `MS365GW_*` variables meant for `run` do not apply.
    let config = Config::load(&path, Vec::new())?;
    tenant::register_app(&services.emulator.emulator, &config)?;
    let gateway = Gateway::bind(config.clone()).await.map_err(|e| match e {
        crate::StartError::Bind { addr, source, .. } => DemoError::Io {
            what: format!(
                "cannot listen on {addr} (is a demo already running? other ports: \
                 --pbx-port, --sbc-port, --admin-port)"
            ),
            source,
        },
        e => e.into(),
    })?;
    Ok((config, gateway))
}
