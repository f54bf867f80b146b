//! The errors of the Graph client. Microsoft answers failures with
//! `{"error":{"code","message","innerError":{"request-id","client-request-id","date"}}}`;
//! that body becomes [`GraphError::Api`], keeping both request ids because they are what
//! Microsoft support asks for. Conditions the sync worker must act on differently (an
//! expired delta token, throttling that did not end, a redirect) get their own variants so
//! callers match on them instead of on strings.

use reqwest::header::HeaderMap;
use serde::Deserialize;

use crate::entra::OidcError;

/// Failures of a Graph request, after the client's own retries.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Graph answered with an error status and (usually) its error body.
    #[error(
        "Graph answered HTTP {status} {code}: {message} (request-id {}, client-request-id {client_request_id})",
        request_id.as_deref().unwrap_or("-")
    )]
    Api {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
        client_request_id: String,
    },
    /// Still throttled (429/503) after the configured number of retries.
    #[error("Graph kept throttling the requests; gave up after {retries} retries")]
    Throttled { retries: u32 },
    /// No access token could be obtained.
    #[error("cannot get an access token for Graph: {0}")]
    Token(#[from] OidcError),
    /// Connection, TLS, reset or timeout.
    #[error("cannot reach Graph: {0}")]
    Transport(String),
    /// A success answer whose body is not what the API documents.
    #[error("unexpected answer from Graph: {0}")]
    Decode(String),
    /// The delta token expired (HTTP 410, `syncStateNotFound` or `resyncRequired`): start a
    /// full sync from the first delta URL.
    #[error("the delta token expired; a full resync is needed")]
    SyncStateNotFound,
    /// A 3xx answer. Redirects are never followed: the request carries a bearer token.
    #[error("Graph answered HTTP {status} redirecting to {location}; redirects are not followed")]
    Redirect { status: u16, location: String },
    /// A URL (usually a nextLink or deltaLink) that is not on the configured Graph host.
    #[error("refused to send the token to {0}: it is not the configured Graph host")]
    ForeignUrl(String),
    /// A body larger than the caller allowed.
    #[error("the answer is larger than the {limit} bytes allowed")]
    TooLarge { limit: usize },
    /// A request the client cannot send (duplicate batch ids, absolute batch URLs, ...).
    #[error("invalid Graph request: {0}")]
    InvalidRequest(String),
}

/// Exchange's code for a user without a (cloud) mailbox: unlicensed users, rooms and
/// service accounts. Normal in every tenant, so never an error of the run.
pub const NO_MAILBOX_CODE: &str = "MailboxNotEnabledForRESTAPI";

impl GraphError {
    /// The user has no mailbox Graph can serve ([`NO_MAILBOX_CODE`]).
    pub fn is_no_mailbox(&self) -> bool {
        matches!(self, GraphError::Api { code, .. } if code.eq_ignore_ascii_case(NO_MAILBOX_CODE))
    }

    /// True for HTTP 404 answers (no photo, no such user or mailbox).
    pub fn is_not_found(&self) -> bool {
        matches!(self, GraphError::Api { status: 404, .. })
    }

    /// The HTTP status Graph answered with, when the error came from an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            GraphError::Api { status, .. } | GraphError::Redirect { status, .. } => Some(*status),
            GraphError::SyncStateNotFound => Some(410),
            _ => None,
        }
    }

    /// Maps a non-success answer to its error. `body` may be empty or not JSON.
    pub(crate) fn from_answer(
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        client_request_id: &str,
    ) -> GraphError {
        let parsed = serde_json::from_slice::<ErrorEnvelope>(body)
            .ok()
            .map(|e| e.error);
        let (code, message, inner) = match parsed {
            Some(e) => (e.code, e.message, e.inner_error),
            None => (
                String::new(),
                String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
                None,
            ),
        };
        if status == 410 || is_sync_state_code(&code) {
            return GraphError::SyncStateNotFound;
        }
        let inner = inner.unwrap_or_default();
        let request_id = inner.request_id.or_else(|| header(headers, "request-id"));
        GraphError::Api {
            status,
            code,
            message,
            request_id,
            client_request_id: client_request_id.to_string(),
        }
    }
}

/// Graph's codes for an expired or rejected delta token.
pub fn is_sync_state_code(code: &str) -> bool {
    code.eq_ignore_ascii_case("syncStateNotFound") || code.eq_ignore_ascii_case("resyncRequired")
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    inner_error: Option<InnerError>,
}

#[derive(Deserialize, Default)]
struct InnerError {
    #[serde(rename = "request-id", default)]
    request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_graph_error_body() {
        let body = br#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges to complete the operation.","innerError":{"date":"2026-01-01T00:00:00","request-id":"req-1","client-request-id":"c-1"}}}"#;
        let e = GraphError::from_answer(403, &HeaderMap::new(), body, "c-1");
        match &e {
            GraphError::Api {
                status,
                code,
                message,
                request_id,
                client_request_id,
            } => {
                assert_eq!(*status, 403);
                assert_eq!(code, "Authorization_RequestDenied");
                assert!(message.starts_with("Insufficient privileges"));
                assert_eq!(request_id.as_deref(), Some("req-1"));
                assert_eq!(client_request_id, "c-1");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(e.to_string().contains("req-1"), "{e}");
        assert!(!e.is_not_found());
    }

    #[test]
    fn expired_delta_token_in_all_its_forms() {
        let h = HeaderMap::new();
        assert!(matches!(
            GraphError::from_answer(410, &h, b"", "c"),
            GraphError::SyncStateNotFound
        ));
        let resync = br#"{"error":{"code":"resyncRequired","message":"Resync required."}}"#;
        assert!(matches!(
            GraphError::from_answer(400, &h, resync, "c"),
            GraphError::SyncStateNotFound
        ));
        let state = br#"{"error":{"code":"SyncStateNotFound","message":"gone"}}"#;
        assert!(matches!(
            GraphError::from_answer(400, &h, state, "c"),
            GraphError::SyncStateNotFound
        ));
    }

    #[test]
    fn non_json_body_and_header_request_id() {
        let mut h = HeaderMap::new();
        h.insert("request-id", "from-header".parse().unwrap());
        let e = GraphError::from_answer(404, &h, b"<html>nope</html>", "c");
        assert!(e.is_not_found());
        match e {
            GraphError::Api {
                request_id,
                message,
                code,
                ..
            } => {
                assert_eq!(request_id.as_deref(), Some("from-header"));
                assert_eq!(message, "<html>nope</html>");
                assert!(code.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
