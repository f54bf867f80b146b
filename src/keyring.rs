//! The master key and the secrets sealed with it in the store: the session-signing keys,
//! the flow-cookie keys and every tenant's certificate private key. Instances on one
//! database share these through the store; the database only ever holds them sealed
//! (AES-256-GCM with the secret's name as associated data, so a sealed value cannot be
//! moved to another name). The master key comes from a file or an environment variable; on
//! SQLite without either, one is generated into `data_dir/master.key` so the single-machine
//! default needs no setup. A wrong master key is found at start-up: a check value sealed
//! when the database first saw a master key must open.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;

use crate::sso::seal::{KEY_LEN, Sealer};
use crate::store::{Store, StoreError};

/// Environment variable holding the master key (base64 of 32 bytes).
pub const MASTER_KEY_ENV: &str = "MS365GW_MASTER_KEY";
/// File name of the generated master key in `data_dir` (SQLite only).
pub const GENERATED_KEY_FILE: &str = "master.key";
/// Name of the check value that tells a wrong master key.
const CHECK_NAME: &str = "keyring:check";
const CHECK_TEXT: &[u8] = b"ms365-gateway keyring v1";

/// Why the keyring cannot be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(
        "no master key: set {MASTER_KEY_ENV} or `store.master_key_file` (32 random bytes, base64: \
         `openssl rand -base64 32`); every instance on the shared database needs the same key"
    )]
    Missing,
    #[error("the master key from {origin} is not 32 bytes of base64: {reason}")]
    Malformed { origin: String, reason: String },
    #[error("cannot read the master key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the master key from {origin} does not open this database's secrets: it is not the key \
         they were sealed with (every instance must use the same master key)"
    )]
    WrongKey { origin: String },
    #[error("the sealed secret `{0}` does not open: tampered with, or sealed for another name")]
    Unsealable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the master key comes from.
#[derive(Debug, Clone)]
pub enum MasterKeySource {
    /// A file holding the base64 key (`store.master_key_file`).
    File(PathBuf),
    /// The value of [`MASTER_KEY_ENV`].
    Env(String),
    /// Generated on first use into this file (SQLite, nothing configured).
    Generated(PathBuf),
}

impl MasterKeySource {
    fn origin(&self) -> String {
        match self {
            MasterKeySource::File(p) | MasterKeySource::Generated(p) => p.display().to_string(),
            MasterKeySource::Env(_) => MASTER_KEY_ENV.to_string(),
        }
    }
}

/// The master key and the store: seals, opens, and keeps secrets by name. Cheap to clone.
#[derive(Clone)]
pub struct Keyring {
    store: Store,
    sealer: Arc<Sealer>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("master_key", &"<redacted>")
            .finish()
    }
}

fn decode_key(text: &str, origin: &str) -> Result<[u8; KEY_LEN], KeyringError> {
    let malformed = |reason: String| KeyringError::Malformed {
        origin: origin.to_string(),
        reason,
    };
    let text = text.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
        .map_err(|e| malformed(e.to_string()))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| malformed(format!("{} bytes", bytes.len())))
}

fn load_key(source: &MasterKeySource) -> Result<[u8; KEY_LEN], KeyringError> {
    let origin = source.origin();
    match source {
        MasterKeySource::Env(value) => decode_key(value, &origin),
        MasterKeySource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| KeyringError::Read {
                path: path.clone(),
                source,
            })?;
            decode_key(&text, &origin)
        }
        MasterKeySource::Generated(path) => match std::fs::read_to_string(path) {
            Ok(text) => decode_key(&text, &origin),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => generate_into(path),
            Err(source) => Err(KeyringError::Read {
                path: path.clone(),
                source,
            }),
        },
    }
}

fn generate_into(path: &Path) -> Result<[u8; KEY_LEN], KeyringError> {
    let key = Sealer::generate_key();
    let text = base64::engine::general_purpose::STANDARD.encode(key);
    crate::fsutil::write_private(path, format!("{text}\n").as_bytes()).map_err(|source| {
        KeyringError::Read {
            path: path.to_path_buf(),
            source,
        }
    })?;
    tracing::info!(path = %path.display(), "generated the master key");
    Ok(key)
}

impl Keyring {
    /// Loads the master key and checks it against the store (sealing the check value when
    /// the store has none yet).
    pub async fn open(store: Store, source: &MasterKeySource) -> Result<Keyring, KeyringError> {
        let key = load_key(source)?;
        let keyring = Keyring {
            store,
            sealer: Arc::new(Sealer::new(&[(1, key)])),
        };
        let check = keyring.sealer.seal(CHECK_NAME, CHECK_TEXT);
        let stored = keyring
            .store
            .put_sealed_secret_once(CHECK_NAME, &check)
            .await?;
        match keyring.sealer.open(CHECK_NAME, &stored) {
            Ok(text) if text == CHECK_TEXT => Ok(keyring),
            _ => Err(KeyringError::WrongKey {
                origin: source.origin(),
            }),
        }
    }

    /// The secret `name`, opened.
    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, KeyringError> {
        match self.store.sealed_secret(name).await? {
            Some(sealed) => Ok(Some(self.unseal(name, &sealed)?)),
            None => Ok(None),
        }
    }

    /// Stores `plaintext` as `name` unless it exists; returns what is stored (another
    /// instance may have been first).
    pub async fn put_once(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, KeyringError> {
        let sealed = self.sealer.seal(name, plaintext);
        let stored = self.store.put_sealed_secret_once(name, &sealed).await?;
        self.unseal(name, &stored)
    }

    /// The names of the secrets starting with `prefix`, in byte order.
    pub async fn names(&self, prefix: &str) -> Result<Vec<String>, KeyringError> {
        Ok(self.store.sealed_secret_names(prefix).await?)
    }

    pub async fn delete(&self, name: &str) -> Result<(), KeyringError> {
        Ok(self.store.delete_sealed_secret(name).await?)
    }

    fn unseal(&self, name: &str, sealed: &str) -> Result<Vec<u8>, KeyringError> {
        self.sealer
            .open(name, sealed)
            .map_err(|_| KeyringError::Unsealable(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode_from_base64_of_32_bytes_only() {
        let key = Sealer::generate_key();
        let text = base64::engine::general_purpose::STANDARD.encode(key);
        assert_eq!(decode_key(&format!("{text}\n"), "x").unwrap(), key);
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        let err = decode_key(&short, "the file").unwrap_err().to_string();
        assert!(
            err.contains("the file") && err.contains("16 bytes"),
            "{err}"
        );
        assert!(decode_key("not base64!", "x").is_err());
    }

    #[test]
    fn a_generated_key_is_kept_owner_only_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(GENERATED_KEY_FILE);
        let source = MasterKeySource::Generated(path.clone());
        let first = load_key(&source).unwrap();
        assert_eq!(load_key(&source).unwrap(), first);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }

    #[test]
    fn debug_shows_no_key() {
        let err = KeyringError::WrongKey {
            origin: MASTER_KEY_ENV.into(),
        };
        assert!(err.to_string().contains("not the key"));
    }
}
