//! PBX session records: one row per session, keyed by the SHA-256 of the cookie value (the
//! value itself is never stored, so a copy of the database cannot be replayed as cookies).
//! Times are Unix seconds passed in by the caller, so expiry logic has one clock.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_epoch};
use crate::ids::{ObjectId, TenantId};

/// The user's own PBX session beside the gateway session: its token, sealed under the master
/// key (`pbx_token`), and in words why there is none (`pbx_state`).
pub(super) const PBX_MIGRATION: &str = "
ALTER TABLE sessions ADD COLUMN pbx_token TEXT;
ALTER TABLE sessions ADD COLUMN pbx_state TEXT NOT NULL DEFAULT '';";

/// What a session row holds of the user's PBX session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionPbx {
    /// The sealed token, when the PBX knows the user.
    pub sealed_token: Option<String>,
    /// Why (not): `active`, `not_on_pbx`, `not_managed`, ...; empty without a PBX.
    pub state: String,
}

impl std::fmt::Debug for SessionPbx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPbx")
            .field(
                "sealed_token",
                &self.sealed_token.as_ref().map(|_| "[sealed]"),
            )
            .field("state", &self.state)
            .finish()
    }
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Lower-case hex SHA-256 of the cookie value.
    pub id_hash: String,
    pub tenant_id: TenantId,
    /// The Microsoft user (`oid`) the session was issued to.
    pub oid: ObjectId,
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

    /// The PBX side of a live (not revoked) session; `None` when there is no such session.
    pub async fn session_pbx(&self, id_hash: &str) -> Result<Option<SessionPbx>, StoreError> {
        let row = sqlx::query(
            "SELECT pbx_token, pbx_state FROM sessions WHERE id_hash = $1 AND revoked_at IS NULL",
        )
        .bind(id_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(SessionPbx {
            sealed_token: row.try_get("pbx_token")?,
            state: row.try_get("pbx_state")?,
        }))
    }

    /// Replaces the PBX side of a live session if it still holds `expected` (the token this
    /// instance renewed): two instances renewing at once cannot both win, and a session
    /// revoked meanwhile stays revoked. `false` when another writer came first.
    pub async fn swap_session_pbx(
        &self,
        id_hash: &str,
        expected: Option<&str>,
        next: &SessionPbx,
    ) -> Result<bool, StoreError> {
        let (sql, with_expected) = match expected {
            Some(_) => (
                "UPDATE sessions SET pbx_token = $2, pbx_state = $3
                 WHERE id_hash = $1 AND revoked_at IS NULL AND pbx_token = $4",
                true,
            ),
            None => (
                "UPDATE sessions SET pbx_token = $2, pbx_state = $3
                 WHERE id_hash = $1 AND revoked_at IS NULL AND pbx_token IS NULL",
                false,
            ),
        };
        let mut query = sqlx::query(sql)
            .bind(id_hash)
            .bind(next.sealed_token.clone())
            .bind(next.state.clone());
        if with_expected {
            query = query.bind(expected.map(str::to_string));
        }
        Ok(query.execute(self.pool()).await?.rows_affected() > 0)
    }

    /// Takes the PBX token off a session (ended or revoked), returning what it held so the
    /// caller can end it on the PBX.
    pub async fn take_session_pbx_token(
        &self,
        id_hash: &str,
        state: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT pbx_token FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .fetch_optional(self.pool())
            .await?;
        let sealed: Option<String> = match row {
            Some(row) => row.try_get("pbx_token")?,
            None => None,
        };
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let done = sqlx::query(
            "UPDATE sessions SET pbx_token = NULL, pbx_state = $2
             WHERE id_hash = $1 AND pbx_token = $3",
        )
        .bind(id_hash)
        .bind(state)
        .bind(&sealed)
        .execute(self.pool())
        .await?;
        // Another instance took (or renewed) it first: that one ends it.
        Ok((done.rows_affected() > 0).then_some(sealed))
    }

    /// A tenant's live sessions at `now` by the state of their PBX side (`active`,
    /// `not_managed`, …; empty for sessions without a PBX), most common first.
    pub async fn session_pbx_states(
        &self,
        tenant_id: &TenantId,
        now: i64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT pbx_state, COUNT(*) AS n FROM sessions
             WHERE tenant_id = $1 AND revoked_at IS NULL AND expires_at > $2
             GROUP BY pbx_state ORDER BY n DESC, pbx_state",
        )
        .bind(tenant_id)
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get("n")?;
                Ok((r.try_get("pbx_state")?, u64::try_from(n).unwrap_or(0)))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Sessions live at `now` (neither revoked nor expired), every instance's.
    pub async fn count_live_sessions(&self, now: i64) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM sessions WHERE revoked_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .fetch_one(self.pool())
        .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0))
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

    /// Revokes every live session of Microsoft user `oid` in `tenant_id`; returns their ids.
    pub async fn revoke_user_sessions(
        &self,
        tenant_id: &TenantId,
        oid: &ObjectId,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "UPDATE sessions SET revoked_at = $3
             WHERE tenant_id = $1 AND oid = $2 AND revoked_at IS NULL
             RETURNING id_hash",
        )
        .bind(tenant_id)
        .bind(oid)
        .bind(now_epoch())
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get::<String, _>("id_hash"))
            .collect::<Result<_, _>>()?)
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
