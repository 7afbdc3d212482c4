//! This crate's metric catalogue: every name as a constant (the record sites use these), and
//! [`describe`], which gives each its help text and unit. Prometheus naming: counters end in
//! `_total`, histograms in their unit (`_seconds`).
//!
//! Labels are bounded: no metric carries a breaker key (there may be 10,000 of them); `name` is
//! one of the few bulkhead names and `key` one of the few rate-limit keys (AWS regions).

use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Counter `{to="open"|"half_open"|"closed"}`: breaker transitions.
pub const BREAKER_TRANSITIONS: &str = "ccm_breaker_transitions_total";
/// Gauge: breakers currently not closed (open or half-open).
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
/// Counter `{reason="interval"|"running"}`: refreshes refused by the refresh throttle.
pub const REFRESH_THROTTLED: &str = "ccm_refresh_throttled_total";
/// Counter: callers that joined a running single-flight operation instead of starting one.
pub const SINGLE_FLIGHT_JOINED: &str = "ccm_single_flight_joined_total";

/// Gives every metric of this crate its help text and unit, in the recorder installed now
/// (call it once after installing one; without a recorder it does nothing).
pub fn describe() {
    describe_counter!(
        BREAKER_TRANSITIONS,
        Unit::Count,
        "Circuit breaker transitions, by the state entered (`to`)."
    );
    describe_gauge!(
        BREAKERS_OPEN,
        Unit::Count,
        "Circuit breakers open or half-open now."
    );
    describe_counter!(
        BREAKER_REJECTED,
        Unit::Count,
        "Attempts rejected by an open circuit breaker without being made."
    );
    describe_counter!(
        RETRIES,
        Unit::Count,
        "Retries started (attempts after the first)."
    );
    describe_counter!(
        BUDGET_EXHAUSTED,
        Unit::Count,
        "Retries refused because the fleet-wide retry budget was empty."
    );
    describe_gauge!(
        BUDGET_AVAILABLE,
        Unit::Count,
        "Retries the fleet-wide retry budget allows now."
    );
    describe_counter!(
        ATTEMPT_TIMEOUTS,
        Unit::Count,
        "Attempts that exceeded their per-attempt timeout."
    );
    describe_counter!(
        DEADLINE_EXCEEDED,
        Unit::Count,
        "Calls that ended because their overall deadline passed."
    );
    describe_gauge!(
        BULKHEAD_IN_FLIGHT,
        Unit::Count,
        "Calls holding a slot of the bulkhead (`name`)."
    );
    describe_gauge!(
        BULKHEAD_QUEUED,
        Unit::Count,
        "Calls waiting for a slot of the bulkhead (`name`)."
    );
    describe_counter!(
        BULKHEAD_REJECTED,
        Unit::Count,
        "Calls rejected because the bulkhead's queue (`name`) was full."
    );
    describe_histogram!(
        RATE_LIMITED_WAIT,
        Unit::Seconds,
        "Time an attempt waited for a rate-limit token (`key`: the limiter, e.g. an AWS region); only waits longer than zero."
    );
    describe_counter!(
        REFRESH_THROTTLED,
        Unit::Count,
        "Refreshes refused by the per-worker refresh throttle (`reason`: interval or running)."
    );
    describe_counter!(
        SINGLE_FLIGHT_JOINED,
        Unit::Count,
        "Callers that joined a running single-flight operation instead of starting one."
    );
}

/// Checks a crate's metric catalogue, given the source of its `metrics.rs`: every `pub const`
/// name is described in its `describe()` and named by the Prometheus conventions for the kind
/// it is described as (`ccm_` prefix, counters `_total`, histograms `_seconds`/`_bytes`, gauges
/// not `_total`). Panics naming the first violation; returns how many metrics it checked. Used
/// by the catalogue test of every crate that exports metrics.
#[doc(hidden)]
pub fn check_catalogue(text: &str) -> usize {
    let body = text.split("pub fn describe()").nth(1).unwrap_or_default();
    // The describe macro before each identifier in `describe`'s body.
    let mut kind = "";
    let mut described = std::collections::HashMap::new();
    for token in body.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        if token.starts_with("describe_") {
            kind = token;
        } else if !token.is_empty() {
            described.insert(token, kind);
        }
    }
    let mut names = 0;
    for line in text
        .lines()
        .filter(|l| l.starts_with("pub const ") && l.contains(": &str = "))
    {
        let constant = line["pub const ".len()..]
            .split(':')
            .next()
            .unwrap_or_default();
        let name = line.split('"').nth(1).unwrap_or_default();
        let kind = described
            .get(constant)
            .unwrap_or_else(|| panic!("{constant} is not described"));
        assert!(name.starts_with("ccm_"), "{name}");
        match *kind {
            "describe_counter" => assert!(name.ends_with("_total"), "{name}"),
            "describe_histogram" => {
                assert!(
                    name.ends_with("_seconds") || name.ends_with("_bytes"),
                    "{name}"
                );
            }
            "describe_gauge" => assert!(!name.ends_with("_total"), "{name}"),
            other => panic!("{constant}: unknown kind {other:?}"),
        }
        names += 1;
    }
    names
}

#[cfg(test)]
mod tests {
    /// Every constant of this file is described, and named by the Prometheus conventions for
    /// the kind it is described as.
    #[test]
    fn every_metric_should_be_described_and_named_by_the_conventions() {
        let names = super::check_catalogue(include_str!("metrics.rs"));
        assert!(names >= 14, "found only {names} metrics");
    }
}
