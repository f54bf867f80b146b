//! Setup shared by the benchmarks (`#[path]` module of `sso.rs` and `sync.rs`, not a bench
//! target of its own): environment knobs, `/proc` readings, and the database a run uses.
//!
//! Backend: `DATABASE_URL` unset → SQLite in the bench's temporary data directory (the
//! gateway's default); `DATABASE_URL=postgres://…` → a fresh schema `bench_<pid>` in that
//! database, selected through the URL's `options[search_path]`, dropped by [`Database::drop`]
//! at the end. PostgreSQL needs a configured master key: [`Database::store_toml`] writes one
//! into the data directory and names it as `[store] master_key_file`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use base64::Engine;
use ms365_gateway::keyring::{GENERATED_KEY_FILE, Keyring, MasterKeySource};
use ms365_gateway::store::Store;
use sqlx::Connection;

pub fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The emulator (`ms365-gateway emulator`) as its own process; killed when dropped.
pub struct EmulatorProcess {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the emulator seeded with `seed` (`users=…,contacts=…`) and waits until it answers.
pub async fn start_emulator(seed: &str) -> EmulatorProcess {
    let port = free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ms365-gateway"))
        .args(["--log", "warn", "emulator", "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--seed", seed])
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let emulator = EmulatorProcess {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    for _ in 0..1200 {
        let up = http
            .get(format!("{}/_emulator/tenants", emulator.base))
            .send()
            .await;
        if up.is_ok_and(|r| r.status().is_success()) {
            return emulator;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the emulator did not come up");
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn status_mb(pid: &str, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    kb / 1024.0
}

/// Peak RSS (VmHWM) of a process, MiB.
pub fn peak_rss_mb(pid: u32) -> f64 {
    status_mb(&pid.to_string(), "VmHWM:")
}

/// Peak RSS (VmHWM) of this process, MiB.
pub fn own_peak_rss_mb() -> f64 {
    status_mb("self", "VmHWM:")
}

/// Current RSS (VmRSS) of this process, MiB.
pub fn own_rss_mb() -> f64 {
    status_mb("self", "VmRSS:")
}

/// Resets this process's VmHWM to its current RSS (`clear_refs` 5), so the next phase's
/// peak is its own.
pub fn reset_own_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The database of one benchmark run.
pub struct Database {
    /// `None` on SQLite.
    url: Option<String>,
    base: Option<String>,
    schema: Option<String>,
}

impl Database {
    /// From `DATABASE_URL`: SQLite when unset, otherwise a fresh schema in that database.
    pub async fn from_env() -> Database {
        let Some(base) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) else {
            return Database {
                url: None,
                base: None,
                schema: None,
            };
        };
        let schema = format!("bench_{}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(&base)
            .await
            .unwrap_or_else(|e| panic!("DATABASE_URL={base}: {e}"));
        let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        let sep = if base.contains('?') { '&' } else { '?' };
        Database {
            url: Some(format!("{base}{sep}options[search_path]={schema}")),
            base: Some(base),
            schema: Some(schema),
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.url.is_some()
    }

    /// `SQLite` or `PostgreSQL (schema bench_<pid>)`.
    pub fn label(&self) -> String {
        match &self.schema {
            Some(s) => format!("PostgreSQL (schema {s})"),
            None => "SQLite".to_string(),
        }
    }

    /// The master key file of a gateway whose data lives in `data_dir`.
    pub fn master_key_path(data_dir: &Path) -> PathBuf {
        data_dir.join(GENERATED_KEY_FILE)
    }

    /// The `[store]` table for a gateway with `data_dir` (empty on SQLite, where the gateway
    /// generates its master key into `data_dir`). On PostgreSQL the master key is written
    /// now.
    pub fn store_toml(&self, data_dir: &Path) -> String {
        let Some(url) = &self.url else {
            return String::new();
        };
        std::fs::create_dir_all(data_dir).unwrap();
        let key = Self::master_key_path(data_dir);
        if !key.exists() {
            let bytes = ms365_gateway::Sealer::generate_key();
            std::fs::write(
                &key,
                base64::engine::general_purpose::STANDARD.encode(bytes),
            )
            .unwrap();
        }
        format!(
            "[store]\ndatabase_url = \"{url}\"\nconnect_timeout = \"10s\"\nmaster_key_file = \"{}\"\n",
            key.display()
        )
    }

    /// The bench's own handle on the database the gateway with `data_dir` uses.
    pub async fn open_store(&self, data_dir: &Path, max_connections: u32) -> Store {
        match &self.url {
            Some(url) => Store::open_url(url, max_connections).await,
            None => Store::open_sqlite(data_dir, max_connections).await,
        }
        .expect("bench store opens")
    }

    /// The keyring the gateway with `data_dir` uses (call [`Self::store_toml`] first).
    pub async fn open_keyring(&self, data_dir: &Path, store: &Store) -> Keyring {
        let path = Self::master_key_path(data_dir);
        let source = if self.is_postgres() {
            MasterKeySource::File(path)
        } else {
            MasterKeySource::Generated(path)
        };
        Keyring::open(store.clone(), &source).await.unwrap()
    }

    /// Drops the run's schema (PostgreSQL); nothing on SQLite (the temporary directory goes).
    pub async fn drop(self) {
        let (Some(base), Some(schema)) = (self.base, self.schema) else {
            return;
        };
        let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
        let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
    }
}
