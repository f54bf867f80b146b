//! Which certificate credentials a tenant has and in what state. The private keys are not
//! here (they are sealed in the keyring); this is the public half and the rollover state:
//! `pending` (generated, not yet proven at Microsoft), `active`, `retired`.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_epoch};
use crate::entra::credential::CertificateInfo;
use crate::ids::TenantId;

/// Rollover state of a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialState {
    Pending,
    Active,
    Retired,
}

impl CredentialState {
    fn as_str(self) -> &'static str {
        match self {
            CredentialState::Pending => "pending",
            CredentialState::Active => "active",
            CredentialState::Retired => "retired",
        }
    }

    fn parse(s: &str) -> Result<Self, sqlx::Error> {
        match s {
            "pending" => Ok(CredentialState::Pending),
            "active" => Ok(CredentialState::Active),
            "retired" => Ok(CredentialState::Retired),
            other => Err(sqlx::Error::Decode(
                format!("unknown credential state {other}").into(),
            )),
        }
    }
}

/// A stored credential (public half).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRecord {
    pub tenant_id: TenantId,
    pub info: CertificateInfo,
    pub state: CredentialState,
    pub created_at: i64,
    pub activated_at: Option<i64>,
}

impl CredentialRecord {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(CredentialRecord {
            tenant_id: row.try_get("tenant_id")?,
            info: CertificateInfo {
                thumbprint_sha1: row.try_get("thumbprint_sha1")?,
                thumbprint_sha256: row.try_get("thumbprint_sha256")?,
                not_before: row.try_get("not_before")?,
                not_after: row.try_get("not_after")?,
                certificate_pem: row.try_get("certificate_pem")?,
            },
            state: CredentialState::parse(&row.try_get::<String, _>("state")?)?,
            created_at: row.try_get("created_at")?,
            activated_at: row.try_get("activated_at")?,
        })
    }
}

impl Store {
    /// Records a new credential in `state`.
    pub async fn insert_credential(
        &self,
        tenant_id: &TenantId,
        info: &CertificateInfo,
        state: CredentialState,
    ) -> Result<(), StoreError> {
        let now = now_epoch();
        let activated = (state == CredentialState::Active).then_some(now);
        sqlx::query(
            "INSERT INTO tenant_credentials (tenant_id, thumbprint_sha1, thumbprint_sha256, not_before, not_after,
             state, certificate_pem, created_at, activated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(tenant_id)
        .bind(&info.thumbprint_sha1)
        .bind(&info.thumbprint_sha256)
        .bind(info.not_before)
        .bind(info.not_after)
        .bind(state.as_str())
        .bind(&info.certificate_pem)
        .bind(now)
        .bind(activated)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The tenant's pending and active credentials: pending first, then newest first.
    pub async fn usable_credentials(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Vec<CredentialRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, thumbprint_sha1, thumbprint_sha256, not_before, not_after, state, certificate_pem,
             created_at, activated_at FROM tenant_credentials
             WHERE tenant_id = $1 AND state <> 'retired'
             ORDER BY CASE state WHEN 'pending' THEN 0 ELSE 1 END, created_at DESC, thumbprint_sha1",
        )
        .bind(tenant_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(CredentialRecord::from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Makes `thumbprint` the active credential and retires the one it replaces, atomically.
    pub async fn activate_credential(
        &self,
        tenant_id: &TenantId,
        thumbprint: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "UPDATE tenant_credentials SET state = 'retired'
             WHERE tenant_id = $1 AND state = 'active' AND thumbprint_sha1 <> $2",
        )
        .bind(tenant_id)
        .bind(thumbprint)
        .execute(&mut *tx)
        .await?;
        let updated = sqlx::query(
            "UPDATE tenant_credentials SET state = 'active', activated_at = $3
             WHERE tenant_id = $1 AND thumbprint_sha1 = $2 AND state <> 'active'",
        )
        .bind(tenant_id)
        .bind(thumbprint)
        .bind(now_epoch())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if updated.rows_affected() > 0 {
            tracing::info!(
                tenant = %tenant_id,
                thumbprint,
                "certificate credential is now active"
            );
        }
        Ok(())
    }
}
