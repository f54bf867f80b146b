//! Planning: every user a Graph round returns is compared with what the store knows, and
//! only the differences are kept (memory grows with the changes, not the tenant; a full
//! round also keeps the set of oids it saw, since whatever it did not see was removed).
//! The plan is deterministic (sorted by oid; a user reported twice in one round counts
//! once, last report wins) and serialisable: a run stopped by the deletion threshold keeps
//! it until approval.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use serde::{Deserialize, Serialize};

use super::scope::{UserScope, Verdict};
use crate::graph::User;
use crate::ids::ObjectId;
use crate::store::{DirectoryUser, EntityCounts, ItemError, ItemOutcome, PbxProfile, PbxUser};

/// Skip reason of a user an administrator bound to an existing PBX user.
pub const BOUND: &str = "bound by an administrator to an existing PBX user";
/// `ms365_users.source` of a user the sync bound to a PBX user it found on the PBX.
pub const ADOPTED: &str = "adopted";

/// Full listing (compared with the store) or changes since the stored deltaLink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FetchMode {
    Full,
    Delta,
}

impl FetchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FetchMode::Full => "full",
            FetchMode::Delta => "delta",
        }
    }
}

/// Why the sync disabled a PBX user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisableReason {
    /// `accountEnabled` is false in Microsoft 365.
    AccountDisabled,
    /// Deleted (soft or hard) in Microsoft 365.
    Removed,
    /// No longer in the sync scope.
    OutOfScope,
}

impl DisableReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DisableReason::AccountDisabled => "account_disabled",
            DisableReason::Removed => "removed",
            DisableReason::OutOfScope => "out_of_scope",
        }
    }
}

/// What a change counts as in the report and against the deletion threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Create,
    Update,
    Disable,
    Delete,
    /// An existing PBX user is bound to the Microsoft user instead of creating one.
    Adopt,
    /// Bookkeeping only (the reason of an already disabled user); not counted.
    Quiet,
}

/// One planned change of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// Create or update the user with these fields; `disabled` when not enabled.
    Upsert {
        oid: ObjectId,
        upn: String,
        profile: Box<PbxProfile>,
        disabled: Option<DisableReason>,
        effect: Effect,
    },
    Disable {
        oid: ObjectId,
        reason: DisableReason,
        effect: Effect,
    },
    Delete {
        oid: ObjectId,
    },
}

impl Change {
    pub fn oid(&self) -> &ObjectId {
        match self {
            Change::Upsert { oid, .. } | Change::Disable { oid, .. } | Change::Delete { oid } => {
                oid
            }
        }
    }

    pub fn effect(&self) -> Effect {
        match self {
            Change::Upsert { effect, .. } | Change::Disable { effect, .. } => *effect,
            Change::Delete { .. } => Effect::Delete,
        }
    }
}

/// A complete plan: the changes and where the next round starts once they are applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub mode: FetchMode,
    pub delta_link: String,
    pub fingerprint: String,
    /// Sorted by oid.
    pub changes: Vec<Change>,
}

impl Plan {
    /// Users this plan disables or deletes (what the threshold limits).
    pub fn disruptive(&self) -> usize {
        self.changes
            .iter()
            .filter(|c| matches!(c.effect(), Effect::Disable | Effect::Delete))
            .count()
    }

    /// The counts the plan would produce if every change succeeded.
    pub fn counts(&self) -> EntityCounts {
        let mut counts = EntityCounts::default();
        for change in &self.changes {
            count(&mut counts, change.effect());
        }
        counts
    }
}

/// Adds one change of `effect` to `counts`.
pub fn count(counts: &mut EntityCounts, effect: Effect) {
    match effect {
        Effect::Create => counts.created += 1,
        Effect::Update => counts.updated += 1,
        Effect::Disable => counts.disabled += 1,
        Effect::Delete => counts.deleted += 1,
        Effect::Adopt => counts.adopted += 1,
        Effect::Quiet => {}
    }
}

