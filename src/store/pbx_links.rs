//! What the PBX connector knows of the PBX: for each user or company contact of the
//! gateway's record, the id the PBX gave it, whether the gateway created it there (only
//! those may ever be destroyed), whether its Microsoft 365 binding is set, and a digest of
//! the fields last written (so a run with no change sends nothing). A link is written right
//! after the PBX answers a creation; a run killed in between finds the object again on the
//! PBX by username or extension before it creates anything.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_epoch};
use crate::ids::TenantId;

/// Schema of migration 10 (the same SQL on SQLite and PostgreSQL).
pub(super) const MIGRATION: &str = "
CREATE TABLE pbx_links (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL CHECK (kind IN ('user', 'contact')),
    local_id     TEXT NOT NULL,
    remote_id    TEXT NOT NULL,
    created      BIGINT NOT NULL,
    bound        BIGINT NOT NULL,
    pushed_hash  TEXT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, kind, local_id)
);
CREATE UNIQUE INDEX pbx_links_remote ON pbx_links (tenant_id, kind, remote_id);
CREATE TABLE pbx_status (
    tenant_id   TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    ok          BIGINT NOT NULL,
    message     TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
ALTER TABLE sync_runs ADD COLUMN pbx_requests BIGINT NOT NULL DEFAULT 0;";

/// The outcome of the gateway's last conversation with a tenant's PBX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbxStatus {
    pub ok: bool,
    /// What happened, in words an administrator can act on.
    pub message: String,
    pub updated_at: i64,
}

/// What a link points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PbxLinkKind {
    /// A `pbx_users` row (by id) ↔ a PortSIP user.
    User,
    /// A company contact (`mailbox/source_id`) ↔ a PortSIP company contact.
    Contact,
}

impl PbxLinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PbxLinkKind::User => "user",
            PbxLinkKind::Contact => "contact",
        }
    }
}

/// One object of the gateway's record and its PBX counterpart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbxLink {
    pub kind: PbxLinkKind,
    pub local_id: String,
    pub remote_id: String,
    /// The gateway created it on the PBX (as opposed to adopting a PBX user).
    pub created: bool,
    /// `POST /users/{id}/ms365_binding` succeeded (users only).
    pub bound: bool,
    /// Digest of the fields last written to the PBX.
    pub pushed_hash: String,
}

impl PbxLink {
    pub(super) fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let kind: String = row.try_get("kind")?;
        Ok(PbxLink {
            kind: if kind == "contact" {
                PbxLinkKind::Contact
            } else {
                PbxLinkKind::User
            },
            local_id: row.try_get("local_id")?,
            remote_id: row.try_get("remote_id")?,
            created: row.try_get::<i64, _>("created")? != 0,
            bound: row.try_get::<i64, _>("bound")? != 0,
            pushed_hash: row.try_get("pushed_hash")?,
        })
    }
}

