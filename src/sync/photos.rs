//! Profile photos (`settings.users.sync_photo`): for every enabled PBX user synced from
//! Microsoft 365, the photo metadata comes in `$batch` requests; `/photo/$value` is fetched
//! only when the `@odata.mediaEtag` differs from the stored one, in `$batch` requests too
//! (see `photo_downloads`), capped in size and checked to be a JPEG or PNG. A user without
//! a photo (404) loses the stored one.

use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;

use super::photo_downloads::{self, Pending};
use super::plan::FetchMode;
use super::run::RunReport;
use super::{SyncContext, SyncError};
use crate::graph::batch::{BatchRequest, BatchResponse};
use crate::graph::model::PhotoMeta;
use crate::ids::ObjectId;
use crate::store::{PbxUserSource, StoreError};

/// Default cap of one photo's size.
pub const DEFAULT_MAX_PHOTO_BYTES: usize = 512 * 1024;
/// Default number of downloads in flight (the client keeps ≤ 4 per mailbox on top).
pub const DEFAULT_PHOTO_CONCURRENCY: usize = 8;
/// Users whose metadata is fetched (and whose downloads run) per round, bounding memory.
const USERS_PER_ROUND: usize = 400;
/// Rounds in flight at once: one round's metadata is asked for while the one before it
/// downloads and stores, so Graph and the store do not wait on each other.
const ROUNDS_IN_FLIGHT: usize = 2;
/// Content types stored; anything else is skipped.
pub(super) const ALLOWED_TYPES: &[&str] = &["image/jpeg", "image/png"];

/// How to sync photos.
#[derive(Debug, Clone)]
pub struct PhotoOptions {
    /// Larger photos are skipped (found out without reading more than this).
    pub max_bytes: usize,
    /// Downloads in flight at once.
    pub concurrency: usize,
    /// Whose photos are looked at.
    pub scope: PhotoScope,
}

/// Slices of the users a scheduled delta run re-checks one of (see [`PhotoScope::Slice`]).
pub const PHOTO_SLICES: u32 = 7;

/// Whose photos a run looks at. Graph's users delta does not report photo changes, so a
/// change can only be found by asking for the photo's metadata (one `$batch` item per
/// user); asking for every user's at every run is what a first or full run does, and a
/// scheduled delta run asks for a seventh of them, in turn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PhotoScope {
    /// Every enabled synced user (a full users round, or a run asked for by hand).
    #[default]
    All,
    /// These users only: a run answering change notifications checks those it changed.
    Only(Vec<ObjectId>),
    /// A scheduled delta run: the users of slice `index` (of [`PHOTO_SLICES`], by a hash
    /// of the oid) and those the round changed. The slice moves on after each run, so a
    /// photo change shows within seven scheduled runs (a week at the default daily
    /// schedule), at once when the user's record changes too.
    Slice { index: u32, also: Vec<ObjectId> },
}

impl PhotoScope {
    fn covers(&self, oid: &ObjectId) -> bool {
        match self {
            PhotoScope::All | PhotoScope::Only(_) => true,
            PhotoScope::Slice { index, also } => slice_of(oid) == *index || also.contains(oid),
        }
    }
}

/// `sync_state.kind` of the rolling re-check; its `delta_link` holds the next slice.
pub const PHOTO_SLICE_KIND: &str = "photos:slice";

