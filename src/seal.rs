//! Sealed cookies: AES-256-GCM (aws-lc-rs, the process's one crypto library) with the
//! cookie's name as associated data, so a value cannot be moved from one cookie to another.
//! Keys carry a one-byte id and several may be loaded: the newest seals, all of them open,
//! which is how keys rotate without breaking logins in progress.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Key length in bytes.
pub const KEY_LEN: usize = 32;

/// A set of sealing keys; the last one seals.
pub struct Sealer {
    keys: Vec<(u8, LessSafeKey)>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("Sealer")
            .field("key_ids", &ids)
            .finish_non_exhaustive()
    }
}

/// A sealed value could not be opened: wrong key, tampered, or not ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the sealed value is invalid or was tampered with")]
pub struct Unsealable;

impl Sealer {
    /// `keys` as (id, 32 secret bytes), oldest first.
    pub fn new(keys: &[(u8, [u8; KEY_LEN])]) -> Sealer {
        assert!(!keys.is_empty(), "at least one sealing key");
        let keys = keys
            .iter()
            .map(|(id, bytes)| {
                (
                    *id,
                    LessSafeKey::new(
                        UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte AES key"),
                    ),
                )
            })
            .collect();
        Sealer {
            keys,
            rng: SystemRandom::new(),
        }
    }

    /// A fresh random key.
    pub fn generate_key() -> [u8; KEY_LEN] {
        let mut key = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut key)
            .expect("system randomness");
        key
    }

    /// The id of the newest key (the one that seals).
    pub fn newest_id(&self) -> u8 {
        self.keys.last().expect("non-empty").0
    }

    /// Whether a key with this id is loaded.
    pub fn has_key(&self, id: u8) -> bool {
        self.keys.iter().any(|(k, _)| *k == id)
    }

    /// The id of the key a sealed value names (its first byte), without opening it.
    pub fn key_id(sealed: &str) -> Option<u8> {
        let head = sealed.get(..4)?;
        URL_SAFE_NO_PAD.decode(head).ok()?.first().copied()
    }

    /// Encrypts `plaintext` for the cookie `name`; output is URL-safe base64.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> String {
        let (id, key) = self.keys.last().expect("non-empty");
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("system randomness");
        let mut buf = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(name.as_bytes()),
            &mut buf,
        )
        .expect("AES-GCM sealing of a bounded buffer");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(*id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Decrypts a value made by [`Sealer::seal`] for the same cookie name.
    pub fn open(&self, name: &str, sealed: &str) -> Result<Vec<u8>, Unsealable> {
        let raw = URL_SAFE_NO_PAD.decode(sealed).map_err(|_| Unsealable)?;
        if raw.len() < 1 + NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(Unsealable);
        }
        let (id, rest) = (raw[0], &raw[1..]);
        let key = self
            .keys
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, k)| k)
            .ok_or(Unsealable)?;
        let nonce = Nonce::try_assume_unique_for_key(&rest[..NONCE_LEN]).map_err(|_| Unsealable)?;
        let mut buf = rest[NONCE_LEN..].to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut buf)
            .map_err(|_| Unsealable)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_tamper_wrong_name_and_rotation() {
        let old = Sealer::generate_key();
        let new = Sealer::generate_key();
        let before = Sealer::new(&[(1, old)]);
        let sealed = before.seal("__Host-ms365_flow", b"state=abc");
        assert_eq!(
            before.open("__Host-ms365_flow", &sealed).unwrap(),
            b"state=abc"
        );
        assert_eq!(
            before.open("__Host-pbx_session", &sealed),
            Err(Unsealable),
            "bound to the cookie name"
        );
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            before.open("__Host-ms365_flow", std::str::from_utf8(&tampered).unwrap()),
            Err(Unsealable)
        );
        assert_eq!(Sealer::key_id(&sealed), Some(1));
        let rotated = Sealer::new(&[(1, old), (2, new)]);
        assert_eq!(
            (rotated.newest_id(), rotated.has_key(1), rotated.has_key(3)),
            (2, true, false)
        );
        assert_eq!(
            rotated.open("__Host-ms365_flow", &sealed).unwrap(),
            b"state=abc",
            "old flows still open"
        );
        let fresh = rotated.seal("__Host-ms365_flow", b"x");
        assert_eq!(
            before.open("__Host-ms365_flow", &fresh),
            Err(Unsealable),
            "sealed with the new key"
        );
        assert_eq!(Sealer::key_id(&fresh), Some(2));
        assert_eq!(Sealer::key_id("!"), None);
        assert_eq!(before.open("x", "not base64!"), Err(Unsealable));
    }
}
