//! The sync worker: a queue of tenant sync requests, one run per tenant at a time, runs of
//! different tenants in parallel up to a bound, and the per-tenant schedule.
//!
//! Coalescing rule (what "sync now" while a sync is pending means):
//! - tenant idle → a run is queued ([`RequestOutcome::Queued`]);
//! - tenant queued, not started (waiting for a slot) → the request joins the queued run
//!   ([`RequestOutcome::CoalescedIntoQueued`]); the trigger of the first request is kept;
//! - tenant running → the request is merged into the running run
//!   ([`RequestOutcome::CoalescedIntoRunning`]): no follow-up run is queued, the requester
//!   gets the running run's result. A change made in Microsoft 365 after that run fetched its
//!   delta is picked up by the next run (scheduled or requested).
//!
//! So a tenant never has more than one run in flight and one in the queue, and N requests in
//! a burst make one run.
//!
//! A run: [`context::for_tenant`], then [`run_phases`] (users, photos, contacts, as the
//! tenant has them on). Failures are logged and handed to the requesters; they never stop
//! the worker.
//!
//! Schedule: every [`SCHEDULE_TICK`] the worker reads the tenants' settings and queues, with
//! trigger `schedule`, every tenant whose `users.enabled` is set (automatic mode) and whose
//! `sync_time` (in its `time_zone`) came due since the previous check (see [`due_tenants`]).
//!
//! Shutdown: when the token fires the worker stops taking work, each run drops its sync
//! future and hands its lease back (each write of the engine is its own transaction, so the
//! store stays consistent; the next run closes the interrupted run record), and it returns.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::lease::{LeaseConfig, LeaseError, MAINTENANCE_SUFFIX, is_orphaned, run_leased};
pub use super::orchestrate::RunSummary;
use super::orchestrate::run_phases;
use super::subscriptions::{NotificationUrls, reconcile};
use super::{RunStatus, RunTrigger, SyncError, SyncOptions, Targets, context, retry_of};
use crate::config::Config;
use crate::ids::TenantId;
use crate::keyring::Keyring;
use crate::settings::Ms365Settings;
use crate::store::{Store, StoreError};

/// Runs of different tenants at once, unless told otherwise.
pub const DEFAULT_CONCURRENCY: usize = 2;
/// How often the schedule is checked.
pub const SCHEDULE_TICK: Duration = Duration::from_secs(30);

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A new run was queued.
    Queued,
    /// The tenant is running; the request is answered by that run.
    CoalescedIntoRunning,
    /// A run of the tenant was already queued; the request joined it.
    CoalescedIntoQueued,
}

/// The result of a run as requesters see it: the summary or why there is none.
pub type RunResult = Result<RunSummary, RunFailure>;

/// Why a requested run has no summary: it did not start, or it stopped before its record
/// was written. A run that started and failed has a summary with status `failed`.
#[derive(Debug, thiserror::Error)]
pub enum RunFailure {
    /// The tenant's lease: another instance holds it, or it was lost mid-run.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The run could not be prepared (settings, credentials, PBX sign-in) or its phases
    /// failed before a record.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The notification queue of a notification run could not be read.
    #[error("cannot read the notification queue: {0}")]
    Queue(#[source] StoreError),
    #[error("cancelled: the gateway is shutting down")]
    Cancelled,
    #[error("the sync worker stopped before the run finished")]
    WorkerStopped,
}

/// The worker stopped; it takes no more requests.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the sync worker has stopped")]
pub struct WorkerStopped;

/// A request's receipt: how it was handled, and the run's result when it ends.
#[derive(Debug)]
pub struct RunTicket {
    pub outcome: RequestOutcome,
    rx: watch::Receiver<Option<Arc<RunResult>>>,
}

impl RunTicket {
    /// Waits for the run answering this request to finish.
    pub async fn wait(mut self) -> Arc<RunResult> {
        match self.rx.wait_for(|r| r.is_some()).await {
            Ok(r) => r.clone().expect("checked by wait_for"),
            Err(_) => Arc::new(Err(RunFailure::WorkerStopped)),
        }
    }
}

type Done = watch::Sender<Option<Arc<RunResult>>>;

enum Slot {
    Queued { trigger: RunTrigger, done: Done },
    Running { done: Done },
}

#[derive(Default)]
struct State {
    queue: VecDeque<TenantId>,
    tenants: HashMap<TenantId, Slot>,
    /// Tenants whose Graph subscriptions want attention ([`SyncHandle::request_maintenance`]).
    maintenance: HashSet<TenantId>,
    /// Tenants whose subscriptions are being reconciled now: their runs wait.
    maintaining: HashSet<TenantId>,
    stopped: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
}

/// Hands sync requests to the worker; cheap to clone.
#[derive(Clone)]
pub struct SyncHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SyncHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncHandle").finish_non_exhaustive()
    }
}

