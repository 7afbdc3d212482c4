//! Resilience policies for every remote call ccm makes: per-attempt timeouts, an overall
//! deadline, retries with exponential backoff and full jitter, a fleet-wide retry budget,
//! circuit breakers keyed per endpoint, bulkheads, per-region rate limits, per-worker refresh
//! throttles with single flight.
//!
//! This crate is generic: it knows nothing of CML, AWS or HTTP. The crates that know a
//! protocol (`ccm-cml`, `ccm-cloud`) decide which of their errors are retryable or count as
//! breaker failures; this crate provides the mechanisms.
#![warn(missing_docs)]
