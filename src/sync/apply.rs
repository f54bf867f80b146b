//! Applying a plan: new users get their extension number and username here, from a fresh
//! look at the store and in oid order (so a plan approved days later still gets free
//! numbers, and the numbers do not depend on Graph's order). The writes are built and sent
//! a batch (`batch_size`) at a time, each batch one transaction, so a new tenant's round
//! never holds all of its writes at once. A batch that fails is retried one user at a
//! time, so one conflicting user (a number taken on the PBX side meanwhile) fails alone,
//! with its reason, and the rest is applied. The delta cursor is saved only after every
//! write is committed and no user failed: a failed user is retried by the next run.

use std::collections::{HashMap, HashSet};

use super::extensions::{Allocator, ExtensionRange, RANGE_EXHAUSTED};
use super::plan::{ADOPTED, BOUND, Change, DisableReason, Effect, FetchMode, Plan};
use super::run::{MAX_PREVIEW, RunReport, Tracker};
use super::username::Usernames;
use super::{SyncError, SyncOptions, USERS_KIND};
use crate::ids::{ObjectId, TenantId};
use crate::settings::Ms365Settings;
use crate::store::{
    DirectoryUser, DirectoryWrite, ItemError, ItemOutcome, PbxLink, PbxLinkKind, PbxProfile,
    PbxUser, PbxUserSource, RunStatus, Store, StoreError, now_epoch,
};

/// Who a write is about, for counts and error reports.
struct Meta {
    oid: ObjectId,
    name: String,
    effect: Effect,
}

/// The writes of a plan, ready for the store.
#[derive(Default)]
struct Writes {
    meta: Vec<Meta>,
    writes: Vec<DirectoryWrite>,
}

/// The store's users of the tenant, as assigning needs them.
struct Current<'a> {
    tenant_id: &'a TenantId,
    rows: HashMap<ObjectId, &'a PbxUser>,
    dirs: HashMap<ObjectId, &'a DirectoryUser>,
    numbers: Allocator,
    names: Usernames,
    /// Users of the PBX's own that the connector found on the PBX and nobody is bound to,
    /// by lower-case username and by lower-case e-mail: a new Microsoft user matching one
    /// is bound to it (adopted) instead of getting a second PBX user.
    adoptable: HashMap<String, &'a PbxUser>,
    now: i64,
}

impl<'a> Current<'a> {
    fn new(
        tenant_id: &'a TenantId,
        range: ExtensionRange,
        pbx: &'a [PbxUser],
        dir: &'a [DirectoryUser],
        found_on_pbx: &HashSet<&str>,
    ) -> Self {
        let remembered: Vec<(&str, &str)> = (dir.iter())
            .filter_map(|d| Some((d.oid.as_str(), d.extension.as_deref()?)))
            .collect();
        Current {
            tenant_id,
            rows: (pbx.iter())
                .filter_map(|p| Some((p.ms365_oid.clone()?, p)))
                .collect(),
            dirs: (dir.iter()).map(|d| (d.oid.clone(), d)).collect(),
            numbers: Allocator::new(
                range,
                pbx.iter().map(|p| p.extension_number.as_str()),
                remembered.iter().copied(),
            ),
            names: Usernames::new(pbx.iter().map(|p| p.username.as_str())),
            adoptable: adoptable(pbx, dir, found_on_pbx),
            now: now_epoch(),
        }
    }

