//! Directory sync, one way: Microsoft 365 → the PBX. This part: users → extensions.
//!
//! A run fetches (`/users/delta`, from the stored deltaLink or from scratch), plans (compares
//! every user Graph returned with the store, in memory only the changes and the seen oids),
//! checks the deletion threshold, then applies the plan in batched transactions and only
//! then saves the deltaLink. Nothing is written before the fetch is complete, so a Graph
//! failure can never read as "users removed".
//!
//! - [`users`]: [`sync_users`], the run from fetch to deltaLink.
//! - [`scope`]: who is in scope (settings, guests, group, departments) and its fingerprint.
//! - [`plan`]: Graph users against the store: the changes of a run, serialisable for approval.
//! - [`extensions`]: extension ranges and stable, order-independent number allocation.
//! - [`username`]: PortSIP-valid, tenant-unique usernames from UPNs.
//! - [`apply`]: numbers and names for new users, batched writes, [`approve_run`].
//! - [`run`]: the run record (progress, counts, capped errors, Graph traffic) and [`RunReport`].
//! - [`orchestrate`]: a whole run, phase after phase ([`run_phases`]), for the worker and the CLI.
//! - [`figures`]: a finished run in the terms of the sync metrics.
//! - [`subscriptions`]: the tenant's Graph change-notification subscriptions, reconciled
//!   by the worker under the tenant's lease.
//! - `targets`: what queued change notifications ask a run to read ([`Targets`]), and
//!   their retries after a failed run ([`retry_of`]).
//! - [`pbx_read`], [`pbx_push`]: the PBX connector's phases (PortSIP REST API): what the PBX
//!   holds before the users phase, and making the PBX match the record after the others.

pub(crate) mod apply;
mod contact_batch;
mod contact_group;
pub(crate) mod contacts;
pub(crate) mod context;
pub(crate) mod extensions;
pub(crate) mod figures;
pub(crate) mod lease;
pub(crate) mod orchestrate;
pub(crate) mod pbx_push;
pub(crate) mod pbx_read;
mod photo_downloads;
pub(crate) mod photos;
pub(crate) mod plan;
pub(crate) mod run;
pub(crate) mod scope;
pub(crate) mod subscriptions;
mod targets;
pub(crate) mod username;
pub(crate) mod users;
pub(crate) mod worker;

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

pub use apply::approve_run;
pub use contacts::{ContactOptions, ContactReport, personal_kind, shared_kind, sync_contacts};
pub use context::for_tenant as context_for_tenant;
pub use lease::{LeaseConfig, LeaseError};
pub use orchestrate::{Phase, RunSummary, run_phases};
pub use pbx_push::{PbxTarget, PushFocus, TenantRecord, push_to_pbx};
pub use pbx_read::{LISTED_KIND, read_pbx};
pub use photos::{PHOTO_SLICES, PhotoOptions, PhotoReport, PhotoScope, slice_of, sync_photos};
pub use run::{Progress, RunReport};
pub use targets::{Targets, retry_of};
pub use worker::{RequestOutcome, RunFailure, RunResult, SyncHandle, SyncWorker};

pub use users::sync_users;

use crate::graph::{GraphClient, GraphError};
use crate::ids::TenantId;
pub use crate::store::{EntityCounts, ItemError, ItemOutcome, RunStatus, RunTrigger};
use crate::store::{Store, StoreError};

/// `sync_state.kind` of the users delta round.
pub const USERS_KIND: &str = "users";
/// Default deletion threshold: Entra Connect's accidental-delete guard.
pub const DEFAULT_THRESHOLD: usize = 500;
/// Writes per transaction.
pub const DEFAULT_BATCH: usize = 500;

