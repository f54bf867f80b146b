//! The emulator's token-signing keys and its small JWT toolkit. Each signing key is an RSA
//! 2048 key with a self-signed certificate, published like Microsoft's (`kid` = `x5t` =
//! base64url SHA-1 of the certificate, `x5c`, `n`, `e`). Rotation puts a new key first and
//! keeps the old one listed, as Entra's overlap does; retiring drops all but the newest.
//! JWTs are parsed and checked by hand so client assertions can be judged claim by claim.

use std::sync::{Arc, RwLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, PublicKeyComponents};
use aws_lc_rs::signature::{self, KeyPair as _, RsaParameters, UnparsedPublicKey};
use serde_json::{Map, Value, json};

use super::state::{read, write};
use super::util::{b64std, b64url, b64url_decode, sha1};

pub(crate) struct SigningKey {
    pub kid: String,
    pub x5t: String,
    x5c: String,
    n: String,
    e: String,
    public_der: Vec<u8>,
    pair: KeyPair,
}

impl SigningKey {
    fn generate() -> SigningKey {
        // rcgen generates the key (aws-lc underneath) and self-signs the certificate that
        // JWKS consumers expect in `x5c`; aws-lc then signs tokens with the same key.
        let key =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key generation");
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("certificate params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "accounts.emulator.invalid");
        let cert = params.self_signed(&key).expect("self-signed certificate");
        let pair = KeyPair::from_pkcs8(&key.serialize_der()).expect("PKCS#8 RSA key");
        let parts = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        let x5t = b64url(&sha1(cert.der()));
        SigningKey {
            kid: x5t.clone(),
            x5t,
            x5c: b64std(cert.der()),
            n: b64url(&parts.n),
            e: b64url(&parts.e),
            public_der: pair.public_key().as_ref().to_vec(),
            pair,
        }
    }

    /// An RS256 JWT over `claims`, with Microsoft's header (`typ`, `alg`, `x5t`, `kid`).
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"typ": "JWT", "alg": "RS256", "x5t": self.x5t, "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let mut sig = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .expect("RSA signing");
        format!("{input}.{}", b64url(&sig))
    }

    pub fn jwk(&self, issuer: &str) -> Value {
        json!({
            "kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.x5t,
            "n": self.n, "e": self.e, "x5c": [self.x5c],
            "cloud_instance_name": "microsoftonline.com", "issuer": issuer,
        })
    }

    pub fn verifies(&self, jwt: &Jwt) -> bool {
        verify(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            &self.public_der,
            jwt,
        )
    }
}

/// The published keys, newest first.
pub(crate) struct KeyRing {
    keys: RwLock<Vec<Arc<SigningKey>>>,
}

impl KeyRing {
    pub fn new() -> KeyRing {
        KeyRing {
            keys: RwLock::new(vec![Arc::new(SigningKey::generate())]),
        }
    }

    pub fn current(&self) -> Arc<SigningKey> {
        read(&self.keys)[0].clone()
    }

    pub fn all(&self) -> Vec<Arc<SigningKey>> {
        read(&self.keys).clone()
    }

    pub fn find(&self, kid: &str) -> Option<Arc<SigningKey>> {
        read(&self.keys).iter().find(|k| k.kid == kid).cloned()
    }

    pub fn rotate(&self) {
        // Generate outside the lock: RSA key generation takes a while.
        let key = Arc::new(SigningKey::generate());
        write(&self.keys).insert(0, key);
    }

    pub fn retire_old(&self) {
        write(&self.keys).truncate(1);
    }
}

/// A JWT split into its parts; nothing is trusted until a signature check passes.
pub(crate) struct Jwt {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

impl Jwt {
    pub fn parse(token: &str) -> Option<Jwt> {
        let mut parts = token.trim().split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let object = |text: &str| match serde_json::from_slice(&b64url_decode(text)?) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        };
        Some(Jwt {
            header: object(h)?,
            claims: object(c)?,
            signing_input: format!("{h}.{c}"),
            signature: b64url_decode(s)?,
        })
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A numeric date claim (`exp`, `nbf`, `iat`); some libraries write floats.
    pub fn claim_time(&self, name: &str) -> Option<i64> {
        let value = self.claims.get(name)?;
        value.as_i64().or_else(|| value.as_f64().map(|f| f as i64))
    }
}

/// Checks `jwt`'s signature with a PKCS#1 `RSAPublicKey`.
pub(crate) fn verify(alg: &'static RsaParameters, public_der: &[u8], jwt: &Jwt) -> bool {
    UnparsedPublicKey::new(alg, public_der)
        .verify(jwt.signing_input.as_bytes(), &jwt.signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_verifies_rotates() {
        let ring = KeyRing::new();
        let first = ring.current();
        let token = first.sign(&json!({"aud": "x"}));
        let jwt = Jwt::parse(&token).unwrap();
        assert!(first.verifies(&jwt));
        assert_eq!(jwt.header_str("kid"), Some(first.kid.as_str()));
        ring.rotate();
        assert_eq!(ring.all().len(), 2);
        assert_ne!(ring.current().kid, first.kid);
        assert!(!ring.current().verifies(&jwt));
        ring.retire_old();
        assert!(ring.find(&first.kid).is_none());
        assert!(Jwt::parse("a.b").is_none());
    }
}