impl SyncHandle {
    /// Asks for a sync of `tenant_id` (see the module's coalescing rule).
    pub fn request(
        &self,
        tenant_id: &TenantId,
        trigger: RunTrigger,
    ) -> Result<RunTicket, WorkerStopped> {
        let mut state = self.shared.state.lock().expect("worker state poisoned");
        if state.stopped {
            return Err(WorkerStopped);
        }
        let (outcome, rx) = match state.tenants.get(tenant_id) {
            Some(Slot::Queued { done, .. }) => {
                (RequestOutcome::CoalescedIntoQueued, done.subscribe())
            }
            Some(Slot::Running { done }) => {
                (RequestOutcome::CoalescedIntoRunning, done.subscribe())
            }
            None => {
                let (done, rx) = watch::channel(None);
                state
                    .tenants
                    .insert(tenant_id.clone(), Slot::Queued { trigger, done });
                state.queue.push_back(tenant_id.clone());
                (RequestOutcome::Queued, rx)
            }
        };
        drop(state);
        self.shared.wake.notify_one();
        Ok(RunTicket { outcome, rx })
    }

    /// Asks for the tenant's Graph subscriptions to be reconciled
    /// ([`super::subscriptions::reconcile`]) under the tenant's lease, between runs.
    pub fn request_maintenance(&self, tenant_id: &TenantId) -> Result<(), WorkerStopped> {
        let mut state = self.shared.state.lock().expect("worker state poisoned");
        if state.stopped {
            return Err(WorkerStopped);
        }
        state.maintenance.insert(tenant_id.clone());
        drop(state);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Whether this instance holds (or is about to take) the tenant's lease: a run queued
    /// or running, or its subscriptions being reconciled.
    pub fn holds_tenant(&self, tenant_id: &TenantId) -> bool {
        let state = self.shared.state.lock().expect("worker state poisoned");
        state.tenants.contains_key(tenant_id) || state.maintaining.contains(tenant_id)
    }

    /// Whether `tenant_id` has a run queued or running.
    pub fn is_busy(&self, tenant_id: &TenantId) -> bool {
        let state = self.shared.state.lock().expect("worker state poisoned");
        state.tenants.contains_key(tenant_id)
    }
}

/// The worker task; see the module documentation.
pub struct SyncWorker {
    config: Arc<Config>,
    store: Store,
    /// Where the tenants' private keys are.
    keyring: Keyring,
    shutdown: CancellationToken,
    concurrency: usize,
    tick: Duration,
    /// This instance's identity and lease lifetime for per-tenant sync leases.
    lease: LeaseConfig,
    shared: Arc<Shared>,
    /// Where finished runs are counted (`/metrics`); `None` in tests that do not look.
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Where Graph delivers change notifications (the pbx listener's public URL).
    urls: Option<NotificationUrls>,
}

impl SyncWorker {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        keyring: Keyring,
        shutdown: CancellationToken,
    ) -> SyncWorker {
        SyncWorker {
            store,
            keyring,
            shutdown,
            concurrency: DEFAULT_CONCURRENCY,
            tick: SCHEDULE_TICK,
            lease: LeaseConfig::default(),
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Notify::new(),
            }),
            metrics: None,
            urls: notification_urls(&config),
            config,
        }
    }

    /// Counts finished runs in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> SyncWorker {
        self.metrics = Some(metrics);
        self
    }

    /// Runs of different tenants at once (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> SyncWorker {
        self.concurrency = n.max(1);
        self
    }

    /// How often the schedule is checked.
    pub fn with_schedule_tick(mut self, tick: Duration) -> SyncWorker {
        self.tick = tick.max(Duration::from_millis(10));
        self
    }

    /// The instance name and lease lifetime (tests shorten it to see a dead owner's lease
    /// expire).
    pub fn with_lease(mut self, lease: LeaseConfig) -> SyncWorker {
        self.lease = lease;
        self
    }

    pub fn handle(&self) -> SyncHandle {
        SyncHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves requests and the schedule until the shutdown token fires.
    pub async fn run(self) {
        let mut running: JoinSet<(TenantId, RunResult)> = JoinSet::new();
        let mut maintaining: JoinSet<TenantId> = JoinSet::new();
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_check = Utc::now();
        let handle = self.handle();
        loop {
            self.dispatch(&mut running);
            self.maintain(&mut maintaining);
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = self.shared.wake.notified() => {}
                Some(joined) = maintaining.join_next() => {
                    let mut state = self.shared.state.lock().expect("worker state poisoned");
                    match joined {
                        Ok(tenant) => { state.maintaining.remove(&tenant); }
                        Err(e) => {
                            tracing::error!(error = %e, "subscription maintenance ended abnormally");
                            state.maintaining.clear();
                        }
                    }
                }
                Some(joined) = running.join_next() => {
                    match joined {
                        Ok((tenant, result)) => self.finish(&tenant, result),
                        Err(e) => tracing::error!(error = %e, "sync task ended abnormally"),
                    }
                }
                _ = ticker.tick() => {
                    let now = Utc::now();
                    if self.on_tick(&handle, last_check, now).await {
                        last_check = now;
                    }
                }
            }
        }
        {
            let mut state = self.shared.state.lock().expect("worker state poisoned");
            state.stopped = true;
            state.queue.clear();
            // Dropping the senders tells every waiter the worker stopped.
            state.tenants.clear();
        }
        let n = running.len();
        // Each run sees the same token and ends at once, handing its lease back; aborting
        // the tasks instead could cut that hand-back short.
        while running.join_next().await.is_some() {}
        while maintaining.join_next().await.is_some() {}
        tracing::info!(interrupted = n, "sync worker stopped");
    }

    /// The schedule and the recovery of orphaned runs; false when the tenants could not be
    /// read (the window is then checked again next tick).
    async fn on_tick(&self, handle: &SyncHandle, since: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let tenants = match self.store.tenants().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "sync schedule: tenants unreadable");
                return false;
            }
        };
        let mut settings = Vec::new();
        for t in tenants {
            match self.store.ms365_settings(&t.id).await {
                Ok(s) => settings.push((t.id, s)),
                Err(e) => {
                    tracing::warn!(tenant = %t.id, error = %e, "sync schedule: settings unreadable")
                }
            }
        }
        for (tenant, slot) in due_tenants(&settings, since, now) {
            // Every instance sees the minute come due; the slot goes to one of them.
            match self
                .store
                .claim_schedule_slot(&tenant, slot.timestamp())
                .await
            {
                Ok(true) => {
                    if let Ok(ticket) = handle.request(&tenant, RunTrigger::Schedule) {
                        tracing::info!(tenant = %tenant, outcome = ?ticket.outcome, "scheduled sync due");
                    }
                }
                Ok(false) => {
                    tracing::info!(tenant = %tenant, "scheduled sync taken by another instance")
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e, "cannot claim the scheduled sync")
                }
            }
        }
        for (tenant, _) in &settings {
            if !handle.is_busy(tenant) && matches!(is_orphaned(&self.store, tenant).await, Ok(true))
            {
                tracing::info!(tenant = %tenant, "an interrupted sync run has no live owner; running the tenant again");
                let _ = handle.request(tenant, RunTrigger::Schedule);
            }
        }
        true
    }

    /// Starts queued runs while slots are free.
    fn dispatch(&self, running: &mut JoinSet<(TenantId, RunResult)>) {
        let mut state = self.shared.state.lock().expect("worker state poisoned");
        let mut waiting = VecDeque::new();
        while running.len() < self.concurrency {
            let Some(tenant) = state.queue.pop_front() else {
                break;
            };
            if state.maintaining.contains(&tenant) {
                waiting.push_back(tenant);
                continue;
            }
            let Some(Slot::Queued { trigger, done }) = state.tenants.remove(&tenant) else {
                continue;
            };
            state.tenants.insert(tenant.clone(), Slot::Running { done });
            let config = self.config.clone();
            let store = self.store.clone();
            let keyring = self.keyring.clone();
            let stop = self.shutdown.clone();
            let lease = self.lease.clone();
            let metrics = self.metrics.clone();
            running.spawn(async move {
                let run = async {
                    let result = run_tenant(&config, &store, &keyring, &tenant, trigger).await;
                    if let Some(metrics) = &metrics {
                        record(metrics, &tenant, trigger, &result);
                    }
                    result
                };
                let leased = run_leased(&store, &tenant, &lease, run);
                let result = tokio::select! {
                    _ = stop.cancelled() => {
                        // The run is dropped mid-way: hand the lease back so a restarted or
                        // another instance can finish the tenant at once, not after expiry.
                        let _ = store.release_sync_lease(&tenant, &lease.owner).await;
                        Err(RunFailure::Cancelled)
                    }
                    r = leased => r.unwrap_or_else(|e| Err(lease_refusal(trigger, e))),
                };
                (tenant, result)
            });
        }
        // Runs whose tenant is being maintained keep their place at the head of the queue.
        while let Some(tenant) = waiting.pop_back() {
            state.queue.push_front(tenant);
        }
    }

    /// Starts the subscription maintenance asked for, for tenants with no run in flight.
    fn maintain(&self, maintaining: &mut JoinSet<TenantId>) {
        let mut state = self.shared.state.lock().expect("worker state poisoned");
        let ready: Vec<TenantId> = (state.maintenance.iter())
            .filter(|t| !state.tenants.contains_key(*t) && !state.maintaining.contains(*t))
            .cloned()
            .collect();
        for tenant in ready {
            state.maintenance.remove(&tenant);
            let Some(urls) = self.urls.clone() else {
                continue;
            };
            state.maintaining.insert(tenant.clone());
            let (config, store, keyring) = (
                self.config.clone(),
                self.store.clone(),
                self.keyring.clone(),
            );
            let lease = LeaseConfig {
                owner: format!("{}{MAINTENANCE_SUFFIX}", self.lease.owner),
                ttl: self.lease.ttl,
            };
            let stop = self.shutdown.clone();
            maintaining.spawn(async move {
                let work = maintain_tenant(&config, &store, &keyring, &tenant, &urls);
                let leased = run_leased(&store, &tenant, &lease, work);
                tokio::select! {
                    _ = stop.cancelled() => {
                        let _ = store.release_sync_lease(&tenant, &lease.owner).await;
                    }
                    result = leased => match result {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!(tenant = %tenant, error = %e, "subscription maintenance failed"),
                        Err(e) => tracing::debug!(tenant = %tenant, error = %e, "subscription maintenance left to the lease holder"),
                    },
                }
                tenant
            });
        }
    }

    fn finish(&self, tenant: &TenantId, result: RunResult) {
        match &result {
            Ok(s) => tracing::info!(
                tenant = %tenant,
                run = %s.users.run_id,
                status = ?s.users.status,
                photo_error = s.photo_error.as_deref().unwrap_or(""),
                "sync run finished"
            ),
            Err(e) => tracing::warn!(tenant = %tenant, error = %e, "sync run failed"),
        }
        let mut state = self.shared.state.lock().expect("worker state poisoned");
        if let Some(Slot::Running { done }) = state.tenants.remove(tenant) {
            done.send_replace(Some(Arc::new(result)));
        }
    }
}

