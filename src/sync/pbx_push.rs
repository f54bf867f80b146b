//! The `pbx` phase: makes a PortSIP PBX match the gateway's record, through its REST API.
//! Synced users become PBX users (created with random passwords kept sealed in the store,
//! then bound to their Microsoft 365 account), changed ones get only the fields the sync
//! owns (never forward rules, voicemail or anything else an administrator set), users the
//! sync disabled are disabled, and users deleted after the grace period are destroyed (only
//! those the gateway created). Company contacts follow their shared mailboxes the same way.
//!
//! What to send is planned first ([`plan_users`], [`plan_contacts`]: pure), then sent a few
//! at a time. A link is written once the PBX has answered a creation (and its binding), and
//! a digest of the fields last written lets a run with no change send nothing. A 4xx answer fails that one
//! object with PortSIP's own words; a creation whose outcome is unknown (a timeout) fails
//! it too and makes the next run list the PBX before creating anything.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use tokio::task::JoinSet;

use super::pbx_read::{PbxListing, relist_next_run};
use super::{SyncContext, SyncError};
use crate::ids::{ObjectId, TenantId};
use crate::keyring::Keyring;
use crate::pbx::wire::{ContactFields as PbxContact, NewUser, PbxUserRecord, UserUpdate};
use crate::pbx::{PbxClient, PbxError, credentials};
use crate::store::Store;
use crate::store::{
    EntityCounts, ItemError, ItemOutcome, PbxLink, PbxLinkKind, PbxUserSource, StoredContact,
};

/// PortSIP role of synced users.
pub const SYNCED_ROLE: &str = "StandardUser";
/// Objects sent to the PBX at once (the client bounds requests in flight on top).
const IN_FLIGHT: usize = 16;

/// What the PBX phases use of a run: the gateway's record and whose it is.
#[derive(Clone, Debug)]
pub struct TenantRecord {
    pub store: Store,
    pub tenant_id: TenantId,
}

impl From<&SyncContext> for TenantRecord {
    fn from(ctx: &SyncContext) -> Self {
        TenantRecord {
            store: ctx.store.clone(),
            tenant_id: ctx.tenant_id.clone(),
        }
    }
}

/// The PBX a tenant's sync writes to, and where created users' passwords are sealed.
#[derive(Clone, Debug)]
pub struct PbxTarget {
    pub client: PbxClient,
    pub keyring: Keyring,
}

/// What the `pbx` phase did (or, in a dry run, would do).
#[derive(Debug, Clone, Default)]
pub struct PbxReport {
    pub users: EntityCounts,
    pub contacts: EntityCounts,
    /// Requests sent to the PBX's REST API by this phase.
    pub requests: u64,
    pub errors: Vec<ItemError>,
    /// Dry runs: what would be sent, one line each.
    pub preview: Vec<String>,
}

/// The PBX fields the sync owns for one user, as the gateway's record has them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserFields {
    pub name: String,
    pub extension_number: String,
    pub display_name: String,
    pub email: String,
    pub enabled: bool,
    pub department: String,
    pub mobile_phone: String,
    pub work_phone: String,
}

impl UserFields {
    fn digest(&self) -> String {
        digest(self)
    }

    /// Whether the PBX's copy differs in a field the sync owns.
    fn differs_from(&self, r: &PbxUserRecord) -> bool {
        let same = |ours: &str, theirs: &Option<String>| ours == theirs.as_deref().unwrap_or("");
        !(same(&self.display_name, &r.display_name)
            && same(&self.email, &r.email)
            && same(&self.department, &r.department)
            && same(&self.mobile_phone, &r.mobile_phone)
            && same(&self.work_phone, &r.work_phone)
            && r.enabled.unwrap_or(true) == self.enabled)
    }

    fn update(&self) -> UserUpdate {
        UserUpdate {
            display_name: Some(self.display_name.clone()),
            email: Some(self.email.clone()),
            enabled: Some(self.enabled),
            department: Some(self.department.clone()),
            mobile_phone: Some(self.mobile_phone.clone()),
            work_phone: Some(self.work_phone.clone()),
        }
    }
}

/// One synced user as the PBX should have it.
#[derive(Debug, Clone)]
pub struct WantedUser {
    pub local_id: String,
    pub oid: ObjectId,
    pub fields: UserFields,
}

