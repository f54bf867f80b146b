//! The stand-ins as commands of the binary: `ms365-gateway emulator` (Entra ID + Graph) and
//! `ms365-gateway pbx-emulator` (PortSIP v22), each bound, announced and served until
//! Ctrl-C. They sit here, behind the `demo` feature, so a binary built without it carries
//! no stand-in.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

/// `ms365-gateway emulator`: the Entra ID + Graph stand-in with `seed` data on `bind`.
pub fn serve_emulator(bind: std::net::SocketAddr, seed: &str) -> ExitCode {
    use ms365_stand_ins::emulator::{Emulator, parse_seed};
    let config = match parse_seed(seed) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: --seed: {e}");
            return ExitCode::from(2);
        }
    };
    let announce = |addr: std::net::SocketAddr| {
        tracing::info!(%addr, "emulator serving (Entra ID at /{{tenant}}/oauth2/v2.0, Graph at /v1.0)");
    };
    serve_stand_in(bind, announce, |listener, shutdown| {
        Emulator::new(config).serve(listener, shutdown)
    })
}

/// `ms365-gateway pbx-emulator`: the PortSIP stand-in with `tenants` on `bind`.
pub fn serve_pbx_emulator(bind: std::net::SocketAddr, tenants: &[String]) -> ExitCode {
    use ms365_stand_ins::portsip_emulator::{PbxEmulator, PbxEmulatorConfig, parse_tenant};
    let tenants: Vec<_> = match tenants.iter().map(|t| parse_tenant(t)).collect() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: --tenant: {e}");
            return ExitCode::from(2);
        }
    };
    // What to sign in with, printed after the API base (passwords are the caller's own).
    let who: Vec<String> = (tenants.iter())
        .map(|t| format!("tenant {}: administrator {}", t.domain, t.admin_username))
        .collect();
    let config = PbxEmulatorConfig { seed: 1, tenants };
    let announce = move |addr: std::net::SocketAddr| {
        // The first line on standard output is the API base, for scripts and benches.
        println!("http://{addr}/api");
        // The rest goes to standard error: a reader of the first line may close the pipe.
        eprintln!("control API: http://{addr}/_pbx/");
        who.iter().for_each(|line| eprintln!("{line}"));
        tracing::info!(%addr, "PortSIP stand-in serving (REST API at /api, control at /_pbx)");
    };
    serve_stand_in(bind, announce, |listener, shutdown| {
        PbxEmulator::new(config).serve(listener, shutdown)
    })
}

/// Binds `bind`, announces the address, and serves a stand-in until Ctrl-C.
fn serve_stand_in<F, Fut>(
    bind: std::net::SocketAddr,
    announce: impl FnOnce(std::net::SocketAddr),
    serve: F,
) -> ExitCode
where
    F: FnOnce(tokio::net::TcpListener, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(bind).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {bind}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        });
        announce(listener.local_addr().unwrap_or(bind));
        match serve(listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
