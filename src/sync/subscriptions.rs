//! The tenant's Graph change-notification subscriptions, kept in step with its settings:
//! one on `users` (changeType `updated,deleted`; Microsoft reports creations as
//! updates), one per shared mailbox's contacts, and one per personal mailbox while the
//! mailboxes in scope number at most `realtime.max_mailbox_subscriptions`.
//!
//! [`wanted`] and [`plan`] are pure: what the tenant should have and what to do about what
//! it has (create, renew, recreate, delete). [`reconcile`] carries the plan out against
//! Graph and records it; the worker calls it under the tenant's sync lease, so of several
//! instances exactly one manages a tenant's subscriptions. A create that fails is recorded
//! with the time to try again, so an unreachable notification URL costs one Graph request
//! per back-off period, never one per check, and scheduled sync goes on.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;

use super::{SyncContext, SyncError};
use crate::graph::GraphError;
use crate::graph::subscriptions::{NewSubscription, expiry_text, explain, lifetime_for};
use crate::ids::{ObjectId, TenantId};
use crate::keyring::Keyring;
use crate::settings::Ms365Settings;
use crate::store::{PbxUserSource, Store, StoreError, StoredSubscription, client_state_name};

/// A failed create is tried again after this long.
pub const RETRY_AFTER_FAILURE: i64 = 15 * 60;
/// A mailbox Graph cannot serve (no Exchange Online licence) is asked again after a day.
pub const RETRY_NO_MAILBOX: i64 = 24 * 3600;
/// Renewal never waits until less than this is left.
const MIN_RENEW_MARGIN: i64 = 30;

/// The URLs Graph delivers to: the pbx listener's public URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationUrls {
    pub changes: String,
    pub lifecycle: String,
}

impl NotificationUrls {
    /// `{public_url}/ms365/notifications` and `/ms365/notifications/lifecycle`.
    pub fn for_public_url(public_url: &str) -> NotificationUrls {
        let base = public_url.trim_end_matches('/');
        NotificationUrls {
            changes: format!("{base}/ms365/notifications"),
            lifecycle: format!("{base}/ms365/notifications/lifecycle"),
        }
    }
}

/// A subscription the tenant should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// `users`, `shared:{oid}` or `personal:{oid}` (what a notification queues).
    pub target: String,
    pub resource: String,
    pub change_type: &'static str,
}

/// What the tenant should have, and a note when personal mailboxes were left out.
pub fn wanted(settings: &Ms365Settings, mailboxes: &Mailboxes) -> (Vec<Wanted>, Option<String>) {
    let (shared, personal) = (&mailboxes.shared, &mailboxes.personal);
    let on = settings.realtime.enabled && settings.users.enabled && settings.is_configured();
    if !on {
        return (Vec::new(), None);
    }
    let mut out = vec![Wanted {
        target: "users".into(),
        resource: "users".into(),
        change_type: "updated,deleted",
    }];
    let contacts = |kind: &str, oid: &String| Wanted {
        target: format!("{kind}:{oid}"),
        resource: format!("users/{oid}/contacts"),
        change_type: "created,updated,deleted",
    };
    if settings.shared_mailbox.enabled {
        out.extend(shared.iter().map(|oid| contacts("shared", oid)));
    }
    let mut note = None;
    if settings.personal_contacts.enabled {
        let max = settings.realtime.max_mailbox_subscriptions as usize;
        let in_scope = out.len() - 1 + mailboxes.personal_in_scope;
        if in_scope <= max {
            out.extend(personal.iter().map(|oid| contacts("personal", oid)));
        } else {
            note = Some(format!(
                "personal contacts of {} mailboxes follow the schedule: more mailboxes than \
                 realtime.max_mailbox_subscriptions ({max})",
                mailboxes.personal_in_scope
            ));
        }
    }
    (out, note)
}

/// One step of a reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create(Wanted),
    Renew(StoredSubscription),
    /// At Graph (when active) and in the store.
    Delete(StoredSubscription),
}

/// What to do about `stored` to reach `wanted` at `now` (epoch seconds). An active
/// subscription is renewed once half the lifetime Graph granted has passed (and always
/// when Microsoft asked for reauthorization); one past its expiry is created again.
pub fn plan(wanted: &[Wanted], stored: &[StoredSubscription], now: i64) -> Vec<Action> {
    let mut actions = Vec::new();
    for s in stored {
        if !wanted.iter().any(|w| w.target == s.target) {
            actions.push(Action::Delete(s.clone()));
        }
    }
    for w in wanted {
        match stored.iter().find(|s| s.target == w.target) {
            None => actions.push(Action::Create(w.clone())),
            Some(s) if !s.active || s.expires_at <= now => {
                if s.expires_at <= now {
                    actions.push(Action::Create(w.clone()));
                }
            }
            Some(s) => {
                let granted = (s.expires_at - s.updated_at).max(0);
                let left = s.expires_at - now;
                if s.reauthorize || left < (granted / 2).max(MIN_RENEW_MARGIN) {
                    actions.push(Action::Renew(s.clone()));
                }
            }
        }
    }
    actions
}