    /// The adoptable PBX user whose username is the UPN's local part or whose e-mail is
    /// the user's; taken out, so two Microsoft users never adopt the same one.
    fn take_adoptable(&mut self, upn: &str, profile: &PbxProfile) -> Option<&'a PbxUser> {
        let local = upn.split('@').next().unwrap_or("").to_lowercase();
        let email = profile.email.as_deref().unwrap_or("").to_lowercase();
        let found = [local, email]
            .iter()
            .filter(|k| !k.is_empty())
            .find_map(|k| self.adoptable.get(k).copied())?;
        self.adoptable.retain(|_, u| u.id != found.id);
        Some(found)
    }

    /// Binds `oid` to the PBX's own user `local`; the user stays as the PBX has it.
    fn adopt(
        &self,
        oid: &ObjectId,
        upn: &str,
        profile: &PbxProfile,
        disabled: bool,
        local: &PbxUser,
    ) -> DirectoryWrite {
        let directory = DirectoryUser {
            tenant_id: self.tenant_id.clone(),
            oid: oid.clone(),
            upn: upn.to_string(),
            pbx_user_id: local.id.clone(),
            extension: Some(local.extension_number.clone()),
            display_name: profile.display_name.clone(),
            email: profile.email.clone(),
            role: crate::store::Role::User,
            enabled: !disabled && local.enabled,
            source: ADOPTED.into(),
        };
        DirectoryWrite::Adopt {
            directory: Box::new(directory),
        }
    }

    /// The write for an upsert: an update when the PBX user exists, else a creation. An
    /// oid bound meanwhile by an administrator is skipped; a full range fails the user.
    fn upsert(
        &mut self,
        oid: &ObjectId,
        upn: &str,
        profile: &PbxProfile,
        disabled: Option<DisableReason>,
        effect: Effect,
    ) -> Result<(Effect, DirectoryWrite), ItemError> {
        let problem = |outcome, reason: &str| ItemError {
            entity: "user".into(),
            key: oid.to_string(),
            name: upn.to_string(),
            outcome,
            reason: reason.to_string(),
        };
        if self.dirs.get(oid).is_some_and(|d| d.source != "sync") {
            return Err(problem(ItemOutcome::Skipped, BOUND));
        }
        if self.rows.contains_key(oid) {
            // A plan made earlier may call it a creation; it is an update now.
            let effect = if effect == Effect::Create {
                Effect::Update
            } else {
                effect
            };
            let write = DirectoryWrite::Update {
                oid: oid.clone(),
                upn: upn.to_string(),
                profile: Box::new(profile.clone()),
                disabled: disabled.map(|d| d.as_str().to_string()),
            };
            return Ok((effect, write));
        }
        if let Some(local) = self.take_adoptable(upn, profile) {
            let write = self.adopt(oid, upn, profile, disabled.is_some(), local);
            return Ok((Effect::Adopt, write));
        }
        match self.create(oid, upn, profile, disabled) {
            Some(write) => Ok((Effect::Create, write)),
            None => Err(problem(ItemOutcome::Failed, RANGE_EXHAUSTED)),
        }
    }

    fn name_of(&self, oid: &ObjectId) -> String {
        self.dirs
            .get(oid)
            .map_or_else(|| oid.to_string(), |d| d.upn.clone())
    }

    /// A new PBX user for `oid` (a number and a username), or `None` when the range is full.
    fn create(
        &mut self,
        oid: &ObjectId,
        upn: &str,
        profile: &PbxProfile,
        disabled: Option<DisableReason>,
    ) -> Option<DirectoryWrite> {
        let extension = self.numbers.assign(oid.as_str())?;
        let earlier = self.dirs.get(oid);
        // The same id as before a PBX-side deletion: the user comes back as itself.
        let id = earlier.map_or_else(
            || uuid::Uuid::new_v4().to_string(),
            |d| d.pbx_user_id.clone(),
        );
        let user = PbxUser {
            id: id.clone(),
            tenant_id: self.tenant_id.clone(),
            extension_number: extension.clone(),
            username: self.names.claim(upn),
            profile: profile.clone(),
            enabled: disabled.is_none(),
            source: PbxUserSource::Ms365,
            ms365_oid: Some(oid.clone()),
            sync_disabled: disabled.map(|d| d.as_str().to_string()),
            sync_disabled_at: disabled.map(|_| self.now),
            created_at: self.now,
            updated_at: self.now,
        };
        let directory = DirectoryUser {
            tenant_id: self.tenant_id.clone(),
            oid: oid.clone(),
            upn: upn.to_string(),
            pbx_user_id: id,
            extension: Some(extension),
            display_name: profile.display_name.clone(),
            email: profile.email.clone(),
            role: earlier.map_or(crate::store::Role::User, |d| d.role),
            enabled: disabled.is_none(),
            source: "sync".into(),
        };
        Some(DirectoryWrite::Create {
            user: Box::new(user),
            directory: Box::new(directory),
        })
    }
}

/// Local PBX users found on the PBX by the connector and bound to nobody, by lower-case
/// username and e-mail.
fn adoptable<'a>(
    pbx: &'a [PbxUser],
    dir: &[DirectoryUser],
    found_on_pbx: &HashSet<&str>,
) -> HashMap<String, &'a PbxUser> {
    let taken: HashSet<&str> = dir.iter().map(|d| d.pbx_user_id.as_str()).collect();
    let mut out = HashMap::new();
    let candidates = (pbx.iter()).filter(|p| {
        p.source == PbxUserSource::Local
            && found_on_pbx.contains(p.id.as_str())
            && !taken.contains(p.id.as_str())
    });
    for p in candidates {
        out.insert(p.username.to_lowercase(), p);
        if let Some(email) = p.profile.email.as_deref().filter(|e| !e.is_empty()) {
            out.entry(email.to_lowercase()).or_insert(p);
        }
    }
    out
}

