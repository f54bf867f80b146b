//! Errors of the identity layer. Microsoft's token endpoint answers failures with
//! `{error, error_description, error_codes[], trace_id, correlation_id}`; that body is kept
//! whole in [`AadError`] and the first AADSTS code is turned into a hint that tells the
//! administrator what to change, because "AADSTS700027" alone helps nobody at 8 am.

use std::fmt;

use serde::Deserialize;

/// Microsoft's OAuth error response.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct AadError {
    /// OAuth error: `invalid_client`, `invalid_grant`, `invalid_request`, ...
    pub error: String,
    #[serde(default)]
    pub error_description: String,
    #[serde(default)]
    pub error_codes: Vec<u64>,
    #[serde(default)]
    pub trace_id: String,
    #[serde(default)]
    pub correlation_id: String,
}

impl AadError {
    /// The AADSTS code: the first of `error_codes`, else parsed from the description.
    pub fn code(&self) -> Option<u64> {
        self.error_codes.first().copied().or_else(|| {
            let rest = self.error_description.split("AADSTS").nth(1)?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
    }

    /// What to do about it, in plain words, for the codes administrators meet.
    pub fn hint(&self) -> Option<&'static str> {
        self.code().and_then(hint_for)
    }

    /// The first line of Microsoft's description (it appends trace and timestamp lines).
    pub fn summary(&self) -> &str {
        self.error_description.lines().next().unwrap_or(&self.error)
    }
}

impl fmt::Display for AadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code() {
            Some(code) if !self.summary().contains("AADSTS") => {
                write!(f, "AADSTS{code}: {}", self.summary())?
            }
            _ => write!(f, "{}", self.summary())?,
        }
        if let Some(hint) = self.hint() {
            write!(f, " — {hint}")?;
        }
        if !self.correlation_id.is_empty() {
            write!(f, " (correlation id {})", self.correlation_id)?;
        }
        Ok(())
    }
}

/// Plain-language advice for an AADSTS code.
pub fn hint_for(code: u64) -> Option<&'static str> {
    Some(match code {
        50011 => {
            "The redirect URI is not registered for this application. In Entra ID, open the app \
             registration > Authentication and add the exact redirect URI shown on the \
             Microsoft 365 Integration page (PBX and, if used, SBC)."
        }
        700027 => {
            "Entra ID does not know the certificate the gateway signed with, or it has expired. \
             Download public_key.pem from the Microsoft 365 Integration page and upload it under \
             the app registration > Certificates & secrets > Certificates."
        }
        700016 => {
            "No application with this Application (client) ID exists in the directory. Check the \
             application ID, the directory ID and the national cloud (region)."
        }
        90002 => {
            "The directory (tenant) was not found. Check the Directory (tenant) ID and the \
             national cloud (region)."
        }
        7000218 => {
            "The request carried no client credential. Generate a key pair and upload \
             public_key.pem to the app registration."
        }
        65001 => {
            "Admin consent is missing. In Entra ID, open the app registration > API permissions \
             and click \"Grant admin consent\" (User.Read.All and Contacts.Read as application \
             permissions)."
        }
        500011 => {
            "The resource (Microsoft Graph) is not available in this directory or cloud. Check \
             the national cloud (region) setting."
        }
        70011 => "The requested scope is invalid. Check the national cloud (region) setting.",
        50012 => {
            "The client assertion was addressed to another token endpoint. Check the Directory \
             (tenant) ID and the national cloud (region)."
        }
        500112 | 70008 => {
            "The sign-in took too long or was started elsewhere. Start the sign-in again."
        }
        50013 | 50048 | 700021 => {
            "Entra ID rejected the client assertion. Check the Application (client) ID and that the \
             gateway's clock is correct; if it persists, generate a new key pair."
        }
        700024 => {
            "The client assertion is outside its valid time range. Check that the gateway's \
             clock is correct (NTP)."
        }
        54005 => "This sign-in link was already used. Start the sign-in again.",
        501481 => "The sign-in could not be verified (PKCE mismatch). Start the sign-in again.",
        50126 => "The user name or password is wrong.",
        50034 => "The user account does not exist in this directory.",
        50057 => "The user account is disabled in Microsoft 365.",
        _ => return None,
    })
}

/// Failures of the identity layer.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// Microsoft answered with an OAuth error body.
    #[error("{0}")]
    Aad(AadError),
    /// The tenant has no usable certificate credential.
    #[error("no certificate for tenant {tenant}: generate a key pair first")]
    NoCredential { tenant: String },
    #[error("the tenant's Microsoft 365 settings are incomplete: {0}")]
    NotConfigured(String),
    #[error("cannot reach Microsoft at {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("unexpected answer from {url}: HTTP {status}: {body}")]
    Unexpected {
        url: String,
        status: u16,
        body: String,
    },
    /// The ID token failed a check; the reason is for logs, the user sees a generic page.
    #[error("the ID token was rejected: {0}")]
    InvalidIdToken(String),
    #[error("key or certificate error: {0}")]
    Crypto(String),
    /// Where the tenant's key pairs are kept failed (see [`super::SigningKeys`]).
    #[error("the tenant's key pairs: {0}")]
    KeyStore(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl OidcError {
    /// The AADSTS code, when Microsoft gave one.
    pub fn aadsts(&self) -> Option<u64> {
        match self {
            OidcError::Aad(e) => e.code(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_microsofts_error_body() {
        let body = r#"{"error":"invalid_client","error_description":"AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found.]\r\nTrace ID: 0000aaaa-11bb-cccc-dd22-eeeeee333333\r\nCorrelation ID: aaaa0000-bb11-2222-33cc-444444dddddd\r\nTimestamp: 2026-11-27 08:00:00Z","error_codes":[700027],"timestamp":"2026-11-27 08:00:00Z","trace_id":"0000aaaa-11bb-cccc-dd22-eeeeee333333","correlation_id":"aaaa0000-bb11-2222-33cc-444444dddddd","error_uri":"https://login.microsoftonline.com/error?code=700027"}"#;
        let e: AadError = serde_json::from_str(body).unwrap();
        assert_eq!(e.code(), Some(700027));
        let text = e.to_string();
        assert!(text.starts_with("AADSTS700027: The certificate"), "{text}");
        assert!(text.contains("upload it under"), "{text}");
        assert!(
            text.contains("aaaa0000-bb11-2222-33cc-444444dddddd"),
            "{text}"
        );
        assert!(!text.contains("Timestamp"), "only the first line: {text}");
    }

    #[test]
    fn code_from_description_when_codes_are_missing() {
        let e = AadError {
            error: "invalid_grant".into(),
            error_description: "AADSTS54005: OAuth2 Authorization code was already redeemed".into(),
            ..Default::default()
        };
        assert_eq!(e.code(), Some(54005));
        assert!(e.hint().unwrap().contains("already used"));
    }

    #[test]
    fn every_listed_code_has_a_hint() {
        for code in [
            50011, 700027, 700016, 90002, 7000218, 65001, 500011, 70011, 54005, 501481,
        ] {
            assert!(hint_for(code).is_some(), "no hint for AADSTS{code}");
        }
        assert!(hint_for(1).is_none());
    }
}
