//! Assembly and lifetime of a gateway: [`Gateway::bind`] validates what it can before
//! anything runs (store, master key, certificates, sockets), [`Gateway::run`] serves until the
//! cancellation token fires and then shuts down in order: stop accepting, let in-flight
//! requests finish within the grace period, end what is left, await every named task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use http::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError};
use crate::edge::conn::{ListenerContext, ProxyService, StopSignals, http_builder};
use crate::edge::proxy::{Upstream, UpstreamTarget};
use crate::edge::server::{CertReloader, WatchedListener, accept_loop};
use crate::edge::tls::{self, CertLoader, TlsError};
use crate::edge::workers::EdgeWorkers;
use crate::keyring::{Keyring, KeyringError};
use crate::metrics::Metrics;
use crate::ops::{self, OpsState};
use crate::store::{Store, StoreError};

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sign-in keys: {0}")]
    Session(#[from] crate::sso::session::SessionError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error("cannot start the connection threads: {0}")]
    Threads(std::io::Error),
    #[error("cannot listen on {addr} (key `{key}`): {source}")]
    Bind {
        addr: SocketAddr,
        key: String,
        source: std::io::Error,
    },
}

impl StartError {
    /// True when the administrator's configuration is at fault (exit status 2).
    pub fn is_config_error(&self) -> bool {
        match self {
            StartError::Config(_)
            | StartError::Tls(TlsError::Load { .. } | TlsError::UpstreamName(_)) => true,
            StartError::Keyring(e) => e.is_config_error(),
            _ => false,
        }
    }
}

/// A gateway with its sockets bound, ready to [`run`](Gateway::run).
pub struct Gateway {
    config: Arc<Config>,
    store: Store,
    metrics: Arc<Metrics>,
    listeners: Vec<(TcpListener, Arc<ListenerContext<Arc<ProxyRoute>>>)>,
    admin: TcpListener,
    reloader: Arc<CertReloader>,
    reload_trigger: Arc<Notify>,
    stop: StopSignals,
    tunnels: TaskTracker,
    /// `max_connections` slots: client connections and WebSocket tunnels each hold one.
    permits: Arc<Semaphore>,
    /// The threads client connections run on.
    edge: EdgeWorkers,
    /// The PBX's keep-alive connections (for the idle sweep).
    upstream: Upstream,
    /// Directory sync queue and schedule; stops with the graceful shutdown signal.
    sync_worker: crate::sync::worker::SyncWorker,
    /// The admin API's shared state (for the certificate expiry watch).
    admin_api: Arc<crate::admin::AdminState>,
    /// Sign-in (for its key reload task).
    sso: Arc<crate::sso::Sso>,
    /// Graph change notifications: the endpoint's state and its task.
    realtime: (
        Arc<crate::realtime::Realtime>,
        crate::realtime::RealtimeTask,
    ),
}

/// A way to reach a running gateway from outside (signal handlers, tests).
#[derive(Clone)]
pub struct GatewayHandle {
    reloader: Arc<CertReloader>,
    trigger: Arc<Notify>,
}

impl GatewayHandle {
    /// Asks the reload task to re-read certificates (what SIGHUP does).
    pub fn request_certificate_reload(&self) {
        self.trigger.notify_one();
    }

