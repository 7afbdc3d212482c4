//! Persistence for ccm: repository traits for workers, lab records, runtime settings, the
//! append-only event log, the bounded metrics history and API sessions, with two
//! implementations: [`SqliteStore`] (the embedded default: one file, WAL) and [`PgStore`]
//! (PostgreSQL, for several replicas). Both use sqlx with their migrations embedded in the
//! binary, and both pass one behavioural suite (`testkit`).
//!
//! - Every worker update checks its `version` (optimistic concurrency); a lost race is
//!   [`StoreError::Conflict`], and [`update_worker`] reloads and retries.
//! - The database enforces uniqueness: one worker per EC2 instance id
//!   ([`WorkerRepo::insert_or_get`] returns the existing worker), one lab record per
//!   (worker, lab id).
//! - The event log's positions commit in order: a reader that has seen position N never
//!   later finds a new event below N (see [`EventLog`]).
//! - Stored JSON documents carry a schema version and are upgraded when read ([`schema`]).
//!
//! This crate does not know HTTP, CML or AWS; it stores domain types.
#![warn(missing_docs)]

mod cluster;
mod common;
mod config;
mod pg_cluster;
mod postgres;
pub mod schema;
mod sqlite;
#[cfg(feature = "testkit")]
pub mod testkit;

use async_trait::async_trait;
use ccm_domain::{
    Event, EventKind, InstanceId, LabId, LabRecord, RuntimeSettings, Worker, WorkerId,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use cluster::{Acquired, ClusterRepo, LeaseRecord, Notifications, ReplicaRecord, ReplicaRow};
pub use config::{Backend, DEFAULT_SQLITE_PATH, DatabaseUrl, StoreConfig, Synchronous};
pub use postgres::{EVENT_APPEND_LOCK, EVENTS_CHANNEL, PgStore, SESSIONS_CHANNEL, WORKER_CAP_LOCK};
pub use sqlite::{SingleNodeLock, SqliteStore};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// `worker`, `lab`, …
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// Someone else changed the worker since it was read.
    #[error("worker {id} was changed concurrently (expected version {expected}, found {found:?})")]
    Conflict {
        /// The worker.
        id: WorkerId,
        /// The version the update was based on.
        expected: u64,
        /// The version in the database (`None`: the worker was deleted).
        found: Option<u64>,
    },
    /// Someone else changed the runtime settings since they were read.
    #[error("settings were changed concurrently (expected version {expected}, found {found})")]
    SettingsConflict {
        /// The version the update was based on.
        expected: u64,
        /// The version in the database.
        found: u64,
    },
    /// A worker for this instance exists already.
    #[error("instance {instance_id} is already worker {existing}")]
    Duplicate {
        /// The instance.
        instance_id: String,
        /// The worker that has it.
        existing: WorkerId,
    },
    /// A capped insert found the fleet at its cap ([`WorkerRepo::insert_capped`]).
    #[error("the fleet has {live} workers and may have at most {cap}")]
    AtCap {
        /// The cap.
        cap: u32,
        /// The workers counted against it (neither terminated nor failed).
        live: u64,
    },
    /// A stored document could not be read back.
    #[error("stored {what} {id} is unreadable: {message}")]
    Corrupt {
        /// `worker`, `lab`, `event`, `settings`.
        what: &'static str,
        /// Its id.
        id: String,
        /// The decode error.
        message: String,
    },
    /// A stored document was written by a newer ccm (its schema version is unknown here).
    #[error(
        "stored {what} {id} has schema version {found}, but this ccm reads versions up to \
         {supported}: it was written by a newer ccm"
    )]
    UnsupportedSchema {
        /// `worker`, `settings`, `session`.
        what: &'static str,
        /// Its id.
        id: String,
        /// The version in the document.
        found: u64,
        /// The newest version this build reads.
        supported: u64,
    },
    /// Nothing written: the write's lease is no longer held under its token (another replica
    /// took it over, or it expired). Not to be retried by this holder.
    #[error("the lease {key} is no longer held under token {token}; the write was refused")]
    Fenced {
        /// The lease key.
        key: String,
        /// The stale token.
        token: u64,
    },
    /// The database server could not be reached or refused us (at start).
    #[error("cannot connect to PostgreSQL at {target}: {message}")]
    Connect {
        /// `host:port/database` (never a user or password).
        target: String,
        /// What went wrong.
        message: String,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

/// Shorthand.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How to sort a worker listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerSort {
    /// By name.
    #[default]
    Name,
    /// By creation time.
    Created,
    /// By last change.
    Updated,
    /// By EC2 state.
    State,
    /// By service status.
    Service,
    /// By region.
    Region,
}

