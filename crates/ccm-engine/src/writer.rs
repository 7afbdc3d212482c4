//! Batched worker writes.
//!
//! Polls produce a write per worker per cycle (10,000 per cycle for a large fleet). Writing
//! each in its own transaction would cost one fsync each; the writer instead collects
//! mutations for up to `write_interval` or `write_batch` items, loads the workers in one query,
//! applies the mutations in order, and saves the workers **with their events in one
//! transaction** ([`Store::save_changes`]), then delivers the events to live subscribers.
//!
//! - **Fencing**: each mutation carries the lease it was produced under
//!   ([`crate::ownership::Ownership::fence`]); the store refuses a write whose lease was taken
//!   over or expired, in the same transaction. Refused poll results are dropped and counted
//!   (`ccm_fencing_refusals_total`), never retried; commands in the same batch are not fenced
//!   and are saved on their own.
//! - **Conflicts** (someone else wrote the worker meanwhile) fall back to reload-and-reapply for
//!   that worker only.
//! - **Nothing is dropped on a database failure**: a batch whose load or save fails is kept
//!   and tried again at the next flush (up to [`MAX_ATTEMPTS`] times, then failed to its
//!   callers and counted in `ccm_worker_writes_failed_total`).
//! - **Back-pressure**: the queue is bounded (`write_queue`); submitting waits while it is
//!   full, so a slow database slows the polls instead of growing memory.
//!
//! On shutdown the queue is drained: nothing accepted is lost. The writer runs under the
//! [`Supervisor`]: the queue lives outside the task, so when a mutation panics the batch in
//! hand is lost but the task is restarted on the same queue and every handle stays valid.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ccm_domain::{EventKind, Worker, WorkerId};
use ccm_store::{Fence, MetricsSample, Store, StoreError, WorkerWrite, WriteOutcome};
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::bus::EventBus;
use crate::supervisor::{Criticality, Supervisor};

/// A change to apply to a worker. It may run more than once (after a conflict), so it must be
/// a pure function of the worker it is given.
pub(crate) type Mutation = Arc<dyn Fn(&mut Worker) -> Vec<EventKind> + Send + Sync>;

/// Called with every worker the writer saved (the engine refreshes its cache).
pub(crate) type OnSaved = Arc<dyn Fn(&Worker) + Send + Sync>;

/// How many flushes a batch is tried in before its items fail (database failures only).
pub(crate) const MAX_ATTEMPTS: u32 = 5;

struct Item {
    id: WorkerId,
    mutation: Mutation,
    fence: Option<Fence>,
    sample: Option<(DateTime<Utc>, MetricsSample)>,
    done: Option<oneshot::Sender<Result<Worker, String>>>,
    attempts: u32,
}

enum Msg {
    Item(Item),
    Barrier(oneshot::Sender<()>),
}

/// Sends mutations to the writer task.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    tx: mpsc::Sender<Msg>,
}

impl WriterHandle {
    /// Queues a mutation (waits while the queue is full).
    pub(crate) async fn submit(&self, id: WorkerId, mutation: Mutation, fence: Option<Fence>) {
        let _ = self
            .tx
            .send(Msg::Item(Item {
                id,
                mutation,
                fence,
                sample: None,
                done: None,
                attempts: 0,
            }))
            .await;
    }

    /// Queues a mutation and a metrics history sample, saved together.
    pub(crate) async fn submit_with_sample(
        &self,
        id: WorkerId,
        mutation: Mutation,
        fence: Option<Fence>,
        at: DateTime<Utc>,
        sample: MetricsSample,
    ) {
        let _ = self
            .tx
            .send(Msg::Item(Item {
                id,
                mutation,
                fence,
                sample: Some((at, sample)),
                done: None,
                attempts: 0,
            }))
            .await;
    }

