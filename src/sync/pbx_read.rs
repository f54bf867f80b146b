//! Reading a PortSIP PBX before the users phase, so that the sync plans against what the
//! PBX really holds. The listing (`GET /users`, `GET /contacts`, paged) is taken on a
//! tenant's first run with the connector, once a day (drift repair), when the PBX's user
//! count differs from what the gateway knows (one `GET /users?top=1`: a user deleted or
//! added on the PBX), or when an earlier run lost track of a creation; otherwise a run
//! with no change sends the PBX nothing but that one count.
//!
//! From a listing, every PBX user is put into one of three piles: linked (already known),
//! the gateway's own creation whose link a crashed run never wrote (same username *and*
//! extension as a user of the record not yet on the PBX: linked back, never created
//! twice), or a user of the PBX's own, recorded as a `local` row so its number is never
//! given away and a matching Microsoft user adopts it. Links whose PBX object is gone are
//! dropped: the push brings the gateway's own users back with the same number.

use std::collections::{HashMap, HashSet};

use super::SyncError;
use super::pbx_push::{PbxTarget, TenantRecord};
use crate::pbx::wire::{PbxContactRecord, PbxUserRecord};
use crate::store::{
    ImportedPbxUser, ItemError, ItemOutcome, PbxLink, PbxLinkKind, PbxUser, PbxUserSource,
    StoreError, now_epoch,
};

/// `sync_state.kind` whose `delta_link` holds the time of the last full PBX listing.
pub const LISTED_KIND: &str = "pbx:listed";
/// A full listing at least this often (seconds): drift made by hand on the PBX is repaired.
pub const RELIST_AFTER: i64 = 24 * 3600;

/// What the PBX holds, by PBX id.
#[derive(Debug, Default)]
pub struct PbxListing {
    pub users: HashMap<String, PbxUserRecord>,
    pub contacts: HashMap<String, PbxContactRecord>,
}

/// What reading the PBX did.
#[derive(Debug, Default)]
pub struct ReadReport {
    /// Users of the PBX's own recorded (or refreshed) as local users.
    pub imported: usize,
    /// The gateway's own users found again after an interrupted run.
    pub relinked: usize,
    /// Objects the gateway created that were deleted on the PBX by hand.
    pub missing: usize,
    pub errors: Vec<ItemError>,
}

/// Lists the PBX when a listing is due (see the module documentation); `force` lists
/// anyway (a full users round).
pub async fn read_pbx(
    ctx: &TenantRecord,
    target: &PbxTarget,
    force: bool,
) -> Result<(Option<PbxListing>, ReadReport), SyncError> {
    let tenant = &ctx.tenant_id;
    let mut report = ReadReport::default();
    if !force && !listing_due(ctx, target).await? {
        return Ok((None, report));
    }
    let links = ctx.store.pbx_links(tenant, PbxLinkKind::User).await?;
    let users = target.client.list_users().await?;
    let contacts = target.client.list_contacts().await?;
    let listing = PbxListing {
        users: users.into_iter().map(|u| (u.id.clone(), u)).collect(),
        contacts: contacts.into_iter().map(|c| (c.id.clone(), c)).collect(),
    };
    reconcile_users(ctx, &links, &listing, &mut report).await?;
    forget_missing_contacts(ctx, &listing, &mut report).await?;
    let now = now_epoch().to_string();
    ctx.store
        .save_sync_cursor(tenant, LISTED_KIND, &now, "")
        .await?;
    tracing::info!(
        tenant = %tenant,
        users = listing.users.len(),
        contacts = listing.contacts.len(),
        imported = report.imported,
        relinked = report.relinked,
        missing = report.missing,
        "PBX listed"
    );
    Ok((Some(listing), report))
}

/// Asks for a full listing next run (an outcome the gateway could not see, e.g. a creation
/// that timed out).
pub async fn relist_next_run(ctx: &TenantRecord) -> Result<(), StoreError> {
    ctx.store
        .clear_sync_cursor(&ctx.tenant_id, LISTED_KIND)
        .await
}

async fn listing_due(ctx: &TenantRecord, target: &PbxTarget) -> Result<bool, SyncError> {
    let known = (ctx.store)
        .count_pbx_links(&ctx.tenant_id, PbxLinkKind::User)
        .await?;
    if known == 0 {
        return Ok(true);
    }
    let last = ctx.store.sync_cursor(&ctx.tenant_id, LISTED_KIND).await?;
    let listed_at = last.and_then(|c| c.delta_link.parse::<i64>().ok());
    if listed_at.is_none_or(|at| now_epoch() - at >= RELIST_AFTER) {
        return Ok(true);
    }
    Ok(target.client.count_users().await? != known)
}

