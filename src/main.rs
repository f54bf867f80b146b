//! The `ms365-gateway` binary: command line, logging and signals; the work is in the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ms365_gateway::{Config, Gateway, signals};
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
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log);
    ms365_gateway::edge::tls::install_default_crypto_provider();
    match cli.command {
        Command::Version => {
            println!("ms365-gateway {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::CheckConfig { config } => check_config(&config),
        Command::Run { config } => run(&config),
    }
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
    match ms365_gateway::check::describe(&config) {
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
        let signals = tokio::spawn(signals::forward_signals(gateway.handle(), shutdown.clone()));
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

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: bad --log filter ({e}); using \"info\"");
        tracing_subscriber::EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
