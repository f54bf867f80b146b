//! The `private_key_jwt` client assertion Microsoft's token endpoint accepts instead of a
//! client secret. Header: PS256 with `x5t#S256` (the default), or RS256 with the older SHA-1
//! `x5t` for tenants that need it. Claims: `aud` = the token endpoint, `iss` = `sub` = the
//! application id, a random `jti`, `nbf` = `iat` = now, `exp` five minutes later (Microsoft
//! allows at most ten).

use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};

use super::credential::TenantCredential;
use super::error::OidcError;

/// `client_assertion_type` for a JWT assertion.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Lifetime of an assertion.
const LIFETIME_SECS: i64 = 300;

/// Signature and thumbprint header of the assertion (the tenant setting `assertion_alg`,
/// `"PS256"` or `"RS256"`, read into this once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum AssertionAlg {
    /// PS256 with `x5t#S256`: what Microsoft recommends.
    #[default]
    #[serde(rename = "PS256")]
    Ps256,
    /// RS256 with SHA-1 `x5t`: compatibility option.
    #[serde(rename = "RS256")]
    Rs256,
}

impl AssertionAlg {
    pub fn name(self) -> &'static str {
        match self {
            AssertionAlg::Ps256 => "PS256",
            AssertionAlg::Rs256 => "RS256",
        }
    }
}

/// The assertion's claims.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AssertionClaims {
    pub aud: String,
    pub iss: String,
    pub sub: String,
    pub jti: String,
    pub nbf: i64,
    pub iat: i64,
    pub exp: i64,
}

/// An assertion about to be signed.
pub struct ClientAssertion {
    claims: AssertionClaims,
    alg: AssertionAlg,
}

impl ClientAssertion {
    /// For application `client_id` presenting to `token_endpoint`.
    pub fn new(client_id: &str, token_endpoint: &str, alg: AssertionAlg) -> Self {
        let now = crate::clock::now_epoch();
        ClientAssertion {
            claims: AssertionClaims {
                aud: token_endpoint.to_string(),
                iss: client_id.to_string(),
                sub: client_id.to_string(),
                jti: uuid::Uuid::new_v4().to_string(),
                nbf: now,
                iat: now,
                exp: now + LIFETIME_SECS,
            },
            alg,
        }
    }

    /// Signs with the tenant's key and returns the compact JWT.
    pub fn sign(&self, credential: &TenantCredential) -> Result<String, OidcError> {
        let mut header = match self.alg {
            AssertionAlg::Ps256 => {
                let mut h = Header::new(Algorithm::PS256);
                h.x5t_s256 = Some(credential.x5t_s256());
                h
            }
            AssertionAlg::Rs256 => {
                let mut h = Header::new(Algorithm::RS256);
                h.x5t = Some(credential.x5t());
                h
            }
        };
        header.typ = Some("JWT".to_string());
        jsonwebtoken::encode(&header, &self.claims, credential.signing_key())
            .map_err(|e| OidcError::Crypto(format!("signing the client assertion: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use crate::ids::TenantId;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::entra::credential::{KeyBits, generate};

    fn part(jwt: &str, i: usize) -> serde_json::Value {
        let raw = URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(i).unwrap())
            .unwrap();
        serde_json::from_slice(&raw).unwrap()
    }

    #[test]
    fn assertion_has_microsofts_header_and_claims() {
        let cred = generate(&TenantId::from_static("t"), "T", KeyBits::Rsa2048, 30)
            .unwrap()
            .credential()
            .unwrap();
        let endpoint = "https://login.microsoftonline.com/dir/oauth2/v2.0/token";
        let ps = ClientAssertion::new("app-id", endpoint, AssertionAlg::Ps256)
            .sign(&cred)
            .unwrap();
        let header = part(&ps, 0);
        assert_eq!(header["alg"], "PS256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["x5t#S256"], cred.x5t_s256());
        assert!(header.get("x5t").is_none());
        let claims = part(&ps, 1);
        assert_eq!(claims["aud"], endpoint);
        assert_eq!(claims["iss"], "app-id");
        assert_eq!(claims["sub"], "app-id");
        assert_eq!(claims["nbf"], claims["iat"]);
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            300
        );
        assert!(uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok());
        let rs = ClientAssertion::new("app-id", endpoint, AssertionAlg::Rs256)
            .sign(&cred)
            .unwrap();
        let header = part(&rs, 0);
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["x5t"], cred.x5t());
        assert_ne!(
            part(&rs, 1)["jti"],
            claims["jti"],
            "jti is random per assertion"
        );
    }
}
