//! The store: every piece of state that must survive a restart or be shared between
//! instances (tenants, credentials, sessions, the directory, contacts, photos, sync runs,
//! cluster coordination). One [`Store`] type hides the
//! driver: it runs on sqlx's `Any` driver with SQLite (the embedded default, WAL mode, in
//! `data_dir`) or PostgreSQL (`[store] database_url`, shared by several instances), with the
//! same queries on both: `$n` placeholders, integer epoch seconds for time, BIGINT 0/1 for
//! booleans, no driver-specific types. Schema changes are versioned migrations
//! ([`migrations`]).

mod admin_tokens;
mod cluster;
mod columns;
mod contact_books;
mod contacts;
mod credentials;
mod directory;
mod directory_creates;
mod focused;
mod id_columns;
mod migrations;
mod ms365;
mod pbx_links;
mod photos;
mod realtime;
mod sessions;
mod sync_runs;
mod tenants;
#[cfg(test)]
pub(crate) mod test_db;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

use crate::config::{Config, DATABASE_URL_KEY, DatabaseUrl, redact_url};

pub use admin_tokens::AdminToken;
pub use cluster::LeaseHolder;
pub use contact_books::{BookCounts, BookWrite};
pub use contacts::{ContactBook, ContactFields, StoredContact, UpsertCounts};
pub use credentials::{CredentialRecord, CredentialState};
pub use directory::{DirectoryWrite, PbxProfile, PbxUser, PbxUserSource, SyncCursor};
pub use migrations::LATEST_VERSION;
pub use ms365::{DirectoryUser, Role};
pub use pbx_links::{ImportedPbxUser, PbxLink, PbxLinkKind, PbxStatus};
pub use photos::{NewPhoto, StoredPhoto};
pub use realtime::{RealtimeStatus, StoredSubscription, client_state_name};
pub use sessions::{SessionPbx, SessionRecord};
pub use sync_runs::{
    EntityCounts, ItemError, ItemOutcome, MAX_RUN_ERRORS, PhaseOutcome, RunOutcome, RunStatus,
    RunTrigger, SyncRun,
};
pub use tenants::Tenant;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {location}: {source}")]
    Open {
        location: String,
        source: sqlx::Error,
    },
    #[error("cannot connect to the database at {host} (key `{key}` = {url}): {source}")]
    Connect {
        key: &'static str,
        host: String,
        /// The URL with its password redacted.
        url: String,
        source: sqlx::Error,
    },
    #[error(
        "the database schema is at version {found}, newer than this gateway knows ({known}); \
         run the newer gateway, or restore a backup made for this version"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        source: sqlx::Error,
    },
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    #[error("{0}")]
    Conflict(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

/// Which SQL dialect the pool speaks (for the few statements that differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens the database `config` names: PostgreSQL at `[store] database_url`, otherwise
    /// SQLite in `data_dir`; applies migrations (refusing a schema newer than this binary).
    pub async fn open(config: &Config) -> Result<Store, StoreError> {
        let s = &config.store;
        match &s.database_url {
            Some(url) => Store::open_postgres(url, s.max_connections, s.connect_timeout).await,
            None => {
                let url = sqlite_url(&config.data_dir)?;
                Store::open_with(&url, Backend::Sqlite, s.max_connections, s.connect_timeout).await
            }
        }
    }

    /// Opens (creating if needed) the SQLite database `gateway.db` in `data_dir`.
    pub async fn open_sqlite(data_dir: &Path, max_connections: u32) -> Result<Store, StoreError> {
        let url = sqlite_url(data_dir)?;
        Store::open_with(
            &url,
            Backend::Sqlite,
            max_connections,
            DEFAULT_CONNECT_TIMEOUT,
        )
        .await
    }

    /// Opens a PostgreSQL database; a failure to connect names `store.database_url` and
    /// the host, never the password.
    pub async fn open_postgres(
        url: &DatabaseUrl,
        max_connections: u32,
        connect_timeout: Duration,
    ) -> Result<Store, StoreError> {
        let unreachable = |source| StoreError::Connect {
            key: DATABASE_URL_KEY,
            host: url.host(),
            url: url.redacted(),
            source,
        };
        let pool = match connect(
            url.expose(),
            Backend::Postgres,
            max_connections,
            connect_timeout,
        )
        .await
        {
            Ok(pool) => pool,
            // The pool retries refused connections until the timeout and then reports only
            // that it timed out: one direct attempt tells why.
            Err(sqlx::Error::PoolTimedOut) => {
                return Err(unreachable(why_unreachable(url, connect_timeout).await));
            }
            Err(e) => return Err(unreachable(e)),
        };
        Store::migrated(pool, Backend::Postgres).await
    }

    /// Opens a database by URL (`sqlite://…` or `postgres://…`) and applies migrations.
    pub async fn open_url(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        Store::open_with(url, backend, max_connections, DEFAULT_CONNECT_TIMEOUT).await
    }

    async fn open_with(
        url: &str,
        backend: Backend,
        max_connections: u32,
        connect_timeout: Duration,
    ) -> Result<Store, StoreError> {
        let pool = connect(url, backend, max_connections, connect_timeout)
            .await
            .map_err(|source| StoreError::Open {
                location: redact_url(url),
                source,
            })?;
        Store::migrated(pool, backend).await
    }

    async fn migrated(pool: AnyPool, backend: Backend) -> Result<Store, StoreError> {
        let store = Store { pool, backend };
        if let Err(e) = migrations::apply(&store).await {
            store.close().await;
            return Err(e);
        }
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether this connection to PostgreSQL is TLS (`None` on SQLite): what the server says,
    /// whatever the URL asked for.
    pub async fn encrypted_link(&self) -> Result<Option<bool>, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT CASE WHEN ssl THEN 1 ELSE 0 END AS tls FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .fetch_optional(self.pool())
        .await?;
        Ok(Some(match row {
            Some(row) => sqlx::Row::try_get::<i32, _>(&row, "tls")? == 1,
            None => false,
        }))
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Runs `query` and converts each row as it arrives, for reads of a whole tenant. Held
    /// as sqlx rows first, the directory of a 50,000-user tenant took 115 MB at the sync's
    /// peak, several times the converted list (heaptrack; docs/benchmarks.md).
    pub(crate) async fn fetch_converted<'q, T, A>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, A>,
        convert: fn(&sqlx::any::AnyRow) -> Result<T, sqlx::Error>,
    ) -> Result<Vec<T>, StoreError>
    where
        A: sqlx::IntoArguments<sqlx::Any> + 'q,
    {
        use futures_util::TryStreamExt;
        let mut rows = query.fetch(&self.pool);
        let mut out = Vec::new();
        while let Some(row) = rows.try_next().await? {
            out.push(convert(&row)?);
        }
        Ok(out)
    }

    /// A cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Current time as Unix seconds, the store's time format.
pub use crate::clock::now_epoch;

/// How long [`Store::open_sqlite`] and [`Store::open_url`] wait for a connection.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn sqlite_url(data_dir: &Path) -> Result<String, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Open {
        location: data_dir.display().to_string(),
        source: sqlx::Error::Io(e),
    })?;
    Ok(format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("gateway.db").display()
    ))
}

