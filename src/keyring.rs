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

use crate::config::Config;
use crate::seal::{KEY_LEN, Sealer};
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

impl KeyringError {
    /// True when the administrator's configuration is at fault (the key is missing, cannot
    /// be read, is malformed or is not the database's), not the database.
    pub fn is_config_error(&self) -> bool {
        !matches!(self, KeyringError::Unsealable(_) | KeyringError::Store(_))
    }
}

/// Where the master key comes from.
#[derive(Clone)]
pub enum MasterKeySource {
    /// A file holding the base64 key (`store.master_key_file`).
    File(PathBuf),
    /// The value of [`MASTER_KEY_ENV`].
    Env(String),
    /// Generated on first use into this file (SQLite, nothing configured).
    Generated(PathBuf),
}

impl std::fmt::Debug for MasterKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterKeySource::File(p) => f.debug_tuple("File").field(p).finish(),
            MasterKeySource::Env(_) => f.debug_tuple("Env").field(&"<redacted>").finish(),
            MasterKeySource::Generated(p) => f.debug_tuple("Generated").field(p).finish(),
        }
    }
}

/// The master key source of a gateway configured with `config`, in this order: the
/// [`MASTER_KEY_ENV`] variable of this process, `store.master_key_file`, and on SQLite only
/// `data_dir/master.key` (generated on first use). On PostgreSQL without either it is
/// [`KeyringError::Missing`]: instances sharing a database must be given the same key.
pub fn source_for(config: &Config) -> Result<MasterKeySource, KeyringError> {
    choose_source(std::env::var(MASTER_KEY_ENV).ok(), config)
}

fn choose_source(env: Option<String>, config: &Config) -> Result<MasterKeySource, KeyringError> {
    if let Some(value) = env {
        return Ok(MasterKeySource::Env(value));
    }
    if let Some(path) = &config.store.master_key_file {
        return Ok(MasterKeySource::File(path.clone()));
    }
    match config.store.database_url {
        None => Ok(MasterKeySource::Generated(
            config.data_dir.join(GENERATED_KEY_FILE),
        )),
        Some(_) => Err(KeyringError::Missing),
    }
}

impl MasterKeySource {
    /// What [`source_for`] picked, for `check-config` (never the key itself).
    pub fn describe(&self) -> String {
        match self {
            MasterKeySource::File(p) => format!("file {}", p.display()),
            MasterKeySource::Env(_) => format!("environment variable {MASTER_KEY_ENV}"),
            MasterKeySource::Generated(p) => {
                format!("{} (generated on first start)", p.display())
            }
        }
    }

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

/// Writes a fresh key to `path` unless one appears there first: the key is written beside
/// it and hard-linked into place, which fails when the file exists, so two starts racing
/// (or a start and a test) end up with the same key instead of one replacing the other.
fn generate_into(path: &Path) -> Result<[u8; KEY_LEN], KeyringError> {
    let read_err = |source| KeyringError::Read {
        path: path.to_path_buf(),
        source,
    };
    let key = Sealer::generate_key();
    let text = base64::engine::general_purpose::STANDARD.encode(key);
    let nonce =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&Sealer::generate_key()[..9]);
    let tmp = path.with_file_name(format!(".{GENERATED_KEY_FILE}.{nonce}"));
    crate::fsutil::write_private(&tmp, format!("{text}\n").as_bytes()).map_err(read_err)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated the master key");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path).map_err(read_err)?;
            decode_key(&text, &path.display().to_string())
        }
        Err(e) => Err(read_err(e)),
    }
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

    /// [`Keyring::open`] with the master key [`source_for`] picks for `config`.
    pub async fn open_configured(store: Store, config: &Config) -> Result<Keyring, KeyringError> {
        Keyring::open(store, &source_for(config)?).await
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

    /// Seals `plaintext` under the master key for a row kept elsewhere (not in the secrets
    /// table). `name` is bound into the seal: the value opens only under the same name, so
    /// a sealed value copied to another row does not open there.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> String {
        self.sealer.seal(name, plaintext)
    }

    /// Opens what [`Keyring::seal`] sealed under `name`.
    pub fn open_sealed(&self, name: &str, sealed: &str) -> Result<Vec<u8>, KeyringError> {
        self.unseal(name, sealed)
    }

    fn unseal(&self, name: &str, sealed: &str) -> Result<Vec<u8>, KeyringError> {
        self.sealer
            .open(name, sealed)
            .map_err(|_| KeyringError::Unsealable(name.to_string()))
    }
}