/// The tenants to queue by schedule, each with the scheduled instant that came due:
/// automatic mode (`users.enabled`) and `sync_time` due in `(since, now]`. A schedule that
/// never fires again (`0 0 31 2 *`) is logged and skipped.
pub fn due_tenants(
    tenants: &[(TenantId, Ms365Settings)],
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<(TenantId, DateTime<Utc>)> {
    tenants
        .iter()
        .filter(|(_, s)| {
            s.users.enabled
                && s.is_configured()
                && s.sync_mode == crate::settings::SyncMode::Automatic
        })
        .filter_map(|(id, s)| match s.sync_time.next_run(s.time_zone, since) {
            Ok(at) if at <= now => Some((id.clone(), at)),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(tenant = %id, error = %e, "sync schedule skipped");
                None
            }
        })
        .collect()
}

/// Why a run did not start. A notification run finding another instance at work is
/// normal: that instance takes the queue when its run ends.
fn lease_refusal(trigger: RunTrigger, e: LeaseError) -> RunFailure {
    if trigger == RunTrigger::Notification {
        tracing::debug!(error = %e, "notification run left to the instance holding the lease");
    }
    RunFailure::Lease(e)
}

/// Counts a finished run (or one that could not start) in the sync metrics.
fn record(
    metrics: &crate::metrics::Metrics,
    tenant: &TenantId,
    trigger: RunTrigger,
    result: &RunResult,
) {
    match result {
        Ok(summary) => metrics.sync.record_run(&super::figures::figures(summary)),
        Err(_) => metrics.sync.record_run(&crate::metrics::sync::RunFigures {
            tenant: tenant.as_str(),
            trigger: trigger.as_str(),
            status: "not_started",
            ..Default::default()
        }),
    }
}

