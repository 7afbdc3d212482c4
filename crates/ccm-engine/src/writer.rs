//! Batched worker writes.
//!
//! Polls produce a write per worker per cycle (10,000 per cycle for a large fleet). Writing
//! each in its own transaction would cost one fsync each; the writer instead collects
//! mutations for up to `write_interval` or `write_batch` items, loads the workers in one query,
//! applies the mutations in order, saves them in one transaction, and publishes the events of
//! the saved changes. A version conflict (someone else wrote the worker meanwhile) falls back
//! to reload-and-reapply for that worker only. On shutdown the queue is drained: nothing
//! accepted is lost.
//!
//! The writer runs under the [`Supervisor`]: the queue lives outside the task, so when a
//! mutation panics the batch in hand is lost but the task is restarted on the same queue and
//! every handle stays valid.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ccm_domain::{EventKind, Worker, WorkerId};
use ccm_store::{MetricsSample, Store, StoreError};
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::bus::EventBus;
use crate::supervisor::{Criticality, Supervisor};

/// A change to apply to a worker. It may run more than once (after a conflict), so it must be
/// a pure function of the worker it is given.
pub(crate) type Mutation = Arc<dyn Fn(&mut Worker) -> Vec<EventKind> + Send + Sync>;

/// Called with every worker the writer saved (the engine refreshes its cache).
pub(crate) type OnSaved = Arc<dyn Fn(&Worker) + Send + Sync>;

struct Item {
    id: WorkerId,
    mutation: Mutation,
    sample: Option<(DateTime<Utc>, MetricsSample)>,
    done: Option<oneshot::Sender<Result<Worker, String>>>,
}

enum Msg {
    Item(Item),
    Barrier(oneshot::Sender<()>),
}

/// Sends mutations to the writer task.
#[derive(Clone)]
pub(crate) struct WriterHandle {
    tx: mpsc::UnboundedSender<Msg>,
}

impl WriterHandle {
    /// Queues a mutation; returns at once.
    pub(crate) fn submit(&self, id: WorkerId, mutation: Mutation) {
        let _ = self.tx.send(Msg::Item(Item {
            id,
            mutation,
            sample: None,
            done: None,
        }));
    }

    /// Queues a mutation and a metrics history sample, saved together.
    pub(crate) fn submit_with_sample(
        &self,
        id: WorkerId,
        mutation: Mutation,
        at: DateTime<Utc>,
        sample: MetricsSample,
    ) {
        let _ = self.tx.send(Msg::Item(Item {
            id,
            mutation,
            sample: Some((at, sample)),
            done: None,
        }));
    }

    /// Waits until everything queued before this call is saved.
    pub(crate) async fn barrier(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Barrier(done)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Queues a mutation and waits until it is saved (or failed).
    pub(crate) async fn apply(&self, id: WorkerId, mutation: Mutation) -> Result<Worker, String> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Msg::Item(Item {
                id,
                mutation,
                sample: None,
                done: Some(done),
            }))
            .map_err(|_| "the writer has stopped".to_owned())?;
        rx.await.map_err(|_| "the writer has stopped".to_owned())?
    }
}

/// Starts the writer as the supervised task `writer`. It ends when every handle is dropped
/// and the queue is empty.
pub(crate) fn spawn(
    store: Arc<dyn Store>,
    bus: EventBus,
    on_saved: OnSaved,
    batch: usize,
    interval: Duration,
    supervisor: &Supervisor,
) -> WriterHandle {
    let (tx, rx) = mpsc::unbounded_channel();
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
    queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Msg>>>,
    store: Arc<dyn Store>,
    bus: EventBus,
    on_saved: OnSaved,
    batch: usize,
    interval: Duration,
) {
    // Held for the life of this run; a panicking run releases it for the next.
    let mut rx = queue.lock_owned().await;
    let mut buf = Vec::with_capacity(batch);
    let mut barriers = Vec::new();
    loop {
        // Wait for the first message, then gather for up to `interval`.
        match rx.recv().await {
            Some(Msg::Item(item)) => buf.push(item),
            Some(Msg::Barrier(done)) => barriers.push(done),
            None => break,
        }
        let deadline = tokio::time::Instant::now() + interval;
        while buf.len() < batch && barriers.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Msg::Item(item))) => buf.push(item),
                Ok(Some(Msg::Barrier(done))) => barriers.push(done),
                Ok(None) | Err(_) => break,
            }
        }
        flush(&mut buf, store.as_ref(), &bus, &on_saved).await;
        for done in barriers.drain(..) {
            let _ = done.send(());
        }
    }
    flush(&mut buf, store.as_ref(), &bus, &on_saved).await;
    for done in barriers {
        let _ = done.send(());
    }
}