/// A keyring on a test database of its own, for the unit tests of the keys kept in it.
#[cfg(test)]
pub(crate) async fn test_keyring() -> (crate::store::test_db::TestDb, Keyring) {
    let db = crate::store::test_db::TestDb::new().await;
    let store = db.open(2).await.unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode(Sealer::generate_key());
    let keyring = Keyring::open(store, &MasterKeySource::Env(key))
        .await
        .unwrap();
    (db, keyring)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(store: &str) -> Config {
        let toml = format!(
            "data_dir = \"d\"\n[[listener]]\nkind = \"pbx\"\nbind = \"127.0.0.1:0\"\n\
             public_url = \"https://pbx.test\"\ntls_cert = \"self-signed\"\n\
             [upstream]\nurl = \"http://127.0.0.1:9\"\n{store}"
        );
        Config::from_toml(Path::new("gw.toml"), &toml, Vec::new()).unwrap()
    }

    #[test]
    fn the_environment_wins_then_the_file_then_sqlites_generated_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mk");
        std::fs::write(&file, "x").unwrap();
        let with_file = config(&format!(
            "[store]\nmaster_key_file = \"{}\"\n",
            file.display()
        ));
        let source = choose_source(Some("s3cret".into()), &with_file).unwrap();
        assert!(matches!(source, MasterKeySource::Env(ref k) if k == "s3cret"));
        assert!(!format!("{source:?}").contains("s3cret"));
        let source = choose_source(None, &with_file).unwrap();
        assert!(matches!(source, MasterKeySource::File(ref p) if *p == file));
        let source = choose_source(None, &config("")).unwrap();
        assert!(matches!(source, MasterKeySource::Generated(ref p) if p.ends_with("d/master.key")));
        let postgres = config("[store]\ndatabase_url = \"postgres://u@127.0.0.1/x\"\n");
        let err = choose_source(None, &postgres).unwrap_err();
        assert!(matches!(err, KeyringError::Missing) && err.is_config_error());
        assert!(err.to_string().contains(MASTER_KEY_ENV), "{err}");
    }

    #[test]
    fn racing_generations_end_with_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(GENERATED_KEY_FILE);
        let keys: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || load_key(&MasterKeySource::Generated(path)).unwrap())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert!(keys.iter().all(|k| *k == keys[0]));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary files left");
    }

    #[tokio::test]
    async fn secrets_are_kept_sealed_and_a_wrong_key_is_refused() {
        let (db, keyring) = test_keyring().await;
        assert_eq!(keyring.put_once("a:1", b"first").await.unwrap(), b"first");
        assert_eq!(keyring.put_once("a:1", b"second").await.unwrap(), b"first");
        keyring.put_once("b:1", b"other").await.unwrap();
        assert_eq!(keyring.names("a:").await.unwrap(), vec!["a:1".to_string()]);
        let sealed = keyring.store.sealed_secret("a:1").await.unwrap().unwrap();
        assert!(!sealed.contains("first"));
        keyring.delete("a:1").await.unwrap();
        assert_eq!(keyring.get("a:1").await.unwrap(), None);
        let other = base64::engine::general_purpose::STANDARD.encode(Sealer::generate_key());
        let err = Keyring::open(db.open(1).await.unwrap(), &MasterKeySource::Env(other))
            .await
            .unwrap_err();
        assert!(matches!(err, KeyringError::WrongKey { .. }), "{err}");
        assert!(err.to_string().contains(MASTER_KEY_ENV), "{err}");
    }

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
