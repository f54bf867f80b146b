//! One sync run of a tenant, phase after phase, for the worker and the `sync` command
//! alike: with the PBX connector on, what the PBX holds ([`read_pbx`]) first; then users
//! (which opens the run record), photos and contacts when the tenant has them on, and
//! last the PBX itself ([`push_to_pbx`]). The record stays `running` until the last phase is recorded; only then do its
//! status, `phase` and `finished_at` say how the whole run went. A later phase that fails
//! fails the run, while what the earlier phases applied stands (each phase is crash-safe on
//! its own). A PBX that refuses the sign-in or cannot be reached before the users phase
//! fails the run before anything is written. A dry run plans the users phase and lists
//! what the PBX phase would send for the record as it stands; photos and contacts have
//! nothing to preview without writing.

use std::collections::HashSet;

use super::contacts::{ContactOptions, ContactReport, sync_contacts};
use super::pbx_push::{PbxReport, PushFocus, push_to_pbx};
use super::pbx_read::{PbxListing, ReadReport, read_pbx};
use super::photos::{PhotoOptions, PhotoReport, PhotoScope, sync_photos};
use super::run::Tracker;
use super::{RunReport, RunTrigger, SyncContext, SyncError, SyncOptions, sync_users};
use crate::ids::TenantId;
use crate::settings::Ms365Settings;
use crate::store::{EntityCounts, ItemError, ItemOutcome, PhaseOutcome, RunStatus, now_epoch};

/// The phases of a run, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Users,
    Photos,
    Contacts,
    /// The PBX connector: the PBX is made to match the record.
    Pbx,
}

impl Phase {
    /// The name in the run record (`counts` key and live `phase`).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Users => "users",
            Phase::Photos => "photos",
            Phase::Contacts => "contacts",
            Phase::Pbx => "pbx",
        }
    }

    /// The phases after users that the tenant's settings (and the connector) turn on.
    fn later(settings: &Ms365Settings, pbx: bool) -> Vec<Phase> {
        let mut phases = Vec::new();
        if settings.users.sync_photo {
            phases.push(Phase::Photos);
        }
        if settings.personal_contacts.enabled || settings.shared_mailbox.enabled {
            phases.push(Phase::Contacts);
        }
        if pbx {
            phases.push(Phase::Pbx);
        }
        phases
    }
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub tenant_id: TenantId,
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
    /// `None` without the PBX connector.
    pub pbx: Option<PbxReport>,
    /// Why the PBX phase failed (the phases before it stand).
    pub pbx_error: Option<String>,
    /// What kind of PBX failure that was: `unreachable`, `sign_in`, `local` or `other`.
    pub pbx_error_kind: Option<&'static str>,
    /// Seconds each phase took, in the order they ran.
    pub phase_seconds: Vec<(&'static str, f64)>,
    /// The run's Microsoft Graph traffic.
    pub graph: crate::graph::GraphStats,
    /// The run's PBX traffic (with the connector).
    pub pbx_stats: Option<crate::pbx::PbxStats>,
}

impl RunSummary {
    fn new(ctx: &SyncContext, trigger: RunTrigger, users: RunReport) -> RunSummary {
        RunSummary {
            tenant_id: ctx.tenant_id.clone(),
            trigger,
            users,
            photos: None,
            photo_error: None,
            contacts: None,
            contact_error: None,
            pbx: None,
            pbx_error: None,
            pbx_error_kind: None,
            phase_seconds: Vec::new(),
            graph: Default::default(),
            pbx_stats: None,
        }
    }

    /// Takes the run's Graph and PBX counters (each run has its own clients).
    fn with_traffic(mut self, ctx: &SyncContext) -> RunSummary {
        self.graph = ctx.graph.stats();
        self.pbx_stats = ctx.pbx.as_ref().map(|t| t.client.stats());
        self
    }

    fn failed(&self) -> bool {
        self.photo_error.is_some() || self.contact_error.is_some() || self.pbx_error.is_some()
    }
}

