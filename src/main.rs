//! The `ms365-gateway` binary: command line, logging and signals; the work is in the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ms365_gateway::{Config, Gateway, TenantId, forward_signals};
use tokio_util::sync::CancellationToken;

/// Microsoft 365 sign-in and directory sync in front of an IP-PBX.
///
/// Terminates TLS for the PBX web domain and the SBC domain, proxies everything else to the
/// PBX, and serves the Microsoft 365 integration under /ms365.
#[derive(Parser)]
#[command(name = "ms365-gateway", version, propagate_version = true)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "MS365GW_LOG_FORMAT",
        global = true
    )]
    log_format: LogFormat,
    /// Log filter, e.g. "info" or "ms365_gateway=debug,access=info".
    #[arg(long, default_value = "info", env = "MS365GW_LOG", global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Configuration file (see config/gateway.example.toml).
        #[arg(long, short, env = "MS365GW_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and print what would run.
    CheckConfig {
        #[arg(long, short, env = "MS365GW_CONFIG")]
        config: PathBuf,
    },
    /// Generate a new key pair for a tenant and write its certificate (public_key.pem) to
    /// upload to the Entra app registration. The private key stays in the store, sealed
    /// with the master key.
    Keygen {
        #[arg(long, short, env = "MS365GW_CONFIG")]
        config: PathBuf,
        /// Tenant id (as in [[tenant]] or created through the admin API).
        #[arg(long)]
        tenant: TenantId,
        /// Where to write the certificate; standard output when left out.
        #[arg(long)]
        out: Option<PathBuf>,
        /// RSA key size: 2048, 3072 or 4096.
        #[arg(long, default_value_t = 2048)]
        bits: u32,
        /// Certificate validity in days.
        #[arg(long, default_value_t = ms365_gateway::tenant_keys::DEFAULT_VALID_DAYS)]
        days: u32,
    },
    /// Run the Entra ID + Microsoft Graph emulator (for tests, benchmarks and trials).
    #[cfg(feature = "demo")]
    Emulator {
        /// Address to serve on (plain HTTP; keep it on loopback).
        #[arg(long, default_value = "127.0.0.1:9000")]
        bind: std::net::SocketAddr,
        /// Seeded data: "demo", or e.g. "users=50000,contacts=20,photos=0.5,mailboxes=2".
        #[arg(long, default_value = "demo")]
        seed: String,
    },
    /// Run the PortSIP v22 REST API stand-in (for tests, benchmarks and trials).
    #[cfg(feature = "demo")]
    PbxEmulator {
        /// Address to serve on (plain HTTP; keep it on loopback); port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:8887")]
        bind: std::net::SocketAddr,
        /// A tenant as DOMAIN:ADMIN_USERNAME:ADMIN_PASSWORD; repeat for more. The default is
        /// the example configuration's tenant.
        #[arg(
            long = "tenant",
            default_value = "demo.example.com:tenantadmin:change-me"
        )]
        tenants: Vec<String>,
    },
    /// Sync one tenant now (users, then photos and contacts when on) and print the report.
    Sync {
        #[arg(long, short, env = "MS365GW_CONFIG")]
        config: PathBuf,
        /// Tenant id.
        #[arg(long)]
        tenant: TenantId,
        /// Show what would change and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a demo on this machine: the Entra ID + Graph emulator with a demo tenant, the
    /// gateway (PBX and SBC listeners, self-signed certificates) and a stand-in PBX; the
    /// first sync runs, then the URLs and the admin token are printed. Ctrl-C stops it.
    #[cfg(feature = "demo")]
    Demo {
        /// Folder for the demo's gateway.toml, database, keys, certificates and admin token.
        #[arg(long, default_value = "ms365-demo")]
        data_dir: PathBuf,
        /// PBX web listener port (0: any free port).
        #[arg(long, default_value_t = 8443)]
        pbx_port: u16,
        /// SBC listener port (0: any free port).
        #[arg(long, default_value_t = 8883)]
        sbc_port: u16,
        /// Port of /healthz, /readyz and /metrics on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 9090)]
        admin_port: u16,
        /// Address the PBX and SBC listeners bind to.
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
    },
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end of main: dropping it writes out the lines still pending.
    let _log_flush = init_logging(cli.log_format, &cli.log);
    ms365_gateway::edge::install_default_crypto_provider();
    match cli.command {
        Command::Version => {
            println!("ms365-gateway {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::CheckConfig { config } => check_config(&config),
        Command::Run { config } => run(&config),
        #[cfg(feature = "demo")]
        Command::Emulator { bind, seed } => ms365_gateway::demo::serve_emulator(bind, &seed),
        #[cfg(feature = "demo")]
        Command::PbxEmulator { bind, tenants } => {
            ms365_gateway::demo::serve_pbx_emulator(bind, &tenants)
        }
        #[cfg(feature = "demo")]
        Command::Demo {
            data_dir,
            pbx_port,
            sbc_port,
            admin_port,
            bind,
        } => demo(ms365_gateway::demo::DemoOptions {
            data_dir,
            pbx_port,
            sbc_port,
            admin_port,
            bind,
        }),
        Command::Sync {
            config,
            tenant,
            dry_run,
            json,
        } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match sync_now(&config, &tenant, dry_run, json) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Keygen {
            config,
            tenant,
            out,
            bits,
            days,
        } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match keygen(config, &tenant, out.as_deref(), bits, days) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(feature = "demo")]
fn demo(opts: ms365_gateway::demo::DemoOptions) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let demo = ms365_gateway::demo::run_demo(opts, CancellationToken::new());
    match runtime.block_on(demo) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn sync_now(
    config: &Config,
    tenant: &TenantId,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;

    use ms365_gateway::keyring::Keyring;
    use ms365_gateway::store::{RunStatus, RunTrigger, Store};
    use ms365_gateway::sync::{SyncOptions, context_for_tenant, run_phases};
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(async {
        let store = Store::open(config).await?;
        for seed in &config.tenants {
            store.upsert_tenant(seed).await?;
        }
        let keyring = Keyring::open_configured(store.clone(), config).await?;
        let ctx = context_for_tenant(config, &store, &keyring, tenant).await?;
        let mut options = SyncOptions {
            trigger: RunTrigger::Cli,
            dry_run,
            ..SyncOptions::default()
        };
        if std::io::stderr().is_terminal() {
            options.progress = Some(std::sync::Arc::new(|p: &ms365_gateway::sync::Progress| {
                let total = if p.total > 0 {
                    format!("/{}", p.total)
                } else {
                    String::new()
                };
                eprint!("\r{:>6} {}{total}   ", p.phase, p.done);
            }));
        }
        let summary = run_phases(&ctx, options).await;
        store.close().await;
        anyhow::Ok(summary?.users)
    })?;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(match report.status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

fn print_report(r: &ms365_gateway::sync::RunReport) {
    let what = if r.dry_run {
        "dry run (nothing changed)"
    } else {
        "run"
    };
    println!(
        "sync {what} {} of tenant {}: {:?} ({})",
        r.run_id,
        r.tenant_id,
        r.status,
        r.mode.as_deref().unwrap_or("-")
    );
    for (kind, c) in &r.counts {
        println!("  {kind}: {c:?}");
    }
    println!(
        "  graph requests: {}, throttled: {}",
        r.graph_requests, r.throttled
    );
    if let Some(m) = &r.message {
        println!("  {m}");
    }
    for e in &r.errors {
        println!("  ! {e:?}");
    }
    for line in &r.preview {
        println!("  ~ {line}");
    }
}

fn keygen(
    config: Config,
    tenant: &TenantId,
    out: Option<&std::path::Path>,
    bits: u32,
    days: u32,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use ms365_gateway::entra::KeyBits;
    use ms365_gateway::keyring::Keyring;
    use ms365_gateway::store::Store;
    use ms365_gateway::tenant_keys::TenantKeys;
    let bits = KeyBits::from_bits(bits).context("--bits must be 2048, 3072 or 4096")?;
    anyhow::ensure!(
        (1..=3650).contains(&days),
        "--days must be between 1 and 3650"
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let info = runtime.block_on(async {
        let store = Store::open(&config).await?;
        for seed in &config.tenants {
            store.upsert_tenant(seed).await?;
        }
        let record = store
            .tenant(tenant)
            .await?
            .with_context(|| format!("no tenant with id `{tenant}`"))?;
        let keyring = Keyring::open_configured(store.clone(), &config).await?;
        let info = TenantKeys::new(store.clone(), keyring)
            .generate(&record, bits, days)
            .await?;
        store.close().await;
        anyhow::Ok(info)
    })?;
    match out {
        Some(path) => std::fs::write(path, &info.certificate_pem)
            .with_context(|| format!("writing {}", path.display()))?,
        None => print!("{}", info.certificate_pem),
    }
    eprintln!(
        "thumbprint (SHA-1, as Entra shows it): {}",
        info.thumbprint_sha1
    );
    eprintln!("thumbprint (SHA-256): {}", info.thumbprint_sha256);
    let until = time::OffsetDateTime::from_unix_timestamp(info.not_after)
        .map(|t| t.date().to_string())
        .unwrap_or_default();
    eprintln!("valid until: {until}");
    eprintln!(
        "upload the certificate under App registrations > Certificates & secrets > Certificates"
    );
    Ok(())
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path, std::env::vars()).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = ms365_gateway::keyring::source_for(&config) {
        eprintln!("error: {}: {e}", path.display());
        return ExitCode::from(2);
    }
    match ms365_gateway::describe_config(&config) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            ExitCode::from(2)
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let gateway = match Gateway::bind(config).await {
            Ok(g) => g,
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return if e.is_config_error() {
                    ExitCode::from(2)
                } else {
                    ExitCode::FAILURE
                };
            }
        };
        let shutdown = CancellationToken::new();
        let signals = tokio::spawn(forward_signals(gateway.handle(), shutdown.clone()));
        for (addr, l) in gateway.listener_addrs().iter().zip(0..) {
            tracing::info!(%addr, listener = l, "listening");
        }
        tracing::info!(addr = %gateway.admin_addr(), "operations endpoints");
        gateway.run(shutdown.clone()).await;
        shutdown.cancel();
        match signals.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "signal handling failed"),
            Err(e) => tracing::warn!(error = %e, "signal task ended abnormally"),
            Ok(Ok(())) => {}
        }
        ExitCode::SUCCESS
    })
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything (no-color.org):
/// a service manager's journal or a log file must not fill with escape sequences.
fn use_colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Logs go through a shared buffer to one writer thread (`log_writer`): the access log's line per
/// request costs a worker no system call and never waits for a slow stderr.
fn init_logging(format: LogFormat, filter: &str) -> ms365_gateway::LogFlush {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: bad --log filter ({e}); using \"info\"");
        tracing_subscriber::EnvFilter::new("info")
    });
    let colour = use_colour(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR"),
    );
    let (writer, flush) =
        ms365_gateway::spawn_log_writer(std::io::stderr(), ms365_gateway::DEFAULT_BUFFER_BYTES);
    // Uncoloured (a journal, a file), the access log skips tracing's formatting: its line
    // per request is written in the same shape by the gateway itself.
    if !colour {
        let shape = match format {
            LogFormat::Text => ms365_gateway::AccessLogFormat::Text,
            LogFormat::Json => ms365_gateway::AccessLogFormat::Json,
        };
        ms365_gateway::install_access_log(writer.clone(), shape);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    flush
}

#[cfg(test)]
mod tests {
    use super::use_colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some("".into())));
        assert!(!use_colour(true, Some("1".into())));
        assert!(!use_colour(false, None));
    }
}
