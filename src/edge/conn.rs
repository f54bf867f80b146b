//! One client connection: the TLS handshake (bounded in time), HTTP/1.1 or HTTP/2 by ALPN or
//! preface, per-request bookkeeping (connection info for handlers, the access log), and the
//! three ways a connection ends early: the idle timeout, a graceful shutdown (finish what is in
//! flight, accept nothing new) and the hard deadline after the shutdown grace period.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::access_log::{InFlight, LineRequest, MeteredBody, RequestRecord, UpstreamLatency};
use super::gated::Gated;
use super::headers::ClientHop;
use super::slow::{Activity, ActivityIo, MinRateBody};
use crate::config::ServerLimits;
use crate::metrics::{ListenerLabels, ListenerMetrics, Metrics, ResultLabels};

/// Facts about the connection a request arrived on, in every request's extensions.
/// Made once per connection and shared by its requests: a clone touches only this
/// connection's count, never one that the other edge workers' requests write too.
#[derive(Clone, Debug)]
pub struct ConnInfo(Arc<ConnFacts>);

/// What a [`ConnInfo`] holds.
#[derive(Debug)]
pub struct ConnFacts {
    pub peer: SocketAddr,
    /// Listener name (`pbx#0`).
    pub listener: Arc<str>,
    /// Index into `Config::listeners`.
    pub listener_index: usize,
    /// `https`, or `http` on a plain listener.
    pub proto: &'static str,
    /// The listener's pre-resolved request metrics.
    pub metrics: Arc<ListenerMetrics>,
    /// The forwarding headers' per-connection part.
    pub hop: ClientHop,
}

impl std::ops::Deref for ConnInfo {
    type Target = ConnFacts;

    fn deref(&self) -> &ConnFacts {
        &self.0
    }
}

/// The reverse proxy as the edge calls it: every request whose path the gateway does not
/// answer itself goes here directly, without a pass through the router (the routes are
/// matched only for the gateway's own paths, see `skips_router`). The answer borrows the
/// service, which the connection holds, so a request clones no shared handle to it.
///
/// The listener code is generic over it rather than holding a `dyn` service: the answer's
/// future is then part of the request's own, which HTTP/1.1 keeps in one slot per
/// connection, where a boxed future cost an allocation of about 2.4 KiB per request (too
/// large for the allocator's per-thread cache).
pub trait ProxyService: Send + Sync + 'static {
    fn call(&self, req: Request<Body>) -> impl Future<Output = Response<Body>> + Send + '_;
}

impl ConnInfo {
    /// `trusted` says whether `peer` is one of `[server] trusted_proxies`.
    pub fn new(
        peer: SocketAddr,
        listener: Arc<str>,
        listener_index: usize,
        proto: &'static str,
        metrics: Arc<ListenerMetrics>,
        trusted: bool,
    ) -> Self {
        ConnInfo(Arc::new(ConnFacts {
            peer,
            listener,
            listener_index,
            proto,
            metrics,
            hop: ClientHop::new(peer, proto, trusted),
        }))
    }
}

/// Everything a listener's connections share.
pub struct ListenerContext<P> {
    pub name: Arc<str>,
    pub index: usize,
    /// `None` on a `tls = false` listener.
    pub acceptor: Option<TlsAcceptor>,
    /// The gateway's own paths (and the proxy as their fallback).
    pub router: axum::Router,
    /// Every other path.
    pub proxy: P,
    pub limits: Arc<ServerLimits>,
    pub metrics: Arc<Metrics>,
    pub request_metrics: Arc<ListenerMetrics>,
    pub http: auto::Builder<TokioExecutor>,
    /// Read a PROXY protocol header from trusted balancers before anything else.
    pub proxy_protocol: bool,
}

/// The two stages of shutdown every connection watches.
#[derive(Clone, Debug, Default)]
pub struct StopSignals {
    /// Stop accepting; finish in-flight requests; close keep-alive connections.
    pub graceful: CancellationToken,
    /// The grace period is over: drop whatever is left.
    pub hard: CancellationToken,
}

