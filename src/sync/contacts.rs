//! Outlook contacts → PBX contacts, one way.
//!
//! - Personal contacts: every enabled PBX user synced from Microsoft 365 whom
//!   `personal_contacts` covers gets the contacts of their mailbox's default Contacts folder.
//! - Company contacts: the default Contacts folder of every shared mailbox named in
//!   `shared_mailbox.selected_users` (address, UPN or object id).
//!
//! Each mailbox is read with a contacts delta round where the cloud offers it (the deltaLink
//! is kept per mailbox in `sync_state` and saved only after the round's changes are
//! committed); the first round, an expired delta token and clouds without contacts delta
//! (21Vianet) read the folder in full and compare: contacts not listed are removed. Pages
//! are applied as they arrive, one transaction per page, so only one mailbox's contact ids
//! are ever held in memory. A Graph failure skips that mailbox (with the reason) and removes
//! nothing from it. Mailboxes run a few at a time; the Graph client keeps its own limit of
//! requests per mailbox on top.

use std::collections::{HashMap, HashSet, VecDeque};

use tokio::task::JoinSet;

use super::contact_batch::{FirstAnswer, Prefetched, first_pages};
use super::contact_group::write_complete;
use super::{SyncContext, SyncError};
use crate::graph::model::{Contact, Page, PhysicalAddress, User};
use crate::graph::resources::{MAX_CONTACTS_TOP, path_segment};
use crate::graph::{GraphError, MAX_BATCH};
use crate::ids::ObjectId;
use crate::store::{ContactBook, ContactFields, PbxUserSource, StoreError};

/// Default number of mailboxes synced at once.
pub const DEFAULT_MAILBOX_CONCURRENCY: usize = 4;

/// How to sync contacts.
#[derive(Debug, Clone)]
pub struct ContactOptions {
    /// Mailboxes read at once.
    pub mailbox_concurrency: usize,
    /// `$top` of full listings (1..=1000).
    pub page_size: u16,
    /// Users known to have no mailbox earlier in the same run (the photos phase found
    /// out): not asked again.
    pub without_mailbox: HashSet<String>,
    /// A run answering change notifications: only these mailboxes are read, and books
    /// are neither resolved nor removed (the schedule's runs do that).
    pub only: Option<super::Targets>,
}

impl Default for ContactOptions {
    fn default() -> Self {
        ContactOptions {
            mailbox_concurrency: DEFAULT_MAILBOX_CONCURRENCY,
            page_size: MAX_CONTACTS_TOP,
            without_mailbox: HashSet::new(),
            only: None,
        }
    }
}

/// A mailbox (or a shared-mailbox entry of the settings) not synced, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactSkip {
    pub mailbox: String,
    pub reason: String,
}

/// What a contacts run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactReport {
    /// In-scope users whose mailbox was read.
    pub personal_mailboxes: usize,
    /// Shared mailboxes resolved and read.
    pub shared_mailboxes: usize,
    /// Mailboxes read in full and compared (first run, expired delta, no delta).
    pub full_listings: usize,
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub removed: usize,
    pub skipped: Vec<ContactSkip>,
    /// Users without a mailbox (not asked, or answered `MailboxNotEnabledForRESTAPI`).
    pub no_mailbox: usize,
    /// HTTP requests sent to Graph by this run.
    pub graph_requests: u64,
}

/// One mailbox to read into one book.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub mailbox: String,
    pub book: ContactBook,
    /// `sync_state.kind` of the mailbox's deltaLink.
    pub kind: String,
}

/// What a stored deltaLink was made for; a link of another book is not followed.
pub(super) fn cursor_fingerprint(job: &Job) -> String {
    format!("{}:{}", job.book.kind(), job.book.owner())
}

#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub removed: usize,
    pub full: bool,
}

#[derive(Debug)]
pub(super) enum MailboxError {
    /// The user has no mailbox (see [`crate::graph::error::NO_MAILBOX_CODE`]).
    NoMailbox,
    Graph(GraphError),
    Incomplete,
    Store(StoreError),
}