/// Turns a slice of the plan's changes into writes; users without a free number fail
/// here. Called a batch at a time, in plan order, so the numbers are those a single pass
/// would give while only one batch of writes exists at once (a new tenant's round is
/// 50,000 of them).
fn assign(changes: &[Change], current: &mut Current<'_>, run: &mut Tracker) -> Writes {
    let mut out = Writes::default();
    for change in changes {
        let oid = change.oid().clone();
        let (name, effect, write) = match change {
            Change::Upsert {
                upn,
                profile,
                disabled,
                effect,
                ..
            } => match current.upsert(&oid, upn, profile, *disabled, *effect) {
                Ok((effect, write)) => (upn.clone(), effect, write),
                Err(item) => {
                    run.item(item);
                    continue;
                }
            },
            Change::Disable { reason, effect, .. } => {
                let write = DirectoryWrite::Disable {
                    oid: oid.clone(),
                    reason: reason.as_str().to_string(),
                };
                (current.name_of(&oid), *effect, write)
            }
            Change::Delete { .. } => {
                let write = DirectoryWrite::Delete { oid: oid.clone() };
                (current.name_of(&oid), Effect::Delete, write)
            }
        };
        out.meta.push(Meta { oid, name, effect });
        out.writes.push(write);
    }
    out
}

/// One line of a dry run's preview.
fn describe(meta: &Meta, write: &DirectoryWrite) -> String {
    match write {
        DirectoryWrite::Create { user, .. } => format!(
            "create {} as extension {} (username {}){}",
            meta.name,
            user.extension_number,
            user.username,
            if user.enabled { "" } else { ", disabled" }
        ),
        DirectoryWrite::Update { disabled, .. } => match disabled {
            Some(reason) => format!("update {} (disabled: {reason})", meta.name),
            None => format!("update {}", meta.name),
        },
        DirectoryWrite::Disable { reason, .. } => format!("disable {} ({reason})", meta.name),
        DirectoryWrite::Delete { .. } => format!("delete {} (grace period over)", meta.name),
        DirectoryWrite::Adopt { directory } => format!(
            "bind {} to the existing PBX user with extension {}",
            meta.name,
            directory.extension.as_deref().unwrap_or("-")
        ),
    }
}

/// A write error that concerns the item (a constraint), not the store as a whole.
fn is_item_error(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Conflict(_) | StoreError::Query(sqlx::Error::Database(_))
    )
}

/// Assigns and writes the changes a batch at a time, each batch in one transaction.
async fn write_batches(
    store: &Store,
    current: &mut Current<'_>,
    changes: &[Change],
    batch: usize,
    run: &mut Tracker,
) -> Result<(), SyncError> {
    let tenant_id = current.tenant_id;
    let total = changes.len() as u64;
    let mut done = 0u64;
    run.progress("apply", 0, total).await;
    for changes in changes.chunks(batch.max(1)) {
        let Writes { meta, writes } = assign(changes, current, run);
        match store.apply_directory_writes(tenant_id, &writes).await {
            Ok(()) => meta.iter().for_each(|m| run.count(m.effect)),
            Err(e) if is_item_error(&e) => {
                tracing::warn!(error = %e, "a batch of user writes failed; retrying one by one");
                one_by_one(store, tenant_id, &meta, &writes, run).await?;
            }
            Err(e) => return Err(e.into()),
        }
        done += changes.len() as u64;
        run.progress("apply", done, total).await;
    }
    Ok(())
}