/// The HTTP server settings shared by the listeners.
pub fn http_builder(limits: &ServerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// Serves one accepted TCP connection to its end.
pub async fn serve_connection<P: ProxyService>(
    mut stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ListenerContext<P>>,
    stop: StopSignals,
) {
    let _ = stream.set_nodelay(true);
    let peer = match client_address(&mut stream, peer, &ctx).await {
        Some(peer) => peer,
        None => return,
    };
    let labels = ListenerLabels {
        listener: ctx.name.to_string(),
    };
    ctx.metrics.connections_total.get_or_create(&labels).inc();
    let open = ctx.metrics.connections_open.get_or_create(&labels).clone();
    open.inc();
    match ctx.acceptor.clone() {
        Some(acceptor) => {
            // The socket lives (in the handshake, or handed back on failure) until the
            // outcome is counted: a client that sees the close finds it in the metrics.
            let handshake = tokio::time::timeout(
                ctx.limits.tls_handshake_timeout,
                acceptor.accept(stream).into_fallible(),
            );
            tokio::pin!(handshake);
            let result = tokio::select! {
                r = &mut handshake => r,
                _ = stop.graceful.cancelled() => { open.dec(); return; }
            };
            let outcome = match &result {
                Ok(Ok(_)) => "ok",
                Ok(Err(_)) => "failed",
                Err(_) => "timeout",
            };
            ctx.metrics
                .tls_handshakes
                .get_or_create(&ResultLabels {
                    listener: ctx.name.to_string(),
                    result: outcome,
                })
                .inc();
            match result {
                Ok(Ok(tls)) => serve_io(tls, peer, "https", &ctx, &stop).await,
                Ok(Err((e, _socket))) => {
                    tracing::debug!(listener = %ctx.name, %peer, error = %e, "TLS handshake failed")
                }
                Err(_) => tracing::debug!(listener = %ctx.name, %peer, "TLS handshake timed out"),
            }
        }
        None => serve_io(stream, peer, "http", &ctx, &stop).await,
    }
    open.dec();
}

/// The client's address: the TCP peer, or, on a `proxy_protocol` listener and from a trusted
/// balancer, the one its PROXY header names. `None` closes the connection (a trusted peer
/// that sent no valid header within the handshake timeout).
async fn client_address(
    stream: &mut TcpStream,
    peer: SocketAddr,
    ctx: &ListenerContext<impl ProxyService>,
) -> Option<SocketAddr> {
    if !ctx.proxy_protocol || !ctx.limits.trusts(peer.ip()) {
        return Some(peer);
    }
    let header = super::proxy_protocol::read_header(stream);
    match tokio::time::timeout(ctx.limits.tls_handshake_timeout, header).await {
        Ok(Ok(Some(client))) => Some(client),
        Ok(Ok(None)) => Some(peer),
        Ok(Err(e)) => {
            tracing::debug!(listener = %ctx.name, %peer, error = %e, "PROXY header refused");
            None
        }
        Err(_) => {
            tracing::debug!(listener = %ctx.name, %peer, "no PROXY header in time");
            None
        }
    }
}

async fn serve_io<I, P: ProxyService>(
    io: I,
    peer: SocketAddr,
    proto: &'static str,
    ctx: &Arc<ListenerContext<P>>,
    stop: &StopSignals,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let in_flight = Arc::new(InFlight::default());
    let info = ConnInfo::new(
        peer,
        ctx.name.clone(),
        ctx.index,
        proto,
        ctx.request_metrics.clone(),
        ctx.limits.trusts(peer.ip()),
    );
    // One handle per connection, cloned by each of its requests: the listener's shared
    // context is reached through it, not cloned (a count both edge workers would write).
    let conn = Arc::new(Connection {
        ctx: ctx.clone(),
        info,
        in_flight: in_flight.clone(),
    });
    let service = hyper::service::service_fn(move |req| handle_request(req, conn.clone()));
    let io = TokioIo::new(ActivityIo {
        inner: io,
        activity: activity.clone(),
    });
    let conn = ctx.http.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        // Gated: the watchers are looked at when their own timers or tokens fire, not on
        // each of the connection's many wakes.
        let watched = Gated::new(watch(stop, &activity, &in_flight, &ctx.limits, draining));
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(listener = %ctx.name, %peer, error = %e, "connection ended with an error");
                }
                break;
            }
            event = watched => match event {
                Watched::Drain => {
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
                Watched::Stalled => {
                    tracing::debug!(listener = %ctx.name, %peer, "the client stopped reading; closing");
                    break;
                }
                Watched::Hard => break,
            },
        }
    }
}

/// What ends a connection, or starts its end, other than the connection itself.
enum Watched {
    /// Shutdown began, or nothing moved for the idle timeout: finish what is in flight.
    Drain,
    /// A client that takes none of its response: nothing graceful is left to do.
    Stalled,
    /// The grace period is over.
    Hard,
}

async fn watch(
    stop: &StopSignals,
    activity: &Activity,
    in_flight: &InFlight,
    limits: &ServerLimits,
    draining: bool,
) -> Watched {
    tokio::select! {
        _ = stop.graceful.cancelled(), if !draining => Watched::Drain,
        _ = idle_expired(activity, in_flight, limits.idle_timeout), if !draining => Watched::Drain,
        _ = activity.write_stalled(limits.slow.send_timeout) => Watched::Stalled,
        _ = stop.hard.cancelled() => Watched::Hard,
    }
}

