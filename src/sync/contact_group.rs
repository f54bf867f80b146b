//! Mailboxes whose whole round came back in their `$batch` answer: one page, no
//! `@odata.nextLink`, and the `@odata.deltaLink` a delta round ends with. On a first sync
//! that is nearly every mailbox (a Contacts folder of up to 200 contacts), and on a delta
//! run nearly every one too (a few changes). Such a group is written at once
//! ([`Store::write_contact_books`](crate::store::Store::write_contact_books)): one
//! transaction for the twenty mailboxes of a batch, their cursors committed with their
//! contacts. Every other mailbox (more pages, an expired token, an item the batch did not
//! answer) goes the page-by-page way.

use std::collections::HashSet;

use super::SyncContext;
use super::contact_batch::{FirstAnswer, Prefetched};
use super::contacts::{Job, Outcome, cursor_fingerprint, map_contact};
use crate::graph::model::{Contact, Page};
use crate::store::{BookWrite, StoreError};

/// Writes the mailboxes of `prefetched` the batch answered completely, as one group; the
/// outcome of each, and the mailboxes left for the page-by-page way.
pub(super) async fn write_complete(
    ctx: &SyncContext,
    prefetched: Vec<Prefetched>,
) -> Result<(Vec<(Job, Outcome)>, Vec<Prefetched>), StoreError> {
    let mut complete = Vec::new();
    let mut rest = Vec::new();
    let mut books = HashSet::new();
    for p in prefetched {
        match complete_page(&p) {
            true if books.insert(p.job.book.clone()) => complete.push(p),
            _ => rest.push(p),
        }
    }
    if complete.is_empty() {
        return Ok((Vec::new(), rest));
    }
    let (jobs, writes): (Vec<(Job, bool)>, Vec<BookWrite>) =
        complete.into_iter().map(book_write).unzip();
    let counts = ctx
        .store
        .write_contact_books(&ctx.tenant_id, &writes)
        .await?;
    let outcomes = (jobs.into_iter().zip(counts))
        .map(|((job, full), c)| {
            let outcome = Outcome {
                created: c.upserts.created,
                updated: c.upserts.updated,
                unchanged: c.upserts.unchanged,
                removed: c.removed,
                full,
            };
            (job, outcome)
        })
        .collect();
    Ok((outcomes, rest))
}

/// The batch brought the mailbox's whole round.
fn complete_page(p: &Prefetched) -> bool {
    match &p.first {
        Some(FirstAnswer::Page(page)) => {
            page.next_link.is_none() && (!p.start.delta || page.delta_link.is_some())
        }
        _ => false,
    }
}

/// The mailbox's round as a book write (what `apply_page` and the end of `read_round`
/// would do with it), and whether it was a full listing.
fn book_write(p: Prefetched) -> ((Job, bool), BookWrite) {
    let Prefetched { job, start, first } = p;
    let Some(FirstAnswer::Page(page)) = first else {
        unreachable!("complete_page checked the first answer");
    };
    let Page {
        value, delta_link, ..
    } = page;
    let (upserts, removed) = split_contacts(value);
    let cursor = (delta_link.filter(|_| start.delta))
        .map(|link| (job.kind.clone(), link, cursor_fingerprint(&job)));
    let write = BookWrite {
        book: job.book.clone(),
        upserts,
        removed,
        full: start.full,
        cursor,
    };
    ((job, start.full), write)
}

/// Listed contacts in PortSIP's fields, and the Graph ids reported removed.
fn split_contacts(
    value: Vec<Contact>,
) -> (Vec<(String, crate::store::ContactFields)>, Vec<String>) {
    let mut upserts = Vec::with_capacity(value.len());
    let mut removed = Vec::new();
    for c in value.into_iter().filter(|c| !c.id.is_empty()) {
        if c.removed.is_some() {
            removed.push(c.id);
        } else {
            let fields = map_contact(&c);
            upserts.push((c.id, fields));
        }
    }
    (upserts, removed)
}
