//! Versioned schema migrations, applied at start-up. Each migration runs in its own
//! transaction together with the row that records it, so a crash leaves the schema either
//! before or after it, never half-way. On PostgreSQL the check-and-apply holds a
//! transaction-scoped advisory lock per schema, so several instances starting at once apply
//! each migration exactly once. A database whose recorded version is newer than the newest
//! migration here is refused: an older binary must not write to a schema it does not
//! understand.

use sqlx::{Any, Row, Transaction};

use super::{Backend, Store, StoreError, now_epoch};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "tenants",
        sqlite: TENANTS,
        postgres: TENANTS,
    },
    Migration {
        version: 2,
        name: "tenant_credentials",
        sqlite: CREDENTIALS,
        postgres: CREDENTIALS,
    },
    Migration {
        version: 3,
        name: "ms365_settings_and_users",
        sqlite: MS365,
        postgres: MS365,
    },
    Migration {
        version: 4,
        name: "sessions",
        sqlite: SESSIONS,
        postgres: SESSIONS,
    },
    Migration {
        version: 5,
        name: "pbx_users_and_sync_runs",
        sqlite: DIRECTORY_SYNC,
        postgres: DIRECTORY_SYNC,
    },
    Migration {
        version: 6,
        name: "user_photos",
        sqlite: "CREATE TABLE user_photos (tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE, oid TEXT NOT NULL, etag TEXT NOT NULL, content_type TEXT NOT NULL, bytes BLOB NOT NULL, updated_at BIGINT NOT NULL, PRIMARY KEY (tenant_id, oid));",
        postgres: "CREATE TABLE user_photos (tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE, oid TEXT NOT NULL, etag TEXT NOT NULL, content_type TEXT NOT NULL, bytes BYTEA NOT NULL, updated_at BIGINT NOT NULL, PRIMARY KEY (tenant_id, oid));",
    },
    Migration {
        version: 7,
        name: "contacts",
        sqlite: super::contacts::MIGRATION,
        postgres: super::contacts::MIGRATION,
    },
    Migration {
        version: 8,
        name: "admin_tokens",
        sqlite: super::admin_tokens::MIGRATION,
        postgres: super::admin_tokens::MIGRATION,
    },
    Migration {
        version: 9,
        name: "cluster_coordination",
        sqlite: super::cluster::MIGRATION,
        postgres: super::cluster::MIGRATION,
    },
    Migration {
        version: 10,
        name: "pbx_links",
        sqlite: super::pbx_links::MIGRATION,
        postgres: super::pbx_links::MIGRATION,
    },
    Migration {
        version: 11,
        name: "session_pbx_tokens",
        sqlite: super::sessions::PBX_MIGRATION,
        postgres: super::sessions::PBX_MIGRATION,
    },
    Migration {
        version: 12,
        name: "admin_token_expiry",
        sqlite: super::admin_tokens::EXPIRY_MIGRATION,
        postgres: super::admin_tokens::EXPIRY_MIGRATION,
    },
    Migration {
        version: 13,
        name: "graph_subscriptions",
        sqlite: super::realtime::MIGRATION,
        postgres: super::realtime::MIGRATION,
    },
];

const TENANTS: &str = "
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    domain      TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);";

const CREDENTIALS: &str = "
CREATE TABLE tenant_credentials (
    tenant_id          TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    thumbprint_sha1    TEXT NOT NULL,
    thumbprint_sha256  TEXT NOT NULL,
    not_before         BIGINT NOT NULL,
    not_after          BIGINT NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('pending', 'active', 'retired')),
    certificate_pem    TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    activated_at       BIGINT,
    PRIMARY KEY (tenant_id, thumbprint_sha1)
);";

const MS365: &str = "
CREATE TABLE ms365_settings (
    tenant_id      TEXT PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    settings_json  TEXT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE TABLE ms365_users (
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    oid            TEXT NOT NULL,
    upn            TEXT NOT NULL,
    pbx_user_id    TEXT NOT NULL,
    extension      TEXT,
    display_name   TEXT NOT NULL,
    email          TEXT,
    role           TEXT NOT NULL,
    enabled        BIGINT NOT NULL,
    source         TEXT NOT NULL,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, oid)
);
CREATE UNIQUE INDEX ms365_users_pbx_user ON ms365_users (tenant_id, pbx_user_id);";

const SESSIONS: &str = "
CREATE TABLE sessions (
    id_hash        TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    oid            TEXT NOT NULL,
    pbx_user_id    TEXT NOT NULL,
    client_kind    TEXT NOT NULL,
    listener       TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    last_seen_at   BIGINT NOT NULL,
    revoked_at     BIGINT
);
CREATE INDEX sessions_by_user ON sessions (tenant_id, oid);";

