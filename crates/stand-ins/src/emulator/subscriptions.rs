//! Graph change-notification subscriptions (`/v1.0/subscriptions`), as Microsoft documents
//! them (learn.microsoft.com/graph/api/resources/subscription, …/subscription-post-subscriptions):
//!
//! - resources: `users` (changeType `updated`, `deleted`: a user created, changed or
//!   soft-deleted is reported as `updated`, a permanent deletion as `deleted`) and a
//!   mailbox's contacts, `users/{id|upn}/contacts` or `…/contactFolders/{id}/contacts`
//!   (`created`, `updated`, `deleted`); anything else is refused;
//! - permissions: User.Read.All (or Directory.Read.All) for users, Contacts.Read for contacts;
//! - `notificationUrl` (and `lifecycleNotificationUrl`) must be HTTPS; before a subscription
//!   is created Graph POSTs `?validationToken=…` to each and expects the token back as
//!   `text/plain` with 200 within 10 seconds ([`super::notify`]);
//! - `expirationDateTime`: at most 41,760 minutes ahead for users, 10,080 for Outlook
//!   contacts; less than 45 minutes ahead is raised to 45 minutes; in the past is refused;
//! - `clientState` at most 128 characters, echoed in every notification;
//! - `lifecycleNotificationUrl` is optional for these resources (required only for some
//!   Teams resources), validated like `notificationUrl` when given.
//!
//! Error wordings seen from Graph: "Invalid 'changeType' attribute: 'created'.",
//! "NotificationUrl scheme='http' is not supported.", `ExtensionError` "Subscription
//! expiration can only be N minutes in the future."; the emulator's own wordings (past
//! expiry, unknown resource, unknown id, long `clientState`) are marked as such by being
//! plain `InvalidRequest`/`ResourceNotFound` answers.
//!
//! Deliberate test-mode deviation: [`Emulator::set_subscription_lifetime_cap`] clamps every
//! expiry to a short cap (Graph refuses instead of clamping), so tests see renewals in
//! seconds; a client that keeps the expiry Graph answers works the same either way.

use std::sync::Mutex;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Emulator;
use super::graph::{Caller, GraphError, Need};
use super::notify::SubscriptionInfo;
use super::state::lock;
use super::util::{guid, iso};

/// Graph's longest lifetime of a subscription on `users`, in seconds.
pub const USERS_MAX_SECS: i64 = 41_760 * 60;
/// Graph's longest lifetime of a subscription on Outlook contacts, in seconds.
pub const CONTACTS_MAX_SECS: i64 = 10_080 * 60;
/// Shorter requests are raised to this.
const MIN_SECS: i64 = 45 * 60;

/// What a subscription watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Watched {
    Users,
    /// The contacts of the mailbox of this user (object id).
    Contacts(String),
}

/// A live subscription.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub info: SubscriptionInfo,
    pub directory: String,
    pub watched: Watched,
    pub change_types: Vec<String>,
}