    /// Waits until everything queued before this call is saved (or kept for a retry).
    pub(crate) async fn barrier(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Barrier(done)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Queues a mutation and waits until it is saved (or failed).
    pub(crate) async fn apply(
        &self,
        id: WorkerId,
        mutation: Mutation,
        fence: Option<Fence>,
    ) -> Result<Worker, String> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Msg::Item(Item {
                id,
                mutation,
                fence,
                sample: None,
                done: Some(done),
                attempts: 0,
            }))
            .await
            .map_err(|_| "the writer has stopped".to_owned())?;
        rx.await.map_err(|_| "the writer has stopped".to_owned())?
    }
}

/// Starts the writer as the supervised task `writer`, with a queue of `capacity` messages. It
/// ends when every handle is dropped and the queue is empty.
pub(crate) fn spawn(
    store: Arc<dyn Store>,
    bus: EventBus,
    on_saved: OnSaved,
    limits: (usize, Duration, usize),
    supervisor: &Supervisor,
) -> WriterHandle {
    let (batch, interval, capacity) = limits;
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let queue = Arc::new(tokio::sync::Mutex::new(rx));
    supervisor.supervise("writer", Criticality::Critical, None, move || {
        run(
            queue.clone(),
            store.clone(),
            bus.clone(),
            on_saved.clone(),
            batch.max(1),
            interval,
        )
    });
    WriterHandle { tx }
}

async fn run(
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Msg>>>,
    store: Arc<dyn Store>,
    bus: EventBus,
    on_saved: OnSaved,
    batch: usize,
    interval: Duration,
) {
    // Held for the life of this run; a panicking run releases it for the next.
    let mut rx = queue.lock_owned().await;
    let mut buf: Vec<Item> = Vec::with_capacity(batch);
    let mut barriers = Vec::new();
    let mut open = true;
    while open || !buf.is_empty() {
        // Items kept from a failed flush wait one interval; otherwise wait for a message.
        if buf.is_empty() {
            match rx.recv().await {
                Some(Msg::Item(item)) => buf.push(item),
                Some(Msg::Barrier(done)) => barriers.push(done),
                None => break,
            }
        }
        let deadline = tokio::time::Instant::now() + interval;
        while open && buf.len() < batch && barriers.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Msg::Item(item))) => buf.push(item),
                Ok(Some(Msg::Barrier(done))) => barriers.push(done),
                Ok(None) => open = false,
                Err(_) => break,
            }
        }
        let items = std::mem::take(&mut buf);
        buf = flush(items, store.as_ref(), &bus, &on_saved).await;
        for done in barriers.drain(..) {
            let _ = done.send(());
        }
    }
    for done in barriers {
        let _ = done.send(());
    }
}

/// One worker's items in a flush.
struct Group {
    id: WorkerId,
    items: Vec<Item>,
}

impl Group {
    /// The lease the group's write is fenced by: the newest token among its poll results.
    fn fence(&self) -> Option<Fence> {
        self.items
            .iter()
            .filter_map(|i| i.fence.clone())
            .max_by_key(|f| f.token)
    }

    /// Applies every item's mutation; the events they caused.
    fn apply(&self, worker: &mut Worker) -> Vec<EventKind> {
        let mut evs = Vec::new();
        for item in &self.items {
            evs.extend((item.mutation)(worker));
        }
        evs
    }
}

