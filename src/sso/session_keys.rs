//! The gateway's own ES256 keys for PBX session tokens: generation, persistence under
//! `<data_dir>/keys/session-es256-<kid>.pem` (PKCS#8, mode 0600), rotation, signing and the
//! public JWKS served at `/ms365/jwks.json`.
//!
//! `kid` is the RFC 7638 JWK thumbprint (SHA-256, base64url), so it is derived from the key
//! itself and a file name can never claim another key's id. The newest key signs; the one
//! before it stays published so tokens signed just before a rotation keep verifying until
//! they expire (tokens live at most an hour). Older keys are retired: dropped from the JWKS
//! and their files removed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{Value, json};

use super::session::SessionError;

/// How many keys stay loaded and published: the signing key and its predecessor.
const KEPT_KEYS: usize = 2;
const FILE_PREFIX: &str = "session-es256-";
const FILE_SUFFIX: &str = ".pem";

/// One loaded key pair. The private half stays out of `Debug` and logs.
struct SigningKey {
    kid: String,
    x: String,
    y: String,
    encoding: EncodingKey,
    /// The key file's modification time: the only record of which key is newest.
    modified: SystemTime,
}

impl SigningKey {
    /// Parses a PKCS#8 P-256 private key in PEM form.
    fn from_pem(pem: &str) -> Result<SigningKey, SessionError> {
        let pair = rcgen::KeyPair::from_pem(pem).map_err(|e| keys_err("parse", e))?;
        if pair.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(SessionError::Keys(
                "a session key file holds a key that is not P-256".into(),
            ));
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
            kid: jwk_thumbprint(&x, &y),
            x,
            y,
            encoding,
            modified: SystemTime::UNIX_EPOCH,
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
    dir: PathBuf,
    /// Oldest first; the last one signs.
    keys: RwLock<Vec<Arc<SigningKey>>>,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("dir", &self.dir)
            .field("kids", &self.kids())
            .field("private_keys", &"<redacted>")
            .finish()
    }
}

impl SessionKeys {
    /// Loads every `session-es256-*.pem` under `<data_dir>/keys` (newest by modification time
    /// signs), or creates the first key when there is none.
    pub fn load_or_create(data_dir: &Path) -> Result<SessionKeys, SessionError> {
        let dir = data_dir.join("keys");
        let mut loaded = load_dir(&dir)?;
        if loaded.len() > KEPT_KEYS {
            let ignored: Vec<&str> = loaded[..loaded.len() - KEPT_KEYS]
                .iter()
                .map(|k| k.kid.as_str())
                .collect();
            tracing::warn!(?ignored, "ignoring retired session signing keys");
            loaded.drain(..loaded.len() - KEPT_KEYS);
        }
        let keys = SessionKeys {
            dir,
            keys: RwLock::new(loaded.into_iter().map(Arc::new).collect()),
        };
        if keys.read().is_empty() {
            keys.rotate()?;
        }
        Ok(keys)
    }

    /// Generates and persists a new signing key. The previous key stays published; anything
    /// older is retired (dropped from the JWKS, its file removed).
    pub fn rotate(&self) -> Result<String, SessionError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| keys_err("generation", e))?;
        let pem = pair.serialize_pem();
        let mut key = SigningKey::from_pem(&pem)?;
        let newest = self.read().last().map(|k| k.modified);
        key.modified = self.persist(&key.kid, &pem, newest)?;
        let kid = key.kid.clone();
        let retired = {
            let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
            keys.push(Arc::new(key));
            let excess = keys.len().saturating_sub(KEPT_KEYS);
            keys.drain(..excess).collect::<Vec<_>>()
        };
        for old in retired {
            let path = self.dir.join(file_name(&old.kid));
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a retired session key");
            }
        }
        tracing::info!(%kid, "new session signing key");
        Ok(kid)
    }

    /// Writes a new key file whose modification time is later than `newest`'s. Coarse file
    /// timestamps would otherwise let two keys made in one clock tick tie, and a restart
    /// could then sign with the older one.
    fn persist(
        &self,
        kid: &str,
        pem: &str,
        newest: Option<SystemTime>,
    ) -> Result<SystemTime, SessionError> {
        let path = self.dir.join(file_name(kid));
        let io = |source| SessionError::Io {
            path: path.clone(),
            source,
        };
        crate::fsutil::write_private(&path, pem.as_bytes()).map_err(io)?;
        let now = SystemTime::now();
        // Whole seconds ahead, so filesystems with second-resolution times keep the order too.
        let modified = match newest {
            Some(t) if t + Duration::from_secs(1) > now => t + Duration::from_secs(1),
            _ => now,
        };
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(modified))
            .map_err(io)?;
        Ok(modified)
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

fn file_name(kid: &str) -> String {
    format!("{FILE_PREFIX}{kid}{FILE_SUFFIX}")
}

/// Reads the key files in `dir`, oldest first (modification time, then kid for a stable order).
fn load_dir(dir: &Path) -> Result<Vec<SigningKey>, SessionError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SessionError::Io { path, source }
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry.map_err(io(dir))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !(name.starts_with(FILE_PREFIX) && name.ends_with(FILE_SUFFIX)) {
            continue;
        }
        let pem = std::fs::read_to_string(&path).map_err(io(&path))?;
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let key = SigningKey::from_pem(&pem)
            .map_err(|e| SessionError::Keys(format!("{}: {e}", path.display())))?;
        if name != file_name(&key.kid) {
            tracing::warn!(file = name, kid = %key.kid, "session key file name does not match its thumbprint");
        }
        found.push(SigningKey { modified, ..key });
    }
    found.sort_by(|a, b| a.modified.cmp(&b.modified).then_with(|| a.kid.cmp(&b.kid)));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        // RFC 7638 publishes only an RSA vector, so cross-check against an independent
        // implementation instead.
        let dir = tempfile::tempdir().unwrap();
        let keys = SessionKeys::load_or_create(dir.path()).unwrap();
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

    #[test]
    fn debug_is_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let keys = SessionKeys::load_or_create(dir.path()).unwrap();
        let debug = format!("{keys:?}");
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains("PRIVATE"));
    }
}
