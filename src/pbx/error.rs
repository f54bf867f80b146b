//! What can go wrong talking to the PBX, each in words an administrator can act on. The
//! sync needs two answers of every error: does it stop the phase (the PBX refused the
//! gateway's sign-in or cannot be reached at all) or only the object at hand, and, for a
//! creation, is the outcome unknown (so the next run must look before creating again).

use crate::store::StoreError;

/// A failed PBX request, after the client's own retries.
#[derive(Debug, thiserror::Error)]
pub enum PbxError {
    /// `POST /login` was refused (the configured username/password are wrong for the
    /// domain, or the account is disabled), or the PBX refused a fresh token at once.
    #[error(
        "the PBX refused to let the gateway sign in as `{username}` on domain `{domain}` \
         ({reason}): the username or password is wrong, or that account is disabled; check \
         pbx_username and pbx_password_file of the [[tenant]] with domain = \"{domain}\", and \
         that this PBX administrator exists and is enabled"
    )]
    SignIn {
        username: String,
        domain: String,
        reason: String,
    },
    /// The PBX answered 4xx to a request (a validation error, a duplicate, a permission).
    #[error("HTTP {status} {code}: {message}{}", field.as_deref().map(|f| format!(" (field {f})")).unwrap_or_default())]
    Rejected {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
    },
    /// The object does not exist (any more) on the PBX.
    #[error("not found on the PBX: {what}")]
    NotFound { what: String },
    /// No answer in time; for a creation, whether it happened is unknown.
    #[error("the PBX did not answer {what} within the request timeout")]
    Timeout { what: String },
    /// A creation that reached the PBX but whose answer was lost or a server error: it may
    /// or may not have been carried out, so it is not sent again blindly.
    #[error("the outcome of {what} is unknown ({reason}); the next run looks before retrying")]
    OutcomeUnknown { what: String, reason: String },
    /// Connection refused, reset, TLS failure, or still failing (5xx, 429) after retries.
    #[error("cannot reach the PBX at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// An answer that is not what the API documents.
    #[error("unexpected answer from the PBX: {0}")]
    Protocol(String),
    /// The gateway's own store or keyring failed around a PBX request.
    #[error("{0}")]
    Local(String),
    /// The client could not be built (a bad CA file).
    #[error("PBX client: {0}")]
    Setup(String),
}

impl From<StoreError> for PbxError {
    fn from(e: StoreError) -> Self {
        PbxError::Local(e.to_string())
    }
}

impl PbxError {
    /// The whole phase stops: nothing more can be sent (sign-in refused, PBX unreachable,
    /// the gateway's own store failing).
    pub fn stops_phase(&self) -> bool {
        matches!(
            self,
            PbxError::SignIn { .. } | PbxError::Unreachable { .. } | PbxError::Local(_)
        )
    }

    /// A request that may or may not have been carried out.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            PbxError::Timeout { .. } | PbxError::OutcomeUnknown { .. }
        )
    }
}
