//! What real-time updates keep in the store, so every instance behind the balancer sees the
//! same: the tenant's Graph subscriptions (the `clientState` sealed, the expiry Graph
//! answered, failed attempts with the time to try again), the queue of notified targets
//! waiting for a targeted run (one row per tenant and target, so a burst coalesces by
//! itself), and how real-time updates are doing for the status page.
//!
//! A target is what a notification asks to be read again: `users`, `shared:{oid}` (a
//! shared mailbox's contacts) or `personal:{oid}` (a user's own contacts).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_epoch};
use crate::ids::TenantId;

/// Schema of migration 13 (the same SQL on SQLite and PostgreSQL).
pub(super) const MIGRATION: &str = "
CREATE TABLE graph_subscriptions (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    target        TEXT NOT NULL,
    resource      TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('active', 'failed')),
    client_state  TEXT NOT NULL,
    expires_at    BIGINT NOT NULL,
    reauthorize   BIGINT NOT NULL,
    message       TEXT NOT NULL,
    updated_at    BIGINT NOT NULL,
    UNIQUE (tenant_id, target)
);
CREATE TABLE realtime_queue (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    target      TEXT NOT NULL,
    first_ms    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, target)
);
CREATE TABLE realtime_status (
    tenant_id          TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    ok                 BIGINT NOT NULL,
    message            TEXT NOT NULL,
    checked_at         BIGINT NOT NULL,
    last_notification  BIGINT NOT NULL,
    last_renewal       BIGINT NOT NULL
);";

/// A subscription of the tenant, or a failed attempt at one.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    /// Graph's subscription id (`failed:` + a random id for a failed attempt).
    pub id: String,
    pub tenant_id: TenantId,
    pub target: String,
    pub resource: String,
    /// False for a failed attempt, whose `expires_at` is when to try again.
    pub active: bool,
    /// Sealed under the master key (name: [`client_state_name`]).
    pub sealed_client_state: String,
    pub expires_at: i64,
    /// Microsoft asked for reauthorization (`reauthorizationRequired`).
    pub reauthorize: bool,
    /// Why the attempt failed; empty for an active subscription.
    pub message: String,
    pub updated_at: i64,
}

impl std::fmt::Debug for StoredSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSubscription")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("target", &self.target)
            .field("active", &self.active)
            .field("expires_at", &self.expires_at)
            .field("reauthorize", &self.reauthorize)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

/// The name a subscription's `clientState` is sealed under: a sealed value opens only in
/// its own row.
pub fn client_state_name(subscription_id: &str) -> String {
    format!("graph-subscription:{subscription_id}")
}

