//! One users → extensions run: fetch a `/users/delta` round (from the stored deltaLink
//! when the scope is unchanged, otherwise — or when Graph no longer knows the token — a
//! full round compared with the store), plan, check the deletion threshold, apply, and
//! only then save the new deltaLink. Any Graph failure (after the client's retries) ends
//! the run before anything is written: a partial listing never reads as "users removed".
//!
//! A group filter forces full rounds: leaving a group does not change the user, so a users
//! delta round would never report it. A PBX user deleted on the PBX side does the same
//! (a delta round would not mention that user), so it comes back with the next run.

use std::collections::HashSet;

use super::apply::apply_and_finish;
use super::plan::{Change, DisableReason, FetchMode, Known, Plan, Planner, with_deletions};
use super::run::{RunReport, Tracker};
use super::scope::{UserScope, fingerprint};
use super::{SyncContext, SyncError, SyncOptions, USERS_KIND};
use crate::graph::{GraphError, USER_FIELDS, User};
use crate::ids::ObjectId;
use crate::settings::Ms365Settings;
use crate::store::{ItemError, RunStatus, StoreError, now_epoch};

/// Runs one users sync for `ctx.tenant_id` with the tenant's stored settings.
pub async fn sync_users(ctx: &SyncContext, opts: &SyncOptions) -> Result<RunReport, SyncError> {
    let settings = ctx.store.ms365_settings(&ctx.tenant_id).await?;
    let mut run = Tracker::start(&ctx.store, &ctx.tenant_id, opts, &ctx.graph).await?;
    if !settings.users.enabled {
        let message = "user sync is turned off (users.enabled); nothing to do".to_string();
        return Ok(run
            .finish(RunStatus::Succeeded, Some(message), None)
            .await?);
    }
    let (plan, enabled_synced) = match fetch_plan(ctx, opts, &settings, &mut run).await {
        Ok(fetched) => fetched,
        Err(e) => {
            tracing::warn!(tenant = %ctx.tenant_id, run = %run.run_id, error = %e, "user sync failed");
            run.finish(RunStatus::Failed, Some(e.to_string()), None)
                .await?;
            return Err(e);
        }
    };
    run.mode = Some(plan.mode.as_str().to_string());
    let limit = threshold(opts, enabled_synced);
    if plan.disruptive() > limit {
        run.threshold_exceeded = true;
        if !run.is_dry() {
            return hold(&plan, limit, run).await;
        }
        run.notes.push(format!(
            "would stop for approval: {} users disabled or deleted, threshold {limit}",
            plan.disruptive()
        ));
    }
    let mut report =
        apply_and_finish(&ctx.store, &ctx.tenant_id, &settings, opts, &plan, run).await?;
    // The photos phase of a delta round looks at the users it changed; a targeted run's
    // PBX phase at the users it touched.
    if opts.targets.is_some() || plan.mode == FetchMode::Delta {
        (report.changed_oids, report.touched_oids) = touched(&plan.changes);
    }
    Ok(report)
}

/// The users a targeted run changed: those created or updated (their photos are checked
/// next), and every one for the PBX phase unless one was deleted.
fn touched(changes: &[Change]) -> (Vec<ObjectId>, Option<Vec<ObjectId>>) {
    let oids = |keep: fn(&Change) -> bool| -> Vec<ObjectId> {
        (changes.iter().filter(|c| keep(c)))
            .map(|c| c.oid().clone())
            .collect()
    };
    let upserts = oids(|c| matches!(c, Change::Upsert { .. }));
    let deleted = changes.iter().any(|c| matches!(c, Change::Delete { .. }));
    (upserts, (!deleted).then(|| oids(|_| true)))
}

/// The most users a run may disable + delete without approval.
fn threshold(opts: &SyncOptions, enabled_synced: usize) -> usize {
    match opts.threshold_percent {
        Some(p) if p.is_finite() && p >= 0.0 => {
            (enabled_synced as f64 * p / 100.0).floor() as usize
        }
        _ => opts.threshold,
    }
}

