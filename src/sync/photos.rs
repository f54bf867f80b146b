//! Profile photos (`settings.users.sync_photo`): for every enabled PBX user synced from
//! Microsoft 365, the photo metadata comes in `$batch` requests; `/photo/$value` is fetched
//! only when the `@odata.mediaEtag` differs from the stored one, in `$batch` requests too
//! (see `photo_downloads`), capped in size and checked to be a JPEG or PNG. A user without
//! a photo (404) loses the stored one.

use super::photo_downloads::{self, Pending};
use super::{SyncContext, SyncError};
use crate::graph::batch::{BatchRequest, BatchResponse};
use crate::graph::model::PhotoMeta;
use crate::ids::ObjectId;
use crate::store::PbxUserSource;

/// Default cap of one photo's size.
pub const DEFAULT_MAX_PHOTO_BYTES: usize = 512 * 1024;
/// Default number of downloads in flight (the client keeps ≤ 4 per mailbox on top).
pub const DEFAULT_PHOTO_CONCURRENCY: usize = 8;
/// Users whose metadata is fetched (and whose downloads run) per round, bounding memory.
const USERS_PER_ROUND: usize = 400;
/// Content types stored; anything else is skipped.
pub(super) const ALLOWED_TYPES: &[&str] = &["image/jpeg", "image/png"];

/// How to sync photos.
#[derive(Debug, Clone)]
pub struct PhotoOptions {
    /// Larger photos are skipped (found out without reading more than this).
    pub max_bytes: usize,
    /// Downloads in flight at once.
    pub concurrency: usize,
    /// A run answering change notifications: only these users (those the users delta
    /// reported changed) are checked.
    pub only: Option<Vec<ObjectId>>,
}

impl Default for PhotoOptions {
    fn default() -> Self {
        PhotoOptions {
            max_bytes: DEFAULT_MAX_PHOTO_BYTES,
            concurrency: DEFAULT_PHOTO_CONCURRENCY,
            only: None,
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
    let users = match &opts.only {
        Some(only) => ctx.store.pbx_users_by_oids(tenant, only).await?,
        None => ctx.store.pbx_users(tenant).await?,
    };
    let oids: Vec<ObjectId> = (users.into_iter())
        .filter(|u| u.enabled && u.source == PbxUserSource::Ms365)
        .filter_map(|u| u.ms365_oid)
        .collect();
    for round in oids.chunks(USERS_PER_ROUND) {
        let result = sync_round(ctx, opts, round, &mut report).await;
        report.graph_requests = ctx.graph.stats().requests - before;
        result?;
    }
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

async fn sync_round(
    ctx: &SyncContext,
    opts: &PhotoOptions,
    oids: &[ObjectId],
    report: &mut PhotoReport,
) -> Result<(), SyncError> {
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
            Decision::NoMailbox => no_mailbox(report, oid),
            Decision::Skip(reason) => skip(report, oid, reason),
        }
    }
    // Users without a photo lose a stored one, the round's in one statement.
    let removed = ctx.store.remove_photos(tenant, &without).await?;
    report.removed += removed;
    report.without_photo += without.len() - removed;
    let alone = photo_downloads::in_batches(ctx, opts, downloads, report).await?;
    photo_downloads::one_by_one(ctx, opts, alone, report).await
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
    let meta: PhotoMeta = match serde_json::from_value(answer.body.clone()) {
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

pub(super) async fn no_photo(
    ctx: &SyncContext,
    oid: &ObjectId,
    report: &mut PhotoReport,
) -> Result<(), SyncError> {
    if ctx.store.remove_photo(&ctx.tenant_id, oid).await? {
        report.removed += 1;
    } else {
        report.without_photo += 1;
    }
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

    fn answer(status: u16, body: serde_json::Value) -> BatchResponse {
        BatchResponse {
            id: "0".into(),
            status,
            headers: Default::default(),
            body,
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