async fn one_by_one(
    store: &Store,
    tenant_id: &TenantId,
    meta: &[Meta],
    writes: &[DirectoryWrite],
    run: &mut Tracker,
) -> Result<(), SyncError> {
    for (m, write) in meta.iter().zip(writes) {
        match (store.apply_directory_writes(tenant_id, std::slice::from_ref(write))).await {
            Ok(()) => run.count(m.effect),
            Err(e) if is_item_error(&e) => run.fail_item(m.oid.as_str(), &m.name, e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Assigns and writes the plan's changes (a dry run only assigns, for the preview).
async fn apply_plan(
    store: &Store,
    tenant_id: &TenantId,
    settings: &Ms365Settings,
    opts: &SyncOptions,
    plan: &Plan,
    run: &mut Tracker,
) -> Result<(), SyncError> {
    let starting = &settings.users.starting_extension_number;
    let range = ExtensionRange::from_settings(starting, &opts.default_range)?;
    let (pbx, dir, links) = stored_rows(store, tenant_id, plan).await?;
    let found_on_pbx: HashSet<&str> = (links.iter())
        .filter(|l| !l.created)
        .map(|l| l.local_id.as_str())
        .collect();
    let mut current = Current::new(tenant_id, range, &pbx, &dir, &found_on_pbx);
    if run.is_dry() {
        let writes = assign(&plan.changes, &mut current, run);
        for (m, w) in writes.meta.iter().zip(&writes.writes) {
            run.count(m.effect);
            if run.preview.len() < MAX_PREVIEW {
                run.preview.push(describe(m, w));
            }
        }
        return Ok(());
    }
    write_batches(store, &mut current, &plan.changes, opts.batch_size, run).await
}

/// The stored rows assigning needs. A delta round whose users all have their PBX user
/// (updates, disables: the common case of a run answering a change notification) needs
/// only theirs, read by oid; a creation needs the whole tenant (every taken number and
/// username, and the PBX's own users it could adopt).
async fn stored_rows(
    store: &Store,
    tenant_id: &TenantId,
    plan: &Plan,
) -> Result<(Vec<PbxUser>, Vec<DirectoryUser>, Vec<PbxLink>), StoreError> {
    if plan.mode == FetchMode::Delta {
        let oids: Vec<ObjectId> = plan.changes.iter().map(|c| c.oid().clone()).collect();
        let pbx = store.pbx_users_by_oids(tenant_id, &oids).await?;
        let stored: HashSet<&ObjectId> = pbx.iter().filter_map(|p| p.ms365_oid.as_ref()).collect();
        let creates = (plan.changes.iter())
            .any(|c| matches!(c, Change::Upsert { .. }) && !stored.contains(c.oid()));
        if !creates {
            let dir = store.directory_users_by_oids(tenant_id, &oids).await?;
            return Ok((pbx, dir, Vec::new()));
        }
    }
    Ok((
        store.pbx_users(tenant_id).await?,
        store.directory_users(tenant_id).await?,
        store.pbx_links(tenant_id, PbxLinkKind::User).await?,
    ))
}

/// Applies the plan, then saves the delta cursor (only when every user made it), then
/// records the end of the run.
pub(crate) async fn apply_and_finish(
    store: &Store,
    tenant_id: &TenantId,
    settings: &Ms365Settings,
    opts: &SyncOptions,
    plan: &Plan,
    mut run: Tracker,
) -> Result<RunReport, SyncError> {
    let failed_before = run.users.failed;
    let mut result = apply_plan(store, tenant_id, settings, opts, plan, &mut run).await;
    let complete = run.users.failed == failed_before;
    if result.is_ok() && complete && !run.is_dry() {
        result =
            (store.save_sync_cursor(tenant_id, USERS_KIND, &plan.delta_link, &plan.fingerprint))
                .await
                .map_err(SyncError::from);
    }
    if let Err(e) = result {
        run.finish(RunStatus::Failed, Some(e.to_string()), None)
            .await?;
        return Err(e);
    }
    if !complete {
        run.notes.push(
            "some users failed; the delta cursor was not advanced, so the next run retries them"
                .into(),
        );
    }
    Ok(run.finish(RunStatus::Succeeded, None, None).await?)
}

/// Applies the plan a run held back at the deletion threshold, then saves the deltaLink
/// the run had fetched. Only a run still awaiting approval can be approved, and only once
/// (a newer run supersedes it: its plan would be stale).
pub async fn approve_run(
    store: &Store,
    run_id: &str,
    opts: &SyncOptions,
) -> Result<RunReport, SyncError> {
    let run =
        (store.sync_run(run_id).await?).ok_or_else(|| SyncError::RunNotFound(run_id.into()))?;
    let Some(json) = store.take_pending_sync_run(run_id).await? else {
        return Err(SyncError::NotAwaitingApproval {
            id: run_id.to_string(),
            status: run.status.as_str().to_string(),
        });
    };
    let tracker = Tracker::resume(store, &run, opts);
    let plan: Plan = match serde_json::from_str(&json) {
        Ok(plan) => plan,
        Err(e) => {
            let reason = e.to_string();
            let message = format!("the held plan is unreadable: {reason}");
            tracker
                .finish(RunStatus::Failed, Some(message), None)
                .await?;
            return Err(SyncError::CorruptPlan {
                id: run_id.into(),
                reason,
            });
        }
    };
    let settings = store.ms365_settings(&run.tenant_id).await?;
    tracing::info!(
        run = run_id,
        changes = plan.changes.len(),
        "applying an approved sync run"
    );
    apply_and_finish(store, &run.tenant_id, &settings, opts, &plan, tracker).await
}
