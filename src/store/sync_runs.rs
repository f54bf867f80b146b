//! The record of every sync run: who started it, when, how it ended, what it changed per
//! entity kind, the first [`MAX_RUN_ERRORS`] item errors with their reasons, Graph traffic,
//! and live progress (phase, done/total) that readers can poll while the run goes on. A run
//! stopped by the deletion threshold keeps its planned changes (`pending_json`) until it is
//! approved, superseded by a newer run, or cancelled.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_epoch};
use crate::ids::TenantId;

/// Per-item errors kept on a run; the total is counted on.
pub const MAX_RUN_ERRORS: usize = 100;

/// How a run ends (or stands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    /// Stopped by the deletion threshold; nothing applied; waits for approval.
    AwaitingApproval,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::AwaitingApproval => "awaiting_approval",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        [
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::AwaitingApproval,
            RunStatus::Cancelled,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunTrigger {
    Schedule,
    #[default]
    Manual,
    Cli,
    Api,
    /// Microsoft Graph change notifications: a targeted run.
    Notification,
}

impl RunTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            RunTrigger::Schedule => "schedule",
            RunTrigger::Manual => "manual",
            RunTrigger::Cli => "cli",
            RunTrigger::Api => "api",
            RunTrigger::Notification => "notification",
        }
    }

    pub fn parse(s: &str) -> Option<RunTrigger> {
        [
            RunTrigger::Schedule,
            RunTrigger::Manual,
            RunTrigger::Cli,
            RunTrigger::Api,
            RunTrigger::Notification,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// What a run did to one entity kind (`users`, later `contacts`, `photos`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EntityCounts {
    pub created: u64,
    pub updated: u64,
    pub disabled: u64,
    pub deleted: u64,
    pub skipped: u64,
    pub failed: u64,
    /// Existing PBX users bound to the Microsoft user with the same username or e-mail
    /// instead of creating a second one.
    pub adopted: u64,
    /// Mailboxes Exchange does not serve (`MailboxNotEnabledForRESTAPI`): unlicensed users,
    /// rooms and service accounts without a mailbox. Normal, so not an error.
    pub no_mailbox: u64,
}

/// Whether an item was left out on purpose or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemOutcome {
    Skipped,
    Failed,
}

/// One item a run skipped or failed, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemError {
    /// `user`, `contact`, `photo`.
    pub entity: String,
    /// The Microsoft object id.
    pub key: String,
    /// Something a person recognises: UPN or display name.
    pub name: String,
    pub outcome: ItemOutcome,
    pub reason: String,
}

/// What a later phase of a run did, for [`Store::record_sync_phase`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseOutcome {
    /// `photos` or `contacts`.
    pub kind: &'static str,
    pub counts: EntityCounts,
    pub errors: Vec<ItemError>,
    pub graph_requests: u64,
    /// Why the phase stopped, when it did.
    pub failure: Option<String>,
}

/// A stored run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRun {
    pub id: String,
    pub tenant_id: TenantId,
    pub trigger: RunTrigger,
    /// `full` or `delta` once known.
    pub mode: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub status: RunStatus,
    /// Why it failed or what it is waiting for.
    pub message: Option<String>,
    pub counts: BTreeMap<String, EntityCounts>,
    /// At most [`MAX_RUN_ERRORS`].
    pub errors: Vec<ItemError>,
    pub errors_total: u64,
    pub graph_requests: u64,
    pub throttled: u64,
    /// Requests sent to the PBX's REST API (the `pbx` phase).
    pub pbx_requests: u64,
    pub phase: String,
    pub done: u64,
    pub total: u64,
    /// Held changes exist (awaiting approval).
    pub has_pending: bool,
}

/// The end (or the current totals) of a run, as [`Store::finish_sync_run`] writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub status: RunStatus,
    pub mode: Option<String>,
    pub message: Option<String>,
    pub counts: BTreeMap<String, EntityCounts>,
    pub errors: Vec<ItemError>,
    pub errors_total: u64,
    pub graph_requests: u64,
    pub throttled: u64,
    /// Kept for approval when the status is [`RunStatus::AwaitingApproval`].
    pub pending_json: Option<String>,
}

macro_rules! select_runs {
    ($rest:literal) => {
        concat!(
            "SELECT id, tenant_id, triggered_by, mode, started_at, finished_at, status, message,
             counts_json, errors_json, errors_total, graph_requests, throttled, pbx_requests, phase,
             done, total,
             CAST(CASE WHEN pending_json IS NULL THEN 0 ELSE 1 END AS BIGINT) AS has_pending FROM sync_runs ",
            $rest
        )
    };
}

