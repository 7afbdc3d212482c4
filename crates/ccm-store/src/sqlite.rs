//! The SQLite implementation of every repository. Writers are serialized by SQLite itself
//! (`BEGIN IMMEDIATE`), so event positions commit in order.

use std::collections::HashSet;
use std::str::FromStr;

use async_trait::async_trait;
use ccm_domain::{Event, InstanceId, LabId, LabRecord, RuntimeSettings, Worker, WorkerId};
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use crate::common::{
    METRICS_UPSERT, RUNTIME_SETTINGS_KEY, corrupt, decode_lab, decode_session, decode_settings,
    encode_event, encode_lab, encode_session, encode_settings, encode_worker, event_limit, from_ms,
    is_foreign_key_violation, is_unique_violation, like_pattern, map_fk, ms,
};
use crate::{
    CursorRepo, EventLog, EventQuery, Fence, LabRepo, MetricsPoint, MetricsRepo, MetricsSample,
    Page, Result, SessionRepo, SettingsRepo, Store, StoreConfig, StoreError, StoredEvent,
    Synchronous, Versioned, WorkerFilter, WorkerRepo, WorkerSort, WorkerStamp, WorkerWrite,
    WriteOutcome, persistent,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a write waits for the one write connection before failing.
const WRITE_QUEUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Most rows one batched statement carries (10 parameters each for a worker, 5 for an
/// event: far below SQLite's 32,766).
const BATCH_ROWS: usize = 500;

/// The columns an update writes, then the id and the version it expects to replace.
const UPDATE_SET: &str = "instance_id = v.column2, name = v.column3, region = v.column4, \
     ec2_state = v.column5, service_status = v.column6, updated_at_ms = v.column7, \
     version = v.column8, doc = v.column9";

/// Updates one encoded worker row if the stored version is still the one before `row`'s;
/// returns the rows changed (0 or 1).
async fn update_row<'c, E>(
    exec: E,
    row: &crate::common::WorkerRow,
    worker: &Worker,
) -> sqlx::Result<u64>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
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

/// Updates up to [`BATCH_ROWS`] encoded rows in one statement (`UPDATE … FROM (VALUES …)`),
/// each only if its stored version is still the one before; returns the ids updated. One
/// statement is one round trip to the connection's thread instead of one per row. A row that
/// breaks a rule (another worker's instance id) fails the whole statement, and SQLite undoes
/// all of it.
async fn update_rows(
    conn: &mut sqlx::SqliteConnection,
    rows: &[(&crate::common::WorkerRow, &Worker)],
) -> sqlx::Result<HashSet<String>> {
    let mut q = QueryBuilder::<Sqlite>::new(format!("UPDATE workers SET {UPDATE_SET} FROM ("));
    q.push_values(rows, |mut b, (row, worker)| {
        b.push_bind(row.id.as_str())
            .push_bind(row.instance_id.as_deref())
            .push_bind(worker.name.as_str())
            .push_bind(worker.region.as_str())
            .push_bind(worker.ec2_state.as_str())
            .push_bind(worker.service.status.as_str())
            .push_bind(ms(worker.updated_at))
            .push_bind(row.version)
            .push_bind(row.doc.as_str())
            .push_bind(row.version - 1);
    });
    q.push(
        ") AS v WHERE workers.id = v.column1 AND workers.version = v.column10 \
         RETURNING workers.id",
    );
    let ids: Vec<String> = q.build_query_scalar().fetch_all(conn).await?;
    Ok(ids.into_iter().collect())
}

/// Counts the workers a fleet cap counts: all but terminated and failed ones.
const LIVE_WORKERS: &str =
    "SELECT COUNT(*) FROM workers WHERE ec2_state NOT IN ('terminated', 'failed')";

/// Inserts one new worker row.
async fn insert_row<'c, E>(
    exec: E,
    row: &crate::common::WorkerRow,
    worker: &Worker,
) -> sqlx::Result<u64>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
{
    let done = sqlx::query(
        "INSERT INTO workers (id, instance_id, name, region, ec2_state, service_status, \
         created_at_ms, updated_at_ms, version, doc) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
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

/// The SQLite store. Cheap to clone (a connection pool inside).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Reads (WAL: readers never wait for the writer).
    pub(crate) pool: SqlitePool,
    /// Every write: one connection, so writers queue in order here (sqlx's pool hands the
    /// connection over first come, first served) instead of polling for SQLite's lock with
    /// the busy handler, which lets an unlucky writer starve past `busy_timeout` under load
    /// (`database is locked`). In memory, the same single connection as `pool`.
    pub(crate) writer: SqlitePool,
    bucket_ms: i64,
    retention_ms: i64,
}

fn decode_worker(row: &SqliteRow) -> Result<Worker> {
    let id: String = row.try_get("id")?;
    let version: i64 = row.try_get("version")?;
    let doc: String = row.try_get("doc")?;
    crate::common::decode_worker(&id, version, &doc)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `config.path` (default `ccm.db`), in WAL
    /// mode, and brings the schema up to date. `config.url` is ignored.
    pub async fn open(config: &StoreConfig) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(config.sqlite_path())
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match config.synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(config.busy_timeout)
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(WRITE_QUEUE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        // A negative cache_size is in KiB (a positive one would be pages).
        let read_cache = format!("-{}", config.sqlite_read_cache_kib);
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .connect_with(options.pragma("cache_size", read_cache))
            .await?;
        Self::with_pools(pool, writer, config)
    }

    /// An in-memory database (one connection), for tests and benchmarks.
    pub async fn open_in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Self::with_pools(pool.clone(), pool, &StoreConfig::default())
    }

    fn with_pools(pool: SqlitePool, writer: SqlitePool, config: &StoreConfig) -> Result<Self> {
        let bucket_ms = i64::try_from(config.metrics_bucket.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        let retention_ms = i64::try_from(config.metrics_retention.as_millis()).unwrap_or(i64::MAX);
        Ok(Self {
            pool,
            writer,
            bucket_ms,
            retention_ms,
        })
    }

    /// Runs `PRAGMA integrity_check`; returns `ok` when the database is sound.
    pub async fn integrity_check(&self) -> Result<String> {
        let row = sqlx::query("PRAGMA integrity_check")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<String, _>(0)?)
    }

    /// Closes every connection (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }

    async fn version_of(&self, id: &str) -> Result<Option<u64>> {
        let v: Option<i64> = sqlx::query_scalar("SELECT version FROM workers WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(v.and_then(|v| u64::try_from(v).ok()))
    }

    /// The error of a failed insert: [`StoreError::Duplicate`] when the instance already has a
    /// worker.
    async fn insert_failure(&self, e: sqlx::Error, instance_id: Option<String>) -> StoreError {
        match instance_id {
            Some(instance_id) if is_unique_violation(&e) => {
                match self.existing_for_instance(&instance_id).await {
                    Ok(Some(existing)) => StoreError::Duplicate {
                        instance_id,
                        existing: existing.id,
                    },
                    Ok(None) => e.into(),
                    Err(other) => other,
                }
            }
            _ => e.into(),
        }
    }

    async fn existing_for_instance(&self, instance_id: &str) -> Result<Option<Worker>> {
        let row = sqlx::query("SELECT id, version, doc FROM workers WHERE instance_id = $1")
            .bind(instance_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode_worker).transpose()
    }

    async fn update_on<'c, E>(
        &self,
        exec: E,
        worker: &Worker,
    ) -> std::result::Result<(Worker, u64), sqlx::Error>
    where
        E: sqlx::Executor<'c, Database = Sqlite>,
    {
        let next = worker.version + 1;
        let row = encode_worker(worker, next).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        let updated = update_row(exec, &row, worker).await?;
        Ok((row.saved, updated))
    }

    async fn explain_update_failure(
        &self,
        worker: &Worker,
        err: Option<sqlx::Error>,
    ) -> StoreError {
        match err {
            Some(e) if is_unique_violation(&e) => {
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
            Some(e) => StoreError::Database(e),
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

    /// The rows of a listing's page (`columns` of `workers w`, in the page's order) and the
    /// total that matched: what [`WorkerRepo::list`] and [`WorkerRepo::list_stamps`] share.
    async fn list_rows(
        &self,
        filter: &WorkerFilter,
        columns: &str,
    ) -> Result<(Vec<SqliteRow>, u64)> {
        /// `in_sort_order`: the filter columns are prefixed with a unary `+`, which tells
        /// SQLite not to use their own indexes, so that it reads the page in the order of the
        /// sort key's index and checks the filters from that index (every sort key's index
        /// holds the filter columns: migration 0004). Left to itself, SQLite prefers an
        /// equality filter's index and then sorts every match.
        fn push_filters(q: &mut QueryBuilder<Sqlite>, f: &WorkerFilter, in_sort_order: bool) {
            q.push(" WHERE 1 = 1");
            let plus = if in_sort_order { "+" } else { "" };
            let in_list = |q: &mut QueryBuilder<Sqlite>, column: &str, values: &[String]| {
                if values.is_empty() {
                    return;
                }
                q.push(format!(" AND {plus}{column} IN ("));
                let mut sep = q.separated(", ");
                for v in values {
                    sep.push_bind(v.clone());
                }
                q.push(")");
            };
            in_list(q, "region", &f.regions);
            in_list(q, "ec2_state", &f.ec2_states);
            in_list(q, "service_status", &f.service_statuses);
            if let Some(ids) = &f.ids {
                let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                if ids.is_empty() {
                    q.push(" AND 1 = 0");
                } else {
                    // By the primary key: a few ids are found directly, then sorted.
                    q.push(" AND id IN (");
                    let mut sep = q.separated(", ");
                    for v in ids {
                        sep.push_bind(v);
                    }
                    q.push(")");
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
        let mut count = if filter.counted_by_columns() {
            QueryBuilder::<Sqlite>::new("SELECT COALESCE(SUM(n), 0) FROM worker_counts")
        } else {
            QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM workers")
        };
        push_filters(&mut count, filter, false);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;

        // The page's ids first (sort key and id only: read in the order of the sort key's
        // index, `(column, id)`), then their documents: the documents of the rows that are
        // not on the page are never read or sorted.
        let column = match filter.sort {
            WorkerSort::Name => "name",
            WorkerSort::Created => "created_at_ms",
            WorkerSort::Updated => "updated_at_ms",
            WorkerSort::State => "ec2_state",
            WorkerSort::Service => "service_status",
            WorkerSort::Region => "region",
        };
        let dir = if filter.descending { "DESC" } else { "ASC" };
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {columns} FROM (SELECT id, {column} AS k FROM workers"
        ));
        push_filters(&mut q, filter, true);
        q.push(format!(" ORDER BY {column} {dir}, id {dir}"));
        if filter.limit > 0 {
            q.push(" LIMIT ").push_bind(i64::from(filter.limit));
            q.push(" OFFSET ").push_bind(i64::from(filter.offset));
        } else if filter.offset > 0 {
            q.push(" LIMIT -1 OFFSET ")
                .push_bind(i64::from(filter.offset));
        }
        q.push(format!(
            ") AS p JOIN workers w ON w.id = p.id ORDER BY p.k {dir}, p.id {dir}"
        ));
        let rows = q.build().fetch_all(&self.pool).await?;
        Ok((rows, u64::try_from(total).unwrap_or(0)))
    }
}

#[async_trait]
impl WorkerRepo for SqliteStore {
    async fn insert(&self, worker: &Worker) -> Result<Worker> {
        let row = encode_worker(worker, 1)?;
        let inserted = insert_row(&self.writer, &row, worker).await;
        match inserted {
            Ok(_) => Ok(row.saved),
            Err(e) => Err(self.insert_failure(e, row.instance_id).await),
        }
    }

    async fn insert_capped(&self, worker: &Worker, cap: u32) -> Result<Worker> {
        let row = encode_worker(worker, 1)?;
        // BEGIN IMMEDIATE takes the write lock before the count: no other writer can insert
        // between the count and the insert.
        let result: std::result::Result<Result<()>, sqlx::Error> = async {
            let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
            let live: i64 = sqlx::query_scalar(LIVE_WORKERS).fetch_one(&mut *tx).await?;
            let live = u64::try_from(live).unwrap_or(0);
            if live >= u64::from(cap) {
                return Ok(Err(StoreError::AtCap { cap, live }));
            }
            insert_row(&mut *tx, &row, worker).await?;
            tx.commit().await?;
            Ok(Ok(()))
        }
        .await;
        match result {
            Ok(Ok(())) => Ok(row.saved),
            Ok(Err(at_cap)) => Err(at_cap),
            Err(e) => Err(self.insert_failure(e, row.instance_id).await),
        }
    }

    async fn insert_or_get(&self, worker: &Worker) -> Result<(Worker, bool)> {
        let row = encode_worker(worker, 1)?;
        let done = sqlx::query(
            "INSERT INTO workers (id, instance_id, name, region, ec2_state, service_status, \
             created_at_ms, updated_at_ms, version, doc) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (instance_id) DO NOTHING",
        )
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
        .execute(&self.writer)
        .await?;
        if done.rows_affected() == 1 {
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
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode_worker).transpose()
    }

    async fn get_many(&self, ids: &[WorkerId]) -> Result<Vec<Worker>> {
        let mut out = Vec::with_capacity(ids.len());
        // SQLite allows 32,766 bound parameters; stay far below.
        for chunk in ids.chunks(500) {
            let mut q =
                QueryBuilder::<Sqlite>::new("SELECT id, version, doc FROM workers WHERE id IN (");
            let mut sep = q.separated(", ");
            for id in chunk {
                sep.push_bind(id.to_string());
            }
            q.push(")");
            let rows = q.build().fetch_all(&self.pool).await?;
            for row in &rows {
                out.push(decode_worker(row)?);
            }
        }
        Ok(out)
    }

    async fn get_by_instance(&self, instance_id: &InstanceId) -> Result<Option<Worker>> {
        self.existing_for_instance(instance_id.as_str()).await
    }

    async fn list(&self, filter: &WorkerFilter) -> Result<Page<Worker>> {
        let (rows, total) = self.list_rows(filter, "w.id, w.version, w.doc").await?;
        let items = rows.iter().map(decode_worker).collect::<Result<Vec<_>>>()?;
        Ok(Page { items, total })
    }

    async fn list_stamps(&self, filter: &WorkerFilter) -> Result<Page<WorkerStamp>> {
        let (rows, total) = self.list_rows(filter, "w.id, w.version").await?;
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
        match self.update_on(&self.writer, worker).await {
            Ok((saved, 1)) => Ok(saved),
            Ok(_) => Err(self.explain_update_failure(worker, None).await),
            Err(e) => Err(self.explain_update_failure(worker, Some(e)).await),
        }
    }

    async fn update_many(&self, workers: &[Worker]) -> Result<Vec<Result<Worker>>> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut outcomes = Vec::with_capacity(workers.len());
        for worker in workers {
            outcomes.push(self.update_on(&mut *tx, worker).await);
        }
        tx.commit().await?;
        let mut results = Vec::with_capacity(workers.len());
        for (worker, outcome) in workers.iter().zip(outcomes) {
            results.push(match outcome {
                Ok((saved, 1)) => Ok(saved),
                Ok(_) => Err(self.explain_update_failure(worker, None).await),
                Err(e) => Err(self.explain_update_failure(worker, Some(e)).await),
            });
        }
        Ok(results)
    }

    async fn delete(&self, id: WorkerId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl LabRepo for SqliteStore {
    /// A single node holds no leases: `_fence` is `None` from the engine and not checked.
    async fn replace_labs(
        &self,
        worker: WorkerId,
        labs: &[LabRecord],
        _fence: Option<&Fence>,
    ) -> Result<(u32, u32)> {
        let wid = worker.to_string();
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
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
        let mut removed = 0u32;
        for id in existing.difference(&keep) {
            sqlx::query("DELETE FROM labs WHERE worker_id = $1 AND lab_id = $2")
                .bind(&wid)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            removed += 1;
        }
        tx.commit().await?;
        Ok((added, removed))
    }

    async fn upsert_labs(&self, labs: &[LabRecord], _fence: Option<&Fence>) -> Result<()> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
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
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_labs(&self, worker: WorkerId) -> Result<Vec<LabRecord>> {
        let rows =
            sqlx::query("SELECT lab_id, doc FROM labs WHERE worker_id = $1 ORDER BY title, lab_id")
                .bind(worker.to_string())
                .fetch_all(&self.pool)
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

async fn upsert_lab_on<'c, E>(exec: E, lab: &LabRecord) -> Result<()>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
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
impl SettingsRepo for SqliteStore {
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
        let value = decode_settings(&value)?;
        Ok(Versioned {
            value,
            version: u64::try_from(version).unwrap_or(0),
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
            .execute(&self.writer)
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
            .execute(&self.writer)
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

fn decode_event(row: &SqliteRow) -> Result<StoredEvent> {
    let seq: i64 = row.try_get("seq")?;
    let body: String = row.try_get("body")?;
    crate::common::decode_event(seq, &body)
}

/// Appends the persistent `events` inside the caller's transaction; each one's position
/// (`None` for transient ones).
async fn append_on(
    conn: &mut sqlx::SqliteConnection,
    events: &[Event],
) -> Result<Vec<Option<u64>>> {
    let mut out = vec![None; events.len()];
    let mut rows = Vec::new();
    for (i, event) in persistent(events) {
        rows.push((i, event.id.to_string(), event, encode_event(event)?));
    }
    // Many rows per statement (one round trip); the rows are inserted in the order given, so
    // positions follow the events' order. RETURNING's order is not promised: matched by id.
    for chunk in rows.chunks(BATCH_ROWS) {
        let mut q =
            QueryBuilder::<Sqlite>::new("INSERT INTO events (id, time_ms, type, subject, body) ");
        q.push_values(chunk, |mut b, (_, id, event, body)| {
            b.push_bind(id.as_str())
                .push_bind(ms(event.time))
                .push_bind(event.type_name())
                .push_bind(event.subject.as_deref())
                .push_bind(body.as_str());
        });
        q.push(" RETURNING id, seq");
        let seqs: std::collections::HashMap<String, i64> = q
            .build_query_as::<(String, i64)>()
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
        for (i, id, _, _) in chunk {
            out[*i] = seqs.get(id).and_then(|s| u64::try_from(*s).ok());
        }
    }
    Ok(out)
}

#[async_trait]
impl EventLog for SqliteStore {
    async fn append(&self, events: &[Event]) -> Result<Vec<Option<u64>>> {
        if persistent(events).next().is_none() {
            return Ok(vec![None; events.len()]);
        }
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let out = append_on(&mut tx, events).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn read(&self, query: &EventQuery) -> Result<Vec<StoredEvent>> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT seq, body FROM events WHERE 1 = 1");
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
                q.push(format!(" AND {column} IN ("));
                let mut sep = q.separated(", ");
                for v in values {
                    sep.push_bind(v.clone());
                }
                q.push(")");
            }
        }
        q.push(if query.newest_first {
            " ORDER BY seq DESC"
        } else {
            " ORDER BY seq ASC"
        });
        q.push(" LIMIT ").push_bind(event_limit(query.limit));
        let rows = q.build().fetch_all(&self.pool).await?;
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
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl MetricsRepo for SqliteStore {
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
        let buckets: Vec<_> = crate::common::bucket_sums(samples, self.bucket_ms)
            .into_iter()
            .collect();
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        // One statement per chunk; a missing worker (deleted meanwhile) fails it, and is named.
        for chunk in buckets.chunks(BATCH_ROWS) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO metrics (worker_id, bucket_ms, samples, cpu_sum, cpu_n, mem_sum, \
                 mem_n, cml_cpu_sum, cml_cpu_n, cml_mem_sum, cml_mem_n, nodes_max) ",
            );
            q.push_values(chunk, |mut b, ((worker, bucket), sums)| {
                b.push_bind(worker.as_str())
                    .push_bind(*bucket)
                    .push_bind(sums.samples);
                for (sum, n) in sums.sums {
                    b.push_bind(sum).push_bind(n);
                }
                b.push_bind(sums.nodes_max);
            });
            q.push(" ").push(METRICS_UPSERT);
            if let Err(e) = q.build().execute(&mut *tx).await {
                if is_foreign_key_violation(&e) {
                    for ((worker, _), _) in chunk {
                        if self.version_of(worker).await?.is_none() {
                            return Err(StoreError::NotFound {
                                what: "worker",
                                id: worker.clone(),
                            });
                        }
                    }
                }
                return Err(e.into());
            }
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
        .fetch_all(&self.pool)
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

#[async_trait]
impl SessionRepo for SqliteStore {
    async fn put_session(&self, key: &str, doc: &str, expires_at: DateTime<Utc>) -> Result<()> {
        let doc = encode_session(key, doc)?;
        sqlx::query(
            "INSERT INTO sessions (key, doc, expires_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET doc = excluded.doc, expires_at_ms = excluded.expires_at_ms",
        )
        .bind(key)
        .bind(&doc)
        .bind(ms(expires_at))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn session(&self, key: &str, now: DateTime<Utc>) -> Result<Option<String>> {
        let row = sqlx::query("SELECT doc FROM sessions WHERE key = $1 AND expires_at_ms > $2")
            .bind(key)
            .bind(ms(now))
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some(decode_session(key, &r.try_get::<String, _>("doc")?)?)),
            None => Ok(None),
        }
    }

    async fn delete_session(&self, key: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM sessions WHERE key = $1")
            .bind(key)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn purge_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at_ms <= $1")
            .bind(ms(now))
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl CursorRepo for SqliteStore {
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
        // MAX keeps the position monotonic whatever order writers arrive in.
        let stored: i64 = sqlx::query_scalar(
            "INSERT INTO cursors (name, seq, updated_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET seq = MAX(cursors.seq, excluded.seq), \
             updated_at_ms = excluded.updated_at_ms \
             RETURNING seq",
        )
        .bind(name)
        .bind(seq)
        .bind(ms(now))
        .fetch_one(&self.writer)
        .await?;
        u64::try_from(stored).map_err(|e| corrupt("cursor", name, e))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// One `BEGIN IMMEDIATE` transaction for the rows and their events. Fences are not
    /// checked: a SQLite database has one process ([`SingleNodeLock`]), which owns everything.
    async fn save_changes(&self, writes: &[WorkerWrite]) -> Result<Vec<WriteOutcome>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        // Encoded before the write lock is taken.
        let mut seen = HashSet::new();
        let encoded: Vec<std::result::Result<crate::common::WorkerRow, sqlx::Error>> = writes
            .iter()
            .map(|write| {
                if !seen.insert(write.worker.id) {
                    return Err(sqlx::Error::Protocol(
                        "the same worker twice in one save".into(),
                    ));
                }
                encode_worker(&write.worker, write.worker.version + 1)
                    .map_err(|e| sqlx::Error::Protocol(e.to_string()))
            })
            .collect();
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        // Rows changed per write (or why not), a few statements for the whole save; a batch
        // that breaks a rule is undone by SQLite and done again row by row, so that only the
        // offending rows fail.
        let mut changed: Vec<Option<std::result::Result<u64, sqlx::Error>>> =
            writes.iter().map(|_| None).collect();
        let rows: Vec<(usize, &crate::common::WorkerRow, &Worker)> = encoded
            .iter()
            .zip(writes)
            .enumerate()
            .filter_map(|(i, (row, write))| row.as_ref().ok().map(|row| (i, row, &write.worker)))
            .collect();
        for chunk in rows.chunks(BATCH_ROWS) {
            let batch: Vec<_> = chunk
                .iter()
                .map(|(_, row, worker)| (*row, *worker))
                .collect();
            match update_rows(&mut tx, &batch).await {
                Ok(updated) => {
                    for (i, row, _) in chunk {
                        changed[*i] = Some(Ok(u64::from(updated.contains(&row.id))));
                    }
                }
                Err(_) => {
                    for (i, row, worker) in chunk {
                        changed[*i] = Some(update_row(&mut *tx, row, worker).await);
                    }
                }
            }
        }
        let mut events = Vec::new();
        let mut spans = Vec::new();
        for (i, write) in writes.iter().enumerate() {
            if matches!(changed[i], Some(Ok(1))) {
                spans.push((i, events.len(), write.events.len()));
                events.extend(write.events.iter().cloned());
            }
        }
        let seqs = append_on(&mut tx, &events).await?;
        tx.commit().await?;

        let mut spans = spans.into_iter().peekable();
        let mut out = Vec::with_capacity(writes.len());
        for (i, ((write, row), changed)) in writes.iter().zip(encoded).zip(changed).enumerate() {
            out.push(match (row, changed) {
                (Ok(row), Some(Ok(1))) => {
                    let seqs = match spans.next_if(|(j, _, _)| *j == i) {
                        Some((_, start, len)) => seqs[start..start + len].to_vec(),
                        None => Vec::new(),
                    };
                    WriteOutcome::Saved {
                        worker: row.saved,
                        seqs,
                    }
                }
                (Err(e), _) | (Ok(_), Some(Err(e))) => {
                    WriteOutcome::Failed(self.explain_update_failure(&write.worker, Some(e)).await)
                }
                (Ok(_), _) => {
                    WriteOutcome::Failed(self.explain_update_failure(&write.worker, None).await)
                }
            });
        }
        Ok(out)
    }
}

/// An exclusive lock on a SQLite database for one `ccm serve`: a second process pointed at the
/// same file is refused at start instead of running every job a second time. Held (an OS file
/// lock on `<database>.lock`) until dropped; the OS releases it when the process dies.
#[derive(Debug)]
pub struct SingleNodeLock {
    _file: std::fs::File,
    path: std::path::PathBuf,
}

impl SingleNodeLock {
    /// Takes the lock of the database at `database`, or says who has it.
    pub fn acquire(database: &std::path::Path) -> std::result::Result<Self, String> {
        let mut name = database.as_os_str().to_owned();
        name.push(".lock");
        let path = std::path::PathBuf::from(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file, path }),
            Err(std::fs::TryLockError::WouldBlock) => Err(format!(
                "another ccm process uses this SQLite database (lock {} is held); SQLite is \
                 single-node: run one `ccm serve` per file, or use PostgreSQL ([database] url) \
                 for several replicas",
                path.display()
            )),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(format!("cannot lock {}: {e}", path.display()))
            }
        }
    }

    /// The lock file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn read_connections_should_use_the_configured_page_cache_and_the_writer_sqlites() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            path: Some(dir.path().join("cache.db")),
            sqlite_read_cache_kib: 256,
            ..StoreConfig::default()
        };
        let store = SqliteStore::open(&config).await.unwrap();
        let read: i64 = sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(read, -256, "KiB, as a negative cache_size");
        let write: i64 = sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(&store.writer)
            .await
            .unwrap();
        assert_eq!(write, -2000, "SQLite's default");
    }
}
