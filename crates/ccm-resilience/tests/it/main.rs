//! Integration tests of ccm-resilience, all under paused tokio time (no real sleeps).

// Test helpers outside `#[test]` functions panic on broken fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Shared fixtures: a classified test error, configs, counters.
mod support;

/// Backoff: full-jitter bounds, spread, seeding.
mod backoff;
/// Circuit breakers: every transition, the single probe.
mod breaker;
/// Retry budget: the attempts bound under a total outage.
mod budget;
/// Bulkheads: limits and rejections under concurrent load.
mod bulkhead;
/// The `[resilience]` config: defaults, serde, validation.
mod config;
/// `Resilience::call`: retries, timeouts, deadline, Retry-After, the whole stack.
mod policy;
/// Property tests of the invariants above.
mod properties;
/// Rate limits per key.
mod rate_limit;
/// Single flight.
mod single_flight;
/// Refresh throttle.
mod throttle;
