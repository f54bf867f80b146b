//! The gateway's own ES256 keys for PBX session tokens: generation, keeping them sealed in
//! the store's keyring (shared by every instance on the database), rotation, signing and the
//! public JWKS served at `/ms365/jwks.json`.
//!
//! Keys are named `session-es256:<creation epoch ms, 13 digits>:<kid>`, so byte order is age
//! order; the first one is `session-es256:0000000000000`, written with
//! [`Keyring::put_once`] so instances starting together on an empty database all end up
//! with the same key. `kid` is the RFC 7638 JWK thumbprint (SHA-256, base64url), derived
//! from the key itself. The newest key signs; the one before it stays published so tokens
//! signed just before a rotation keep verifying until they expire (tokens live at most an
//! hour). Older keys are retired: dropped from the JWKS and deleted from the store.
//! [`SessionKeys::reload`] (every minute, from the gateway) brings a rotation made on
//! another instance to this one's signing key and JWKS.

use std::fmt;
use std::sync::{Arc, RwLock};

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{Value, json};

use super::session::SessionError;
use crate::keyring::Keyring;

/// How many keys stay loaded and published: the signing key and its predecessor.
const KEPT_KEYS: usize = 2;
/// Keyring name prefix of the session keys.
pub const NAME_PREFIX: &str = "session-es256:";
/// The name of the first key, whoever creates it.
const FIRST_NAME: &str = "session-es256:0000000000000";

/// One loaded key pair. The private half stays out of `Debug` and logs.
struct SigningKey {
    /// The keyring name, which orders keys by age.
    name: String,
    kid: String,
    x: String,
    y: String,
    encoding: EncodingKey,
}

impl SigningKey {
    /// Parses a PKCS#8 P-256 private key in PEM form.
    fn from_pem(name: &str, pem: &str) -> Result<SigningKey, SessionError> {
        let pair = rcgen::KeyPair::from_pem(pem).map_err(|e| keys_err("parse", e))?;
        if pair.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(SessionError::Keys(format!(
                "the session key {name} is not a P-256 key"
            )));
        }
        let point = pair.public_key_raw();
        // Uncompressed SEC1 point: 0x04 || X (32 bytes) || Y (32 bytes).
        if point.len() != 65 || point[0] != 0x04 {
            return Err(SessionError::Keys(
                "unexpected P-256 public key encoding".into(),
            ));
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| keys_err("load", e))?;
        Ok(SigningKey {
            name: name.to_string(),
            kid: jwk_thumbprint(&x, &y),
            x,
            y,
            encoding,
        })
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "EC", "crv": "P-256", "x": self.x, "y": self.y,
            "kid": self.kid, "use": "sig", "alg": "ES256",
        })
    }
}

/// RFC 7638 thumbprint of an EC public key: the required members in lexicographic order,
/// no whitespace, SHA-256, base64url without padding.
fn jwk_thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes()).as_ref())
}

fn keys_err(what: &str, e: impl fmt::Display) -> SessionError {
    SessionError::Keys(format!("session key {what}: {e}"))
}

/// The session-token signing keys; cheap to share behind an `Arc`.
pub struct SessionKeys {
    keyring: Keyring,
    /// Oldest first; the last one signs.
    keys: RwLock<Vec<Arc<SigningKey>>>,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("kids", &self.kids())
            .field("private_keys", &"<redacted>")
            .finish()
    }
}

impl SessionKeys {
    /// Loads the session keys from the keyring, creating the first one when there is none.
    pub async fn load_or_create(keyring: &Keyring) -> Result<SessionKeys, SessionError> {
        if keyring.names(NAME_PREFIX).await?.is_empty() {
            // Another instance may be first: put_once keeps whichever key was stored first.
            keyring
                .put_once(FIRST_NAME, generate_pem()?.as_bytes())
                .await?;
        }
        let keys = SessionKeys {
            keyring: keyring.clone(),
            keys: RwLock::new(Vec::new()),
        };
        keys.reload().await?;
        Ok(keys)
    }