// Usernames are unique case-insensitively (PortSIP treats `Adele` and `adele` as one
// login); `ms365_oid` is NULL for the PBX's own users, and NULLs never collide in a unique
// index on either database. `sync_disabled` says why the sync disabled a user, so only
// users that left Microsoft 365 or the scope are candidates for grace-period deletion.
const DIRECTORY_SYNC: &str = "
CREATE TABLE pbx_users (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    extension_number  TEXT NOT NULL,
    username          TEXT NOT NULL,
    display_name      TEXT NOT NULL,
    first_name        TEXT,
    last_name         TEXT,
    email             TEXT,
    mobile_phone      TEXT,
    work_phone        TEXT,
    title             TEXT,
    department        TEXT,
    office            TEXT,
    enabled           BIGINT NOT NULL,
    source            TEXT NOT NULL CHECK (source IN ('ms365', 'local')),
    ms365_oid         TEXT,
    sync_disabled     TEXT,
    sync_disabled_at  BIGINT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE UNIQUE INDEX pbx_users_extension ON pbx_users (tenant_id, extension_number);
CREATE UNIQUE INDEX pbx_users_username ON pbx_users (tenant_id, LOWER(username));
CREATE UNIQUE INDEX pbx_users_oid ON pbx_users (tenant_id, ms365_oid);
CREATE TABLE sync_state (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    delta_link   TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, kind)
);
CREATE TABLE sync_runs (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    seq             BIGINT NOT NULL,
    triggered_by    TEXT NOT NULL,
    mode            TEXT,
    started_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    status          TEXT NOT NULL
                    CHECK (status IN ('running', 'succeeded', 'failed', 'awaiting_approval', 'cancelled')),
    message         TEXT,
    counts_json     TEXT NOT NULL,
    errors_json     TEXT NOT NULL,
    errors_total    BIGINT NOT NULL,
    graph_requests  BIGINT NOT NULL,
    throttled       BIGINT NOT NULL,
    phase           TEXT NOT NULL,
    done            BIGINT NOT NULL,
    total           BIGINT NOT NULL,
    pending_json    TEXT
);
CREATE UNIQUE INDEX sync_runs_by_tenant ON sync_runs (tenant_id, seq);";

/// The schema version this binary writes.
pub const LATEST_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Serialises migrations of one schema across instances (PostgreSQL); released when the
/// transaction that took it ends.
const PG_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended('ms365-gateway migrations ' || current_schema(), 0))";

const CREATE_SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

/// Applies every pending migration, one transaction each.
pub(super) async fn apply(store: &Store) -> Result<(), StoreError> {
    while let Some(m) = apply_next(store).await? {
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied database migration"
        );
    }
    Ok(())
}

/// In one transaction: takes the migration lock (PostgreSQL: an advisory lock, SQLite: the
/// write lock; instances starting together wait for each other instead of racing), reads the recorded version, refuses a newer
/// schema, and applies the next migration with the row that records it. `None` when the
/// schema is up to date.
async fn apply_next(store: &Store) -> Result<Option<&'static Migration>, StoreError> {
    let mut tx = match store.backend() {
        // A write transaction from the start: a second process waits (busy_timeout)
        // instead of failing when it upgrades a read.
        Backend::Sqlite => store.pool().begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => {
            let mut tx = store.pool().begin().await?;
            sqlx::query(PG_LOCK).execute(&mut *tx).await?;
            tx
        }
    };
    sqlx::raw_sql(CREATE_SCHEMA_MIGRATIONS)
        .execute(&mut *tx)
        .await?;
    let current = version_of(&mut tx).await?;
    if current > LATEST_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known: LATEST_VERSION,
        });
    }
    let Some(m) = MIGRATIONS.iter().find(|m| m.version > current) else {
        tx.commit().await?;
        return Ok(None);
    };
    let sql = match store.backend() {
        Backend::Sqlite => m.sqlite,
        Backend::Postgres => m.postgres,
    };
    let fail = |source| StoreError::Migration {
        version: m.version,
        name: m.name,
        source,
    };
    sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(fail)?;
    sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
        .bind(m.version)
        .bind(m.name)
        .bind(now_epoch())
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
    tx.commit().await.map_err(fail)?;
    Ok(Some(m))
}

async fn version_of(tx: &mut Transaction<'static, Any>) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.try_get::<i64, _>("v")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db::TestDb;

    #[test]
    fn versions_strictly_increase() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
        assert_eq!(MIGRATIONS[0].version, 1);
    }

    async fn version(store: &Store) -> i64 {
        let mut tx = store.pool().begin().await.unwrap();
        version_of(&mut tx).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn instances_starting_together_migrate_once() {
        let db = TestDb::new().await;
        let opens = (0..4).map(|_| db.open(2));
        let stores = futures_util::future::join_all(opens).await;
        for store in stores {
            let store = store.expect("every instance starts");
            assert_eq!(version(&store).await, LATEST_VERSION);
            store.close().await;
        }
        let store = db.open(1).await.unwrap();
        let rows = sqlx::query("SELECT version FROM schema_migrations")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(rows.len(), MIGRATIONS.len(), "each migration recorded once");
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let db = TestDb::new().await;
        let store = db.open(1).await.unwrap();
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'future', 0)",
        )
        .bind(LATEST_VERSION + 1)
        .execute(store.pool())
        .await
        .unwrap();
        store.close().await;
        match db.open(1).await {
            Err(StoreError::SchemaTooNew { found, known }) => {
                assert_eq!((found, known), (LATEST_VERSION + 1, LATEST_VERSION));
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }
}