/// Records the run as awaiting approval with its plan; nothing is applied.
async fn hold(plan: &Plan, limit: usize, mut run: Tracker) -> Result<RunReport, SyncError> {
    let planned = plan.counts();
    run.users.created = planned.created;
    run.users.updated = planned.updated;
    run.users.disabled = planned.disabled;
    run.users.deleted = planned.deleted;
    let json = serde_json::to_string(plan).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let message = format!(
        "the run would disable or delete {} users, more than the threshold of {limit}; \
         nothing was applied; approve run {} to apply it",
        plan.disruptive(),
        run.run_id
    );
    tracing::warn!(run = %run.run_id, "user sync stopped at the deletion threshold");
    Ok(run
        .finish(RunStatus::AwaitingApproval, Some(message), Some(json))
        .await?)
}

/// Fetches a complete round and plans it; returns the plan and the number of enabled
/// synced users (the base of a percentage threshold).
async fn fetch_plan(
    ctx: &SyncContext,
    opts: &SyncOptions,
    settings: &Ms365Settings,
    run: &mut Tracker,
) -> Result<(Plan, usize), SyncError> {
    let tenant = &ctx.tenant_id;
    let fetch_failed = |source| SyncError::Fetch {
        run_id: run.run_id.clone(),
        source: Box::new(source),
    };
    let group = group_members(ctx, opts).await.map_err(fetch_failed)?;
    let scope = UserScope::new(&settings.users, &opts.departments, group);
    let fingerprint = fingerprint(&settings.users, &opts.departments, opts.group_id.as_deref());
    let cursor = ctx.store.sync_cursor(tenant, USERS_KIND).await?;
    let lost = ctx.store.synced_user_lost_on_pbx(tenant).await?;
    let resume = cursor
        .filter(|c| c.fingerprint == fingerprint && opts.group_id.is_none() && !lost)
        .map(|c| c.delta_link);
    let cutoff = opts.delete_after.map(|grace| {
        now_epoch().saturating_sub(i64::try_from(grace.as_secs()).unwrap_or(i64::MAX))
    });
    let round = fetch_round(ctx, run, &scope, resume, cutoff).await?;
    for item in round.skipped {
        run.item(item);
    }
    let plan = Plan {
        mode: round.mode,
        delta_link: round.delta_link,
        fingerprint,
        changes: with_deletions(round.changes, round.expired),
    };
    Ok((plan, round.enabled_synced))
}

/// A complete round, planned.
struct Round {
    mode: FetchMode,
    changes: Vec<Change>,
    skipped: Vec<ItemError>,
    delta_link: String,
    /// Users whose grace period is over (none without a grace period).
    expired: Vec<ObjectId>,
    enabled_synced: usize,
}

/// Reads a round from `resume` (a stored deltaLink) or from scratch; an expired token
/// falls back to a full round once.
async fn fetch_round(
    ctx: &SyncContext,
    run: &mut Tracker,
    scope: &UserScope,
    resume: Option<String>,
    cutoff: Option<i64>,
) -> Result<Round, SyncError> {
    if let Some(link) = resume {
        match read_delta(ctx, run, link).await {
            Err(GraphError::SyncStateNotFound) => {
                tracing::info!(tenant = %ctx.tenant_id, "the users delta token expired; comparing a full listing");
                run.notes
                    .push("the delta token had expired; compared a full listing".into());
            }
            read => {
                let (users, delta_link) = complete(run, read)?;
                return plan_delta(ctx, scope, &users, delta_link, cutoff).await;
            }
        }
    }
    let tenant = &ctx.tenant_id;
    let known = Known::new(
        &ctx.store.pbx_users(tenant).await?,
        &ctx.store.directory_users(tenant).await?,
    );
    let first = ctx.graph.users_delta_url(USER_FIELDS);
    let read = read_full(ctx, run, &known, scope, first).await;
    let ((changes, skipped), delta_link) = complete(run, read)?;
    Ok(Round {
        mode: FetchMode::Full,
        changes,
        skipped,
        delta_link,
        expired: cutoff.map(|c| known.expired(c)).unwrap_or_default(),
        enabled_synced: known.enabled_synced(),
    })
}

/// A read's failure as the run's: a Graph error, or a round without a deltaLink.
fn complete<T>(
    run: &Tracker,
    read: Result<Option<(T, String)>, GraphError>,
) -> Result<(T, String), SyncError> {
    read.map_err(|source| SyncError::Fetch {
        run_id: run.run_id.clone(),
        source: Box::new(source),
    })?
    .ok_or_else(|| SyncError::Incomplete {
        run_id: run.run_id.clone(),
    })
}