/// Runs every phase the tenant has on; see the module documentation.
pub async fn run_phases(ctx: &SyncContext, opts: SyncOptions) -> Result<RunSummary, SyncError> {
    let settings = ctx.store.ms365_settings(&ctx.tenant_id).await?;
    if opts.dry_run {
        return dry_run(ctx, opts, &settings).await;
    }
    let later = Phase::later(&settings, ctx.pbx.is_some());
    if !settings.users.sync_photo {
        super::photos::forget_rotation(ctx).await;
    }
    let trigger = opts.trigger;
    let targets = opts.targets.clone();
    let opts = SyncOptions {
        keep_open: !later.is_empty(),
        ..opts
    };
    let pbx_read = match &ctx.pbx {
        Some(target) => {
            let full = ctx
                .store
                .sync_cursor(&ctx.tenant_id, super::USERS_KIND)
                .await?;
            match read_pbx(&ctx.into(), target, full.is_none()).await {
                Ok(read) => Some(read),
                Err(e) => {
                    note_pbx(ctx, Err(&e)).await;
                    return failed_before_users(ctx, &opts, e).await;
                }
            }
        }
        None => None,
    };
    let started = std::time::Instant::now();
    let users = sync_users(ctx, &opts).await?;
    let mut summary = RunSummary::new(ctx, trigger, users);
    summary
        .phase_seconds
        .push((Phase::Users.as_str(), started.elapsed().as_secs_f64()));
    if summary.users.status != RunStatus::Succeeded || later.is_empty() {
        return Ok(summary.with_traffic(ctx));
    }
    let mut pbx_read = pbx_read;
    for phase in later {
        let started = std::time::Instant::now();
        run_phase(ctx, phase, &mut summary, &mut pbx_read, targets.as_ref()).await;
        (summary.phase_seconds).push((phase.as_str(), started.elapsed().as_secs_f64()));
    }
    let status = if summary.failed() {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    ctx.store
        .end_sync_run(&summary.users.run_id, status)
        .await?;
    summary.users.status = status;
    summary.users.finished_at = now_epoch();
    Ok(summary.with_traffic(ctx))
}

/// A dry run: the users plan, and what the PBX phase would send for the record as it is.
async fn dry_run(
    ctx: &SyncContext,
    opts: SyncOptions,
    settings: &Ms365Settings,
) -> Result<RunSummary, SyncError> {
    let trigger = opts.trigger;
    let mut users = sync_users(ctx, &opts).await?;
    if settings.users.sync_photo
        || settings.personal_contacts.enabled
        || settings.shared_mailbox.enabled
    {
        let line = "(photos and contacts are not previewed)".to_string();
        users.preview.push(line);
    }
    let mut summary = RunSummary::new(ctx, trigger, users);
    if let Some(target) = &ctx.pbx {
        let pbx = push_to_pbx(&ctx.into(), target, None, None, true).await?;
        let lines = pbx.preview.iter().map(|l| format!("PBX: {l}"));
        summary.users.preview.extend(lines);
        let planned = summary
            .users
            .counts
            .get("users")
            .copied()
            .unwrap_or_default();
        summary.users.preview.extend(planned_pbx_requests(&planned));
        summary.pbx = Some(pbx);
    }
    Ok(summary)
}

/// What the users plan of a dry run means for the PBX, in requests.
fn planned_pbx_requests(planned: &EntityCounts) -> Vec<String> {
    let mut lines = Vec::new();
    if planned.created > 0 {
        lines.push(format!(
            "PBX: POST /users and its ms365_binding for each of the {} users created above",
            planned.created
        ));
    }
    let changed = planned.updated + planned.disabled;
    if changed > 0 {
        lines.push(format!(
            "PBX: POST /users/{{id}} (sync-owned fields only) for each of the {changed} users updated or disabled above"
        ));
    }
    if planned.deleted > 0 {
        lines.push(format!(
            "PBX: POST /users/{{id}}/destroy for each of the {} users deleted above (only users the gateway created)",
            planned.deleted
        ));
    }
    lines
}

/// The PBX could not be read before the users phase: a failed run, nothing written.
async fn failed_before_users(
    ctx: &SyncContext,
    opts: &SyncOptions,
    e: SyncError,
) -> Result<RunSummary, SyncError> {
    tracing::warn!(tenant = %ctx.tenant_id, error = %e, "sync stopped before the users phase");
    let opts = SyncOptions {
        keep_open: false,
        ..opts.clone()
    };
    let run = Tracker::start(&ctx.store, &ctx.tenant_id, &opts, &ctx.graph).await?;
    let message = format!("nothing was changed: {e}");
    let report = run.finish(RunStatus::Failed, Some(message), None).await?;
    let mut summary = RunSummary::new(ctx, opts.trigger, report);
    summary.pbx_error = Some(e.to_string());
    summary.pbx_error_kind = Some(pbx_error_kind(&e));
    Ok(summary.with_traffic(ctx))
}

/// One later phase: live progress, the phase itself, its record, the summary.
async fn run_phase(
    ctx: &SyncContext,
    phase: Phase,
    summary: &mut RunSummary,
    pbx_read: &mut Option<(Option<PbxListing>, ReadReport)>,
    targets: Option<&super::Targets>,
) {
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
            let scope = PhotoScope::for_run(ctx, &summary.users, targets.is_some()).await;
            let options = PhotoOptions {
                scope,
                ..PhotoOptions::default()
            };
            let mut result = sync_photos(ctx, &options).await;
            if result.is_ok() {
                let moved = options.scope.done(ctx).await;
                result = result.and_then(|r| moved.map(|()| r).map_err(SyncError::from));
            }
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
                only: targets.cloned(),
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
        Phase::Pbx => {
            let Some(target) = &ctx.pbx else { return };
            let (listing, read) = pbx_read.take().unwrap_or_default();
            let focus = targets.map(|t| PushFocus {
                users: summary.users.touched_oids.clone().unwrap_or_default(),
                contacts: !t.shared.is_empty(),
            });
            let focus = focus.filter(|_| summary.users.touched_oids.is_some());
            let record = ctx.into();
            let result =
                push_to_pbx(&record, target, listing.as_ref(), focus.as_ref(), false).await;
            note_pbx(ctx, result.as_ref().map(|_| ())).await;
            let outcome = pbx_outcome(&result, read);
            if let Ok(r) = &result {
                record_pbx_extras(ctx, &run_id, r, summary).await;
            }
            match result {
                Ok(r) => summary.pbx = Some(r),
                Err(e) => {
                    summary.pbx_error_kind = Some(pbx_error_kind(&e));
                    summary.pbx_error = Some(e.to_string());
                }
            }
            outcome
        }
    };
    add_to_report(&mut summary.users, &outcome);
    if let Err(e) = ctx.store.record_sync_phase(&run_id, &outcome).await {
        tracing::warn!(run = %run_id, error = %e, "cannot record the {} phase", outcome.kind);
    }
}

