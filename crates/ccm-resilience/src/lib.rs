//! Resilience policies for every remote call ccm makes: per-attempt timeouts, an overall
//! deadline, retries with exponential backoff and full jitter, a fleet-wide retry budget,
//! circuit breakers keyed per endpoint, bulkheads, per-region rate limits, per-worker refresh
//! throttles with single flight.
//!
//! # Overview
//!
//! Newcomers start with [`Resilience`]: built once from the `[resilience]` section
//! ([`ResilienceConfig`]) and shared by the whole process, it runs one async operation under
//! the whole stack with [`Resilience::call`] and a [`Call`] describing it (breaker key,
//! idempotency, bulkhead, rate-limit key, deadline). The operation's error type implements
//! [`Classify`] to say whether an error is [`Transient`](ErrorClass::Transient) (retried,
//! counts for the breaker), a [`Failure`](ErrorClass::Failure) (counts for the breaker) or
//! [`Benign`](ErrorClass::Benign) (neither). Failures come back as [`CallError`].
//!
//! Every part can also be used on its own: [`Backoff`], [`RetryBudget`], [`BreakerRegistry`],
//! [`Bulkhead`], [`RateLimiters`], and the two the engine uses directly,
//! [`RefreshThrottle`] and [`SingleFlight`] (combined in [`RefreshGate`]).
//!
//! Every state change (breaker opened, half-open, closed; budget exhausted, recovered;
//! bulkhead rejecting) is a [`ResilienceEvent`] given to the [`Observer`], a `tracing` log line
//! and a metric.
//!
//! # Time
//!
//! All time comes from `tokio::time` (`Instant`, `sleep`), so every policy runs under paused
//! time in tests. Backoff jitter comes from `rand`, seedable through
//! [`ResilienceBuilder::jitter_seed`] or [`Backoff::with_seed`].
//!
//! # Metrics
//!
//! Recorded through the `metrics` facade; names, help texts and units in [`metrics`] (call
//! [`metrics::describe`] once the recorder is installed). No metric is labelled by breaker key
//! (there may be 10,000 workers).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `ccm_breaker_transitions_total` | counter | `to` = `open`, `half_open`, `closed` |
//! | `ccm_breakers_open` | gauge | |
//! | `ccm_breaker_rejected_total` | counter | |
//! | `ccm_retries_total` | counter | |
//! | `ccm_retry_budget_exhausted_total` | counter (refused retries) | |
//! | `ccm_retry_budget_available` | gauge | |
//! | `ccm_attempt_timeouts_total` | counter | |
//! | `ccm_deadline_exceeded_total` | counter | |
//! | `ccm_bulkhead_in_flight` | gauge | `name` |
//! | `ccm_bulkhead_queued` | gauge | `name` |
//! | `ccm_bulkhead_rejected_total` | counter | `name` |
//! | `ccm_rate_limited_wait_seconds` | histogram | `key` (rate-limit key, e.g. region) |
//! | `ccm_refresh_throttled_total` | counter | `reason` = `interval`, `running` |
//! | `ccm_single_flight_joined_total` | counter | |
//!
//! # Not for
//!
//! This crate is generic: it knows nothing of CML, AWS or HTTP. The crates that know a
//! protocol (`ccm-cml`, `ccm-cloud`) decide which of their errors are retryable or count as
//! breaker failures; this crate provides the mechanisms. Stale-data fallback lives in
//! `ccm-domain` (`Observed<T>`). Nothing here spawns a task.
#![warn(missing_docs)]

mod backoff;
mod breaker;
mod budget;
pub mod bulkhead;
mod classify;
mod config;
mod error;
mod event;
pub mod metrics;
mod policy;
mod rate_limit;
mod single_flight;
mod telemetry;
mod throttle;

pub use backoff::Backoff;
pub use breaker::{
    BreakerOpen, BreakerPermit, BreakerRegistry, BreakerSnapshot, BreakerState, Verdict,
};
pub use budget::{BudgetSnapshot, RetryBudget};
pub use bulkhead::{Bulkhead, BulkheadFull, BulkheadId, BulkheadPermit, BulkheadSnapshot, Permit};
pub use classify::{Classify, ErrorClass};
pub use config::{
    BreakerConfig, BudgetConfig, BulkheadConfig, BulkheadsConfig, ConfigError, RateLimitConfig,
    ResilienceConfig, RetryConfig, ThrottleConfig, TimeoutConfig,
};
pub use error::CallError;
pub use event::{FnObserver, NoopObserver, Observer, RecordingObserver, ResilienceEvent};
pub use policy::{Call, Resilience, ResilienceBuilder};
pub use rate_limit::{RateLimited, RateLimiters};
pub use single_flight::SingleFlight;
pub use throttle::{RefreshGate, RefreshThrottle, ThrottleError, ThrottleGuard};
