//! [`Bulkhead`]: a named concurrency limit with a bounded wait queue.
//!
//! `max_concurrent` callers hold a slot; up to `max_queue` more wait for one in arrival order
//! (tokio's semaphore is fair); one more is rejected at once with [`BulkheadFull`], so a burst
//! can never queue without bound. Waiting is cancel-safe: a dropped waiter leaves the queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::config::BulkheadConfig;
use crate::event::{Observer, ResilienceEvent};
use crate::metrics as metric;
use crate::telemetry::{self, Notifier};

/// Which of the process's shared bulkheads a call runs in. A call can only name a bulkhead
/// that [`Resilience`] has: a typo fails to compile instead of leaving the call unlimited.
///
/// ```compile_fail
/// // A name is not a bulkhead: this does not compile.
/// let call = ccm_resilience::Call::new("https://w1").bulkhead("lbas");
/// ```
///
/// [`Resilience`]: crate::Resilience
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BulkheadId {
    /// Polling CML workers (`[resilience.bulkheads.cml_poll]`).
    CmlPoll,
    /// Lab and licence work on CML workers (`[resilience.bulkheads.labs]`).
    Labs,
    /// Calls to AWS (`[resilience.bulkheads.aws]`).
    Aws,
}

/// Short name for [`BulkheadId::CmlPoll`] at call sites.
pub const CML_POLL: BulkheadId = BulkheadId::CmlPoll;
/// Short name for [`BulkheadId::Labs`] at call sites.
pub const LABS: BulkheadId = BulkheadId::Labs;
/// Short name for [`BulkheadId::Aws`] at call sites.
pub const AWS: BulkheadId = BulkheadId::Aws;

impl BulkheadId {
    /// Every shared bulkhead, in the order the API lists them.
    pub const ALL: [Self; 3] = [Self::CmlPoll, Self::Labs, Self::Aws];

    /// Its name: the config section, the metric label and the API's `name`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CmlPoll => "cml_poll",
            Self::Labs => "labs",
            Self::Aws => "aws",
        }
    }
}

impl std::fmt::Display for BulkheadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Largest accepted `max_concurrent` (tokio's semaphore allows far more; no host needs more).
pub(crate) const MAX_CONCURRENT: usize = 1_000_000;

/// A call refused because the bulkhead's queue was full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bulkhead {name} is full")]
pub struct BulkheadFull {
    /// The bulkhead's name.
    pub name: String,
}

/// A named concurrency limit. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: Arc<str>,
    max_concurrent: usize,
    max_queue: usize,
    /// `None`: unlimited (bulkheads switched off); calls are still counted.
    semaphore: Option<Arc<Semaphore>>,
    in_flight: AtomicUsize,
    queued: AtomicUsize,
    /// A rejection happened and no call got in since: the next rejection is not an event.
    rejecting: AtomicBool,
    notifier: Notifier,
    in_flight_metric: metrics::Key,
    queued_metric: metrics::Key,
    rejected_metric: metrics::Key,
}

/// A slot of a bulkhead, held until dropped.
#[derive(Debug)]
#[must_use = "the slot is released when the permit is dropped"]
pub struct BulkheadPermit {
    inner: Arc<Inner>,
    _permit: Option<OwnedSemaphorePermit>,
}

/// The name in the brief; the same type as [`BulkheadPermit`].
pub type Permit = BulkheadPermit;

/// One bulkhead as the API and the UI show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkheadSnapshot {
    /// Its name.
    pub name: String,
    /// Calls holding a slot.
    pub in_flight: usize,
    /// Calls waiting for a slot.
    pub queued: usize,
    /// Its concurrency limit (`usize::MAX` when unlimited).
    pub max_concurrent: usize,
    /// Its queue limit.
    pub max_queue: usize,
}

// === impl Bulkhead ===

impl Bulkhead {
    /// A bulkhead as configured; events go to `observer`.
    pub fn new(name: &str, config: &BulkheadConfig, observer: Arc<dyn Observer>) -> Self {
        Self::build(name, Some(config), Notifier::new(observer))
    }

    /// A bulkhead that never waits nor rejects, but counts calls in flight.
    pub fn unlimited(name: &str) -> Self {
        Self::build(
            name,
            None,
            Notifier::new(Arc::new(crate::event::NoopObserver)),
        )
    }