fn corrupt(id: &str, what: &str, e: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(format!("sync run {id}: {what}: {e}").into())
}

impl SyncRun {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let id: String = row.try_get("id")?;
        let trigger: String = row.try_get("triggered_by")?;
        let status: String = row.try_get("status")?;
        let counts: String = row.try_get("counts_json")?;
        let errors: String = row.try_get("errors_json")?;
        let count = |c: &str| row.try_get::<i64, _>(c).map(|v| v.max(0) as u64);
        Ok(SyncRun {
            trigger: RunTrigger::parse(&trigger)
                .ok_or_else(|| corrupt(&id, "trigger", &trigger))?,
            status: RunStatus::parse(&status).ok_or_else(|| corrupt(&id, "status", &status))?,
            counts: serde_json::from_str(&counts).map_err(|e| corrupt(&id, "counts", e))?,
            errors: serde_json::from_str(&errors).map_err(|e| corrupt(&id, "errors", e))?,
            tenant_id: row.try_get("tenant_id")?,
            mode: row.try_get("mode")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            message: row.try_get("message")?,
            errors_total: count("errors_total")?,
            graph_requests: count("graph_requests")?,
            throttled: count("throttled")?,
            pbx_requests: count("pbx_requests")?,
            phase: row.try_get("phase")?,
            done: count("done")?,
            total: count("total")?,
            has_pending: row
                .try_get::<i64, _>("has_pending")
                .or_else(|_| row.try_get::<bool, _>("has_pending").map(i64::from))?
                != 0,
            id,
        })
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Records a new run as `running` in phase `start`; returns its id.
    pub async fn create_sync_run(
        &self,
        tenant_id: &TenantId,
        trigger: RunTrigger,
    ) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        // `seq` orders a tenant's runs (several can start within one second); the unique
        // index turns an unexpected concurrent start into an error rather than a tie.
        sqlx::query(
            "INSERT INTO sync_runs (id, tenant_id, seq, triggered_by, started_at, status, counts_json,
             errors_json, errors_total, graph_requests, throttled, phase, done, total)
             SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, $3, $4, 'running', '{}', '[]', 0, 0, 0,
             'start', 0, 0 FROM sync_runs WHERE tenant_id = $2",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(trigger.as_str())
        .bind(now_epoch())
        .execute(self.pool())
        .await?;
        Ok(id)
    }

    /// Live progress of a running run.
    pub async fn update_sync_progress(
        &self,
        run_id: &str,
        phase: &str,
        done: u64,
        total: u64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE sync_runs SET phase = $2, done = $3, total = $4 WHERE id = $1")
            .bind(run_id)
            .bind(phase)
            .bind(to_i64(done))
            .bind(to_i64(total))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Writes a run's end (or its held plan, when awaiting approval, or the users phase's
    /// totals of a run that goes on, when `o.status` is still `running`).
    pub async fn finish_sync_run(&self, run_id: &str, o: &RunOutcome) -> Result<(), StoreError> {
        let open = matches!(o.status, RunStatus::AwaitingApproval | RunStatus::Running);
        let finished = (!open).then(now_epoch);
        let phase = match o.status {
            RunStatus::Running => "users",
            other => other.as_str(),
        };
        let errors = &o.errors[..o.errors.len().min(MAX_RUN_ERRORS)];
        sqlx::query(
            "UPDATE sync_runs SET status = $2, mode = $3, message = $4, counts_json = $5,
             errors_json = $6, errors_total = $7, graph_requests = $8, throttled = $9,
             pending_json = $10, finished_at = $11, phase = $12 WHERE id = $1",
        )
        .bind(run_id)
        .bind(o.status.as_str())
        .bind(&o.mode)
        .bind(&o.message)
        .bind(to_json(&o.counts)?)
        .bind(to_json(&errors)?)
        .bind(to_i64(o.errors_total))
        .bind(to_i64(o.graph_requests))
        .bind(to_i64(o.throttled))
        .bind(&o.pending_json)
        .bind(finished)
        .bind(phase)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Ends a run left `running` by its users phase, once every later phase is recorded:
    /// status, `phase` and `finished_at` then describe the whole run.
    pub async fn end_sync_run(&self, run_id: &str, status: RunStatus) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE sync_runs SET status = $2, phase = $2, finished_at = $3
             WHERE id = $1 AND status = 'running'",
        )
        .bind(run_id)
        .bind(status.as_str())
        .bind(now_epoch())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Adds a later phase (photos, contacts, pbx) to a run's record: its counts under
    /// `kind`, its items (within the cap), its Graph traffic, and a note when it failed.
    /// The run stays `running`; [`Store::end_sync_run`] ends it.
    pub async fn record_sync_phase(
        &self,
        run_id: &str,
        phase: &PhaseOutcome,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let row =
            sqlx::query("SELECT counts_json, errors_json, message FROM sync_runs WHERE id = $1")
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else {
            return Ok(());
        };
        let (counts, errors, message): (String, String, Option<String>) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let mut counts: BTreeMap<String, EntityCounts> =
            serde_json::from_str(&counts).map_err(|e| corrupt(run_id, "counts", e))?;
        let mut errors: Vec<ItemError> =
            serde_json::from_str(&errors).map_err(|e| corrupt(run_id, "errors", e))?;
        counts.insert(phase.kind.to_string(), phase.counts);
        let room = MAX_RUN_ERRORS.saturating_sub(errors.len());
        errors.extend(phase.errors.iter().take(room).cloned());
        let message = match (message, &phase.failure) {
            (Some(m), Some(f)) => Some(format!("{m}; {}: {f}", phase.kind)),
            (None, Some(f)) => Some(format!("{}: {f}", phase.kind)),
            (m, None) => m,
        };
        sqlx::query(
            "UPDATE sync_runs SET counts_json = $2, errors_json = $3, message = $4,
             errors_total = errors_total + $5, graph_requests = graph_requests + $6, phase = $7
             WHERE id = $1",
        )
        .bind(run_id)
        .bind(to_json(&counts)?)
        .bind(to_json(&errors)?)
        .bind(message)
        .bind(to_i64(phase.errors.len() as u64))
        .bind(to_i64(phase.graph_requests))
        .bind(phase.kind)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn sync_run(&self, run_id: &str) -> Result<Option<SyncRun>, StoreError> {
        let row = sqlx::query(select_runs!("WHERE id = $1"))
            .bind(run_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(SyncRun::from_row).transpose()?)
    }

    /// The tenant's latest runs, newest first.
    pub async fn sync_runs(
        &self,
        tenant_id: &TenantId,
        limit: u32,
    ) -> Result<Vec<SyncRun>, StoreError> {
        let rows = sqlx::query(select_runs!(
            "WHERE tenant_id = $1 ORDER BY seq DESC LIMIT $2"
        ))
        .bind(tenant_id)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(SyncRun::from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Moves a run from `awaiting_approval` to `running` and hands out its held plan, once:
    /// of two concurrent approvals only one gets it.
    pub async fn take_pending_sync_run(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(
            "UPDATE sync_runs SET status = 'running', phase = 'approved'
             WHERE id = $1 AND status = 'awaiting_approval' AND pending_json IS NOT NULL",
        )
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT pending_json FROM sync_runs WHERE id = $1")
            .bind(run_id)
            .fetch_one(&mut *tx)
            .await?;
        let pending: Option<String> = row.try_get("pending_json")?;
        sqlx::query("UPDATE sync_runs SET pending_json = NULL WHERE id = $1")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(pending)
    }

    /// Cancels the tenant's runs awaiting approval (a newer run has a fresher plan) and
    /// marks runs still `running` as failed: the worker runs one run per tenant at a time,
    /// so such a run belongs to a process that died. Returns how many rows changed.
    pub async fn close_stale_sync_runs(
        &self,
        tenant_id: &TenantId,
        by_run: &str,
    ) -> Result<u64, StoreError> {
        let now = now_epoch();
        let cancelled = sqlx::query(
            "UPDATE sync_runs SET status = 'cancelled', phase = 'cancelled', pending_json = NULL,
             finished_at = $3, message = $4
             WHERE tenant_id = $1 AND id <> $2 AND status = 'awaiting_approval'",
        )
        .bind(tenant_id)
        .bind(by_run)
        .bind(now)
        .bind(format!("superseded by run {by_run}"))
        .execute(self.pool())
        .await?;
        let failed = sqlx::query(
            "UPDATE sync_runs SET status = 'failed', phase = 'failed', finished_at = $3,
             message = 'interrupted: the process running it stopped'
             WHERE tenant_id = $1 AND id <> $2 AND status = 'running'",
        )
        .bind(tenant_id)
        .bind(by_run)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(cancelled.rows_affected() + failed.rows_affected())
    }

    /// Cancels a run awaiting approval; `false` when it was not awaiting approval.
    pub async fn cancel_sync_run(&self, run_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sync_runs SET status = 'cancelled', phase = 'cancelled', pending_json = NULL,
             finished_at = $2, message = 'cancelled by an administrator'
             WHERE id = $1 AND status = 'awaiting_approval'",
        )
        .bind(run_id)
        .bind(now_epoch())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
