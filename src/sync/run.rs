//! The run record as a run goes: created `running` at the start, progress (phase,
//! done/total) written after every page and every batch so the admin API can show it live,
//! counts and per-item errors (capped) gathered as they happen, Graph requests and
//! throttled answers taken from the client's counters, and the end written once. A dry run
//! keeps all of this in memory only: it must change nothing, its record included.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::plan::{Effect, count};
use super::{ProgressFn, SyncOptions};
use crate::graph::{GraphClient, GraphStats};
use crate::ids::{ObjectId, TenantId};
use crate::store::{
    EntityCounts, ItemError, ItemOutcome, MAX_RUN_ERRORS, RunOutcome, RunStatus, RunTrigger, Store,
    StoreError, SyncRun, now_epoch,
};

/// Live progress, as handed to [`SyncOptions::progress`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub run_id: String,
    /// `fetch`, `apply`.
    pub phase: &'static str,
    pub done: u64,
    /// 0 while unknown (a delta round does not say how many pages it has).
    pub total: u64,
}

/// What a run did (or, for a dry run, would do).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub run_id: String,
    pub tenant_id: TenantId,
    pub trigger: RunTrigger,
    pub status: RunStatus,
    /// `full` or `delta`, once fetched.
    pub mode: Option<String>,
    pub dry_run: bool,
    pub started_at: i64,
    pub finished_at: i64,
    /// Per entity kind (`users`).
    pub counts: BTreeMap<String, EntityCounts>,
    /// At most [`MAX_RUN_ERRORS`] skipped or failed items with reasons.
    pub errors: Vec<ItemError>,
    pub errors_total: u64,
    pub graph_requests: u64,
    pub throttled: u64,
    /// The run disables/deletes more users than the threshold allows.
    pub threshold_exceeded: bool,
    pub message: Option<String>,
    /// Dry runs: the planned changes, one line each (at most [`MAX_PREVIEW`]).
    pub preview: Vec<String>,
    /// Targeted runs only: the users the users phase created or updated (their photos are
    /// checked next).
    pub changed_oids: Vec<ObjectId>,
    /// Targeted runs only: every user the users phase changed, for the PBX phase to push
    /// alone; `None` when it deleted one (the PBX phase then compares the whole record).
    pub touched_oids: Option<Vec<ObjectId>>,
}

/// Longest dry-run preview.
pub const MAX_PREVIEW: usize = 1000;

/// The running record of one run.
pub(crate) struct Tracker {
    store: Store,
    pub run_id: String,
    tenant_id: TenantId,
    trigger: RunTrigger,
    dry_run: bool,
    /// See [`SyncOptions::keep_open`].
    keep_open: bool,
    started_at: i64,
    pub mode: Option<String>,
    pub users: EntityCounts,
    errors: Vec<ItemError>,
    errors_total: u64,
    graph: Option<(GraphClient, GraphStats)>,
    /// Traffic recorded earlier (an approved run's fetch).
    graph_before: (u64, u64),
    progress: Option<ProgressFn>,
    pub threshold_exceeded: bool,
    pub preview: Vec<String>,
    /// Remarks for the report (e.g. "the delta token had expired").
    pub notes: Vec<String>,
}

impl Tracker {
    /// Starts a run: a `running` record (none for a dry run). Older runs of the tenant
    /// still `running` died with their process; older held plans are superseded.
    pub async fn start(
        store: &Store,
        tenant_id: &TenantId,
        opts: &SyncOptions,
        graph: &GraphClient,
    ) -> Result<Tracker, StoreError> {
        let run_id = if opts.dry_run {
            uuid::Uuid::new_v4().to_string()
        } else {
            let id = store.create_sync_run(tenant_id, opts.trigger).await?;
            store.close_stale_sync_runs(tenant_id, &id).await?;
            id
        };
        Ok(Tracker {
            store: store.clone(),
            run_id,
            tenant_id: tenant_id.clone(),
            trigger: opts.trigger,
            dry_run: opts.dry_run,
            keep_open: opts.keep_open,
            started_at: now_epoch(),
            mode: None,
            users: EntityCounts::default(),
            errors: Vec::new(),
            errors_total: 0,
            graph: Some((graph.clone(), graph.stats())),
            graph_before: (0, 0),
            progress: opts.progress.clone(),
            threshold_exceeded: false,
            preview: Vec::new(),
            notes: Vec::new(),
        })
    }

