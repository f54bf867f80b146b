//! Real-time updates: Microsoft Graph change notifications on the public listener, so a
//! change in Microsoft 365 reaches the PBX in seconds instead of at the next scheduled run.
//!
//! - [`wire`]: what Graph POSTs, parsed once.
//! - [`endpoint`]: the two notification URLs: handshake, limits, 202.
//! - [`intake`]: trusting a notification (known subscription, matching `clientState`) and
//!   queueing its target in the store.
//!
//! [`Realtime::run`] is the task behind them: it processes the batches the endpoint
//! accepted, and, every [`QUEUE_POLL`], starts a targeted run (trigger `notification`) for
//! each tenant whose oldest queued target is older than its `realtime.debounce_seconds`.
//! The queue is in the store, so a notification received by any instance is run by the
//! instance that gets the tenant's sync lease. Every [`MAINTENANCE_CHECK`] it asks the sync
//! worker to reconcile the subscriptions of tenants that need it
//! ([`crate::sync::subscriptions`]). The schedule keeps running as the safety net: a lost
//! notification is caught by the next scheduled run.

pub mod endpoint;
pub mod intake;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::keyring::Keyring;
use crate::metrics::Metrics;
use crate::sso::ratelimit::RateLimiter;
use crate::store::{RunTrigger, Store, now_epoch};
use crate::sync::worker::SyncHandle;

pub use endpoint::routes;

/// How often the notification queue is looked at.
pub const QUEUE_POLL: Duration = Duration::from_millis(500);
/// Parsed batches waiting for the intake task; beyond this the endpoint answers 503 and
/// Graph delivers again later.
const INTAKE_QUEUE: usize = 256;
/// Notification requests per minute from one address (Graph batches its deliveries).
const PER_ADDRESS_PER_MINUTE: u32 = 1200;

/// What the endpoint and the task share.
pub struct Realtime {
    store: Store,
    keyring: Keyring,
    metrics: Arc<Metrics>,
    sync: SyncHandle,
    limiter: RateLimiter,
    intake: mpsc::Sender<intake::Batch>,
    /// This instance's lease owner name: a tenant leased by another instance is theirs.
    lease_owner: String,
    /// `[sync] subscription_check_interval`.
    check_interval: Duration,
}

/// The receiving end, consumed by [`Realtime::run`].
pub struct RealtimeTask {
    rx: mpsc::Receiver<intake::Batch>,
}

impl Realtime {
    pub fn new(
        store: Store,
        keyring: Keyring,
        metrics: Arc<Metrics>,
        sync: SyncHandle,
        lease_owner: String,
        check_interval: Duration,
    ) -> (Arc<Realtime>, RealtimeTask) {
        let (tx, rx) = mpsc::channel(INTAKE_QUEUE);
        let rt = Realtime {
            store,
            keyring,
            metrics,
            sync,
            limiter: RateLimiter::new(PER_ADDRESS_PER_MINUTE),
            intake: tx,
            lease_owner,
            check_interval,
        };
        (Arc::new(rt), RealtimeTask { rx })
    }

    /// Processes notifications, starts targeted runs and asks for subscription maintenance
    /// until `shutdown` fires; batches already accepted are processed before it returns.
    pub async fn run(self: Arc<Self>, task: RealtimeTask, shutdown: CancellationToken) {
        let RealtimeTask { mut rx } = task;
        let mut poll = tokio::time::interval(QUEUE_POLL);
        let mut check = tokio::time::interval(self.check_interval);
        for t in [&mut poll, &mut check] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(batch) = rx.recv() => self.take(batch).await,
                _ = poll.tick() => self.start_due_runs().await,
                _ = check.tick() => self.check_maintenance().await,
            }
        }
        rx.close();
        while let Some(batch) = rx.recv().await {
            self.take(batch).await;
        }
    }

    async fn take(&self, batch: intake::Batch) {
        match intake::process(&self.store, &self.keyring, &self.metrics, batch).await {
            Ok(effects) => {
                for tenant in effects.maintenance {
                    let _ = self.sync.request_maintenance(&tenant);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot record Graph notifications; the next scheduled run catches up")
            }
        }
    }

    /// Requests a targeted run for each tenant whose debounce window has passed, unless
    /// another instance holds its lease (that instance takes the queue after its run).
    async fn start_due_runs(&self) {
        let due = match self.store.realtime_due().await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the notification queue");
                return;
            }
        };
        let now_ms = intake::now_ms();
        for (tenant, first_ms) in due {
            let Ok(settings) = self.store.ms365_settings(&tenant).await else {
                continue;
            };
            let window = i64::from(settings.realtime.debounce_seconds) * 1000;
            if now_ms - first_ms < window || self.sync.holds_tenant(&tenant) {
                continue;
            }
            if let Ok(Some(holder)) = self.store.sync_lease(&tenant).await
                && !holder.owner.starts_with(&self.lease_owner)
                && holder.expires_at >= now_epoch()
            {
                continue;
            }
            if let Ok(ticket) = self.sync.request(&tenant, RunTrigger::Notification) {
                tracing::debug!(tenant = %tenant, outcome = ?ticket.outcome, "targeted run requested");
            }
        }
    }

    /// Asks the worker to reconcile the subscriptions of tenants with something due.
    async fn check_maintenance(&self) {
        let Ok(tenants) = self.store.tenants().await else {
            return;
        };
        let now = now_epoch();
        for t in tenants {
            match crate::sync::subscriptions::due(&self.store, &t.id, now).await {
                Ok(actions) if !actions.is_empty() => {
                    let _ = self.sync.request_maintenance(&t.id);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(tenant = %t.id, error = %e, "cannot check the Graph subscriptions")
                }
            }
        }
    }
}
