//! [`BreakerRegistry`]: one circuit breaker per endpoint key, created on first use.
//!
//! A breaker is closed until `failure_threshold` consecutive attempts fail; then it is open and
//! rejects every attempt without calling the operation. After `open_for`, the first caller
//! turns it half-open and becomes the one probe; every other caller is rejected while the
//! probe runs. A successful (or benign) probe closes the breaker, a failed one re-opens it for
//! another `open_for`. A probe that ends without a verdict (cancelled, or cut short by its
//! caller's deadline) gives its slot to the next caller.
//!
//! Only the probe decides in half-open: late results of attempts that started while the
//! breaker was closed are ignored once it has opened.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::classify::ErrorClass;
use crate::config::BreakerConfig;
use crate::event::{Observer, ResilienceEvent};
use crate::metrics as metric;
use crate::telemetry::Notifier;

/// The state of one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls are rejected until `open_for` has passed.
    Open,
    /// One probe is (or may be) running; everyone else is rejected.
    HalfOpen,
}

impl BreakerState {
    /// Lowercase name (`closed`, `open`, `half_open`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One breaker as the API and the UI show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerSnapshot {
    /// The breaker key (a worker's base URL, `aws:REGION:SERVICE`).
    pub key: String,
    /// Its state.
    pub state: BreakerState,
    /// Consecutive failed attempts (0 after a success).
    pub consecutive_failures: u32,
    /// Wall-clock time the breaker last opened, while it is open or half-open.
    pub opened_at: Option<SystemTime>,
    /// Time until an open breaker lets a probe through (zero once due, and while half-open).
    pub retry_in: Option<Duration>,
}

/// An attempt refused by an open breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker is open")]
pub struct BreakerOpen {
    /// Time until a probe may be let through (zero while a probe is running).
    pub retry_in: Duration,
}

/// All breakers of the process, keyed by endpoint. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct BreakerRegistry {
    inner: Arc<Registry>,
}

#[derive(Debug)]
struct Registry {
    enabled: bool,
    threshold: u32,
    open_for: Duration,
    cells: DashMap<Arc<str>, Arc<Cell>>,
    /// Breakers not closed, for the `ccm_breakers_open` gauge.
    open: AtomicI64,
    notifier: Notifier,
}

#[derive(Debug)]
struct Cell {
    key: Arc<str>,
    state: Mutex<CellState>,
}

#[derive(Debug)]
struct CellState {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    probe_in_flight: bool,
    /// Removed from the registry: outcomes no longer change anything.
    removed: bool,
}

/// Permission for one attempt. Report its outcome with [`BreakerPermit::record`] (or
/// [`success`](BreakerPermit::success) / [`failure`](BreakerPermit::failure)); dropping it
/// unreported counts as no verdict.
#[derive(Debug)]
#[must_use = "report the attempt's outcome, or drop the permit to give no verdict"]
pub struct BreakerPermit {
    slot: Option<(Arc<Registry>, Arc<Cell>)>,
    probe: bool,
}

/// What an attempt tells the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The endpoint answered well (or benignly): resets the failure count, closes on a probe.
    Success,
    /// The endpoint failed: counts towards opening, re-opens on a probe.
    Failure,
}

impl From<ErrorClass> for Verdict {
    fn from(class: ErrorClass) -> Self {
        if class.is_failure() {
            Self::Failure
        } else {
            Self::Success
        }
    }
}

// === impl BreakerRegistry ===

impl BreakerRegistry {
    /// A registry as configured; events go to `observer`.
    pub fn new(config: &BreakerConfig, observer: Arc<dyn Observer>) -> Self {
        Self::with_notifier(config, Notifier::new(observer))
    }

    pub(crate) fn with_notifier(config: &BreakerConfig, notifier: Notifier) -> Self {
        Self {
            inner: Arc::new(Registry {
                enabled: config.enabled,
                threshold: config.failure_threshold.max(1),
                open_for: config.open_for,
                cells: DashMap::new(),
                open: AtomicI64::new(0),
                notifier,
            }),
        }
    }

