//! The PBX's own users of a tenant (`pbx_users`, PortSIP v22 field names), the sync's
//! delta cursors (`sync_state`), and the writes the users sync makes. A synced user is two
//! rows: its `pbx_users` row (what the PBX serves) and its `ms365_users` row (what sign-in
//! reads, and the memory of the user's extension, which outlives a PBX-side deletion so the
//! user comes back with the same number). Both rows of one user change in one transaction.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::columns::bind_profile;
use super::directory_creates::{conflict_or, create_users, insert_pbx_users, upsert_directories};
use super::{Backend, DirectoryUser, Store, StoreError, now_epoch};
use crate::ids::{ObjectId, TenantId};

/// The synced profile fields of a PBX user (PortSIP names where PortSIP has them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PbxProfile {
    pub display_name: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub mobile_phone: Option<String>,
    pub work_phone: Option<String>,
    pub title: Option<String>,
    pub department: Option<String>,
    pub office: Option<String>,
}

/// Where a PBX user comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PbxUserSource {
    /// Created and kept up to date by the Microsoft 365 sync.
    Ms365,
    /// Created on the PBX; the sync never touches it and skips its extension number.
    Local,
}

impl PbxUserSource {
    pub fn as_str(self) -> &'static str {
        match self {
            PbxUserSource::Ms365 => "ms365",
            PbxUserSource::Local => "local",
        }
    }
}