/// The mailboxes a tenant's contacts come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mailboxes {
    /// Shared mailboxes (object ids).
    pub shared: Vec<String>,
    /// Personal mailboxes in scope; empty when they cannot all be subscribed.
    pub personal: Vec<String>,
    /// How many personal mailboxes are in scope (counted, not listed, when too many).
    pub personal_in_scope: usize,
}

/// The shared mailboxes (company books of the last runs) and the personal mailboxes in
/// scope, from the store alone.
pub async fn mailboxes(
    store: &Store,
    tenant: &TenantId,
    settings: &Ms365Settings,
) -> Result<Mailboxes, StoreError> {
    let shared = if settings.shared_mailbox.enabled {
        store.contact_owners(tenant, true).await?
    } else {
        Vec::new()
    };
    let mut personal = Vec::new();
    // A large tenant's personal mailboxes are never subscribed: know it without reading
    // every user (this runs every check interval). With scope ALL the count is exact.
    let all = settings.personal_contacts.sync_type == crate::settings::SyncType::All;
    let counted = if settings.personal_contacts.enabled && all {
        store.count_synced_users(tenant).await? as usize
    } else {
        0
    };
    let limit = settings.realtime.max_mailbox_subscriptions as usize;
    if settings.personal_contacts.enabled && all && shared.len() + counted > limit {
        return Ok(Mailboxes {
            shared,
            personal,
            personal_in_scope: counted,
        });
    }
    if settings.personal_contacts.enabled {
        let upns: std::collections::HashMap<ObjectId, String> = (store.directory_users(tenant))
            .await?
            .into_iter()
            .map(|d| (d.oid, d.upn))
            .collect();
        for u in store.pbx_users(tenant).await? {
            let Some(oid) = u.ms365_oid else { continue };
            let upn = upns.get(&oid).unwrap_or(&u.username);
            if u.enabled
                && u.source == PbxUserSource::Ms365
                && settings.personal_contacts.covers(oid.as_str(), upn)
            {
                personal.push(oid.into());
            }
        }
    }
    let personal_in_scope = personal.len();
    Ok(Mailboxes {
        shared,
        personal,
        personal_in_scope,
    })
}

/// The actions due for the tenant now (empty: nothing to do), from the store alone.
pub async fn due(store: &Store, tenant: &TenantId, now: i64) -> Result<Vec<Action>, StoreError> {
    let settings = store.ms365_settings(tenant).await?;
    let stored = store.subscriptions(tenant).await?;
    if stored.is_empty() && !(settings.realtime.enabled && settings.users.enabled) {
        return Ok(Vec::new());
    }
    let (wanted, _) = wanted(&settings, &mailboxes(store, tenant, &settings).await?);
    Ok(plan(&wanted, &stored, now))
}

/// What a reconciliation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub created: usize,
    pub renewed: usize,
    pub deleted: usize,
    pub failed: usize,
    /// Active subscriptions afterwards.
    pub active: usize,
}

/// Carries out what is due and records how real-time updates stand (see the module).
pub async fn reconcile(
    ctx: &SyncContext,
    keyring: &Keyring,
    urls: &NotificationUrls,
) -> Result<ReconcileReport, SyncError> {
    let (store, tenant) = (&ctx.store, &ctx.tenant_id);
    let settings = store.ms365_settings(tenant).await?;
    let now = crate::store::now_epoch();
    let stored = store.subscriptions(tenant).await?;
    let (wanted, note) = wanted(&settings, &mailboxes(store, tenant, &settings).await?);
    let mut report = ReconcileReport::default();
    let mut failures = Vec::new();
    for action in plan(&wanted, &stored, now) {
        if let Err(reason) = carry_out(ctx, keyring, urls, action, &mut report).await? {
            failures.push(reason);
        }
    }
    report.active = (store.subscriptions(tenant).await?.iter())
        .filter(|s| s.active)
        .count();
    let message = describe(&settings, &report, &failures, note.as_deref());
    let renewed = report.created + report.renewed > 0;
    store
        .set_realtime_status(tenant, failures.is_empty(), &message, renewed)
        .await?;
    Ok(report)
}