impl From<StoreError> for MailboxError {
    fn from(e: StoreError) -> Self {
        MailboxError::Store(e)
    }
}

/// `sync_state.kind` of a user's personal contacts delta.
pub fn personal_kind(oid: &str) -> String {
    format!("contacts:{oid}")
}

/// `sync_state.kind` of a shared mailbox's contacts delta.
pub fn shared_kind(oid: &str) -> String {
    format!("contacts:shared:{oid}")
}

/// Syncs personal and company contacts of the tenant.
pub async fn sync_contacts(
    ctx: &SyncContext,
    opts: &ContactOptions,
) -> Result<ContactReport, SyncError> {
    if opts.mailbox_concurrency == 0 || opts.page_size == 0 {
        return Err(SyncError::InvalidOptions(
            "contacts mailbox_concurrency and page_size must be positive".into(),
        ));
    }
    let tenant = &ctx.tenant_id;
    let settings = ctx.store.ms365_settings(tenant).await?;
    let before = ctx.graph.stats().requests;
    let mut report = ContactReport::default();
    if let Some(targets) = &opts.only {
        let jobs = targeted_jobs(ctx, &settings, targets, &mut report).await?;
        let result = run_jobs(ctx, opts, jobs, &mut report).await;
        report.graph_requests = ctx.graph.stats().requests - before;
        return result.map(|()| report);
    }
    let mut jobs = Vec::new();

    // Personal contacts of in-scope users; books of users out of scope go.
    let users = ctx.store.pbx_users(tenant).await?;
    // One read of the directory, not one query per user (50,000 on a large tenant).
    let upns: HashMap<ObjectId, String> = ctx.store.directory_upns(tenant).await?;
    let mut owners = HashSet::new();
    for u in &users {
        let Some(oid) = u.ms365_oid.as_ref().map(ObjectId::as_str) else {
            continue;
        };
        if !u.enabled || u.source != PbxUserSource::Ms365 {
            continue;
        }
        let upn = upns.get(oid).unwrap_or(&u.username);
        if !settings.personal_contacts.covers(oid, upn) {
            continue;
        }
        owners.insert(u.id.clone());
        if opts.without_mailbox.contains(oid) {
            report.no_mailbox += 1;
            continue;
        }
        jobs.push(Job {
            mailbox: oid.to_string(),
            book: ContactBook::Personal(u.id.clone()),
            kind: personal_kind(oid),
        });
    }
    report.personal_mailboxes = jobs.len();
    for owner in ctx.store.contact_owners(tenant, false).await? {
        if owners.contains(&owner) {
            continue;
        }
        report.removed += ctx
            .store
            .delete_contact_book(tenant, &ContactBook::Personal(owner.clone()))
            .await?;
        if let Some(oid) = users
            .iter()
            .find(|u| u.id == owner)
            .and_then(|u| u.ms365_oid.as_ref().map(ObjectId::as_str))
        {
            ctx.store
                .clear_sync_cursor(tenant, &personal_kind(oid))
                .await?;
        }
    }

    // Shared mailboxes → company contacts.
    let mut mailboxes = HashSet::new();
    let mut all_resolved = true;
    if settings.shared_mailbox.enabled {
        for entry in &settings.shared_mailbox.selected_users {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let path = format!("/users/{}?$select=id", path_segment(entry));
            match ctx.graph.get_json::<User>(&path, "user").await {
                Ok(user) if !user.id.is_empty() => {
                    let mailbox = user.id.to_string();
                    if mailboxes.insert(mailbox.clone()) {
                        jobs.push(Job {
                            kind: shared_kind(&mailbox),
                            book: ContactBook::Company(mailbox.clone()),
                            mailbox,
                        });
                    }
                }
                Ok(_) => {
                    all_resolved = false;
                    skip(
                        &mut report,
                        entry,
                        "Graph returned the mailbox without an id".into(),
                    );
                }
                Err(e) => {
                    all_resolved = false;
                    skip(
                        &mut report,
                        entry,
                        format!("cannot resolve the shared mailbox: {e}"),
                    );
                }
            }
        }
    }
    report.shared_mailboxes = mailboxes.len();
    // Only when every entry resolved can a book be known to be no longer selected.
    if all_resolved {
        for owner in ctx.store.contact_owners(tenant, true).await? {
            if mailboxes.contains(&owner) {
                continue;
            }
            report.removed += ctx
                .store
                .delete_contact_book(tenant, &ContactBook::Company(owner.clone()))
                .await?;
            ctx.store
                .clear_sync_cursor(tenant, &shared_kind(&owner))
                .await?;
        }
    }

    let result = run_jobs(ctx, opts, jobs, &mut report).await;
    report.graph_requests = ctx.graph.stats().requests - before;
    result?;
    tracing::info!(
        tenant = %tenant,
        personal = report.personal_mailboxes,
        shared = report.shared_mailboxes,
        created = report.created,
        updated = report.updated,
        removed = report.removed,
        skipped = report.skipped.len(),
        "contacts sync done"
    );
    Ok(report)
}

