//! A finished run in the terms of the sync metrics ([`crate::metrics::sync`]): the run's
//! status and trigger, its phase durations, what it wrote per kind and action, its Graph and
//! PBX traffic. Pure: the worker records what this returns.

use super::orchestrate::RunSummary;
use crate::metrics::sync::{PbxFigures, RunFigures};
use crate::store::RunStatus;

/// The actions counted per kind, as the run record counts them.
const ACTIONS: [&str; 6] = [
    "created", "updated", "disabled", "deleted", "adopted", "failed",
];

/// The figures of `s`.
pub fn figures(s: &RunSummary) -> RunFigures<'_> {
    let report = &s.users;
    let mut objects = Vec::new();
    for (kind, c) in &report.counts {
        let values = [
            c.created, c.updated, c.disabled, c.deleted, c.adopted, c.failed,
        ];
        for (action, n) in ACTIONS.iter().zip(values) {
            if n > 0 {
                objects.push((kind.clone(), *action, n));
            }
        }
    }
    let pbx = s.pbx_stats.as_ref().map(|p| PbxFigures {
        by_operation: (p.by_operation.iter())
            .map(|((op, outcome), n)| (op.clone(), *outcome, *n))
            .collect(),
        retries: p.retries,
        throttled: p.throttled,
        sign_ins: p.sign_ins,
        refreshes: p.refreshes,
        error: s.pbx_error_kind,
        rejected: (s.pbx.as_ref()).map_or(0, |r| r.users.failed + r.contacts.failed),
    });
    RunFigures {
        tenant: s.tenant_id.as_str(),
        trigger: s.trigger.as_str(),
        status: report.status.as_str(),
        succeeded_at: (report.status == RunStatus::Succeeded).then_some(report.finished_at),
        held: report.status == RunStatus::AwaitingApproval,
        phases: s.phase_seconds.clone(),
        objects,
        graph_requests: s.graph.by_kind.iter().map(|(k, n)| (*k, *n)).collect(),
        graph_throttled: s.graph.throttled,
        graph_retry_wait_seconds: s.graph.waited_ms as f64 / 1000.0,
        pbx,
    }
}