/// A pool with one connection proven to work.
async fn connect(
    url: &str,
    backend: Backend,
    max_connections: u32,
    connect_timeout: Duration,
) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let options = AnyConnectOptions::from_str(url)?;
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(connect_timeout)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    // WAL lets readers run beside the writer; busy_timeout waits out the
                    // short write locks instead of failing. A page cache of 1 MiB per
                    // connection instead of SQLite's 2: eight of them filled by a large
                    // tenant's sync were 8 MiB of its peak, and the sync bench runs no
                    // slower with the smaller cache (docs/benchmarks.md).
                    conn.execute(
                        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
                         PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON; \
                         PRAGMA cache_size=-1024;",
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
}

/// The error of one direct connection attempt (the pool only says it timed out).
async fn why_unreachable(url: &DatabaseUrl, timeout: Duration) -> sqlx::Error {
    use sqlx::Connection;
    match tokio::time::timeout(timeout, sqlx::AnyConnection::connect(url.expose())).await {
        Ok(Err(e)) => e,
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            sqlx::Error::PoolTimedOut
        }
        Err(_) => sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_connections_get_their_settings() {
        // SQLite whatever backend the suite runs on: these settings are SQLite's alone.
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("gateway.db").display()
        );
        let store = Store::open_url(&url, 2).await.unwrap();
        assert_eq!(store.backend(), Backend::Sqlite);
        // Every connection of the pool, not only the first one.
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut conn = store.pool().acquire().await.unwrap();
            let journal = sqlx::query_scalar::<_, String>("PRAGMA journal_mode")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(journal, "wal");
            let cache = sqlx::query_scalar::<_, i64>("PRAGMA cache_size")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(cache, -1024);
            held.push(conn);
        }
    }
}
