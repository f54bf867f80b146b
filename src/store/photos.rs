//! Profile photos of synced users, one row per (tenant, oid): the image as downloaded, its
//! content type and Graph's `mediaEtag`, so a later run downloads only changed photos.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, Row};

use super::focused::{IDS_PER_STATEMENT, placeholders};
use super::{Store, StoreError, now_epoch};
use crate::ids::{ObjectId, TenantId};

/// A photo to store: whose, its `mediaEtag`, content type and bytes.
#[derive(Debug, Clone, Copy)]
pub struct NewPhoto<'a> {
    pub oid: &'a ObjectId,
    pub etag: &'a str,
    pub content_type: &'a str,
    pub bytes: &'a [u8],
}

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
        let photo = NewPhoto {
            oid,
            etag,
            content_type,
            bytes,
        };
        self.save_photos(tenant_id, &[photo]).await
    }

    /// Stores (or replaces) `photos` in one transaction: a batch of downloads is one commit
    /// (on PostgreSQL one WAL flush) instead of one per photo.
    pub async fn save_photos(
        &self,
        tenant_id: &TenantId,
        photos: &[NewPhoto<'_>],
    ) -> Result<(), StoreError> {
        if photos.is_empty() {
            return Ok(());
        }
        let now = now_epoch();
        let mut tx = self.pool().begin().await?;
        for p in photos {
            sqlx::query(
                "INSERT INTO user_photos (tenant_id, oid, etag, content_type, bytes, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (tenant_id, oid) DO UPDATE SET etag = excluded.etag,
                 content_type = excluded.content_type, bytes = excluded.bytes,
                 updated_at = excluded.updated_at",
            )
            .bind(tenant_id)
            .bind(p.oid)
            .bind(p.etag)
            .bind(p.content_type)
            .bind(p.bytes.to_vec())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes the photos of `oids`, a statement per [`IDS_PER_STATEMENT`]; how many there
    /// were (a round of users without a photo is one statement, not one per user).
    pub async fn remove_photos(
        &self,
        tenant_id: &TenantId,
        oids: &[ObjectId],
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        for chunk in oids.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "DELETE FROM user_photos WHERE tenant_id = $1 AND oid IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(tenant_id);
            for oid in chunk {
                q = q.bind(oid);
            }
            removed += q.execute(self.pool()).await?.rows_affected() as usize;
        }
        Ok(removed)
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
