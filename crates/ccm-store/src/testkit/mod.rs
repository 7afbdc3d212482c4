//! Test support (feature `testkit`): the behavioural suite every store must pass, the two
//! backends it runs on, and a real throwaway PostgreSQL server ([`postgres::TestPostgres`]).
//!
//! A test file instantiates the whole suite for one backend with [`store_suite!`]:
//!
//! ```ignore
//! ccm_store::store_suite!(ccm_store::testkit::SqliteBackend::new());
//! ccm_store::store_suite!(ccm_store::testkit::PgBackend::start());
//! ```
//!
//! Each case in [`suite`] becomes one `#[tokio::test]` of that file, so SQLite and PostgreSQL
//! run the same test functions, not copies.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a panic is a test failure

pub mod postgres;
pub mod suite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::common::{RUNTIME_SETTINGS_KEY, ms};
use crate::{PgStore, Result, SqliteStore, Store, StoreConfig};

pub use postgres::{TestPgError, TestPostgres};

/// A database backend under test.
#[async_trait]
pub trait Backend: Send + Sync {
    /// `sqlite` or `postgres`, for messages.
    fn name(&self) -> &'static str;
    /// A new, empty database opened with `config`'s tuning (pool size, metrics bucket and
    /// retention; the location is the backend's).
    async fn fresh(&self, config: StoreConfig) -> Box<dyn TestDatabase>;
}

/// One database of a [`Backend`].
#[async_trait]
pub trait TestDatabase: Send + Sync {
    /// Opens a store on this database; a second `open` sees what the first wrote (a restart).
    async fn open(&self) -> Arc<dyn TestStore>;
}

/// Which stored document [`TestStore::raw_document`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawTable {
    /// `workers.doc` by worker id.
    Worker,
    /// `settings.value` of the runtime settings (key ignored).
    Settings,
    /// `sessions.doc` by key.
    Session,
}

/// A store plus raw access to its tables, to plant documents as an older ccm wrote them and
/// to look at what this one writes.
#[async_trait]
pub trait TestStore: Store {
    /// Inserts a worker row whose document is `doc`, verbatim; the indexed columns are taken
    /// from it.
    async fn put_raw_worker(&self, doc: &str) -> Result<()>;
    /// Stores `doc` verbatim as the runtime settings at `version`.
    async fn put_raw_settings(&self, doc: &str, version: u64) -> Result<()>;
    /// Stores `doc` verbatim as a session.
    async fn put_raw_session(&self, key: &str, doc: &str, expires_at: DateTime<Utc>) -> Result<()>;
    /// The stored text of a document.
    async fn raw_document(&self, table: RawTable, key: &str) -> Result<Option<String>>;
}

/// The indexed columns of a worker document (any schema version that has these fields).
struct RawWorker {
    id: String,
    instance_id: Option<String>,
    name: String,
    region: String,
    ec2_state: String,
    service_status: String,
    created_at_ms: i64,
    updated_at_ms: i64,
    version: i64,
}

fn raw_worker(doc: &str) -> RawWorker {
    let v: serde_json::Value = serde_json::from_str(doc).expect("a worker document");
    let s = |p: &str| {
        v.pointer(p)
            .and_then(|x| x.as_str())
            .unwrap_or_else(|| panic!("worker document without {p}"))
            .to_owned()
    };
    let t = |p: &str| ms(s(p).parse::<DateTime<Utc>>().expect("a time"));
    RawWorker {
        id: s("/id"),
        instance_id: v
            .pointer("/instance_id")
            .and_then(|x| x.as_str())
            .map(str::to_owned),
        name: s("/name"),
        region: s("/region"),
        ec2_state: s("/ec2_state"),
        service_status: s("/service/status"),
        created_at_ms: t("/created_at"),
        updated_at_ms: t("/updated_at"),
        version: v.pointer("/version").and_then(|x| x.as_i64()).unwrap_or(1),
    }
}

const RAW_WORKER_SQL: &str = "INSERT INTO workers (id, instance_id, name, region, ec2_state, \
    service_status, created_at_ms, updated_at_ms, version, doc) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
