//! What both backends share: time and document encodings, error mapping.

use ccm_domain::{Event, LabRecord, RuntimeSettings, Worker, WorkerId};
use chrono::{DateTime, Utc};

use crate::schema::{SESSION, SETTINGS, WORKER};
use crate::{Result, StoreError, StoredEvent};

/// The key of the runtime settings row.
pub(crate) const RUNTIME_SETTINGS_KEY: &str = "runtime";

/// Times are stored as epoch milliseconds (BIGINT) on both backends.
pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

pub(crate) fn corrupt(what: &'static str, id: impl ToString, err: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what,
        id: id.to_string(),
        message: err.to_string(),
    }
}

pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

pub(crate) fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

/// A write that referenced a missing worker is `NotFound`, not a database error.
pub(crate) fn map_fk(e: StoreError, worker: WorkerId) -> StoreError {
    match e {
        StoreError::Database(db) if is_foreign_key_violation(&db) => StoreError::NotFound {
            what: "worker",
            id: worker.to_string(),
        },
        other => other,
    }
}

/// A worker as read from its row: the document (any schema version) and the version column.
/// A listed row's id and version (`list_stamps`).
pub(crate) fn decode_stamp(id: &str, version: i64) -> Result<crate::WorkerStamp> {
    Ok(crate::WorkerStamp {
        id: id
            .parse::<ccm_domain::WorkerId>()
            .map_err(|e| corrupt("worker", id, e))?,
        version: u64::try_from(version).map_err(|e| corrupt("worker", id, e))?,
    })
}

pub(crate) fn decode_worker(id: &str, version: i64, doc: &str) -> Result<Worker> {
    let mut worker: Worker = WORKER.decode(id, doc)?;
    worker.version = u64::try_from(version).map_err(|e| corrupt("worker", id, e))?;
    Ok(worker)
}

/// The document and indexed columns of a worker about to be written at `version`, and the
/// worker as it will be once written (`saved`: the caller's worker at `version`), which a
/// successful write returns: the one copy of the worker a write makes.
pub(crate) struct WorkerRow {
    pub(crate) id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) doc: String,
    pub(crate) version: i64,
    pub(crate) saved: Worker,
}

pub(crate) fn encode_worker(worker: &Worker, version: u64) -> Result<WorkerRow> {
    let id = worker.id.to_string();
    let version_column = i64::try_from(version).map_err(|e| corrupt("worker", &id, e))?;
    let mut saved = worker.clone();
    saved.version = version;
    let doc = WORKER.encode(&id, &saved)?;
    Ok(WorkerRow {
        instance_id: worker.instance_id.as_ref().map(ToString::to_string),
        doc,
        version: version_column,
        id,
        saved,
    })
}

pub(crate) fn encode_settings(settings: &RuntimeSettings) -> Result<String> {
    SETTINGS.encode(RUNTIME_SETTINGS_KEY, settings)
}

pub(crate) fn decode_settings(doc: &str) -> Result<RuntimeSettings> {
    SETTINGS.decode(RUNTIME_SETTINGS_KEY, doc)
}

/// Sessions are the API's documents; the store only versions them. `key` is a hash, safe to
/// name in errors.
pub(crate) fn encode_session(key: &str, doc: &str) -> Result<String> {
    SESSION.stamp(key, doc)
}

/// The session document as the API wrote it (upgraded, without `schema_version`).
pub(crate) fn decode_session(key: &str, doc: &str) -> Result<String> {
    let map = SESSION.upgrade(key, doc)?;
    serde_json::to_string(&map).map_err(|e| corrupt("session", key, e))
}

pub(crate) fn encode_event(event: &Event) -> Result<String> {
    serde_json::to_string(event).map_err(|e| corrupt("event", event.id, e))
}

pub(crate) fn decode_event(seq: i64, body: &str) -> Result<StoredEvent> {
    let event: Event = serde_json::from_str(body).map_err(|e| corrupt("event", seq, e))?;
    Ok(StoredEvent {
        seq: u64::try_from(seq).map_err(|e| corrupt("event", seq, e))?,
        event,
    })
}

