//! The accept loop of a listener and the certificate reload task.
//!
//! A listener takes a connection permit before it accepts, so past `max_connections` new
//! clients wait in the kernel backlog instead of being accepted and starved. Each connection
//! runs as a task on one of the edge workers, in a shared tracker that shutdown waits on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn::{ListenerContext, ProxyService, StopSignals, serve_connection};
use super::tls::{CertLoader, ListenerCerts, fingerprint};
use super::workers::Spawner;
use crate::config::{ListenerConfig, ListenerTls};
use crate::metrics::{KindLabels, Metrics};

/// Accepts connections until a graceful stop, spawning one task each into `connections`, on
/// the edge worker `workers` picks.
pub async fn accept_loop<P: ProxyService>(
    listener: TcpListener,
    ctx: Arc<ListenerContext<P>>,
    permits: Arc<Semaphore>,
    connections: TaskTracker,
    workers: Spawner,
    stop: StopSignals,
) {
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.graceful.cancelled() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.graceful.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let (ctx, stop) = (ctx.clone(), stop.clone());
                // The listener's socket is registered with this runtime; the worker's
                // runtime must own the connection's, so it moves over as a std socket.
                let stream = match stream.into_std() {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(listener = %ctx.name, error = %e, "cannot hand a connection to a worker");
                        continue;
                    }
                };
                let serve = async move {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => serve_connection(stream, peer, ctx, stop).await,
                        Err(e) => tracing::warn!(error = %e, "cannot register a connection"),
                    }
                    drop(permit);
                };
                connections.spawn_on(serve, workers.pick());
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on the error.
                tracing::warn!(listener = %ctx.name, error = %e, "accept failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stop.graceful.cancelled() => return,
                }
            }
        }
    }
}

/// One TLS listener's certificates and where they come from.
pub struct WatchedListener {
    pub config: ListenerConfig,
    pub tls: ListenerTls,
    pub certs: Arc<ListenerCerts>,
    files: Vec<PathBuf>,
}

impl WatchedListener {
    pub fn new(
        loader: &CertLoader,
        config: ListenerConfig,
        tls: ListenerTls,
        certs: Arc<ListenerCerts>,
    ) -> Self {
        let files = loader.watched_files(&config, &tls);
        WatchedListener {
            config,
            tls,
            certs,
            files,
        }
    }
}

/// Reloads certificates when their files change, on SIGHUP, or when asked by a handle.
pub struct CertReloader {
    loader: CertLoader,
    listeners: Vec<WatchedListener>,
    metrics: Arc<Metrics>,
    /// Counts successful reloads, so callers can wait for one.
    generation: watch::Sender<u64>,
    /// File hashes when the certificates were first loaded: a change between loading and
    /// the first poll must not be missed.
    loaded: Vec<Vec<Option<u64>>>,
}

impl CertReloader {
    pub fn new(loader: CertLoader, listeners: Vec<WatchedListener>, metrics: Arc<Metrics>) -> Self {
        let loaded = listeners.iter().map(|l| fingerprint(&l.files)).collect();
        CertReloader {
            loader,
            listeners,
            metrics,
            generation: watch::Sender::new(0),
            loaded,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Reloads every listener; a listener whose files fail keeps its previous certificates.
    pub fn reload_all(&self) -> Result<(), super::tls::TlsError> {
        self.reload_where(|_| true)
    }

    /// Reloads the listeners `selected` picks. The generation moves only when all of them
    /// loaded, so a waiter never sees a half-replaced pair (new certificate, old key).
    fn reload_where(&self, selected: impl Fn(usize) -> bool) -> Result<(), super::tls::TlsError> {
        let mut first_error = None;
        for (i, l) in self
            .listeners
            .iter()
            .enumerate()
            .filter(|(i, _)| selected(*i))
        {
            match self.loader.reload(&l.config, &l.tls, &l.certs) {
                Ok(()) => {
                    self.metrics
                        .cert_reloads
                        .get_or_create(&KindLabels { kind: "ok" })
                        .inc();
                    tracing::info!(listener = %l.config.name(), "certificates reloaded");
                }
                Err(e) => {
                    self.metrics
                        .cert_reloads
                        .get_or_create(&KindLabels { kind: "failed" })
                        .inc();
                    tracing::error!(listener = %l.config.name(), index = i, error = %e, "certificate reload failed; keeping the previous certificates");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            None => {
                self.generation.send_modify(|g| *g += 1);
                Ok(())
            }
            Some(e) => Err(e),
        }
    }

    fn fingerprints(&self) -> Vec<Vec<Option<u64>>> {
        self.listeners
            .iter()
            .map(|l| fingerprint(&l.files))
            .collect()
    }

    /// Polls the files every `interval` and reloads what changed; `trigger` reloads all.
    pub async fn run(
        self: Arc<Self>,
        interval: Duration,
        trigger: Arc<Notify>,
        stop: CancellationToken,
    ) {
        let mut seen = self.loaded.clone();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let changed: Vec<bool> = tokio::select! {
                _ = stop.cancelled() => return,
                _ = trigger.notified() => vec![true; self.listeners.len()],
                _ = ticker.tick() => {
                    let now = self.fingerprints();
                    let changed = now.iter().zip(&seen).map(|(a, b)| a != b).collect();
                    seen = now;
                    changed
                }
            };
            if !changed.contains(&true) {
                continue;
            }
            let this = self.clone();
            // File reads and key parsing are blocking work.
            let _ = tokio::task::spawn_blocking(move || this.reload_where(|i| changed[i])).await;
        }
    }
}
