//! Microsoft Graph v1.0 client for the sync worker: users, group members, delta rounds,
//! Outlook contacts and photos, `$batch`, with Graph's throttling rules honoured
//! (`Retry-After`, 4 concurrent requests per mailbox) and the bearer token never sent
//! anywhere but the configured Graph host.
//!
//! - [`client`]: [`GraphClient`], the request pipeline (ids, token, timeout, retries), counters.
//! - [`retry`]: `Retry-After` parsing and jittered exponential backoff.
//! - [`paging`]: pages, `@odata.nextLink` / `@odata.deltaLink`, [`PageStream`].
//! - [`resources`]: first URLs of the collections the sync reads, photo calls.
//! - [`batch`]: JSON `$batch` with per-item throttling retries.
//! - [`subscriptions`]: change-notification subscriptions (create, renew, delete).
//! - [`mailbox`]: the per-mailbox concurrency limiter.
//! - [`model`]: `User`, `Contact`, `PhotoMeta`, `Page`.
//! - [`error`]: [`GraphError`], the typed failures.

pub(crate) mod batch;
pub(crate) mod client;
pub(crate) mod error;
pub(crate) mod mailbox;
pub(crate) mod model;
pub(crate) mod paging;
pub(crate) mod resources;
pub(crate) mod retry;
pub(crate) mod subscriptions;

#[cfg(test)]
mod tests;

pub use batch::{BatchRequest, BatchResponse, MAX_BATCH};
pub use client::DELTA_KIND;
pub use client::{GraphClient, GraphOptions, GraphStats, MAX_JSON_BODY};
pub use error::GraphError;
pub use mailbox::{MailboxLimiter, MailboxPermit};
pub use model::{
    CONTACT_FIELDS, Contact, EmailAddress, Page, PhotoMeta, PhysicalAddress, Removed, USER_FIELDS,
    User,
};
pub use paging::PageStream;
pub use resources::{DEFAULT_CONTACTS_FOLDER, MAX_CONTACTS_TOP, MAX_DIRECTORY_TOP};