/// What the store says about one synced Microsoft user.
#[derive(Debug, Clone)]
struct KnownUser {
    upn: String,
    dir_enabled: bool,
    /// `None`: the PBX user was deleted on the PBX side (the directory entry remains).
    row: Option<KnownRow>,
}

#[derive(Debug, Clone)]
struct KnownRow {
    enabled: bool,
    reason: Option<String>,
    disabled_at: Option<i64>,
    /// Hash of the profile: enough to tell "changed" without keeping every field.
    profile: u64,
}

/// The store's synced users, as the planner needs them.
#[derive(Debug, Default)]
pub struct Known {
    users: HashMap<ObjectId, KnownUser>,
    /// Oids an administrator bound to an existing PBX user: never synced over.
    bound: HashSet<ObjectId>,
    /// Oids the sync bound to an existing PBX user it found (adopted): left alone quietly.
    adopted: HashSet<ObjectId>,
}

impl Known {
    pub fn new(pbx: &[PbxUser], directory: &[DirectoryUser]) -> Known {
        let mut known = Known::default();
        for d in directory {
            let oid = d.oid.clone();
            if d.source == "sync" {
                let user = KnownUser {
                    upn: d.upn.clone(),
                    dir_enabled: d.enabled,
                    row: None,
                };
                known.users.insert(oid, user);
            } else {
                if d.source == ADOPTED {
                    known.adopted.insert(oid.clone());
                }
                known.bound.insert(oid);
            }
        }
        for p in pbx {
            let Some(oid) = p.ms365_oid.clone() else {
                continue;
            };
            if known.bound.contains(&oid) {
                continue;
            }
            let user = known.users.entry(oid).or_insert_with(|| KnownUser {
                upn: String::new(),
                dir_enabled: false,
                row: None,
            });
            user.row = Some(KnownRow {
                enabled: p.enabled,
                reason: p.sync_disabled.clone(),
                disabled_at: p.sync_disabled_at,
                profile: profile_hash(&p.profile),
            });
        }
        known
    }

    /// Enabled PBX users from Microsoft 365 (the base of a percentage threshold).
    pub fn enabled_synced(&self) -> usize {
        self.users
            .values()
            .filter(|u| u.row.as_ref().is_some_and(|r| r.enabled))
            .count()
    }

    /// Users the sync disabled as removed or out of scope at or before `cutoff`.
    pub fn expired(&self, cutoff: i64) -> Vec<ObjectId> {
        let retired = [DisableReason::Removed, DisableReason::OutOfScope].map(|r| r.as_str());
        self.users
            .iter()
            .filter_map(|(oid, u)| {
                let row = u.row.as_ref()?;
                let expired = !row.enabled
                    && row.reason.as_deref().is_some_and(|r| retired.contains(&r))
                    && row.disabled_at.is_some_and(|at| at <= cutoff);
                expired.then(|| oid.clone())
            })
            .collect()
    }
}

fn profile_hash(p: &PbxProfile) -> u64 {
    // The default hasher's keys are fixed: hashes compare within the process.
    let mut h = DefaultHasher::new();
    p.hash(&mut h);
    h.finish()
}

