//! A tenant's key pairs over time: generating ("Generate New Key Pair"), loading the ones
//! that may sign, and promoting a new pair once Microsoft has accepted it. The certificate
//! and the pair's state are rows of `tenant_credentials`; the private key is sealed in the
//! keyring as `tenant-key:<tenant id>:<SHA-1 thumbprint>`, so every instance on the database
//! signs with a pair generated on any of them and no key file is written. The rollover rule:
//! a new pair is tried first, but while it is `pending` the previous `active` pair stays
//! available, so an administrator who has not uploaded the new `public_key.pem` yet loses
//! nothing; the first token obtained with the new pair makes it `active`.
//!
//! The Microsoft layer ([`crate::entra`]) reaches these pairs only through its
//! [`SigningKeys`] trait, so it knows nothing of the store.

use std::path::Path;
use std::sync::Arc;

use crate::entra::credential::{self, CertificateInfo, KeyBits, TenantCredential};
use crate::entra::token::KeysFuture;
use crate::entra::{OidcError, SigningKeys};
use crate::ids::TenantId;
use crate::keyring::{Keyring, KeyringError};
use crate::store::{CredentialRecord, CredentialState, Store, StoreError, Tenant};

/// Failures of keeping a tenant's key pairs.
#[derive(Debug, thiserror::Error)]
pub enum TenantKeyError {
    /// Generating, parsing or pairing a key or certificate failed, or the tenant has none.
    #[error(transparent)]
    Credential(#[from] OidcError),
    #[error("the private key in the store: {0}")]
    Keyring(#[from] KeyringError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read a key file of an earlier version: {0}")]
    Io(#[from] std::io::Error),
}

impl From<TenantKeyError> for OidcError {
    /// What the Microsoft layer sees: its own errors as they were, the rest as a failure of
    /// the key store.
    fn from(e: TenantKeyError) -> Self {
        match e {
            TenantKeyError::Credential(e) => e,
            other => OidcError::KeyStore(Box::new(other)),
        }
    }
}

/// Default certificate lifetime, as the PortSIP guide describes ("valid for one year").
pub const DEFAULT_VALID_DAYS: u32 = 365;

/// The keyring name of a tenant's private key.
pub fn key_name(tenant_id: &TenantId, thumbprint_sha1: &str) -> String {
    format!("tenant-key:{tenant_id}:{thumbprint_sha1}")
}

/// Key pairs of all tenants: private keys sealed in the keyring, the rest in the store.
#[derive(Clone, Debug)]
pub struct TenantKeys {
    store: Store,
    keyring: Keyring,
}

impl TenantKeys {
    pub fn new(store: Store, keyring: Keyring) -> Self {
        TenantKeys { store, keyring }
    }

    /// Generates a pair for `tenant`. It becomes active at once when the tenant has none,
    /// otherwise pending until it has produced a token.
    pub async fn generate(
        &self,
        tenant: &Tenant,
        bits: KeyBits,
        valid_days: u32,
    ) -> Result<CertificateInfo, TenantKeyError> {
        let (id, name) = (tenant.id.clone(), tenant.name.clone());
        // RSA generation takes tens of milliseconds: keep it off the async workers.
        let pair =
            tokio::task::spawn_blocking(move || credential::generate(&id, &name, bits, valid_days))
                .await
                .map_err(|e| OidcError::Crypto(e.to_string()))??;
        let name = key_name(&tenant.id, &pair.info.thumbprint_sha1);
        self.keyring
            .put_once(&name, pair.key_pem().as_bytes())
            .await?;
        let has_active = self
            .store
            .usable_credentials(&tenant.id)
            .await?
            .iter()
            .any(|c| c.state == CredentialState::Active);
        let state = if has_active {
            CredentialState::Pending
        } else {
            CredentialState::Active
        };
        self.store
            .insert_credential(&tenant.id, &pair.info, state)
            .await?;
        tracing::info!(tenant = %tenant.id, thumbprint = %pair.info.thumbprint_sha1, ?state, "generated a key pair");
        Ok(pair.info)
    }

    /// The credentials that may sign, in the order to try them: pending (newest) first.
    pub async fn signing_credentials(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Vec<Arc<TenantCredential>>, TenantKeyError> {
        let records = self.store.usable_credentials(tenant_id).await?;
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            if let Some(credential) = self.load(&r).await? {
                out.push(Arc::new(credential));
            }
        }
        if out.is_empty() {
            return Err(OidcError::NoCredential {
                tenant: tenant_id.to_string(),
            }
            .into());
        }
        Ok(out)
    }

    /// The credential of `record` with its private key from the keyring; `None` (and a
    /// warning) when the key is not there.
    async fn load(
        &self,
        record: &CredentialRecord,
    ) -> Result<Option<TenantCredential>, TenantKeyError> {
        let name = key_name(&record.tenant_id, &record.info.thumbprint_sha1);
        let Some(key) = self.keyring.get(&name).await? else {
            tracing::warn!(%name, "the private key of a usable certificate is not in the store");
            return Ok(None);
        };
        let key = String::from_utf8(key).map_err(|e| OidcError::Crypto(format!("{name}: {e}")))?;
        Ok(Some(TenantCredential::from_pem(
            &record.info.certificate_pem,
            &key,
        )?))
    }

    /// Moves into the keyring the private keys an earlier version kept as files
    /// (`data_dir/tenants/<id>/credentials/<thumbprint>.key`), for usable credentials whose
    /// key the keyring lacks. The files are left for the administrator to delete. Returns
    /// how many keys were imported.
    pub async fn import_key_files(&self, data_dir: &Path) -> Result<usize, TenantKeyError> {
        let root = data_dir.join("tenants");
        if !root.is_dir() {
            return Ok(0);
        }
        let mut imported = 0;
        for tenant in self.store.tenants().await? {
            for r in self.store.usable_credentials(&tenant.id).await? {
                let name = key_name(&tenant.id, &r.info.thumbprint_sha1);
                let file = root
                    .join(tenant.id.as_str())
                    .join("credentials")
                    .join(format!("{}.key", r.info.thumbprint_sha1));
                if !file.is_file() || self.keyring.get(&name).await?.is_some() {
                    continue;
                }
                let pem = std::fs::read_to_string(&file)?;
                TenantCredential::from_pem(&r.info.certificate_pem, &pem)?;
                self.keyring.put_once(&name, pem.as_bytes()).await?;
                tracing::warn!(file = %file.display(), "imported a tenant private key file into the store (sealed); delete the file");
                imported += 1;
            }
        }
        Ok(imported)
    }

    /// The certificate to hand out as `public_key.pem`: the newest usable one.
    pub async fn current_certificate(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Option<CertificateInfo>, TenantKeyError> {
        Ok(self
            .store
            .usable_credentials(tenant_id)
            .await?
            .into_iter()
            .next()
            .map(|r| r.info))
    }

    /// Called after Microsoft accepted `thumbprint`: promotes it if it was pending.
    pub async fn confirm(
        &self,
        tenant_id: &TenantId,
        thumbprint: &str,
    ) -> Result<(), TenantKeyError> {
        self.store
            .activate_credential(tenant_id, thumbprint)
            .await?;
        Ok(())
    }
}

impl SigningKeys for TenantKeys {
    fn signing_credentials<'a>(
        &'a self,
        tenant_id: &'a TenantId,
    ) -> KeysFuture<'a, Vec<Arc<TenantCredential>>> {
        Box::pin(async move { Ok(TenantKeys::signing_credentials(self, tenant_id).await?) })
    }

    fn confirm<'a>(&'a self, tenant_id: &'a TenantId, thumbprint: &'a str) -> KeysFuture<'a, ()> {
        Box::pin(async move { Ok(TenantKeys::confirm(self, tenant_id, thumbprint).await?) })
    }
}
