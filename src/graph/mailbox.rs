//! Per-mailbox concurrency limit for Outlook resources (photos, contacts). Exchange Online
//! allows at most 4 concurrent requests per mailbox and answers the fifth with 429, so the
//! client queues locally instead of burning retries. One semaphore per mailbox, created on
//! first use and dropped again when nobody holds or waits for it: a sync over 50 000
//! mailboxes must not leave 50 000 semaphores behind.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

type Slots = Arc<Mutex<HashMap<String, Arc<Semaphore>>>>;

/// Hands out permits per mailbox id, `per_mailbox` at a time.
#[derive(Debug, Clone)]
pub struct MailboxLimiter {
    per_mailbox: usize,
    slots: Slots,
}

/// Held while requests to one mailbox are in flight; releasing it may free the mailbox's
/// entry.
#[derive(Debug)]
pub struct MailboxPermit {
    slots: Slots,
    mailbox: String,
    permit: Option<OwnedSemaphorePermit>,
}

impl MailboxLimiter {
    /// `per_mailbox` is raised to 1 when 0: a limit of zero would block forever.
    pub fn new(per_mailbox: usize) -> Self {
        MailboxLimiter {
            per_mailbox: per_mailbox.max(1),
            slots: Arc::default(),
        }
    }

    /// The configured number of concurrent requests per mailbox.
    pub fn per_mailbox(&self) -> usize {
        self.per_mailbox
    }

    /// Waits for one slot of `mailbox`.
    pub async fn acquire(&self, mailbox: &str) -> MailboxPermit {
        self.acquire_n(mailbox, 1).await
    }

    /// Waits for `n` slots of each mailbox in `counts` (capped at the limit), in key order:
    /// every caller taking several mailboxes in the same order cannot deadlock another.
    pub async fn acquire_all(&self, counts: &BTreeMap<String, usize>) -> Vec<MailboxPermit> {
        let mut permits = Vec::with_capacity(counts.len());
        for (mailbox, n) in counts {
            permits.push(self.acquire_n(mailbox, *n).await);
        }
        permits
    }

    async fn acquire_n(&self, mailbox: &str, n: usize) -> MailboxPermit {
        let n = u32::try_from(n.clamp(1, self.per_mailbox)).unwrap_or(u32::MAX);
        let semaphore = lock(&self.slots)
            .entry(mailbox.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_mailbox)))
            .clone();
        // The guard exists before the wait so that a cancelled wait still runs its cleanup;
        // `acquire` is declared after it and so is dropped first, releasing its Arc.
        let mut guard = MailboxPermit {
            slots: self.slots.clone(),
            mailbox: mailbox.to_string(),
            permit: None,
        };
        let acquire = semaphore.acquire_many_owned(n);
        guard.permit = Some(acquire.await.expect("mailbox semaphores are never closed"));
        guard
    }

    /// How many mailboxes currently have an entry (in use or waited for).
    pub fn tracked(&self) -> usize {
        lock(&self.slots).len()
    }

    /// Free slots of `mailbox` right now.
    pub fn available(&self, mailbox: &str) -> usize {
        lock(&self.slots)
            .get(mailbox)
            .map_or(self.per_mailbox, |s| s.available_permits())
    }
}

impl MailboxPermit {
    /// The mailbox this permit is for.
    pub fn mailbox(&self) -> &str {
        &self.mailbox
    }
}

impl Drop for MailboxPermit {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut slots = lock(&self.slots);
        // Holders and waiters each own a clone of the Arc, and clones are only taken under
        // this lock: a count of one means the map's is the last reference.
        if slots
            .get(&self.mailbox)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            slots.remove(&self.mailbox);
        }
    }
}

fn lock(slots: &Slots) -> MutexGuard<'_, HashMap<String, Arc<Semaphore>>> {
    slots.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Polls a future exactly once: `timeout` polls its inner future before the deadline.
    async fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
        tokio::time::timeout(Duration::ZERO, f).await.ok()
    }

    #[tokio::test]
    async fn at_most_four_per_mailbox_and_entries_cleaned_up() {
        let limiter = MailboxLimiter::new(4);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(limiter.acquire("a").await);
        }
        assert_eq!(limiter.available("a"), 0);
        assert!(
            poll_once(limiter.acquire("a")).await.is_none(),
            "fifth must wait"
        );
        let other = poll_once(limiter.acquire("b")).await;
        assert!(other.is_some(), "other mailboxes are independent");
        assert_eq!(limiter.tracked(), 2);
        drop(other);
        assert_eq!(limiter.tracked(), 1);
        held.pop();
        let fifth = poll_once(limiter.acquire("a"))
            .await
            .expect("a slot was freed");
        drop(fifth);
        held.clear();
        assert_eq!(limiter.tracked(), 0, "idle mailboxes leave no entry");
    }

    #[tokio::test]
    async fn cancelled_waiter_leaves_no_entry() {
        let limiter = MailboxLimiter::new(1);
        let held = limiter.acquire("m").await;
        let mut waiter = Box::pin(limiter.acquire("m"));
        assert!(poll_once(&mut waiter).await.is_none());
        // The holder leaves while the waiter still counts: the entry must stay...
        drop(held);
        assert_eq!(limiter.tracked(), 1);
        // ...and go when the waiter gives up without ever running again.
        drop(waiter);
        assert_eq!(limiter.tracked(), 0);
    }

    #[tokio::test]
    async fn acquire_all_takes_counts_in_order() {
        let limiter = MailboxLimiter::new(4);
        let counts = BTreeMap::from([("b".to_string(), 3), ("a".to_string(), 9)]);
        let permits = limiter.acquire_all(&counts).await;
        assert_eq!(
            permits
                .iter()
                .map(MailboxPermit::mailbox)
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(limiter.available("a"), 0, "capped at the limit");
        assert_eq!(limiter.available("b"), 1);
        drop(permits);
        assert_eq!(limiter.tracked(), 0);
        assert_eq!(MailboxLimiter::new(0).per_mailbox(), 1);
    }
}