    /// Re-reads the key list: a key another instance added starts signing here, retired
    /// ones leave the JWKS. Keys already loaded are not read again.
    pub async fn reload(&self) -> Result<(), SessionError> {
        let names = self.keyring.names(NAME_PREFIX).await?;
        let names = &names[names.len().saturating_sub(KEPT_KEYS)..];
        let loaded = self.read().clone();
        let mut next = Vec::with_capacity(names.len());
        for name in names {
            if let Some(key) = loaded.iter().find(|k| k.name == *name) {
                next.push(key.clone());
                continue;
            }
            // Gone between the listing and now: retired by another instance.
            let Some(pem) = self.keyring.get(name).await? else {
                continue;
            };
            let pem = String::from_utf8(pem).map_err(|e| keys_err("text", e))?;
            next.push(Arc::new(SigningKey::from_pem(name, &pem)?));
        }
        if next.is_empty() && loaded.is_empty() {
            return Err(SessionError::Keys(
                "no session signing key in the store".into(),
            ));
        }
        if next.is_empty() {
            // Keep signing with what we have rather than with nothing.
            return Ok(());
        }
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    /// Generates and stores a new signing key. The previous key stays published; anything
    /// older is retired (deleted from the store, dropped from the JWKS here at once and on
    /// other instances at their next reload).
    pub async fn rotate(&self) -> Result<String, SessionError> {
        let pem = generate_pem()?;
        let kid = SigningKey::from_pem("new", &pem)?.kid;
        let names = self.keyring.names(NAME_PREFIX).await?;
        let newest = names.last().and_then(|n| created_ms(n)).unwrap_or(0);
        // Later than the newest even within one millisecond or with a clock set back.
        let created = now_ms().max(newest + 1);
        let name = format!("{NAME_PREFIX}{created:013}:{kid}");
        self.keyring.put_once(&name, pem.as_bytes()).await?;
        let names = self.keyring.names(NAME_PREFIX).await?;
        for old in &names[..names.len().saturating_sub(KEPT_KEYS)] {
            self.keyring.delete(old).await?;
        }
        self.reload().await?;
        tracing::info!(%kid, "new session signing key");
        Ok(kid)
    }

    /// The `kid` of the key that signs now.
    pub fn current_kid(&self) -> String {
        self.current().kid.clone()
    }

    /// Every published `kid`, newest first.
    pub fn kids(&self) -> Vec<String> {
        self.read().iter().rev().map(|k| k.kid.clone()).collect()
    }

    /// The public keys as a JWK Set, newest first.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self.read().iter().rev().map(|k| k.jwk()).collect();
        json!({ "keys": keys })
    }

    /// An ES256 JWT over `claims`, signed by the newest key (header `alg`, `kid`, `typ`).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, SessionError> {
        let key = self.current();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|e| keys_err("signing", e))
    }

    fn current(&self) -> Arc<SigningKey> {
        self.read()
            .last()
            .cloned()
            .expect("load_or_create leaves at least one key")
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<SigningKey>>> {
        // A panic while holding the lock cannot leave the Vec half-updated, so poison is moot.
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// A new P-256 key as PKCS#8 PEM.
fn generate_pem() -> Result<String, SessionError> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| keys_err("generation", e))?;
    Ok(pair.serialize_pem())
}

/// The creation time in a key's name (0 for the first key).
fn created_ms(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    rest.split(':').next()?.parse().ok()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kid_is_the_rfc7638_thumbprint() {
        // RFC 7638 publishes only an RSA vector, so cross-check against an independent
        // implementation instead.
        let (_db, keyring) = crate::keyring::test_keyring().await;
        let keys = SessionKeys::load_or_create(&keyring).await.unwrap();
        let jwks = keys.jwks();
        let jwk = &jwks["keys"][0];
        let kid = jwk_thumbprint(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap());
        assert_eq!(jwk["kid"], kid);
        let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
        assert_eq!(
            parsed
                .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
                .unwrap(),
            kid,
            "agrees with jsonwebtoken's RFC 7638 implementation"
        );
    }

    #[tokio::test]
    async fn debug_is_redacted() {
        let (_db, keyring) = crate::keyring::test_keyring().await;
        let keys = SessionKeys::load_or_create(&keyring).await.unwrap();
        let debug = format!("{keys:?}");
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains("PRIVATE"));
    }

    #[tokio::test]
    async fn names_order_keys_by_age_and_rotation_keeps_two() {
        let (_db, keyring) = crate::keyring::test_keyring().await;
        let keys = SessionKeys::load_or_create(&keyring).await.unwrap();
        let first = keys.current_kid();
        let second = keys.rotate().await.unwrap();
        let third = keys.rotate().await.unwrap();
        assert_eq!(keys.kids(), vec![third.clone(), second.clone()]);
        let names = keyring.names(NAME_PREFIX).await.unwrap();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names[1].ends_with(&third) && names[0].ends_with(&second));
        assert!(created_ms(&names[1]) > created_ms(&names[0]));
        assert!(names.iter().all(|n| !n.contains(&first) && n != FIRST_NAME));
        assert_eq!(created_ms(FIRST_NAME), Some(0));
    }
}