/// Which workers to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkerFilter {
    /// Only these regions (any when empty).
    pub regions: Vec<String>,
    /// Only these EC2 states (any when empty).
    pub ec2_states: Vec<String>,
    /// Only these service statuses (any when empty).
    pub service_statuses: Vec<String>,
    /// Substring of name, id or instance id (case-insensitive).
    pub text: Option<String>,
    /// Only these workers.
    pub ids: Option<Vec<WorkerId>>,
    /// Sort key.
    pub sort: WorkerSort,
    /// Sort descending.
    pub descending: bool,
    /// Page size (0 means no limit).
    pub limit: u32,
    /// Rows to skip.
    pub offset: u32,
}

impl WorkerFilter {
    /// The text to match, when there is one (blank is none).
    pub fn text_filter(&self) -> Option<&str> {
        self.text
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    /// Whether it filters by the indexed columns alone (region, EC2 state, service status):
    /// then the stores' kept counts (migration 0005) give the total without counting rows.
    pub(crate) fn counted_by_columns(&self) -> bool {
        self.ids.is_none() && self.text_filter().is_none()
    }
}

/// One page of results and the total that matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// How many matched in all.
    pub total: u64,
}

/// A worker's id and the version of its stored document: what a reader compares with a copy
/// it already holds (a cache of rendered views) before reading the document again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerStamp {
    /// The worker.
    pub id: WorkerId,
    /// The version of its committed document.
    pub version: u64,
}

/// Workers.
#[async_trait]
pub trait WorkerRepo: Send + Sync {
    /// Inserts a new worker (version becomes 1). An instance id already taken is
    /// [`StoreError::Duplicate`].
    async fn insert(&self, worker: &Worker) -> Result<Worker>;
    /// Inserts a new worker only while fewer than `cap` workers are live (EC2 state neither
    /// `terminated` nor `failed`); else [`StoreError::AtCap`]. The count and the insert are
    /// one atomic step: of two concurrent inserts at `cap - 1`, one is refused.
    async fn insert_capped(&self, worker: &Worker, cap: u32) -> Result<Worker>;
    /// Inserts the worker unless its instance already has one; returns the stored worker and
    /// whether it was created. Importing twice never makes two workers.
    async fn insert_or_get(&self, worker: &Worker) -> Result<(Worker, bool)>;
    /// One worker.
    async fn get(&self, id: WorkerId) -> Result<Option<Worker>>;
    /// Several workers by id, in no particular order (missing ids are left out).
    async fn get_many(&self, ids: &[WorkerId]) -> Result<Vec<Worker>>;
    /// The worker of an instance.
    async fn get_by_instance(&self, instance_id: &InstanceId) -> Result<Option<Worker>>;
    /// A filtered, sorted page of workers.
    async fn list(&self, filter: &WorkerFilter) -> Result<Page<Worker>>;
    /// The same page as [`Self::list`] (same filters, order, paging and total), as ids and
    /// versions only: no document is read or decoded.
    async fn list_stamps(&self, filter: &WorkerFilter) -> Result<Page<WorkerStamp>>;
    /// Saves `worker` if its `version` is still current; returns it with the new version.
    async fn update(&self, worker: &Worker) -> Result<Worker>;
    /// Saves many workers in one transaction; each row succeeds or conflicts on its own.
    async fn update_many(&self, workers: &[Worker]) -> Result<Vec<Result<Worker>>>;
    /// Deletes the record (its labs and metrics go with it). Returns whether it existed.
    async fn delete(&self, id: WorkerId) -> Result<bool>;
}

/// Lab records.
#[async_trait]
pub trait LabRepo: Send + Sync {
    /// Replaces the worker's labs with `labs` in one transaction: upserts each, removes the
    /// rest (orphans). Returns (added, removed). With a `fence` (several replicas), the
    /// transaction first checks that lease is still held under its token and writes nothing
    /// otherwise ([`StoreError::Fenced`]); a single node has no leases and passes `None`.
    async fn replace_labs(
        &self,
        worker: WorkerId,
        labs: &[LabRecord],
        fence: Option<&Fence>,
    ) -> Result<(u32, u32)>;
    /// Inserts or updates labs without removing any, in one transaction, fenced as
    /// [`Self::replace_labs`].
    async fn upsert_labs(&self, labs: &[LabRecord], fence: Option<&Fence>) -> Result<()>;
    /// Removes one lab record.
    async fn delete_lab(&self, worker: WorkerId, lab: &LabId) -> Result<bool>;
    /// The worker's labs, by title.
    async fn list_labs(&self, worker: WorkerId) -> Result<Vec<LabRecord>>;
}

/// A value with its optimistic-concurrency version.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its version (0: never stored, defaults in use).
    pub version: u64,
}

