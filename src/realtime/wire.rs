//! What Microsoft Graph POSTs to the notification URLs, parsed once into typed values
//! (learn.microsoft.com/graph/change-notifications-delivery-webhooks): a `value` array of
//! change notifications (`subscriptionId`, `clientState`, `changeType`, `resource`,
//! `resourceData`) or of lifecycle notifications (`lifecycleEvent` instead of a change).
//! Only the fields the gateway acts on are read; the rest is ignored as Graph adds fields.

use serde::Deserialize;

/// Largest notification body accepted. Graph batches notifications; a batch of a few
/// hundred basic notifications stays far below this.
pub const MAX_BODY: usize = 256 * 1024;
/// Longest `validationToken` echoed back (Graph's are a few hundred characters).
pub const MAX_VALIDATION_TOKEN: usize = 4096;
/// Notifications read from one body at most.
pub const MAX_ITEMS: usize = 1000;

/// One item of a POSTed `value` array.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub subscription_id: String,
    #[serde(default)]
    pub client_state: Option<String>,
    #[serde(default)]
    pub change_type: Option<String>,
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub lifecycle_event: Option<String>,
}

impl std::fmt::Debug for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // clientState is the shared secret of the subscription.
        f.debug_struct("Notification")
            .field("subscription_id", &self.subscription_id)
            .field("change_type", &self.change_type)
            .field("resource", &self.resource)
            .field("lifecycle_event", &self.lifecycle_event)
            .finish_non_exhaustive()
    }
}

/// A lifecycle notification's event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleEvent {
    /// Renew (which reauthorizes) before Graph stops delivering.
    ReauthorizationRequired,
    /// Graph removed the subscription: create it again.
    SubscriptionRemoved,
    /// Graph dropped notifications: read the target's delta.
    Missed,
}

impl LifecycleEvent {
    pub fn parse(text: &str) -> Option<LifecycleEvent> {
        match text {
            "reauthorizationRequired" => Some(LifecycleEvent::ReauthorizationRequired),
            "subscriptionRemoved" => Some(LifecycleEvent::SubscriptionRemoved),
            "missed" => Some(LifecycleEvent::Missed),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    value: Vec<Notification>,
}

/// Why a body is not a notification batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the body is not JSON of Graph's notification shape: {0}")]
    Malformed(String),
    #[error("the body holds more than {MAX_ITEMS} notifications")]
    TooMany,
}

/// Parses a POSTed body.
pub fn parse(body: &[u8]) -> Result<Vec<Notification>, WireError> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    if envelope.value.len() > MAX_ITEMS {
        return Err(WireError::TooMany);
    }
    Ok(envelope.value)
}

/// A validation token worth echoing: bounded, printable, no markup (it is answered as
/// `text/plain`, and nothing else may ride on it).
pub fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_VALIDATION_TOKEN
        && token
            .chars()
            .all(|c| !c.is_control() && c != '<' && c != '>')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_and_lifecycle_notifications_parse() {
        let body = br#"{"value":[
            {"subscriptionId":"s1","clientState":"c","changeType":"updated",
             "resource":"Users/u1","tenantId":"t","resourceData":{"id":"u1"}},
            {"subscriptionId":"s2","clientState":"c","lifecycleEvent":"missed",
             "subscriptionExpirationDateTime":"2026-12-06T00:00:00Z"}]}"#;
        let items = parse(body).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].change_type.as_deref(), Some("updated"));
        assert_eq!(
            items[1]
                .lifecycle_event
                .as_deref()
                .and_then(LifecycleEvent::parse),
            Some(LifecycleEvent::Missed)
        );
        assert!(!format!("{:?}", items[0]).contains("clientState: Some"));
    }

    #[test]
    fn other_bodies_are_refused() {
        assert!(matches!(parse(b"not json"), Err(WireError::Malformed(_))));
        assert!(matches!(
            parse(br#"{"value":{}}"#),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            parse(br#"{"value":[{}]}"#),
            Err(WireError::Malformed(_))
        ));
        let many = format!(
            "{{\"value\":[{}]}}",
            vec![r#"{"subscriptionId":"s"}"#; MAX_ITEMS + 1].join(",")
        );
        assert_eq!(parse(many.as_bytes()), Err(WireError::TooMany));
    }

    #[test]
    fn tokens_are_bounded_and_plain() {
        assert!(valid_token(
            "Validation: Testing client application reachability for subscription Request-Id: 2a1b"
        ));
        assert!(!valid_token(""));
        assert!(!valid_token("<script>"));
        assert!(!valid_token(&"a".repeat(MAX_VALIDATION_TOKEN + 1)));
    }
}
