//! Prometheus metrics of the whole gateway, exposed on the admin address at `/metrics`.
//! One [`Metrics`] is created at start-up and shared; recording is lock-free atomics except
//! for the first use of a label set. The edge's families live here; [`sign_in`] and
//! [`sync`] hold the sign-in and the sync/PBX families (`docs/operations.md` lists them
//! all, with the dashboard and alerts that use them).

mod sharded;
pub mod sign_in;
pub mod sync;

pub use sharded::{ShardedCounter, ShardedHistogram};

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: String,
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub listener: String,
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub listener: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// The outcomes of a received change notification (label values of `graph_notifications`).
pub const NOTIFICATION_OUTCOMES: [&str; 7] = [
    "accepted",
    "unknown_subscription",
    "client_state_mismatch",
    "malformed",
    "too_large",
    "rate_limited",
    "overloaded",
];

/// Every metric the gateway records.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, ShardedCounter>,
    pub request_duration: Family<RouteLabels, ShardedHistogram, fn() -> ShardedHistogram>,
    pub upstream_duration: Family<ListenerLabels, ShardedHistogram, fn() -> ShardedHistogram>,
    pub upstream_errors: Family<KindLabels, Counter>,
    pub tls_handshakes: Family<ResultLabels, Counter>,
    pub connections_open: Family<ListenerLabels, Gauge>,
    pub connections_total: Family<ListenerLabels, Counter>,
    pub cert_reloads: Family<KindLabels, Counter>,
    /// Users' own PBX sessions opened, renewed, refused, by outcome.
    pub pbx_sessions: Family<OutcomeLabels, Counter>,
    /// Graph change notifications received, by outcome (`accepted`, `unknown_subscription`,
    /// `client_state_mismatch`, `malformed`, `too_large`, `rate_limited`, `overloaded`).
    pub notifications: Family<OutcomeLabels, Counter>,
    pub sign_in: sign_in::SignInMetrics,
    pub sync: sync::SyncMetrics,
    /// Metrics named without the `ms365_gateway_` prefix, as documented for alerting.
    unprefixed: Registry,
    certificate_days_left: Family<TenantLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ms365_gateway");
        let requests = Family::default();
        let latency = ShardedHistogram::latency as fn() -> ShardedHistogram;
        let request_duration = Family::new_with_constructor(latency);
        let upstream_duration = Family::new_with_constructor(latency);
        let upstream_errors = Family::default();
        let tls_handshakes = Family::default();
        let connections_open = Family::default();
        let connections_total = Family::default();
        let cert_reloads = Family::default();
        registry.register(
            "http_requests",
            "Requests answered, by listener, route class and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to response headers, by route class",
            request_duration.clone(),
        );
        registry.register(
            "upstream_response_duration_seconds",
            "Time for the PBX to answer with headers",
            upstream_duration.clone(),
        );
        registry.register(
            "upstream_errors",
            "Proxied requests that failed: connect, timeout, protocol",
            upstream_errors.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes by result: ok, failed, timeout",
            tls_handshakes.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections open now",
            connections_open.clone(),
        );
        registry.register(
            "connections",
            "Client connections accepted",
            connections_total.clone(),
        );
        registry.register(
            "certificate_reloads",
            "Certificate reloads by result",
            cert_reloads.clone(),
        );
        let pbx_sessions = Family::default();
        registry.register(
            "pbx_sessions",
            "Users' own PBX sessions at Microsoft sign-in and renewal, by outcome",
            pbx_sessions.clone(),
        );
        let notifications = Family::default();
        registry.register(
            "graph_notifications",
            "Microsoft Graph change notifications received, by outcome",
            notifications.clone(),
        );
        for outcome in NOTIFICATION_OUTCOMES {
            let _ = notifications.get_or_create(&OutcomeLabels { outcome });
        }
        // Every kind exists from the start (at 0), so rate() and alerts see the series.
        for kind in ["connect", "timeout", "protocol"] {
            let _ = upstream_errors.get_or_create(&KindLabels { kind });
        }
        let sign_in = sign_in::SignInMetrics::register(&mut registry);
        let sync = sync::SyncMetrics::register(&mut registry);
        let mut unprefixed = Registry::default();
        let certificate_days_left = Family::default();
        unprefixed.register(
            "ms365_certificate_days_left",
            "Whole days until the tenant's signing certificate expires (negative: expired)",
            certificate_days_left.clone(),
        );
        Metrics {
            registry,
            unprefixed,
            certificate_days_left,
            requests,
            request_duration,
            upstream_duration,
            upstream_errors,
            tls_handshakes,
            connections_open,
            connections_total,
            cert_reloads,
            pbx_sessions,
            notifications,
            sign_in,
            sync,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.unprefixed);
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }

    /// Counts one PBX session event (`opened`, `renewed`, `password_rejected`, ...).
    pub fn count_pbx_session(&self, outcome: &'static str) {
        self.pbx_sessions
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Records how many whole days `tenant`'s signing certificate has left.
    pub fn set_certificate_days_left(&self, tenant: &str, days: i64) {
        self.certificate_days_left
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .set(days);
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Route classes used as the `route` label (bounded cardinality).
pub const ROUTE_CLASSES: [&str; 3] = ["sso", "admin", "proxy"];

/// One listener's request metrics with their label sets resolved once, so recording a
/// request costs no allocation and takes no lock: the proxy path records three metrics per
/// request, into the recording edge worker's own shards.
pub struct ListenerMetrics {
    metrics: Arc<Metrics>,
    listener: String,
    durations: [ShardedHistogram; 3],
    upstream: ShardedHistogram,
    /// Request counters by route class and status (100–599), made on first use.
    by_status: Box<[OnceLock<ShardedCounter>]>,
}

/// The statuses [`ListenerMetrics`] keeps a counter slot for; others are looked up by label.
const STATUS_SLOTS: std::ops::Range<u16> = 100..600;

impl std::fmt::Debug for ListenerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerMetrics")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl ListenerMetrics {
    pub fn new(metrics: Arc<Metrics>, listener: &str) -> Self {
        let duration = |route: &'static str| {
            metrics
                .request_duration
                .get_or_create(&RouteLabels {
                    listener: listener.to_string(),
                    route,
                })
                .clone()
        };
        let durations = ROUTE_CLASSES.map(duration);
        let upstream = metrics
            .upstream_duration
            .get_or_create(&ListenerLabels {
                listener: listener.to_string(),
            })
            .clone();
        let slots = ROUTE_CLASSES.len() * STATUS_SLOTS.len();
        ListenerMetrics {
            durations,
            upstream,
            by_status: (0..slots).map(|_| OnceLock::new()).collect(),
            listener: listener.to_string(),
            metrics,
        }
    }

    fn route_index(route: &str) -> usize {
        ROUTE_CLASSES
            .iter()
            .position(|r| *r == route)
            .unwrap_or(ROUTE_CLASSES.len() - 1)
    }

    pub fn observe_duration(&self, route: &str, seconds: f64) {
        self.durations[Self::route_index(route)].observe(seconds);
    }

    pub fn observe_upstream(&self, seconds: f64) {
        self.upstream.observe(seconds);
    }

    pub fn count_request(&self, route: &str, status: u16) {
        let route = Self::route_index(route);
        let counter = || {
            let labels = RequestLabels {
                listener: self.listener.clone(),
                route: ROUTE_CLASSES[route],
                status,
            };
            self.metrics.requests.get_or_create(&labels).clone()
        };
        if !STATUS_SLOTS.contains(&status) {
            return counter().inc();
        }
        let slot = route * STATUS_SLOTS.len() + usize::from(status - STATUS_SLOTS.start);
        self.by_status[slot].get_or_init(counter).inc();
    }
}
