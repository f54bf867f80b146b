//! Change-notification subscriptions (`/subscriptions`): create, renew, reauthorize and
//! delete, as Microsoft Graph documents them
//! (learn.microsoft.com/graph/api/resources/subscription). Creating one makes Graph call
//! the notification URL first (the validation handshake), so a create can fail because
//! the gateway's public URL is not reachable from Microsoft; [`explain`] says so in words.
//!
//! Maximum lifetimes differ per resource: directory resources such as `users` 41,760
//! minutes (under 29 days), Outlook contacts 10,080 minutes (under 7 days). The gateway
//! asks for a little less than the maximum and always keeps the expiry Graph answered.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{Call, GraphClient};
use super::error::GraphError;

/// Longest lifetime Graph allows a subscription on `users`.
pub const USERS_MAX_LIFETIME: Duration = Duration::from_secs(41_760 * 60);
/// Longest lifetime Graph allows a subscription on Outlook contacts.
pub const CONTACTS_MAX_LIFETIME: Duration = Duration::from_secs(10_080 * 60);
/// Asked for below the maximum, so clock skew never makes a request exceed it.
const LIFETIME_MARGIN: Duration = Duration::from_secs(15 * 60);

/// What a subscription is asked for.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSubscription {
    pub change_type: String,
    pub notification_url: String,
    pub lifecycle_notification_url: String,
    pub resource: String,
    pub expiration_date_time: String,
    pub client_state: String,
    pub latest_supported_tls_version: &'static str,
}

/// A subscription as Graph answers it (the fields the gateway reads).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: String,
    #[serde(default)]
    pub resource: String,
    pub expiration_date_time: String,
}

impl Subscription {
    /// The expiry as epoch seconds.
    pub fn expires_at(&self) -> Result<i64, GraphError> {
        parse_expiry(&self.expiration_date_time)
    }
}

/// Epoch seconds of an ISO 8601 `expirationDateTime`.
pub fn parse_expiry(text: &str) -> Result<i64, GraphError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp())
        .map_err(|e| GraphError::Decode(format!("expirationDateTime {text:?}: {e}")))
}

/// The longest lifetime Graph allows for `resource`, less a margin.
pub fn lifetime_for(resource: &str) -> Duration {
    let max = if resource.eq_ignore_ascii_case("users") {
        USERS_MAX_LIFETIME
    } else {
        CONTACTS_MAX_LIFETIME
    };
    max - LIFETIME_MARGIN
}

/// `expirationDateTime` for a lifetime starting now.
pub fn expiry_text(lifetime: Duration) -> String {
    let at = Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or_default();
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl GraphClient {
    /// `POST /subscriptions`. Not repeated on a transport failure: a second subscription
    /// would be created when the first one reached Graph.
    pub async fn create_subscription(
        &self,
        new: &NewSubscription,
    ) -> Result<Subscription, GraphError> {
        let body =
            serde_json::to_vec(new).map_err(|e| GraphError::InvalidRequest(e.to_string()))?;
        let url = self.resolve("/subscriptions")?;
        let call = Call {
            method: Method::POST,
            body: Some(Bytes::from(body)),
            idempotent: false,
            ..Call::get(&url, "subscriptions")
        };
        let reply = self.execute(&call).await?;
        super::client::decode(&reply.body)
    }

    /// `PATCH /subscriptions/{id}` with a new expiry (renewal; also reauthorizes).
    pub async fn renew_subscription(
        &self,
        id: &str,
        expiration: &str,
    ) -> Result<Subscription, GraphError> {
        let body = serde_json::json!({ "expirationDateTime": expiration }).to_string();
        let url = self.resolve(&format!(
            "/subscriptions/{}",
            super::resources::path_segment(id)
        ))?;
        let call = Call {
            method: Method::PATCH,
            body: Some(Bytes::from(body)),
            ..Call::get(&url, "subscriptions")
        };
        let reply = self.execute(&call).await?;
        super::client::decode(&reply.body)
    }

    /// `DELETE /subscriptions/{id}`; one Graph no longer knows counts as deleted.
    pub async fn delete_subscription(&self, id: &str) -> Result<(), GraphError> {
        let url = self.resolve(&format!(
            "/subscriptions/{}",
            super::resources::path_segment(id)
        ))?;
        let call = Call {
            method: Method::DELETE,
            ..Call::get(&url, "subscriptions")
        };
        match self.execute(&call).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A failed subscription request in words an administrator can act on.
pub fn explain(e: &GraphError) -> String {
    match e {
        GraphError::Api {
            status: 400,
            message,
            ..
        } if message.to_ascii_lowercase().contains("validation") => format!(
            "Microsoft could not reach the notification URL (the validation request failed): \
             the pbx listener's public_url must be reachable from the internet over HTTPS \
             with a publicly trusted certificate; scheduled sync keeps working ({e})"
        ),
        GraphError::Api { status: 403, .. } => format!(
            "the app registration lacks the permission for this subscription (User.Read.All \
             for users, Contacts.Read for contacts); scheduled sync keeps working ({e})"
        ),
        _ => format!("{e}; scheduled sync keeps working"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_stay_under_microsofts_maxima() {
        assert!(lifetime_for("users") < USERS_MAX_LIFETIME);
        assert!(lifetime_for("users/abc/contacts") < CONTACTS_MAX_LIFETIME);
        assert!(lifetime_for("users") > Duration::from_secs(28 * 86_400));
    }

    #[test]
    fn expiry_round_trips() {
        let text = expiry_text(Duration::from_secs(3600));
        let at = parse_expiry(&text).unwrap();
        let now = Utc::now().timestamp();
        assert!((at - now - 3600).abs() <= 2, "{text}");
        assert!(parse_expiry("tomorrow").is_err());
    }
}
