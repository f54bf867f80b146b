//! Tenant-administrator API tokens. Only the SHA-256 of a token is kept: the token itself is
//! shown once when issued, so a copy of the database cannot be replayed against the API.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_epoch};
use crate::ids::TenantId;

pub(super) const MIGRATION: &str = "
CREATE TABLE admin_tokens (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    token_hash    TEXT NOT NULL UNIQUE,
    label         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT
);
CREATE INDEX admin_tokens_by_tenant ON admin_tokens (tenant_id);";

/// Tokens may expire (`NULL`: never).
pub(super) const EXPIRY_MIGRATION: &str = "ALTER TABLE admin_tokens ADD COLUMN expires_at BIGINT;";

/// An issued token, without the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub id: String,
    pub tenant_id: TenantId,
    pub label: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    /// When it stops working (Unix seconds); `None`: when revoked.
    pub expires_at: Option<i64>,
}

impl AdminToken {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(AdminToken {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            label: row.try_get("label")?,
            created_at: row.try_get("created_at")?,
            last_used_at: row.try_get("last_used_at")?,
            expires_at: row.try_get("expires_at")?,
        })
    }
}

impl Store {
    /// Records a token by its hash.
    pub async fn insert_admin_token(
        &self,
        tenant_id: &TenantId,
        token_hash: &str,
        label: &str,
        expires_at: Option<i64>,
    ) -> Result<AdminToken, StoreError> {
        let token = AdminToken {
            id: uuid::Uuid::new_v4().to_string(),
            tenant_id: tenant_id.clone(),
            label: label.to_string(),
            created_at: now_epoch(),
            last_used_at: None,
            expires_at,
        };
        sqlx::query(
            "INSERT INTO admin_tokens (id, tenant_id, token_hash, label, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&token.id)
        .bind(&token.tenant_id)
        .bind(token_hash)
        .bind(&token.label)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(self.pool())
        .await?;
        Ok(token)
    }

    /// The unexpired token with this hash, marked as used now.
    pub async fn use_admin_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<AdminToken>, StoreError> {
        let row = sqlx::query(
            "UPDATE admin_tokens SET last_used_at = $2
             WHERE token_hash = $1 AND (expires_at IS NULL OR expires_at > $2)
             RETURNING id, tenant_id, label, created_at, last_used_at, expires_at",
        )
        .bind(token_hash)
        .bind(now_epoch())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(AdminToken::from_row).transpose()?)
    }

    /// A tenant's tokens (never the tokens themselves), oldest first.
    pub async fn admin_tokens(&self, tenant_id: &TenantId) -> Result<Vec<AdminToken>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, label, created_at, last_used_at, expires_at FROM admin_tokens
             WHERE tenant_id = $1 ORDER BY created_at, id",
        )
        .bind(tenant_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(AdminToken::from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Withdraws a token; true when it existed.
    pub async fn revoke_admin_token(
        &self,
        tenant_id: &TenantId,
        id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM admin_tokens WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