/// The mailboxes a notification named that are still in scope: personal ones of enabled
/// synced users whom `personal_contacts` covers, shared ones while shared mailboxes are on.
async fn targeted_jobs(
    ctx: &SyncContext,
    settings: &crate::settings::Ms365Settings,
    targets: &super::Targets,
    report: &mut ContactReport,
) -> Result<Vec<Job>, SyncError> {
    let tenant = &ctx.tenant_id;
    let mut jobs = Vec::new();
    if settings.personal_contacts.enabled && !targets.personal.is_empty() {
        for oid in &targets.personal {
            let Some(user) = ctx.store.pbx_user_by_oid(tenant, oid).await? else {
                continue;
            };
            let upn = ctx.store.directory_user(tenant, oid).await?.map(|d| d.upn);
            let upn = upn.as_deref().unwrap_or(&user.username);
            let synced = user.enabled && user.source == PbxUserSource::Ms365;
            if synced && settings.personal_contacts.covers(oid.as_str(), upn) {
                jobs.push(Job {
                    mailbox: oid.to_string(),
                    book: ContactBook::Personal(user.id.clone()),
                    kind: personal_kind(oid.as_str()),
                });
            }
        }
    }
    report.personal_mailboxes = jobs.len();
    if settings.shared_mailbox.enabled {
        for oid in &targets.shared {
            jobs.push(Job {
                mailbox: oid.to_string(),
                book: ContactBook::Company(oid.to_string()),
                kind: shared_kind(oid.as_str()),
            });
        }
        report.shared_mailboxes = targets.shared.len();
    }
    Ok(jobs)
}

