//! Reads for runs that touch a few users: the rows of given oids or local ids, and the
//! whole-tenant facts a users round needs (a synced user missing on the PBX side, users
//! whose grace period is over, the number of links) answered by the database instead of
//! by reading every row. A run answering a change notification at 50,000 users reads a
//! handful of rows this way instead of the tenant ten times over.
//!
//! Oids compare as stored: an [`ObjectId`] is lower case from the moment it is read.

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::directory::PBX_USER_COLUMNS;
use super::{Backend, DirectoryUser, PbxLink, PbxLinkKind, PbxUser, Store, StoreError};
use crate::ids::{ObjectId, TenantId};

/// Values bound per `IN (...)` statement (SQLite allows 32,766; PostgreSQL 65,535).
pub(super) const IDS_PER_STATEMENT: usize = 200;

/// `$first, $first+1, …` for `count` values.
pub(super) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `count` rows of `width` values for a multi-row `VALUES`, every value its own parameter:
/// numbered on PostgreSQL (`($1, …, $width), …`), anonymous on SQLite (`(?, …), …`), whose
/// lookup of a numbered parameter scans the statement's parameter list, which makes binding
/// a statement of a thousand numbered values cost a million steps.
pub(super) fn value_rows(backend: Backend, count: usize, width: usize) -> String {
    let row = |r: usize| match backend {
        Backend::Postgres => format!("({})", placeholders(1 + r * width, width)),
        Backend::Sqlite => format!("({})", vec!["?"; width].join(", ")),
    };
    (0..count).map(row).collect::<Vec<_>>().join(", ")
}

// Dynamic SQL here only splices the static column lists and the placeholders; every value
// is bound.
impl Store {
    /// The rows of `head IN (ids)`, a statement per [`IDS_PER_STATEMENT`] ids. `head` ends
    /// with the compared column and numbers its own values `$1…`, bound from `leading`.
    pub(super) async fn rows_with_ids(
        &self,
        head: &str,
        leading: &[&str],
        ids: &[impl AsRef<str>],
    ) -> Result<Vec<AnyRow>, StoreError> {
        let mut rows = Vec::new();
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "{head} IN ({})",
                placeholders(leading.len() + 1, chunk.len())
            );
            // Not kept as a prepared statement: PostgreSQL would soon plan it once for all
            // (a generic plan), from a table's size when it was small: a sequential scan
            // that a sync filling the table then pays at every call.
            let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for value in leading {
                q = q.bind(*value);
            }
            for id in chunk {
                q = q.bind(id.as_ref());
            }
            rows.extend(q.fetch_all(self.pool()).await?);
        }
        Ok(rows)
    }

    /// The PBX users synced from the given Microsoft users (absent oids are skipped).
    pub async fn pbx_users_by_oids(
        &self,
        tenant_id: &TenantId,
        oids: &[ObjectId],
    ) -> Result<Vec<PbxUser>, StoreError> {
        let head =
            format!("SELECT {PBX_USER_COLUMNS} FROM pbx_users WHERE tenant_id = $1 AND ms365_oid");
        let rows = self
            .rows_with_ids(&head, &[tenant_id.as_str()], oids)
            .await?;
        rows.iter().map(|r| Ok(PbxUser::from_row(r)?)).collect()
    }

    /// The directory entries of the given Microsoft users (absent oids are skipped).
    pub async fn directory_users_by_oids(
        &self,
        tenant_id: &TenantId,
        oids: &[ObjectId],
    ) -> Result<Vec<DirectoryUser>, StoreError> {
        let head = "SELECT tenant_id, oid, upn, pbx_user_id, extension, display_name, email,
                    role, enabled, source FROM ms365_users WHERE tenant_id = $1 AND oid";
        let rows = self
            .rows_with_ids(head, &[tenant_id.as_str()], oids)
            .await?;
        rows.iter()
            .map(|r| Ok(DirectoryUser::from_row(r)?))
            .collect()
    }

    /// The links of the given local objects (objects without one are skipped).
    pub async fn pbx_links_for(
        &self,
        tenant_id: &TenantId,
        kind: PbxLinkKind,
        local_ids: &[String],
    ) -> Result<Vec<PbxLink>, StoreError> {
        let head = "SELECT kind, local_id, remote_id, created, bound, pushed_hash FROM pbx_links
                    WHERE tenant_id = $1 AND kind = $2 AND local_id";
        let leading = [tenant_id.as_str(), kind.as_str()];
        let rows = self.rows_with_ids(head, &leading, local_ids).await?;
        rows.iter().map(|r| Ok(PbxLink::from_row(r)?)).collect()
    }

    /// How many links of one kind the tenant has.
    pub async fn count_pbx_links(
        &self,
        tenant_id: &TenantId,
        kind: PbxLinkKind,
    ) -> Result<u64, StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM pbx_links WHERE tenant_id = $1 AND kind = $2")
                .bind(tenant_id)
                .bind(kind.as_str())
                .fetch_one(self.pool())
                .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0))
    }

    /// Whether some synced user who may sign in has no PBX user (deleted on the PBX side):
    /// only a full users round brings such a user back.
    pub async fn synced_user_lost_on_pbx(&self, tenant_id: &TenantId) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM ms365_users d
             WHERE d.tenant_id = $1 AND d.source = 'sync' AND d.enabled = 1
               AND NOT EXISTS (SELECT 1 FROM pbx_users p
                               WHERE p.tenant_id = d.tenant_id AND p.ms365_oid = d.oid)",
        )
        .bind(tenant_id)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// Oids of PBX users the sync disabled as `reasons` at or before `cutoff`: the
    /// candidates for deletion once the grace period is over.
    pub async fn retired_oids(
        &self,
        tenant_id: &TenantId,
        reasons: &[&str],
        cutoff: i64,
    ) -> Result<Vec<ObjectId>, StoreError> {
        if reasons.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT ms365_oid FROM pbx_users
             WHERE tenant_id = $1 AND enabled = 0 AND ms365_oid IS NOT NULL
               AND sync_disabled_at <= $2 AND sync_disabled IN ({})",
            placeholders(3, reasons.len())
        );
        let mut q = (sqlx::query(AssertSqlSafe(sql)))
            .bind(tenant_id)
            .bind(cutoff);
        for reason in reasons {
            q = q.bind(*reason);
        }
        let rows = q.fetch_all(self.pool()).await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("ms365_oid"))
            .collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn placeholders_number_from_the_first() {
        assert_eq!(placeholders(3, 3), "$3, $4, $5");
        assert_eq!(placeholders(2, 1), "$2");
    }
}