impl PhotoScope {
    /// Whose photos the photos phase of a run looks at, after its users phase: the users
    /// a targeted run changed; the next slice and the changed users on a scheduled delta
    /// round; everyone after a full round, and the first time photos are synced (no
    /// rotation yet: an administrator who turns photos on sees them all after one run).
    pub(crate) async fn for_run(ctx: &SyncContext, users: &RunReport, targeted: bool) -> Self {
        if targeted {
            return PhotoScope::Only(users.changed_oids.clone());
        }
        if users.mode.as_deref() != Some(FetchMode::Delta.as_str()) {
            return PhotoScope::All;
        }
        match ctx
            .store
            .sync_cursor(&ctx.tenant_id, PHOTO_SLICE_KIND)
            .await
        {
            Ok(None) => PhotoScope::All,
            Ok(Some(cursor)) => PhotoScope::Slice {
                index: (cursor.delta_link.parse().ok())
                    .filter(|i| *i < PHOTO_SLICES)
                    .unwrap_or(0),
                also: users.changed_oids.clone(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the photo re-check slice; checking all");
                PhotoScope::All
            }
        }
    }

    /// Moves the rotation past this run's slice (or starts it after everyone was looked
    /// at), once the photos phase went through.
    pub(crate) async fn done(&self, ctx: &SyncContext) -> Result<(), StoreError> {
        let next = match self {
            PhotoScope::All => 0,
            PhotoScope::Only(_) => return Ok(()),
            PhotoScope::Slice { index, .. } => (index + 1) % PHOTO_SLICES,
        };
        let next = next.to_string();
        (ctx.store)
            .save_sync_cursor(&ctx.tenant_id, PHOTO_SLICE_KIND, &next, "rotation")
            .await
    }
}

/// Photos are off for the tenant: the rotation is forgotten, so the first run after they
/// come back on looks at everyone.
pub(crate) async fn forget_rotation(ctx: &SyncContext) {
    if let Err(e) = (ctx.store)
        .clear_sync_cursor(&ctx.tenant_id, PHOTO_SLICE_KIND)
        .await
    {
        tracing::warn!(tenant = %ctx.tenant_id, error = %e, "cannot reset the photo re-check");
    }
}

/// The slice of `oid`: FNV-1a of its text, so the same in every process and version.
pub fn slice_of(oid: &ObjectId) -> u32 {
    let hash = (oid.as_str().bytes()).fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % u64::from(PHOTO_SLICES)) as u32
}

impl Default for PhotoOptions {
    fn default() -> Self {
        PhotoOptions {
            max_bytes: DEFAULT_MAX_PHOTO_BYTES,
            concurrency: DEFAULT_PHOTO_CONCURRENCY,
            scope: PhotoScope::All,
        }
    }
}

/// A user whose photo was not stored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhotoSkip {
    pub oid: String,
    pub reason: String,
}

/// What a photo run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhotoReport {
    /// `sync_photo` was off: nothing was checked.
    pub disabled: bool,
    /// Users whose photo metadata was asked for.
    pub checked: usize,
    /// Photos downloaded and stored (new or changed).
    pub downloaded: usize,
    /// Photos whose ETag matched the stored one.
    pub unchanged: usize,
    /// Stored photos removed because the user has none any more.
    pub removed: usize,
    /// Users without a photo (and none stored).
    pub without_photo: usize,
    pub skipped: Vec<PhotoSkip>,
    /// Users without a mailbox (`MailboxNotEnabledForRESTAPI`): counted, not errors, and
    /// handed to the contacts phase so it does not ask them again.
    pub no_mailbox: Vec<String>,
    /// HTTP requests sent to Graph by this run (batches, downloads, retries).
    pub graph_requests: u64,
}

impl PhotoReport {
    /// Adds a round's figures (the run's Graph request count is taken at the end).
    fn absorb(&mut self, round: PhotoReport) {
        // Named one by one, so a new field cannot be forgotten here.
        let PhotoReport {
            disabled: _,
            checked,
            downloaded,
            unchanged,
            removed,
            without_photo,
            skipped,
            no_mailbox,
            graph_requests: _,
        } = round;
        self.checked += checked;
        self.downloaded += downloaded;
        self.unchanged += unchanged;
        self.removed += removed;
        self.without_photo += without_photo;
        self.skipped.extend(skipped);
        self.no_mailbox.extend(no_mailbox);
    }
}

enum Decision {
    Unchanged,
    Download(Pending),
    NoPhoto,
    NoMailbox,
    Skip(String),
}