pub(crate) fn encode_lab(lab: &LabRecord) -> Result<String> {
    serde_json::to_string(lab).map_err(|e| corrupt("lab", &lab.lab_id, e))
}

pub(crate) fn decode_lab(id: &str, doc: &str) -> Result<LabRecord> {
    serde_json::from_str(doc).map_err(|e| corrupt("lab", id, e))
}

/// The escaped `LIKE` pattern of a worker text filter (`%`, `_` and `\` are literal).
pub(crate) fn like_pattern(text: &str) -> String {
    let escaped = text
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// A metrics value and whether it counts (NaN and infinities do not).
pub(crate) fn sample_pair(v: Option<f64>) -> (f64, i64) {
    match v {
        Some(x) if x.is_finite() => (x, 1),
        _ => (0.0, 0),
    }
}

/// The sums of the samples of one (worker, bucket) in a batch.
#[derive(Default)]
pub(crate) struct BucketSums {
    pub(crate) samples: i64,
    /// CPU, memory, CML CPU, CML memory: (sum, count of samples that had a value).
    pub(crate) sums: [(f64, i64); 4],
    pub(crate) nodes_max: Option<i64>,
}

/// A batch of metrics samples summed per (worker id, bucket start): one upsert per row, in
/// key order (an upsert may not touch one row twice, and two concurrent batches locking rows
/// in one order cannot deadlock).
pub(crate) fn bucket_sums(
    samples: &[(WorkerId, DateTime<Utc>, crate::MetricsSample)],
    bucket_ms: i64,
) -> std::collections::BTreeMap<(String, i64), BucketSums> {
    let mut buckets: std::collections::BTreeMap<(String, i64), BucketSums> =
        std::collections::BTreeMap::new();
    for (worker, at, s) in samples {
        let bucket = ms(*at).div_euclid(bucket_ms) * bucket_ms;
        let b = buckets.entry((worker.to_string(), bucket)).or_default();
        b.samples += 1;
        let values = [
            s.cpu_percent,
            s.memory_percent,
            s.cml_cpu_percent,
            s.cml_memory_percent,
        ];
        for (slot, v) in b.sums.iter_mut().zip(values) {
            let (x, n) = sample_pair(v);
            slot.0 += x;
            slot.1 += n;
        }
        if let Some(n) = s.running_nodes.and_then(|n| i64::try_from(n).ok()) {
            b.nodes_max = Some(b.nodes_max.map_or(n, |m| m.max(n)));
        }
    }
    buckets
}

/// The upsert's conflict clause: a bucket already stored adds the batch's sums to its own.
pub(crate) const METRICS_UPSERT: &str = "ON CONFLICT (worker_id, bucket_ms) DO UPDATE SET \
     samples = metrics.samples + excluded.samples, \
     cpu_sum = metrics.cpu_sum + excluded.cpu_sum, cpu_n = metrics.cpu_n + excluded.cpu_n, \
     mem_sum = metrics.mem_sum + excluded.mem_sum, mem_n = metrics.mem_n + excluded.mem_n, \
     cml_cpu_sum = metrics.cml_cpu_sum + excluded.cml_cpu_sum, cml_cpu_n = metrics.cml_cpu_n + excluded.cml_cpu_n, \
     cml_mem_sum = metrics.cml_mem_sum + excluded.cml_mem_sum, cml_mem_n = metrics.cml_mem_n + excluded.cml_mem_n, \
     nodes_max = CASE WHEN excluded.nodes_max IS NULL THEN metrics.nodes_max \
                      WHEN metrics.nodes_max IS NULL OR excluded.nodes_max > metrics.nodes_max THEN excluded.nodes_max \
                      ELSE metrics.nodes_max END";

/// Rows in one page of events (0: the default of 1,000; at most 10,000).
pub(crate) fn event_limit(limit: u32) -> i64 {
    if limit == 0 {
        1000
    } else {
        i64::from(limit.min(10_000))
    }
}
