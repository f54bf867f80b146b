//! The keyring of a test: the master key every gateway of a test uses is the file
//! `master.key` in its data directory. On SQLite that is the gateway's own default (generated
//! on first use); on PostgreSQL, where the gateway needs a configured key, [`store_toml`]
//! (`super::db`) writes it beforehand and names it as `store.master_key_file`.
//!
//! [`store_toml`]: super::db::store_toml

use std::path::{Path, PathBuf};

use base64::Engine;
use ms365_gateway::Sealer;
use ms365_gateway::keyring::{GENERATED_KEY_FILE, Keyring, MasterKeySource};
use ms365_gateway::store::Store;

/// The master key file of the test keyed by `data_dir`.
pub fn master_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(GENERATED_KEY_FILE)
}

/// Writes a master key file for `data_dir` unless it has one; returns its path.
pub fn ensure_master_key(data_dir: &Path) -> PathBuf {
    let path = master_key_path(data_dir);
    if !path.exists() {
        std::fs::create_dir_all(data_dir).unwrap();
        std::fs::write(&path, random_key()).unwrap();
    }
    path
}

/// A fresh master key, base64 as the gateway reads it.
pub fn random_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(Sealer::generate_key())
}

/// Opens the keyring of the test keyed by `data_dir` on `store`, with the key its gateway uses.
pub async fn open_keyring(data_dir: &Path, store: &Store) -> Keyring {
    let source = MasterKeySource::Generated(master_key_path(data_dir));
    Keyring::open(store.clone(), &source)
        .await
        .expect("the test's keyring opens")
}