    /// Re-reads every certificate now and reports the first failure.
    pub async fn reload_certificates(&self) -> Result<(), TlsError> {
        let reloader = self.reloader.clone();
        tokio::task::spawn_blocking(move || reloader.reload_all())
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Changes after every reload attempt, whatever started it.
    pub fn certificate_generation(&self) -> watch::Receiver<u64> {
        self.reloader.subscribe()
    }
}

impl Gateway {
    /// Opens the store, loads certificates and binds every socket. Nothing is served yet.
    pub async fn bind(config: Config) -> Result<Gateway, StartError> {
        let config = Arc::new(config);
        for (key, url) in config.plain_http_clouds() {
            tracing::warn!(%key, %url, "a Microsoft endpoint override uses plain http: tokens and client assertions travel unencrypted (fine for the emulator, never for Microsoft)");
        }
        let metrics = Arc::new(Metrics::new());
        if let Some(url) = &config.store.database_url
            && !url.transport().is_verified()
        {
            tracing::warn!(database = %url, link = %url.transport(), "the database connection is not verified");
        }
        let store = Store::open(&config).await?;
        if let Ok(Some(tls)) = store.encrypted_link().await {
            tracing::info!(tls, "connected to PostgreSQL");
        }
        for seed in &config.tenants {
            store.upsert_tenant(seed).await?;
        }
        let provider = tls::crypto_provider();
        let loader = CertLoader::new(provider.clone(), &config.data_dir);
        let limits = Arc::new(config.server.clone());
        let stop = StopSignals::default();
        let tunnels = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(config.server.max_connections));
        let edge = EdgeWorkers::start(config.server.threads).map_err(StartError::Threads)?;
        let upstream = Upstream::new(
            &config.upstream,
            edge.len(),
            limits.clone(),
            metrics.clone(),
            crate::edge::proxy::Tunnels {
                tracker: tunnels.clone(),
                permits: permits.clone(),
            },
            stop.hard.clone(),
        )?;
        let http = http_builder(&limits);
        let keyring = Keyring::open_configured(store.clone(), &config).await?;
        let sso = Arc::new(
            crate::sso::Sso::new(
                config.clone(),
                store.clone(),
                keyring.clone(),
                metrics.clone(),
            )
            .await?,
        );
        if let Err(e) = sso.tenant_keys().import_key_files(&config.data_dir).await {
            tracing::warn!(error = %e, "cannot import the tenant key files of an earlier version");
        }
        let lease_owner = crate::sync::lease::instance_id();
        let sync_worker = crate::sync::worker::SyncWorker::new(
            config.clone(),
            store.clone(),
            keyring.clone(),
            stop.graceful.clone(),
        )
        .with_concurrency(config.sync.concurrency)
        .with_metrics(metrics.clone())
        .with_schedule_tick(config.sync.schedule_check_interval)
        .with_lease(crate::sync::lease::LeaseConfig {
            owner: lease_owner.clone(),
            ttl: config.sync.lease_ttl,
        });
        let (realtime, realtime_task) = crate::realtime::Realtime::new(
            store.clone(),
            keyring,
            metrics.clone(),
            sync_worker.handle(),
            lease_owner,
            config.sync.subscription_check_interval,
        );
        let admin_api = Arc::new(crate::admin::AdminState::new(
            config.clone(),
            store.clone(),
            &sso,
            sync_worker.handle(),
            metrics.clone(),
        )?);
        let mut listeners = Vec::new();
        let mut watched = Vec::new();
        for l in &config.listeners {
            let acceptor = match &l.tls {
                Some(tls_config) => {
                    let certs = loader.load(l, tls_config)?;
                    let server_config = tls::server_config(provider.clone(), certs.clone())?;
                    watched.push(WatchedListener::new(
                        &loader,
                        l.clone(),
                        tls_config.clone(),
                        certs,
                    ));
                    Some(tokio_rustls::TlsAcceptor::from(server_config))
                }
                None => None,
            };
            let socket = bind(l.bind, &format!("listener[{}].bind", l.index)).await?;
            let target = upstream.target(l.upstream.as_ref().unwrap_or(&config.upstream.url))?;
            let (router, proxy) = listener_routes(
                target,
                upstream.clone(),
                sso.clone(),
                admin_api.clone(),
                realtime.clone(),
            );
            let ctx = ListenerContext {
                name: l.name().into(),
                index: l.index,
                acceptor,
                router,
                proxy,
                limits: limits.clone(),
                metrics: metrics.clone(),
                request_metrics: Arc::new(crate::metrics::ListenerMetrics::new(
                    metrics.clone(),
                    &l.name(),
                )),
                http: http.clone(),
                proxy_protocol: l.proxy_protocol,
            };
            listeners.push((socket, Arc::new(ctx)));
        }
        let admin = bind(config.admin.bind, "admin.bind").await?;
        let reloader = Arc::new(CertReloader::new(loader, watched, metrics.clone()));
        Ok(Gateway {
            config,
            store,
            metrics,
            listeners,
            admin,
            reloader,
            reload_trigger: Arc::new(Notify::new()),
            stop,
            tunnels,
            permits,
            edge,
            sync_worker,
            admin_api,
            sso,
            upstream,
            realtime: (realtime, realtime_task),
        })
    }

    /// Hands sync requests ("sync now") to the gateway's sync worker.
    pub fn sync_worker(&self) -> crate::sync::worker::SyncHandle {
        self.sync_worker.handle()
    }