/// Every tenant's subscriptions.
#[derive(Default)]
pub(crate) struct Registry {
    pub subs: Mutex<Vec<Subscription>>,
    /// Test mode: expiries are clamped to now + this many seconds.
    pub cap_secs: Mutex<Option<i64>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateBody {
    change_type: String,
    notification_url: String,
    #[serde(default)]
    lifecycle_notification_url: Option<String>,
    resource: String,
    expiration_date_time: String,
    #[serde(default)]
    client_state: Option<String>,
    #[serde(default)]
    latest_supported_tls_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PatchBody {
    #[serde(default)]
    expiration_date_time: Option<String>,
}

fn invalid(message: impl Into<String>) -> GraphError {
    GraphError::bad_request("InvalidRequest", message)
}

fn gone(id: &str) -> GraphError {
    GraphError::not_found(
        "ResourceNotFound",
        format!("The object was not found: subscription {id}."),
    )
}

/// `POST /v1.0/subscriptions`.
pub(crate) async fn create(
    State(emu): State<Emulator>,
    caller: Caller,
    body: Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, GraphError> {
    let Json(body) = body.map_err(|e| invalid(e.body_text()))?;
    let directory = caller.tenant.id.clone();
    let watched = emu.watched(&caller, &body.resource)?;
    let change_types = change_types(&watched, &body.change_type)?;
    for url in std::iter::once(&body.notification_url).chain(&body.lifecycle_notification_url) {
        if let Some((scheme, _)) = url.split_once("://")
            && !scheme.eq_ignore_ascii_case("https")
        {
            return Err(invalid(format!(
                "NotificationUrl scheme='{scheme}' is not supported."
            )));
        }
    }
    if body.client_state.as_ref().is_some_and(|s| s.len() > 128) {
        return Err(invalid("clientState must be at most 128 characters."));
    }
    let expires = emu.expiry(&watched, &body.expiration_date_time)?;
    for url in std::iter::once(&body.notification_url).chain(&body.lifecycle_notification_url) {
        emu.validate_endpoint(url).await?;
    }
    let info = SubscriptionInfo {
        id: guid(),
        resource: body.resource.clone(),
        change_type: change_types.join(","),
        client_state: body.client_state,
        notification_url: body.notification_url,
        lifecycle_notification_url: body.lifecycle_notification_url,
        expiration: expires,
        latest_supported_tls_version: body.latest_supported_tls_version,
    };
    let sub = Subscription {
        info: info.clone(),
        directory,
        watched,
        change_types,
    };
    lock(&emu.inner.subscriptions.subs).push(sub);
    Ok((StatusCode::CREATED, Json(info.to_json())).into_response())
}

/// `GET /v1.0/subscriptions`: the caller's tenant's live subscriptions.
pub(crate) async fn list(State(emu): State<Emulator>, caller: Caller) -> Json<Value> {
    let value: Vec<Value> = (emu.live(&caller.tenant.id).iter())
        .map(|s| s.info.to_json())
        .collect();
    Json(json!({ "value": value }))
}

/// `GET /v1.0/subscriptions/{id}`.
pub(crate) async fn get(
    State(emu): State<Emulator>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, GraphError> {
    let sub = emu.find(&caller.tenant.id, &id).ok_or_else(|| gone(&id))?;
    Ok(Json(sub.info.to_json()))
}

/// `PATCH /v1.0/subscriptions/{id}`: renewal (a new `expirationDateTime`).
pub(crate) async fn renew(
    State(emu): State<Emulator>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<PatchBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, GraphError> {
    let Json(body) = body.map_err(|e| invalid(e.body_text()))?;
    let sub = emu.find(&caller.tenant.id, &id).ok_or_else(|| gone(&id))?;
    let Some(text) = body.expiration_date_time else {
        return Ok(Json(sub.info.to_json()));
    };
    let expires = emu.expiry(&sub.watched, &text)?;
    let mut subs = lock(&emu.inner.subscriptions.subs);
    let live = subs
        .iter_mut()
        .find(|s| s.info.id == id)
        .ok_or_else(|| gone(&id))?;
    live.info.expiration = expires;
    Ok(Json(live.info.to_json()))
}

/// `DELETE /v1.0/subscriptions/{id}`.
pub(crate) async fn delete(
    State(emu): State<Emulator>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, GraphError> {
    emu.find(&caller.tenant.id, &id).ok_or_else(|| gone(&id))?;
    lock(&emu.inner.subscriptions.subs).retain(|s| s.info.id != id);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1.0/subscriptions/{id}/reauthorize`.
pub(crate) async fn reauthorize(
    State(emu): State<Emulator>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, GraphError> {
    emu.find(&caller.tenant.id, &id).ok_or_else(|| gone(&id))?;
    Ok(StatusCode::NO_CONTENT)
}

fn change_types(watched: &Watched, text: &str) -> Result<Vec<String>, GraphError> {
    let allowed: &[&str] = match watched {
        Watched::Users => &["updated", "deleted"],
        Watched::Contacts(_) => &["created", "updated", "deleted"],
    };
    let types: Vec<String> = text.split(',').map(|t| t.trim().to_string()).collect();
    match types.iter().find(|t| !allowed.contains(&t.as_str())) {
        // Graph's wording when `created` is asked of users.
        Some(bad) => Err(invalid(format!("Invalid 'changeType' attribute: '{bad}'."))),
        None => Ok(types),
    }
}

impl Emulator {
    /// What `resource` names, with the caller's permission for it checked.
    fn watched(&self, caller: &Caller, resource: &str) -> Result<Watched, GraphError> {
        let path = resource.trim_matches('/');
        let segments: Vec<&str> = path.split('/').collect();
        let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
        let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
        match lower.as_slice() {
            ["users"] => {
                caller.require(Need::Users)?;
                Ok(Watched::Users)
            }
            ["users", _, "contacts"] | ["users", _, "contactfolders", _, "contacts"] => {
                caller.require(Need::Contacts)?;
                let data = caller.tenant.read();
                let (_, record) = data.active(segments[1]).ok_or_else(|| {
                    GraphError::not_found(
                        "ErrorInvalidUser",
                        format!("The requested user '{}' is invalid.", segments[1]),
                    )
                })?;
                if !record.mailbox {
                    return Err(GraphError::not_found(
                        "MailboxNotEnabledForRESTAPI",
                        "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
                    ));
                }
                Ok(Watched::Contacts(record.user.id.clone()))
            }
            _ => Err(invalid(format!(
                "Resource '{resource}' is not supported for change notifications by this stand-in."
            ))),
        }
    }

    /// The expiry (epoch seconds) for a requested `expirationDateTime`.
    fn expiry(&self, watched: &Watched, text: &str) -> Result<i64, GraphError> {
        let at = chrono::DateTime::parse_from_rfc3339(text)
            .map_err(|_| invalid(format!("expirationDateTime '{text}' is not a valid date.")))?
            .timestamp();
        let now = self.inner.now();
        if at <= now {
            return Err(invalid(
                "Subscription expiration can only be in the future.",
            ));
        }
        let max = match watched {
            Watched::Users => USERS_MAX_SECS,
            Watched::Contacts(_) => CONTACTS_MAX_SECS,
        };
        if at > now + max {
            return Err(GraphError::bad_request(
                "ExtensionError",
                format!(
                    "Subscription expiration can only be {} minutes in the future.",
                    max / 60
                ),
            ));
        }
        let at = at.max(now + MIN_SECS);
        Ok(match *lock(&self.inner.subscriptions.cap_secs) {
            Some(cap) => at.min(now + cap),
            None => at,
        })
    }

    /// A live subscription of `directory` by id.
    fn find(&self, directory: &str, id: &str) -> Option<Subscription> {
        self.live(directory).into_iter().find(|s| s.info.id == id)
    }

    /// The live (not expired) subscriptions of `directory`; expired ones are dropped.
    pub(crate) fn live(&self, directory: &str) -> Vec<Subscription> {
        let now = self.inner.now();
        let mut subs = lock(&self.inner.subscriptions.subs);
        subs.retain(|s| s.info.expiration > now);
        (subs.iter())
            .filter(|s| s.directory.eq_ignore_ascii_case(directory))
            .cloned()
            .collect()
    }
}

impl SubscriptionInfo {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "resource": self.resource,
            "applicationId": Value::Null,
            "changeType": self.change_type,
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_notification_url,
            "expirationDateTime": iso(self.expiration),
            "creatorId": Value::Null,
            "latestSupportedTlsVersion": self.latest_supported_tls_version.as_deref().unwrap_or("v1_2"),
            "includeResourceData": false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::EmulatorConfig;

    fn at(emu: &Emulator, secs: i64) -> String {
        chrono::DateTime::from_timestamp(emu.inner.now() + secs, 0)
            .unwrap()
            .to_rfc3339()
    }

    #[test]
    fn users_take_updated_and_deleted_only() {
        assert!(change_types(&Watched::Users, "updated,deleted").is_ok());
        let e = change_types(&Watched::Users, "created,updated").unwrap_err();
        assert_eq!(e.message, "Invalid 'changeType' attribute: 'created'.");
        let contacts = Watched::Contacts("x".into());
        assert_eq!(
            change_types(&contacts, "created,updated,deleted").unwrap(),
            ["created", "updated", "deleted"]
        );
    }

    #[test]
    fn expiries_follow_microsofts_limits_and_the_test_cap() {
        let emu = Emulator::new(EmulatorConfig::default());
        let now = emu.inner.now();
        let users = Watched::Users;
        let contacts = Watched::Contacts("x".into());
        assert!(emu.expiry(&users, &at(&emu, USERS_MAX_SECS - 60)).is_ok());
        let e = emu
            .expiry(&contacts, &at(&emu, USERS_MAX_SECS - 60))
            .unwrap_err();
        assert_eq!(e.code, "ExtensionError");
        assert!(e.message.contains("10080 minutes"), "{}", e.message);
        assert!(emu.expiry(&users, &at(&emu, -10)).is_err(), "in the past");
        assert!(emu.expiry(&users, "tomorrow").is_err());
        let raised = emu.expiry(&users, &at(&emu, 60)).unwrap();
        assert!(raised >= now + MIN_SECS, "under 45 minutes is raised");
        emu.set_subscription_lifetime_cap(Some(std::time::Duration::from_secs(5)));
        let capped = emu.expiry(&users, &at(&emu, 3600)).unwrap();
        assert!(capped <= emu.inner.now() + 5, "the test cap clamps");
    }
}