/// Runtime settings.
#[async_trait]
pub trait SettingsRepo: Send + Sync {
    /// The runtime settings (defaults when never stored).
    async fn runtime_settings(&self) -> Result<Versioned<RuntimeSettings>>;
    /// Stores them if `expected_version` is still current.
    async fn put_runtime_settings(
        &self,
        settings: &RuntimeSettings,
        expected_version: u64,
        by: &str,
    ) -> Result<Versioned<RuntimeSettings>>;
}

/// An event as stored, with its position in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Position in the log (the SSE event id).
    pub seq: u64,
    /// The CloudEvent.
    pub event: Event,
}

/// Which events to read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventQuery {
    /// Only after this position.
    pub after: Option<u64>,
    /// Only before this position (for paging backwards).
    pub before: Option<u64>,
    /// Only about these workers (any when empty).
    pub subjects: Vec<String>,
    /// Only of these types (any when empty).
    pub types: Vec<String>,
    /// At most this many (0: 1,000).
    pub limit: u32,
    /// Newest first.
    pub newest_first: bool,
}

/// The append-only event log.
///
/// Positions (`seq`) are what SSE clients resume from (`Last-Event-ID`), possibly on another
/// replica, by reading "everything after N". So every implementation makes appends **commit
/// in position order**: once a reader can see position N, every position below N that will
/// ever exist is visible too. (A bare auto-increment does not guarantee that on a server
/// database: position 101 may commit before 100, and a reader at 101 would skip 100 forever.)
/// Positions may have holes (a failed append), but a hole is never filled later.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Appends the non-transient events in one transaction; returns each one's position
    /// (`None` for transient events, which are not stored).
    async fn append(&self, events: &[Event]) -> Result<Vec<Option<u64>>>;
    /// Reads events.
    async fn read(&self, query: &EventQuery) -> Result<Vec<StoredEvent>>;
    /// The position of the newest event (0 when empty).
    async fn last_seq(&self) -> Result<u64>;
    /// Deletes events older than `before` (retention). Returns how many.
    async fn prune_events(&self, before: DateTime<Utc>) -> Result<u64>;
}

/// One metrics sample of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct MetricsSample {
    /// CloudWatch CPU, percent.
    pub cpu_percent: Option<f64>,
    /// CloudWatch memory, percent.
    pub memory_percent: Option<f64>,
    /// CML CPU, percent.
    pub cml_cpu_percent: Option<f64>,
    /// CML memory, percent.
    pub cml_memory_percent: Option<f64>,
    /// Running nodes.
    pub running_nodes: Option<u64>,
}

/// One downsampled point of the metrics history: averages over a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricsPoint {
    /// Start of the bucket.
    pub at: DateTime<Utc>,
    /// Samples in the bucket.
    pub samples: u64,
    /// Average CloudWatch CPU.
    pub cpu_percent: Option<f64>,
    /// Average CloudWatch memory.
    pub memory_percent: Option<f64>,
    /// Average CML CPU.
    pub cml_cpu_percent: Option<f64>,
    /// Average CML memory.
    pub cml_memory_percent: Option<f64>,
    /// Most running nodes seen.
    pub running_nodes: Option<u64>,
}

/// The bounded, downsampled metrics history.
#[async_trait]
pub trait MetricsRepo: Send + Sync {
    /// Adds a sample to the bucket of `at`, and drops buckets past the retention.
    async fn record_metrics(
        &self,
        worker: WorkerId,
        at: DateTime<Utc>,
        sample: MetricsSample,
    ) -> Result<()>;
    /// Adds many samples in one transaction.
    async fn record_metrics_many(
        &self,
        samples: &[(WorkerId, DateTime<Utc>, MetricsSample)],
    ) -> Result<()>;
    /// The history of a worker since `since`, oldest first.
    async fn metrics_history(
        &self,
        worker: WorkerId,
        since: DateTime<Utc>,
    ) -> Result<Vec<MetricsPoint>>;
}

/// Browser sessions of the API: opaque documents under the hash of their id, each with an
/// expiry. The store neither reads the documents nor ever sees a usable session id.
#[async_trait]
pub trait SessionRepo: Send + Sync {
    /// Stores (or replaces) a session.
    async fn put_session(&self, key: &str, doc: &str, expires_at: DateTime<Utc>) -> Result<()>;
    /// The session's document, unless it is unknown or expired at `now`.
    async fn session(&self, key: &str, now: DateTime<Utc>) -> Result<Option<String>>;
    /// Deletes a session; whether it existed.
    async fn delete_session(&self, key: &str) -> Result<bool>;
    /// Deletes the sessions expired at `now`; how many.
    async fn purge_sessions(&self, now: DateTime<Utc>) -> Result<u64>;
}

