//! The event bus: stamps [`EventKind`]s into CloudEvents, appends the persistent ones to the
//! event log, and broadcasts all of them to live subscribers (SSE).
//!
//! Subscribers get a bounded `broadcast` receiver: one that falls behind sees `Lagged` and
//! should reconnect from the log (`Last-Event-ID`) — a slow client never slows the others.
//!
//! Two ways to feed subscribers: **local** (one process: every published event is broadcast
//! as it is stored) and **tailed** (several replicas on PostgreSQL: stored events reach the
//! broadcast only through [`EventBus::deliver_logged`], called by the replica's tailer of the
//! event log, so every replica broadcasts every replica's events in log order; transient
//! events, which are not stored, are broadcast locally).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ccm_domain::{Event, EventKind, WorkerId};
use ccm_store::Store;
use tokio::sync::broadcast;

use crate::clock::Clock;

/// Events a subscriber may fall behind by before it is told it lagged.
pub const BUS_CAPACITY: usize = 16_384;

/// One event as subscribers see it.
#[derive(Debug, Clone)]
pub struct BusEvent {
    /// Position in the event log (`None` for transient events, which are not stored).
    pub seq: Option<u64>,
    /// The event.
    pub event: Arc<Event>,
}

/// Publishes events: log first, then live subscribers.
#[derive(Clone)]
pub struct EventBus {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    source: Arc<str>,
    tx: broadcast::Sender<BusEvent>,
    /// Stored events are broadcast by a tailer of the log, not on publish.
    tailed: Arc<AtomicBool>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("source", &self.source)
            .field("subscribers", &self.tx.receiver_count())
            .finish()
    }
}

impl EventBus {
    /// A bus writing to `store`, stamping events with `source` (e.g. `/ccm/engine`).
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, source: &str) -> Self {
        let (tx, _) = broadcast::channel(BUS_CAPACITY);
        Self {
            store,
            clock,
            source: source.into(),
            tx,
            tailed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// From now on, stored events reach subscribers only through [`Self::deliver_logged`]
    /// (a tailer of the event log feeds them, in log order, from every replica).
    pub fn set_tailed(&self) {
        self.tailed.store(true, Ordering::SeqCst);
    }

    /// Whether stored events come from a tailer.
    pub fn is_tailed(&self) -> bool {
        self.tailed.load(Ordering::SeqCst)
    }

    /// Broadcasts events read from the log (the tailer), in log order.
    pub fn deliver_logged(&self, events: impl IntoIterator<Item = (u64, Event)>) {
        for (seq, event) in events {
            let _ = self.tx.send(BusEvent {
                seq: Some(seq),
                event: Arc::new(event),
            });
        }
    }

    /// Broadcasts events already stored (or transient) with their positions. Stored ones are
    /// left to the tailer when the bus is tailed.
    pub fn deliver(&self, events: Vec<Event>, seqs: Vec<Option<u64>>) {
        let tailed = self.is_tailed();
        for (event, seq) in events
            .into_iter()
            .zip(seqs.into_iter().chain(std::iter::repeat(None)))
        {
            tracing::debug!(
                r#type = event.type_name(),
                subject = event.subject.as_deref().unwrap_or(""),
                "event"
            );
            metrics::counter!(crate::metrics::EVENTS).increment(1);
            if tailed && seq.is_some() {
                continue;
            }
            // No subscriber is not an error.
            let _ = self.tx.send(BusEvent {
                seq,
                event: Arc::new(event),
            });
        }
    }

    /// A new live subscription (events published from now on).
    pub fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.tx.subscribe()
    }

    /// Live subscribers.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Wraps `kinds` about `worker` in CloudEvents stamped now.
    pub fn stamp(
        &self,
        worker: Option<WorkerId>,
        kinds: impl IntoIterator<Item = EventKind>,
    ) -> Vec<Event> {
        let now = self.clock.now();
        kinds
            .into_iter()
            .map(|k| Event::new(&self.source, worker, k, now))
            .collect()
    }

    /// Stamps and publishes events about one worker.
    pub async fn emit(&self, worker: Option<WorkerId>, kinds: impl IntoIterator<Item = EventKind>) {
        let events = self.stamp(worker, kinds);
        self.publish(events).await;
    }

    /// Appends the persistent events to the log and broadcasts all of them. A failing log is
    /// logged and the events are still broadcast: live views keep working while the database
    /// is sick.
    pub async fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let seqs = match self.store.append(&events).await {
            Ok(seqs) => seqs,
            Err(err) => {
                tracing::error!(error = %err, count = events.len(), "could not append events to the log");
                metrics::counter!(crate::metrics::EVENTS_LOST).increment(events.len() as u64);
                vec![None; events.len()]
            }
        };
        self.deliver(events, seqs);
    }
}