async fn flush(buf: &mut Vec<Item>, store: &dyn Store, bus: &EventBus, on_saved: &OnSaved) {
    if buf.is_empty() {
        return;
    }
    let started = tokio::time::Instant::now();
    let items = std::mem::take(buf);
    // Group by worker, keeping order.
    let mut order: Vec<WorkerId> = Vec::new();
    let mut groups: HashMap<WorkerId, Vec<Item>> = HashMap::new();
    for item in items {
        groups
            .entry(item.id)
            .or_insert_with(|| {
                order.push(item.id);
                Vec::new()
            })
            .push(item);
    }
    let loaded = match store.get_many(&order).await {
        Ok(ws) => ws,
        Err(err) => {
            tracing::error!(error = %err, "writer could not load workers; retrying one by one");
            Vec::new()
        }
    };
    let mut by_id: HashMap<WorkerId, Worker> = loaded.into_iter().map(|w| (w.id, w)).collect();
    let mut changed = Vec::new();
    let mut events: HashMap<WorkerId, Vec<EventKind>> = HashMap::new();
    for id in &order {
        let Some(mut worker) = by_id.remove(id) else {
            continue;
        };
        let mut evs = Vec::new();
        for item in &groups[id] {
            evs.extend((item.mutation)(&mut worker));
        }
        events.insert(*id, evs);
        changed.push(worker);
    }
    let results = match store.update_many(&changed).await {
        Ok(r) => r,
        Err(err) => {
            tracing::warn!(error = %err, "batched write failed; retrying one by one");
            changed
                .iter()
                .map(|w| {
                    Err(StoreError::Conflict {
                        id: w.id,
                        expected: w.version,
                        found: None,
                    })
                })
                .collect()
        }
    };
    let mut saved: HashMap<WorkerId, Result<Worker, String>> = HashMap::new();
    let mut publish = Vec::new();
    for (worker, result) in changed.iter().zip(results) {
        match result {
            Ok(w) => {
                on_saved(&w);
                publish.extend(bus.stamp(Some(w.id), events.remove(&w.id).unwrap_or_default()));
                saved.insert(w.id, Ok(w));
            }
            Err(_) => {
                // Reload and reapply this worker's mutations alone.
                let group = &groups[&worker.id];
                let mut evs = Vec::new();
                let outcome = ccm_store::update_worker::<_, _, _, std::convert::Infallible>(
                    store,
                    worker.id,
                    |w| {
                        evs.clear();
                        for item in group {
                            evs.extend((item.mutation)(w));
                        }
                        Ok(())
                    },
                )
                .await;
                match outcome {
                    Ok((w, ())) => {
                        on_saved(&w);
                        publish.extend(bus.stamp(Some(w.id), std::mem::take(&mut evs)));
                        saved.insert(w.id, Ok(w));
                    }
                    Err(err) => {
                        tracing::error!(worker = %worker.id, error = %err, "could not save worker changes");
                        metrics::counter!(crate::metrics::WORKER_WRITES_FAILED).increment(1);
                        saved.insert(worker.id, Err(err.to_string()));
                    }
                }
            }
        }
    }
    let samples: Vec<_> = groups
        .iter()
        .filter(|(id, _)| matches!(saved.get(*id), Some(Ok(_))))
        .flat_map(|(id, items)| {
            items
                .iter()
                .filter_map(move |i| i.sample.map(|(at, s)| (*id, at, s)))
        })
        .collect();
    if let Err(err) = store.record_metrics_many(&samples).await {
        tracing::warn!(error = %err, "could not record metrics history");
    }
    metrics::histogram!(crate::metrics::WRITER_FLUSH_SECONDS)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(crate::metrics::WORKER_WRITES).increment(saved.len() as u64);
    bus.publish(publish).await;
    for id in order {
        let result = saved.remove(&id);
        for item in groups.remove(&id).unwrap_or_default() {
            if let Some(done) = item.done {
                let r = match &result {
                    Some(Ok(w)) => Ok(w.clone()),
                    Some(Err(e)) => Err(e.clone()),
                    None => Err(format!("worker {id} not found")),
                };
                let _ = done.send(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ccm_domain::worker::{Ami, NewWorker};
    use ccm_domain::{Actor, AmiId, InstanceType, Region};
    use ccm_store::SqliteStore;

    use super::*;
    use crate::clock::{Clock, TokioClock};
    use crate::supervisor::RestartPolicy;

    fn new_worker(now: DateTime<Utc>) -> Worker {
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
            10,
            Duration::from_millis(5),
            &sup,
        );
        let worker = store
            .insert(&new_worker(clock.now()))
            .await
            .expect("insert");
        assert!(worker.monitoring.idle_detection);

        writer.submit(worker.id, Arc::new(|_| panic!("a mutation with a bug")));
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