/// Saves one batch; returns the items to try again at the next flush.
async fn flush(
    items: Vec<Item>,
    store: &dyn Store,
    bus: &EventBus,
    on_saved: &OnSaved,
) -> Vec<Item> {
    if items.is_empty() {
        return Vec::new();
    }
    let started = tokio::time::Instant::now();
    // Group by worker, keeping order.
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<WorkerId, usize> = HashMap::new();
    for item in items {
        let at = *index.entry(item.id).or_insert_with(|| {
            groups.push(Group {
                id: item.id,
                items: Vec::new(),
            });
            groups.len() - 1
        });
        groups[at].items.push(item);
    }
    let ids: Vec<WorkerId> = groups.iter().map(|g| g.id).collect();
    let loaded = match store.get_many(&ids).await {
        Ok(ws) => ws,
        Err(err) => {
            tracing::warn!(error = %err, items = groups.len(), "writer could not load workers; the batch is kept for the next flush");
            return keep(groups, &err);
        }
    };
    let mut by_id: HashMap<WorkerId, Worker> = loaded.into_iter().map(|w| (w.id, w)).collect();
    let mut writes = Vec::with_capacity(groups.len());
    let mut present = Vec::with_capacity(groups.len());
    for group in groups {
        let Some(mut worker) = by_id.remove(&group.id) else {
            let missing = format!("worker {} not found", group.id);
            finish(group, &Err(missing));
            continue;
        };
        let events = bus.stamp(Some(group.id), group.apply(&mut worker));
        writes.push(WorkerWrite {
            worker,
            events,
            fence: group.fence(),
        });
        present.push(group);
    }
    let outcomes = match store.save_changes(&writes).await {
        Ok(o) => o,
        Err(err) => {
            tracing::warn!(error = %err, items = present.len(), "batched write failed; the batch is kept for the next flush");
            return keep(present, &err);
        }
    };
    let mut samples = Vec::new();
    let mut retry = Vec::new();
    let mut saved_count = 0u64;
    for ((mut group, write), outcome) in present.into_iter().zip(writes).zip(outcomes) {
        let result = match outcome {
            WriteOutcome::Saved { worker, seqs } => {
                on_saved(&worker);
                bus.deliver(write.events, seqs);
                Ok(worker)
            }
            WriteOutcome::Fenced => {
                group = drop_fenced(group);
                if group.items.is_empty() {
                    continue;
                }
                match one_by_one(&group, store, bus, on_saved).await {
                    Ok(r) => r,
                    Err(err) => {
                        retry.extend(keep(vec![group], &err));
                        continue;
                    }
                }
            }
            WriteOutcome::Failed(_) => match one_by_one(&group, store, bus, on_saved).await {
                Ok(r) => r,
                Err(err) => {
                    retry.extend(keep(vec![group], &err));
                    continue;
                }
            },
        };
        if let Ok(w) = &result {
            saved_count += 1;
            samples.extend(
                group
                    .items
                    .iter()
                    .filter_map(|i| i.sample.map(|(at, s)| (w.id, at, s))),
            );
        }
        finish(group, &result);
    }
    if let Err(err) = store.record_metrics_many(&samples).await {
        tracing::warn!(error = %err, "could not record metrics history");
    }
    metrics::histogram!(crate::metrics::WRITER_FLUSH_SECONDS)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(crate::metrics::WORKER_WRITES).increment(saved_count);
    retry
}

/// Drops the group's fenced items (their lease is gone: counted, answered, never retried);
/// what is left (commands) is saved without a fence.
fn drop_fenced(group: Group) -> Group {
    let (fenced, rest): (Vec<Item>, Vec<Item>) =
        group.items.into_iter().partition(|i| i.fence.is_some());
    metrics::counter!(crate::metrics::FENCING_REFUSALS).increment(fenced.len() as u64);
    tracing::info!(worker = %group.id, refused = fenced.len(), "poll results refused: their lease was taken over or expired");
    for item in fenced {
        if let Some(done) = item.done {
            let _ = done.send(Err(
                "the lease this result was produced under is no longer held".into(),
            ));
        }
    }
    Group {
        id: group.id,
        items: rest,
    }
}

