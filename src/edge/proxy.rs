//! The reverse proxy to the PBX: every path the gateway does not own ends here. Bodies stream
//! both ways (the client's body is handed to the upstream request as it arrives, the
//! upstream's body to the client), WebSocket upgrades are spliced into a bidirectional copy,
//! and upstream failures become quick 502/504 answers while the gateway keeps serving.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::access_log::UpstreamLatency;
use super::added_headers::AddedHeaders;
use super::conn::ConnInfo;
use super::headers;
use super::problem::HttpError;
use super::slow::{Activity, ActivityIo};
use super::tls::TlsError;
use super::upstream::{ClientError, Endpoint, Origin, Pieces, Upgraded};
use crate::config::{ServerLimits, UpstreamConfig};
use crate::metrics::{KindLabels, Metrics};

/// The upstream side of every listener: where each listener's requests go, with the
/// keep-alive connections of each upstream kept per edge worker, so a request and the
/// upstream connection that carries it are served by the same thread.
#[derive(Clone)]
pub struct Upstream {
    origins: Arc<Origins>,
    response_timeout: Duration,
    metrics: Arc<Metrics>,
    tunnels: Tunnels,
    hard_stop: CancellationToken,
    limits: Arc<ServerLimits>,
}

/// Every upstream the listeners name, once each (two listeners in front of the same PBX
/// share its connections).
struct Origins {
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    workers: usize,
    idle_per_pool: usize,
    idle_timeout: Duration,
    known: Mutex<Vec<(Scheme, Authority, Arc<Origin>)>>,
}

/// Where spliced WebSocket connections live: a tracker shutdown waits on, and the
/// `max_connections` slots, of which each tunnel holds one for its whole life (the HTTP
/// connection it came from gives its own slot back when it hands the socket over).
#[derive(Clone)]
pub struct Tunnels {
    pub tracker: TaskTracker,
    pub permits: Arc<tokio::sync::Semaphore>,
}

/// Where one listener's proxied requests go.
#[derive(Clone)]
pub struct UpstreamTarget {
    origin: Arc<Origin>,
    /// `Host` for a request that names none.
    host: HeaderValue,
}

impl Upstream {
    /// `workers` pools share `[upstream] pool_max_idle_per_host` between them.
    pub fn new(
        config: &UpstreamConfig,
        workers: usize,
        limits: Arc<ServerLimits>,
        metrics: Arc<Metrics>,
        tunnels: Tunnels,
        hard_stop: CancellationToken,
    ) -> Result<Self, TlsError> {
        let workers = workers.max(1);
        let origins = Origins {
            tls: super::upstream::tls_config(config)?,
            connect_timeout: config.connect_timeout,
            workers,
            idle_per_pool: config.pool_max_idle_per_host.div_ceil(workers),
            idle_timeout: config.pool_idle_timeout,
            known: Mutex::new(Vec::new()),
        };
        Ok(Upstream {
            origins: Arc::new(origins),
            response_timeout: config.response_timeout,
            metrics,
            tunnels,
            hard_stop,
            limits,
        })
    }

