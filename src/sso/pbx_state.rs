//! What the gateway knows of a signed-in user's own PBX session, in words: the state kept
//! with the gateway session (why the PBX knows the user, or why not), the refusals that stop
//! a sign-in (with the page that explains them), and the token as it is sealed into the
//! session row.

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::pages::SignInProblem;
use crate::keyring::Keyring;
use crate::pbx::PbxToken;

/// Why the PBX does, or does not, know the user behind a gateway session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PbxState {
    /// `[pbx] kind = "embedded"`: there is no PBX REST API to sign in to.
    NoPbx,
    /// The gateway holds the user's PBX token and sends it with their requests.
    Active,
    /// The user is not on the PBX yet: the connector has not pushed it.
    NotOnPbx,
    /// An adopted local PBX user whose password the gateway does not know and, with
    /// `pbx_sign_in = "created_users_only"`, must not change.
    NotManaged,
    /// The gateway created the user but holds no password for it (created by an older
    /// version, or its secret was removed).
    PasswordUnknown,
    /// `manage_passwords` is set but the PBX refused to take a new password for the user.
    PasswordNotSettable,
    /// The PBX session ended while the gateway session lives (its password was changed on
    /// the PBX, the user was disabled there, or it was ended at logout).
    Ended,
}

impl PbxState {
    pub fn as_str(self) -> &'static str {
        match self {
            PbxState::NoPbx => "no_pbx",
            PbxState::Active => "active",
            PbxState::NotOnPbx => "not_on_pbx",
            PbxState::NotManaged => "not_managed",
            PbxState::PasswordUnknown => "password_unknown",
            PbxState::PasswordNotSettable => "password_not_settable",
            PbxState::Ended => "ended",
        }
    }

    /// The stored word back; anything unknown (an empty column of an older row) reads as
    /// "no PBX", which sends nothing to the PBX.
    pub fn parse(s: &str) -> PbxState {
        match s {
            "active" => PbxState::Active,
            "not_on_pbx" => PbxState::NotOnPbx,
            "not_managed" => PbxState::NotManaged,
            "password_unknown" => PbxState::PasswordUnknown,
            "password_not_settable" => PbxState::PasswordNotSettable,
            "ended" => PbxState::Ended,
            _ => PbxState::NoPbx,
        }
    }

    /// One sentence for the user and the administrator (`/ms365/session`).
    pub fn message(self) -> &'static str {
        match self {
            PbxState::NoPbx => {
                "The gateway serves the PBX identity headers; there is no PBX REST API to sign in to."
            }
            PbxState::Active => "Signed in to the PBX as your extension.",
            PbxState::NotOnPbx => {
                "Your extension is not on the PBX yet; the next sync creates it. Sign in again after it ran."
            }
            PbxState::NotManaged => {
                "Your extension was made on the PBX, not by the gateway, and the gateway may not change its password (pbx_sign_in = created_users_only). Sign in to the PBX with your extension's own password, or ask your administrator to set pbx_sign_in to manage_passwords."
            }
            PbxState::PasswordUnknown => {
                "The gateway holds no PBX password for your extension. Ask your administrator to check the PBX connector."
            }
            PbxState::PasswordNotSettable => {
                "pbx_sign_in = manage_passwords is set, but the PBX refused to take a new password for your extension (its REST API does not accept one). Sign in to the PBX with your extension's own password."
            }
            PbxState::Ended => {
                "Your PBX session ended (your PBX password was changed on the PBX, or your extension was disabled there). Sign in again; if that fails, ask your administrator."
            }
        }
    }
}

/// Why a sign-in is refused because of the PBX (the gateway session is not issued).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PbxRefusal {
    /// The PBX refused the password the gateway holds (changed on the PBX).
    PasswordRejected,
    /// The PBX says the user is disabled.
    UserDisabled,
    /// The PBX could not be reached or failed.
    Unreachable,
    /// The gateway's own store or keyring failed.
    Internal(String),
}

