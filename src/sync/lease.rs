//! One sync per tenant across every gateway instance on the database: a run starts only
//! after its instance took the tenant's lease (a row with owner and expiry), renews it every
//! third of its lifetime while the run goes, and gives it back at the end. An instance that
//! dies stops renewing; once the lease has expired another instance may take it and run the
//! tenant again, which completes the interrupted work (delta cursors and per-user writes are
//! idempotent). An instance that loses its lease (paused past the expiry, database
//! unreachable) drops its run rather than risk two runs writing the same tenant.

use std::future::Future;
use std::time::Duration;

use crate::ids::TenantId;
use crate::store::{Store, StoreError, now_epoch};

/// The lease owner suffix of subscription maintenance ([`super::subscriptions`]): a short
/// hold that a run waits out instead of giving up, and that "Sync now" does not take for a
/// run in progress.
pub const MAINTENANCE_SUFFIX: &str = "#subscriptions";
/// How long a run waits for another instance's subscription maintenance to finish.
const MAINTENANCE_WAIT: Duration = Duration::from_secs(30);

/// How long a lease lasts without renewal, unless configured.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);

/// This instance's name in leases: unique per process start.
pub fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let short = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &short[..8])
}

/// Who this instance is and how long its leases last.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub owner: String,
    pub ttl: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            owner: instance_id(),
            ttl: DEFAULT_LEASE_TTL,
        }
    }
}

/// Why a leased run did not finish.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("another gateway instance ({owner}) is running this tenant's sync")]
    HeldBy { owner: String },
    #[error("this instance lost the tenant's sync lease (it expired); the run was dropped")]
    Lost,
    #[error("sync lease: {0}")]
    Store(#[from] StoreError),
}

fn expiry(ttl: Duration) -> i64 {
    now_epoch() + i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX / 2)
}

/// Runs `work` for `tenant` under the lease: refused when another instance holds it,
/// dropped when the lease is lost, the lease released when `work` ends.
pub async fn run_leased<F: Future>(
    store: &Store,
    tenant: &TenantId,
    lease: &LeaseConfig,
    work: F,
) -> Result<F::Output, LeaseError> {
    acquire(store, tenant, lease).await?;
    let result = tokio::select! {
        output = work => Ok(output),
        lost = keep_renewed(store, tenant, lease) => Err(lost),
    };
    if let Err(e) = store.release_sync_lease(tenant, &lease.owner).await {
        tracing::warn!(tenant = %tenant, error = %e, "cannot release the sync lease; it expires by itself");
    }
    result
}

/// Takes the lease, waiting out another instance's subscription maintenance (seconds).
async fn acquire(store: &Store, tenant: &TenantId, lease: &LeaseConfig) -> Result<(), LeaseError> {
    let started = tokio::time::Instant::now();
    loop {
        if store
            .acquire_sync_lease(tenant, &lease.owner, expiry(lease.ttl))
            .await?
        {
            return Ok(());
        }
        let owner = store
            .sync_lease(tenant)
            .await?
            .map_or_else(|| "unknown".to_string(), |h| h.owner);
        if !owner.ends_with(MAINTENANCE_SUFFIX) || started.elapsed() > MAINTENANCE_WAIT {
            return Err(LeaseError::HeldBy { owner });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Renews the lease every third of its lifetime; returns only when it was lost.
async fn keep_renewed(store: &Store, tenant: &TenantId, lease: &LeaseConfig) -> LeaseError {
    let period = (lease.ttl / 3).max(Duration::from_millis(100));
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(period).await;
        match store
            .renew_sync_lease(tenant, &lease.owner, expiry(lease.ttl))
            .await
        {
            Ok(true) => last_renewed = tokio::time::Instant::now(),
            Ok(false) => return LeaseError::Lost,
            // A database hiccup: keep trying while the lease can still be valid.
            Err(e) if last_renewed.elapsed() < lease.ttl => {
                tracing::warn!(tenant = %tenant, error = %e, "cannot renew the sync lease; retrying");
            }
            Err(_) => return LeaseError::Lost,
        }
    }
}

/// Whether a tenant's interrupted run needs another instance to finish it: its newest run
/// is still `running` and nobody holds a live lease.
pub async fn is_orphaned(store: &Store, tenant: &TenantId) -> Result<bool, StoreError> {
    let newest = store.sync_runs(tenant, 1).await?;
    if !newest
        .first()
        .is_some_and(|r| r.status == crate::store::RunStatus::Running)
    {
        return Ok(false);
    }
    Ok(match store.sync_lease(tenant).await? {
        Some(holder) => holder.expires_at < now_epoch(),
        None => true,
    })
}
