//! Serving the emulator over plain HTTP (HTTP/1.1 and HTTP/2 on one port) with hyper-util.
//! hyper rather than `axum::serve` because an injected "connection reset" must close the
//! connection without any response: the service returns an error for a response marked
//! [`ResetConnection`], and hyper then drops the connection.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::faults::ResetConnection;
use super::{Emulator, EmulatorConfig};

#[derive(Debug, thiserror::Error)]
#[error("injected fault: connection reset")]
struct InjectedReset;

/// A running emulator on `127.0.0.1`; dropping it stops the server.
pub struct RunningEmulator {
    /// `http://127.0.0.1:PORT`: login host and Graph host alike.
    pub base_url: String,
    pub addr: SocketAddr,
    pub emulator: Emulator,
    shutdown: CancellationToken,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl RunningEmulator {
    /// Stops accepting, closes open connections and waits for the server task.
    pub async fn stop(mut self) -> io::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Emulator {
    /// Serves on an already-bound listener until `shutdown` is cancelled. Without a base URL
    /// set, the listener's address becomes it (an unspecified IP reads as 127.0.0.1).
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> io::Result<()> {
        if self.inner.base().is_empty() {
            let mut addr = listener.local_addr()?;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            self.set_base_url(&format!("http://{addr}"));
        }
        let router = self.router();
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        connections.spawn(connection(router.clone(), stream));
                    }
                    Err(err) => {
                        // Out of descriptors and the like: back off briefly, keep serving.
                        tracing::warn!(error = %err, "emulator accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        // The emulator stops at once; in-flight requests (e.g. injected latency) are cut.
        connections.shutdown().await;
        Ok(())
    }

    /// Binds `127.0.0.1:0`, sets the base URL and serves in a background task.
    pub async fn start(config: EmulatorConfig) -> io::Result<RunningEmulator> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // Seeding a large tenant and generating the RSA key take a moment of CPU.
        let emulator = tokio::task::spawn_blocking(move || Emulator::new(config))
            .await
            .map_err(io::Error::other)?;
        let base_url = format!("http://{addr}");
        emulator.set_base_url(&base_url);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(emulator.clone().serve(listener, shutdown.clone()));
        Ok(RunningEmulator {
            base_url,
            addr,
            emulator,
            shutdown,
            task: Some(task),
        })
    }
}

async fn connection(router: Router, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let router = router.clone();
        async move {
            let response = router
                .oneshot(req.map(Body::new))
                .await
                .unwrap_or_else(|never| match never {});
            if response.extensions().get::<ResetConnection>().is_some() {
                return Err(InjectedReset);
            }
            Ok(response)
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    if let Err(err) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %err, "emulator connection ended");
    }
}