/// The metric word for a failed PBX phase.
fn pbx_error_kind(e: &SyncError) -> &'static str {
    use crate::pbx::PbxError;
    match e {
        SyncError::Pbx(PbxError::Unreachable { .. } | PbxError::Timeout { .. }) => "unreachable",
        SyncError::Pbx(PbxError::SignIn { .. }) => "sign_in",
        SyncError::Pbx(PbxError::Local(_)) | SyncError::Store(_) => "local",
        _ => "other",
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

/// Keeps how the last conversation with the PBX went, for the status and the admin page.
async fn note_pbx(ctx: &SyncContext, result: Result<(), &SyncError>) {
    let (ok, message) = match result {
        Ok(()) => (
            true,
            "the last sync reached the PBX and signed in".to_string(),
        ),
        Err(e) => (false, e.to_string()),
    };
    if let Err(e) = ctx.store.set_pbx_status(&ctx.tenant_id, ok, &message).await {
        tracing::warn!(tenant = %ctx.tenant_id, error = %e, "cannot record the PBX status");
    }
}

/// The PBX's company contacts (under `pbx_contacts`) and the PBX traffic of the phase.
async fn record_pbx_extras(
    ctx: &SyncContext,
    run_id: &str,
    r: &PbxReport,
    summary: &mut RunSummary,
) {
    let contacts = PhaseOutcome {
        kind: "pbx_contacts",
        counts: r.contacts,
        errors: Vec::new(),
        graph_requests: 0,
        failure: None,
    };
    add_to_report(&mut summary.users, &contacts);
    let recorded = match ctx.store.record_sync_phase(run_id, &contacts).await {
        Ok(()) => ctx.store.add_pbx_requests(run_id, r.requests).await,
        Err(e) => Err(e),
    };
    if let Err(e) = recorded {
        tracing::warn!(run = %run_id, error = %e, "cannot record the PBX phase");
    }
}

fn pbx_outcome(result: &Result<PbxReport, SyncError>, read: ReadReport) -> PhaseOutcome {
    let mut outcome = phase_outcome(Phase::Pbx.as_str(), result, |r, o| {
        o.counts = r.users;
        o.errors = r.errors.clone();
    });
    outcome.errors.splice(0..0, read.errors);
    outcome
}