/// The pbx listener's public URL, where Graph delivers; `None` without a pbx listener.
fn notification_urls(config: &Config) -> Option<NotificationUrls> {
    (config.listeners.iter())
        .find(|l| l.kind == crate::config::ListenerKind::Pbx)
        .map(|l| NotificationUrls::for_public_url(&l.public_url))
}

/// Reconciles the tenant's Graph subscriptions (the caller holds its lease).
async fn maintain_tenant(
    config: &Config,
    store: &Store,
    keyring: &Keyring,
    tenant: &TenantId,
    urls: &NotificationUrls,
) -> Result<(), SyncError> {
    let ctx = context::for_tenant(config, store, keyring, tenant).await?;
    let report = reconcile(&ctx, keyring, urls).await?;
    tracing::info!(tenant = %tenant, ?report, "Graph subscriptions reconciled");
    Ok(())
}

/// One run of a tenant: every phase it has on ([`run_phases`]). A run started by
/// notifications takes the queued targets first (under the lease, so of several instances
/// exactly one answers each batch) and queues them again, later, when it fails.
async fn run_tenant(
    config: &Config,
    store: &Store,
    keyring: &Keyring,
    tenant: &TenantId,
    trigger: RunTrigger,
) -> RunResult {
    let queued = match trigger {
        RunTrigger::Notification => Some(
            (store.take_realtime_queue(tenant))
                .await
                .map_err(RunFailure::Queue)?,
        ),
        _ => None,
    };
    let targets = queued.as_deref().map(Targets::from_queue);
    let result = async {
        let ctx = context::for_tenant(config, store, keyring, tenant).await?;
        let opts = SyncOptions {
            trigger,
            targets,
            ..Default::default()
        };
        Ok::<_, RunFailure>(run_phases(&ctx, opts).await?)
    }
    .await;
    let failed = !matches!(&result, Ok(s) if s.users.status != RunStatus::Failed);
    if let Some(queued) = queued.filter(|_| failed) {
        requeue(store, tenant, &queued).await;
    }
    result
}

