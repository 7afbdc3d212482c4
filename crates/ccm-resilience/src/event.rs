//! State-change events and the [`Observer`] that receives them.
//!
//! The engine maps these events into the domain event catalogue. Every event is also logged
//! (`tracing`, target `ccm_resilience`) and counted in a Prometheus metric, whether or not an
//! observer listens.

use std::sync::Arc;

use parking_lot::Mutex;

/// Receives every state change of the policies. Called synchronously on the task whose call
/// caused the change, never under a lock of this crate: keep it quick (push to a channel).
pub trait Observer: Send + Sync {
    /// One state change happened.
    fn on_event(&self, event: &ResilienceEvent);
}

/// A state change of one of the policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResilienceEvent {
    /// A breaker opened: from closed after `consecutive_failures` failures, or again after a
    /// failed half-open probe.
    BreakerOpened {
        /// The breaker key.
        key: String,
        /// Consecutive failed attempts so far.
        consecutive_failures: u32,
        /// What the last failure was (from [`Classify::reason`](crate::Classify::reason) or
        /// the error class; "attempt timed out" for timeouts).
        reason: String,
    },
    /// An open breaker let its one probe through.
    BreakerHalfOpen {
        /// The breaker key.
        key: String,
    },
    /// A probe succeeded and the breaker closed (or an operator reset it).
    BreakerClosed {
        /// The breaker key.
        key: String,
    },
    /// The retry budget refused a retry; further refusals stay silent until it recovers.
    BudgetExhausted,
    /// The retry budget allows retries again, and refused none for a tenth of its window.
    BudgetRecovered,
    /// A bulkhead rejected a call because its queue was full.
    BulkheadRejected {
        /// The bulkhead's name.
        name: String,
        /// Its concurrency limit.
        max_concurrent: usize,
        /// Its queue limit.
        max_queue: usize,
    },
}

/// An observer that ignores every event (metrics and logs still happen).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl Observer for NoopObserver {
    fn on_event(&self, _event: &ResilienceEvent) {}
}

/// An observer that keeps every event in memory, for tests (here and in other crates).
#[derive(Debug, Default)]
pub struct RecordingObserver {
    events: Mutex<Vec<ResilienceEvent>>,
}

impl RecordingObserver {
    /// An empty recorder, ready to share.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The events so far, oldest first.
    pub fn events(&self) -> Vec<ResilienceEvent> {
        self.events.lock().clone()
    }

    /// Takes the events so far, leaving the recorder empty.
    pub fn take(&self) -> Vec<ResilienceEvent> {
        std::mem::take(&mut *self.events.lock())
    }
}

impl Observer for RecordingObserver {
    fn on_event(&self, event: &ResilienceEvent) {
        self.events.lock().push(event.clone());
    }
}

/// Adapts a closure into an [`Observer`].
pub struct FnObserver<F>(pub F);

impl<F> Observer for FnObserver<F>
where
    F: Fn(&ResilienceEvent) + Send + Sync,
{
    fn on_event(&self, event: &ResilienceEvent) {
        (self.0)(event);
    }
}

impl<F> std::fmt::Debug for FnObserver<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnObserver")
    }
}