/// Sorts every PBX user into linked, relinked or imported; drops links to gone users.
async fn reconcile_users(
    ctx: &TenantRecord,
    links: &[PbxLink],
    listing: &PbxListing,
    report: &mut ReadReport,
) -> Result<(), SyncError> {
    let tenant = &ctx.tenant_id;
    let by_remote: HashMap<&str, &PbxLink> =
        links.iter().map(|l| (l.remote_id.as_str(), l)).collect();
    let rows = ctx.store.pbx_users(tenant).await?;
    let linked: HashSet<&str> = links.iter().map(|l| l.local_id.as_str()).collect();
    // The gateway's users not on the PBX as far as it knows, by (username, extension).
    let unpushed: HashMap<(String, &str), &PbxUser> = (rows.iter())
        .filter(|r| r.source == PbxUserSource::Ms365 && !linked.contains(r.id.as_str()))
        .map(|r| ((r.username.to_lowercase(), r.extension_number.as_str()), r))
        .collect();
    let mut ids: Vec<&String> = listing.users.keys().collect();
    ids.sort();
    for id in ids {
        let remote = &listing.users[id];
        match by_remote.get(id.as_str()) {
            Some(link) if link.created => {}
            Some(_) => import(ctx, remote, report).await?,
            None => {
                let key = (
                    remote.name.as_deref().unwrap_or("").to_lowercase(),
                    remote.extension_number.as_deref().unwrap_or(""),
                );
                match unpushed.get(&key) {
                    Some(row) => relink(ctx, row, id, report).await?,
                    None => import(ctx, remote, report).await?,
                }
            }
        }
    }
    for link in links
        .iter()
        .filter(|l| !listing.users.contains_key(&l.remote_id))
    {
        if link.created {
            report.missing += 1;
            tracing::info!(tenant = %tenant, local = %link.local_id, "a synced user was deleted on the PBX; it comes back");
            (ctx.store)
                .delete_pbx_link(tenant, PbxLinkKind::User, &link.local_id)
                .await?;
        } else {
            ctx.store.forget_pbx_user(tenant, &link.local_id).await?;
        }
    }
    Ok(())
}

/// A user the gateway created in a run that died before writing the link.
async fn relink(
    ctx: &TenantRecord,
    row: &PbxUser,
    remote_id: &str,
    report: &mut ReadReport,
) -> Result<(), SyncError> {
    let link = PbxLink {
        kind: PbxLinkKind::User,
        local_id: row.id.clone(),
        remote_id: remote_id.to_string(),
        created: true,
        bound: false,
        // Unknown: the push writes the fields again.
        pushed_hash: String::new(),
    };
    ctx.store.save_pbx_link(&ctx.tenant_id, &link).await?;
    report.relinked += 1;
    Ok(())
}

/// A user of the PBX's own, recorded as a local user.
async fn import(
    ctx: &TenantRecord,
    remote: &PbxUserRecord,
    report: &mut ReadReport,
) -> Result<(), SyncError> {
    let name = remote.name.clone().unwrap_or_default();
    let user = ImportedPbxUser {
        remote_id: remote.id.clone(),
        extension_number: remote.extension_number.clone().unwrap_or_default(),
        display_name: remote.display_name.clone().unwrap_or_else(|| name.clone()),
        username: name,
        email: remote.email.clone().filter(|e| !e.is_empty()),
        enabled: remote.enabled.unwrap_or(true),
    };
    match ctx.store.import_pbx_user(&ctx.tenant_id, &user).await {
        Ok(_) => report.imported += 1,
        Err(StoreError::Conflict(reason)) => report.errors.push(ItemError {
            entity: "pbx_user".into(),
            key: user.remote_id.clone(),
            name: user.username.clone(),
            outcome: ItemOutcome::Failed,
            reason: format!(
                "{reason}: the gateway gave that number or username to a Microsoft 365 user \
                 before it could see the PBX; change one of them on the PBX"
            ),
        }),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Company contacts the gateway created and somebody deleted on the PBX: the push makes
/// them again.
async fn forget_missing_contacts(
    ctx: &TenantRecord,
    listing: &PbxListing,
    report: &mut ReadReport,
) -> Result<(), SyncError> {
    let tenant = &ctx.tenant_id;
    for link in ctx.store.pbx_links(tenant, PbxLinkKind::Contact).await? {
        if !listing.contacts.contains_key(&link.remote_id) {
            report.missing += 1;
            (ctx.store)
                .delete_pbx_link(tenant, PbxLinkKind::Contact, &link.local_id)
                .await?;
        }
    }
    Ok(())
}
