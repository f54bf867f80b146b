//! Databases for the store's unit tests: SQLite in a temporary directory, or, with
//! `MS365GW_TEST_DATABASE=postgres`, a PostgreSQL schema of the test's own (named
//! `ut_<pid>_<n>`) in the database at `MS365GW_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). The schema is dropped with the [`TestDb`];
//! schemas left by test processes that died are dropped by the next one.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection;

use super::{Store, StoreError};
use crate::config::TenantSeed;
use crate::ids::TenantId;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One test's database.
pub(crate) struct TestDb {
    dir: tempfile::TempDir,
    schema: Option<String>,
}

fn base_url() -> String {
    std::env::var("MS365GW_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

impl TestDb {
    pub(crate) async fn new() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let postgres = std::env::var("MS365GW_TEST_DATABASE")
            .is_ok_and(|v| matches!(v.as_str(), "postgres" | "postgresql"));
        if !postgres {
            return TestDb { dir, schema: None };
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let schema = format!("ut_{}_{n}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(&base_url()).await.unwrap();
        if n == 0 {
            for old in dead_schemas(&mut conn).await {
                let sql = format!("DROP SCHEMA IF EXISTS {old} CASCADE");
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await;
            }
        }
        let sql = format!("CREATE SCHEMA {schema}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        TestDb {
            dir,
            schema: Some(schema),
        }
    }

    /// The URL of this test's database.
    pub(crate) fn url(&self) -> String {
        match &self.schema {
            Some(schema) => {
                let base = base_url();
                let sep = if base.contains('?') { '&' } else { '?' };
                format!("{base}{sep}options[search_path]={schema}")
            }
            None => format!(
                "sqlite://{}?mode=rwc",
                self.dir.path().join("gateway.db").display()
            ),
        }
    }

    /// Opens a store on it (migrations applied).
    pub(crate) async fn open(&self, max_connections: u32) -> Result<Store, StoreError> {
        Store::open_url(&self.url(), max_connections).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        // Drop may run on a runtime thread: the cleanup gets a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&base_url()).await.ok()?;
                let sql =
                    format!("SET lock_timeout = '2s'; DROP SCHEMA IF EXISTS {schema} CASCADE");
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await;
                conn.close().await.ok()
            })
        })
        .join();
    }
}

/// Adds tenant `id` (domain `{id}.test`) to `store`: most store tests need one to own rows.
pub(crate) async fn add_tenant(store: &Store, id: &'static str) -> TenantId {
    let tenant = TenantId::from_static(id);
    let seed = TenantSeed {
        id: tenant.clone(),
        domain: format!("{tenant}.test"),
        name: tenant.to_string(),
        pbx_login: None,
    };
    store.upsert_tenant(&seed).await.unwrap();
    tenant
}

/// `ut_<pid>_<n>` schemas whose process is gone.
async fn dead_schemas(conn: &mut sqlx::PgConnection) -> Vec<String> {
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT nspname::TEXT FROM pg_namespace WHERE nspname LIKE 'ut\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    names
        .into_iter()
        .map(|(n,)| n)
        .filter(|name| {
            let pid = name.split('_').nth(1).and_then(|p| p.parse::<u32>().ok());
            pid.is_some_and(|p| {
                p != std::process::id() && !std::path::Path::new(&format!("/proc/{p}")).exists()
            })
        })
        .collect()
}
