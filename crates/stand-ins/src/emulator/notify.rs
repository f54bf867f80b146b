//! Delivering what subscriptions ask for, as Graph does
//! (learn.microsoft.com/graph/change-notifications-delivery-webhooks): the validation
//! handshake before a subscription is created, change notifications when the directory or
//! a mailbox changes through the control API, and lifecycle notifications on demand.
//!
//! A change is delivered from a spawned task, never under the tenant's lock: the mutation
//! returns at once. A delivery that fails (no 2xx, no connection) is tried again a few
//! times with a short backoff, then counted as failed; Graph keeps trying for hours, which
//! tests have no use for. Faults: a delay before each delivery, and `drop_next` to lose
//! the next notifications outright (a notification Microsoft never sends).
//!
//! The client speaks HTTPS only. Tests route the notification host to a loopback socket
//! ([`Emulator::route_notifications`]) and trust their own CA
//! ([`Emulator::trust_notification_ca`]), so the gateway is reached exactly as Microsoft
//! would reach it: by name, over TLS, with a certificate that must verify.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use super::Emulator;
use super::graph::GraphError;
use super::model::EmulatorError;
use super::state::lock;
use super::subscriptions::{Subscription, Watched};
use super::util::{guid, iso};

/// Graph's limit for the validation answer.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Graph counts a notification delivered on a 2xx within this.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts per notification.
const ATTEMPTS: u32 = 3;

/// A subscription as the control API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionInfo {
    pub id: String,
    pub resource: String,
    pub change_type: String,
    pub client_state: Option<String>,
    pub notification_url: String,
    pub lifecycle_notification_url: Option<String>,
    /// Epoch seconds (emulator clock).
    pub expiration: i64,
    pub latest_supported_tls_version: Option<String>,
}

/// Faults of notification delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationFaults {
    /// Waited before each delivery.
    pub delay: Duration,
    /// The next this many change notifications are lost (never sent).
    pub drop_next: u32,
}

/// What delivery has done since the emulator started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NotificationStats {
    /// Validation requests answered correctly.
    pub validations: u64,
    /// Validation requests that failed (the subscription was refused).
    pub validation_failures: u64,
    /// Change and lifecycle notifications the endpoint accepted (2xx).
    pub delivered: u64,
    /// Notifications lost on purpose (`drop_next`).
    pub dropped: u64,
    /// Notifications given up after every attempt failed.
    pub failed: u64,
}

/// A lifecycle event to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleEvent {
    ReauthorizationRequired,
    /// Also removes the subscription.
    SubscriptionRemoved,
    Missed,
}

impl LifecycleEvent {
    fn as_str(self) -> &'static str {
        match self {
            LifecycleEvent::ReauthorizationRequired => "reauthorizationRequired",
            LifecycleEvent::SubscriptionRemoved => "subscriptionRemoved",
            LifecycleEvent::Missed => "missed",
        }
    }

    pub fn parse(text: &str) -> Option<LifecycleEvent> {
        [
            LifecycleEvent::ReauthorizationRequired,
            LifecycleEvent::SubscriptionRemoved,
            LifecycleEvent::Missed,
        ]
        .into_iter()
        .find(|e| e.as_str().eq_ignore_ascii_case(text))
    }
}

/// How deliveries reach their endpoints.
#[derive(Default)]
pub(crate) struct Delivery {
    routes: Mutex<Vec<(String, SocketAddr)>>,
    roots: Mutex<Vec<String>>,
    client: Mutex<Option<reqwest::Client>>,
    faults: Mutex<NotificationFaults>,
    stats: Mutex<NotificationStats>,
}

impl Delivery {
    fn client(&self) -> Result<reqwest::Client, String> {
        if let Some(client) = lock(&self.client).as_ref() {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(VALIDATION_TIMEOUT);
        for (host, addr) in lock(&self.routes).iter() {
            builder = builder.resolve(host, *addr);
        }
        for pem in lock(&self.roots).iter() {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| format!("a trusted CA is not PEM: {e}"))?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        *lock(&self.client) = Some(client.clone());
        Ok(client)
    }

    fn count(&self, f: impl FnOnce(&mut NotificationStats)) {
        f(&mut lock(&self.stats));
    }
}

impl Emulator {
    /// Deliveries to `host` go to `addr` (name resolution for the notification client).
    pub fn route_notifications(&self, host: &str, addr: SocketAddr) {
        let d = &self.inner.delivery;
        lock(&d.routes).push((host.to_string(), addr));
        *lock(&d.client) = None;
    }

    /// Trusts `pem` (one or more certificates) as a root for deliveries.
    pub fn trust_notification_ca(&self, pem: &str) {
        let d = &self.inner.delivery;
        lock(&d.roots).push(pem.to_string());
        *lock(&d.client) = None;
    }

    /// Test mode: every subscription's expiry is clamped to now + `cap` (see the
    /// `subscriptions` module); `None` restores Microsoft's limits.
    pub fn set_subscription_lifetime_cap(&self, cap: Option<Duration>) {
        let secs = cap.map(|c| i64::try_from(c.as_secs().max(1)).unwrap_or(i64::MAX));
        *lock(&self.inner.subscriptions.cap_secs) = secs;
    }

    pub fn set_notification_faults(&self, faults: NotificationFaults) {
        *lock(&self.inner.delivery.faults) = faults;
    }

    pub fn notification_stats(&self) -> NotificationStats {
        *lock(&self.inner.delivery.stats)
    }

