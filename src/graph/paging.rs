//! Collections and delta rounds: one page at a time, following `@odata.nextLink` until a
//! page carries `@odata.deltaLink` (delta) or no link (plain collections). Pages are handed
//! out as they arrive so a tenant with 100 000 users is never held in memory at once.
//! Links are absolute URLs chosen by the server; every one is checked against the Graph
//! origin both when it arrives (so a tampered link is never stored) and when it is followed
//! (so a stored link that was tampered with is never sent the token).

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use super::client::GraphClient;
use super::error::GraphError;
use super::model::Page;

impl GraphClient {
    /// Fetches one page of a collection or delta round.
    pub async fn get_page<T: DeserializeOwned>(
        &self,
        url_or_path: &str,
        kind: &'static str,
    ) -> Result<Page<T>, GraphError> {
        let page: Page<T> = self.get_json(url_or_path, kind).await?;
        for link in page.next_link.iter().chain(page.delta_link.iter()) {
            self.check_origin(link)?;
        }
        Ok(page)
    }

    /// [`GraphClient::get_page`] for an Outlook resource of `mailbox`, holding one of the
    /// mailbox's concurrency slots for the request.
    pub async fn get_mailbox_page<T: DeserializeOwned>(
        &self,
        mailbox: &str,
        url_or_path: &str,
        kind: &'static str,
    ) -> Result<Page<T>, GraphError> {
        let _slot = self.mailboxes().acquire(mailbox).await;
        self.get_page(url_or_path, kind).await
    }

    /// Pages of a collection or delta round starting at `first` (a path or a stored
    /// nextLink/deltaLink).
    pub fn pages<T: DeserializeOwned>(&self, first: String, kind: &'static str) -> PageStream<T> {
        PageStream {
            client: self.clone(),
            next: Some(first),
            kind,
            mailbox: None,
            delta_link: None,
            failed: None,
            _item: PhantomData,
        }
    }
}

/// Pages fetched one by one. After an error or the last page, `next` returns `None`.
pub struct PageStream<T> {
    client: GraphClient,
    next: Option<String>,
    kind: &'static str,
    mailbox: Option<String>,
    delta_link: Option<String>,
    /// The URL whose fetch failed, so the caller can persist it and resume there.
    failed: Option<String>,
    _item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> PageStream<T> {
    /// Counts every page against `mailbox`'s concurrency limit (contacts of a mailbox).
    pub fn for_mailbox(mut self, mailbox: impl Into<String>) -> Self {
        self.mailbox = Some(mailbox.into());
        self
    }

    /// The next page, or `None` when the round is complete (or failed).
    pub async fn next(&mut self) -> Option<Result<Page<T>, GraphError>> {
        let url = self.next.take()?;
        let page = match &self.mailbox {
            Some(mailbox) => {
                self.client
                    .get_mailbox_page::<T>(mailbox, &url, self.kind)
                    .await
            }
            None => self.client.get_page::<T>(&url, self.kind).await,
        };
        match &page {
            Ok(page) => {
                self.next = page.next_link.clone();
                if page.delta_link.is_some() {
                    self.delta_link = page.delta_link.clone();
                }
            }
            Err(_) => self.failed = Some(url),
        }
        Some(page)
    }

    /// The deltaLink of the round, once its last page has been read: where the next
    /// round starts.
    pub fn delta_link(&self) -> Option<&str> {
        self.delta_link.as_deref()
    }

    /// Where the round stands: the URL the next call fetches, or the one that failed.
    /// Persist it to resume an interrupted round later.
    pub fn pending_link(&self) -> Option<&str> {
        self.next.as_deref().or(self.failed.as_deref())
    }
}