async fn run_jobs(
    ctx: &SyncContext,
    opts: &ContactOptions,
    jobs: Vec<Job>,
    report: &mut ContactReport,
) -> Result<(), SyncError> {
    let mut queue = jobs.into_iter();
    let mut ready: VecDeque<Prefetched> = VecDeque::new();
    let mut running: JoinSet<Finished> = JoinSet::new();
    loop {
        while running.len() < opts.mailbox_concurrency {
            if let Some(next) = ready.pop_front() {
                let ctx = ctx.clone();
                running.spawn(async move {
                    let job = next.job.clone();
                    Finished::Mailbox(job, sync_mailbox(&ctx, next).await)
                });
                continue;
            }
            let chunk: Vec<Job> = queue.by_ref().take(MAX_BATCH).collect();
            if chunk.is_empty() {
                break;
            }
            let (ctx, page_size) = (ctx.clone(), opts.page_size);
            running.spawn(async move { Finished::Group(open_group(&ctx, chunk, page_size).await) });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        match joined
            .map_err(|e| SyncError::InvalidOptions(format!("a contacts task failed: {e}")))?
        {
            Finished::Mailbox(job, result) => tally(report, &job, result)?,
            Finished::Group(opened) => {
                let (done, rest) = opened.map_err(store_only)?;
                for (job, outcome) in done {
                    tally(report, &job, Ok(outcome))?;
                }
                ready.extend(rest);
            }
        }
    }
    Ok(())
}

/// What a contacts task ends with.
enum Finished {
    /// One mailbox read page by page.
    Mailbox(Job, Result<Outcome, MailboxError>),
    /// A batch of mailboxes opened.
    Group(Result<Opened, MailboxError>),
}

/// The mailboxes a batch answered completely, written, and the rest.
type Opened = (Vec<(Job, Outcome)>, Vec<Prefetched>);

/// Opens up to twenty mailboxes with one `$batch` and writes those it answered completely.
async fn open_group(
    ctx: &SyncContext,
    chunk: Vec<Job>,
    page_size: u16,
) -> Result<Opened, MailboxError> {
    let prefetched = first_pages(ctx, chunk, page_size).await?;
    Ok(write_complete(ctx, prefetched).await?)
}

/// Only store failures stop the run; a mailbox's other failures skip that mailbox.
fn store_only(e: MailboxError) -> SyncError {
    match e {
        MailboxError::Store(e) => e.into(),
        other => SyncError::InvalidOptions(format!("{other:?}")),
    }
}

fn tally(
    report: &mut ContactReport,
    job: &Job,
    result: Result<Outcome, MailboxError>,
) -> Result<(), SyncError> {
    match result {
        Ok(o) => {
            report.created += o.created;
            report.updated += o.updated;
            report.unchanged += o.unchanged;
            report.removed += o.removed;
            report.full_listings += usize::from(o.full);
        }
        Err(MailboxError::NoMailbox) => no_mailbox(report, &job.mailbox),
        Err(MailboxError::Graph(e)) if e.is_no_mailbox() => no_mailbox(report, &job.mailbox),
        Err(MailboxError::Graph(e)) => {
            skip(report, &job.mailbox, format!("Microsoft Graph: {e}"));
        }
        Err(MailboxError::Incomplete) => skip(
            report,
            &job.mailbox,
            "the contacts delta round ended without a deltaLink".into(),
        ),
        Err(MailboxError::Store(e)) => return Err(e.into()),
    }
    Ok(())
}

/// One mailbox from where [`first_pages`] left it; an expired stored deltaLink falls back
/// to a full round compared with the store.
async fn sync_mailbox(ctx: &SyncContext, p: Prefetched) -> Result<Outcome, MailboxError> {
    let Prefetched { job, start, first } = p;
    let opening = match first {
        Some(FirstAnswer::NoMailbox) => return Err(MailboxError::NoMailbox),
        Some(FirstAnswer::Expired) => Err(MailboxError::Graph(GraphError::SyncStateNotFound)),
        Some(FirstAnswer::Page(page)) => Ok(RoundStart::Page(page)),
        None => Ok(RoundStart::Url(start.url.clone())),
    };
    let result = match opening {
        Ok(opening) => read_round(ctx, &job, opening, start.full, start.delta).await,
        Err(e) => Err(e),
    };
    match result {
        Ok((outcome, link)) => {
            save_link(ctx, &job, link).await?;
            Ok(outcome)
        }
        Err(MailboxError::Graph(GraphError::SyncStateNotFound)) if start.from_cursor => {
            tracing::info!(mailbox = %job.mailbox, "contacts delta token expired; full compare");
            ctx.store
                .clear_sync_cursor(&ctx.tenant_id, &job.kind)
                .await?;
            let Some(first_delta) = ctx.graph.contacts_delta_url(&job.mailbox) else {
                return Err(MailboxError::Graph(GraphError::SyncStateNotFound));
            };
            let (outcome, link) =
                read_round(ctx, &job, RoundStart::Url(first_delta), true, true).await?;
            save_link(ctx, &job, link).await?;
            Ok(outcome)
        }
        Err(e) => Err(e),
    }
}

async fn save_link(ctx: &SyncContext, job: &Job, link: Option<String>) -> Result<(), MailboxError> {
    if let Some(link) = link {
        ctx.store
            .save_sync_cursor(&ctx.tenant_id, &job.kind, &link, &cursor_fingerprint(job))
            .await?;
    }
    Ok(())
}

/// How a round begins: a URL to fetch, or a first page the batch already brought.
enum RoundStart {
    Url(String),
    Page(Page<Contact>),
}

/// Reads a round, applying each page. `full`: every contact is listed, so stored ones not
/// seen are removed at the end. `delta`: the round must end with a deltaLink (returned).
async fn read_round(
    ctx: &SyncContext,
    job: &Job,
    start: RoundStart,
    full: bool,
    delta: bool,
) -> Result<(Outcome, Option<String>), MailboxError> {
    let stream = |url: String| {
        ctx.graph
            .pages::<Contact>(url, "contacts")
            .for_mailbox(job.mailbox.clone())
    };
    let (mut first, mut pages) = match start {
        RoundStart::Url(url) => (None, Some(stream(url))),
        RoundStart::Page(page) => {
            let rest = page.next_link.clone().map(stream);
            (Some(page), rest)
        }
    };
    let mut seen = HashSet::new();
    let mut out = Outcome {
        full,
        ..Outcome::default()
    };
    let mut link = None;
    loop {
        let page = match (first.take(), pages.as_mut()) {
            (Some(page), _) => page,
            (None, Some(rest)) => match rest.next().await {
                Some(page) => page.map_err(MailboxError::Graph)?,
                None => break,
            },
            (None, None) => break,
        };
        if page.delta_link.is_some() {
            link = page.delta_link.clone();
        }
        apply_page(ctx, job, page, full, &mut seen, &mut out).await?;
    }
    if delta && link.is_none() {
        return Err(MailboxError::Incomplete);
    }
    if full {
        out.removed += ctx
            .store
            .delete_contacts_except(&ctx.tenant_id, &job.book, &seen)
            .await?;
    }
    Ok((out, link.filter(|_| delta)))
}

/// Writes one page: its contacts upserted, its removals deleted, one transaction each.
async fn apply_page(
    ctx: &SyncContext,
    job: &Job,
    page: Page<Contact>,
    full: bool,
    seen: &mut HashSet<String>,
    out: &mut Outcome,
) -> Result<(), MailboxError> {
    let tenant = &ctx.tenant_id;
    let mut upserts = Vec::with_capacity(page.value.len());
    let mut removed = Vec::new();
    for c in page.value {
        if c.id.is_empty() {
            continue;
        }
        if c.removed.is_some() {
            seen.remove(&c.id);
            removed.push(c.id);
            continue;
        }
        if full {
            seen.insert(c.id.clone());
        }
        let fields = map_contact(&c);
        upserts.push((c.id, fields));
    }
    let counts = ctx
        .store
        .upsert_contacts(tenant, &job.book, &upserts)
        .await?;
    out.created += counts.created;
    out.updated += counts.updated;
    out.unchanged += counts.unchanged;
    if !removed.is_empty() {
        out.removed += ctx
            .store
            .delete_contacts(tenant, &job.book, &removed)
            .await?;
    }
    Ok(())
}

fn no_mailbox(report: &mut ContactReport, mailbox: &str) {
    tracing::debug!(mailbox, "no mailbox; contacts not synced");
    report.no_mailbox += 1;
}

fn skip(report: &mut ContactReport, mailbox: &str, reason: String) {
    tracing::warn!(mailbox, %reason, "contacts of a mailbox skipped");
    report.skipped.push(ContactSkip {
        mailbox: mailbox.to_string(),
        reason,
    });
}

fn text(s: &Option<String>) -> String {
    s.as_deref().map(str::trim).unwrap_or("").to_string()
}

fn nth(values: &[String], i: usize) -> String {
    values
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .nth(i)
        .unwrap_or("")
        .to_string()
}

/// PortSIP's length limits (characters) of a contact's name, notes and other fields.
const MAX_NAME: usize = 64;
const MAX_NOTES: usize = 1024;
const MAX_FIELD: usize = 128;

/// A Graph contact in PortSIP's contact fields, cut to PortSIP's length limits. PortSIP
/// requires a name: without display, given or surname the e-mail address or first phone
/// number stands in.
pub fn map_contact(c: &Contact) -> ContactFields {
    let mut name = text(&c.display_name);
    if name.is_empty() {
        name = [text(&c.given_name), text(&c.surname)]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
    }
    let email = c
        .email_addresses
        .iter()
        .filter_map(|e| e.address.as_deref())
        .map(str::trim)
        .find(|a| !a.is_empty())
        .unwrap_or("")
        .to_string();
    let address = [&c.business_address, &c.home_address]
        .into_iter()
        .flatten()
        .find(|a| !a.is_empty())
        .map(format_address)
        .unwrap_or_default();
    let mut f = ContactFields {
        name,
        email,
        company: text(&c.company_name),
        title: text(&c.job_title),
        business: nth(&c.business_phones, 0),
        business2: nth(&c.business_phones, 1),
        mobile_phone: text(&c.mobile_phone),
        home_phone: nth(&c.home_phones, 0),
        home_phone2: nth(&c.home_phones, 1),
        address,
        notes: text(&c.personal_notes),
        ..ContactFields::default()
    };
    if f.name.is_empty() {
        f.name = [&f.email, &f.mobile_phone, &f.business, &f.home_phone]
            .into_iter()
            .find(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| "(no name)".into());
    }
    cut(&mut f.name, MAX_NAME);
    cut(&mut f.notes, MAX_NOTES);
    for field in [
        &mut f.email,
        &mut f.company,
        &mut f.title,
        &mut f.business,
        &mut f.business2,
        &mut f.mobile_phone,
        &mut f.home_phone,
        &mut f.home_phone2,
        &mut f.address,
    ] {
        cut(field, MAX_FIELD);
    }
    f
}

/// Keeps the first `max` characters.
fn cut(s: &mut String, max: usize) {
    if let Some((at, _)) = s.char_indices().nth(max) {
        s.truncate(at);
    }
}

/// `street, city, state postal, country`, empty parts left out.
fn format_address(a: &PhysicalAddress) -> String {
    let region = [text(&a.state), text(&a.postal_code)]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    [
        text(&a.street),
        text(&a.city),
        region,
        text(&a.country_or_region),
    ]
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>()
    .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::model::EmailAddress;

    #[test]
    fn maps_graph_fields_to_portsip_fields() {
        let c = Contact {
            id: "c1".into(),
            given_name: Some("Ada".into()),
            surname: Some("Lovelace".into()),
            email_addresses: vec![
                EmailAddress {
                    name: None,
                    address: Some(" ".into()),
                },
                EmailAddress {
                    name: None,
                    address: Some("ada@x.test".into()),
                },
            ],
            business_phones: vec!["1".into(), "".into(), "2".into()],
            home_phones: vec!["3".into()],
            mobile_phone: Some("4".into()),
            business_address: Some(PhysicalAddress::default()),
            home_address: Some(PhysicalAddress {
                street: Some("1 Main St".into()),
                city: Some("Springfield".into()),
                state: Some("IL".into()),
                postal_code: Some("62701".into()),
                country_or_region: Some("USA".into()),
            }),
            personal_notes: Some("note".into()),
            ..Contact::default()
        };
        let f = map_contact(&c);
        assert_eq!(f.name, "Ada Lovelace");
        assert_eq!(f.email, "ada@x.test");
        assert_eq!((f.business.as_str(), f.business2.as_str()), ("1", "2"));
        assert_eq!((f.home_phone.as_str(), f.home_phone2.as_str()), ("3", ""));
        assert_eq!(f.mobile_phone, "4");
        assert_eq!(f.address, "1 Main St, Springfield, IL 62701, USA");
        assert_eq!(f.notes, "note");
        let named = Contact {
            display_name: Some("Dr. Ada".into()),
            given_name: Some("Ada".into()),
            ..Contact::default()
        };
        assert_eq!(map_contact(&named).name, "Dr. Ada");
        let nameless = Contact {
            mobile_phone: Some("+1 555".into()),
            personal_notes: Some("é".repeat(2000)),
            ..Contact::default()
        };
        let f = map_contact(&nameless);
        assert_eq!(f.name, "+1 555");
        assert_eq!(f.notes.chars().count(), 1024);
        let long = Contact {
            display_name: Some("x".repeat(100)),
            ..Contact::default()
        };
        assert_eq!(map_contact(&long).name.len(), 64);
        assert_eq!(map_contact(&Contact::default()).name, "(no name)");
    }
}
