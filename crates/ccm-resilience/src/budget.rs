//! [`RetryBudget`]: a fleet-wide cap on retries as a share of recent traffic.
//!
//! Every call deposits; every retry withdraws. A retry is allowed while
//! `retries_in_window + 1 <= ratio × calls_in_window + min_per_second × window`, so over any
//! window the retries add at most `ratio` of the calls plus a small floor. When every endpoint
//! fails at once, attempts stay within `(1 + ratio) × calls + floor` instead of
//! `max_attempts × calls`. The window slides in ten slots.
//!
//! The check and the withdrawal happen under one lock, so concurrent callers can never
//! overdraw the budget (tower's `TpsBudget` checks and withdraws in two steps).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::BudgetConfig;
use crate::event::{Observer, ResilienceEvent};
use crate::metrics as metric;
use crate::telemetry::Notifier;

const SLOTS: usize = 10;
/// Tolerance for float rounding (0.2 × 5 is 1.0000000000000002).
const EPSILON: f64 = 1e-9;

/// The fleet-wide retry budget. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    enabled: bool,
    ratio: f64,
    /// `min_per_second × window`, in retries.
    reserve: f64,
    slot: Duration,
    window: Mutex<Window>,
    exhausted: AtomicBool,
    notifier: Notifier,
}

#[derive(Debug)]
struct Window {
    calls: [u64; SLOTS],
    retries: [u64; SLOTS],
    index: usize,
    slot_start: Instant,
    total_calls: u64,
    total_retries: u64,
    /// When the budget last refused a retry.
    last_refusal: Option<Instant>,
}

/// The state of the budget at one moment, for the API and the UI.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetSnapshot {
    /// Whether the budget limits retries at all.
    pub enabled: bool,
    /// Calls counted in the current window.
    pub calls: u64,
    /// Retries counted in the current window.
    pub retries: u64,
    /// Retries allowed right now.
    pub available: u64,
    /// Whether the budget refused a retry and has not recovered since (recovery needs a
    /// retry available and no refusal for a tenth of the window).
    pub exhausted: bool,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self {
            calls: [0; SLOTS],
            retries: [0; SLOTS],
            index: 0,
            slot_start: now,
            total_calls: 0,
            total_retries: 0,
            last_refusal: None,
        }
    }

    /// Drops the slots that fell out of the window.
    fn advance(&mut self, now: Instant, slot: Duration) {
        let elapsed = now.saturating_duration_since(self.slot_start);
        if elapsed < slot {
            return;
        }
        let passed = elapsed.as_nanos() / slot.as_nanos().max(1);
        let steps = usize::try_from(passed).unwrap_or(usize::MAX).min(SLOTS);
        for _ in 0..steps {
            self.index = (self.index + 1) % SLOTS;
            self.total_calls -= self.calls[self.index];
            self.total_retries -= self.retries[self.index];
            self.calls[self.index] = 0;
            self.retries[self.index] = 0;
        }
        // Align the slot start to the slot grid, or restart it when far behind.
        self.slot_start = u32::try_from(passed)
            .ok()
            .and_then(|n| slot.checked_mul(n))
            .and_then(|d| self.slot_start.checked_add(d))
            .unwrap_or(now);
    }

    fn available(&self, ratio: f64, reserve: f64) -> f64 {
        reserve + ratio * self.total_calls as f64 - self.total_retries as f64
    }

    /// Whether an exhausted budget counts as recovered: a retry is available and none was
    /// refused for one slot (the hysteresis keeps a budget at its limit from flapping).
    fn recovered(&self, now: Instant, slot: Duration, ratio: f64, reserve: f64) -> bool {
        self.available(ratio, reserve) >= 1.0 - EPSILON
            && self
                .last_refusal
                .is_none_or(|t| now.saturating_duration_since(t) >= slot)
    }
}

impl RetryBudget {
    /// A budget as configured; events go to `observer`.
    pub fn new(config: &BudgetConfig, observer: Arc<dyn Observer>) -> Self {
        Self::with_notifier(config, Notifier::new(observer))
    }

    pub(crate) fn with_notifier(config: &BudgetConfig, notifier: Notifier) -> Self {
        let window = config.window.max(Duration::from_millis(10));
        let ratio = if config.ratio.is_finite() {
            config.ratio.max(0.0)
        } else {
            0.0
        };
        Self {
            inner: Arc::new(Inner {
                enabled: config.enabled,
                ratio,
                reserve: f64::from(config.min_per_second) * window.as_secs_f64(),
                slot: window / SLOTS as u32,
                window: Mutex::new(Window::new(Instant::now())),
                exhausted: AtomicBool::new(false),
                notifier,
            }),
        }
    }

    /// Whether the budget limits retries at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Counts one call (its first attempt) as traffic that earns retries.
    pub fn deposit(&self) {
        let inner = &*self.inner;
        if !inner.enabled {
            return;
        }
        let recovered = {
            let now = Instant::now();
            let mut w = inner.window.lock();
            w.advance(now, inner.slot);
            let i = w.index;
            w.calls[i] += 1;
            w.total_calls += 1;
            inner.exhausted.load(Ordering::Relaxed)
                && w.recovered(now, inner.slot, inner.ratio, inner.reserve)
        };
        if recovered && inner.exhausted.swap(false, Ordering::AcqRel) {
            inner.notifier.emit(ResilienceEvent::BudgetRecovered);
        }
    }

    /// Takes one retry from the budget; false when it is empty (the retry must not happen).
    pub fn try_withdraw(&self) -> bool {
        let inner = &*self.inner;
        if !inner.enabled {
            return true;
        }
        let (allowed, available, recovered) = {
            let now = Instant::now();
            let mut w = inner.window.lock();
            w.advance(now, inner.slot);
            let available = w.available(inner.ratio, inner.reserve);
            if available >= 1.0 - EPSILON {
                let recovered = inner.exhausted.load(Ordering::Relaxed)
                    && w.recovered(now, inner.slot, inner.ratio, inner.reserve);
                let i = w.index;
                w.retries[i] += 1;
                w.total_retries += 1;
                (true, available - 1.0, recovered)
            } else {
                w.last_refusal = Some(now);
                (false, available, false)
            }
        };
        metrics::gauge!(metric::BUDGET_AVAILABLE).set(available.max(0.0).floor());
        if allowed {
            if recovered && inner.exhausted.swap(false, Ordering::AcqRel) {
                inner.notifier.emit(ResilienceEvent::BudgetRecovered);
            }
        } else {
            metrics::counter!(metric::BUDGET_EXHAUSTED).increment(1);
            if !inner.exhausted.swap(true, Ordering::AcqRel) {
                inner.notifier.emit(ResilienceEvent::BudgetExhausted);
            }
        }
        allowed
    }

    /// The state of the budget now.
    pub fn snapshot(&self) -> BudgetSnapshot {
        let inner = &*self.inner;
        let (calls, retries, available) = {
            let mut w = inner.window.lock();
            w.advance(Instant::now(), inner.slot);
            (
                w.total_calls,
                w.total_retries,
                w.available(inner.ratio, inner.reserve),
            )
        };
        let available = (available + EPSILON).max(0.0).floor();
        if inner.enabled {
            metrics::gauge!(metric::BUDGET_AVAILABLE).set(available);
        }
        BudgetSnapshot {
            enabled: inner.enabled,
            calls,
            retries,
            // Float to integer: the value is finite, non-negative and far below u64::MAX.
            available: available as u64,
            exhausted: inner.exhausted.load(Ordering::Relaxed),
        }
    }
}
