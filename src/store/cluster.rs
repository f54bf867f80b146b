//! What several gateway instances on one database coordinate through: the per-tenant sync
//! lease (one instance syncs a tenant at a time), the schedule slots (a scheduled minute
//! fires once cluster-wide), redeemed sign-in states (a state replayed on another instance is
//! still refused) and the sealed secrets every instance must share (session-signing keys,
//! flow-cookie keys, tenants' certificate keys; sealed above this layer with the master key,
//! stored here as text).
//!
//! Each claim is one conditional `INSERT … ON CONFLICT … DO UPDATE … WHERE` statement. It is
//! atomic on both SQLite and PostgreSQL (PostgreSQL takes the row lock and re-checks the
//! condition), so no instance can see a claim half-made and no lock is held across awaits.

use sqlx::Row;

use super::{Store, StoreError, now_epoch};
use crate::ids::TenantId;

pub(super) const MIGRATION: &str = "
CREATE TABLE sync_leases (
    tenant_id   TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    owner       TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE TABLE sync_schedule (
    tenant_id   TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    last_slot   BIGINT NOT NULL
);
CREATE TABLE used_states (
    state_hash  TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX used_states_by_expiry ON used_states (expires_at);
CREATE TABLE sealed_secrets (
    name        TEXT PRIMARY KEY,
    sealed      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);";

/// Who holds a tenant's sync lease, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub owner: String,
    pub expires_at: i64,
}

impl Store {
    /// Takes (or renews) `tenant_id`'s sync lease for `owner` until `expires_at`; false when
    /// another owner holds an unexpired lease.
    pub async fn acquire_sync_lease(
        &self,
        tenant_id: &TenantId,
        owner: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO sync_leases (tenant_id, owner, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
             WHERE sync_leases.owner = excluded.owner OR sync_leases.expires_at < $4",
        )
        .bind(tenant_id)
        .bind(owner)
        .bind(expires_at)
        .bind(now_epoch())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Extends a lease `owner` still holds; false when it was lost (expired and taken).
    pub async fn renew_sync_lease(
        &self,
        tenant_id: &TenantId,
        owner: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sync_leases SET expires_at = $3 WHERE tenant_id = $1 AND owner = $2",
        )
        .bind(tenant_id)
        .bind(owner)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a lease back (a no-op when `owner` no longer holds it).
    pub async fn release_sync_lease(
        &self,
        tenant_id: &TenantId,
        owner: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sync_leases WHERE tenant_id = $1 AND owner = $2")
            .bind(tenant_id)
            .bind(owner)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn sync_lease(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Option<LeaseHolder>, StoreError> {
        let row = sqlx::query("SELECT owner, expires_at FROM sync_leases WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row
            .map(|r| -> Result<LeaseHolder, sqlx::Error> {
                Ok(LeaseHolder {
                    owner: r.try_get("owner")?,
                    expires_at: r.try_get("expires_at")?,
                })
            })
            .transpose()?)
    }

    /// Claims the scheduled slot `slot` (epoch seconds of the due minute) of `tenant_id`:
    /// true for exactly one caller per slot across all instances.
    pub async fn claim_schedule_slot(
        &self,
        tenant_id: &TenantId,
        slot: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO sync_schedule (tenant_id, last_slot) VALUES ($1, $2)
             ON CONFLICT (tenant_id) DO UPDATE SET last_slot = excluded.last_slot
             WHERE sync_schedule.last_slot < excluded.last_slot",
        )
        .bind(tenant_id)
        .bind(slot)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a redeemed sign-in state; false when it was redeemed before (a replay).
    pub async fn redeem_state(
        &self,
        state_hash: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO used_states (state_hash, expires_at) VALUES ($1, $2)
             ON CONFLICT (state_hash) DO NOTHING",
        )
        .bind(state_hash)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets redeemed states whose flow could no longer be completed anyway.
    pub async fn purge_used_states(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM used_states WHERE expires_at < $1")
            .bind(now_epoch())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// A sealed secret by name.
    pub async fn sealed_secret(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT sealed FROM sealed_secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.try_get("sealed")).transpose()?)
    }

    /// Stores `sealed` under `name` unless a secret of that name exists; returns the stored
    /// one, so instances starting together all end up with the same secret.
    pub async fn put_sealed_secret_once(
        &self,
        name: &str,
        sealed: &str,
    ) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO sealed_secrets (name, sealed, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(sealed)
        .bind(now_epoch())
        .execute(self.pool())
        .await?;
        self.sealed_secret(name)
            .await?
            .ok_or_else(|| StoreError::Conflict(format!("secret {name} vanished while written")))
    }

    /// Names of sealed secrets starting with `prefix`, in byte order.
    pub async fn sealed_secret_names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // Filtered here, not with LIKE or a range: no wildcards to escape, and PostgreSQL's
        // collation need not order punctuation bytewise. Names are few and short.
        let rows = sqlx::query("SELECT name FROM sealed_secrets")
            .fetch_all(self.pool())
            .await?;
        let mut names: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String, _>("name"))
            .collect::<Result<_, _>>()?;
        names.retain(|n| n.starts_with(prefix));
        names.sort();
        Ok(names)
    }

    pub async fn delete_sealed_secret(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sealed_secrets WHERE name = $1")
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