/// The status line of a reconciliation.
fn describe(
    settings: &Ms365Settings,
    r: &ReconcileReport,
    failures: &[String],
    note: Option<&str>,
) -> String {
    if !settings.realtime.enabled {
        return "off: realtime.enabled is false".into();
    }
    if !settings.users.enabled {
        return "off: user sync is off".into();
    }
    let mut line = match (r.active, failures.first()) {
        (0, Some(reason)) => format!("off: subscription could not be created: {reason}"),
        (n, Some(reason)) => format!("on ({n} subscriptions), but: {reason}"),
        (n, None) => format!("on ({n} subscriptions)"),
    };
    if let Some(note) = note {
        line.push_str("; ");
        line.push_str(note);
    }
    line
}

/// One action; `Ok(Err(reason))` is a Graph failure recorded for the status.
async fn carry_out(
    ctx: &SyncContext,
    keyring: &Keyring,
    urls: &NotificationUrls,
    action: Action,
    report: &mut ReconcileReport,
) -> Result<Result<(), String>, StoreError> {
    let store = &ctx.store;
    match action {
        Action::Create(w) => create(ctx, keyring, urls, &w, report).await,
        Action::Renew(s) => {
            let expiry = expiry_text(lifetime_for(&s.resource));
            match ctx.graph.renew_subscription(&s.id, &expiry).await {
                Ok(sub) => {
                    let at = sub.expires_at().unwrap_or(s.expires_at);
                    store.renew_subscription(&s.id, at).await?;
                    report.renewed += 1;
                    Ok(Ok(()))
                }
                Err(e) if e.is_not_found() => {
                    // Gone at Microsoft (expired, removed): make a new one.
                    store.delete_subscription(&s.id).await?;
                    let w = Wanted {
                        target: s.target.clone(),
                        resource: s.resource.clone(),
                        change_type: change_type_of(&s.target),
                    };
                    create(ctx, keyring, urls, &w, report).await
                }
                Err(e) => Ok(Err(explain(&e))),
            }
        }
        Action::Delete(s) => {
            if s.active
                && let Err(e) = ctx.graph.delete_subscription(&s.id).await
            {
                return Ok(Err(format!("cannot delete subscription {}: {e}", s.id)));
            }
            store.delete_subscription(&s.id).await?;
            report.deleted += 1;
            Ok(Ok(()))
        }
    }
}

fn change_type_of(target: &str) -> &'static str {
    if target == "users" {
        "updated,deleted"
    } else {
        "created,updated,deleted"
    }
}

async fn create(
    ctx: &SyncContext,
    keyring: &Keyring,
    urls: &NotificationUrls,
    w: &Wanted,
    report: &mut ReconcileReport,
) -> Result<Result<(), String>, StoreError> {
    let client_state = random_client_state();
    let new = NewSubscription {
        change_type: w.change_type.into(),
        notification_url: urls.changes.clone(),
        lifecycle_notification_url: urls.lifecycle.clone(),
        resource: w.resource.clone(),
        expiration_date_time: expiry_text(lifetime_for(&w.resource)),
        client_state: client_state.clone(),
        latest_supported_tls_version: "v1_2",
    };
    let now = crate::store::now_epoch();
    let answer = ctx.graph.create_subscription(&new).await;
    let record = |id: String, active, expires_at, message: String| StoredSubscription {
        sealed_client_state: keyring.seal(&client_state_name(&id), client_state.as_bytes()),
        id,
        tenant_id: ctx.tenant_id.clone(),
        target: w.target.clone(),
        resource: w.resource.clone(),
        active,
        expires_at,
        reauthorize: false,
        message,
        updated_at: now,
    };
    let answer = answer.and_then(|s| Ok((s.expires_at()?, s)));
    match answer {
        Ok((expires_at, sub)) => {
            ctx.store
                .put_subscription(&record(sub.id, true, expires_at, String::new()))
                .await?;
            report.created += 1;
            Ok(Ok(()))
        }
        Err(e) => {
            let retry = if e.is_no_mailbox() {
                RETRY_NO_MAILBOX
            } else {
                RETRY_AFTER_FAILURE
            };
            let reason = explain(&e);
            tracing::warn!(tenant = %ctx.tenant_id, target = %w.target, error = %e, "cannot create a Graph subscription");
            let id = format!("failed:{}", uuid::Uuid::new_v4().simple());
            let failed = record(id, false, now + retry, reason.clone());
            ctx.store.put_subscription(&failed).await?;
            report.failed += 1;
            Ok(Err(no_mailbox_or(&e, reason)))
        }
    }
}

/// A mailbox-less user is normal (rooms, unlicensed accounts): not worth the status line.
fn no_mailbox_or(e: &GraphError, reason: String) -> String {
    if e.is_no_mailbox() {
        "a mailbox in scope has no Exchange Online mailbox".into()
    } else {
        reason
    }
}

