//! One sync run of a tenant, phase after phase, for the worker and the `sync` command
//! alike: users (which opens the run record), then photos and contacts when the tenant has
//! them on. The record stays `running` until the last phase is recorded; only then do its
//! status, `phase` and `finished_at` say how the whole run went. A later phase that fails
//! fails the run, while what the earlier phases applied stands (each phase is crash-safe on
//! its own). A dry run plans the users phase only: the later phases have nothing to preview
//! without writing.

use std::collections::HashSet;

use super::contacts::{ContactOptions, ContactReport, sync_contacts};
use super::photos::{PhotoOptions, PhotoReport, sync_photos};
use super::{RunReport, RunTrigger, SyncContext, SyncError, SyncOptions, sync_users};
use crate::settings::Ms365Settings;
use crate::store::{EntityCounts, ItemError, ItemOutcome, PhaseOutcome, RunStatus, now_epoch};

/// The phases of a run, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Users,
    Photos,
    Contacts,
}

impl Phase {
    /// The name in the run record (`counts` key and live `phase`).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Users => "users",
            Phase::Photos => "photos",
            Phase::Contacts => "contacts",
        }
    }

    /// The phases after users that the tenant's settings turn on.
    fn later(settings: &Ms365Settings) -> Vec<Phase> {
        let mut phases = Vec::new();
        if settings.users.sync_photo {
            phases.push(Phase::Photos);
        }
        if settings.personal_contacts.enabled || settings.shared_mailbox.enabled {
            phases.push(Phase::Contacts);
        }
        phases
    }
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub tenant_id: String,
    pub trigger: RunTrigger,
    /// The run as a whole: its status is the run's, its counts hold every phase.
    pub users: RunReport,
    /// `None` when photo sync is off.
    pub photos: Option<PhotoReport>,
    /// Why photo sync failed (the user sync before it stands).
    pub photo_error: Option<String>,
    /// `None` when neither personal nor shared-mailbox contacts are on.
    pub contacts: Option<ContactReport>,
    /// Why contact sync failed (the phases before it stand).
    pub contact_error: Option<String>,
}

