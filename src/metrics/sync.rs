//! Directory sync and PBX connector metrics: what an operator is paged about when "the
//! directory stopped syncing". Runs by trigger and status, phase durations, the last
//! successful run, objects per phase and action, runs held at the deletion threshold,
//! Microsoft Graph traffic and throttling, and the PBX's requests, retries, token renewals,
//! errors and reachability. Every label is a tenant id or a word from a closed set.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub tenant: String,
    pub trigger: &'static str,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub tenant: String,
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub tenant: String,
    pub kind: String,
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PbxRequestLabels {
    pub tenant: String,
    pub operation: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindCountLabels {
    pub tenant: String,
    pub kind: &'static str,
}

fn phase_histogram() -> Histogram {
    // 0.1 s .. ~3.6 h
    Histogram::new(exponential_buckets(0.1, 2.0, 18))
}

/// The sync and PBX families.
pub struct SyncMetrics {
    runs: Family<RunLabels, Counter>,
    phase_duration: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    last_success: Family<TenantLabel, Gauge>,
    objects: Family<ObjectLabels, Counter>,
    held: Family<TenantLabel, Counter>,
    graph_requests: Family<KindCountLabels, Counter>,
    graph_throttled: Family<TenantLabel, Counter>,
    graph_retry_wait: Family<TenantLabel, Counter<f64>>,
    pbx_requests: Family<PbxRequestLabels, Counter>,
    pbx_retries: Family<TenantLabel, Counter>,
    pbx_throttled: Family<TenantLabel, Counter>,
    pbx_token_renewals: Family<KindCountLabels, Counter>,
    pbx_errors: Family<KindCountLabels, Counter>,
    pbx_up: Family<TenantLabel, Gauge>,
}

/// What one run did, in the terms the metrics use (built by the sync worker).
#[derive(Debug, Default)]
pub struct RunFigures<'a> {
    pub tenant: &'a str,
    pub trigger: &'static str,
    pub status: &'static str,
    /// Unix seconds the run ended, when it succeeded.
    pub succeeded_at: Option<i64>,
    pub held: bool,
    /// (phase, seconds).
    pub phases: Vec<(&'static str, f64)>,
    /// (kind, action, count): `users`/`created`, `pbx`/`failed`, …
    pub objects: Vec<(String, &'static str, u64)>,
    /// Graph requests by kind (`users`, `delta`, `photo`, `contacts`, `batch`).
    pub graph_requests: Vec<(&'static str, u64)>,
    pub graph_throttled: u64,
    pub graph_retry_wait_seconds: f64,
    pub pbx: Option<PbxFigures>,
}

/// The PBX connector's share of a run.
#[derive(Debug, Default, Clone)]
pub struct PbxFigures {
    /// (operation, outcome, attempts): `POST /users/{id}`, `ok`.
    pub by_operation: Vec<(String, &'static str, u64)>,
    pub retries: u64,
    pub throttled: u64,
    pub sign_ins: u64,
    pub refreshes: u64,
    /// The phase failed as a whole: `unreachable`, `sign_in`, `local`, or `other`.
    pub error: Option<&'static str>,
    /// Objects the PBX refused (4xx) this run.
    pub rejected: u64,
}

impl SyncMetrics {
    pub(super) fn register(registry: &mut Registry) -> SyncMetrics {
        let m = SyncMetrics {
            runs: Family::default(),
            phase_duration: Family::new_with_constructor(phase_histogram as fn() -> Histogram),
            last_success: Family::default(),
            objects: Family::default(),
            held: Family::default(),
            graph_requests: Family::default(),
            graph_throttled: Family::default(),
            graph_retry_wait: Family::default(),
            pbx_requests: Family::default(),
            pbx_retries: Family::default(),
            pbx_throttled: Family::default(),
            pbx_token_renewals: Family::default(),
            pbx_errors: Family::default(),
            pbx_up: Family::default(),
        };
        let r = registry;
        r.register(
            "sync_runs",
            "Sync runs by tenant, trigger and final status",
            m.runs.clone(),
        );
        r.register(
            "sync_phase_duration_seconds",
            "Time per sync phase (users, photos, contacts, pbx)",
            m.phase_duration.clone(),
        );
        r.register(
            "sync_last_success_timestamp_seconds",
            "When the tenant's last successful sync run ended (Unix time)",
            m.last_success.clone(),
        );
        r.register(
            "sync_objects",
            "Objects a sync wrote, by kind and action (created, updated, disabled, deleted, adopted, failed)",
            m.objects.clone(),
        );
        r.register(
            "sync_runs_held",
            "Runs held for approval by the deletion threshold",
            m.held.clone(),
        );
        r.register(
            "graph_requests",
            "Microsoft Graph requests by tenant and kind, retries included",
            m.graph_requests.clone(),
        );
        r.register(
            "graph_throttled",
            "Microsoft Graph 429/503 answers",
            m.graph_throttled.clone(),
        );
        r.register(
            "graph_retry_wait_seconds",
            "Time spent waiting before Microsoft Graph retries (Retry-After or backoff)",
            m.graph_retry_wait.clone(),
        );
        r.register(
            "pbx_requests",
            "PBX REST API requests, retries included",
            m.pbx_requests.clone(),
        );
        r.register(
            "pbx_retries",
            "PBX requests sent again (5xx, 429, connection failures)",
            m.pbx_retries.clone(),
        );
        r.register("pbx_throttled", "PBX 429 answers", m.pbx_throttled.clone());
        r.register(
            "pbx_token_renewals",
            "PBX administrator sign-ins and token refreshes, by kind",
            m.pbx_token_renewals.clone(),
        );
        r.register(
            "pbx_errors",
            "PBX failures: a phase stopped (unreachable, sign_in, local, other) or objects rejected",
            m.pbx_errors.clone(),
        );
        r.register(
            "pbx_up",
            "1 when the tenant's last PBX phase reached and signed in to the PBX",
            m.pbx_up.clone(),
        );
        m
    }

    /// Records one finished run.
    pub fn record_run(&self, f: &RunFigures<'_>) {
        let tenant = || TenantLabel {
            tenant: f.tenant.to_string(),
        };
        (self.runs)
            .get_or_create(&RunLabels {
                tenant: f.tenant.to_string(),
                trigger: f.trigger,
                status: f.status,
            })
            .inc();
        if let Some(at) = f.succeeded_at {
            self.last_success.get_or_create(&tenant()).set(at);
        }
        // Touched on every run, so the series exists (at 0) before the first hold.
        self.held.get_or_create(&tenant()).inc_by(u64::from(f.held));
        for (phase, seconds) in &f.phases {
            let labels = PhaseLabels {
                tenant: f.tenant.to_string(),
                phase,
            };
            self.phase_duration.get_or_create(&labels).observe(*seconds);
        }
        for (kind, action, n) in &f.objects {
            let labels = ObjectLabels {
                tenant: f.tenant.to_string(),
                kind: kind.clone(),
                action,
            };
            self.objects.get_or_create(&labels).inc_by(*n);
        }
        for (kind, n) in &f.graph_requests {
            let labels = KindCountLabels {
                tenant: f.tenant.to_string(),
                kind,
            };
            self.graph_requests.get_or_create(&labels).inc_by(*n);
        }
        self.graph_throttled
            .get_or_create(&tenant())
            .inc_by(f.graph_throttled);
        (self.graph_retry_wait.get_or_create(&tenant())).inc_by(f.graph_retry_wait_seconds);
        if let Some(p) = &f.pbx {
            self.record_pbx(f.tenant, p);
        }
    }

    fn record_pbx(&self, tenant: &str, p: &PbxFigures) {
        let t = TenantLabel {
            tenant: tenant.to_string(),
        };
        let kind = |kind: &'static str| KindCountLabels {
            tenant: tenant.to_string(),
            kind,
        };
        for (operation, outcome, n) in &p.by_operation {
            let labels = PbxRequestLabels {
                tenant: tenant.to_string(),
                operation: operation.clone(),
                outcome,
            };
            self.pbx_requests.get_or_create(&labels).inc_by(*n);
        }
        self.pbx_retries.get_or_create(&t).inc_by(p.retries);
        self.pbx_throttled.get_or_create(&t).inc_by(p.throttled);
        (self.pbx_token_renewals.get_or_create(&kind("sign_in"))).inc_by(p.sign_ins);
        (self.pbx_token_renewals.get_or_create(&kind("refresh"))).inc_by(p.refreshes);
        if let Some(error) = p.error {
            self.pbx_errors.get_or_create(&kind(error)).inc();
        }
        self.pbx_errors
            .get_or_create(&kind("rejected"))
            .inc_by(p.rejected);
        self.pbx_up
            .get_or_create(&t)
            .set(i64::from(p.error.is_none()));
    }
}