    /// Continues an approved run: its skips and traffic stay, its change counts restart.
    pub fn resume(store: &Store, run: &SyncRun, opts: &SyncOptions) -> Tracker {
        let earlier = run.counts.get("users").copied().unwrap_or_default();
        Tracker {
            store: store.clone(),
            run_id: run.id.clone(),
            tenant_id: run.tenant_id.clone(),
            trigger: run.trigger,
            dry_run: false,
            keep_open: opts.keep_open,
            started_at: run.started_at,
            mode: run.mode.clone(),
            users: EntityCounts {
                skipped: earlier.skipped,
                ..EntityCounts::default()
            },
            errors: run.errors.clone(),
            errors_total: run.errors_total,
            graph: None,
            graph_before: (run.graph_requests, run.throttled),
            progress: opts.progress.clone(),
            threshold_exceeded: false,
            preview: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn is_dry(&self) -> bool {
        self.dry_run
    }

    /// Reports progress to the store (best effort: bookkeeping must not fail a run) and
    /// to the caller's callback.
    pub async fn progress(&self, phase: &'static str, done: u64, total: u64) {
        if !self.dry_run
            && let Err(e) = (self.store)
                .update_sync_progress(&self.run_id, phase, done, total)
                .await
        {
            tracing::warn!(run = %self.run_id, error = %e, "cannot record sync progress");
        }
        if let Some(callback) = &self.progress {
            callback(&Progress {
                run_id: self.run_id.clone(),
                phase,
                done,
                total,
            });
        }
    }

    pub fn count(&mut self, effect: Effect) {
        count(&mut self.users, effect);
    }

    /// Records a skipped or failed user (counted; kept up to the cap).
    pub fn item(&mut self, item: ItemError) {
        match item.outcome {
            ItemOutcome::Skipped => self.users.skipped += 1,
            ItemOutcome::Failed => self.users.failed += 1,
        }
        self.errors_total += 1;
        if self.errors.len() < MAX_RUN_ERRORS {
            self.errors.push(item);
        }
    }

    pub fn fail_item(&mut self, oid: &str, name: &str, reason: impl Into<String>) {
        self.item(ItemError {
            entity: "user".into(),
            key: oid.to_string(),
            name: name.to_string(),
            outcome: ItemOutcome::Failed,
            reason: reason.into(),
        });
    }

    fn traffic(&self) -> (u64, u64) {
        let (mut requests, mut throttled) = self.graph_before;
        if let Some((client, before)) = &self.graph {
            let now = client.stats();
            requests += now.requests.saturating_sub(before.requests);
            throttled += now.throttled.saturating_sub(before.throttled);
        }
        (requests, throttled)
    }

    /// Ends the run: writes the record (not for dry runs) and returns the report.
    pub async fn finish(
        self,
        status: RunStatus,
        message: Option<String>,
        pending_json: Option<String>,
    ) -> Result<RunReport, StoreError> {
        let (graph_requests, throttled) = self.traffic();
        let parts: Vec<String> = message.into_iter().chain(self.notes.clone()).collect();
        let message = (!parts.is_empty()).then(|| parts.join("; "));
        let counts = BTreeMap::from([("users".to_string(), self.users)]);
        if !self.dry_run {
            // A run with phases still to come is not over: readers must not see it end.
            let stored = if self.keep_open && status == RunStatus::Succeeded {
                RunStatus::Running
            } else {
                status
            };
            let outcome = RunOutcome {
                status: stored,
                mode: self.mode.clone(),
                message: message.clone(),
                counts: counts.clone(),
                errors: self.errors.clone(),
                errors_total: self.errors_total,
                graph_requests,
                throttled,
                pending_json,
            };
            self.store.finish_sync_run(&self.run_id, &outcome).await?;
        }
        Ok(RunReport {
            run_id: self.run_id,
            tenant_id: self.tenant_id,
            trigger: self.trigger,
            status,
            mode: self.mode,
            dry_run: self.dry_run,
            started_at: self.started_at,
            finished_at: now_epoch(),
            counts,
            errors: self.errors,
            errors_total: self.errors_total,
            graph_requests,
            throttled,
            threshold_exceeded: self.threshold_exceeded,
            message,
            preview: self.preview,
            changed_oids: Vec::new(),
            touched_oids: None,
        })
    }
}
