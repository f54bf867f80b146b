//! Profile photos of synced users, one row per (tenant, oid): the image as downloaded, its
//! content type and Graph's `mediaEtag`, so a later run downloads only changed photos.

use std::collections::HashMap;

use sqlx::Row;

use super::{Store, StoreError, now_epoch};
use crate::ids::{ObjectId, TenantId};

/// A stored photo: its `mediaEtag`, content type and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPhoto {
    pub etag: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

impl Store {
    /// The `mediaEtag`s of the stored photos of `oids`, by oid (users without one absent):
    /// a few statements for a round of users instead of one per user.
    pub async fn photo_etags(
        &self,
        tenant_id: &TenantId,
        oids: &[ObjectId],
    ) -> Result<HashMap<ObjectId, String>, StoreError> {
        let head = "SELECT oid, etag FROM user_photos WHERE tenant_id = $1 AND oid";
        let rows = self
            .rows_with_ids(head, &[tenant_id.as_str()], oids)
            .await?;
        let etag = |r: &sqlx::any::AnyRow| Ok((r.try_get("oid")?, r.try_get("etag")?));
        rows.iter().map(etag).collect()
    }

    /// Stores (or replaces) the photo of `oid`.
    pub async fn save_photo(
        &self,
        tenant_id: &TenantId,
        oid: &ObjectId,
        etag: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO user_photos (tenant_id, oid, etag, content_type, bytes, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, oid) DO UPDATE SET etag = excluded.etag,
             content_type = excluded.content_type, bytes = excluded.bytes,
             updated_at = excluded.updated_at",
        )
        .bind(tenant_id)
        .bind(oid)
        .bind(etag)
        .bind(content_type)
        .bind(bytes.to_vec())
        .bind(now_epoch())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Removes the photo of `oid`; whether there was one.
    pub async fn remove_photo(
        &self,
        tenant_id: &TenantId,
        oid: &ObjectId,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM user_photos WHERE tenant_id = $1 AND oid = $2")
            .bind(tenant_id)
            .bind(oid)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The stored photo of `oid`.
    pub async fn photo(
        &self,
        tenant_id: &TenantId,
        oid: &ObjectId,
    ) -> Result<Option<StoredPhoto>, StoreError> {
        let row = sqlx::query(
            "SELECT etag, content_type, bytes FROM user_photos WHERE tenant_id = $1 AND oid = $2",
        )
        .bind(tenant_id)
        .bind(oid)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(StoredPhoto {
            etag: row.try_get("etag")?,
            content_type: row.try_get("content_type")?,
            bytes: row.try_get("bytes")?,
        }))
    }
}