    /// Whether breakers can reject at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Asks to make one attempt against `key`; the breaker is created if new.
    pub fn acquire(&self, key: &str) -> Result<BreakerPermit, BreakerOpen> {
        let reg = &self.inner;
        if !reg.enabled {
            return Ok(BreakerPermit {
                slot: None,
                probe: false,
            });
        }
        let cell = self.cell(key);
        let now = Instant::now();
        let mut half_opened = false;
        let decision = {
            let mut st = cell.state.lock();
            match st.state {
                BreakerState::Closed => Ok(false),
                BreakerState::Open => {
                    let due = st.opened_at.map_or(now, |at| at + reg.open_for);
                    if now >= due {
                        st.state = BreakerState::HalfOpen;
                        st.probe_in_flight = true;
                        half_opened = true;
                        Ok(true)
                    } else {
                        Err(BreakerOpen {
                            retry_in: due - now,
                        })
                    }
                }
                BreakerState::HalfOpen => {
                    if st.probe_in_flight {
                        Err(BreakerOpen {
                            retry_in: Duration::ZERO,
                        })
                    } else {
                        st.probe_in_flight = true;
                        Ok(true)
                    }
                }
            }
        };
        match decision {
            Ok(probe) => {
                if half_opened {
                    reg.notifier.emit(ResilienceEvent::BreakerHalfOpen {
                        key: cell.key.to_string(),
                    });
                }
                Ok(BreakerPermit {
                    slot: Some((Arc::clone(reg), cell)),
                    probe,
                })
            }
            Err(open) => {
                metrics::counter!(metric::BREAKER_REJECTED).increment(1);
                Err(open)
            }
        }
    }

    fn cell(&self, key: &str) -> Arc<Cell> {
        if let Some(cell) = self.inner.cells.get(key) {
            return Arc::clone(cell.value());
        }
        let key: Arc<str> = Arc::from(key);
        let entry = self.inner.cells.entry(Arc::clone(&key)).or_insert_with(|| {
            Arc::new(Cell {
                key,
                state: Mutex::new(CellState {
                    state: BreakerState::Closed,
                    consecutive_failures: 0,
                    opened_at: None,
                    probe_in_flight: false,
                    removed: false,
                }),
            })
        });
        Arc::clone(entry.value())
    }

    /// The state of `key`'s breaker (closed for a key never seen).
    pub fn state(&self, key: &str) -> BreakerState {
        self.inner
            .cells
            .get(key)
            .map_or(BreakerState::Closed, |cell| cell.state.lock().state)
    }

    /// The snapshot of `key`'s breaker, if it exists.
    pub fn snapshot_of(&self, key: &str) -> Option<BreakerSnapshot> {
        let cell = self.inner.cells.get(key).map(|c| Arc::clone(c.value()))?;
        Some(self.describe(&cell, Instant::now(), SystemTime::now()))
    }

