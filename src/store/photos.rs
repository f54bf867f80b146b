//! Profile photos of synced users, one row per (tenant, oid): the image as downloaded, its
//! content type and Graph's `mediaEtag`, so a later run downloads only changed photos.

use std::collections::{HashMap, HashSet};

use sqlx::{AssertSqlSafe, Row};

use super::focused::{IDS_PER_STATEMENT, placeholders, value_rows};
use super::{Store, StoreError, now_epoch};
use crate::ids::{ObjectId, TenantId};

/// Photos one upsert statement carries at most, and the bytes it carries at most (Graph
/// serves photos up to 4 MB; the statement is held in memory whole while it is sent).
const PHOTOS_PER_STATEMENT: usize = 50;
const PHOTO_BYTES_PER_STATEMENT: usize = 1 << 20;

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
    /// (on PostgreSQL one WAL flush) instead of one per photo, and a few multi-row
    /// statements instead of a round trip per photo.
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
        let mut rest = photos;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(statement_len(rest));
            let sql = format!(
                "INSERT INTO user_photos (tenant_id, oid, etag, content_type, bytes, updated_at)
                 VALUES {}
                 ON CONFLICT (tenant_id, oid) DO UPDATE SET etag = excluded.etag,
                 content_type = excluded.content_type, bytes = excluded.bytes,
                 updated_at = excluded.updated_at",
                value_rows(self.backend(), chunk.len(), 6)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for p in chunk {
                query = (query.bind(tenant_id).bind(p.oid).bind(p.etag))
                    .bind(p.content_type)
                    .bind(p.bytes.to_vec())
                    .bind(now);
            }
            query.execute(&mut *tx).await?;
            rest = tail;
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

/// How many of `photos` the next statement takes: at least one, within the statement's
/// limits, and never one oid twice (an upsert may not touch a row twice; the second photo
/// of an oid goes in the next statement, so the last one given is what stays).
fn statement_len(photos: &[NewPhoto<'_>]) -> usize {
    let mut oids = HashSet::new();
    let mut bytes = 0;
    for (i, photo) in photos.iter().enumerate().take(PHOTOS_PER_STATEMENT) {
        bytes += photo.bytes.len();
        let fits = bytes <= PHOTO_BYTES_PER_STATEMENT && oids.insert(photo.oid);
        if !fits && i > 0 {
            return i;
        }
    }
    photos.len().min(PHOTOS_PER_STATEMENT)
}

#[cfg(test)]
mod tests {
    use super::super::test_db::{TestDb, add_tenant};
    use super::*;

    fn oid(n: usize) -> ObjectId {
        ObjectId::new(format!("00000000-0000-0000-0000-{n:012}"))
    }

    fn photo<'a>(oid: &'a ObjectId, bytes: &'a [u8]) -> NewPhoto<'a> {
        NewPhoto {
            oid,
            etag: "e",
            content_type: "image/jpeg",
            bytes,
        }
    }

    #[test]
    fn a_statement_takes_at_most_its_rows_and_bytes_and_each_oid_once() {
        let oids: Vec<ObjectId> = (0..60).map(oid).collect();
        let (small, big) = (vec![0u8; 1_000], vec![0u8; 700_000]);
        let many: Vec<NewPhoto> = oids.iter().map(|o| photo(o, &small)).collect();
        assert_eq!(statement_len(&many), PHOTOS_PER_STATEMENT);
        assert_eq!(statement_len(&many[..3]), 3);
        let two_big = [photo(&oids[0], &big), photo(&oids[1], &big)];
        assert_eq!(statement_len(&two_big), 1, "1.4 MB is two statements");
        let huge = vec![0u8; 2 * PHOTO_BYTES_PER_STATEMENT];
        let alone = [photo(&oids[0], &huge), photo(&oids[1], &small)];
        assert_eq!(
            statement_len(&alone),
            1,
            "a photo over the limit still goes, alone"
        );
        let twice = [
            photo(&oids[0], &small),
            photo(&oids[1], &small),
            photo(&oids[0], &small),
        ];
        assert_eq!(statement_len(&twice), 2);
    }

    #[tokio::test]
    async fn photos_are_saved_over_several_statements_and_the_last_of_an_oid_stays() {
        let db = TestDb::new().await;
        let store = db.open(2).await.unwrap();
        let t = add_tenant(&store, "a").await;
        let oids: Vec<ObjectId> = (0..120).map(oid).collect();
        let etags: Vec<String> = (0..120).map(|n| format!("etag-{n}")).collect();
        let bytes: Vec<Vec<u8>> = (0..120).map(|n| vec![n as u8; 100 + n]).collect();
        let mut photos: Vec<NewPhoto> = (0..120)
            .map(|n| NewPhoto {
                oid: &oids[n],
                etag: &etags[n],
                content_type: "image/png",
                bytes: &bytes[n],
            })
            .collect();
        // Oid 5 again, with other content: the later photo is the one kept.
        photos.push(NewPhoto {
            oid: &oids[5],
            etag: "etag-5-new",
            content_type: "image/jpeg",
            bytes: b"new",
        });
        store.save_photos(&t, &photos).await.unwrap();
        let stored = store.photo_etags(&t, &oids).await.unwrap();
        assert_eq!(stored.len(), 120);
        assert_eq!(stored[&oids[119]], "etag-119");
        let five = store.photo(&t, &oids[5]).await.unwrap().unwrap();
        assert_eq!(
            (
                five.etag.as_str(),
                five.content_type.as_str(),
                &five.bytes[..]
            ),
            ("etag-5-new", "image/jpeg", &b"new"[..])
        );
        let last = store.photo(&t, &oids[119]).await.unwrap().unwrap();
        assert_eq!(last.bytes, bytes[119]);
    }
}
