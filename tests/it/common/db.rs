//! The database each test runs on. By default SQLite in the test's data directory, as the
//! gateway uses it; with `MS365GW_TEST_DATABASE=postgres`, a PostgreSQL schema of the test's
//! own in the database at `MS365GW_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), selected through the URL's `search_path`, so
//! tests stay independent and run in parallel.
//!
//! A test's database is keyed by its data directory: [`store_toml`] (the `[store]` lines of
//! the gateway's configuration) and [`open_store`] (the test's own handle) reach the same
//! one. Schemas are named `it_<pid>_<n>` and dropped once the test's temporary directory is
//! gone, or, for a process that ended, by the next process that creates one.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ms365_gateway::store::Store;
use sqlx::Connection;

/// Set to `postgres` to run the tests on PostgreSQL.
pub const BACKEND_VAR: &str = "MS365GW_TEST_DATABASE";
/// The PostgreSQL database the test schemas are created in.
pub const URL_VAR: &str = "MS365GW_TEST_DATABASE_URL";
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// True when the tests run on PostgreSQL.
pub fn is_postgres() -> bool {
    std::env::var(BACKEND_VAR).is_ok_and(|v| matches!(v.as_str(), "postgres" | "postgresql"))
}

fn base_url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// The `[store]` table for a gateway whose data lives in `data_dir` (empty for SQLite). On
/// PostgreSQL it names a master key file, written now (`super::keys`).
pub fn store_toml(data_dir: &Path) -> String {
    match database_url(data_dir) {
        Some(url) => format!(
            "[store]\ndatabase_url = \"{url}\"\nconnect_timeout = \"10s\"\nmaster_key_file = \"{}\"\n",
            super::keys::ensure_master_key(data_dir).display()
        ),
        None => String::new(),
    }
}

/// The PostgreSQL URL of the test keyed by `data_dir`, its schema created on first use;
/// `None` on SQLite.
pub fn database_url(data_dir: &Path) -> Option<String> {
    if !is_postgres() {
        return None;
    }
    let schema = schema_for(data_dir);
    Some(schema_url(&schema))
}

/// A PostgreSQL URL for the test keyed by `data_dir` whatever the backend under test:
/// for tests that need PostgreSQL itself (several gateway processes on one database).
pub fn postgres_url(data_dir: &Path) -> String {
    schema_url(&schema_for(data_dir))
}

/// Opens the store the gateway of the test keyed by `data_dir` uses.
pub async fn open_store(data_dir: &Path, max_connections: u32) -> Store {
    match database_url(data_dir) {
        Some(url) => Store::open_url(&url, max_connections).await,
        None => Store::open_sqlite(data_dir, max_connections).await,
    }
    .expect("test store opens")
}

/// Runs `sql` (one statement) on the test's database, outside the store's API.
pub async fn execute(data_dir: &Path, sql: &str) {
    sqlx::any::install_default_drivers();
    let url = database_url(data_dir)
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("gateway.db").display()));
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// Everything the test's database holds, as bytes: the SQLite files (main file and WAL),
/// or on PostgreSQL the text of every row of every table of the test's schema.
pub async fn stored_bytes(data_dir: &Path) -> Vec<u8> {
    let Some(url) = database_url(data_dir) else {
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(data_dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("gateway.db") {
                bytes.extend(std::fs::read(&path).unwrap());
            }
        }
        return bytes;
    };
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut bytes = Vec::new();
    for (table,) in tables {
        let sql = format!("SELECT COALESCE(string_agg(t::TEXT, ' '), '') FROM {table} t");
        let (text,): (String,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        bytes.extend(text.into_bytes());
    }
    conn.close().await.unwrap();
    bytes
}

fn schema_url(schema: &str) -> String {
    let base = base_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options[search_path]={schema}")
}

/// Schemas of this process: (schema, the directory whose removal ends the test).
struct Registry {
    by_dir: BTreeMap<PathBuf, String>,
    live: Vec<(String, PathBuf)>,
    next: u32,
    swept_dead_processes: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    by_dir: BTreeMap::new(),
    live: Vec::new(),
    next: 0,
    swept_dead_processes: false,
});

fn schema_for(data_dir: &Path) -> String {
    let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(schema) = reg.by_dir.get(data_dir) {
        return schema.clone();
    }
    reg.next += 1;
    let schema = format!("it_{}_{}", std::process::id(), reg.next);
    // A test's data directory may not exist yet; its temporary directory does.
    let witness = if data_dir.exists() {
        data_dir.to_path_buf()
    } else {
        data_dir.parent().unwrap_or(data_dir).to_path_buf()
    };
    let (finished, still): (Vec<_>, Vec<_>) = std::mem::take(&mut reg.live)
        .into_iter()
        .partition(|(_, dir)| !dir.exists());
    reg.live = still;
    let sweep = !std::mem::replace(&mut reg.swept_dead_processes, true);
    let dropped: Vec<String> = finished.into_iter().map(|(s, _)| s).collect();
    let created = schema.clone();
    blocking(async move { prepare(&created, &dropped, sweep).await });
    reg.by_dir.insert(data_dir.to_path_buf(), schema.clone());
    reg.live.push((schema.clone(), witness));
    schema
}

/// Creates `schema`, drops the schemas of finished tests and, when `sweep`, those left by
/// test processes that are gone.
async fn prepare(schema: &str, finished: &[String], sweep: bool) {
    let url = base_url();
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{BACKEND_VAR}=postgres needs PostgreSQL at {url}: {e}"));
    let mut stale = finished.to_vec();
    if sweep {
        stale.extend(schemas_of_dead_processes(&mut conn).await);
    }
    // Best effort: a schema still in use is left for a later sweep.
    let _ = sqlx::raw_sql("SET lock_timeout = '2s'")
        .execute(&mut conn)
        .await;
    for old in stale {
        let sql = format!("DROP SCHEMA IF EXISTS {old} CASCADE");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await;
    }
    let sql = format!("CREATE SCHEMA {schema}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
}

async fn schemas_of_dead_processes(conn: &mut sqlx::PgConnection) -> Vec<String> {
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT nspname::TEXT FROM pg_namespace WHERE nspname LIKE 'it\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    names
        .into_iter()
        .map(|(n,)| n)
        .filter(|name| {
            let pid = name.split('_').nth(1).and_then(|p| p.parse::<u32>().ok());
            pid.is_some_and(|pid| {
                pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
            })
        })
        .collect()
}

/// Runs `f` to completion on a runtime of its own (callers may be sync or async tests).
fn blocking<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}