/// Syncs the photos of the tenant's enabled Microsoft 365 users.
pub async fn sync_photos(ctx: &SyncContext, opts: &PhotoOptions) -> Result<PhotoReport, SyncError> {
    if opts.max_bytes == 0 || opts.concurrency == 0 {
        return Err(SyncError::InvalidOptions(
            "photo max_bytes and concurrency must be positive".into(),
        ));
    }
    let tenant = &ctx.tenant_id;
    let mut report = PhotoReport::default();
    let settings = ctx.store.ms365_settings(tenant).await?;
    if !settings.users.sync_photo {
        report.disabled = true;
        return Ok(report);
    }
    let before = ctx.graph.stats().requests;
    let users = match &opts.scope {
        PhotoScope::Only(only) => ctx.store.pbx_users_by_oids(tenant, only).await?,
        _ => ctx.store.pbx_users(tenant).await?,
    };
    let oids: Vec<ObjectId> = (users.into_iter())
        .filter(|u| u.enabled && u.source == PbxUserSource::Ms365)
        .filter_map(|u| u.ms365_oid)
        .filter(|oid| opts.scope.covers(oid))
        .collect();
    let mut rounds = oids.chunks(USERS_PER_ROUND);
    let mut in_flight = FuturesOrdered::new();
    loop {
        while in_flight.len() < ROUNDS_IN_FLIGHT
            && let Some(round) = rounds.next()
        {
            in_flight.push_back(sync_round(ctx, opts, round));
        }
        match in_flight.next().await {
            Some(round) => report.absorb(round?),
            None => break,
        }
    }
    report.graph_requests = ctx.graph.stats().requests - before;
    tracing::info!(
        tenant = %tenant,
        checked = report.checked,
        downloaded = report.downloaded,
        unchanged = report.unchanged,
        removed = report.removed,
        skipped = report.skipped.len(),
        "photo sync done"
    );
    Ok(report)
}

/// One round of users: their metadata, then the downloads it calls for.
async fn sync_round(
    ctx: &SyncContext,
    opts: &PhotoOptions,
    oids: &[ObjectId],
) -> Result<PhotoReport, SyncError> {
    let mut report = PhotoReport::default();
    let tenant = &ctx.tenant_id;
    let requests = oids
        .iter()
        .enumerate()
        .map(|(i, oid)| {
            BatchRequest::get(i.to_string(), format!("/users/{oid}/photo")).in_mailbox(oid.clone())
        })
        .collect();
    let answers = ctx
        .graph
        .batch(requests)
        .await
        .map_err(|e| SyncError::PhotoFetch(Box::new(e)))?;
    report.checked += oids.len();
    let mut downloads = Vec::new();
    let mut without = Vec::new();
    let stored = ctx.store.photo_etags(tenant, oids).await?;
    for (oid, answer) in oids.iter().zip(&answers) {
        match decide(answer, stored.get(oid).map(String::as_str)) {
            Decision::Unchanged => report.unchanged += 1,
            Decision::Download(p) => downloads.push(Pending {
                oid: oid.clone(),
                ..p
            }),
            Decision::NoPhoto => without.push(oid.clone()),
            Decision::NoMailbox => no_mailbox(&mut report, oid),
            Decision::Skip(reason) => skip(&mut report, oid, reason),
        }
    }
    no_photo(ctx, &without, &mut report).await?;
    let alone = photo_downloads::in_batches(ctx, opts, downloads, &mut report).await?;
    photo_downloads::one_by_one(ctx, opts, alone, &mut report).await?;
    Ok(report)
}

/// What to do after a metadata answer, given the stored ETag.
fn decide(answer: &BatchResponse, stored: Option<&str>) -> Decision {
    if answer.is_no_mailbox() {
        return Decision::NoMailbox;
    }
    if answer.status == 404 {
        return Decision::NoPhoto;
    }
    if !answer.is_success() {
        return Decision::Skip(format!("photo metadata: HTTP {}", answer.status));
    }
    let meta: PhotoMeta = match answer.body.parse() {
        Ok(meta) => meta,
        Err(e) => return Decision::Skip(format!("photo metadata unreadable: {e}")),
    };
    let Some(etag) = meta.media_etag.filter(|e| !e.is_empty()) else {
        return Decision::Skip("photo metadata without @odata.mediaEtag".into());
    };
    if stored == Some(etag.as_str()) {
        return Decision::Unchanged;
    }
    if let Some(ct) = meta.media_content_type.as_deref() {
        let ct = media_type(ct);
        if !ALLOWED_TYPES.contains(&ct.as_str()) {
            return Decision::Skip(format!("content type {ct} is not JPEG or PNG"));
        }
    }
    Decision::Download(Pending {
        oid: ObjectId::default(),
        etag,
    })
}

