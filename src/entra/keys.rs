//! A tenant's key pairs over time: generating ("Generate New Key Pair"), loading the ones
//! that may sign, and promoting a new pair once Microsoft has accepted it. The rollover rule:
//! a new pair is tried first, but while it is `pending` the previous `active` pair stays
//! available, so an administrator who has not uploaded the new `public_key.pem` yet loses
//! nothing; the first token obtained with the new pair makes it `active`.

use std::path::PathBuf;
use std::sync::Arc;

use super::credential::{self, CertificateInfo, KeyBits, TenantCredential};
use super::error::OidcError;
use crate::store::{CredentialState, Store, Tenant};

/// Default certificate lifetime, as the PortSIP guide describes ("valid for one year").
pub const DEFAULT_VALID_DAYS: u32 = 365;

/// Key pairs of all tenants: files under `data_dir`, state in the store.
#[derive(Clone, Debug)]
pub struct TenantKeys {
    store: Store,
    data_dir: PathBuf,
}

impl TenantKeys {
    pub fn new(store: Store, data_dir: impl Into<PathBuf>) -> Self {
        TenantKeys {
            store,
            data_dir: data_dir.into(),
        }
    }

    /// Generates a pair for `tenant`. It becomes active at once when the tenant has none,
    /// otherwise pending until it has produced a token.
    pub async fn generate(
        &self,
        tenant: &Tenant,
        bits: KeyBits,
        valid_days: u32,
    ) -> Result<CertificateInfo, OidcError> {
        let (id, name) = (tenant.id.clone(), tenant.name.clone());
        // RSA generation takes tens of milliseconds: keep it off the async workers.
        let pair =
            tokio::task::spawn_blocking(move || credential::generate(&id, &name, bits, valid_days))
                .await
                .map_err(|e| OidcError::Crypto(e.to_string()))??;
        let dir = credential::credential_dir(&self.data_dir, &tenant.id);
        credential::save(&dir, &pair)?;
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
        tenant_id: &str,
    ) -> Result<Vec<Arc<TenantCredential>>, OidcError> {
        let dir = credential::credential_dir(&self.data_dir, tenant_id);
        let records = self.store.usable_credentials(tenant_id).await?;
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            out.push(Arc::new(credential::load(&dir, &r.info.thumbprint_sha1)?));
        }
        if out.is_empty() {
            return Err(OidcError::NoCredential {
                tenant: tenant_id.to_string(),
            });
        }
        Ok(out)
    }

    /// The certificate to hand out as `public_key.pem`: the newest usable one.
    pub async fn current_certificate(
        &self,
        tenant_id: &str,
    ) -> Result<Option<CertificateInfo>, OidcError> {
        Ok(self
            .store
            .usable_credentials(tenant_id)
            .await?
            .into_iter()
            .next()
            .map(|r| r.info))
    }

    /// Called after Microsoft accepted `thumbprint`: promotes it if it was pending.
    pub async fn confirm(&self, tenant_id: &str, thumbprint: &str) -> Result<(), OidcError> {
        self.store
            .activate_credential(tenant_id, thumbprint)
            .await?;
        Ok(())
    }
}