    /// Every breaker, sorted by key.
    pub fn snapshot(&self) -> Vec<BreakerSnapshot> {
        let cells: Vec<Arc<Cell>> = self
            .inner
            .cells
            .iter()
            .map(|c| Arc::clone(c.value()))
            .collect();
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut out: Vec<_> = cells
            .iter()
            .map(|cell| self.describe(cell, now, wall))
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    fn describe(&self, cell: &Cell, now: Instant, wall: SystemTime) -> BreakerSnapshot {
        let st = cell.state.lock();
        let opened_at = match st.state {
            BreakerState::Closed => None,
            BreakerState::Open | BreakerState::HalfOpen => st
                .opened_at
                .and_then(|at| wall.checked_sub(now.saturating_duration_since(at))),
        };
        let retry_in = match st.state {
            BreakerState::Closed => None,
            BreakerState::HalfOpen => Some(Duration::ZERO),
            BreakerState::Open => Some(st.opened_at.map_or(Duration::ZERO, |at| {
                (at + self.inner.open_for).saturating_duration_since(now)
            })),
        };
        BreakerSnapshot {
            key: cell.key.to_string(),
            state: st.state,
            consecutive_failures: st.consecutive_failures,
            opened_at,
            retry_in,
        }
    }

    /// Breakers that exist (have been used).
    pub fn len(&self) -> usize {
        self.inner.cells.len()
    }

    /// Whether no breaker exists yet.
    pub fn is_empty(&self) -> bool {
        self.inner.cells.is_empty()
    }

    /// Breakers open or half-open now.
    pub fn open_count(&self) -> usize {
        usize::try_from(self.inner.open.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Forgets `key`'s breaker (a deleted worker). An attempt still running keeps its permit
    /// but its outcome no longer matters.
    pub fn remove(&self, key: &str) {
        if let Some((_, cell)) = self.inner.cells.remove(key) {
            let was_open = {
                let mut st = cell.state.lock();
                st.removed = true;
                st.state != BreakerState::Closed
            };
            if was_open {
                self.inner.adjust_open(-1);
            }
        }
    }

    /// Closes `key`'s breaker at once (an operator's reset); emits `BreakerClosed` if it was
    /// not closed.
    pub fn reset(&self, key: &str) {
        let Some(cell) = self.inner.cells.get(key).map(|c| Arc::clone(c.value())) else {
            return;
        };
        let was_open = {
            let mut st = cell.state.lock();
            let was_open = st.state != BreakerState::Closed;
            st.state = BreakerState::Closed;
            st.consecutive_failures = 0;
            st.opened_at = None;
            st.probe_in_flight = false;
            was_open
        };
        if was_open {
            self.inner.adjust_open(-1);
            self.inner.notifier.emit(ResilienceEvent::BreakerClosed {
                key: cell.key.to_string(),
            });
        }
    }
}

// === impl Registry ===

impl Registry {
    fn adjust_open(&self, delta: i64) {
        let now_open = self.open.fetch_add(delta, Ordering::Relaxed) + delta;
        metrics::gauge!(metric::BREAKERS_OPEN).set(now_open.max(0) as f64);
    }
}

// === impl BreakerPermit ===

impl BreakerPermit {
    /// Whether this attempt is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The attempt succeeded.
    pub fn success(self) {
        self.record(Verdict::Success, String::new);
    }

    /// The attempt failed; `reason` describes the failure (called only if the breaker opens).
    pub fn failure(self, reason: impl FnOnce() -> String) {
        self.record(Verdict::Failure, reason);
    }

    /// Reports the attempt's outcome; `reason` is called only if the breaker opens.
    pub fn record(mut self, verdict: Verdict, reason: impl FnOnce() -> String) {
        let Some((reg, cell)) = self.slot.take() else {
            return;
        };
        let now = Instant::now();
        enum Change {
            None,
            Opened { failures: u32, from_closed: bool },
            Closed,
        }
        let change = {
            let mut st = cell.state.lock();
            if st.removed {
                Change::None
            } else if self.probe {
                st.probe_in_flight = false;
                if st.state != BreakerState::HalfOpen {
                    // Reset or removed meanwhile: the probe no longer decides.
                    Change::None
                } else {
                    match verdict {
                        Verdict::Success => {
                            st.state = BreakerState::Closed;
                            st.consecutive_failures = 0;
                            st.opened_at = None;
                            Change::Closed
                        }
                        Verdict::Failure => {
                            st.state = BreakerState::Open;
                            st.consecutive_failures = st.consecutive_failures.saturating_add(1);
                            st.opened_at = Some(now);
                            Change::Opened {
                                failures: st.consecutive_failures,
                                from_closed: false,
                            }
                        }
                    }
                }
            } else if st.state != BreakerState::Closed {
                Change::None
            } else {
                match verdict {
                    Verdict::Success => {
                        st.consecutive_failures = 0;
                        Change::None
                    }
                    Verdict::Failure => {
                        st.consecutive_failures = st.consecutive_failures.saturating_add(1);
                        if st.consecutive_failures >= reg.threshold {
                            st.state = BreakerState::Open;
                            st.opened_at = Some(now);
                            Change::Opened {
                                failures: st.consecutive_failures,
                                from_closed: true,
                            }
                        } else {
                            Change::None
                        }
                    }
                }
            }
        };
        match change {
            Change::None => {}
            Change::Opened {
                failures,
                from_closed,
            } => {
                if from_closed {
                    reg.adjust_open(1);
                }
                reg.notifier.emit(ResilienceEvent::BreakerOpened {
                    key: cell.key.to_string(),
                    consecutive_failures: failures,
                    reason: reason(),
                });
            }
            Change::Closed => {
                reg.adjust_open(-1);
                reg.notifier.emit(ResilienceEvent::BreakerClosed {
                    key: cell.key.to_string(),
                });
            }
        }
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        // An unreported probe frees its slot so that the next caller can probe.
        if let Some((_, cell)) = self.slot.take()
            && self.probe
        {
            cell.state.lock().probe_in_flight = false;
        }
    }
}