/// What a run needs: the store, a Graph client for the tenant's directory, the tenant,
/// and the PBX to write to when the PBX connector is on.
#[derive(Clone, Debug)]
pub struct SyncContext {
    pub store: Store,
    pub graph: GraphClient,
    /// The PBX tenant id (its settings name the Microsoft directory).
    pub tenant_id: TenantId,
    /// `[pbx] kind = "portsip"`: the PBX's REST API; `None` keeps the sync in the store.
    pub pbx: Option<pbx_push::PbxTarget>,
}

/// Called after every page fetched and every batch written (a CLI progress bar).
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// How to run. The scope switches that PortSIP's settings document has no field for
/// (group, departments) live here.
#[derive(Clone)]
pub struct SyncOptions {
    pub trigger: RunTrigger,
    /// Compute and report; write nothing (not even a run record).
    pub dry_run: bool,
    /// Only transitive members of this group are in scope.
    pub group_id: Option<String>,
    /// Only users of these departments (case-insensitive) are in scope; empty = all.
    pub departments: Vec<String>,
    /// A run disabling + deleting more users than this stops for approval.
    pub threshold: usize,
    /// When set, the threshold is this percentage of the tenant's enabled synced users.
    pub threshold_percent: Option<f64>,
    /// Delete users the sync disabled (removed or out of scope) longer ago than this.
    pub delete_after: Option<Duration>,
    /// Numbers for new users when `starting_extension_number` is empty.
    pub default_range: RangeInclusive<u64>,
    /// Writes per transaction.
    pub batch_size: usize,
    pub progress: Option<ProgressFn>,
    /// Later phases follow the users phase: a successful users phase leaves the run
    /// `running` and the orchestrator ends it ([`orchestrate`]).
    pub keep_open: bool,
    /// A run answering change notifications: photos and contacts only where something
    /// changed ([`Targets`]).
    pub targets: Option<Targets>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            trigger: RunTrigger::Manual,
            dry_run: false,
            group_id: None,
            departments: Vec::new(),
            threshold: DEFAULT_THRESHOLD,
            threshold_percent: None,
            delete_after: None,
            default_range: 1000..=9999,
            batch_size: DEFAULT_BATCH,
            progress: None,
            keep_open: false,
            targets: None,
        }
    }
}

impl std::fmt::Debug for SyncOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncOptions")
            .field("trigger", &self.trigger)
            .field("dry_run", &self.dry_run)
            .field("group_id", &self.group_id)
            .field("departments", &self.departments)
            .field("threshold", &self.threshold)
            .field("threshold_percent", &self.threshold_percent)
            .field("delete_after", &self.delete_after)
            .field("default_range", &self.default_range)
            .field("batch_size", &self.batch_size)
            .field("progress", &self.progress.is_some())
            .field("keep_open", &self.keep_open)
            .field("targets", &self.targets)
            .finish()
    }
}

/// Failures of the sync layer.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Graph failed (after the client's retries); the run applied nothing.
    #[error("run {run_id} failed, nothing was changed: Microsoft Graph: {source}")]
    Fetch {
        run_id: String,
        source: Box<GraphError>,
    },
    /// The delta round ended without a deltaLink: an incomplete answer, not applied.
    #[error("run {run_id} failed, nothing was changed: the delta round ended without a deltaLink")]
    Incomplete { run_id: String },
    /// Photo sync stopped on a Graph failure; photos stored by earlier rounds stay.
    #[error("photo sync stopped (photos stored before this point are kept): Microsoft Graph: {0}")]
    PhotoFetch(Box<GraphError>),
    #[error("{0}")]
    InvalidOptions(String),
    #[error("sync run {0} not found")]
    RunNotFound(String),
    #[error("sync run {id} is {status}, not awaiting approval")]
    NotAwaitingApproval { id: String, status: String },
    #[error("the held plan of sync run {id} is unreadable: {reason}")]
    CorruptPlan { id: String, reason: String },
    /// The PBX refused the gateway's sign-in or could not be reached.
    #[error("PBX: {0}")]
    Pbx(#[from] crate::pbx::PbxError),
}
