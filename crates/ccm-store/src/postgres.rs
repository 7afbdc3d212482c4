//! The PostgreSQL implementation of every repository (for several `ccm serve` replicas on one
//! database). The tables and columns are those of the SQLite schema; what differs is how
//! concurrency is handled, since PostgreSQL runs transactions in parallel where SQLite
//! serializes writers:
//!
//! - event appends take one transaction-scoped advisory lock ([`EVENT_APPEND_LOCK`]), so
//!   positions commit in order, and announce the new last position on [`EVENTS_CHANNEL`];
//! - batch updates lock their rows in id order first (no deadlock between two batches) and
//!   write them in one statement; a batch that trips a uniqueness rule is redone row by row,
//!   each row in its own savepoint, so one bad row fails alone as on SQLite;
//! - lab refreshes of one worker are serialized by an advisory lock on the worker;
//! - metric samples are summed per bucket before the upsert, so one statement never touches a
//!   row twice.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use ccm_domain::{Event, InstanceId, LabId, LabRecord, RuntimeSettings, Worker, WorkerId};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, QueryBuilder, Row};

use crate::cluster::ClusterRepo;
use crate::common::{
    METRICS_UPSERT, RUNTIME_SETTINGS_KEY, WorkerRow, corrupt, decode_lab, decode_session,
    decode_settings, encode_event, encode_lab, encode_session, encode_settings, encode_worker,
    event_limit, from_ms, is_foreign_key_violation, is_unique_violation, like_pattern, map_fk, ms,
};
use crate::{
    CursorRepo, DatabaseUrl, EventLog, EventQuery, Fence, LabRepo, MetricsPoint, MetricsRepo,
    MetricsSample, Page, Result, SessionRepo, SettingsRepo, Store, StoreConfig, StoreError,
    StoredEvent, Versioned, WorkerFilter, WorkerRepo, WorkerSort, WorkerStamp, WorkerWrite,
    WriteOutcome, persistent,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel every event append notifies, in the appending transaction, with the new last
/// position as the payload (`NOTIFY ccm_events, '<seq>'`). A replica `LISTEN`s on it and then
/// reads everything after the position it has from the log: the payload is a hint that more
/// exists, the log is the truth (notifications can be missed while a listener reconnects).
pub const EVENTS_CHANNEL: &str = "ccm_events";

/// The channel a session's deletion (sign-out) notifies, in the deleting transaction, with the
/// session's key (the SHA-256 of its id, hex) as the payload: every replica drops it from its
/// cache and ends its event streams.
pub const SESSIONS_CHANNEL: &str = "ccm_sessions";

/// The advisory lock key (`pg_advisory_xact_lock(bigint)`) every event append holds from
/// before it draws its positions until it commits. Appends therefore commit one after the
/// other in position order: a reader that sees position N can already see every position
/// below N, so "everything after N" never misses an event that commits later.
pub const EVENT_APPEND_LOCK: i64 = 0x6363_6d5f_6576_656e; // "ccm_even"

/// The class (first key) of the two-key advisory locks that serialize lab refreshes of one
/// worker (second key: `hashtext(worker id)`). The two-key space never meets the one-key one.
const LABS_LOCK_CLASS: i32 = 0x6c61_6273; // "labs"

/// The advisory lock key a capped worker insert ([`WorkerRepo::insert_capped`]) holds from
/// before its count until it commits, so two creates at the cap cannot both count below it.
pub const WORKER_CAP_LOCK: i64 = 0x6363_6d5f_6361_7073; // "ccm_caps"

/// Counts the workers a fleet cap counts: all but terminated and failed ones.
const LIVE_WORKERS: &str =
    "SELECT COUNT(*) FROM workers WHERE ec2_state NOT IN ('terminated', 'failed')";

/// The PostgreSQL store. Cheap to clone (a connection pool inside).
#[derive(Debug, Clone)]
pub struct PgStore {
    /// Writes, transactions, leases, migrations.
    pub(crate) pool: PgPool,
    /// Reads that need no transaction (worker lists and documents, labs, events, metrics,
    /// sessions): answers to API readers do not wait behind the cycle's write batches and
    /// jobs for a connection.
    readers: PgPool,
    bucket_ms: i64,
    retention_ms: i64,
}

fn decode_worker(row: &PgRow) -> Result<Worker> {
    let id: String = row.try_get("id")?;
    let version: i64 = row.try_get("version")?;
    let doc: String = row.try_get("doc")?;
    crate::common::decode_worker(&id, version, &doc)
}

impl PgStore {
    /// Connects to `url`, checks that the server answers (a clear [`StoreError::Connect`]
    /// if not, within `config.acquire_timeout`), and brings the schema up to date
    /// (migrations take a database lock, so replicas starting together are safe).
    ///
    /// Each of its two pools (writes; reads outside transactions) holds up to
    /// `config.max_connections`; every session has the server's
    /// `statement_timeout` set to `config.statement_timeout`.
    pub async fn connect(url: &DatabaseUrl, config: &StoreConfig) -> Result<Self> {
        let connect_error = |message: String| StoreError::Connect {
            target: url.target(),
            message,
        };
        let mut options = url.connect_options().map_err(connect_error)?.options([(
            "statement_timeout",
            config.statement_timeout.as_millis().to_string(),
        )]);
        if options.get_application_name().is_none() {
            options = options.application_name("ccm");
        }
        match tokio::time::timeout(config.acquire_timeout, PgConnection::connect_with(&options))
            .await
        {
            Ok(Ok(probe)) => {
                let _ = probe.close().await;
            }
            Ok(Err(e)) => return Err(connect_error(e.to_string())),
            Err(_) => {
                return Err(connect_error(format!(
                    "no answer within {}",
                    humantime_serde::re::humantime::format_duration(config.acquire_timeout)
                )));
            }
        }
        let pool_of = |options: sqlx::postgres::PgConnectOptions| {
            PgPoolOptions::new()
                .max_connections(config.max_connections)
                .min_connections(0)
                .acquire_timeout(config.acquire_timeout)
                .idle_timeout(std::time::Duration::from_secs(600))
                .max_lifetime(std::time::Duration::from_secs(1800))
                .connect_lazy_with(options)
        };
        let pool = pool_of(options.clone());
        let readers = pool_of(options);
        MIGRATOR.run(&pool).await?;
        let bucket_ms = i64::try_from(config.metrics_bucket.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let retention_ms = i64::try_from(config.metrics_retention.as_millis()).unwrap_or(i64::MAX);
        Ok(Self {
            pool,
            readers,
            bucket_ms,
            retention_ms,
        })
    }

    /// The connection pool (for `LISTEN` on [`EVENTS_CHANNEL`] with `PgListener`, and for
    /// whatever else needs the same database).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.readers.close().await;
        self.pool.close().await;
    }

    async fn version_of(&self, id: &str) -> Result<Option<u64>> {
        let v: Option<i64> = sqlx::query_scalar("SELECT version FROM workers WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(v.and_then(|v| u64::try_from(v).ok()))
    }

    async fn existing_for_instance(&self, instance_id: &str) -> Result<Option<Worker>> {
        let row = sqlx::query("SELECT id, version, doc FROM workers WHERE instance_id = $1")
            .bind(instance_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode_worker).transpose()
    }

    async fn explain_update_failure(&self, worker: &Worker, err: Option<StoreError>) -> StoreError {
        match err {
            Some(StoreError::Database(e)) if is_unique_violation(&e) => {
                let instance_id = worker
                    .instance_id
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                match self.existing_for_instance(&instance_id).await {
                    Ok(Some(existing)) => StoreError::Duplicate {
                        instance_id,
                        existing: existing.id,
                    },
                    Ok(None) => StoreError::Database(e),
                    Err(other) => other,
                }
            }
            Some(e) => e,
            None => match self.version_of(&worker.id.to_string()).await {
                Ok(found) => StoreError::Conflict {
                    id: worker.id,
                    expected: worker.version,
                    found,
                },
                Err(e) => e,
            },
        }
    }

    /// The row-by-row path of `update_many`: one transaction, each row in a savepoint, so a
    /// row that breaks a uniqueness rule fails alone. `Ok(true)`: saved; `Ok(false)`: stale.
    async fn update_each(
        &self,
        rows: &[std::result::Result<WorkerRow, StoreError>],
        workers: &[Worker],
    ) -> Result<Vec<Result<bool>>> {
        let mut tx = self.pool.begin().await?;
        lock_workers(&mut tx, rows).await?;
        let mut outcomes = Vec::with_capacity(rows.len());
        for (row, worker) in rows.iter().zip(workers) {
            let row = match row {
                Ok(row) => row,
                Err(e) => {
                    outcomes.push(Err(corrupt("worker", worker.id, e)));
                    continue;
                }
            };
            let mut savepoint = tx.begin().await?;
            match update_row(&mut *savepoint, row, worker).await {
                Ok(n) => {
                    savepoint.commit().await?;
                    outcomes.push(Ok(n == 1));
                }
                Err(e) => {
                    savepoint.rollback().await?;
                    outcomes.push(Err(e.into()));
                }
            }
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// The rows of a listing's page (`columns` of `workers`, in the page's order) and the
    /// total that matched: what [`WorkerRepo::list`] and [`WorkerRepo::list_stamps`] share.
    async fn list_rows(&self, filter: &WorkerFilter, columns: &str) -> Result<(Vec<PgRow>, u64)> {
        fn push_filters(q: &mut QueryBuilder<Postgres>, f: &WorkerFilter) {
            q.push(" WHERE TRUE");
            let in_list = |q: &mut QueryBuilder<Postgres>, column: &str, values: &[String]| {
                if values.is_empty() {
                    return;
                }
                q.push(format!(" AND {column} = ANY("))
                    .push_bind(values.to_vec())
                    .push(")");
            };
            in_list(q, "region", &f.regions);
            in_list(q, "ec2_state", &f.ec2_states);
            in_list(q, "service_status", &f.service_statuses);
            if let Some(ids) = &f.ids {
                let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                if ids.is_empty() {
                    q.push(" AND FALSE");
                } else {
                    in_list(q, "id", &ids);
                }
            }
            if let Some(text) = f.text_filter() {
                let pattern = like_pattern(text);
                q.push(" AND (LOWER(name) LIKE ")
                    .push_bind(pattern.clone())
                    .push(" ESCAPE '\\' OR id LIKE ")
                    .push_bind(pattern.clone())
                    .push(" ESCAPE '\\' OR LOWER(COALESCE(instance_id, '')) LIKE ")
                    .push_bind(pattern)
                    .push(" ESCAPE '\\')");
            }
        }

        // Filtered by the indexed columns only: the counts the triggers keep (migration
        // 0005); by text or ids: the rows themselves.
        let mut count = QueryBuilder::<Postgres>::new(if filter.counted_by_columns() {
            "SELECT COALESCE(SUM(n), 0)::BIGINT FROM worker_counts"
        } else {
            "SELECT COUNT(*) FROM workers"
        });
        push_filters(&mut count, filter);
        let total: i64 = count.build_query_scalar().fetch_one(&self.readers).await?;

        let mut q = QueryBuilder::<Postgres>::new(format!("SELECT {columns} FROM workers"));
        push_filters(&mut q, filter);
        let column = match filter.sort {
            WorkerSort::Name => "name",
            WorkerSort::Created => "created_at_ms",
            WorkerSort::Updated => "updated_at_ms",
            WorkerSort::State => "ec2_state",
            WorkerSort::Service => "service_status",
            WorkerSort::Region => "region",
        };
        let dir = if filter.descending { "DESC" } else { "ASC" };
        q.push(format!(" ORDER BY {column} {dir}, id {dir}"));
        if filter.limit > 0 {
            q.push(" LIMIT ").push_bind(i64::from(filter.limit));
        }
        if filter.offset > 0 {
            q.push(" OFFSET ").push_bind(i64::from(filter.offset));
        }
        let rows = q.build().fetch_all(&self.readers).await?;
        Ok((rows, u64::try_from(total).unwrap_or(0)))
    }
}

/// Locks the rows of a batch in id order (`FOR UPDATE`), so that two batches sharing workers
/// wait for each other instead of deadlocking.
async fn lock_workers(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    rows: &[std::result::Result<WorkerRow, StoreError>],
) -> Result<()> {
    let ids: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.id.as_str())
        .collect();
    sqlx::query("SELECT id FROM workers WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await?;
    Ok(())
}

async fn update_row<'c, E>(exec: E, row: &WorkerRow, worker: &Worker) -> sqlx::Result<u64>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    let done = sqlx::query(
        "UPDATE workers SET instance_id = $1, name = $2, region = $3, ec2_state = $4, \
         service_status = $5, updated_at_ms = $6, version = $7, doc = $8 \
         WHERE id = $9 AND version = $10",
    )
    .bind(&row.instance_id)
    .bind(&worker.name)
    .bind(worker.region.as_str())
    .bind(worker.ec2_state.as_str())
    .bind(worker.service.status.as_str())
    .bind(ms(worker.updated_at))
    .bind(row.version)
    .bind(&row.doc)
    .bind(&row.id)
    .bind(row.version - 1)
    .execute(exec)
    .await?;
    Ok(done.rows_affected())
}

#[async_trait]
impl WorkerRepo for PgStore {
    async fn insert(&self, worker: &Worker) -> Result<Worker> {
        let row = encode_worker(worker, 1)?;
        let result = insert_worker(&self.pool, &row, worker, false).await;
        match result {
            Ok(_) => Ok(row.saved),
            Err(e) if is_unique_violation(&e) && row.instance_id.is_some() => {
                let instance_id = row.instance_id.unwrap_or_default();
                match self.existing_for_instance(&instance_id).await? {
                    Some(existing) => Err(StoreError::Duplicate {
                        instance_id,
                        existing: existing.id,
                    }),
                    None => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn insert_capped(&self, worker: &Worker, cap: u32) -> Result<Worker> {
        let row = encode_worker(worker, 1)?;
        // Under READ COMMITTED each statement sees what committed before it started: the
        // count runs after the lock is ours, so it sees the previous holder's insert.
        let result: std::result::Result<Result<()>, sqlx::Error> = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(WORKER_CAP_LOCK)
                .execute(&mut *tx)
                .await?;
            let live: i64 = sqlx::query_scalar(LIVE_WORKERS).fetch_one(&mut *tx).await?;
            let live = u64::try_from(live).unwrap_or(0);
            if live >= u64::from(cap) {
                return Ok(Err(StoreError::AtCap { cap, live }));
            }
            insert_worker(&mut *tx, &row, worker, false).await?;
            tx.commit().await?;
            Ok(Ok(()))
        }
        .await;
        match result {
            Ok(Ok(())) => Ok(row.saved),
            Ok(Err(at_cap)) => Err(at_cap),
            Err(e) if is_unique_violation(&e) && row.instance_id.is_some() => {
                let instance_id = row.instance_id.unwrap_or_default();
                match self.existing_for_instance(&instance_id).await? {
                    Some(existing) => Err(StoreError::Duplicate {
                        instance_id,
                        existing: existing.id,
                    }),
                    None => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn insert_or_get(&self, worker: &Worker) -> Result<(Worker, bool)> {
        let row = encode_worker(worker, 1)?;
        if insert_worker(&self.pool, &row, worker, true).await? == 1 {
            return Ok((row.saved, true));
        }
        let instance_id = row.instance_id.unwrap_or_default();
        let existing =
            self.existing_for_instance(&instance_id)
                .await?
                .ok_or(StoreError::NotFound {
                    what: "worker for instance",
                    id: instance_id,
                })?;
        Ok((existing, false))
    }

    async fn get(&self, id: WorkerId) -> Result<Option<Worker>> {
        let row = sqlx::query("SELECT id, version, doc FROM workers WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.readers)
            .await?;
        row.as_ref().map(decode_worker).transpose()
    }

    async fn get_many(&self, ids: &[WorkerId]) -> Result<Vec<Worker>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let rows = sqlx::query("SELECT id, version, doc FROM workers WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(decode_worker).collect()
    }

    async fn get_by_instance(&self, instance_id: &InstanceId) -> Result<Option<Worker>> {
        self.existing_for_instance(instance_id.as_str()).await
    }

    async fn list(&self, filter: &WorkerFilter) -> Result<Page<Worker>> {
        let (rows, total) = self.list_rows(filter, "id, version, doc").await?;
        let items = rows.iter().map(decode_worker).collect::<Result<Vec<_>>>()?;
        Ok(Page { items, total })
    }

    async fn list_stamps(&self, filter: &WorkerFilter) -> Result<Page<WorkerStamp>> {
        let (rows, total) = self.list_rows(filter, "id, version").await?;
        let items = rows
            .iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                let version: i64 = row.try_get("version")?;
                crate::common::decode_stamp(&id, version)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Page { items, total })
    }

    async fn update(&self, worker: &Worker) -> Result<Worker> {
        let row = encode_worker(worker, worker.version + 1)?;
        let updated = update_row(&self.pool, &row, worker).await;
        match updated {
            Ok(1) => Ok(row.saved),
            Ok(_) => Err(self.explain_update_failure(worker, None).await),
            Err(e) => Err(self.explain_update_failure(worker, Some(e.into())).await),
        }
    }

    async fn update_many(&self, workers: &[Worker]) -> Result<Vec<Result<Worker>>> {
        if workers.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<_> = workers
            .iter()
            .map(|w| encode_worker(w, w.version + 1))
            .collect();
        let mut seen = HashSet::with_capacity(workers.len());
        let simple = rows.iter().all(|r| r.is_ok()) && workers.iter().all(|w| seen.insert(w.id));
        let outcomes = if simple {
            match self.update_batch(&rows, workers).await? {
                Some(updated) => workers
                    .iter()
                    .map(|w| Ok(updated.contains(&w.id.to_string())))
                    .collect(),
                None => self.update_each(&rows, workers).await?,
            }
        } else {
            // The same worker twice, or a row that cannot be encoded: row by row.
            self.update_each(&rows, workers).await?
        };
        let mut results = Vec::with_capacity(workers.len());
        for ((worker, row), outcome) in workers.iter().zip(rows).zip(outcomes) {
            results.push(match (outcome, row) {
                (Ok(true), Ok(row)) => Ok(row.saved),
                (Ok(true) | Ok(false), _) => Err(self.explain_update_failure(worker, None).await),
                (Err(e), _) => Err(self.explain_update_failure(worker, Some(e)).await),
            });
        }
        Ok(results)
    }

    async fn delete(&self, id: WorkerId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

impl PgStore {
    /// The fast path of `update_many`: one statement for the whole batch. Returns the ids
    /// saved, or `None` when the batch broke a uniqueness rule (nothing was written).
    async fn update_batch(
        &self,
        rows: &[std::result::Result<WorkerRow, StoreError>],
        workers: &[Worker],
    ) -> Result<Option<HashSet<String>>> {
        let mut cols = BatchColumns::default();
        for (row, worker) in rows.iter().zip(workers) {
            let Ok(row) = row else { continue };
            cols.push(row, worker);
        }
        let mut tx = self.pool.begin().await?;
        lock_workers(&mut tx, rows).await?;
        match batch_update_on(&mut tx, &cols).await {
            Ok(ids) => {
                tx.commit().await?;
                Ok(Some(ids.into_iter().collect()))
            }
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// One statement updating every row of `cols` whose version is still the one read; returns
/// the ids updated.
async fn batch_update_on(
    conn: &mut PgConnection,
    cols: &BatchColumns,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar::<_, String>(
        "UPDATE workers AS w SET instance_id = u.instance_id, name = u.name, \
         region = u.region, ec2_state = u.ec2_state, service_status = u.service_status, \
         updated_at_ms = u.updated_at_ms, version = u.version, doc = u.doc \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::bigint[], $8::bigint[], $9::text[]) \
              AS u(id, instance_id, name, region, ec2_state, service_status, updated_at_ms, \
                   version, doc) \
         WHERE w.id = u.id AND w.version = u.version - 1 \
         RETURNING w.id",
    )
    .bind(&cols.id)
    .bind(&cols.instance_id)
    .bind(&cols.name)
    .bind(&cols.region)
    .bind(&cols.ec2_state)
    .bind(&cols.service)
    .bind(&cols.updated)
    .bind(&cols.version)
    .bind(&cols.doc)
    .fetch_all(conn)
    .await
}

impl BatchColumns {
    fn push(&mut self, row: &WorkerRow, worker: &Worker) {
        self.id.push(row.id.clone());
        self.instance_id.push(row.instance_id.clone());
        self.name.push(worker.name.clone());
        self.region.push(worker.region.as_str().to_owned());
        self.ec2_state.push(worker.ec2_state.as_str().to_owned());
        self.service.push(worker.service.status.as_str().to_owned());
        self.updated.push(ms(worker.updated_at));
        self.version.push(row.version);
        self.doc.push(row.doc.clone());
    }
}

#[derive(Default)]
struct BatchColumns {
    id: Vec<String>,
    instance_id: Vec<Option<String>>,
    name: Vec<String>,
    region: Vec<String>,
    ec2_state: Vec<String>,
    service: Vec<String>,
    updated: Vec<i64>,
    version: Vec<i64>,
    doc: Vec<String>,
}

async fn insert_worker<'c, E>(
    exec: E,
    row: &WorkerRow,
    worker: &Worker,
    or_nothing: bool,
) -> sqlx::Result<u64>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    let sql = if or_nothing {
        "INSERT INTO workers (id, instance_id, name, region, ec2_state, service_status, \
         created_at_ms, updated_at_ms, version, doc) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (instance_id) DO NOTHING"
    } else {
        "INSERT INTO workers (id, instance_id, name, region, ec2_state, service_status, \
         created_at_ms, updated_at_ms, version, doc) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    };
    let done = sqlx::query(sql)
        .bind(&row.id)
        .bind(&row.instance_id)
        .bind(&worker.name)
        .bind(worker.region.as_str())
        .bind(worker.ec2_state.as_str())
        .bind(worker.service.status.as_str())
        .bind(ms(worker.created_at))
        .bind(ms(worker.updated_at))
        .bind(row.version)
        .bind(&row.doc)
        .execute(exec)
        .await?;
    Ok(done.rows_affected())
}

/// Refuses the transaction's write unless `fence`'s lease is held under its token and has
/// not expired by the database's clock. The lease row stays share-locked until the
/// transaction ends, so a replica taking it over waits for this write (as in
/// [`PgStore::save_changes_fenced`]).
async fn check_fence(conn: &mut sqlx::PgConnection, fence: Option<&Fence>) -> Result<()> {
    let Some(fence) = fence else {
        return Ok(());
    };
    let held: Option<i64> = sqlx::query_scalar(
        "SELECT fence FROM leases WHERE key = $1 AND expires_at > now() FOR SHARE",
    )
    .bind(&fence.key)
    .fetch_optional(&mut *conn)
    .await?;
    if held.and_then(|f| u64::try_from(f).ok()) == Some(fence.token) {
        Ok(())
    } else {
        Err(StoreError::Fenced {
            key: fence.key.clone(),
            token: fence.token,
        })
    }
}

async fn upsert_lab_on<'c, E>(exec: E, lab: &LabRecord) -> Result<()>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    let doc = encode_lab(lab)?;
    sqlx::query(
        "INSERT INTO labs (worker_id, lab_id, title, state, observed_at_ms, doc) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (worker_id, lab_id) DO UPDATE SET title = excluded.title, state = excluded.state, \
         observed_at_ms = excluded.observed_at_ms, doc = excluded.doc",
    )
    .bind(lab.worker_id.to_string())
    .bind(lab.lab_id.as_str())
    .bind(&lab.title)
    .bind(lab.state.as_str())
    .bind(ms(lab.observed_at))
    .bind(doc)
    .execute(exec)
    .await?;
    Ok(())
}

#[async_trait]
impl LabRepo for PgStore {
    async fn replace_labs(
        &self,
        worker: WorkerId,
        labs: &[LabRecord],
        fence: Option<&Fence>,
    ) -> Result<(u32, u32)> {
        let wid = worker.to_string();
        let mut tx = self.pool.begin().await?;
        check_fence(&mut tx, fence).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(LABS_LOCK_CLASS)
            .bind(&wid)
            .execute(&mut *tx)
            .await?;
        let existing: Vec<String> =
            sqlx::query_scalar("SELECT lab_id FROM labs WHERE worker_id = $1")
                .bind(&wid)
                .fetch_all(&mut *tx)
                .await?;
        let existing: HashSet<String> = existing.into_iter().collect();
        let mut keep = HashSet::new();
        let mut added = 0u32;
        for lab in labs {
            if lab.worker_id != worker {
                continue;
            }
            let id = lab.lab_id.to_string();
            if !existing.contains(&id) && !keep.contains(&id) {
                added += 1;
            }
            upsert_lab_on(&mut *tx, lab)
                .await
                .map_err(|e| map_fk(e, worker))?;
            keep.insert(id);
        }
        let gone: Vec<&String> = existing.difference(&keep).collect();
        let removed = u32::try_from(gone.len()).unwrap_or(u32::MAX);
        if !gone.is_empty() {
            sqlx::query("DELETE FROM labs WHERE worker_id = $1 AND lab_id = ANY($2)")
                .bind(&wid)
                .bind(&gone)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((added, removed))
    }

    async fn upsert_labs(&self, labs: &[LabRecord], fence: Option<&Fence>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        check_fence(&mut tx, fence).await?;
        for lab in labs {
            upsert_lab_on(&mut *tx, lab)
                .await
                .map_err(|e| map_fk(e, lab.worker_id))?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete_lab(&self, worker: WorkerId, lab: &LabId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM labs WHERE worker_id = $1 AND lab_id = $2")
            .bind(worker.to_string())
            .bind(lab.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_labs(&self, worker: WorkerId) -> Result<Vec<LabRecord>> {
        let rows =
            sqlx::query("SELECT lab_id, doc FROM labs WHERE worker_id = $1 ORDER BY title, lab_id")
                .bind(worker.to_string())
                .fetch_all(&self.readers)
                .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("lab_id")?;
                let doc: String = row.try_get("doc")?;
                decode_lab(&id, &doc)
            })
            .collect()
    }
}

#[async_trait]
impl SettingsRepo for PgStore {
    async fn runtime_settings(&self) -> Result<Versioned<RuntimeSettings>> {
        let row = sqlx::query("SELECT value, version FROM settings WHERE key = $1")
            .bind(RUNTIME_SETTINGS_KEY)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(Versioned {
                value: RuntimeSettings::default(),
                version: 0,
            });
        };
        let value: String = row.try_get("value")?;
        let version: i64 = row.try_get("version")?;
        Ok(Versioned {
            value: decode_settings(&value)?,
            version: u64::try_from(version)
                .map_err(|e| corrupt("settings", RUNTIME_SETTINGS_KEY, e))?,
        })
    }

    async fn put_runtime_settings(
        &self,
        settings: &RuntimeSettings,
        expected_version: u64,
        by: &str,
    ) -> Result<Versioned<RuntimeSettings>> {
        let value = encode_settings(settings)?;
        let now = ms(Utc::now());
        let next = i64::try_from(expected_version + 1)
            .map_err(|e| corrupt("settings", RUNTIME_SETTINGS_KEY, e))?;
        let done = if expected_version == 0 {
            sqlx::query(
                "INSERT INTO settings (key, value, version, updated_at_ms, updated_by) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(RUNTIME_SETTINGS_KEY)
            .bind(&value)
            .bind(next)
            .bind(now)
            .bind(by)
            .execute(&self.pool)
            .await?
        } else {
            sqlx::query(
                "UPDATE settings SET value = $1, version = $2, updated_at_ms = $3, updated_by = $4 \
                 WHERE key = $5 AND version = $6",
            )
            .bind(&value)
            .bind(next)
            .bind(now)
            .bind(by)
            .bind(RUNTIME_SETTINGS_KEY)
            .bind(next - 1)
            .execute(&self.pool)
            .await?
        };
        if done.rows_affected() == 1 {
            return Ok(Versioned {
                value: settings.clone(),
                version: expected_version + 1,
            });
        }
        let found = self.runtime_settings().await?.version;
        Err(StoreError::SettingsConflict {
            expected: expected_version,
            found,
        })
    }
}

fn decode_event(row: &PgRow) -> Result<StoredEvent> {
    let seq: i64 = row.try_get("seq")?;
    let body: String = row.try_get("body")?;
    crate::common::decode_event(seq, &body)
}

/// Appends the persistent `events` inside the caller's transaction (see
/// [`EventLog::append`] on [`PgStore`]): takes [`EVENT_APPEND_LOCK`] until that transaction
/// ends, draws the positions, inserts, and notifies [`EVENTS_CHANNEL`] (delivered only if the
/// transaction commits). Returns each event's position (`None` for transient ones).
async fn append_on(conn: &mut PgConnection, events: &[Event]) -> Result<Vec<Option<u64>>> {
    let mut out = vec![None; events.len()];
    let stored: Vec<_> = persistent(events).collect();
    if stored.is_empty() {
        return Ok(out);
    }
    let mut ids = Vec::with_capacity(stored.len());
    let mut times = Vec::with_capacity(stored.len());
    let mut types = Vec::with_capacity(stored.len());
    let mut subjects = Vec::with_capacity(stored.len());
    let mut bodies = Vec::with_capacity(stored.len());
    for (_, event) in &stored {
        bodies.push(encode_event(event)?);
        ids.push(event.id.to_string());
        times.push(ms(event.time));
        types.push(event.type_name().to_owned());
        subjects.push(event.subject.clone());
    }
    let count = i64::try_from(stored.len()).unwrap_or(i64::MAX);
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(EVENT_APPEND_LOCK)
        .execute(&mut *conn)
        .await?;
    // Drawn under the lock, so no other append draws in between; sorted because a set of
    // rows has no order of its own.
    let mut seqs: Vec<i64> = sqlx::query_scalar(
        "SELECT nextval(pg_get_serial_sequence('events', 'seq')) FROM generate_series(1, $1)",
    )
    .bind(count)
    .fetch_all(&mut *conn)
    .await?;
    seqs.sort_unstable();
    if seqs.len() != stored.len() {
        return Err(corrupt(
            "event",
            "sequence",
            format!("drew {} positions for {} events", seqs.len(), stored.len()),
        ));
    }
    let last = seqs.last().copied().unwrap_or_default();
    sqlx::query(
        "INSERT INTO events (seq, id, time_ms, type, subject, body) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[])",
    )
    .bind(&seqs)
    .bind(&ids)
    .bind(&times)
    .bind(&types)
    .bind(&subjects)
    .bind(&bodies)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(EVENTS_CHANNEL)
        .bind(last.to_string())
        .execute(&mut *conn)
        .await?;
    for ((i, _), seq) in stored.iter().zip(&seqs) {
        out[*i] = u64::try_from(*seq).ok();
    }
    Ok(out)
}

#[async_trait]
impl EventLog for PgStore {
    /// Appends under [`EVENT_APPEND_LOCK`]: positions are drawn and committed while the lock
    /// is held, so they become visible in order; then notifies [`EVENTS_CHANNEL`] with the
    /// last position, in the same transaction (delivered only if it commits).
    async fn append(&self, events: &[Event]) -> Result<Vec<Option<u64>>> {
        if persistent(events).next().is_none() {
            return Ok(vec![None; events.len()]);
        }
        let mut tx = self.pool.begin().await?;
        let out = append_on(&mut tx, events).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn read(&self, query: &EventQuery) -> Result<Vec<StoredEvent>> {
        let mut q = QueryBuilder::<Postgres>::new("SELECT seq, body FROM events WHERE TRUE");
        if let Some(after) = query.after {
            q.push(" AND seq > ")
                .push_bind(i64::try_from(after).unwrap_or(i64::MAX));
        }
        if let Some(before) = query.before {
            q.push(" AND seq < ")
                .push_bind(i64::try_from(before).unwrap_or(i64::MAX));
        }
        for (column, values) in [("subject", &query.subjects), ("type", &query.types)] {
            if !values.is_empty() {
                q.push(format!(" AND {column} = ANY("))
                    .push_bind(values.clone())
                    .push(")");
            }
        }
        q.push(if query.newest_first {
            " ORDER BY seq DESC"
        } else {
            " ORDER BY seq ASC"
        });
        q.push(" LIMIT ").push_bind(event_limit(query.limit));
        let rows = q.build().fetch_all(&self.readers).await?;
        rows.iter().map(decode_event).collect()
    }

    async fn last_seq(&self) -> Result<u64> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
    }

    async fn prune_events(&self, before: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM events WHERE time_ms < $1")
            .bind(ms(before))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl MetricsRepo for PgStore {
    async fn record_metrics(
        &self,
        worker: WorkerId,
        at: DateTime<Utc>,
        sample: MetricsSample,
    ) -> Result<()> {
        self.record_metrics_many(&[(worker, at, sample)]).await
    }

    async fn record_metrics_many(
        &self,
        samples: &[(WorkerId, DateTime<Utc>, MetricsSample)],
    ) -> Result<()> {
        let Some(newest) = samples.iter().map(|(_, at, _)| *at).max() else {
            return Ok(());
        };
        let buckets = crate::common::bucket_sums(samples, self.bucket_ms);
        let mut workers = Vec::with_capacity(buckets.len());
        let mut starts = Vec::with_capacity(buckets.len());
        let mut counts = Vec::with_capacity(buckets.len());
        let mut sums: [Vec<f64>; 4] = Default::default();
        let mut ns: [Vec<i64>; 4] = Default::default();
        let mut nodes = Vec::with_capacity(buckets.len());
        for ((worker, bucket), b) in buckets {
            workers.push(worker);
            starts.push(bucket);
            counts.push(b.samples);
            for (i, (sum, n)) in b.sums.into_iter().enumerate() {
                sums[i].push(sum);
                ns[i].push(n);
            }
            nodes.push(b.nodes_max);
        }
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "INSERT INTO metrics (worker_id, bucket_ms, samples, cpu_sum, cpu_n, mem_sum, mem_n, \
             cml_cpu_sum, cml_cpu_n, cml_mem_sum, cml_mem_n, nodes_max) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::float8[], $5::bigint[], \
                  $6::float8[], $7::bigint[], $8::float8[], $9::bigint[], $10::float8[], $11::bigint[], \
                  $12::bigint[]) \
             {METRICS_UPSERT}"
        );
        // Constants only: no input reaches the text.
        let upsert = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&workers)
            .bind(&starts)
            .bind(&counts)
            .bind(&sums[0])
            .bind(&ns[0])
            .bind(&sums[1])
            .bind(&ns[1])
            .bind(&sums[2])
            .bind(&ns[2])
            .bind(&sums[3])
            .bind(&ns[3])
            .bind(&nodes)
            .execute(&mut *tx)
            .await;
        if let Err(e) = upsert {
            drop(tx);
            if is_foreign_key_violation(&e) {
                return Err(self.missing_worker(&workers).await.unwrap_or(e.into()));
            }
            return Err(e.into());
        }
        sqlx::query("DELETE FROM metrics WHERE bucket_ms < $1")
            .bind(ms(newest).saturating_sub(self.retention_ms))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn metrics_history(
        &self,
        worker: WorkerId,
        since: DateTime<Utc>,
    ) -> Result<Vec<MetricsPoint>> {
        let rows = sqlx::query(
            "SELECT bucket_ms, samples, cpu_sum, cpu_n, mem_sum, mem_n, cml_cpu_sum, cml_cpu_n, cml_mem_sum, \
             cml_mem_n, nodes_max FROM metrics WHERE worker_id = $1 AND bucket_ms >= $2 ORDER BY bucket_ms",
        )
        .bind(worker.to_string())
        .bind(ms(since).div_euclid(self.bucket_ms) * self.bucket_ms)
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|row| {
                let avg = |sum: &str, n: &str| -> Result<Option<f64>> {
                    let s: f64 = row.try_get(sum)?;
                    let n: i64 = row.try_get(n)?;
                    Ok((n > 0).then(|| s / n as f64))
                };
                Ok(MetricsPoint {
                    at: from_ms(row.try_get("bucket_ms")?),
                    samples: u64::try_from(row.try_get::<i64, _>("samples")?).unwrap_or(0),
                    cpu_percent: avg("cpu_sum", "cpu_n")?,
                    memory_percent: avg("mem_sum", "mem_n")?,
                    cml_cpu_percent: avg("cml_cpu_sum", "cml_cpu_n")?,
                    cml_memory_percent: avg("cml_mem_sum", "cml_mem_n")?,
                    running_nodes: row
                        .try_get::<Option<i64>, _>("nodes_max")?
                        .and_then(|n| u64::try_from(n).ok()),
                })
            })
            .collect()
    }
}

impl PgStore {
    /// The first of `ids` that has no worker row, as `NotFound`.
    async fn missing_worker(&self, ids: &[String]) -> Option<StoreError> {
        let present: Vec<String> = sqlx::query_scalar("SELECT id FROM workers WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .ok()?;
        let present: HashSet<String> = present.into_iter().collect();
        ids.iter()
            .find(|id| !present.contains(*id))
            .map(|id| StoreError::NotFound {
                what: "worker",
                id: id.clone(),
            })
    }
}

#[async_trait]
impl SessionRepo for PgStore {
    async fn put_session(&self, key: &str, doc: &str, expires_at: DateTime<Utc>) -> Result<()> {
        let doc = encode_session(key, doc)?;
        sqlx::query(
            "INSERT INTO sessions (key, doc, expires_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET doc = excluded.doc, expires_at_ms = excluded.expires_at_ms",
        )
        .bind(key)
        .bind(&doc)
        .bind(ms(expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session(&self, key: &str, now: DateTime<Utc>) -> Result<Option<String>> {
        let doc: Option<String> =
            sqlx::query_scalar("SELECT doc FROM sessions WHERE key = $1 AND expires_at_ms > $2")
                .bind(key)
                .bind(ms(now))
                .fetch_optional(&self.readers)
                .await?;
        doc.map(|d| decode_session(key, &d)).transpose()
    }

    /// Deletes and notifies [`SESSIONS_CHANNEL`] with the key in one transaction, so every
    /// replica ends the session (also when it was only in their memory).
    async fn delete_session(&self, key: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM sessions WHERE key = $1")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(SESSIONS_CHANNEL)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn purge_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at_ms <= $1")
            .bind(ms(now))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl CursorRepo for PgStore {
    async fn cursor(&self, name: &str) -> Result<Option<u64>> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        seq.map(|s| u64::try_from(s).map_err(|e| corrupt("cursor", name, e)))
            .transpose()
    }

    async fn advance_cursor(&self, name: &str, seq: u64, now: DateTime<Utc>) -> Result<u64> {
        let seq = i64::try_from(seq).map_err(|e| corrupt("cursor", name, e))?;
        // GREATEST keeps the position monotonic whatever order writers (replicas) arrive in;
        // the upsert is one statement, so two writers never both insert.
        let stored: i64 = sqlx::query_scalar(
            "INSERT INTO cursors (name, seq, updated_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET seq = GREATEST(cursors.seq, excluded.seq), \
             updated_at_ms = excluded.updated_at_ms \
             RETURNING seq",
        )
        .bind(name)
        .bind(seq)
        .bind(ms(now))
        .fetch_one(&self.pool)
        .await?;
        u64::try_from(stored).map_err(|e| corrupt("cursor", name, e))
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn save_changes(&self, writes: &[WorkerWrite]) -> Result<Vec<WriteOutcome>> {
        self.save_changes_fenced(writes).await
    }

    fn cluster(&self) -> Option<&dyn ClusterRepo> {
        Some(self)
    }
}

/// Why one write of [`PgStore::save_changes_fenced`] was not saved (a saved one has its worker
/// in the save's `saved` slot instead).
enum Pending {
    Fenced,
    Broken(StoreError),
    Stale,
}

impl PgStore {
    /// [`Store::save_changes`]: fences checked under a share lock on their lease rows, rows
    /// locked in id order, one batch statement (row by row in savepoints when the batch trips
    /// a uniqueness rule), the saved rows' events appended — all in one transaction.
    async fn save_changes_fenced(&self, writes: &[WorkerWrite]) -> Result<Vec<WriteOutcome>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pending: Vec<Option<Pending>> = (0..writes.len()).map(|_| None).collect();
        let mut saved: Vec<Option<Worker>> = (0..writes.len()).map(|_| None).collect();
        let mut tx = self.pool.begin().await?;

        // 1. Fences: the lease rows are share-locked until commit, so a replica taking one of
        //    them over (an UPDATE of that row) waits for this transaction, and this
        //    transaction sees the lease as it is now.
        let mut keys: Vec<&str> = writes
            .iter()
            .filter_map(|w| w.fence.as_ref().map(|f| f.key.as_str()))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        if !keys.is_empty() {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT key, fence FROM leases WHERE key = ANY($1) AND expires_at > now() \
                 ORDER BY key FOR SHARE",
            )
            .bind(&keys)
            .fetch_all(&mut *tx)
            .await?;
            let current: BTreeMap<String, i64> = rows.into_iter().collect();
            for (slot, write) in pending.iter_mut().zip(writes) {
                if let Some(fence) = &write.fence {
                    let held = current
                        .get(&fence.key)
                        .is_some_and(|f| u64::try_from(*f).ok() == Some(fence.token));
                    if !held {
                        *slot = Some(Pending::Fenced);
                    }
                }
            }
        }

        // 2. The rows, in one statement when possible.
        let mut rows = Vec::new();
        let mut seen = HashSet::new();
        for (i, write) in writes.iter().enumerate() {
            if pending[i].is_some() {
                continue;
            }
            if !seen.insert(write.worker.id) {
                pending[i] = Some(Pending::Broken(corrupt(
                    "worker",
                    write.worker.id,
                    "the same worker twice in one save",
                )));
                continue;
            }
            match encode_worker(&write.worker, write.worker.version + 1) {
                Ok(row) => rows.push((i, row)),
                Err(e) => pending[i] = Some(Pending::Broken(e)),
            }
        }
        if !rows.is_empty() {
            let mut ids: Vec<&str> = rows.iter().map(|(_, r)| r.id.as_str()).collect();
            ids.sort_unstable();
            sqlx::query("SELECT id FROM workers WHERE id = ANY($1) ORDER BY id FOR UPDATE")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
            let mut cols = BatchColumns::default();
            for (i, row) in &rows {
                cols.push(row, &writes[*i].worker);
            }
            let mut batch = tx.begin().await?;
            match batch_update_on(&mut batch, &cols).await {
                Ok(updated) => {
                    batch.commit().await?;
                    let updated: HashSet<String> = updated.into_iter().collect();
                    for (i, row) in rows {
                        if updated.contains(&row.id) {
                            saved[i] = Some(row.saved);
                        } else {
                            pending[i] = Some(Pending::Stale);
                        }
                    }
                }
                Err(e) if is_unique_violation(&e) => {
                    batch.rollback().await?;
                    for (i, row) in rows {
                        let mut one = tx.begin().await?;
                        let updated = update_row(&mut *one, &row, &writes[i].worker).await;
                        match updated {
                            Ok(n) => {
                                one.commit().await?;
                                if n == 1 {
                                    saved[i] = Some(row.saved);
                                } else {
                                    pending[i] = Some(Pending::Stale);
                                }
                            }
                            Err(e) => {
                                one.rollback().await?;
                                pending[i] = Some(Pending::Broken(e.into()));
                            }
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }

        // 3. The saved rows' events, in this transaction.
        let mut events = Vec::new();
        let mut spans = Vec::new();
        for (i, write) in writes.iter().enumerate() {
            if saved[i].is_some() {
                spans.push((i, events.len(), write.events.len()));
                events.extend(write.events.iter().cloned());
            }
        }
        let seqs = append_on(&mut tx, &events).await?;
        tx.commit().await?;

        // 4. Outcomes (explaining failures reads again, after the commit).
        let mut out = Vec::with_capacity(writes.len());
        let mut spans = spans.into_iter().peekable();
        for (i, ((write, state), worker)) in writes.iter().zip(pending).zip(saved).enumerate() {
            out.push(match (worker, state.unwrap_or(Pending::Stale)) {
                (Some(worker), _) => {
                    let seqs = match spans.next_if(|(j, _, _)| *j == i) {
                        Some((_, start, len)) => seqs[start..start + len].to_vec(),
                        None => Vec::new(),
                    };
                    WriteOutcome::Saved { worker, seqs }
                }
                (None, Pending::Fenced) => WriteOutcome::Fenced,
                (None, Pending::Stale) => {
                    WriteOutcome::Failed(self.explain_update_failure(&write.worker, None).await)
                }
                (None, Pending::Broken(e)) => {
                    WriteOutcome::Failed(self.explain_update_failure(&write.worker, Some(e)).await)
                }
            });
        }
        Ok(out)
    }
}