const RAW_SETTINGS_SQL: &str = "INSERT INTO settings (key, value, version, updated_at_ms, \
    updated_by) VALUES ($1, $2, $3, 0, 'fixture') ON CONFLICT (key) DO UPDATE SET \
    value = excluded.value, version = excluded.version";
const RAW_SESSION_SQL: &str = "INSERT INTO sessions (key, doc, expires_at_ms) VALUES ($1, $2, $3) \
    ON CONFLICT (key) DO UPDATE SET doc = excluded.doc, expires_at_ms = excluded.expires_at_ms";

fn raw_select(table: RawTable) -> &'static str {
    match table {
        RawTable::Worker => "SELECT doc FROM workers WHERE id = $1",
        RawTable::Settings => "SELECT value FROM settings WHERE key = $1",
        RawTable::Session => "SELECT doc FROM sessions WHERE key = $1",
    }
}

fn raw_key(table: RawTable, key: &str) -> &str {
    match table {
        RawTable::Settings => RUNTIME_SETTINGS_KEY,
        _ => key,
    }
}

/// Implements [`TestStore`] for a store with a `pool` field; the SQL is the same on both.
macro_rules! raw_access {
    ($store:ty) => {
        #[async_trait]
        impl TestStore for $store {
            async fn put_raw_worker(&self, doc: &str) -> Result<()> {
                let w = raw_worker(doc);
                sqlx::query(RAW_WORKER_SQL)
                    .bind(w.id)
                    .bind(w.instance_id)
                    .bind(w.name)
                    .bind(w.region)
                    .bind(w.ec2_state)
                    .bind(w.service_status)
                    .bind(w.created_at_ms)
                    .bind(w.updated_at_ms)
                    .bind(w.version)
                    .bind(doc)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn put_raw_settings(&self, doc: &str, version: u64) -> Result<()> {
                sqlx::query(RAW_SETTINGS_SQL)
                    .bind(RUNTIME_SETTINGS_KEY)
                    .bind(doc)
                    .bind(i64::try_from(version).expect("a small version"))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn put_raw_session(
                &self,
                key: &str,
                doc: &str,
                expires_at: DateTime<Utc>,
            ) -> Result<()> {
                sqlx::query(RAW_SESSION_SQL)
                    .bind(key)
                    .bind(doc)
                    .bind(ms(expires_at))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn raw_document(&self, table: RawTable, key: &str) -> Result<Option<String>> {
                let row = sqlx::query(raw_select(table))
                    .bind(raw_key(table, key))
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match row {
                    Some(row) => Some(row.try_get::<String, _>(0)?),
                    None => None,
                })
            }
        }
    };
}

raw_access!(SqliteStore);
raw_access!(PgStore);

/// SQLite files in temporary directories (removed when the backend is dropped, so a store
/// may outlive the [`TestDatabase`] that opened it).
#[derive(Debug, Default)]
pub struct SqliteBackend {
    dirs: std::sync::Mutex<Vec<tempfile::TempDir>>,
}

impl SqliteBackend {
    /// The backend.
    pub fn new() -> Self {
        Self::default()
    }
}

struct SqliteDatabase {
    config: StoreConfig,
}

#[async_trait]
impl Backend for SqliteBackend {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn fresh(&self, config: StoreConfig) -> Box<dyn TestDatabase> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = StoreConfig {
            path: Some(dir.path().join("ccm.db")),
            url: None,
            ..config
        };
        self.dirs.lock().expect("not poisoned").push(dir);
        Box::new(SqliteDatabase { config })
    }
}

#[async_trait]
impl TestDatabase for SqliteDatabase {
    async fn open(&self) -> Arc<dyn TestStore> {
        Arc::new(
            SqliteStore::open(&self.config)
                .await
                .expect("open the SQLite store"),
        )
    }
}

/// Fresh databases on one [`TestPostgres`] server, started by [`PgBackend::start`].
#[derive(Debug)]
pub struct PgBackend {
    server: TestPostgres,
}

impl PgBackend {
    /// Starts the server. Panics with a clear message when PostgreSQL is not installed: the
    /// PostgreSQL tests fail rather than skip.
    pub fn start() -> Self {
        match TestPostgres::start() {
            Ok(server) => Self { server },
            Err(e) => panic!("{e}"),
        }
    }

    /// The server.
    pub fn server(&self) -> &TestPostgres {
        &self.server
    }
}

struct PgDatabase {
    url: crate::DatabaseUrl,
    config: StoreConfig,
}

#[async_trait]
impl Backend for PgBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn fresh(&self, config: StoreConfig) -> Box<dyn TestDatabase> {
        let url = match self.server.create_database().await {
            Ok(url) => url,
            Err(e) => panic!("{e}\n{}", self.server.log()),
        };
        Box::new(PgDatabase {
            config: StoreConfig {
                path: None,
                url: Some(url.clone()),
                ..config
            },
            url,
        })
    }
}