/// What a connection's requests share.
struct Connection<P> {
    ctx: Arc<ListenerContext<P>>,
    info: ConnInfo,
    in_flight: Arc<InFlight>,
}

async fn handle_request<P: ProxyService>(
    mut req: Request<Incoming>,
    conn: Arc<Connection<P>>,
) -> Result<Response<MeteredBody<Body>>, Infallible> {
    let guard = conn.in_flight.enter();
    let started = Instant::now();
    let route = route_class(req.uri().path());
    let line =
        tracing::enabled!(target: "access", tracing::Level::INFO).then(|| LineRequest::of(&req));
    req.extensions_mut().insert(conn.info.clone());
    let ctx = &conn.ctx;
    let slow = ctx.limits.slow;
    let req = req.map(|body| {
        if slow.body_min_rate == 0 || http_body::Body::is_end_stream(&body) {
            Body::new(body)
        } else {
            Body::new(MinRateBody::new(body, slow.body_min_rate, slow.body_grace))
        }
    });
    let response = if skips_router(route, req.uri().path()) {
        ctx.proxy.call(req).await
    } else {
        match ctx.router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    };
    let record = RequestRecord {
        conn: conn.info.clone(),
        line,
        route,
        status: response.status(),
        started,
        upstream: response.extensions().get::<UpstreamLatency>().map(|u| u.0),
        _in_flight: guard,
    };
    record.record_header_latency();
    Ok(response.map(|body| MeteredBody::new(body, record)))
}

/// Coarse route class for metrics labels (bounded cardinality).
pub fn route_class(path: &str) -> &'static str {
    if path.starts_with("/ms365/") || path == "/ms365" || path == "/api/login/by_microsoft" {
        "sso"
    } else if path.starts_with("/api/ms365")
        || path.starts_with("/api/admin/")
        || (path.starts_with("/api/users/") && path.contains("/ms365_binding"))
    {
        "admin"
    } else {
        "proxy"
    }
}

/// Whether a request (`route` is its [`route_class`]) goes straight to the proxy: its path
/// is none of the router's. Every
/// route the listener's router declares is classed `sso` or `admin`, or is `/api/info`
/// (proxied with the tenant's sign-in fields added), or names `ms365`; the rule errs
/// towards the router, whose fallback is the proxy, so a miss costs only time.
fn skips_router(route: &str, path: &str) -> bool {
    route == "proxy" && path != "/api/info" && !path.contains("ms365")
}

/// Resolves when the connection has moved no bytes for `idle` and no request is pending.
async fn idle_expired(activity: &Activity, in_flight: &InFlight, idle: Duration) {
    loop {
        activity.idle_for(idle).await;
        if in_flight.is_idle() {
            return;
        }
        // A request is waiting on a slow upstream; that is the upstream timeout's business.
        tokio::time::sleep(idle).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_the_gateway_answers_reaches_the_router() {
        // One concrete path per route the listener router declares (sso, session, admin
        // page and API, assets, notifications, the PortSIP endpoints the gateway answers).
        let owned = [
            "/ms365",
            "/ms365/",
            "/ms365/login",
            "/ms365/redirect",
            "/ms365/info",
            "/ms365/directory/me",
            "/ms365/directory/users",
            "/ms365/directory/contacts",
            "/ms365/photos/3f2c",
            "/ms365/jwks.json",
            "/ms365/session",
            "/ms365/logout",
            "/ms365/admin",
            "/ms365/admin/",
            "/ms365/assets/admin.css",
            "/ms365/notifications",
            "/ms365/notifications/lifecycle",
            "/api/login/by_microsoft",
            "/api/info",
            "/api/ms365",
            "/api/ms365/certificate",
            "/api/ms365/sync/runs/12/approve",
            "/api/ms365/openapi.json",
            "/api/users/7/ms365_binding",
            "/api/users/7/ms365_binding/destroy",
            "/api/admin/tenants",
            "/api/admin/tenants/t1/tokens/k2",
            "/api/admin/ms365/certificate",
        ];
        for path in owned {
            assert!(
                !skips_router(route_class(path), path),
                "{path} must reach the router"
            );
        }
    }

    #[test]
    fn the_pbx_paths_skip_the_router() {
        for path in [
            "/",
            "/index.html",
            "/api/users",
            "/api/users/7",
            "/api/login",
            "/ws",
        ] {
            assert!(
                skips_router(route_class(path), path),
                "{path} goes straight to the proxy"
            );
            assert_eq!(route_class(path), "proxy");
        }
    }
}
