//! The first request of every mailbox's contacts round, twenty mailboxes to a `$batch`:
//! on a tenant of 50,000 users that is 2,500 requests instead of 50,000 for the round
//! openings, which is where most of a contacts run's requests go when few contacts change.
//! Only the first page is batched; the rest of a round follows its `@odata.nextLink`s one by
//! one. An item that fails in the batch (other than an expired delta token) is simply
//! fetched again on its own, so batching never turns a retryable error into a skipped
//! mailbox.

use std::collections::HashMap;

use super::SyncContext;
use super::contacts::{Job, MailboxError, cursor_fingerprint};
use crate::graph::batch::{BatchRequest, BatchResponse};
use crate::graph::model::{Contact, Page};
use crate::store::SyncCursor;

/// Where a mailbox's round starts.
#[derive(Debug, Clone)]
pub(super) struct Start {
    pub url: String,
    /// Every contact is listed: stored ones not seen are removed at the end.
    pub full: bool,
    /// A delta round: it must end with a deltaLink, which is saved.
    pub delta: bool,
    /// The round continues from a stored deltaLink (which may have expired).
    pub from_cursor: bool,
}

/// What the batch answered for a mailbox's first request.
#[derive(Debug)]
pub(super) enum FirstAnswer {
    Page(Page<Contact>),
    /// The stored delta token expired (410 / syncStateNotFound).
    Expired,
    /// The user has no mailbox: nothing to ask again in this run.
    NoMailbox,
}

/// A mailbox ready to run: its start and, when the batch answered usefully, its first page.
#[derive(Debug)]
pub(super) struct Prefetched {
    pub job: Job,
    pub start: Start,
    pub first: Option<FirstAnswer>,
}

/// Where `job`'s round starts: its stored deltaLink (`cursor`, when made for this book), a
/// new delta round, or (clouds without contacts delta) a full listing.
pub(super) fn start_of(
    ctx: &SyncContext,
    job: &Job,
    cursor: Option<SyncCursor>,
    page_size: u16,
) -> Start {
    let Some(first_delta) = ctx.graph.contacts_delta_url(&job.mailbox) else {
        let url = ctx.graph.contacts_url(&job.mailbox, page_size);
        return Start {
            url,
            full: true,
            delta: false,
            from_cursor: false,
        };
    };
    match cursor.filter(|c| c.fingerprint == cursor_fingerprint(job)) {
        Some(c) => Start {
            url: c.delta_link,
            full: false,
            delta: true,
            from_cursor: true,
        },
        None => Start {
            url: first_delta,
            full: true,
            delta: true,
            from_cursor: false,
        },
    }
}

/// Starts and first pages of `jobs` (at most twenty, one `$batch`).
pub(super) async fn first_pages(
    ctx: &SyncContext,
    jobs: Vec<Job>,
    page_size: u16,
) -> Result<Vec<Prefetched>, MailboxError> {
    let kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
    let mut cursors = ctx.store.sync_cursors(&ctx.tenant_id, &kinds).await?;
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let start = start_of(ctx, &job, cursors.remove(&job.kind), page_size);
        out.push(Prefetched {
            job,
            start,
            first: None,
        });
    }
    // One mailbox gains nothing from a batch.
    if out.len() < 2 {
        return Ok(out);
    }
    let base = ctx.graph.graph_base();
    let requests: Vec<BatchRequest> = out
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let relative = p.start.url.strip_prefix(base)?;
            Some(BatchRequest::get(i.to_string(), relative).in_mailbox(p.job.mailbox.clone()))
        })
        .collect();
    let answers = match ctx.graph.batch(requests).await {
        Ok(answers) => answers,
        Err(e) => {
            tracing::debug!(error = %e, "contacts batch failed; mailboxes start one by one");
            return Ok(out);
        }
    };
    let mut by_index: HashMap<String, BatchResponse> =
        answers.into_iter().map(|a| (a.id.clone(), a)).collect();
    for (i, p) in out.iter_mut().enumerate() {
        p.first = by_index
            .remove(&i.to_string())
            .and_then(|a| first_answer(ctx, a));
    }
    Ok(out)
}

fn first_answer(ctx: &SyncContext, answer: BatchResponse) -> Option<FirstAnswer> {
    if answer.status == 410
        || (answer.error_code()).is_some_and(|c| crate::graph::error::is_sync_state_code(&c))
    {
        return Some(FirstAnswer::Expired);
    }
    if answer.is_no_mailbox() {
        return Some(FirstAnswer::NoMailbox);
    }
    if !answer.is_success() {
        return None;
    }
    let page: Page<Contact> = answer.body.parse().ok()?;
    // The same check a page fetched on its own gets: links never leave the Graph host.
    for link in page.next_link.iter().chain(page.delta_link.iter()) {
        ctx.graph.check_origin(link).ok()?;
    }
    Some(FirstAnswer::Page(page))
}