/// One PBX user (extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbxUser {
    pub id: String,
    pub tenant_id: TenantId,
    pub extension_number: String,
    /// PortSIP's `name`: the login name.
    pub username: String,
    pub profile: PbxProfile,
    pub enabled: bool,
    pub source: PbxUserSource,
    pub ms365_oid: Option<ObjectId>,
    /// Why the sync disabled the user (`account_disabled`, `removed`, `out_of_scope`).
    pub sync_disabled: Option<String>,
    pub sync_disabled_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl PbxUser {
    pub(super) fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        let source: String = row.try_get("source")?;
        Ok(PbxUser {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            extension_number: row.try_get("extension_number")?,
            username: row.try_get("username")?,
            profile: PbxProfile {
                display_name: row.try_get("display_name")?,
                first_name: row.try_get("first_name")?,
                last_name: row.try_get("last_name")?,
                email: row.try_get("email")?,
                mobile_phone: row.try_get("mobile_phone")?,
                work_phone: row.try_get("work_phone")?,
                title: row.try_get("title")?,
                department: row.try_get("department")?,
                office: row.try_get("office")?,
            },
            enabled: row.try_get::<i64, _>("enabled")? != 0,
            source: if source == "ms365" {
                PbxUserSource::Ms365
            } else {
                PbxUserSource::Local
            },
            ms365_oid: row.try_get("ms365_oid")?,
            sync_disabled: row.try_get("sync_disabled")?,
            sync_disabled_at: row.try_get("sync_disabled_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// Where a delta round of one kind (`users`, …) resumes, and the scope it was taken under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncCursor {
    pub delta_link: String,
    /// A digest of the scope settings: a round taken under another scope must not resume.
    pub fingerprint: String,
    pub updated_at: i64,
}

/// One change of one synced user; both of its rows change together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryWrite {
    /// A new PBX user (or one re-created after a PBX-side deletion) and its directory entry.
    Create {
        user: Box<PbxUser>,
        directory: Box<DirectoryUser>,
    },
    /// New profile and state of the user with `oid`; `disabled` says why it is disabled.
    Update {
        oid: ObjectId,
        upn: String,
        profile: Box<PbxProfile>,
        disabled: Option<String>,
    },
    /// Disables the user with `oid` (only its directory entry when its PBX row is gone).
    Disable { oid: ObjectId, reason: String },
    /// Deletes both rows (grace period over).
    Delete { oid: ObjectId },
    /// Binds `directory.oid` to an existing user of the PBX's own (`directory.pbx_user_id`,
    /// source `adopted`): the user signs in as it, and the sync never changes it.
    Adopt { directory: Box<DirectoryUser> },
}

macro_rules! pbx_user_columns {
    () => {
        "id, tenant_id, extension_number, username, display_name, first_name, last_name,
         email, mobile_phone, work_phone, title, department, office, enabled, source, ms365_oid,
         sync_disabled, sync_disabled_at, created_at, updated_at"
    };
}

/// The columns [`PbxUser::from_row`] reads, for statements built at run time.
pub(super) const PBX_USER_COLUMNS: &str = pbx_user_columns!();

macro_rules! select_pbx_users {
    ($rest:literal) => {
        concat!("SELECT ", pbx_user_columns!(), " FROM pbx_users ", $rest)
    };
}

impl Store {
    /// Every PBX user of the tenant, by extension number.
    pub async fn pbx_users(&self, tenant_id: &TenantId) -> Result<Vec<PbxUser>, StoreError> {
        let query = sqlx::query(select_pbx_users!(
            "WHERE tenant_id = $1 ORDER BY extension_number"
        ))
        .bind(tenant_id);
        self.fetch_converted(query, PbxUser::from_row).await
    }

    /// Enabled PBX users whose name, extension, email or department contains `q`
    /// (case-insensitive), by extension, at most `limit`.
    pub async fn search_pbx_users(
        &self,
        tenant_id: &TenantId,
        q: &str,
        limit: i64,
    ) -> Result<Vec<PbxUser>, StoreError> {
        let pattern = format!("%{}%", q.to_lowercase().replace(['%', '_'], ""));
        let rows = sqlx::query(select_pbx_users!(
            "WHERE tenant_id = $1 AND enabled = 1 AND (LOWER(display_name) LIKE $2 OR extension_number LIKE $2
             OR LOWER(COALESCE(email, '')) LIKE $2 OR LOWER(COALESCE(department, '')) LIKE $2)
             ORDER BY extension_number LIMIT $3"
        ))
        .bind(tenant_id)
        .bind(pattern)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(PbxUser::from_row)
            .collect::<Result<_, _>>()?)
    }

    pub async fn pbx_user(
        &self,
        tenant_id: &TenantId,
        id: &str,
    ) -> Result<Option<PbxUser>, StoreError> {
        let row = sqlx::query(select_pbx_users!("WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(PbxUser::from_row).transpose()?)
    }

    /// The PBX user synced from Microsoft user `oid`.
    pub async fn pbx_user_by_oid(
        &self,
        tenant_id: &TenantId,
        oid: &ObjectId,
    ) -> Result<Option<PbxUser>, StoreError> {
        let row = sqlx::query(select_pbx_users!("WHERE tenant_id = $1 AND ms365_oid = $2"))
            .bind(tenant_id)
            .bind(oid)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(PbxUser::from_row).transpose()?)
    }

    /// Creates a user of the PBX's own (not from Microsoft 365); a taken extension or
    /// username is a conflict.
    pub async fn create_local_pbx_user(
        &self,
        tenant_id: &TenantId,
        extension_number: &str,
        username: &str,
        profile: &PbxProfile,
    ) -> Result<PbxUser, StoreError> {
        let now = now_epoch();
        let user = PbxUser {
            id: uuid::Uuid::new_v4().to_string(),
            tenant_id: tenant_id.clone(),
            extension_number: extension_number.to_string(),
            username: username.to_string(),
            profile: profile.clone(),
            enabled: true,
            source: PbxUserSource::Local,
            ms365_oid: None,
            sync_disabled: None,
            sync_disabled_at: None,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.pool().begin().await?;
        insert_pbx_users(&mut tx, self.backend(), &[&user])
            .await
            .map_err(|e| {
                conflict_or(e, || {
                    format!("extension {extension_number} or username {username} is taken")
                })
            })?;
        tx.commit().await?;
        Ok(user)
    }

    /// Deletes a PBX user on the PBX side. A synced user's directory entry (and with it
    /// the user's extension number) stays: the next sync brings the user back.
    pub async fn delete_pbx_user(
        &self,
        tenant_id: &TenantId,
        id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM pbx_users WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Every Microsoft 365 directory entry of the tenant (synced and bound), by oid.
    pub async fn directory_users(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Vec<DirectoryUser>, StoreError> {
        let query = sqlx::query(
            "SELECT tenant_id, oid, upn, pbx_user_id, extension, display_name, email, role, enabled,
             source FROM ms365_users WHERE tenant_id = $1 ORDER BY oid",
        )
        .bind(tenant_id);
        self.fetch_converted(query, DirectoryUser::from_row).await
    }

    /// Each directory entry's user principal name, by oid: what the contacts phase needs of
    /// the directory, without the rest of 50,000 rows.
    pub async fn directory_upns(
        &self,
        tenant_id: &TenantId,
    ) -> Result<std::collections::HashMap<ObjectId, String>, StoreError> {
        let query =
            sqlx::query("SELECT oid, upn FROM ms365_users WHERE tenant_id = $1").bind(tenant_id);
        let pairs = self
            .fetch_converted(query, |row| Ok((row.try_get("oid")?, row.try_get("upn")?)))
            .await?;
        Ok(pairs.into_iter().collect())
    }

    /// Applies `writes` in one transaction: all of them or none.
    pub async fn apply_directory_writes(
        &self,
        tenant_id: &TenantId,
        writes: &[DirectoryWrite],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let now = now_epoch();
        let mut rest = writes;
        while let Some(first) = rest.first() {
            // A run of creates (a new tenant's whole round) goes many to a statement.
            let creates: Vec<(&PbxUser, &DirectoryUser)> = rest
                .iter()
                .map_while(|w| match w {
                    DirectoryWrite::Create { user, directory } => Some((&**user, &**directory)),
                    _ => None,
                })
                .collect();
            if creates.is_empty() {
                apply_write(&mut tx, self.backend(), tenant_id, first, now).await?;
                rest = &rest[1..];
            } else {
                create_users(&mut tx, self.backend(), &creates, now).await?;
                rest = &rest[creates.len()..];
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The stored cursor of delta rounds of `kind`.
    pub async fn sync_cursor(
        &self,
        tenant_id: &TenantId,
        kind: &str,
    ) -> Result<Option<SyncCursor>, StoreError> {
        let row = sqlx::query(
            "SELECT delta_link, fingerprint, updated_at FROM sync_state
             WHERE tenant_id = $1 AND kind = $2",
        )
        .bind(tenant_id)
        .bind(kind)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(SyncCursor {
            delta_link: row.try_get("delta_link")?,
            fingerprint: row.try_get("fingerprint")?,
            updated_at: row.try_get("updated_at")?,
        }))
    }

    /// Saves where the next delta round of `kind` starts. Call only after the round's
    /// changes are committed.
    pub async fn save_sync_cursor(
        &self,
        tenant_id: &TenantId,
        kind: &str,
        delta_link: &str,
        fingerprint: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sync_state (tenant_id, kind, delta_link, fingerprint, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id, kind) DO UPDATE SET delta_link = excluded.delta_link,
             fingerprint = excluded.fingerprint, updated_at = excluded.updated_at",
        )
        .bind(tenant_id)
        .bind(kind)
        .bind(delta_link)
        .bind(fingerprint)
        .bind(now_epoch())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets the cursor: the next run of `kind` is a full one.
    pub async fn clear_sync_cursor(
        &self,
        tenant_id: &TenantId,
        kind: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sync_state WHERE tenant_id = $1 AND kind = $2")
            .bind(tenant_id)
            .bind(kind)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

async fn apply_write(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    tenant_id: &TenantId,
    write: &DirectoryWrite,
    now: i64,
) -> Result<(), StoreError> {
    match write {
        DirectoryWrite::Create { user, directory } => {
            create_users(tx, backend, &[(&**user, &**directory)], now).await?
        }
        DirectoryWrite::Update {
            oid,
            upn,
            profile,
            disabled,
        } => update_user(tx, tenant_id, oid, upn, profile, disabled.as_deref(), now).await?,
        DirectoryWrite::Disable { oid, reason } => {
            disable_user(tx, tenant_id, oid, reason, now).await?
        }
        DirectoryWrite::Delete { oid } => delete_user(tx, tenant_id, oid).await?,
        DirectoryWrite::Adopt { directory } => {
            upsert_directories(tx, backend, &[directory], now).await?
        }
    }
    Ok(())
}

async fn update_user(
    tx: &mut Transaction<'static, Any>,
    tenant_id: &TenantId,
    oid: &ObjectId,
    upn: &str,
    p: &PbxProfile,
    disabled: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    let enabled = i64::from(disabled.is_none());
    // The first disabling time is kept: the grace period runs from it.
    let query = sqlx::query(
        "UPDATE pbx_users SET display_name = $3, first_name = $4, last_name = $5, email = $6,
         mobile_phone = $7, work_phone = $8, title = $9, department = $10, office = $11,
         enabled = $12, sync_disabled = $13,
         sync_disabled_at = CASE WHEN $12 = 1 THEN NULL ELSE COALESCE(sync_disabled_at, $14) END,
         updated_at = $14
         WHERE tenant_id = $1 AND ms365_oid = $2 AND source = 'ms365'",
    )
    .bind(tenant_id)
    .bind(oid);
    bind_profile(query, p)
        .bind(enabled)
        .bind(disabled)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    mirror_directory(tx, tenant_id, oid, upn, now).await
}

/// Makes the directory entry mirror the PBX row; it is re-created if it went missing, so
/// sign-in always finds a synced user. A binding made by an administrator is left alone.
async fn mirror_directory(
    tx: &mut Transaction<'static, Any>,
    tenant_id: &TenantId,
    oid: &ObjectId,
    upn: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ms365_users (tenant_id, oid, upn, pbx_user_id, extension, display_name, email,
         role, enabled, source, updated_at)
         SELECT tenant_id, ms365_oid, $3, id, extension_number, display_name, email, 'user',
         enabled, 'sync', $4 FROM pbx_users
         WHERE tenant_id = $1 AND ms365_oid = $2 AND source = 'ms365'
         ON CONFLICT (tenant_id, oid) DO UPDATE SET upn = excluded.upn,
         pbx_user_id = excluded.pbx_user_id, extension = excluded.extension,
         display_name = excluded.display_name, email = excluded.email, enabled = excluded.enabled,
         updated_at = excluded.updated_at WHERE ms365_users.source = 'sync'",
    )
    .bind(tenant_id)
    .bind(oid)
    .bind(upn)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn disable_user(
    tx: &mut Transaction<'static, Any>,
    tenant_id: &TenantId,
    oid: &ObjectId,
    reason: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE pbx_users SET enabled = 0, sync_disabled = $3,
         sync_disabled_at = COALESCE(sync_disabled_at, $4), updated_at = $4
         WHERE tenant_id = $1 AND ms365_oid = $2 AND source = 'ms365'",
    )
    .bind(tenant_id)
    .bind(oid)
    .bind(reason)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE ms365_users SET enabled = 0, updated_at = $3
         WHERE tenant_id = $1 AND oid = $2 AND source = 'sync'",
    )
    .bind(tenant_id)
    .bind(oid)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn delete_user(
    tx: &mut Transaction<'static, Any>,
    tenant_id: &TenantId,
    oid: &ObjectId,
) -> Result<(), StoreError> {
    for sql in [
        "DELETE FROM pbx_users WHERE tenant_id = $1 AND ms365_oid = $2 AND source = 'ms365'",
        "DELETE FROM ms365_users WHERE tenant_id = $1 AND oid = $2 AND source = 'sync'",
    ] {
        sqlx::query(sql)
            .bind(tenant_id)
            .bind(oid)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