/// Reloads and reapplies one worker's items until saved (a conflict retries; a refused fence
/// drops the poll results and saves the rest). `Err`: the database failed (keep the items).
async fn one_by_one(
    group: &Group,
    store: &dyn Store,
    bus: &EventBus,
    on_saved: &OnSaved,
) -> Result<Result<Worker, String>, StoreError> {
    let mut fence = group.fence();
    let mut last = String::new();
    for _ in 0..ccm_store::UPDATE_ATTEMPTS {
        let Some(mut worker) = store.get(group.id).await? else {
            return Ok(Err(format!("worker {} not found", group.id)));
        };
        let kinds = if fence.is_some() {
            group.apply(&mut worker)
        } else {
            let mut evs = Vec::new();
            for item in group.items.iter().filter(|i| i.fence.is_none()) {
                evs.extend((item.mutation)(&mut worker));
            }
            evs
        };
        let write = WorkerWrite {
            events: bus.stamp(Some(group.id), kinds),
            worker,
            fence: fence.clone(),
        };
        let events = write.events.clone();
        let outcome = store.save_changes(std::slice::from_ref(&write)).await?;
        match outcome.into_iter().next() {
            Some(WriteOutcome::Saved { worker, seqs }) => {
                on_saved(&worker);
                bus.deliver(events, seqs);
                return Ok(Ok(worker));
            }
            Some(WriteOutcome::Fenced) => {
                let refused = group.items.iter().filter(|i| i.fence.is_some()).count();
                metrics::counter!(crate::metrics::FENCING_REFUSALS).increment(refused as u64);
                if group.items.iter().all(|i| i.fence.is_some()) {
                    return Ok(Err(
                        "the lease this result was produced under is no longer held".into(),
                    ));
                }
                fence = None; // save the commands alone
            }
            Some(WriteOutcome::Failed(e @ StoreError::Conflict { .. })) => {
                tracing::debug!(worker = %group.id, "update conflict, retrying");
                last = e.to_string();
            }
            Some(WriteOutcome::Failed(e)) => {
                tracing::error!(worker = %group.id, error = %e, "could not save worker changes");
                metrics::counter!(crate::metrics::WORKER_WRITES_FAILED).increment(1);
                return Ok(Err(e.to_string()));
            }
            None => return Ok(Err("the store answered nothing".into())),
        }
    }
    metrics::counter!(crate::metrics::WORKER_WRITES_FAILED).increment(1);
    Ok(Err(last))
}

/// Keeps groups for the next flush after a database failure; items past [`MAX_ATTEMPTS`] fail.
fn keep(groups: Vec<Group>, err: &StoreError) -> Vec<Item> {
    metrics::counter!(crate::metrics::WRITER_RETRIES).increment(1);
    let mut kept = Vec::new();
    for group in groups {
        for mut item in group.items {
            item.attempts += 1;
            if item.attempts >= MAX_ATTEMPTS {
                metrics::counter!(crate::metrics::WORKER_WRITES_FAILED).increment(1);
                tracing::error!(worker = %item.id, error = %err, "worker change dropped after {MAX_ATTEMPTS} failed attempts");
                if let Some(done) = item.done {
                    let _ = done.send(Err(err.to_string()));
                }
            } else {
                kept.push(item);
            }
        }
    }
    kept
}