    /// Bound addresses of the listeners, in config order (resolves port 0).
    pub fn listener_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|(s, _)| s.local_addr().ok())
            .collect()
    }

    /// Bound address of the operations endpoints.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("bound socket has an address")
    }

    pub fn handle(&self) -> GatewayHandle {
        GatewayHandle {
            reloader: self.reloader.clone(),
            trigger: self.reload_trigger.clone(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The keyring holding the keys the instances share (opened with the master key).
    pub fn keyring(&self) -> &Keyring {
        &self.admin_api.keyring
    }

    /// Serves until `shutdown` is cancelled, then drains and stops every task.
    pub async fn run(self, shutdown: CancellationToken) {
        let Gateway {
            config,
            store,
            metrics,
            listeners,
            admin,
            reloader,
            reload_trigger,
            stop,
            tunnels,
            permits,
            edge,
            upstream,
            sync_worker,
            admin_api,
            sso,
            realtime,
        } = self;
        let connections = TaskTracker::new();
        let ready = Arc::new(AtomicBool::new(false));
        let mut tasks: Vec<(String, JoinHandle<()>)> = Vec::new();
        for (socket, ctx) in listeners {
            let name = format!("accept {}", ctx.name);
            let fut = accept_loop(
                socket,
                ctx,
                permits.clone(),
                connections.clone(),
                edge.spawner(),
                stop.clone(),
            );
            tasks.push((name, tokio::spawn(fut)));
        }
        let ops_state = OpsState {
            store: store.clone(),
            metrics,
            listeners_ready: ready.clone(),
        };
        let graceful = stop.graceful.clone();
        let ops_server = axum::serve(admin, ops::router(ops_state))
            .with_graceful_shutdown(graceful.cancelled_owned());
        tasks.push((
            "ops server".into(),
            tokio::spawn(async move {
                if let Err(e) = ops_server.await {
                    tracing::error!(error = %e, "operations server failed");
                }
            }),
        ));
        let reload = reloader.run(
            config.server.cert_reload_interval,
            reload_trigger,
            stop.graceful.clone(),
        );
        tasks.push(("certificate reloader".into(), tokio::spawn(reload)));
        let sweep = upstream.sweep_idle(stop.graceful.clone());
        tasks.push(("upstream idle sweep".into(), tokio::spawn(sweep)));
        tasks.push(("sync worker".into(), tokio::spawn(sync_worker.run())));
        let (realtime, realtime_task) = realtime;
        let notifications = realtime.run(realtime_task, stop.graceful.clone());
        tasks.push(("graph notifications".into(), tokio::spawn(notifications)));
        let purge = admin_api
            .sessions
            .clone()
            .purge_periodically(stop.graceful.clone());
        tasks.push(("session purge".into(), tokio::spawn(purge)));
        let key_reload = sso.reload_keys_periodically(stop.graceful.clone());
        tasks.push(("key reload".into(), tokio::spawn(key_reload)));
        let expiry = crate::admin::status::watch_certificates(admin_api, stop.graceful.clone());
        tasks.push(("certificate expiry watch".into(), tokio::spawn(expiry)));
        ready.store(true, Ordering::Release);
        tracing::info!(listeners = config.listeners.len(), "gateway serving");

        shutdown.cancelled().await;
        tracing::info!(
            grace_secs = config.server.shutdown_grace.as_secs_f64(),
            "shutting down: no new connections"
        );
        ready.store(false, Ordering::Release);
        stop.graceful.cancel();
        drain(&connections, &tunnels, &stop, config.server.shutdown_grace).await;
        for (name, handle) in tasks {
            if let Err(e) = handle.await {
                tracing::error!(task = %name, error = %e, "task ended abnormally");
            }
        }
        store.close().await;
        // Last: a database connection opened by a request is registered with its worker.
        edge.stop().await;
        tracing::info!("gateway stopped");
    }
}

/// Waits for connections and tunnels to finish, forcing them after `grace`.
async fn drain(
    connections: &TaskTracker,
    tunnels: &TaskTracker,
    stop: &StopSignals,
    grace: std::time::Duration,
) {
    connections.close();
    tunnels.close();
    let all = async {
        connections.wait().await;
        tunnels.wait().await;
    };
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::warn!(
            connections = connections.len(),
            tunnels = tunnels.len(),
            "grace period over; closing what is left"
        );
        stop.hard.cancel();
        connections.wait().await;
        tunnels.wait().await;
    }
}

async fn bind(addr: SocketAddr, key: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            addr,
            key: key.to_string(),
            source,
        })
}