/// Runs every phase the tenant has on; see the module documentation.
pub async fn run_phases(ctx: &SyncContext, opts: SyncOptions) -> Result<RunSummary, SyncError> {
    let settings = ctx.store.ms365_settings(&ctx.tenant_id).await?;
    let later = if opts.dry_run {
        Vec::new()
    } else {
        Phase::later(&settings)
    };
    let trigger = opts.trigger;
    let opts = SyncOptions {
        keep_open: !later.is_empty(),
        ..opts
    };
    let mut users = sync_users(ctx, &opts).await?;
    if opts.dry_run && !Phase::later(&settings).is_empty() {
        users
            .preview
            .push("(photos and contacts are not previewed)".into());
    }
    let mut summary = RunSummary {
        tenant_id: ctx.tenant_id.clone(),
        trigger,
        users,
        photos: None,
        photo_error: None,
        contacts: None,
        contact_error: None,
    };
    if summary.users.status != RunStatus::Succeeded || later.is_empty() {
        return Ok(summary);
    }
    for phase in later {
        run_phase(ctx, phase, &mut summary).await;
    }
    let status = if summary.photo_error.is_some() || summary.contact_error.is_some() {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    ctx.store
        .end_sync_run(&summary.users.run_id, status)
        .await?;
    summary.users.status = status;
    summary.users.finished_at = now_epoch();
    Ok(summary)
}

/// One later phase: live progress, the phase itself, its record, the summary.
async fn run_phase(ctx: &SyncContext, phase: Phase, summary: &mut RunSummary) {
    let run_id = summary.users.run_id.clone();
    if let Err(e) = (ctx.store)
        .update_sync_progress(&run_id, phase.as_str(), 0, 0)
        .await
    {
        tracing::warn!(run = %run_id, error = %e, "cannot record sync progress");
    }
    let outcome = match phase {
        Phase::Users => return,
        Phase::Photos => {
            let result = sync_photos(ctx, &PhotoOptions::default()).await;
            let outcome = photo_outcome(&result);
            match result {
                Ok(r) => summary.photos = Some(r),
                Err(e) => summary.photo_error = Some(e.to_string()),
            }
            outcome
        }
        Phase::Contacts => {
            let without_mailbox: HashSet<String> = (summary.photos.iter())
                .flat_map(|p| p.no_mailbox.iter().cloned())
                .collect();
            let options = ContactOptions {
                without_mailbox,
                ..ContactOptions::default()
            };
            let result = sync_contacts(ctx, &options).await;
            let outcome = contact_outcome(&result);
            match result {
                Ok(r) => summary.contacts = Some(r),
                Err(e) => summary.contact_error = Some(e.to_string()),
            }
            outcome
        }
    };
    add_to_report(&mut summary.users, &outcome);
    if let Err(e) = ctx.store.record_sync_phase(&run_id, &outcome).await {
        tracing::warn!(run = %run_id, error = %e, "cannot record the {} phase", outcome.kind);
    }
}

/// The report describes the whole run, as its record does.
fn add_to_report(report: &mut RunReport, outcome: &PhaseOutcome) {
    report
        .counts
        .insert(outcome.kind.to_string(), outcome.counts);
    report.graph_requests += outcome.graph_requests;
    report.errors_total += outcome.errors.len() as u64;
    let room = crate::store::MAX_RUN_ERRORS.saturating_sub(report.errors.len());
    report
        .errors
        .extend(outcome.errors.iter().take(room).cloned());
    if let Some(failure) = &outcome.failure {
        let line = format!("{}: {failure}", outcome.kind);
        report.message = Some(match report.message.take() {
            Some(m) => format!("{m}; {line}"),
            None => line,
        });
    }
}

fn skipped(entity: &str, key: &str, reason: &str) -> ItemError {
    ItemError {
        entity: entity.into(),
        key: key.into(),
        name: key.into(),
        outcome: ItemOutcome::Skipped,
        reason: reason.into(),
    }
}

/// A phase's record: what `done` says of a finished phase, or the phase's failure.
fn phase_outcome<R>(
    kind: &'static str,
    result: &Result<R, SyncError>,
    done: impl FnOnce(&R, &mut PhaseOutcome),
) -> PhaseOutcome {
    let mut outcome = PhaseOutcome {
        kind,
        counts: EntityCounts::default(),
        errors: Vec::new(),
        graph_requests: 0,
        failure: None,
    };
    match result {
        Ok(r) => done(r, &mut outcome),
        Err(e) => outcome.failure = Some(e.to_string()),
    }
    outcome
}

fn photo_outcome(result: &Result<PhotoReport, SyncError>) -> PhaseOutcome {
    phase_outcome(Phase::Photos.as_str(), result, |r, o| {
        // A download is new or changed; the report does not tell which.
        o.counts.updated = r.downloaded as u64;
        o.counts.deleted = r.removed as u64;
        o.counts.skipped = r.skipped.len() as u64;
        o.counts.no_mailbox = r.no_mailbox.len() as u64;
        o.errors = r
            .skipped
            .iter()
            .map(|s| skipped("photo", &s.oid, &s.reason))
            .collect();
        o.graph_requests = r.graph_requests;
    })
}

fn contact_outcome(result: &Result<ContactReport, SyncError>) -> PhaseOutcome {
    phase_outcome(Phase::Contacts.as_str(), result, |r, o| {
        o.counts.created = r.created as u64;
        o.counts.updated = r.updated as u64;
        o.counts.deleted = r.removed as u64;
        o.counts.skipped = r.skipped.len() as u64;
        o.counts.no_mailbox = r.no_mailbox as u64;
        o.errors = r
            .skipped
            .iter()
            .map(|s| skipped("contact", &s.mailbox, &s.reason))
            .collect();
        o.graph_requests = r.graph_requests;
    })
}