/// 32 random bytes, base64url: well within Graph's 128-character `clientState`.
fn random_client_state() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Ms365Settings {
        let mut s = Ms365Settings {
            directory_id: "11111111-2222-3333-4444-555555555555".into(),
            application_id: "66666666-7777-8888-9999-000000000000".into(),
            ..Default::default()
        };
        s.users.enabled = true;
        s.shared_mailbox.enabled = true;
        s.personal_contacts.enabled = true;
        s
    }

    fn stored(target: &str, active: bool, expires_at: i64, updated_at: i64) -> StoredSubscription {
        StoredSubscription {
            id: format!("id-{target}"),
            tenant_id: TenantId::from_static("t"),
            target: target.into(),
            resource: "users".into(),
            active,
            sealed_client_state: String::new(),
            expires_at,
            reauthorize: false,
            message: String::new(),
            updated_at,
        }
    }

    fn targets(w: &[Wanted]) -> Vec<&str> {
        w.iter().map(|w| w.target.as_str()).collect()
    }

    #[test]
    fn the_tenant_wants_users_shared_and_personal_within_the_limit() {
        let s = settings();
        let boxes = Mailboxes {
            shared: vec!["sh".into()],
            personal: vec!["p1".into(), "p2".into()],
            personal_in_scope: 2,
        };
        let (w, note) = wanted(&s, &boxes);
        assert_eq!(
            targets(&w),
            ["users", "shared:sh", "personal:p1", "personal:p2"]
        );
        assert_eq!(w[1].resource, "users/sh/contacts");
        assert!(note.is_none());
        let mut small = s.clone();
        small.realtime.max_mailbox_subscriptions = 2;
        let (w, note) = wanted(&small, &boxes);
        assert_eq!(targets(&w), ["users", "shared:sh"]);
        assert!(note.unwrap().contains("2 mailboxes follow the schedule"));
    }

    #[test]
    fn nothing_is_wanted_when_off() {
        for off in [
            |s: &mut Ms365Settings| s.realtime.enabled = false,
            |s: &mut Ms365Settings| s.users.enabled = false,
            |s: &mut Ms365Settings| s.application_id.clear(),
        ] {
            let mut s = settings();
            off(&mut s);
            let boxes = Mailboxes {
                shared: vec!["sh".into()],
                ..Default::default()
            };
            assert!(wanted(&s, &boxes).0.is_empty());
        }
    }

    #[test]
    fn the_plan_creates_renews_recreates_and_deletes() {
        let boxes = Mailboxes {
            shared: vec!["sh".into()],
            ..Default::default()
        };
        let (w, _) = wanted(&settings(), &boxes);
        let now = 1_000;
        // users: half its lifetime left → renew; shared: missing → create; gone → delete.
        let have = vec![
            stored("users", true, 1_400, 0),
            stored("personal:gone", true, 5_000, 0),
        ];
        let actions = plan(&w, &have, now);
        assert!(actions.contains(&Action::Delete(have[1].clone())));
        assert!(actions.contains(&Action::Renew(have[0].clone())));
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Create(w) if w.target == "shared:sh"))
        );
        // Fresh: nothing to do.
        let fresh = vec![
            stored("users", true, 3_000, 900),
            stored("shared:sh", true, 3_000, 900),
        ];
        assert!(plan(&w, &fresh, now).is_empty());
        // Reauthorization asked for → renew at once; expired → create again.
        let mut reauth = fresh.clone();
        reauth[0].reauthorize = true;
        assert_eq!(
            plan(&w, &reauth, now),
            vec![Action::Renew(reauth[0].clone())]
        );
        let expired = vec![stored("users", true, 999, 0), fresh[1].clone()];
        assert!(matches!(&plan(&w, &expired, now)[..], [Action::Create(w)] if w.target == "users"));
    }

    #[test]
    fn a_failed_attempt_waits_for_its_retry_time() {
        let (w, _) = wanted(&settings(), &Mailboxes::default());
        let failed = vec![stored("users", false, 2_000, 1_000)];
        assert!(plan(&w, &failed, 1_500).is_empty());
        assert!(matches!(&plan(&w, &failed, 2_000)[..], [Action::Create(_)]));
    }

    #[test]
    fn client_states_are_random_and_short_enough() {
        let (a, b) = (random_client_state(), random_client_state());
        assert_ne!(a, b);
        assert!(a.len() <= 128 && a.len() >= 40);
    }

    #[test]
    fn notification_urls_follow_the_public_url() {
        let urls = NotificationUrls::for_public_url("https://pbx.example.com/");
        assert_eq!(urls.changes, "https://pbx.example.com/ms365/notifications");
        assert_eq!(
            urls.lifecycle,
            "https://pbx.example.com/ms365/notifications/lifecycle"
        );
    }
}