/// Answers the group's waiting callers.
fn finish(group: Group, result: &Result<Worker, String>) {
    for item in group.items {
        if let Some(done) = item.done {
            let _ = done.send(result.clone());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use ccm_domain::worker::{Ami, NewWorker};
    use ccm_domain::{Actor, AmiId, InstanceType, Region};
    use ccm_store::SqliteStore;

    use super::*;
    use crate::clock::{Clock, TokioClock};
    use crate::supervisor::RestartPolicy;

    /// A provisioned worker, not yet stored.
    pub(crate) fn new_worker(now: DateTime<Utc>) -> Worker {
        let new = NewWorker {
            name: "w1".into(),
            region: Region::parse("eu-west-1").expect("region"),
            instance_type: InstanceType::parse("m5zn.metal").expect("type"),
            ami: Ami {
                id: AmiId::parse("ami-0123456789abcdef0").expect("ami"),
                name: None,
                owner: None,
            },
            tags: BTreeMap::new(),
        };
        Worker::provision(new, Actor::system("test"), now).0
    }

    /// A store on a file, whose writers wait `busy_timeout` for the lock, and a second
    /// connection to the same file that can take the write lock away from it.
    async fn file_store(
        dir: &tempfile::TempDir,
        busy_timeout: Duration,
    ) -> (Arc<dyn Store>, sqlx::SqliteConnection) {
        use sqlx::Connection as _;
        let path = dir.path().join("ccm.db");
        let config = ccm_store::StoreConfig {
            path: Some(path.clone()),
            busy_timeout,
            ..ccm_store::StoreConfig::default()
        };
        let store = SqliteStore::open(&config).await.expect("open the store");
        let locker = sqlx::SqliteConnection::connect_with(
            &sqlx::sqlite::SqliteConnectOptions::new().filename(&path),
        )
        .await
        .expect("a second connection");
        (Arc::new(store), locker)
    }

    fn writer_on(
        store: &Arc<dyn Store>,
        limits: (usize, Duration, usize),
    ) -> (WriterHandle, Supervisor) {
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
        let bus = EventBus::new(store.clone(), clock, "/test");
        let sup = Supervisor::new(RestartPolicy::new(
            Duration::from_millis(10),
            Duration::from_millis(20),
            Duration::from_secs(60),
        ));
        let writer = spawn(store.clone(), bus, Arc::new(|_| {}), limits, &sup);
        (writer, sup)
    }

    fn rename(name: &'static str) -> Mutation {
        Arc::new(move |w: &mut Worker| {
            w.name = name.into();
            Vec::new()
        })
    }

    /// Checks the stored name, then stops the writer and its supervisor.
    async fn stop_and_check(
        writer: WriterHandle,
        sup: Supervisor,
        store: &Arc<dyn Store>,
        id: WorkerId,
        name: &str,
    ) {
        let stored = store.get(id).await.expect("read").expect("present");
        assert_eq!(stored.name, name);
        drop(writer);
        sup.cancel();
        assert!(
            sup.wait(Duration::from_secs(10)).await,
            "the writer should end"
        );
    }

    /// The database refuses writes (another process holds its write lock): the writer's flush
    /// fails, the batch is kept, the caller still waits, and once the database is back the same
    /// change is saved: nothing accepted is lost to a database failure.
    #[tokio::test]
    async fn a_batch_should_be_kept_when_the_database_fails_and_saved_when_it_is_back() {
        use sqlx::Executor as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, mut locker) = file_store(&dir, Duration::from_millis(20)).await;
        let worker = store.insert(&new_worker(Utc::now())).await.expect("insert");
        // A long interval: kept items are retried only when a barrier asks for a flush, so the
        // test decides how many attempts happen (fewer than MAX_ATTEMPTS).
        let (writer, sup) = writer_on(&store, (10, Duration::from_secs(2), 100));

        locker
            .execute("BEGIN EXCLUSIVE")
            .await
            .expect("take the write lock");
        let pending = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .apply(worker.id, rename("kept-across-failure"), None)
                    .await
            }
        });
        // The barrier is answered after the flush that carried the change, which failed.
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(10), writer.barrier())
                .await
                .expect("the writer never answered a barrier while the database was locked");
        }
        assert!(
            !pending.is_finished(),
            "the change was answered while the database refused every write: {:?}",
            pending.await
        );
        let unchanged = store.get(worker.id).await.expect("read").expect("present");
        assert_eq!(unchanged.name, "w1", "nothing can have been saved yet");

        locker.execute("ROLLBACK").await.expect("release the lock");
        writer.barrier().await;
        let saved = tokio::time::timeout(Duration::from_secs(10), pending)
            .await
            .expect("the kept change was never saved after the database came back")
            .expect("task")
            .expect("saved");
        assert_eq!(saved.name, "kept-across-failure");
        stop_and_check(writer, sup, &store, worker.id, "kept-across-failure").await;
    }

    /// While the database is slow (the writer is stuck in a flush), the bounded queue fills and
    /// the next submitter waits instead of growing memory; when the database is back the
    /// waiting submitter goes on and every queued change is saved.
    #[tokio::test]
    async fn a_full_queue_should_make_submitters_wait_until_the_writer_drains_it() {
        use futures::FutureExt as _;
        use sqlx::Executor as _;
        const CAPACITY: usize = 4;
        let dir = tempfile::tempdir().expect("temp dir");
        // A long busy timeout: the writer's flush waits on the lock instead of failing.
        let (store, mut locker) = file_store(&dir, Duration::from_secs(60)).await;
        let worker = store.insert(&new_worker(Utc::now())).await.expect("insert");
        let (writer, sup) = writer_on(&store, (1, Duration::from_millis(1), CAPACITY));

        locker
            .execute("BEGIN EXCLUSIVE")
            .await
            .expect("take the write lock");
        writer.submit(worker.id, rename("first"), None).await;
        // Wait (bounded) until the writer has taken the first change and is stuck saving it.
        tokio::time::timeout(Duration::from_secs(10), async {
            while writer.tx.capacity() < CAPACITY {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the writer never took the first change");

        for i in 0..CAPACITY {
            assert!(
                writer
                    .submit(worker.id, rename("queued"), None)
                    .now_or_never()
                    .is_some(),
                "submit {i} of {CAPACITY} waited although the queue had room"
            );
        }
        let waiting = tokio::spawn({
            let writer = writer.clone();
            async move { writer.submit(worker.id, rename("last"), None).await }
        });
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(
            !waiting.is_finished(),
            "a submit into a full queue returned at once: the queue is not bounded"
        );
        assert_eq!(writer.tx.capacity(), 0);

        locker.execute("ROLLBACK").await.expect("release the lock");
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiting submitter never went on after the writer drained the queue")
            .expect("task");
        tokio::time::timeout(Duration::from_secs(10), writer.barrier())
            .await
            .expect("barrier");
        // Every queued change is saved, in order: the last one wins.
        stop_and_check(writer, sup, &store, worker.id, "last").await;
    }

    /// A mutation with a bug panics inside the writer: the writer is reported down, restarted,
    /// and what was queued meanwhile is still saved.
    #[tokio::test]
    async fn a_panicking_mutation_should_restart_the_writer_on_the_same_queue() {
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open_in_memory()
                .await
                .expect("in-memory store"),
        );
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
        let bus = EventBus::new(store.clone(), clock.clone(), "/test");
        let sup = Supervisor::new(RestartPolicy::new(
            Duration::from_millis(10),
            Duration::from_millis(20),
            Duration::from_secs(60),
        ));
        let mut changes = sup.changes();
        let writer = spawn(
            store.clone(),
            bus,
            Arc::new(|_| {}),
            (10, Duration::from_millis(5), 100),
            &sup,
        );
        let worker = store
            .insert(&new_worker(clock.now()))
            .await
            .expect("insert");
        assert!(worker.monitoring.idle_detection);

        writer
            .submit(
                worker.id,
                Arc::new(|_| panic!("a mutation with a bug")),
                None,
            )
            .await;
        tokio::time::timeout(Duration::from_secs(10), async {
            while sup.critical_down() != ["writer".to_owned()] {
                changes.changed().await.expect("supervisor alive");
            }
        })
        .await
        .expect("the writer was never reported down after a panic");

        let now = clock.now();
        let saved = tokio::time::timeout(
            Duration::from_secs(10),
            writer.apply(
                worker.id,
                Arc::new(move |w| w.set_idle_detection(false, &Actor::system("test"), now)),
                None,
            ),
        )
        .await
        .expect("a mutation queued while the writer was down was never applied: queue lost?")
        .expect("saved");
        assert!(!saved.monitoring.idle_detection);
        let status = sup
            .statuses()
            .into_iter()
            .find(|t| t.name == "writer")
            .expect("writer supervised");
        assert_eq!(
            status.state,
            crate::supervisor::TaskState::Running,
            "{status:?}"
        );
        assert_eq!(status.restarts, 1);
        assert!(
            status
                .last_failure
                .is_some_and(|f| f.contains("a mutation with a bug"))
        );
        drop(writer);
        sup.cancel();
        assert!(
            sup.wait(Duration::from_secs(10)).await,
            "the writer should end"
        );
    }
}