/// One company contact as the PBX should have it (`local_id` = `mailbox/source_id`).
#[derive(Debug, Clone)]
pub struct WantedContact {
    pub local_id: String,
    pub fields: PbxContact,
}

/// One thing to send.
#[derive(Debug, Clone)]
pub enum Op {
    CreateUser(WantedUser),
    UpdateUser {
        want: WantedUser,
        link: PbxLink,
    },
    /// Bind an existing PBX user (the gateway's, or one it adopted) to its oid.
    Bind {
        link: PbxLink,
        oid: ObjectId,
    },
    DestroyUser(PbxLink),
    CreateContact(WantedContact),
    UpdateContact {
        want: WantedContact,
        link: PbxLink,
    },
    DestroyContact(PbxLink),
    /// The PBX object is gone and the gateway did not create it: forget the link only.
    Forget(PbxLink),
}

/// Users to send, from the record, the links and (when listed) the PBX's users.
pub fn plan_users(
    wanted: &[WantedUser],
    adopted: &[(String, ObjectId)],
    links: &HashMap<String, PbxLink>,
    listing: Option<&PbxListing>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    for want in wanted {
        let Some(link) = links.get(&want.local_id) else {
            ops.push(Op::CreateUser(want.clone()));
            continue;
        };
        let changed = match listing.and_then(|l| l.users.get(&link.remote_id)) {
            Some(remote) => want.fields.differs_from(remote),
            None => link.pushed_hash != want.fields.digest(),
        };
        if changed {
            let (want, link) = (want.clone(), link.clone());
            ops.push(Op::UpdateUser { want, link });
        } else if !link.bound {
            let (link, oid) = (link.clone(), want.oid.clone());
            ops.push(Op::Bind { link, oid });
        }
    }
    for (local_id, oid) in adopted {
        if let Some(link) = links.get(local_id).filter(|l| !l.bound) {
            let (link, oid) = (link.clone(), oid.clone());
            ops.push(Op::Bind { link, oid });
        }
    }
    let kept: HashSet<&str> = (wanted.iter().map(|w| w.local_id.as_str()))
        .chain(adopted.iter().map(|(id, _)| id.as_str()))
        .collect();
    for link in links.values().filter(|l| l.created) {
        if !kept.contains(link.local_id.as_str()) {
            ops.push(Op::DestroyUser(link.clone()));
        }
    }
    ops
}

/// Company contacts to send.
pub fn plan_contacts(
    wanted: &[WantedContact],
    links: &HashMap<String, PbxLink>,
    listing: Option<&PbxListing>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    for want in wanted {
        let Some(link) = links.get(&want.local_id) else {
            ops.push(Op::CreateContact(want.clone()));
            continue;
        };
        let changed = match listing.and_then(|l| l.contacts.get(&link.remote_id)) {
            Some(remote) => PbxContact::from(&remote.fields) != want.fields,
            None => link.pushed_hash != digest(&want.fields),
        };
        if changed {
            let (want, link) = (want.clone(), link.clone());
            ops.push(Op::UpdateContact { want, link });
        }
    }
    let kept: HashSet<&str> = wanted.iter().map(|w| w.local_id.as_str()).collect();
    for link in links.values() {
        if !kept.contains(link.local_id.as_str()) {
            let link = link.clone();
            ops.push(if link.created {
                Op::DestroyContact(link)
            } else {
                Op::Forget(link)
            });
        }
    }
    ops
}

fn digest<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_vec(value).unwrap_or_default();
    use base64::Engine as _;
    let sum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &json);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sum.as_ref())
}

/// Trimmed and cut to PortSIP's `maxLength` (characters).
fn clip(s: &str, max: usize) -> String {
    s.trim().chars().take(max).collect()
}