impl PbxRefusal {
    /// The metric outcome.
    pub fn outcome(&self) -> &'static str {
        match self {
            PbxRefusal::PasswordRejected => "password_rejected",
            PbxRefusal::UserDisabled => "user_disabled",
            PbxRefusal::Unreachable => "unreachable",
            PbxRefusal::Internal(_) => "internal_error",
        }
    }

    /// The sign-in page saying what happened and what to do.
    pub fn problem(&self, retry: Option<String>) -> SignInProblem {
        const TITLE: &str = "The PBX did not accept your sign-in";
        let problem = match self {
            PbxRefusal::PasswordRejected => SignInProblem::new(
                StatusCode::FORBIDDEN,
                "PBX_PASSWORD_REJECTED",
                TITLE,
                "Microsoft signed you in, but the PBX refused the password the gateway keeps for your extension: it was changed on the PBX.",
            )
            .hint("Ask your PBX administrator to restore the gateway's access to your extension (or remove and sync it again). Meanwhile you can sign in with your extension and its PBX password."),
            PbxRefusal::UserDisabled => SignInProblem::new(
                StatusCode::FORBIDDEN,
                "PBX_USER_DISABLED",
                TITLE,
                "Microsoft signed you in, but your extension is disabled on the PBX.",
            )
            .hint("Ask your PBX administrator to enable your extension."),
            PbxRefusal::Unreachable => SignInProblem::new(
                StatusCode::BAD_GATEWAY,
                "PBX_UNREACHABLE",
                "The PBX could not be reached",
                "Microsoft signed you in, but the gateway could not reach the PBX to open your session there.",
            )
            .hint("Try again in a few minutes; if it persists, tell your PBX administrator."),
            PbxRefusal::Internal(_) => SignInProblem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "PBX_SESSION_UNAVAILABLE",
                "Sign-in could not be completed",
                "The gateway could not open your PBX session.",
            )
            .hint("Try again in a minute; if it persists, tell your PBX administrator."),
        };
        problem.retry(retry)
    }
}

/// The token as sealed into the session row.
#[derive(Serialize, Deserialize)]
struct SealedToken {
    access_token: String,
    refresh_token: Option<String>,
    expires_at: i64,
}

/// The seal's name: a sealed token opens only in the row of the session it was made for.
fn seal_name(id_hash: &str) -> String {
    format!("pbx-session/{id_hash}")
}

/// Seals `token` for session `id_hash`.
pub fn seal_token(keyring: &Keyring, id_hash: &str, token: &PbxToken) -> String {
    let plain = SealedToken {
        access_token: token.access_token.clone(),
        refresh_token: token.refresh_token.clone(),
        expires_at: token.expires_at,
    };
    let json = serde_json::to_vec(&plain).expect("a token serialises");
    keyring.seal(&seal_name(id_hash), &json)
}

/// Opens a token [`seal_token`] sealed; `None` (logged) when it does not open.
pub fn open_token(keyring: &Keyring, id_hash: &str, sealed: &str) -> Option<PbxToken> {
    let opened = keyring
        .open_sealed(&seal_name(id_hash), sealed)
        .map_err(|e| tracing::warn!(error = %e, "a stored PBX session token does not open"))
        .ok()?;
    let t: SealedToken = serde_json::from_slice(&opened).ok()?;
    Some(PbxToken {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        expires_at: t.expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_unknown_words_send_nothing() {
        for s in [
            PbxState::NoPbx,
            PbxState::Active,
            PbxState::NotOnPbx,
            PbxState::NotManaged,
            PbxState::PasswordUnknown,
            PbxState::PasswordNotSettable,
            PbxState::Ended,
        ] {
            assert_eq!(PbxState::parse(s.as_str()), s);
            assert!(!s.message().is_empty());
        }
        assert_eq!(PbxState::parse(""), PbxState::NoPbx);
    }

    #[test]
    fn refusals_name_their_code_and_what_to_do() {
        let p = PbxRefusal::PasswordRejected.problem(None);
        assert_eq!(p.code, "PBX_PASSWORD_REJECTED");
        assert!(p.hint.is_some());
        assert_eq!(
            PbxRefusal::Unreachable.problem(None).status,
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(PbxRefusal::UserDisabled.outcome(), "user_disabled");
    }

    #[tokio::test]
    async fn a_sealed_token_opens_only_for_its_own_session() {
        let (_db, keyring) = crate::keyring::test_keyring().await;
        let token = PbxToken {
            access_token: "access".into(),
            refresh_token: Some("refresh".into()),
            expires_at: 42,
        };
        let sealed = seal_token(&keyring, "session-a", &token);
        assert!(!sealed.contains("access"));
        assert_eq!(open_token(&keyring, "session-a", &sealed), Some(token));
        assert_eq!(open_token(&keyring, "session-b", &sealed), None);
    }
}
