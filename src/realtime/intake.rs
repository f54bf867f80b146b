//! Turning a received notification batch into work, from the store alone: a notification
//! counts only when its subscription id is one of the gateway's active subscriptions and
//! its `clientState` matches the one kept sealed for it (compared in constant time). So a
//! flood of forged notifications costs store reads and a metric, never a Graph request.
//!
//! A trusted change notification queues its subscription's target for a targeted run; a
//! lifecycle notification marks the subscription for reauthorization, forgets a removed
//! one (the next reconciliation creates it again), or queues the target whose
//! notifications were missed.

use std::collections::{BTreeSet, HashMap};

use super::wire::{LifecycleEvent, Notification};
use crate::ids::TenantId;
use crate::keyring::Keyring;
use crate::metrics::{Metrics, OutcomeLabels};
use crate::store::{Store, StoreError, StoredSubscription, client_state_name};

/// Which URL a batch came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Changes,
    Lifecycle,
}

/// A parsed batch waiting to be processed.
#[derive(Debug)]
pub struct Batch {
    pub channel: Channel,
    pub items: Vec<Notification>,
}

/// What a processed batch asks of the rest of the gateway.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Tenants with newly queued targets.
    pub queued: BTreeSet<TenantId>,
    /// Tenants whose subscriptions need reconciling (reauthorize, recreate).
    pub maintenance: BTreeSet<TenantId>,
}

/// Verifies and acts on a batch; see the module documentation.
pub async fn process(
    store: &Store,
    keyring: &Keyring,
    metrics: &Metrics,
    batch: Batch,
) -> Result<Effects, StoreError> {
    let mut trusted: HashMap<String, Option<StoredSubscription>> = HashMap::new();
    let mut effects = Effects::default();
    let mut queue = BTreeSet::new();
    for item in batch.items {
        if !trusted.contains_key(&item.subscription_id) {
            let sub = store.subscription(&item.subscription_id).await?;
            trusted.insert(item.subscription_id.clone(), sub);
        }
        let Some(sub) = trusted[&item.subscription_id].as_ref() else {
            count(metrics, "unknown_subscription");
            continue;
        };
        if !client_state_matches(keyring, sub, item.client_state.as_deref()) {
            count(metrics, "client_state_mismatch");
            continue;
        }
        count(metrics, "accepted");
        match (batch.channel, lifecycle(&item)) {
            (Channel::Changes, _) | (Channel::Lifecycle, Some(LifecycleEvent::Missed)) => {
                queue.insert((sub.tenant_id.clone(), sub.target.clone()));
            }
            (Channel::Lifecycle, Some(LifecycleEvent::ReauthorizationRequired)) => {
                store.mark_reauthorize(&sub.id).await?;
                effects.maintenance.insert(sub.tenant_id.clone());
            }
            (Channel::Lifecycle, Some(LifecycleEvent::SubscriptionRemoved)) => {
                store.delete_subscription(&sub.id).await?;
                effects.maintenance.insert(sub.tenant_id.clone());
            }
            (Channel::Lifecycle, None) => {
                tracing::info!(subscription = %sub.id, event = ?item.lifecycle_event, "unknown lifecycle event ignored");
            }
        }
    }
    let now_ms = now_ms();
    for (tenant, target) in queue {
        store.queue_realtime(&tenant, &target, now_ms).await?;
        effects.queued.insert(tenant);
    }
    for tenant in &effects.queued {
        store.note_notification(tenant).await?;
    }
    Ok(effects)
}

fn lifecycle(item: &Notification) -> Option<LifecycleEvent> {
    item.lifecycle_event
        .as_deref()
        .and_then(LifecycleEvent::parse)
}

fn client_state_matches(keyring: &Keyring, sub: &StoredSubscription, given: Option<&str>) -> bool {
    let Some(given) = given else { return false };
    match keyring.open_sealed(&client_state_name(&sub.id), &sub.sealed_client_state) {
        Ok(expected) => {
            aws_lc_rs::constant_time::verify_slices_are_equal(&expected, given.as_bytes()).is_ok()
        }
        Err(e) => {
            tracing::error!(subscription = %sub.id, error = %e, "the clientState of a subscription does not open");
            false
        }
    }
}

/// Counts a notification outcome (one of [`crate::metrics::NOTIFICATION_OUTCOMES`]).
pub fn count(metrics: &Metrics, outcome: &'static str) {
    metrics
        .notifications
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
}

/// Epoch milliseconds (the queue's clock: debounce windows are seconds long).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