/// The record's synced users (and adopted ones) as the PBX should have them: all of
/// them, or those of the `focus` oids.
async fn wanted_users(
    ctx: &TenantRecord,
    focus: Option<&[ObjectId]>,
) -> Result<(Vec<WantedUser>, Vec<(String, ObjectId)>), SyncError> {
    let tenant = &ctx.tenant_id;
    let rows = match focus {
        Some(oids) => ctx.store.pbx_users_by_oids(tenant, oids).await?,
        None => ctx.store.pbx_users(tenant).await?,
    };
    let mut wanted = Vec::new();
    for row in rows.iter().filter(|r| r.source == PbxUserSource::Ms365) {
        let Some(oid) = row.ms365_oid.clone() else {
            continue;
        };
        let p = &row.profile;
        let opt = |v: &Option<String>, max| clip(v.as_deref().unwrap_or(""), max);
        let fields = UserFields {
            name: row.username.clone(),
            extension_number: row.extension_number.clone(),
            display_name: clip(&p.display_name, 1024),
            email: opt(&p.email, 128),
            enabled: row.enabled,
            department: opt(&p.department, 128),
            mobile_phone: opt(&p.mobile_phone, 32),
            work_phone: opt(&p.work_phone, 32),
        };
        let local_id = row.id.clone();
        wanted.push(WantedUser {
            local_id,
            oid,
            fields,
        });
    }
    let directory = match focus {
        Some(oids) => ctx.store.directory_users_by_oids(tenant, oids).await?,
        None => ctx.store.directory_users(tenant).await?,
    };
    let adopted = (directory.into_iter())
        .filter(|d| d.source == super::plan::ADOPTED && d.enabled)
        .map(|d| (d.pbx_user_id, d.oid))
        .collect();
    Ok((wanted, adopted))
}

/// The record's company contacts as the PBX should have them.
async fn wanted_contacts(ctx: &TenantRecord) -> Result<Vec<WantedContact>, SyncError> {
    let stored = ctx
        .store
        .company_contacts(&ctx.tenant_id, None, usize::MAX)
        .await?;
    Ok(stored.into_iter().map(wanted_contact).collect())
}

fn wanted_contact(c: StoredContact) -> WantedContact {
    let f = &c.fields;
    let long = |s: &str| clip(s, 128);
    let name = [f.name.as_str(), f.email.as_str(), f.company.as_str()]
        .into_iter()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or("(no name)");
    WantedContact {
        local_id: format!("{}/{}", c.owner, c.source_id),
        fields: PbxContact {
            name: clip(name, 64),
            email: long(&f.email),
            company: long(&f.company),
            title: long(&f.title),
            business: long(&f.business),
            business2: long(&f.business2),
            mobile_phone: long(&f.mobile_phone),
            mobile_phone2: long(&f.mobile_phone2),
            home_phone: long(&f.home_phone),
            home_phone2: long(&f.home_phone2),
            other: long(&f.other),
            business_fax: long(&f.business_fax),
            home_fax: long(&f.home_fax),
            address: long(&f.address),
            notes: clip(&f.notes, 1024),
        },
    }
}

/// What a run answering change notifications pushes, instead of comparing the whole
/// record: the users it changed (and no user destroyed: a run that deletes compares the
/// whole record), and company contacts only when it read a shared mailbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushFocus {
    /// Oids of the users the run's users phase changed.
    pub users: Vec<ObjectId>,
    /// A shared mailbox's contacts were read.
    pub contacts: bool,
}

/// Plans and sends the tenant's users and company contacts (a dry run only plans). With a
/// `focus` and no fresh `listing`, only what the focus names is compared.
pub async fn push_to_pbx(
    ctx: &TenantRecord,
    target: &PbxTarget,
    listing: Option<&PbxListing>,
    focus: Option<&PushFocus>,
    dry_run: bool,
) -> Result<PbxReport, SyncError> {
    let tenant = &ctx.tenant_id;
    let focus = focus.filter(|_| listing.is_none());
    let mut ops = user_ops(ctx, listing, focus.map(|f| f.users.as_slice())).await?;
    if focus.is_none_or(|f| f.contacts) {
        let contacts = wanted_contacts(ctx).await?;
        let contact_links = by_local(ctx.store.pbx_links(tenant, PbxLinkKind::Contact).await?);
        ops.extend(plan_contacts(&contacts, &contact_links, listing));
    }
    let mut report = PbxReport::default();
    if dry_run {
        report.preview = ops.iter().map(describe).collect();
        return Ok(report);
    }
    let before = target.client.stats().requests;
    let result = send_all(ctx, target, ops, &mut report).await;
    report.requests = target.client.stats().requests.saturating_sub(before);
    let failed = report.users.failed + report.contacts.failed > 0;
    if focus.is_some() && (result.is_err() || failed) {
        // Whatever failed lies outside the next run's focus: that run compares it all.
        relist_next_run(ctx).await?;
    }
    result?;
    tracing::info!(
        tenant = %tenant,
        focused = focus.is_some(),
        users = ?report.users,
        contacts = ?report.contacts,
        requests = report.requests,
        "PBX updated"
    );
    Ok(report)
}