/// Plans a delta round against the stored rows of the users it returned (and of those
/// whose grace period is over), read by oid: a round of a few changes reads a few rows,
/// however large the tenant.
async fn plan_delta(
    ctx: &SyncContext,
    scope: &UserScope,
    users: &[User],
    delta_link: String,
    cutoff: Option<i64>,
) -> Result<Round, SyncError> {
    let tenant = &ctx.tenant_id;
    let mut oids: Vec<ObjectId> = (users.iter())
        .map(|u| u.id.clone())
        .filter(|oid| !oid.is_empty())
        .collect();
    if let Some(cutoff) = cutoff {
        let reasons = [DisableReason::Removed, DisableReason::OutOfScope].map(|r| r.as_str());
        oids.extend(ctx.store.retired_oids(tenant, &reasons, cutoff).await?);
    }
    oids.sort();
    oids.dedup();
    let known = Known::new(
        &ctx.store.pbx_users_by_oids(tenant, &oids).await?,
        &ctx.store.directory_users_by_oids(tenant, &oids).await?,
    );
    let mut planner = Planner::new(&known, scope, false);
    users.iter().for_each(|u| planner.observe(u));
    let (changes, skipped) = planner.finish();
    let synced = ctx.store.count_synced_users(tenant).await?;
    Ok(Round {
        mode: FetchMode::Delta,
        changes,
        skipped,
        delta_link,
        expired: cutoff.map(|c| known.expired(c)).unwrap_or_default(),
        enabled_synced: usize::try_from(synced).unwrap_or(usize::MAX),
    })
}

/// Reads the pages of a delta round. `Ok(None)`: the round ended without a deltaLink
/// (incomplete). Delta rounds hold what changed since the last run, so they are kept
/// whole; full rounds stream ([`read_full`]).
async fn read_delta(
    ctx: &SyncContext,
    run: &mut Tracker,
    first: String,
) -> Result<Option<(Vec<User>, String)>, GraphError> {
    let mut pages = ctx
        .graph
        .pages::<User>(first, crate::graph::client::DELTA_KIND);
    let mut users = Vec::new();
    run.progress("fetch", 0, 0).await;
    while let Some(page) = pages.next().await {
        users.extend(page?.value);
        run.progress("fetch", users.len() as u64, 0).await;
    }
    Ok(pages.delta_link().map(|link| (users, link.to_string())))
}

/// Streams the pages of a full round through a planner. `Ok(None)`: the round ended
/// without a deltaLink (incomplete).
async fn read_full(
    ctx: &SyncContext,
    run: &mut Tracker,
    known: &Known,
    scope: &UserScope,
    first: String,
) -> Result<Option<(Planned, String)>, GraphError> {
    let mut planner = Planner::new(known, scope, true);
    let mut pages = ctx
        .graph
        .pages::<User>(first, crate::graph::client::DELTA_KIND);
    run.progress("fetch", 0, 0).await;
    while let Some(page) = pages.next().await {
        for user in &page?.value {
            planner.observe(user);
        }
        run.progress("fetch", planner.observed, 0).await;
    }
    let Some(delta_link) = pages.delta_link().map(str::to_string) else {
        return Ok(None);
    };
    Ok(Some((planner.finish(), delta_link)))
}

/// A planner's changes and skipped users.
type Planned = (Vec<Change>, Vec<ItemError>);

/// Lower-case oids of the group's transitive members, when a group filter is set.
async fn group_members(
    ctx: &SyncContext,
    opts: &SyncOptions,
) -> Result<Option<HashSet<ObjectId>>, GraphError> {
    let Some(group) = opts.group_id.as_deref() else {
        return Ok(None);
    };
    let url = ctx.graph.group_members_url(group, &["id"]);
    let mut pages = ctx.graph.pages::<User>(url, "users");
    let mut members = HashSet::new();
    while let Some(page) = pages.next().await {
        members.extend(page?.value.into_iter().map(|u| u.id));
    }
    Ok(Some(members))
}