impl Store {
    /// Every link of one kind of the tenant.
    pub async fn pbx_links(
        &self,
        tenant_id: &TenantId,
        kind: PbxLinkKind,
    ) -> Result<Vec<PbxLink>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, local_id, remote_id, created, bound, pushed_hash FROM pbx_links
             WHERE tenant_id = $1 AND kind = $2 ORDER BY local_id",
        )
        .bind(tenant_id)
        .bind(kind.as_str())
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(PbxLink::from_row)
            .collect::<Result<_, _>>()?)
    }

    /// The link of one local object.
    pub async fn pbx_link(
        &self,
        tenant_id: &TenantId,
        kind: PbxLinkKind,
        local_id: &str,
    ) -> Result<Option<PbxLink>, StoreError> {
        let row = sqlx::query(
            "SELECT kind, local_id, remote_id, created, bound, pushed_hash FROM pbx_links
             WHERE tenant_id = $1 AND kind = $2 AND local_id = $3",
        )
        .bind(tenant_id)
        .bind(kind.as_str())
        .bind(local_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(PbxLink::from_row).transpose()?)
    }

    /// Writes (or replaces) the link of `link.local_id`; a remote id linked to another local
    /// object moves to this one.
    pub async fn save_pbx_link(
        &self,
        tenant_id: &TenantId,
        link: &PbxLink,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "DELETE FROM pbx_links WHERE tenant_id = $1 AND kind = $2 AND remote_id = $3
             AND local_id <> $4",
        )
        .bind(tenant_id)
        .bind(link.kind.as_str())
        .bind(&link.remote_id)
        .bind(&link.local_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO pbx_links (tenant_id, kind, local_id, remote_id, created, bound,
             pushed_hash, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (tenant_id, kind, local_id) DO UPDATE SET remote_id = excluded.remote_id,
             created = excluded.created, bound = excluded.bound,
             pushed_hash = excluded.pushed_hash, updated_at = excluded.updated_at",
        )
        .bind(tenant_id)
        .bind(link.kind.as_str())
        .bind(&link.local_id)
        .bind(&link.remote_id)
        .bind(i64::from(link.created))
        .bind(i64::from(link.bound))
        .bind(&link.pushed_hash)
        .bind(now_epoch())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the link of one local object.
    pub async fn delete_pbx_link(
        &self,
        tenant_id: &TenantId,
        kind: PbxLinkKind,
        local_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM pbx_links WHERE tenant_id = $1 AND kind = $2 AND local_id = $3")
            .bind(tenant_id)
            .bind(kind.as_str())
            .bind(local_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records how the last conversation with the tenant's PBX went.
    pub async fn set_pbx_status(
        &self,
        tenant_id: &TenantId,
        ok: bool,
        message: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO pbx_status (tenant_id, ok, message, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id) DO UPDATE SET ok = excluded.ok, message = excluded.message,
             updated_at = excluded.updated_at",
        )
        .bind(tenant_id)
        .bind(i64::from(ok))
        .bind(message)
        .bind(now_epoch())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn pbx_status(&self, tenant_id: &TenantId) -> Result<Option<PbxStatus>, StoreError> {
        let row =
            sqlx::query("SELECT ok, message, updated_at FROM pbx_status WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_optional(self.pool())
                .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(PbxStatus {
            ok: row.try_get::<i64, _>("ok")? != 0,
            message: row.try_get("message")?,
            updated_at: row.try_get("updated_at")?,
        }))
    }

    /// Adds PBX traffic to a run's record.
    pub async fn add_pbx_requests(&self, run_id: &str, requests: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE sync_runs SET pbx_requests = pbx_requests + $2 WHERE id = $1")
            .bind(run_id)
            .bind(i64::try_from(requests).unwrap_or(i64::MAX))
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

/// A user of the PBX's own, as the connector read it from the PBX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedPbxUser {
    pub remote_id: String,
    pub extension_number: String,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub enabled: bool,
}

impl Store {
    /// Records (or refreshes) a user of the PBX's own as a `local` row linked to its PBX
    /// id, so the extension allocator skips its number and a matching Microsoft user can
    /// adopt it. Returns the local id; a number or username held by another row of the
    /// record is a conflict.
    pub async fn import_pbx_user(
        &self,
        tenant_id: &TenantId,
        user: &ImportedPbxUser,
    ) -> Result<String, StoreError> {
        let kind = PbxLinkKind::User;
        let existing = sqlx::query(
            "SELECT local_id FROM pbx_links WHERE tenant_id = $1 AND kind = $2 AND remote_id = $3",
        )
        .bind(tenant_id)
        .bind(kind.as_str())
        .bind(&user.remote_id)
        .fetch_optional(self.pool())
        .await?;
        let now = now_epoch();
        let mut tx = self.pool().begin().await?;
        let local_id = match existing {
            Some(row) => {
                let id: String = row.try_get("local_id")?;
                sqlx::query(
                    "UPDATE pbx_users SET extension_number = $3, username = $4, display_name = $5,
                     email = $6, enabled = $7, updated_at = $8
                     WHERE tenant_id = $1 AND id = $2 AND source = 'local'",
                )
                .bind(tenant_id)
                .bind(&id)
                .bind(&user.extension_number)
                .bind(&user.username)
                .bind(&user.display_name)
                .bind(&user.email)
                .bind(i64::from(user.enabled))
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| taken(e, user))?;
                id
            }
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                sqlx::query(
                    "INSERT INTO pbx_users (id, tenant_id, extension_number, username, display_name,
                     email, enabled, source, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'local', $8, $8)",
                )
                .bind(&id)
                .bind(tenant_id)
                .bind(&user.extension_number)
                .bind(&user.username)
                .bind(&user.display_name)
                .bind(&user.email)
                .bind(i64::from(user.enabled))
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| taken(e, user))?;
                sqlx::query(
                    "INSERT INTO pbx_links (tenant_id, kind, local_id, remote_id, created, bound,
                     pushed_hash, updated_at) VALUES ($1, $2, $3, $4, 0, 0, '', $5)",
                )
                .bind(tenant_id)
                .bind(kind.as_str())
                .bind(&id)
                .bind(&user.remote_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                id
            }
        };
        tx.commit().await?;
        Ok(local_id)
    }

    /// Forgets a user of the PBX's own that is gone from the PBX: its link, and its
    /// `local` row unless a Microsoft user is bound to it (the binding then shows the gap).
    pub async fn forget_pbx_user(
        &self,
        tenant_id: &TenantId,
        local_id: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "DELETE FROM pbx_users WHERE tenant_id = $1 AND id = $2 AND source = 'local'
             AND NOT EXISTS (SELECT 1 FROM ms365_users m
                             WHERE m.tenant_id = $1 AND m.pbx_user_id = $2)",
        )
        .bind(tenant_id)
        .bind(local_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM pbx_links WHERE tenant_id = $1 AND kind = 'user' AND local_id = $2",
        )
        .bind(tenant_id)
        .bind(local_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

fn taken(e: sqlx::Error, user: &ImportedPbxUser) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(format!(
            "the PBX user {} (extension {}) clashes with a user of the gateway's record",
            user.username, user.extension_number
        )),
        _ => e.into(),
    }
}
