//! Process signals: SIGTERM and SIGINT start a graceful shutdown, SIGHUP reloads
//! certificates. Kept out of [`crate::gateway`] so tests drive the same paths through the
//! cancellation token and the [`GatewayHandle`].

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::gateway::GatewayHandle;

/// Runs until `shutdown` is cancelled, turning signals into actions.
pub async fn forward_signals(
    handle: GatewayHandle,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received"); shutdown.cancel(); }
            _ = int.recv() => { tracing::info!("SIGINT received"); shutdown.cancel(); }
            _ = hup.recv() => {
                tracing::info!("SIGHUP received: reloading certificates");
                handle.request_certificate_reload();
            }
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}