/// The routes of one public listener (the gateway's own paths, then the proxy for the
/// rest) and the proxy the edge calls directly for paths that are not the gateway's.
fn listener_routes(
    target: UpstreamTarget,
    upstream: Upstream,
    sso: Arc<crate::sso::Sso>,
    admin_api: Arc<crate::admin::AdminState>,
    realtime: Arc<crate::realtime::Realtime>,
) -> (Router, Arc<ProxyRoute>) {
    let route = Arc::new(ProxyRoute {
        upstream,
        target,
        sso: sso.clone(),
    });
    let proxied = Router::new()
        .route("/api/info", axum::routing::get(api_info_handler))
        .fallback(proxy_handler)
        .with_state(route.clone());
    let router = crate::sso::routes(sso)
        .merge(crate::realtime::routes(realtime))
        .merge(crate::admin::router(admin_api))
        .merge(proxied);
    (router, route)
}

struct ProxyRoute {
    upstream: Upstream,
    target: UpstreamTarget,
    sso: Arc<crate::sso::Sso>,
}

impl ProxyService for Arc<ProxyRoute> {
    fn call(&self, req: Request<Body>) -> impl Future<Output = Response<Body>> + Send + '_ {
        proxy(self, req)
    }
}

/// The router's way to the proxy: paths the gateway does not serve itself.
async fn proxy_handler(State(route): State<Arc<ProxyRoute>>, req: Request<Body>) -> Response<Body> {
    proxy(&route, req).await
}

async fn proxy(route: &ProxyRoute, mut req: Request<Body>) -> Response<Body> {
    let identity = match crate::sso::identity::identify(&route.sso, &mut req).await {
        Ok(identity) => identity,
        Err(answer) => return answer,
    };
    let Some(bearer) = identity.pbx else {
        return route
            .upstream
            .forward(&route.target, req, &identity.headers)
            .await;
    };
    // The user's PBX token can end before the gateway expected (a PBX restart, a renewal
    // by another instance): a refusal renews it, and a request without a body goes again.
    let again = bodiless_copy(&req);
    let response = (route.upstream)
        .forward(&route.target, req, &identity.headers)
        .await;
    if response.status() != http::StatusCode::UNAUTHORIZED {
        return response;
    }
    // Boxed, as is the retry: rare, and large futures every request would carry otherwise.
    let renewed =
        Box::pin((route.sso.pbx_sessions()).renew_refused(&bearer.session, &bearer.token)).await;
    match (again, renewed) {
        (Some(again), Some(token)) => {
            let headers = crate::sso::identity::with_bearer(&bearer.session, &token);
            Box::pin(route.upstream.forward(&route.target, again, &headers)).await
        }
        _ => response,
    }
}

/// A copy of a GET or HEAD request without a body (what can be sent twice); `None` for
/// anything else.
fn bodiless_copy(req: &Request<Body>) -> Option<Request<Body>> {
    let h = req.headers();
    let bodiless = matches!(*req.method(), http::Method::GET | http::Method::HEAD)
        && !h.contains_key(http::header::TRANSFER_ENCODING)
        && !h.contains_key(http::header::UPGRADE)
        && h.get(http::header::CONTENT_LENGTH).is_none_or(|v| v == "0");
    if !bodiless {
        return None;
    }
    let mut copy = Request::new(Body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    if let Some(conn) = req.extensions().get::<crate::edge::conn::ConnInfo>() {
        copy.extensions_mut().insert(conn.clone());
    }
    Some(copy)
}

/// PortSIP's `GET /api/info?domain=`: proxied, with the tenant's Microsoft 365 sign-in fields
/// added so existing clients show the Microsoft icon.
async fn api_info_handler(
    State(route): State<Arc<ProxyRoute>>,
    req: Request<Body>,
) -> Response<Body> {
    let domain = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "domain")
            .map(|(_, v)| v.to_string())
    });
    let response = proxy(&route, req).await;
    let Some(domain) = domain else {
        return response;
    };
    let Ok(extra) = crate::sso::login::tenant_info(&route.sso, Some(&domain)).await else {
        return response;
    };
    crate::sso::login::merge_info(response, extra).await
}
