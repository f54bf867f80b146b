//! The keys that seal sign-in flow cookies, kept sealed in the store's keyring so that a
//! login started on one instance completes on another. They are named `flow-key:NNN` (the
//! one-byte key id, three digits, so byte order is id order); the first, `flow-key:001`, is
//! written with [`Keyring::put_once`] so instances starting together share it. The newest
//! key seals, every key opens, so a rotation never breaks a flow in progress.
//!
//! Instances learn of a new key two ways: [`FlowKeys::reload`] every minute (from the
//! gateway's key reload task), after which they seal with it too; and at once when a
//! request carries a flow cookie sealed with a key id newer than any loaded here
//! ([`FlowKeys::sealer_for`]), so a login started just after a rotation on another instance
//! still completes. Keys are never deleted automatically: each is 32 bytes and ids stop at
//! 255.

use std::sync::{Arc, RwLock};

use http::HeaderMap;

use super::flow::{FLOW_COOKIE_PREFIX, cookies};
use super::session::SessionError;
use crate::keyring::{Keyring, KeyringError};
use crate::seal::{KEY_LEN, Sealer};

/// Keyring name prefix of the flow-cookie keys.
pub const NAME_PREFIX: &str = "flow-key:";

fn name(id: u8) -> String {
    format!("{NAME_PREFIX}{id:03}")
}

/// The flow-cookie sealer, shared through the keyring; cheap to read on every request.
pub struct FlowKeys {
    keyring: Keyring,
    sealer: RwLock<Arc<Sealer>>,
}

impl std::fmt::Debug for FlowKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowKeys")
            .field("sealer", &self.sealer())
            .finish_non_exhaustive()
    }
}

impl FlowKeys {
    /// Loads the keys, creating the first one when there is none.
    pub async fn load_or_create(keyring: &Keyring) -> Result<FlowKeys, SessionError> {
        if keyring.names(NAME_PREFIX).await?.is_empty() {
            keyring.put_once(&name(1), &Sealer::generate_key()).await?;
        }
        let sealer = read_sealer(keyring).await?;
        Ok(FlowKeys {
            keyring: keyring.clone(),
            sealer: RwLock::new(Arc::new(sealer)),
        })
    }

    /// The sealer as loaded now.
    pub fn sealer(&self) -> Arc<Sealer> {
        self.sealer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the keys from the keyring.
    pub async fn reload(&self) -> Result<(), SessionError> {
        let sealer = Arc::new(read_sealer(&self.keyring).await?);
        *self.sealer.write().unwrap_or_else(|p| p.into_inner()) = sealer;
        Ok(())
    }

    /// The sealer for a request: reloaded first when one of its flow cookies names a key
    /// newer than the newest loaded here (added on another instance since the last reload).
    pub async fn sealer_for(&self, headers: &HeaderMap) -> Arc<Sealer> {
        let sealer = self.sealer();
        let newer = cookies(headers)
            .filter(|(n, _)| n.starts_with(FLOW_COOKIE_PREFIX))
            .filter_map(|(_, v)| Sealer::key_id(v))
            .any(|id| id > sealer.newest_id());
        if !newer {
            return sealer;
        }
        match self.reload().await {
            Ok(()) => self.sealer(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload the flow-cookie keys");
                sealer
            }
        }
    }

    /// Adds a key with the next id; it seals from now on (here at once, elsewhere after
    /// their next reload). Returns its id.
    pub async fn rotate(&self) -> Result<u8, SessionError> {
        let newest = self.newest_stored().await?;
        let id = newest
            .checked_add(1)
            .ok_or_else(|| SessionError::Keys("all 255 flow-cookie key ids are used".into()))?;
        self.keyring
            .put_once(&name(id), &Sealer::generate_key())
            .await?;
        self.reload().await?;
        tracing::info!(id, "new flow-cookie key");
        Ok(id)
    }

    async fn newest_stored(&self) -> Result<u8, KeyringError> {
        let names = self.keyring.names(NAME_PREFIX).await?;
        Ok(names.iter().filter_map(|n| parse_id(n)).max().unwrap_or(0))
    }
}

fn parse_id(name: &str) -> Option<u8> {
    name.strip_prefix(NAME_PREFIX)?.parse().ok()
}

/// Every flow key in the keyring, oldest first, as one sealer.
async fn read_sealer(keyring: &Keyring) -> Result<Sealer, SessionError> {
    let mut keys: Vec<(u8, [u8; KEY_LEN])> = Vec::new();
    for name in keyring.names(NAME_PREFIX).await? {
        let Some(id) = parse_id(&name) else {
            tracing::warn!(%name, "ignoring a flow key with an unreadable id");
            continue;
        };
        let Some(bytes) = keyring.get(&name).await? else {
            continue;
        };
        let key = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyringError::Unsealable(name.clone()))?;
        keys.push((id, key));
    }
    if keys.is_empty() {
        return Err(SessionError::Keys("no flow-cookie key in the store".into()));
    }
    keys.sort_by_key(|(id, _)| *id);
    Ok(Sealer::new(&keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn instances_share_the_first_key_and_learn_of_a_rotation_from_a_cookie() {
        let (db, keyring) = crate::keyring::test_keyring().await;
        let (a, b) = tokio::join!(
            FlowKeys::load_or_create(&keyring),
            FlowKeys::load_or_create(&keyring)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let cookie = "__Host-ms365_flow_x";
        let sealed = a.sealer().seal(cookie, b"flow");
        assert_eq!(b.sealer().open(cookie, &sealed).unwrap(), b"flow");
        assert_eq!(a.rotate().await.unwrap(), 2);
        let sealed = a.sealer().seal(cookie, b"newer");
        assert_eq!(Sealer::key_id(&sealed), Some(2));
        assert!(
            b.sealer().open(cookie, &sealed).is_err(),
            "not reloaded yet"
        );
        let mut headers = HeaderMap::new();
        let value = format!("{FLOW_COOKIE_PREFIX}x={sealed}");
        headers.insert(http::header::COOKIE, value.parse().unwrap());
        let opened = b.sealer_for(&headers).await.open(cookie, &sealed).unwrap();
        assert_eq!(opened, b"newer");
        assert_eq!(b.sealer().newest_id(), 2, "b seals with the new key too");
        drop(db);
    }
}
