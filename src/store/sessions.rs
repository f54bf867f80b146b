//! PBX session records: one row per session, keyed by the SHA-256 of the cookie value (the
//! value itself is never stored, so a copy of the database cannot be replayed as cookies).
//! Times are Unix seconds passed in by the caller, so expiry logic has one clock.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_epoch};

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Lower-case hex SHA-256 of the cookie value.
    pub id_hash: String,
    pub tenant_id: String,
    /// The Microsoft user (`oid`) the session was issued to.
    pub oid: String,
    pub pbx_user_id: String,
    /// `portal` or `webrtc`.
    pub client_kind: String,
    /// Name of the listener the session was issued on.
    pub listener: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_seen_at: i64,
    pub revoked_at: Option<i64>,
}

impl SessionRecord {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(SessionRecord {
            id_hash: row.try_get("id_hash")?,
            tenant_id: row.try_get("tenant_id")?,
            oid: row.try_get("oid")?,
            pbx_user_id: row.try_get("pbx_user_id")?,
            client_kind: row.try_get("client_kind")?,
            listener: row.try_get("listener")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            last_seen_at: row.try_get("last_seen_at")?,
            revoked_at: row.try_get("revoked_at")?,
        })
    }

    /// Usable at `now`: neither revoked nor expired.
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

impl Store {
    /// Inserts a new session; an existing `id_hash` is a conflict (32 random bytes never
    /// collide, so it would mean a bug, not bad luck).
    pub async fn create_session(&self, r: &SessionRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id_hash, tenant_id, oid, pbx_user_id, client_kind, listener,
             created_at, expires_at, last_seen_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&r.id_hash)
        .bind(&r.tenant_id)
        .bind(&r.oid)
        .bind(&r.pbx_user_id)
        .bind(&r.client_kind)
        .bind(&r.listener)
        .bind(r.created_at)
        .bind(r.expires_at)
        .bind(r.last_seen_at)
        .bind(r.revoked_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The session with this hash, live or not (callers judge with [`SessionRecord::is_live`]).
    pub async fn session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id_hash, tenant_id, oid, pbx_user_id, client_kind, listener, created_at,
             expires_at, last_seen_at, revoked_at FROM sessions WHERE id_hash = $1",
        )
        .bind(id_hash)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(SessionRecord::from_row).transpose()?)
    }

    /// Records activity at `now`. Callers throttle this (it is a write per call).
    pub async fn touch_session(&self, id_hash: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET last_seen_at = $2 WHERE id_hash = $1 AND last_seen_at < $2",
        )
        .bind(id_hash)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Revokes one session; `false` when it did not exist or was already revoked (the first
    /// revocation time is kept).
    pub async fn revoke_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = $2 WHERE id_hash = $1 AND revoked_at IS NULL",
        )
        .bind(id_hash)
        .bind(now_epoch())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Revokes every live session of Microsoft user `oid` in `tenant_id`; returns how many.
    pub async fn revoke_user_sessions(
        &self,
        tenant_id: &str,
        oid: &str,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = $3
             WHERE tenant_id = $1 AND oid = $2 AND revoked_at IS NULL",
        )
        .bind(tenant_id)
        .bind(oid)
        .bind(now_epoch())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes sessions that expired, or were revoked, before `before`; returns how many.
    /// Callers pass a time somewhat in the past to keep recent rows for investigation.
    pub async fn delete_expired_sessions(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM sessions WHERE expires_at < $1 OR (revoked_at IS NOT NULL AND revoked_at < $1)",
        )
        .bind(before)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }
}