#[async_trait]
impl TestDatabase for PgDatabase {
    async fn open(&self) -> Arc<dyn TestStore> {
        Arc::new(
            PgStore::connect(&self.url, &self.config)
                .await
                .expect("connect the PostgreSQL store"),
        )
    }
}

/// Instantiates every case of [`suite`] as a `#[tokio::test]` of the calling test file, on
/// the backend that `$backend` (an expression, evaluated in each test) makes. The caller
/// needs `tokio` (with `macros` and `rt-multi-thread`) among its dev-dependencies.
#[macro_export]
macro_rules! store_suite {
    ($backend:expr) => {
        $crate::store_suite!(@cases $backend;
            workers_should_round_trip_and_list_with_filters_sort_and_pages,
            list_totals_should_follow_every_write,
            concurrent_moves_between_states_should_keep_the_totals_exact,
            a_stale_update_should_conflict_and_the_helper_should_retry,
            concurrent_read_modify_writes_should_lose_no_update,
            update_many_should_save_or_refuse_each_row_on_its_own,
            every_write_should_return_the_worker_as_stored,
            saved_changes_should_carry_their_events_and_fail_row_by_row,
            a_large_save_should_keep_every_row_and_its_events_in_order,
            overlapping_batches_should_neither_deadlock_nor_lose_updates,
            concurrent_imports_of_one_instance_should_make_one_worker,
            capped_inserts_racing_at_the_cap_should_store_only_up_to_it,
            lab_refreshes_should_remove_orphans_and_never_duplicate,
            sessions_should_survive_a_reopen_until_they_expire,
            sessions_should_come_back_as_written_and_refuse_non_objects,
            settings_should_be_versioned,
            idle_economics_should_round_trip,
            concurrent_settings_writers_should_have_exactly_one_winner,
            the_event_log_should_keep_order_skip_transient_events_and_filter,
            event_appends_should_commit_in_sequence_order,
            metrics_history_should_average_buckets_and_stay_bounded,
            metrics_batches_should_merge_samples_of_one_bucket,
            documents_should_be_stored_with_their_schema_version,
            golden_fixtures_should_load_through_the_store,
            documents_from_a_newer_ccm_should_be_refused_clearly,
            ping_should_answer,
            cursors_should_survive_a_reopen_and_never_move_backwards,
            concurrent_cursor_advances_should_keep_the_highest,
        );
    };
    (@cases $backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = $backend;
                $crate::testkit::suite::$case(&backend).await;
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    /// A case added to the suite but not to `store_suite!` would never run.
    #[test]
    fn every_suite_case_should_be_instantiated_by_the_macro() {
        let suite = include_str!("suite.rs");
        let this = include_str!("mod.rs");
        let listed = &this[this.find("macro_rules! store_suite").unwrap()..];
        let listed = &listed[..listed.find("(@cases $backend:expr;").unwrap()];
        let mut cases = 0;
        for line in suite.lines() {
            if let Some(rest) = line.strip_prefix("pub async fn ") {
                let name = &rest[..rest.find('(').unwrap()];
                assert!(
                    listed.contains(&format!("{name},")),
                    "suite case {name} is missing from store_suite!"
                );
                cases += 1;
            }
        }
        assert!(cases >= 15, "only {cases} cases found");
    }
}