/// Users without a photo lose a stored one, all of `oids` in one statement.
pub(super) async fn no_photo(
    ctx: &SyncContext,
    oids: &[ObjectId],
    report: &mut PhotoReport,
) -> Result<(), SyncError> {
    let removed = ctx.store.remove_photos(&ctx.tenant_id, oids).await?;
    report.removed += removed;
    report.without_photo += oids.len() - removed;
    Ok(())
}

/// A stored photo stays: the user may only have lost the mailbox for a while.
pub(super) fn no_mailbox(report: &mut PhotoReport, oid: &ObjectId) {
    tracing::debug!(oid = %oid, "no mailbox; photo not checked");
    report.no_mailbox.push(oid.to_string());
}

pub(super) fn skip(report: &mut PhotoReport, oid: &ObjectId, reason: String) {
    tracing::debug!(oid = %oid, %reason, "photo skipped");
    report.skipped.push(PhotoSkip {
        oid: oid.to_string(),
        reason,
    });
}

/// `image/JPEG; foo=bar` → `image/jpeg`.
pub(super) fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_is_in_one_slice_and_the_slices_are_even() {
        let oids: Vec<ObjectId> = (0..7_000u64)
            .map(|i| ObjectId::new(format!("{:08x}-0000-4000-8000-{i:012x}", i * 7919)))
            .collect();
        let mut sizes = [0usize; PHOTO_SLICES as usize];
        for oid in &oids {
            sizes[slice_of(oid) as usize] += 1;
        }
        assert!(sizes.iter().all(|n| (850..=1150).contains(n)), "{sizes:?}");
        let scope = |index| PhotoScope::Slice {
            index,
            also: vec![oids[0].clone()],
        };
        for oid in &oids[1..] {
            let slices = (0..PHOTO_SLICES).filter(|&i| scope(i).covers(oid)).count();
            assert_eq!(slices, 1, "{oid}");
        }
        assert!((0..PHOTO_SLICES).all(|i| scope(i).covers(&oids[0])));
    }

    fn answer(status: u16, body: serde_json::Value) -> BatchResponse {
        BatchResponse {
            id: "0".into(),
            status,
            headers: Default::default(),
            body: body.into(),
        }
    }

    #[test]
    fn decisions() {
        let meta = serde_json::json!({"@odata.mediaEtag": "\"E1\"", "@odata.mediaContentType": "image/jpeg"});
        assert!(matches!(
            decide(&answer(200, meta.clone()), Some("\"E1\"")),
            Decision::Unchanged
        ));
        assert!(
            matches!(decide(&answer(200, meta.clone()), Some("\"E0\"")), Decision::Download(p) if p.etag == "\"E1\"")
        );
        assert!(matches!(
            decide(&answer(200, meta), None),
            Decision::Download(_)
        ));
        assert!(matches!(
            decide(&answer(404, serde_json::Value::Null), Some("x")),
            Decision::NoPhoto
        ));
        let no_mailbox =
            serde_json::json!({"error": {"code": "MailboxNotEnabledForRESTAPI", "message": "x"}});
        assert!(matches!(
            decide(&answer(404, no_mailbox), Some("x")),
            Decision::NoMailbox
        ));
        assert!(matches!(
            decide(&answer(500, serde_json::Value::Null), None),
            Decision::Skip(_)
        ));
        let gif = serde_json::json!({"@odata.mediaEtag": "\"E1\"", "@odata.mediaContentType": "image/gif"});
        assert!(
            matches!(decide(&answer(200, gif), None), Decision::Skip(r) if r.contains("image/gif"))
        );
        let no_etag = serde_json::json!({"@odata.mediaContentType": "image/png"});
        assert!(matches!(
            decide(&answer(200, no_etag), None),
            Decision::Skip(_)
        ));
    }

    #[test]
    fn media_types_are_normalised() {
        assert_eq!(media_type("Image/JPEG; charset=x"), "image/jpeg");
        assert_eq!(media_type("image/png"), "image/png");
    }
}