/// Positions of the event log's consumers (webhook deliveries), so that a restart resumes
/// where each left off. A position only ever moves forward: advancing to a lower `seq` keeps
/// the higher one, so a stale writer (a replica that lost its lease mid-batch) can cause
/// events to be delivered again, never skipped.
#[async_trait]
pub trait CursorRepo: Send + Sync {
    /// The stored position of `name` (`None`: never stored).
    async fn cursor(&self, name: &str) -> Result<Option<u64>>;
    /// Moves `name` forward to `seq` (created if missing); returns the stored position, which
    /// is `seq` or a higher one stored before.
    async fn advance_cursor(&self, name: &str, seq: u64, now: DateTime<Utc>) -> Result<u64>;
}

/// The lease a write must still be covered by (fencing): the lease's key and the token it
/// was granted under. A write whose lease has since been taken over (a higher token), or has
/// expired by the database's clock, is refused in the transaction that would have made it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The lease key (e.g. `part:0042`).
    pub key: String,
    /// The token the lease was granted under.
    pub token: u64,
}

/// One worker's change with the events it caused, saved together ([`Store::save_changes`]).
#[derive(Debug, Clone)]
pub struct WorkerWrite {
    /// The changed worker; its `version` is the one it was read at.
    pub worker: Worker,
    /// The events the change caused (transient ones are not stored).
    pub events: Vec<Event>,
    /// The lease covering the write (`None`: commands and the single node, never fenced).
    pub fence: Option<Fence>,
}

/// What became of one [`WorkerWrite`].
// Most outcomes are `Saved`, and the worker is moved on to the engine's index: boxing it would
// add an allocation per saved worker for a value that lives only until the batch is handled.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum WriteOutcome {
    /// Saved with its events; the worker at its new version and each event's position
    /// (`None` for transient events).
    Saved {
        /// The worker as saved.
        worker: Worker,
        /// Each event's log position.
        seqs: Vec<Option<u64>>,
    },
    /// Nothing written: its lease is no longer held under that token (another replica took it
    /// over, or it expired). Not to be retried.
    Fenced,
    /// Nothing written: the worker changed meanwhile or was deleted (reload and reapply).
    Failed(StoreError),
}

/// Everything the engine and the API need from storage.
#[async_trait]
pub trait Store:
    WorkerRepo + LabRepo + SettingsRepo + EventLog + MetricsRepo + SessionRepo + CursorRepo
{
    /// Whether the database answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;

    /// Saves workers and appends their events in **one transaction**: a change is never
    /// stored without its events nor the other way round. Each write succeeds, conflicts
    /// ([`WriteOutcome::Failed`] with [`StoreError::Conflict`]) or is fenced
    /// ([`WriteOutcome::Fenced`], checked against the `leases` table in the same transaction,
    /// its rows share-locked so a takeover waits for this commit) on its own. The same worker
    /// may appear only once. `Err`: the transaction failed as a whole, nothing was written.
    async fn save_changes(&self, writes: &[WorkerWrite]) -> Result<Vec<WriteOutcome>>;

    /// The replica registry and the leases, when this backend supports several replicas
    /// (PostgreSQL); `None` for a single-node store (SQLite).
    fn cluster(&self) -> Option<&dyn ClusterRepo> {
        None
    }
}

/// Why [`update_worker`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E> {
    /// The store failed, or kept conflicting.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change itself refused.
    #[error("{0}")]
    Rejected(E),
}

/// How many times [`update_worker`] reloads after a conflict.
pub const UPDATE_ATTEMPTS: u32 = 8;

/// Loads a worker, applies `change`, saves it; on a version conflict reloads and applies the
/// change again (up to [`UPDATE_ATTEMPTS`] times). `change` must therefore be a pure function
/// of the worker it is given. Returns the saved worker and what `change` returned.
pub async fn update_worker<S, F, R, E>(
    store: &S,
    id: WorkerId,
    mut change: F,
) -> std::result::Result<(Worker, R), UpdateError<E>>
where
    S: WorkerRepo + ?Sized,
    F: FnMut(&mut Worker) -> std::result::Result<R, E>,
{
    let mut last = None;
    for _ in 0..UPDATE_ATTEMPTS {
        let mut worker = store.get(id).await?.ok_or_else(|| StoreError::NotFound {
            what: "worker",
            id: id.to_string(),
        })?;
        let out = change(&mut worker).map_err(UpdateError::Rejected)?;
        match store.update(&worker).await {
            Ok(saved) => return Ok((saved, out)),
            Err(err @ StoreError::Conflict { .. }) => {
                tracing::debug!(worker = %id, "update conflict, retrying");
                last = Some(err);
            }
            Err(err) => return Err(err.into()),
        }
    }
    Err(UpdateError::Store(last.unwrap_or(StoreError::NotFound {
        what: "worker",
        id: id.to_string(),
    })))
}

/// Builds the stored form of an event list, skipping transient ones (helper for
/// implementations).
pub(crate) fn persistent(events: &[Event]) -> impl Iterator<Item = (usize, &Event)> {
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| !EventKind::is_transient(&e.kind))
}