    /// The live subscriptions of a tenant.
    pub fn subscriptions(&self, directory_id: &str) -> Vec<SubscriptionInfo> {
        (self.live(directory_id).into_iter())
            .map(|s| s.info)
            .collect()
    }

    /// Sends a lifecycle notification for a live subscription (and, for
    /// `SubscriptionRemoved`, removes it first), waiting for the delivery.
    pub async fn fire_lifecycle(
        &self,
        directory_id: &str,
        subscription_id: &str,
        event: LifecycleEvent,
    ) -> Result<(), EmulatorError> {
        let sub = (self.live(directory_id).into_iter())
            .find(|s| s.info.id == subscription_id)
            .ok_or_else(|| EmulatorError::Invalid(format!("no subscription {subscription_id}")))?;
        let Some(url) = sub.info.lifecycle_notification_url.clone() else {
            return Err(EmulatorError::Invalid(
                "the subscription has no lifecycleNotificationUrl".into(),
            ));
        };
        if event == LifecycleEvent::SubscriptionRemoved {
            lock(&self.inner.subscriptions.subs).retain(|s| s.info.id != subscription_id);
        }
        let body = json!({"value": [{
            "subscriptionId": sub.info.id,
            "subscriptionExpirationDateTime": iso(sub.info.expiration),
            "tenantId": sub.directory,
            "clientState": sub.info.client_state,
            "lifecycleEvent": event.as_str(),
        }]});
        self.deliver(url, body).await;
        Ok(())
    }

    /// The validation handshake with `url`; the create fails with Graph's error when the
    /// endpoint does not echo the token in time.
    pub(crate) async fn validate_endpoint(&self, url: &str) -> Result<(), GraphError> {
        let d = &self.inner.delivery;
        let token = format!(
            "Validation: Testing client application reachability for subscription Request-Id: {}",
            guid()
        );
        let ok = match d.client() {
            Ok(client) => {
                let sent = client
                    .post(url)
                    .query(&[("validationToken", &token)])
                    .header("content-type", "text/plain; charset=utf-8")
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == reqwest::StatusCode::OK => {
                        r.text().await.is_ok_and(|body| body == token)
                    }
                    _ => false,
                }
            }
            Err(_) => false,
        };
        if ok {
            d.count(|s| s.validations += 1);
            return Ok(());
        }
        d.count(|s| s.validation_failures += 1);
        Err(GraphError::bad_request(
            "ValidationError",
            format!(
                "Subscription validation request failed. Notification endpoint must respond \
                 with 200 OK to validation request. ({url})"
            ),
        ))
    }

    /// Notifies the subscriptions watching users of a change of user `user_id`.
    pub(crate) fn notify_user(&self, directory: &str, user_id: &str, change: &str) {
        let resource = format!("Users/{user_id}");
        let data = json!({"@odata.type": "#Microsoft.Graph.User", "@odata.id": resource,
            "id": user_id, "organizationId": directory});
        self.notify(directory, |w| *w == Watched::Users, change, &resource, data);
    }

    /// Notifies the subscriptions watching the contacts of `mailbox` (user id).
    pub(crate) fn notify_contact(
        &self,
        directory: &str,
        mailbox: &str,
        contact: &str,
        change: &str,
    ) {
        let resource = format!("Users/{mailbox}/Contacts/{contact}");
        let data = json!({"@odata.type": "#Microsoft.Graph.Contact",
            "@odata.id": resource, "id": contact});
        let watches =
            |w: &Watched| matches!(w, Watched::Contacts(m) if m.eq_ignore_ascii_case(mailbox));
        self.notify(directory, watches, change, &resource, data);
    }

    fn notify(
        &self,
        directory: &str,
        watches: impl Fn(&Watched) -> bool,
        change: &str,
        resource: &str,
        data: Value,
    ) {
        let subs: Vec<Subscription> = (self.live(directory).into_iter())
            .filter(|s| watches(&s.watched) && s.change_types.iter().any(|t| t == change))
            .collect();
        for sub in subs {
            if self.take_drop() {
                continue;
            }
            let body = json!({"value": [{
                "id": guid(),
                "subscriptionId": sub.info.id,
                "subscriptionExpirationDateTime": iso(sub.info.expiration),
                "clientState": sub.info.client_state,
                "changeType": change,
                "resource": resource,
                "tenantId": sub.directory,
                "resourceData": data,
            }]});
            let (emu, url) = (self.clone(), sub.info.notification_url.clone());
            // Off the caller's task (and lock): a mutation returns before delivery.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { emu.deliver(url, body).await });
            }
        }
    }

    /// True when this notification is to be lost (`drop_next`).
    fn take_drop(&self) -> bool {
        let d = &self.inner.delivery;
        let mut faults = lock(&d.faults);
        if faults.drop_next == 0 {
            return false;
        }
        faults.drop_next -= 1;
        drop(faults);
        d.count(|s| s.dropped += 1);
        true
    }

    async fn deliver(&self, url: String, body: Value) {
        let d = &self.inner.delivery;
        let delay = lock(&d.faults).delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        for attempt in 0..ATTEMPTS {
            let accepted = match d.client() {
                Ok(client) => client
                    .post(&url)
                    .timeout(DELIVERY_TIMEOUT)
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
                Err(_) => false,
            };
            if accepted {
                d.count(|s| s.delivered += 1);
                return;
            }
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        d.count(|s| s.failed += 1);
    }
}
