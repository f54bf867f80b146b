//! The store: every piece of state that must survive a restart (tenants now; sessions, keys,
//! sync state in later layers). One [`Store`] type hides the driver: it runs on sqlx's `Any`
//! driver with SQLite (the embedded default, WAL mode, in `data_dir`) and is written so that
//! PostgreSQL runs the same queries: `$n` placeholders, integer epoch seconds for time, no
//! driver-specific types. Schema changes are versioned migrations ([`migrations`]).

mod admin_tokens;
mod cluster;
mod contacts;
mod credentials;
mod directory;
mod migrations;
mod ms365;
mod photos;
mod sessions;
mod sync_runs;
mod tenants;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use admin_tokens::AdminToken;
pub use cluster::LeaseHolder;
pub use contacts::{ContactBook, ContactFields, StoredContact, UpsertCounts};
pub use credentials::{CredentialRecord, CredentialState};
pub use directory::{DirectoryWrite, PbxProfile, PbxUser, PbxUserSource, SyncCursor};
pub use migrations::LATEST_VERSION;
pub use ms365::DirectoryUser;
pub use photos::StoredPhoto;
pub use sessions::SessionRecord;
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
    /// Opens (creating if needed) the SQLite database `gateway.db` in `data_dir`.
    pub async fn open_sqlite(data_dir: &Path, max_connections: u32) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Open {
            location: data_dir.display().to_string(),
            source: sqlx::Error::Io(e),
        })?;
        let path = data_dir.join("gateway.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Store::open_url(&url, max_connections).await
    }

    /// Opens a database by URL (`sqlite://…` or `postgres://…`) and applies migrations.
    pub async fn open_url(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let location = redact_url(url);
        let open_err = |source| StoreError::Open {
            location: location.clone(),
            source,
        };
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let options = AnyConnectOptions::from_str(url).map_err(open_err)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; busy_timeout waits out
                        // the short write locks instead of failing.
                        conn.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(open_err)?;
        let store = Store { pool, backend };
        migrations::apply(&store).await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
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
pub fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Hides a password in a database URL for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            super::redact_url("sqlite://data/x.db"),
            "sqlite://data/x.db"
        );
    }
}
