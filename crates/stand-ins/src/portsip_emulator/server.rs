//! The stand-in's routes and serving. PortSIP's routes live under `/api` (counted and
//! faulted per operation); the control API under `/_pbx/`. Serving is plain HTTP with
//! `axum::serve`; a stop waits briefly for answers in flight, then lets go, so a request
//! held by an injected "timeout" does not hold up a test's teardown.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::wire::Fail;
use super::{PbxEmulator, auth, contacts, control, faults, users};

/// How long a stop waits for answers in flight.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// A stand-in serving on `127.0.0.1`; dropping it stops the server.
pub struct RunningPbxEmulator {
    /// `http://127.0.0.1:PORT`: the control API is at `{base_url}/_pbx/`.
    pub base_url: String,
    /// `base_url` + `/api`: what `[pbx] api_url` points at.
    pub api_url: String,
    pub addr: SocketAddr,
    pub emulator: PbxEmulator,
    shutdown: CancellationToken,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl RunningPbxEmulator {
    /// Stops serving and waits for the server task.
    pub async fn stop(mut self) -> io::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningPbxEmulator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl PbxEmulator {
    /// PortSIP's routes under `/api` only, counted and faulted, without a fallback: for a
    /// server that merges them with its own routes (the demo PBX).
    pub fn api_router(&self) -> Router {
        Router::new()
            .route("/api/login", post(auth::login).get(auth::current))
            .route("/api/auth/refresh_token", post(auth::refresh))
            .route("/api/users", get(users::list).post(users::create))
            .route("/api/users/{id}", get(users::get).post(users::update))
            .route("/api/users/{id}/destroy", post(users::destroy))
            .route("/api/users/{id}/ms365_binding", post(users::bind))
            .route("/api/users/{id}/ms365_binding/destroy", post(users::unbind))
            .route("/api/contacts", get(contacts::list).post(contacts::create))
            .route(
                "/api/contacts/{id}",
                get(contacts::get).post(contacts::update),
            )
            .route("/api/contacts/{id}/destroy", post(contacts::destroy))
            // A route layer: the operation's matched path names it in the statistics.
            .route_layer(from_fn_with_state(self.inner.clone(), faults::layer))
            .with_state(self.inner.clone())
    }

    /// Everything: PortSIP's routes under `/api`, the control API under `/_pbx/`, and
    /// PortSIP's 404 for anything else.
    pub fn router(&self) -> Router {
        let control = control::routes().with_state(self.inner.clone());
        self.api_router()
            .merge(control)
            .fallback(|| async { Fail::not_found("route").into_response() })
    }

    /// Serves on an already-bound listener until `shutdown` is cancelled.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> io::Result<()> {
        let stopping = shutdown.clone();
        let server = axum::serve(listener, self.router())
            .with_graceful_shutdown(async move { stopping.cancelled().await });
        tokio::select! {
            served = server => served,
            // Graceful shutdown waits for every connection; a held request may take
            // `timeout_delay_ms` (30 s by default). Past the grace, stop regardless.
            () = async {
                shutdown.cancelled().await;
                tokio::time::sleep(STOP_GRACE).await;
            } => Ok(()),
        }
    }

    /// Binds `127.0.0.1:0` and serves in a background task.
    pub async fn start(self) -> io::Result<RunningPbxEmulator> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(self.clone().serve(listener, shutdown.clone()));
        let base_url = format!("http://{addr}");
        Ok(RunningPbxEmulator {
            api_url: format!("{base_url}/api"),
            base_url,
            addr,
            emulator: self,
            shutdown,
            task: Some(task),
        })
    }
}
