//! The one place that turns a state change into a log line, a metric and an observer call,
//! and the prebuilt metric keys of the hot paths. Metric names live in [`crate::metrics`].

use std::sync::Arc;

use crate::event::{Observer, ResilienceEvent};
use crate::metrics as metric;

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