/// Queues the targets of a failed targeted run again, each later than the last time
/// ([`retry_of`]); after the last retry the scheduled run is what catches up.
async fn requeue(store: &Store, tenant: &TenantId, queued: &[String]) {
    let now_ms = crate::store::now_epoch() * 1000;
    let mut retried = 0;
    for (word, due) in queued.iter().filter_map(|q| retry_of(q, now_ms)) {
        if let Err(e) = store.queue_realtime(tenant, &word, due).await {
            tracing::warn!(tenant = %tenant, error = %e, "cannot queue a failed run's notifications again");
            return;
        }
        retried += 1;
    }
    tracing::info!(
        tenant = %tenant,
        retried,
        "a run answering change notifications failed; they are tried again later"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn settings(enabled: bool, cron: &str, tz: &str) -> Ms365Settings {
        let mut s = Ms365Settings {
            directory_id: "11111111-2222-3333-4444-555555555555".into(),
            application_id: "66666666-7777-8888-9999-000000000000".into(),
            sync_time: crate::schedule::SyncTime::parse(cron).unwrap(),
            time_zone: crate::schedule::TimeZone::parse(tz).unwrap(),
            ..Default::default()
        };
        s.users.enabled = enabled;
        s
    }

    #[test]
    fn due_tenants_follow_schedule_mode_and_zone() {
        let tenants = vec![
            (
                TenantId::from_static("utc"),
                settings(true, "0 0 * * *", "UTC"),
            ),
            (
                TenantId::from_static("berlin"),
                settings(true, "0 0 * * *", "Europe/Berlin"),
            ),
            (
                TenantId::from_static("manual"),
                settings(false, "0 0 * * *", "UTC"),
            ),
            (
                TenantId::from_static("never-fires"),
                settings(true, "0 0 31 2 *", "UTC"),
            ),
            (TenantId::from_static("manual-mode"), {
                let mut s = settings(true, "0 0 * * *", "UTC");
                s.sync_mode = crate::settings::SyncMode::Manual;
                s
            }),
            (TenantId::from_static("unconfigured"), {
                let mut s = settings(true, "0 0 * * *", "UTC");
                s.application_id.clear();
                s
            }),
        ];
        let t = |h, m, s| Utc.with_ymd_and_hms(2026, 1, 10, h, m, s).unwrap();
        // Berlin midnight is 23:00 UTC.
        assert_eq!(
            due_tenants(&tenants, t(22, 59, 30), t(23, 0, 0)),
            vec![(TenantId::from_static("berlin"), t(23, 0, 0))]
        );
        assert!(due_tenants(&tenants, t(23, 0, 0), t(23, 0, 30)).is_empty());
        let next = Utc.with_ymd_and_hms(2026, 1, 11, 0, 0, 10).unwrap();
        let utc_midnight = Utc.with_ymd_and_hms(2026, 1, 11, 0, 0, 0).unwrap();
        assert_eq!(
            due_tenants(&tenants, t(23, 59, 40), next),
            vec![(TenantId::from_static("utc"), utc_midnight)]
        );
    }
}