    /// Where requests for the upstream at `uri` (a validated `http`/`https` URL) go.
    pub fn target(&self, uri: &Uri) -> Result<UpstreamTarget, TlsError> {
        let o = &self.origins;
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = uri
            .authority()
            .cloned()
            .expect("validated upstream URL has a host");
        let host =
            HeaderValue::from_str(authority.as_str()).expect("an authority is a header value");
        let mut known = o.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, origin)) = known
            .iter()
            .find(|(s, a, _)| *s == scheme && *a == authority)
        {
            let origin = origin.clone();
            return Ok(UpstreamTarget { origin, host });
        }
        let endpoint = Endpoint::new(uri, &o.tls, o.connect_timeout)?;
        let origin = Arc::new(Origin::new(
            endpoint,
            o.workers,
            o.idle_per_pool,
            o.idle_timeout,
        ));
        known.push((scheme, authority, origin.clone()));
        Ok(UpstreamTarget { origin, host })
    }

    /// Closes idle upstream connections past `[upstream] pool_idle_timeout` every half of
    /// it, until `stop`.
    pub async fn sweep_idle(self, stop: CancellationToken) {
        let every = (self.origins.idle_timeout / 2).max(Duration::from_secs(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let origins: Vec<Arc<Origin>> = {
                let known = self.origins.known.lock().unwrap_or_else(|e| e.into_inner());
                known.iter().map(|(_, _, o)| o.clone()).collect()
            };
            let closed: usize = origins.iter().map(|o| o.sweep()).sum();
            if closed > 0 {
                tracing::debug!(closed, "idle upstream connections closed");
            }
        }
    }

    /// Forwards `req` to `target` and returns the upstream's answer (or a 502/504).
    /// The `added` fields go after the client's own, which were sanitised first.
    pub async fn forward(
        &self,
        target: &UpstreamTarget,
        mut req: Request<Body>,
        added: &AddedHeaders,
    ) -> Response<Body> {
        let Some(conn) = req.extensions().get::<ConnInfo>().cloned() else {
            return HttpError::BadRequest("no connection information".into())
                .to_response(req.headers());
        };
        let upgrade =
            req.version() == Version::HTTP_11 && headers::is_upgrade_request(req.headers());
        // A tunnel needs a connection slot of its own before the PBX is asked.
        let slot = match upgrade {
            true => match self.tunnels.permits.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => return HttpError::Busy.to_response(req.headers()),
            },
            false => None,
        };
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let version = req.version();
        let (mut parts, body) = req.into_parts();
        let forwarding = prepare(target, &conn, &mut parts, upgrade);
        let started = Instant::now();
        let added = [&forwarding, added];
        let sent = target
            .origin
            .send(&parts, &added, body, pieces_for(version));
        let result = tokio::time::timeout(self.response_timeout, sent).await;
        let elapsed = started.elapsed();
        let answer = match result {
            Ok(Ok(answer)) => answer,
            // Error pages look at `Accept` and `X-Requested-With`, which the PBX's copy of
            // the client's headers still has.
            Ok(Err(e)) => return self.failed(&conn, classify(&e), &e, &parts.headers),
            Err(_) => {
                let cause = &"response timeout";
                return self.failed(&conn, HttpError::UpstreamTimeout, cause, &parts.headers);
            }
        };
        conn.metrics.observe_upstream(elapsed.as_secs_f64());
        let mut response = answer.response;
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        headers::remove_hop_by_hop(response.headers_mut(), switching && upgrade);
        if let Some(upstream) = answer.upgraded {
            let Some((client, slot)) = client_upgrade.zip(slot) else {
                // The PBX switched protocols for a request that did not ask to.
                let cause = &"unrequested protocol switch";
                return self.failed(&conn, HttpError::UpstreamProtocol, cause, &parts.headers);
            };
            self.splice(client, upstream, conn.listener.clone(), slot);
        }
        // The request's extension map, emptied, carries the latency back: its table is
        // already allocated, where a new map would cost two allocations per request.
        let mut extensions = std::mem::take(&mut parts.extensions);
        extensions.clear();
        extensions.insert(UpstreamLatency(elapsed));
        let (mut parts, body) = response.into_parts();
        parts.extensions = extensions;
        Response::from_parts(parts, Body::new(body))
    }

    fn failed(
        &self,
        conn: &ConnInfo,
        error: HttpError,
        cause: &dyn std::fmt::Display,
        client_headers: &http::HeaderMap,
    ) -> Response<Body> {
        if matches!(error, HttpError::SlowRequest) {
            // The client's fault, not the PBX's: no upstream error is counted.
            tracing::debug!(listener = %conn.listener, peer = %conn.peer, "request body too slow");
            return error.to_response(client_headers);
        }
        let kind = match error {
            HttpError::UpstreamTimeout => "timeout",
            HttpError::UpstreamUnavailable => "connect",
            _ => "protocol",
        };
        self.metrics
            .upstream_errors
            .get_or_create(&KindLabels { kind })
            .inc();
        tracing::warn!(listener = %conn.listener, kind, error = %cause, "upstream request failed");
        error.to_response(client_headers)
    }

    /// Copies bytes both ways between the upgraded client and upstream connections until
    /// either side closes, nothing moves for `[server] websocket_idle_timeout`, or the hard
    /// shutdown deadline passes. `slot` is held until then.
    fn splice(
        &self,
        client: hyper::upgrade::OnUpgrade,
        mut upstream: Upgraded,
        listener: Arc<str>,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) {
        let stop = self.hard_stop.clone();
        let idle = self.limits.slow.websocket_idle_timeout;
        self.tunnels.tracker.spawn(async move {
            let _slot = slot;
            let client = match client.await {
                Ok(client) => client,
                Err(e) => {
                    tracing::debug!(%listener, error = %e, "upgrade did not complete");
                    return;
                }
            };
            let activity = Arc::new(Activity::default());
            let mut client = ActivityIo {
                inner: TokioIo::new(client),
                activity: activity.clone(),
            };
            tokio::select! {
                result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                    if let Err(e) = result {
                        tracing::debug!(%listener, error = %e, "upgraded connection ended with an error");
                    }
                }
                _ = activity.idle_for(idle) => {
                    tracing::debug!(%listener, "WebSocket tunnel idle; closing");
                }
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn classify(error: &ClientError) -> HttpError {
    if super::slow::SlowBody::in_chain(error) {
        HttpError::SlowRequest
    } else if error.is_connect() {
        // The connector reports its own timeout as a connect error: the PBX is not there.
        HttpError::UpstreamUnavailable
    } else {
        HttpError::UpstreamProtocol
    }
}

/// How the PBX's answer leaves the upstream read buffer for a client of `version`. An
/// HTTP/2 client's answers wait together in its connection's send queue: what they hand on
/// is copied when small, so none keeps a read buffer from the next read. An HTTP/1.1 client
/// takes one answer at a time and has written it out before the buffer is read into again:
/// sharing costs it nothing, and copying would cost every request an allocation and a copy.
fn pieces_for(version: Version) -> Pieces {
    match version {
        Version::HTTP_2 | Version::HTTP_3 => Pieces::CopiedWhenSmall,
        _ => Pieces::Shared,
    }
}

/// Makes a client's request one for the PBX: hop-by-hop and identity headers removed,
/// `Host` present, HTTP/1.1. Returns the forwarding headers to add.
fn prepare(
    target: &UpstreamTarget,
    conn: &ConnInfo,
    parts: &mut http::request::Parts,
    upgrade: bool,
) -> AddedHeaders {
    // HTTP/2 names the host in `:authority`; the PBX reads `Host`.
    if !parts.headers.contains_key(HOST) {
        let host = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .unwrap_or_else(|| target.host.clone());
        parts.headers.insert(HOST, host);
    }
    let headers = &mut parts.headers;
    headers::remove_hop_by_hop(headers, upgrade);
    headers::strip_identity_headers(headers);
    // A clone of the client's value shares its bytes; `to_str` keeps it to visible ASCII.
    let host = headers.get(HOST).filter(|h| h.to_str().is_ok()).cloned();
    let forwarding = headers::forwarding(headers, &conn.hop, host.as_ref());
    parts.version = Version::HTTP_11;
    forwarding
}
