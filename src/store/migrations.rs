//! Versioned schema migrations, applied at start-up. Each migration runs in its own
//! transaction together with the row that records it, so a crash leaves the schema either
//! before or after it, never half-way. A database whose recorded version is newer than the
//! newest migration here is refused: an older binary must not write to a schema it does not
//! understand.

use sqlx::Row;

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

pub(super) async fn apply(store: &Store) -> Result<(), StoreError> {
    let pool = store.pool();
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(pool)
    .await?;
    let current = current_version(store).await?;
    if current > LATEST_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known: LATEST_VERSION,
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let sql = match store.backend() {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        };
        let fail = |source| StoreError::Migration {
            version: m.version,
            name: m.name,
            source,
        };
        let mut tx = pool.begin().await.map_err(fail)?;
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(fail)?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(now_epoch())
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied database migration"
        );
    }
    Ok(())
}

/// The highest applied migration (0 for an empty database).
pub async fn current_version(store: &Store) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        .fetch_one(store.pool())
        .await?;
    Ok(row.try_get::<i64, _>("v")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strictly_increase() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
        assert_eq!(MIGRATIONS[0].version, 1);
    }
}
