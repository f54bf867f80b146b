//! Photo downloads. Graph answers a `GET /users/{id}/photo/$value` inside a `$batch` with
//! the picture base64-encoded in the item's body and its type in the item's
//! `Content-Type`, so photos come twenty to a request, as their metadata does: on a first
//! sync of 50,000 users, half with a photo, 1,250 requests instead of 25,000. An item the
//! batch could not answer (throttled past the retries, a server error, a body that is not
//! base64) is fetched again on its own, so batching never turns a retryable error into a
//! skipped photo. Each batch is stored before the next is read: at most a few batches of
//! photos are in memory.

use bytes::Bytes;
use tokio::task::JoinSet;

use super::photos::{
    ALLOWED_TYPES, PhotoOptions, PhotoReport, media_type, no_mailbox, no_photo, skip,
};
use super::{SyncContext, SyncError};
use crate::graph::batch::{BatchRequest, BatchResponse};
use crate::graph::{GraphError, MAX_BATCH};
use crate::ids::ObjectId;
use crate::store::NewPhoto;

/// A download to make: the user and the ETag the metadata announced.
pub(super) struct Pending {
    pub oid: ObjectId,
    pub etag: String,
}

/// What a download found.
enum Downloaded {
    Photo(Bytes, String),
    NoPhoto,
    NoMailbox,
    Failed(String),
}

/// A batch of downloads and what Graph answered for it.
type Answered = (Vec<Pending>, Result<Vec<BatchResponse>, GraphError>);

/// Batches in flight per download slot: a batch is twenty downloads.
const DOWNLOADS_PER_BATCH_SLOT: usize = 4;

/// Downloads and stores `downloads` in batches; the ones to fetch on their own come back.
pub(super) async fn in_batches(
    ctx: &SyncContext,
    opts: &PhotoOptions,
    downloads: Vec<Pending>,
    report: &mut PhotoReport,
) -> Result<Vec<Pending>, SyncError> {
    let in_flight = (opts.concurrency / DOWNLOADS_PER_BATCH_SLOT).max(1);
    let mut chunks = into_chunks(downloads).into_iter();
    let mut batches: JoinSet<Answered> = JoinSet::new();
    let mut alone = Vec::new();
    loop {
        while batches.len() < in_flight
            && let Some(chunk) = chunks.next()
        {
            let graph = ctx.graph.clone();
            batches.spawn(async move {
                let requests = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, p)| request(i, p))
                    .collect();
                let answers = graph.batch(requests).await;
                (chunk, answers)
            });
        }
        let Some(joined) = batches.join_next().await else {
            break;
        };
        let (chunk, answers) = joined
            .map_err(|e| SyncError::InvalidOptions(format!("a photo batch task failed: {e}")))?;
        let Ok(answers) = answers else {
            // The batch itself failed: each photo gets its own request.
            alone.extend(chunk);
            continue;
        };
        let mut found = Vec::with_capacity(chunk.len());
        for (p, answer) in chunk.into_iter().zip(answers) {
            match from_batch(answer, opts.max_bytes) {
                Some(photo) => found.push((p, photo)),
                None => alone.push(p),
            }
        }
        record(ctx, report, found).await?;
    }
    Ok(alone)
}

/// Downloads and stores `downloads` one request each, `opts.concurrency` at a time.
pub(super) async fn one_by_one(
    ctx: &SyncContext,
    opts: &PhotoOptions,
    downloads: Vec<Pending>,
    report: &mut PhotoReport,
) -> Result<(), SyncError> {
    let mut queue = downloads.into_iter();
    let mut fetched: JoinSet<(Pending, Downloaded)> = JoinSet::new();
    loop {
        while fetched.len() < opts.concurrency
            && let Some(p) = queue.next()
        {
            let graph = ctx.graph.clone();
            let max_bytes = opts.max_bytes;
            fetched.spawn(async move {
                let result = graph.photo_bytes(p.oid.as_str(), max_bytes).await;
                (p, from_single(result))
            });
        }
        let Some(joined) = fetched.join_next().await else {
            break;
        };
        let (p, found) = joined
            .map_err(|e| SyncError::InvalidOptions(format!("a photo download task failed: {e}")))?;
        record(ctx, report, vec![(p, found)]).await?;
    }
    Ok(())
}

fn into_chunks(downloads: Vec<Pending>) -> Vec<Vec<Pending>> {
    let mut chunks: Vec<Vec<Pending>> = Vec::new();
    for p in downloads {
        match chunks.last_mut() {
            Some(last) if last.len() < MAX_BATCH => last.push(p),
            _ => chunks.push(vec![p]),
        }
    }
    chunks
}

fn request(i: usize, p: &Pending) -> BatchRequest {
    let url = format!("/users/{}/photo/$value", p.oid);
    BatchRequest::get(i.to_string(), url).in_mailbox(p.oid.clone())
}

/// A batch item's answer; `None` when the photo is to be fetched on its own.
fn from_batch(answer: BatchResponse, max_bytes: usize) -> Option<Downloaded> {
    if answer.is_no_mailbox() {
        return Some(Downloaded::NoMailbox);
    }
    if answer.status == 404 {
        return Some(Downloaded::NoPhoto);
    }
    if !answer.is_success() {
        return None;
    }
    let bytes = answer.binary_body()?;
    if bytes.len() > max_bytes {
        let reason = format!("download failed: the photo is larger than {max_bytes} bytes");
        return Some(Downloaded::Failed(reason));
    }
    let content_type = answer.header("Content-Type").unwrap_or("image/jpeg");
    Some(Downloaded::Photo(
        Bytes::from(bytes),
        content_type.to_string(),
    ))
}

fn from_single(result: Result<Option<(Bytes, String)>, GraphError>) -> Downloaded {
    match result {
        Ok(Some((bytes, content_type))) => Downloaded::Photo(bytes, content_type),
        Ok(None) => Downloaded::NoPhoto,
        Err(e) if e.is_no_mailbox() => Downloaded::NoMailbox,
        Err(e) => Downloaded::Failed(format!("download failed: {e}")),
    }
}

/// Stores (or counts) what downloads found; the photos in one transaction.
async fn record(
    ctx: &SyncContext,
    report: &mut PhotoReport,
    found: Vec<(Pending, Downloaded)>,
) -> Result<(), SyncError> {
    let (mut photos, mut gone) = (Vec::with_capacity(found.len()), Vec::new());
    for (p, photo) in found {
        match photo {
            Downloaded::Photo(bytes, content_type) => {
                let content_type = media_type(&content_type);
                if ALLOWED_TYPES.contains(&content_type.as_str()) {
                    photos.push((p, bytes, content_type));
                } else {
                    let reason = format!("content type {content_type} is not JPEG or PNG");
                    skip(report, &p.oid, reason);
                }
            }
            Downloaded::NoPhoto => gone.push(p.oid),
            Downloaded::NoMailbox => no_mailbox(report, &p.oid),
            Downloaded::Failed(reason) => skip(report, &p.oid, reason),
        }
    }
    let new: Vec<NewPhoto> = (photos.iter())
        .map(|(p, bytes, content_type)| NewPhoto {
            oid: &p.oid,
            etag: &p.etag,
            content_type,
            bytes,
        })
        .collect();
    ctx.store.save_photos(&ctx.tenant_id, &new).await?;
    report.downloaded += new.len();
    no_photo(ctx, &gone, report).await
}
