//! The reverse proxy to the PBX: every path the gateway does not own ends here. Bodies stream
//! both ways (the client's body is handed to the upstream request as it arrives, the
//! upstream's body to the client), WebSocket upgrades are spliced into a bidirectional copy,
//! and upstream failures become quick 502/504 answers while the gateway keeps serving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::access_log::UpstreamLatency;
use super::conn::ConnInfo;
use super::headers;
use super::problem::HttpError;
use super::slow::{Activity, ActivityIo};
use super::tls::TlsError;
use crate::config::{ServerLimits, UpstreamConfig};
use crate::metrics::{KindLabels, Metrics};

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The upstream HTTP client, shared by every listener: a keep-alive pool per edge worker, so
/// a request and the upstream connection that carries it run on the same thread.
#[derive(Clone)]
pub struct Upstream {
    clients: Arc<[Client<Connector, Body>]>,
    response_timeout: Duration,
    metrics: Arc<Metrics>,
    tunnels: Tunnels,
    hard_stop: CancellationToken,
    limits: Arc<ServerLimits>,
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
#[derive(Clone, Debug)]
pub struct UpstreamTarget {
    scheme: Scheme,
    authority: Authority,
}

impl UpstreamTarget {
    pub fn new(uri: &Uri) -> Self {
        UpstreamTarget {
            scheme: uri.scheme().cloned().unwrap_or(Scheme::HTTP),
            authority: uri
                .authority()
                .cloned()
                .expect("validated upstream URL has a host"),
        }
    }

    fn uri_for(&self, original: &Uri) -> Result<Uri, http::Error> {
        let path = original
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
    }
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
        let idle_per_pool = config.pool_max_idle_per_host.div_ceil(workers);
        let connector = upstream_connector(config)?;
        let clients = (0..workers)
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(config.pool_idle_timeout)
                    .pool_max_idle_per_host(idle_per_pool)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .build(connector.clone())
            })
            .collect();
        Ok(Upstream {
            clients,
            response_timeout: config.response_timeout,
            metrics,
            tunnels,
            hard_stop,
            limits,
        })
    }

    /// The pool of the edge worker this runs on (the first one elsewhere).
    fn client(&self) -> &Client<Connector, Body> {
        let index = super::workers::current().unwrap_or(0);
        &self.clients[index % self.clients.len()]
    }

    /// Forwards `req` to `target` and returns the upstream's answer (or a 502/504).
    /// `identity` headers are set after the client's own headers were sanitised.
    pub async fn forward(
        &self,
        target: &UpstreamTarget,
        mut req: Request<Body>,
        identity: http::HeaderMap,
    ) -> Response<Body> {
        let Some(conn) = req.extensions().get::<ConnInfo>().cloned() else {
            return HttpError::BadRequest("no connection information".into())
                .to_response(req.headers());
        };
        // Only what error pages look at, not a copy of every header.
        let client_headers = crate::edge::problem::negotiation_headers(req.headers());
        let upgrade =
            req.version() == Version::HTTP_11 && headers::is_upgrade_request(req.headers());
        // A tunnel needs a connection slot of its own before the PBX is asked.
        let slot = match upgrade {
            true => match self.tunnels.permits.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => return HttpError::Busy.to_response(&client_headers),
            },
            false => None,
        };
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let mut outgoing = match self.prepare(target, &conn, req, upgrade) {
            Ok(r) => r,
            Err(e) => return e.to_response(&client_headers),
        };
        outgoing.headers_mut().extend(identity);
        let started = Instant::now();
        let result =
            tokio::time::timeout(self.response_timeout, self.client().request(outgoing)).await;
        let elapsed = started.elapsed();
        let mut response = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return self.failed(&conn, classify(&e), &e, &client_headers),
            Err(_) => {
                return self.failed(
                    &conn,
                    HttpError::UpstreamTimeout,
                    &"response timeout",
                    &client_headers,
                );
            }
        };
        conn.metrics.observe_upstream(elapsed.as_secs_f64());
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        headers::remove_hop_by_hop(response.headers_mut(), switching && upgrade);
        if let (true, Some(client_upgrade), Some(slot)) = (switching, client_upgrade, slot) {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            self.splice(
                client_upgrade,
                upstream_upgrade,
                conn.listener.clone(),
                slot,
            );
        }
        let (mut parts, body) = response.into_parts();
        parts.extensions.insert(UpstreamLatency(elapsed));
        Response::from_parts(parts, Body::new(body))
    }

    fn prepare(
        &self,
        target: &UpstreamTarget,
        conn: &ConnInfo,
        req: Request<Body>,
        upgrade: bool,
    ) -> Result<Request<Body>, HttpError> {
        let (mut parts, body) = req.into_parts();
        let uri = target
            .uri_for(&parts.uri)
            .map_err(|e| HttpError::BadRequest(format!("bad request target: {e}")))?;
        // HTTP/2 names the host in `:authority`; the PBX reads `Host`.
        if !parts.headers.contains_key(HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(HOST, host);
        }
        let headers = &mut parts.headers;
        headers::remove_hop_by_hop(headers, upgrade);
        headers::strip_identity_headers(headers);
        let host = headers.get(HOST).cloned();
        let host = host.as_ref().and_then(|h| h.to_str().ok());
        headers::set_forwarded(headers, &conn.hop, host);
        parts.uri = uri;
        // The PBX speaks HTTP/1.1; an HTTP/2 client's request is translated.
        parts.version = Version::HTTP_11;
        Ok(Request::from_parts(parts, body))
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
        upstream: hyper::upgrade::OnUpgrade,
        listener: Arc<str>,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) {
        let stop = self.hard_stop.clone();
        let idle = self.limits.slow.websocket_idle_timeout;
        self.tunnels.tracker.spawn(async move {
            let _slot = slot;
            let (client, upstream) = match tokio::try_join!(client, upstream) {
                Ok(pair) => pair,
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
            let mut upstream = TokioIo::new(upstream);
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

fn classify(error: &hyper_util::client::legacy::Error) -> HttpError {
    if super::slow::SlowBody::in_chain(error) {
        HttpError::SlowRequest
    } else if error.is_connect() {
        // The connector reports its own timeout as a connect error: the PBX is not there.
        HttpError::UpstreamUnavailable
    } else {
        HttpError::UpstreamProtocol
    }
}

/// The connector every pool uses: plain TCP or TLS to the PBX, as its URL says.
fn upstream_connector(config: &UpstreamConfig) -> Result<Connector, TlsError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let tls = upstream_tls_config(config)?;
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

fn upstream_tls_config(config: &UpstreamConfig) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &config.ca_file {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let err = |reason: String| TlsError::Load {
            key: "upstream.ca_file".into(),
            path: path.clone(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))?;
        for cert in certs {
            roots
                .add(cert.map_err(|e| err(e.to_string()))?)
                .map_err(|e| err(e.to_string()))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(super::tls::crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tls)
}