fn by_local(links: Vec<PbxLink>) -> HashMap<String, PbxLink> {
    links.into_iter().map(|l| (l.local_id.clone(), l)).collect()
}

/// What to send for the users: of the whole record, or of the `focus` oids (whose links
/// alone are read, so nothing outside the focus is destroyed).
async fn user_ops(
    ctx: &TenantRecord,
    listing: Option<&PbxListing>,
    focus: Option<&[ObjectId]>,
) -> Result<Vec<Op>, SyncError> {
    let tenant = &ctx.tenant_id;
    let (wanted, adopted) = wanted_users(ctx, focus).await?;
    let links = match focus {
        Some(_) => {
            let local_ids: Vec<String> = (wanted.iter().map(|w| w.local_id.clone()))
                .chain(adopted.iter().map(|(id, _)| id.clone()))
                .collect();
            (ctx.store)
                .pbx_links_for(tenant, PbxLinkKind::User, &local_ids)
                .await?
        }
        None => ctx.store.pbx_links(tenant, PbxLinkKind::User).await?,
    };
    Ok(plan_users(&wanted, &adopted, &by_local(links), listing))
}

/// Sends the operations, [`IN_FLIGHT`] objects at a time. A sign-in failure or a PBX that
/// cannot be reached stops the phase; anything else fails one object.
async fn send_all(
    ctx: &TenantRecord,
    target: &PbxTarget,
    ops: Vec<Op>,
    report: &mut PbxReport,
) -> Result<(), SyncError> {
    let mut queue = ops.into_iter();
    let mut running: JoinSet<(Op, Result<Done, PbxError>)> = JoinSet::new();
    let mut relist = false;
    let mut fatal = None;
    loop {
        while fatal.is_none() && running.len() < IN_FLIGHT {
            let Some(op) = queue.next() else { break };
            let (ctx, target) = (ctx.clone(), target.clone());
            running.spawn(async move {
                let result = send(&ctx, &target, &op).await;
                (op, result)
            });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (op, result) =
            joined.map_err(|e| SyncError::InvalidOptions(format!("a PBX task failed: {e}")))?;
        match result {
            Ok(done) => tally(report, done),
            Err(e) if e.stops_phase() => fatal = fatal.or(Some(e)),
            Err(e) => {
                relist |=
                    matches!(op, Op::CreateUser(_) | Op::CreateContact(_)) && e.outcome_unknown();
                report.errors.push(failed_item(&op, &e));
                match op {
                    Op::CreateContact(_) | Op::UpdateContact { .. } | Op::DestroyContact(_) => {
                        report.contacts.failed += 1
                    }
                    _ => report.users.failed += 1,
                }
            }
        }
    }
    if relist {
        relist_next_run(ctx).await?;
    }
    match fatal {
        Some(e) => Err(SyncError::Pbx(e)),
        None => Ok(()),
    }
}

/// What one operation changed, for the counts.
#[derive(Debug, Clone, Copy)]
enum Done {
    UserCreated,
    UserUpdated { disabled: bool },
    UserBound,
    UserDestroyed,
    ContactCreated,
    ContactUpdated,
    ContactDestroyed,
    Nothing,
}

fn tally(report: &mut PbxReport, done: Done) {
    match done {
        Done::UserCreated => report.users.created += 1,
        Done::UserUpdated { disabled: true } => report.users.disabled += 1,
        Done::UserUpdated { disabled: false } => report.users.updated += 1,
        Done::UserBound => report.users.adopted += 1,
        Done::UserDestroyed => report.users.deleted += 1,
        Done::ContactCreated => report.contacts.created += 1,
        Done::ContactUpdated => report.contacts.updated += 1,
        Done::ContactDestroyed => report.contacts.deleted += 1,
        Done::Nothing => {}
    }
}

fn failed_item(op: &Op, e: &PbxError) -> ItemError {
    let (entity, key, name) = match op {
        Op::CreateUser(w) | Op::UpdateUser { want: w, .. } => {
            ("pbx_user", w.oid.to_string(), w.fields.name.clone())
        }
        Op::Bind { link, oid } => ("pbx_user", oid.to_string(), link.remote_id.clone()),
        Op::DestroyUser(l) | Op::Forget(l) => ("pbx_user", l.local_id.clone(), l.remote_id.clone()),
        Op::CreateContact(w) | Op::UpdateContact { want: w, .. } => {
            ("pbx_contact", w.local_id.clone(), w.fields.name.clone())
        }
        Op::DestroyContact(l) => ("pbx_contact", l.local_id.clone(), l.remote_id.clone()),
    };
    ItemError {
        entity: entity.into(),
        key,
        name,
        outcome: ItemOutcome::Failed,
        reason: format!("the PBX refused it: {e}"),
    }
}

/// One line of a dry run's preview: the request that would be sent.
fn describe(op: &Op) -> String {
    match op {
        Op::CreateUser(w) => format!(
            "POST /users name={} extension_number={} display_name={:?}{}, then POST /users/{{id}}/ms365_binding",
            w.fields.name,
            w.fields.extension_number,
            w.fields.display_name,
            if w.fields.enabled {
                ""
            } else {
                " enabled=false"
            }
        ),
        Op::UpdateUser { want, link } => format!(
            "POST /users/{} (name {}: display_name, email, enabled={}, department, phones)",
            link.remote_id, want.fields.name, want.fields.enabled
        ),
        Op::Bind { link, oid } => format!("POST /users/{}/ms365_binding id={oid}", link.remote_id),
        Op::DestroyUser(l) => format!("POST /users/{}/destroy", l.remote_id),
        Op::CreateContact(w) => format!("POST /contacts name={:?}", w.fields.name),
        Op::UpdateContact { want, link } => {
            format!(
                "POST /contacts/{} name={:?}",
                link.remote_id, want.fields.name
            )
        }
        Op::DestroyContact(l) => format!("POST /contacts/{}/destroy", l.remote_id),
        Op::Forget(l) => format!("(forget contact link {})", l.local_id),
    }
}

/// Sends one operation and records its link.
async fn send(ctx: &TenantRecord, target: &PbxTarget, op: &Op) -> Result<Done, PbxError> {
    let tenant = &ctx.tenant_id;
    let store = &ctx.store;
    let client = &target.client;
    match op {
        Op::CreateUser(want) => create_user(ctx, target, want).await,
        Op::UpdateUser { want, link } => {
            match client
                .update_user(&link.remote_id, &want.fields.update())
                .await
            {
                Err(PbxError::NotFound { .. }) => {
                    // Deleted on the PBX since the last listing: it comes back.
                    store
                        .delete_pbx_link(tenant, PbxLinkKind::User, &link.local_id)
                        .await?;
                    return create_user(ctx, target, want).await;
                }
                other => other?,
            }
            if !link.bound {
                client
                    .bind_ms365(&link.remote_id, want.oid.as_str())
                    .await?;
            }
            let updated = PbxLink {
                bound: true,
                pushed_hash: want.fields.digest(),
                ..link.clone()
            };
            store.save_pbx_link(tenant, &updated).await?;
            Ok(Done::UserUpdated {
                disabled: !want.fields.enabled,
            })
        }
        Op::Bind { link, oid } => {
            client.bind_ms365(&link.remote_id, oid.as_str()).await?;
            let bound = PbxLink {
                bound: true,
                ..link.clone()
            };
            store.save_pbx_link(tenant, &bound).await?;
            Ok(if link.created {
                Done::Nothing
            } else {
                Done::UserBound
            })
        }
        Op::DestroyUser(link) => {
            ignore_missing(client.destroy_user(&link.remote_id).await)?;
            store
                .delete_pbx_link(tenant, PbxLinkKind::User, &link.local_id)
                .await?;
            let name = credentials::user_password_secret(tenant, &link.local_id);
            target.keyring.delete(&name).await.map_err(store_error)?;
            Ok(Done::UserDestroyed)
        }
        Op::CreateContact(want) => {
            let remote_id = client.create_contact(&want.fields).await?;
            save_contact_link(ctx, want, &remote_id, true).await?;
            Ok(Done::ContactCreated)
        }
        Op::UpdateContact { want, link } => {
            match client.update_contact(&link.remote_id, &want.fields).await {
                Err(PbxError::NotFound { .. }) => {
                    let remote_id = client.create_contact(&want.fields).await?;
                    save_contact_link(ctx, want, &remote_id, true).await?;
                    return Ok(Done::ContactCreated);
                }
                other => other?,
            }
            save_contact_link(ctx, want, &link.remote_id, link.created).await?;
            Ok(Done::ContactUpdated)
        }
        Op::DestroyContact(link) => {
            ignore_missing(client.destroy_contact(&link.remote_id).await)?;
            store
                .delete_pbx_link(tenant, PbxLinkKind::Contact, &link.local_id)
                .await?;
            Ok(Done::ContactDestroyed)
        }
        Op::Forget(link) => {
            store
                .delete_pbx_link(tenant, link.kind, &link.local_id)
                .await?;
            Ok(Done::Nothing)
        }
    }
}

/// A new PBX user with fresh random secrets (the password is sealed first, so a run that
/// dies after the PBX answered still knows it), its link, then its binding.
async fn create_user(
    ctx: &TenantRecord,
    target: &PbxTarget,
    want: &WantedUser,
) -> Result<Done, PbxError> {
    let tenant = &ctx.tenant_id;
    let name = credentials::user_password_secret(tenant, &want.local_id);
    let generated = credentials::generate_password();
    let sealed = target.keyring.put_once(&name, generated.as_bytes()).await;
    let password = String::from_utf8(sealed.map_err(store_error)?)
        .map_err(|_| PbxError::Protocol("a sealed PBX password is not text".into()))?;
    let f = &want.fields;
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let user = NewUser {
        name: f.name.clone(),
        display_name: f.display_name.clone(),
        password,
        email: f.email.clone(),
        role: SYNCED_ROLE.into(),
        extension_number: f.extension_number.clone(),
        extension_password: credentials::generate_extension_password(),
        voicemail_pin: credentials::generate_voicemail_pin(),
        enabled: Some(f.enabled),
        mobile_phone: some(&f.mobile_phone),
        work_phone: some(&f.work_phone),
        department: some(&f.department),
    };
    let remote_id = match target.client.create_user(&user).await {
        Ok(id) => id,
        // Taken: possibly this very user, created by a request of an earlier (killed) run
        // that reached the PBX after this run's listing. Found by username and extension,
        // it is ours; anything else is a real clash and fails the user.
        Err(e @ PbxError::Rejected { status: 409, .. }) => {
            match find_user(&target.client, &f.name, &f.extension_number).await? {
                Some(id) => id,
                None => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    // One link write, after the binding: a run that dies in between leaves a PBX user
    // without a link, which the next run's listing finds by username and extension and
    // links back unbound, so the binding is sent again.
    let bound = target
        .client
        .bind_ms365(&remote_id, want.oid.as_str())
        .await;
    let link = PbxLink {
        kind: PbxLinkKind::User,
        local_id: want.local_id.clone(),
        remote_id,
        created: true,
        bound: bound.is_ok(),
        pushed_hash: f.digest(),
    };
    ctx.store.save_pbx_link(tenant, &link).await?;
    bound?;
    Ok(Done::UserCreated)
}

/// The PBX user with exactly this username (any case) and extension, if there is one.
async fn find_user(
    client: &PbxClient,
    name: &str,
    extension: &str,
) -> Result<Option<String>, PbxError> {
    let users = client.list_users().await?;
    Ok(users
        .into_iter()
        .find(|u| {
            u.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
                && u.extension_number.as_deref() == Some(extension)
        })
        .map(|u| u.id))
}

async fn save_contact_link(
    ctx: &TenantRecord,
    want: &WantedContact,
    remote_id: &str,
    created: bool,
) -> Result<(), PbxError> {
    let link = PbxLink {
        kind: PbxLinkKind::Contact,
        local_id: want.local_id.clone(),
        remote_id: remote_id.to_string(),
        created,
        bound: false,
        pushed_hash: digest(&want.fields),
    };
    ctx.store.save_pbx_link(&ctx.tenant_id, &link).await?;
    Ok(())
}

/// Destroying what is already gone is done.
fn ignore_missing(result: Result<(), PbxError>) -> Result<(), PbxError> {
    match result {
        Err(PbxError::NotFound { .. }) => Ok(()),
        other => other,
    }
}

fn store_error(e: crate::keyring::KeyringError) -> PbxError {
    PbxError::Local(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pbx::wire::PbxUserRecord;

    fn want(id: &str, name: &str, enabled: bool) -> WantedUser {
        WantedUser {
            local_id: id.into(),
            oid: ObjectId::new(format!("oid-{id}")),
            fields: UserFields {
                name: name.into(),
                extension_number: "1001".into(),
                display_name: name.to_uppercase(),
                email: format!("{name}@x.test"),
                enabled,
                department: String::new(),
                mobile_phone: String::new(),
                work_phone: String::new(),
            },
        }
    }

    fn link(id: &str, created: bool, bound: bool, hash: String) -> PbxLink {
        PbxLink {
            kind: PbxLinkKind::User,
            local_id: id.into(),
            remote_id: format!("r-{id}"),
            created,
            bound,
            pushed_hash: hash,
        }
    }

    fn kinds(ops: &[Op]) -> Vec<String> {
        let mut out: Vec<String> = ops
            .iter()
            .map(|op| match op {
                Op::CreateUser(w) => format!("create {}", w.local_id),
                Op::UpdateUser { want, .. } => format!("update {}", want.local_id),
                Op::Bind { link, .. } => format!("bind {}", link.local_id),
                Op::DestroyUser(l) => format!("destroy {}", l.local_id),
                Op::CreateContact(w) => format!("create contact {}", w.local_id),
                Op::UpdateContact { want, .. } => format!("update contact {}", want.local_id),
                Op::DestroyContact(l) => format!("destroy contact {}", l.local_id),
                Op::Forget(l) => format!("forget {}", l.local_id),
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn users_plan_from_links_and_digests() {
        let (a, b, c) = (
            want("a", "ann", true),
            want("b", "bob", false),
            want("c", "cy", true),
        );
        let links: HashMap<String, PbxLink> = [
            link("b", true, true, "stale".into()),
            link("c", true, false, c.fields.digest()),
            link("gone", true, true, String::new()),
            link("local", false, false, String::new()),
            link("kept-local", false, true, String::new()),
        ]
        .into_iter()
        .map(|l| (l.local_id.clone(), l))
        .collect();
        let adopted = vec![("local".to_string(), ObjectId::new("oid-l"))];
        let ops = plan_users(&[a, b, c], &adopted, &links, None);
        assert_eq!(
            kinds(&ops),
            [
                "bind c",
                "bind local",
                "create a",
                "destroy gone",
                "update b"
            ],
            "never destroys what the gateway did not create"
        );
    }

    #[test]
    fn with_a_listing_the_pbx_copy_decides() {
        let a = want("a", "ann", true);
        let mut links = HashMap::new();
        links.insert(
            "a".to_string(),
            link("a", true, true, "stale digest".into()),
        );
        let same = PbxUserRecord {
            id: "r-a".into(),
            display_name: Some("ANN".into()),
            email: Some("ann@x.test".into()),
            enabled: Some(true),
            ..PbxUserRecord::default()
        };
        let mut listing = PbxListing::default();
        listing.users.insert("r-a".into(), same.clone());
        let ops = plan_users(std::slice::from_ref(&a), &[], &links, Some(&listing));
        assert!(ops.is_empty(), "the PBX already has it: {:?}", kinds(&ops));
        let edited = PbxUserRecord {
            display_name: Some("Edited by hand".into()),
            ..same
        };
        listing.users.insert("r-a".into(), edited);
        let ops = plan_users(&[a], &[], &links, Some(&listing));
        assert_eq!(kinds(&ops), ["update a"], "drift is repaired");
    }

    #[test]
    fn contacts_of_others_are_never_destroyed() {
        let mine = link("m/1", true, false, String::new());
        let theirs = link("m/2", false, false, String::new());
        let links: HashMap<String, PbxLink> = [mine, theirs]
            .into_iter()
            .map(|l| (l.local_id.clone(), l))
            .collect();
        let ops = plan_contacts(&[], &links, None);
        assert_eq!(kinds(&ops), ["destroy contact m/1", "forget m/2"]);
    }

    #[test]
    fn contacts_get_a_name_and_fit_portsip_lengths() {
        let stored = StoredContact {
            kind: "company",
            owner: "mbx".into(),
            source_id: "c1".into(),
            fields: crate::store::ContactFields {
                email: "x@y.test".into(),
                notes: "n".repeat(2000),
                company: "c".repeat(300),
                ..Default::default()
            },
            updated_at: 0,
        };
        let w = wanted_contact(stored);
        assert_eq!(w.local_id, "mbx/c1");
        assert_eq!(
            w.fields.name, "x@y.test",
            "a contact without a name is named"
        );
        assert_eq!(w.fields.notes.chars().count(), 1024);
        assert_eq!(w.fields.company.chars().count(), 128);
    }
}
