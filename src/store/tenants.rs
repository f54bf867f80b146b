//! PBX tenants: the unit of isolation. Every other table hangs off a tenant id.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_epoch};
use crate::config::TenantSeed;
use crate::ids::TenantId;

/// A PBX tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    /// The tenant's SIP domain (what users type on the login page).
    pub domain: String,
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Tenant {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Tenant {
            id: row.try_get("id")?,
            domain: row.try_get("domain")?,
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

macro_rules! select_tenants {
    ($rest:literal) => {
        concat!(
            "SELECT id, domain, name, created_at, updated_at FROM tenants ",
            $rest
        )
    };
}

impl Store {
    /// Creates the tenant or updates its domain and name; a domain taken by another tenant
    /// is a conflict.
    pub async fn upsert_tenant(&self, seed: &TenantSeed) -> Result<Tenant, StoreError> {
        if let Some(other) = self.tenant_by_domain(&seed.domain).await?
            && other.id != seed.id
        {
            return Err(StoreError::Conflict(format!(
                "domain {} already belongs to tenant {}",
                seed.domain, other.id
            )));
        }
        let now = now_epoch();
        sqlx::query(
            "INSERT INTO tenants (id, domain, name, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (id) DO UPDATE SET domain = excluded.domain, name = excluded.name,
             updated_at = excluded.updated_at",
        )
        .bind(&seed.id)
        .bind(&seed.domain)
        .bind(&seed.name)
        .bind(now)
        .execute(self.pool())
        .await?;
        self.tenant(&seed.id).await?.ok_or_else(|| {
            StoreError::Conflict(format!("tenant {} vanished while being written", seed.id))
        })
    }

    pub async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        let row = sqlx::query(select_tenants!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(Tenant::from_row).transpose()?)
    }

    /// Looks a tenant up by SIP domain (case-insensitive, as DNS names are).
    pub async fn tenant_by_domain(&self, domain: &str) -> Result<Option<Tenant>, StoreError> {
        let row = sqlx::query(select_tenants!("WHERE domain = $1"))
            .bind(domain.to_ascii_lowercase())
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(Tenant::from_row).transpose()?)
    }

    pub async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query(select_tenants!("ORDER BY id"))
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(Tenant::from_row)
            .collect::<Result<_, _>>()?)
    }
}