impl StoredSubscription {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(StoredSubscription {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            target: row.try_get("target")?,
            resource: row.try_get("resource")?,
            active: row.try_get::<String, _>("state")? == "active",
            sealed_client_state: row.try_get("client_state")?,
            expires_at: row.try_get("expires_at")?,
            reauthorize: row.try_get::<i64, _>("reauthorize")? != 0,
            message: row.try_get("message")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// How real-time updates of a tenant are doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealtimeStatus {
    /// The last reconciliation created or kept every subscription it wanted.
    pub ok: bool,
    pub message: String,
    pub checked_at: i64,
    /// Epoch seconds of the last trusted notification; 0 = none yet.
    pub last_notification: i64,
    /// Epoch seconds of the last successful creation or renewal; 0 = none yet.
    pub last_renewal: i64,
}

/// The columns of `graph_subscriptions`, in `concat!` (sqlx takes only static SQL).
macro_rules! columns {
    () => {
        "id, tenant_id, target, resource, state, client_state, expires_at, reauthorize, \
         message, updated_at"
    };
}

impl Store {
    /// Every subscription and failed attempt of the tenant.
    pub async fn subscriptions(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Vec<StoredSubscription>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM graph_subscriptions WHERE tenant_id = $1 ORDER BY target"
        );
        let rows = sqlx::query(sql)
            .bind(tenant_id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(StoredSubscription::from_row)
            .collect::<Result<_, _>>()?)
    }

    /// One active subscription by Graph's id (what a notification names).
    pub async fn subscription(&self, id: &str) -> Result<Option<StoredSubscription>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM graph_subscriptions WHERE id = $1 AND state = 'active'"
        );
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(StoredSubscription::from_row).transpose()?)
    }

    /// Records a subscription (or failed attempt) for its target, replacing what the
    /// target had.
    pub async fn put_subscription(&self, s: &StoredSubscription) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM graph_subscriptions WHERE tenant_id = $1 AND target = $2")
            .bind(&s.tenant_id)
            .bind(&s.target)
            .execute(&mut *tx)
            .await?;
        let sql = concat!(
            "INSERT INTO graph_subscriptions (",
            columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        );
        sqlx::query(sql)
            .bind(&s.id)
            .bind(&s.tenant_id)
            .bind(&s.target)
            .bind(&s.resource)
            .bind(if s.active { "active" } else { "failed" })
            .bind(&s.sealed_client_state)
            .bind(s.expires_at)
            .bind(i64::from(s.reauthorize))
            .bind(&s.message)
            .bind(now_epoch())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A renewal (or reauthorization) succeeded: the new expiry.
    pub async fn renew_subscription(&self, id: &str, expires_at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE graph_subscriptions SET expires_at = $2, reauthorize = 0, updated_at = $3
             WHERE id = $1",
        )
        .bind(id)
        .bind(expires_at)
        .bind(now_epoch())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Microsoft asked for the subscription to be reauthorized.
    pub async fn mark_reauthorize(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE graph_subscriptions SET reauthorize = 1 WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Forgets a subscription (deleted, removed by Microsoft, or gone).
    pub async fn delete_subscription(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM graph_subscriptions WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Enabled users the sync created from Microsoft 365 (an upper bound of the personal
    /// mailboxes in scope), counted without reading them.
    pub async fn count_synced_users(&self, tenant_id: &TenantId) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM pbx_users
             WHERE tenant_id = $1 AND enabled = 1 AND source = 'ms365' AND ms365_oid IS NOT NULL",
        )
        .bind(tenant_id)
        .fetch_one(self.pool())
        .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0))
    }

    /// Queues `target` of the tenant for a targeted run; a target already queued keeps its
    /// first time, so the debounce window counts from the first notification.
    pub async fn queue_realtime(
        &self,
        tenant_id: &TenantId,
        target: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO realtime_queue (tenant_id, target, first_ms) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, target) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(target)
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The tenants with queued targets and when their oldest was queued (epoch ms).
    pub async fn realtime_due(&self) -> Result<Vec<(TenantId, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, MIN(first_ms) AS first_ms FROM realtime_queue GROUP BY tenant_id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("tenant_id")?, r.try_get("first_ms")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Takes the tenant's queued targets (the caller holds the tenant's sync lease).
    pub async fn take_realtime_queue(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("DELETE FROM realtime_queue WHERE tenant_id = $1 RETURNING target")
            .bind(tenant_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| r.try_get("target"))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// How the last reconciliation went (keeps the notification and renewal times).
    pub async fn set_realtime_status(
        &self,
        tenant_id: &TenantId,
        ok: bool,
        message: &str,
        renewed: bool,
    ) -> Result<(), StoreError> {
        let now = now_epoch();
        sqlx::query(
            "INSERT INTO realtime_status (tenant_id, ok, message, checked_at, last_notification, last_renewal)
             VALUES ($1, $2, $3, $4, 0, $5)
             ON CONFLICT (tenant_id) DO UPDATE SET ok = excluded.ok, message = excluded.message,
               checked_at = excluded.checked_at,
               last_renewal = CASE WHEN excluded.last_renewal > 0 THEN excluded.last_renewal
                                   ELSE realtime_status.last_renewal END",
        )
        .bind(tenant_id)
        .bind(i64::from(ok))
        .bind(message)
        .bind(now)
        .bind(if renewed { now } else { 0 })
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A trusted notification arrived for the tenant.
    pub async fn note_notification(&self, tenant_id: &TenantId) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO realtime_status (tenant_id, ok, message, checked_at, last_notification, last_renewal)
             VALUES ($1, 1, '', $2, $2, 0)
             ON CONFLICT (tenant_id) DO UPDATE SET last_notification = excluded.last_notification",
        )
        .bind(tenant_id)
        .bind(now_epoch())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn realtime_status(
        &self,
        tenant_id: &TenantId,
    ) -> Result<Option<RealtimeStatus>, StoreError> {
        let row = sqlx::query(
            "SELECT ok, message, checked_at, last_notification, last_renewal
             FROM realtime_status WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_optional(self.pool())
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(RealtimeStatus {
            ok: r.try_get::<i64, _>("ok")? != 0,
            message: r.try_get("message")?,
            checked_at: r.try_get("checked_at")?,
            last_notification: r.try_get("last_notification")?,
            last_renewal: r.try_get("last_renewal")?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db::TestDb;

    async fn store_with_tenant() -> (TestDb, Store) {
        let db = TestDb::new().await;
        let store = db.open(1).await.unwrap();
        crate::store::test_db::add_tenant(&store, "t1").await;
        (db, store)
    }

    #[tokio::test]
    async fn queued_targets_coalesce_and_are_taken_once() {
        let (_db, store) = store_with_tenant().await;
        store
            .queue_realtime(&TenantId::from_static("t1"), "users", 1_000)
            .await
            .unwrap();
        store
            .queue_realtime(&TenantId::from_static("t1"), "users", 2_000)
            .await
            .unwrap();
        store
            .queue_realtime(&TenantId::from_static("t1"), "shared:abc", 3_000)
            .await
            .unwrap();
        assert_eq!(
            store.realtime_due().await.unwrap(),
            vec![(TenantId::from_static("t1"), 1_000)]
        );
        let mut taken = store
            .take_realtime_queue(&TenantId::from_static("t1"))
            .await
            .unwrap();
        taken.sort();
        assert_eq!(taken, vec!["shared:abc".to_string(), "users".to_string()]);
        assert!(
            store
                .take_realtime_queue(&TenantId::from_static("t1"))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.realtime_due().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_target_has_one_subscription_and_failed_ones_are_not_found_by_id() {
        let (_db, store) = store_with_tenant().await;
        let mut s = StoredSubscription {
            id: "sub-1".into(),
            tenant_id: TenantId::from_static("t1"),
            target: "users".into(),
            resource: "users".into(),
            active: true,
            sealed_client_state: "sealed".into(),
            expires_at: 100,
            reauthorize: false,
            message: String::new(),
            updated_at: 0,
        };
        store.put_subscription(&s).await.unwrap();
        assert!(store.subscription("sub-1").await.unwrap().is_some());
        store.mark_reauthorize("sub-1").await.unwrap();
        assert!(
            store
                .subscription("sub-1")
                .await
                .unwrap()
                .unwrap()
                .reauthorize
        );
        store.renew_subscription("sub-1", 200).await.unwrap();
        let renewed = store.subscription("sub-1").await.unwrap().unwrap();
        assert_eq!((renewed.expires_at, renewed.reauthorize), (200, false));
        s.id = "failed:x".into();
        s.active = false;
        store.put_subscription(&s).await.unwrap();
        assert!(
            store.subscription("sub-1").await.unwrap().is_none(),
            "replaced"
        );
        assert!(store.subscription("failed:x").await.unwrap().is_none());
        assert_eq!(
            store
                .subscriptions(&TenantId::from_static("t1"))
                .await
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn status_keeps_notification_and_renewal_times() {
        let (_db, store) = store_with_tenant().await;
        store
            .set_realtime_status(&TenantId::from_static("t1"), true, "ok", true)
            .await
            .unwrap();
        store
            .note_notification(&TenantId::from_static("t1"))
            .await
            .unwrap();
        store
            .set_realtime_status(&TenantId::from_static("t1"), false, "cannot", false)
            .await
            .unwrap();
        let s = store
            .realtime_status(&TenantId::from_static("t1"))
            .await
            .unwrap()
            .unwrap();
        assert!(!s.ok);
        assert_eq!(s.message, "cannot");
        assert!(s.last_notification > 0 && s.last_renewal > 0);
    }
}
