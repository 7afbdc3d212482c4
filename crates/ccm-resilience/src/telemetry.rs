//! Metric names, and the one place that turns a state change into a log line, a metric and an
//! observer call.

use std::sync::Arc;

use crate::event::{Observer, ResilienceEvent};

/// Names of the Prometheus metrics this crate records through the `metrics` facade.
///
/// Labels are bounded: no metric carries a breaker key (there may be 10,000 of them); `name` is
/// one of the few bulkhead names and `key` one of the few rate-limit keys (AWS regions).
pub mod metric {
    /// Counter `{to="open"|"half_open"|"closed"}`: breaker transitions.
    pub const BREAKER_TRANSITIONS: &str = "ccm_breaker_transitions_total";
    /// Gauge: breakers currently open (half-open ones included).
    pub const BREAKERS_OPEN: &str = "ccm_breakers_open";
    /// Counter: attempts rejected by an open breaker.
    pub const BREAKER_REJECTED: &str = "ccm_breaker_rejected_total";
    /// Counter: retries started (attempts after the first).
    pub const RETRIES: &str = "ccm_retries_total";
    /// Counter: retries refused by the retry budget.
    pub const BUDGET_EXHAUSTED: &str = "ccm_retry_budget_exhausted_total";
    /// Gauge: retries the budget would allow right now (updated when retries are asked for and
    /// on snapshots).
    pub const BUDGET_AVAILABLE: &str = "ccm_retry_budget_available";
    /// Counter: attempts that exceeded their per-attempt timeout.
    pub const ATTEMPT_TIMEOUTS: &str = "ccm_attempt_timeouts_total";
    /// Counter: calls that ended because of their overall deadline.
    pub const DEADLINE_EXCEEDED: &str = "ccm_deadline_exceeded_total";
    /// Gauge `{name}`: calls holding a slot of the bulkhead.
    pub const BULKHEAD_IN_FLIGHT: &str = "ccm_bulkhead_in_flight";
    /// Gauge `{name}`: calls waiting for a slot of the bulkhead.
    pub const BULKHEAD_QUEUED: &str = "ccm_bulkhead_queued";
    /// Counter `{name}`: calls rejected because the bulkhead's queue was full.
    pub const BULKHEAD_REJECTED: &str = "ccm_bulkhead_rejected_total";
    /// Histogram `{key}`: seconds an attempt waited for a rate-limit token (only waits > 0).
    pub const RATE_LIMITED_WAIT: &str = "ccm_rate_limited_wait_seconds";
    /// Counter: refreshes refused by the refresh throttle (`reason="interval"|"running"`).
    pub const REFRESH_THROTTLED: &str = "ccm_refresh_throttled_total";
    /// Counter: callers that joined a running single-flight operation instead of starting one.
    pub const SINGLE_FLIGHT_JOINED: &str = "ccm_single_flight_joined_total";
}

static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// A metric key with one label, built once so that hot paths do not allocate for labels.
pub(crate) fn labelled(name: &'static str, label: &'static str, value: &Arc<str>) -> metrics::Key {
    metrics::Key::from_parts(name, vec![metrics::Label::new(label, Arc::clone(value))])
}

/// The gauge for a prebuilt key, from the recorder installed now (the `gauge!` macro does the
/// same, but rebuilds the key on every call).
pub(crate) fn gauge(key: &metrics::Key) -> metrics::Gauge {
    metrics::with_recorder(|r| r.register_gauge(key, &METADATA))
}

/// The counter for a prebuilt key.
pub(crate) fn counter(key: &metrics::Key) -> metrics::Counter {
    metrics::with_recorder(|r| r.register_counter(key, &METADATA))
}

/// The histogram for a prebuilt key.
pub(crate) fn histogram(key: &metrics::Key) -> metrics::Histogram {
    metrics::with_recorder(|r| r.register_histogram(key, &METADATA))
}

/// Logs, counts and forwards events. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Notifier {
    observer: Arc<dyn Observer>,
}

impl Notifier {
    pub(crate) fn new(observer: Arc<dyn Observer>) -> Self {
        Self { observer }
    }

    pub(crate) fn emit(&self, event: ResilienceEvent) {
        match &event {
            ResilienceEvent::BreakerOpened {
                key,
                consecutive_failures,
                reason,
            } => {
                tracing::warn!(%key, consecutive_failures, %reason, "circuit breaker opened");
                metrics::counter!(metric::BREAKER_TRANSITIONS, "to" => "open").increment(1);
            }
            ResilienceEvent::BreakerHalfOpen { key } => {
                tracing::info!(%key, "circuit breaker half-open, probing");
                metrics::counter!(metric::BREAKER_TRANSITIONS, "to" => "half_open").increment(1);
            }
            ResilienceEvent::BreakerClosed { key } => {
                tracing::info!(%key, "circuit breaker closed");
                metrics::counter!(metric::BREAKER_TRANSITIONS, "to" => "closed").increment(1);
            }
            ResilienceEvent::BudgetExhausted => {
                tracing::warn!("retry budget exhausted, retries are refused");
            }
            ResilienceEvent::BudgetRecovered => {
                tracing::info!("retry budget recovered");
            }
            ResilienceEvent::BulkheadRejected {
                name,
                max_concurrent,
                max_queue,
            } => {
                tracing::warn!(%name, max_concurrent, max_queue, "bulkhead full, call rejected");
            }
        }
        self.observer.on_event(&event);
    }
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}
