//! The threads that serve client connections: one single-threaded Tokio runtime per thread,
//! each connection pinned to one of them for its whole life, the way nginx pins a connection
//! to a worker process.
//!
//! Why not the main multi-threaded runtime: there a request's tasks (the client connection,
//! the upstream connection, the HTTP/2 streams) wake each other across threads and are stolen
//! between them, and memory is freed on another thread than the one that allocated it. Under
//! the proxy benchmark that cost about a fifth of the gateway's CPU per request
//! (docs/benchmarks.md, "One event loop per core"). On a worker every task a connection
//! spawns (its HTTP/2 streams, the upstream connection it opens, a WebSocket tunnel) runs on
//! the same thread, and each worker has its own upstream pool ([`current`] says which).
//!
//! The workers start with the gateway and stop after it has drained: [`EdgeWorkers::stop`]
//! ends their event loops and waits for every thread.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// The index of the edge worker running on this thread; `None` elsewhere.
    static WORKER_INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Which edge worker the calling thread is, if it is one.
pub fn current() -> Option<usize> {
    WORKER_INDEX.with(Cell::get)
}

/// How long a stopping worker waits for blocking tasks it started (certificate parsing, key
/// work) before its thread ends anyway.
const BLOCKING_GRACE: Duration = Duration::from_secs(5);

/// The edge worker threads; [`EdgeWorkers::spawner`] hands connections to them.
pub struct EdgeWorkers {
    spawner: Spawner,
    stop: CancellationToken,
    /// One per thread: fires when the thread's runtime has shut down.
    finished: Vec<(String, oneshot::Receiver<()>)>,
}

impl EdgeWorkers {
    /// Starts `count` (at least one) worker threads, each with its own event loop.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        let mut finished = Vec::new();
        for index in 0..count.max(1) {
            let (handle, done) = spawn_worker(index, stop.clone())?;
            handles.push(handle);
            finished.push((format!("edge-{index}"), done));
        }
        Ok(EdgeWorkers {
            spawner: Spawner {
                handles: handles.into(),
                next: Arc::new(AtomicUsize::new(0)),
            },
            stop,
            finished,
        })
    }

    pub fn len(&self) -> usize {
        self.spawner.handles.len()
    }

    /// What the accept loops spawn connections with.
    pub fn spawner(&self) -> Spawner {
        self.spawner.clone()
    }

    /// Ends every worker's event loop and waits until each thread has shut its runtime down.
    /// Call it once the connections it served have drained.
    pub async fn stop(mut self) {
        self.stop.cancel();
        for (name, done) in self.finished.drain(..) {
            if done.await.is_err() {
                tracing::error!(task = %name, "edge worker thread ended abnormally");
            }
        }
    }
}

impl Drop for EdgeWorkers {
    /// A gateway dropped without running still lets its threads go.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Picks the worker for each new connection, round robin; shared by every accept loop.
#[derive(Clone)]
pub struct Spawner {
    handles: Arc<[Handle]>,
    next: Arc<AtomicUsize>,
}

impl Spawner {
    /// The worker the next connection goes to.
    pub fn pick(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }
}

fn spawn_worker(
    index: usize,
    stop: CancellationToken,
) -> std::io::Result<(Handle, oneshot::Receiver<()>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(format!("edge-{index}-blocking"))
        .build()?;
    let handle = runtime.handle().clone();
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("edge-{index}"))
        .spawn(move || {
            WORKER_INDEX.with(|w| w.set(Some(index)));
            crate::shard::enter(index);
            runtime.block_on(stop.cancelled());
            runtime.shutdown_timeout(BLOCKING_GRACE);
            let _ = done_tx.send(());
        })?;
    Ok((handle, done_rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_spread_over_workers_that_know_who_they_are() {
        let workers = EdgeWorkers::start(2).unwrap();
        let spawner = workers.spawner();
        let mut seen = Vec::new();
        for _ in 0..4 {
            let on = spawner.pick().spawn(async { current() }).await.unwrap();
            seen.push(on);
        }
        assert_eq!(seen, [Some(0), Some(1), Some(0), Some(1)]);
        assert_eq!(
            current(),
            None,
            "the test's own runtime is not an edge worker"
        );
        workers.stop().await;
    }

    #[tokio::test]
    async fn stop_waits_for_the_threads() {
        let workers = EdgeWorkers::start(1).unwrap();
        let handle = workers.spawner().pick().clone();
        let (tx, rx) = oneshot::channel::<()>();
        // A task still pending when the worker stops is dropped with its runtime.
        handle.spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await
        });
        workers.stop().await;
        assert!(rx.await.is_err(), "the pending task was dropped");
    }
}