/// The PBX profile of a Graph user, clipped to PortSIP's field lengths. Accounts with only
/// a display name (rooms, service accounts) get first and last name from it; a user
/// without `mail` (no Exchange licence) gets the UPN as e-mail, which is where Microsoft
/// routes their sign-in.
pub fn profile_of(u: &User) -> PbxProfile {
    let (mut first_name, mut last_name) = (clean(&u.given_name, 128), clean(&u.surname, 128));
    let joined = [first_name.as_deref(), last_name.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let display_name = clean(&u.display_name, 1024)
        .or_else(|| (!joined.is_empty()).then_some(joined))
        .or_else(|| clean(&u.user_principal_name, 1024))
        .unwrap_or_default();
    if first_name.is_none() && last_name.is_none() {
        (first_name, last_name) = names_from_display(&display_name);
    }
    let work_phone = u.business_phones.iter().find(|p| !p.trim().is_empty());
    PbxProfile {
        display_name,
        first_name,
        last_name,
        email: clean(&u.mail, 128).or_else(|| clean(&u.user_principal_name, 128)),
        mobile_phone: clean(&u.mobile_phone, 32),
        work_phone: clean(&work_phone.cloned(), 32),
        title: clean(&u.job_title, 128),
        department: clean(&u.department, 128),
        office: clean(&u.office_location, 128),
    }
}

/// "Conference Room 4B2" → ("Conference Room", "4B2"); one word is a first name only.
fn names_from_display(display: &str) -> (Option<String>, Option<String>) {
    let display = display.trim();
    let clip = |s: &str| Some(s.chars().take(128).collect::<String>());
    match display.rsplit_once(char::is_whitespace) {
        Some((first, last)) => (clip(first.trim_end()), clip(last)),
        None if display.is_empty() => (None, None),
        None => (clip(display), None),
    }
}

/// Trimmed, empty as `None`, at most `max` characters.
fn clean(s: &Option<String>, max: usize) -> Option<String> {
    let s = s.as_deref()?.trim();
    (!s.is_empty()).then(|| s.chars().take(max).collect())
}

enum Outcome {
    Change(Change),
    Skip { name: String, reason: &'static str },
}

/// Compares the users of one Graph round with the store.
pub struct Planner<'a> {
    known: &'a Known,
    scope: &'a UserScope,
    /// Oids seen, in a full round only.
    seen: Option<HashSet<ObjectId>>,
    outcomes: HashMap<ObjectId, Outcome>,
    /// Users read so far (progress).
    pub observed: u64,
}

impl<'a> Planner<'a> {
    pub fn new(known: &'a Known, scope: &'a UserScope, full: bool) -> Self {
        Planner {
            known,
            scope,
            seen: full.then(HashSet::new),
            outcomes: HashMap::new(),
            observed: 0,
        }
    }

    pub fn observe(&mut self, u: &User) {
        self.observed += 1;
        let oid = u.id.clone();
        if oid.is_empty() {
            return;
        }
        let outcome = if u.removed.is_some() {
            self.retire(&oid, DisableReason::Removed)
        } else {
            if let Some(seen) = &mut self.seen {
                seen.insert(oid.clone());
            }
            self.judge(&oid, u)
        };
        match outcome {
            Some(o) => self.outcomes.insert(oid, o),
            None => self.outcomes.remove(&oid),
        };
    }

    fn judge(&self, oid: &ObjectId, u: &User) -> Option<Outcome> {
        let verdict = self.scope.judge(u);
        let skip = |reason| {
            let name = u.user_principal_name.clone().or(u.display_name.clone());
            Some(Outcome::Skip {
                name: name.unwrap_or_default(),
                reason,
            })
        };
        match verdict {
            Verdict::OutOfScope => self.retire(oid, DisableReason::OutOfScope),
            _ if self.known.adopted.contains(oid) => None,
            _ if self.known.bound.contains(oid) => skip(BOUND),
            Verdict::Sync => self.upsert(oid, u),
        }
    }

    fn upsert(&self, oid: &ObjectId, u: &User) -> Option<Outcome> {
        let upn = u.user_principal_name.clone().unwrap_or_default();
        let profile = profile_of(u);
        let disabled = (u.account_enabled == Some(false)).then_some(DisableReason::AccountDisabled);
        let effect = match self.known.users.get(oid) {
            Some(KnownUser {
                row: Some(row),
                upn: known_upn,
                dir_enabled,
            }) => {
                let same = row.profile == profile_hash(&profile)
                    && row.enabled == disabled.is_none()
                    && row.reason.as_deref() == disabled.map(DisableReason::as_str)
                    && *known_upn == upn
                    && *dir_enabled == row.enabled;
                match (same, row.enabled && disabled.is_some()) {
                    (true, _) => return None,
                    (false, true) => Effect::Disable,
                    (false, false) => Effect::Update,
                }
            }
            _ => Effect::Create,
        };
        let change = Change::Upsert {
            oid: oid.clone(),
            upn,
            profile: Box::new(profile),
            disabled,
            effect,
        };
        Some(Outcome::Change(change))
    }

    /// Disables what the store has of `oid` (a user that left Microsoft 365 or the scope).
    fn retire(&self, oid: &ObjectId, reason: DisableReason) -> Option<Outcome> {
        let user = self.known.users.get(oid)?;
        let effect = match &user.row {
            Some(row) if row.enabled => Effect::Disable,
            Some(row) if row.reason.as_deref() != Some(reason.as_str()) || user.dir_enabled => {
                Effect::Quiet
            }
            None if user.dir_enabled => Effect::Quiet,
            _ => return None,
        };
        let change = Change::Disable {
            oid: oid.clone(),
            reason,
            effect,
        };
        Some(Outcome::Change(change))
    }

    /// The changes sorted by oid, and the skipped users. In a full round every stored user
    /// the round did not return is removed.
    pub fn finish(mut self) -> (Vec<Change>, Vec<ItemError>) {
        if let Some(seen) = self.seen.take() {
            let unseen: Vec<ObjectId> = (self.known.users.keys())
                .filter(|oid| !seen.contains(*oid) && !self.outcomes.contains_key(*oid))
                .cloned()
                .collect();
            for oid in unseen {
                if let Some(o) = self.retire(&oid, DisableReason::Removed) {
                    self.outcomes.insert(oid, o);
                }
            }
        }
        let mut entries: Vec<(ObjectId, Outcome)> = self.outcomes.into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let (mut changes, mut skipped) = (Vec::new(), Vec::new());
        for (oid, outcome) in entries {
            match outcome {
                Outcome::Change(c) => changes.push(c),
                Outcome::Skip { name, reason } => skipped.push(ItemError {
                    entity: "user".into(),
                    key: oid.into(),
                    name,
                    outcome: ItemOutcome::Skipped,
                    reason: reason.into(),
                }),
            }
        }
        (changes, skipped)
    }
}

/// Adds deletions of `expired` users (grace period over) unless the plan brings them back.
pub fn with_deletions(changes: Vec<Change>, expired: Vec<ObjectId>) -> Vec<Change> {
    let mut by_oid: HashMap<ObjectId, Change> =
        changes.into_iter().map(|c| (c.oid().clone(), c)).collect();
    for oid in expired {
        if !matches!(by_oid.get(&oid), Some(Change::Upsert { .. })) {
            by_oid.insert(oid.clone(), Change::Delete { oid });
        }
    }
    let mut changes: Vec<Change> = by_oid.into_values().collect();
    changes.sort_by(|a, b| a.oid().cmp(b.oid()));
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TenantId;
    use crate::settings::UserSync;
    use crate::store::PbxUserSource;

    fn graph_user(id: &str, given: &str) -> User {
        User {
            id: id.into(),
            user_principal_name: Some(format!("{given}@x.com")),
            display_name: Some(given.into()),
            given_name: Some(given.into()),
            account_enabled: Some(true),
            ..User::default()
        }
    }

    fn stored(oid: &str, u: &User) -> (PbxUser, DirectoryUser) {
        let profile = profile_of(u);
        let pbx = PbxUser {
            id: format!("p-{oid}"),
            tenant_id: TenantId::from_static("t"),
            extension_number: "1000".into(),
            username: oid.into(),
            profile: profile.clone(),
            enabled: true,
            source: PbxUserSource::Ms365,
            ms365_oid: Some(oid.into()),
            sync_disabled: None,
            sync_disabled_at: None,
            created_at: 0,
            updated_at: 0,
        };
        let dir = DirectoryUser {
            tenant_id: TenantId::from_static("t"),
            oid: oid.into(),
            upn: u.user_principal_name.clone().unwrap(),
            pbx_user_id: pbx.id.clone(),
            extension: Some("1000".into()),
            display_name: profile.display_name,
            email: None,
            role: crate::store::Role::User,
            enabled: true,
            source: "sync".into(),
        };
        (pbx, dir)
    }

    #[test]
    fn unchanged_users_produce_nothing_and_changes_are_classified() {
        let (a, b) = (graph_user("a", "ann"), graph_user("b", "bob"));
        let ((pa, da), (pb, db)) = (stored("a", &a), stored("b", &b));
        let known = Known::new(&[pa, pb], &[da, db]);
        let settings = UserSync {
            enabled: true,
            ..UserSync::default()
        };
        let scope = UserScope::new(&settings, &[], None);
        let mut planner = Planner::new(&known, &scope, true);
        planner.observe(&a);
        let mut b2 = b.clone();
        b2.account_enabled = Some(false);
        planner.observe(&b);
        planner.observe(&b2);
        planner.observe(&graph_user("c", "cy"));
        let (changes, skipped) = planner.finish();
        let effects: Vec<(&str, Effect)> = (changes.iter())
            .map(|c| (c.oid().as_str(), c.effect()))
            .collect();
        assert_eq!(effects, [("b", Effect::Disable), ("c", Effect::Create)]);
        assert!(skipped.is_empty());
    }

    #[test]
    fn a_full_round_removes_what_it_did_not_see() {
        let a = graph_user("a", "ann");
        let (pa, da) = stored("a", &a);
        let known = Known::new(&[pa], &[da]);
        let scope = UserScope::new(&UserSync::default(), &[], None);
        let (changes, _) = Planner::new(&known, &scope, true).finish();
        assert_eq!(changes.len(), 1);
        assert!(matches!(
            changes[0],
            Change::Disable {
                reason: DisableReason::Removed,
                effect: Effect::Disable,
                ..
            }
        ));
        let (delta, _) = Planner::new(&known, &scope, false).finish();
        assert!(
            delta.is_empty(),
            "a delta round removes only what it reports"
        );
    }

    #[test]
    fn deletions_yield_to_a_comeback() {
        let up = Change::Upsert {
            oid: "a".into(),
            upn: "a@x".into(),
            profile: Box::default(),
            disabled: None,
            effect: Effect::Update,
        };
        let out = with_deletions(vec![up.clone()], vec!["a".into(), "b".into()]);
        assert_eq!(out, vec![up, Change::Delete { oid: "b".into() }]);
    }

    #[test]
    fn display_name_only_accounts_get_names_and_the_upn_as_email() {
        let room = User {
            id: "r".into(),
            user_principal_name: Some("conferenceroom4b2@x.com".into()),
            display_name: Some("Conference Room 4B2".into()),
            ..User::default()
        };
        let p = profile_of(&room);
        assert_eq!(p.display_name, "Conference Room 4B2");
        assert_eq!(p.first_name.as_deref(), Some("Conference Room"));
        assert_eq!(p.last_name.as_deref(), Some("4B2"));
        assert_eq!(p.email.as_deref(), Some("conferenceroom4b2@x.com"));
        let agent = User {
            display_name: Some("buildagent3".into()),
            ..room.clone()
        };
        let p = profile_of(&agent);
        assert_eq!(
            (p.first_name.as_deref(), p.last_name),
            (Some("buildagent3"), None)
        );
        let person = User {
            mail: Some("ann@mail.x.com".into()),
            given_name: Some("Ann".into()),
            ..room
        };
        let p = profile_of(&person);
        assert_eq!((p.first_name.as_deref(), p.last_name), (Some("Ann"), None));
        assert_eq!(p.email.as_deref(), Some("ann@mail.x.com"));
    }
}
