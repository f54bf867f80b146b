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
use super::plan::{FetchMode, Known, Plan, Planner, with_deletions};
use super::run::{RunReport, Tracker};
use super::scope::{UserScope, fingerprint};
use super::{SyncContext, SyncError, SyncOptions, USERS_KIND};
use crate::graph::{GraphError, USER_FIELDS, User};
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
    let changed: Vec<String> = match &opts.targets {
        Some(_) => (plan.changes.iter())
            .filter(|c| matches!(c, super::plan::Change::Upsert { .. }))
            .map(|c| c.oid().to_string())
            .collect(),
        None => Vec::new(),
    };
    let mut report =
        apply_and_finish(&ctx.store, &ctx.tenant_id, &settings, opts, &plan, run).await?;
    report.changed_oids = changed;
    Ok(report)
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
    let known = Known::new(
        &ctx.store.pbx_users(tenant).await?,
        &ctx.store.directory_users(tenant).await?,
    );
    let fetch_failed = |source| SyncError::Fetch {
        run_id: run.run_id.clone(),
        source: Box::new(source),
    };
    let group = group_members(ctx, opts).await.map_err(fetch_failed)?;
    let scope = UserScope::new(&settings.users, &opts.departments, group);
    let fingerprint = fingerprint(&settings.users, &opts.departments, opts.group_id.as_deref());
    let cursor = ctx.store.sync_cursor(tenant, USERS_KIND).await?;
    let resume = cursor
        .filter(|c| c.fingerprint == fingerprint && opts.group_id.is_none() && !known.needs_full())
        .map(|c| c.delta_link);
    let round = fetch_round(ctx, run, &known, &scope, resume).await?;
    let mut changes = round.changes;
    for item in round.skipped {
        run.item(item);
    }
    if let Some(grace) = opts.delete_after {
        let cutoff = now_epoch().saturating_sub(i64::try_from(grace.as_secs()).unwrap_or(i64::MAX));
        changes = with_deletions(changes, known.expired(cutoff));
    }
    let plan = Plan {
        mode: round.mode,
        delta_link: round.delta_link,
        fingerprint,
        changes,
    };
    Ok((plan, known.enabled_synced()))
}

/// A complete round, planned.
struct Round {
    mode: FetchMode,
    changes: Vec<super::plan::Change>,
    skipped: Vec<ItemError>,
    delta_link: String,
}

/// Reads a round from `resume` (a stored deltaLink) or from scratch; an expired token
/// falls back to a full round once.
async fn fetch_round(
    ctx: &SyncContext,
    run: &mut Tracker,
    known: &Known,
    scope: &UserScope,
    resume: Option<String>,
) -> Result<Round, SyncError> {
    let full_url = ctx.graph.users_delta_url(USER_FIELDS);
    let first = match resume {
        Some(link) => read_round(ctx, run, known, scope, link, FetchMode::Delta).await,
        None => read_round(ctx, run, known, scope, full_url.clone(), FetchMode::Full).await,
    };
    let round = match first {
        Err(GraphError::SyncStateNotFound) => {
            tracing::info!(tenant = %ctx.tenant_id, "the users delta token expired; comparing a full listing");
            run.notes
                .push("the delta token had expired; compared a full listing".into());
            read_round(ctx, run, known, scope, full_url, FetchMode::Full).await
        }
        other => other,
    };
    round
        .map_err(|source| SyncError::Fetch {
            run_id: run.run_id.clone(),
            source: Box::new(source),
        })?
        .ok_or_else(|| SyncError::Incomplete {
            run_id: run.run_id.clone(),
        })
}

/// Streams the pages of one round through a planner. `Ok(None)`: the round ended
/// without a deltaLink (incomplete).
async fn read_round(
    ctx: &SyncContext,
    run: &mut Tracker,
    known: &Known,
    scope: &UserScope,
    first: String,
    mode: FetchMode,
) -> Result<Option<Round>, GraphError> {
    let mut planner = Planner::new(known, scope, mode == FetchMode::Full);
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
    let (changes, skipped) = planner.finish();
    Ok(Some(Round {
        mode,
        changes,
        skipped,
        delta_link,
    }))
}

/// Lower-case oids of the group's transitive members, when a group filter is set.
async fn group_members(
    ctx: &SyncContext,
    opts: &SyncOptions,
) -> Result<Option<HashSet<String>>, GraphError> {
    let Some(group) = opts.group_id.as_deref() else {
        return Ok(None);
    };
    let url = ctx.graph.group_members_url(group, &["id"]);
    let mut pages = ctx.graph.pages::<User>(url, "users");
    let mut members = HashSet::new();
    while let Some(page) = pages.next().await {
        members.extend(page?.value.into_iter().map(|u| u.id.to_ascii_lowercase()));
    }
    Ok(Some(members))
}