    pub(crate) fn build(name: &str, config: Option<&BulkheadConfig>, notifier: Notifier) -> Self {
        let (max_concurrent, max_queue, semaphore) = match config {
            Some(c) => {
                let max = c.max_concurrent.clamp(1, MAX_CONCURRENT);
                (max, c.max_queue, Some(Arc::new(Semaphore::new(max))))
            }
            None => (usize::MAX, 0, None),
        };
        let name: Arc<str> = Arc::from(name);
        Self {
            inner: Arc::new(Inner {
                in_flight_metric: telemetry::labelled(metric::BULKHEAD_IN_FLIGHT, "name", &name),
                queued_metric: telemetry::labelled(metric::BULKHEAD_QUEUED, "name", &name),
                rejected_metric: telemetry::labelled(metric::BULKHEAD_REJECTED, "name", &name),
                name,
                max_concurrent,
                max_queue,
                semaphore,
                in_flight: AtomicUsize::new(0),
                queued: AtomicUsize::new(0),
                rejecting: AtomicBool::new(false),
                notifier,
            }),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Takes a slot: at once if one is free, after waiting in the queue if the queue has room,
    /// otherwise fails at once with [`BulkheadFull`].
    pub async fn acquire(&self) -> Result<BulkheadPermit, BulkheadFull> {
        self.acquire_many(1).await
    }

    /// [`acquire`](Self::acquire) for a caller that needs `slots` of the bulkhead's
    /// `max_concurrent` at once (at least 1, at most `max_concurrent`), e.g. a worker's sync
    /// holding room for all the calls it may have in flight. It counts as one caller in flight
    /// and one in the queue; the queue stays in arrival order.
    pub async fn acquire_many(&self, slots: usize) -> Result<BulkheadPermit, BulkheadFull> {
        let inner = &self.inner;
        let Some(semaphore) = &inner.semaphore else {
            return Ok(self.admitted(None));
        };
        // `max_concurrent` is clamped to `MAX_CONCURRENT`, far below `u32::MAX`.
        let slots = u32::try_from(slots.clamp(1, inner.max_concurrent)).unwrap_or(1);
        match Arc::clone(semaphore).try_acquire_many_owned(slots) {
            Ok(permit) => return Ok(self.admitted(Some(permit))),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {}
        }
        if inner.queued.fetch_add(1, Ordering::AcqRel) >= inner.max_queue {
            inner.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(self.reject());
        }
        let queued = QueueSlot::enter(inner);
        let permit = Arc::clone(semaphore).acquire_many_owned(slots).await;
        drop(queued);
        match permit {
            Ok(permit) => Ok(self.admitted(Some(permit))),
            // The semaphore is never closed; treat it as full rather than panic.
            Err(_) => Err(self.reject()),
        }
    }

    /// Takes a slot only if one is free now (no queueing).
    pub fn try_acquire(&self) -> Result<BulkheadPermit, BulkheadFull> {
        let Some(semaphore) = &self.inner.semaphore else {
            return Ok(self.admitted(None));
        };
        match Arc::clone(semaphore).try_acquire_owned() {
            Ok(permit) => Ok(self.admitted(Some(permit))),
            Err(_) => Err(self.reject()),
        }
    }

    /// A slot if one is free now; no rejection is counted otherwise.
    pub(crate) fn try_admit(&self) -> Option<BulkheadPermit> {
        match &self.inner.semaphore {
            None => Some(self.admitted(None)),
            Some(semaphore) => Arc::clone(semaphore)
                .try_acquire_owned()
                .ok()
                .map(|permit| self.admitted(Some(permit))),
        }
    }

    fn admitted(&self, permit: Option<OwnedSemaphorePermit>) -> BulkheadPermit {
        let inner = &self.inner;
        let now = inner.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        telemetry::gauge(&inner.in_flight_metric).set(now as f64);
        if inner.rejecting.load(Ordering::Relaxed) {
            inner.rejecting.store(false, Ordering::Relaxed);
        }
        BulkheadPermit {
            inner: Arc::clone(inner),
            _permit: permit,
        }
    }

    fn reject(&self) -> BulkheadFull {
        let inner = &self.inner;
        telemetry::counter(&inner.rejected_metric).increment(1);
        if !inner.rejecting.swap(true, Ordering::AcqRel) {
            inner.notifier.emit(ResilienceEvent::BulkheadRejected {
                name: inner.name.to_string(),
                max_concurrent: inner.max_concurrent,
                max_queue: inner.max_queue,
            });
        }
        BulkheadFull {
            name: inner.name.to_string(),
        }
    }

    /// Calls holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Calls waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::Acquire)
    }

    /// The bulkhead's numbers now.
    pub fn snapshot(&self) -> BulkheadSnapshot {
        BulkheadSnapshot {
            name: self.inner.name.to_string(),
            in_flight: self.in_flight(),
            queued: self.queued(),
            max_concurrent: self.inner.max_concurrent,
            max_queue: self.inner.max_queue,
        }
    }
}

/// A place in the queue; leaves it when dropped (also when the waiter is cancelled).
struct QueueSlot<'a>(&'a Inner);

impl<'a> QueueSlot<'a> {
    fn enter(inner: &'a Inner) -> Self {
        // The caller already counted itself in `queued`.
        telemetry::gauge(&inner.queued_metric).set(inner.queued.load(Ordering::Relaxed) as f64);
        Self(inner)
    }
}

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        let now = self.0.queued.fetch_sub(1, Ordering::AcqRel) - 1;
        telemetry::gauge(&self.0.queued_metric).set(now as f64);
    }
}

// === impl BulkheadPermit ===

impl BulkheadPermit {
    /// The name of the bulkhead this slot belongs to.
    pub fn bulkhead(&self) -> &str {
        &self.inner.name
    }
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        let now = self.inner.in_flight.fetch_sub(1, Ordering::AcqRel) - 1;
        telemetry::gauge(&self.inner.in_flight_metric).set(now as f64);
    }
}
