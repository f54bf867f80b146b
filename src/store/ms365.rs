//! A tenant's Microsoft 365 settings document and its directory of Microsoft 365 users
//! known to the PBX: who `(tid, oid)` is on the PBX side (user id, extension, role), filled
//! by the sync worker or by an explicit binding.

use sqlx::AnyConnection;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::columns::bind_directory_user;
use super::{Store, StoreError, now_epoch};
use crate::ids::{ObjectId, TenantId};
use crate::settings::Ms365Settings;

/// What a signed-in user may do at the gateway: `user`, or `admin` (the tenant's
/// administration API and page). Stored and sent (`X-PBX-Role`) as that word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    /// The role a stored row names; anything but `admin` grants nothing more than `user`.
    fn from_stored(text: &str) -> Role {
        if text == "admin" {
            Role::Admin
        } else {
            Role::User
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Microsoft 365 user as the PBX knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub tenant_id: TenantId,
    pub oid: ObjectId,
    pub upn: String,
    pub pbx_user_id: String,
    pub extension: Option<String>,
    pub display_name: String,
    pub email: Option<String>,
    pub role: Role,
    pub enabled: bool,
    /// `sync` or `binding`.
    pub source: String,
}

impl DirectoryUser {
    pub(super) fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(DirectoryUser {
            tenant_id: row.try_get("tenant_id")?,
            oid: row.try_get("oid")?,
            upn: row.try_get("upn")?,
            pbx_user_id: row.try_get("pbx_user_id")?,
            extension: row.try_get("extension")?,
            display_name: row.try_get("display_name")?,
            email: row.try_get("email")?,
            role: Role::from_stored(&row.try_get::<String, _>("role")?),
            enabled: row.try_get::<i64, _>("enabled")? != 0,
            source: row.try_get("source")?,
        })
    }
}

impl Store {
    /// The tenant's settings, or the defaults when none were saved.
    pub async fn ms365_settings(&self, tenant_id: &TenantId) -> Result<Ms365Settings, StoreError> {
        let row = sqlx::query("SELECT settings_json FROM ms365_settings WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(self.pool())
            .await?;
        match row {
            None => Ok(Ms365Settings::default()),
            Some(row) => {
                let json: String = row.try_get("settings_json")?;
                serde_json::from_str(&json).map_err(|e| {
                    StoreError::Corrupt(format!("settings of tenant {tenant_id}: {e}"))
                })
            }
        }
    }

    pub async fn save_ms365_settings(
        &self,
        tenant_id: &TenantId,
        settings: &Ms365Settings,
    ) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(settings).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO ms365_settings (tenant_id, settings_json, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id) DO UPDATE SET settings_json = excluded.settings_json, updated_at = excluded.updated_at",
        )
        .bind(tenant_id)
        .bind(json)
        .bind(now_epoch())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The PBX identity of Microsoft user `oid` in `tenant_id`.
    pub async fn directory_user(
        &self,
        tenant_id: &TenantId,
        oid: &ObjectId,
    ) -> Result<Option<DirectoryUser>, StoreError> {
        let row = sqlx::query(
            "SELECT tenant_id, oid, upn, pbx_user_id, extension, display_name, email, role, enabled, source
             FROM ms365_users WHERE tenant_id = $1 AND oid = $2",
        )
        .bind(tenant_id)
        .bind(oid)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(DirectoryUser::from_row).transpose()?)
    }

    /// Creates or replaces a directory entry.
    pub async fn upsert_directory_user(&self, u: &DirectoryUser) -> Result<(), StoreError> {
        let mut conn = self.pool().acquire().await?;
        write_directory_user(&mut conn, u).await
    }

    /// Binds Microsoft user `u.oid` to PBX user `u.pbx_user_id` (`source` = `binding`). A
    /// PBX user bound to another account, or an account the sync manages, is a conflict.
    pub async fn bind_directory_user(&self, u: &DirectoryUser) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let taken = sqlx::query(
            "SELECT oid, source FROM ms365_users WHERE tenant_id = $1 AND (pbx_user_id = $2 OR oid = $3)",
        )
        .bind(&u.tenant_id)
        .bind(&u.pbx_user_id)
        .bind(&u.oid)
        .fetch_all(&mut *tx)
        .await?;
        for row in &taken {
            let (oid, source): (ObjectId, String) = (row.try_get("oid")?, row.try_get("source")?);
            if source == "sync" {
                return Err(StoreError::Conflict(format!(
                    "{oid} is managed by the Microsoft 365 sync; it cannot be bound by hand"
                )));
            }
            if oid != u.oid {
                return Err(StoreError::Conflict(format!(
                    "the PBX user is already bound to {oid}; remove that binding first"
                )));
            }
        }
        let bound = DirectoryUser {
            source: "binding".into(),
            ..u.clone()
        };
        write_directory_user(&mut tx, &bound).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes an administrator's binding of PBX user `pbx_user_id`; the unbound oid, if any.
    pub async fn unbind_directory_user(
        &self,
        tenant_id: &TenantId,
        pbx_user_id: &str,
    ) -> Result<Option<ObjectId>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM ms365_users WHERE tenant_id = $1 AND pbx_user_id = $2 AND source = 'binding'
             RETURNING oid",
        )
        .bind(tenant_id)
        .bind(pbx_user_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| r.try_get("oid")).transpose()?)
    }
}

/// Creates or replaces `u`'s entry on `conn` (a pooled connection or a transaction).
async fn write_directory_user(
    conn: &mut AnyConnection,
    u: &DirectoryUser,
) -> Result<(), StoreError> {
    let query = sqlx::query(
        "INSERT INTO ms365_users (tenant_id, oid, upn, pbx_user_id, extension, display_name, email, role, enabled,
         source, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (tenant_id, oid) DO UPDATE SET upn = excluded.upn, pbx_user_id = excluded.pbx_user_id,
         extension = excluded.extension, display_name = excluded.display_name, email = excluded.email,
         role = excluded.role, enabled = excluded.enabled, source = excluded.source, updated_at = excluded.updated_at",
    );
    bind_directory_user(query, u, now_epoch())
        .execute(conn)
        .await?;
    Ok(())
}
