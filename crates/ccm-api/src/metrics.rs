//! This crate's metric catalogue (names as constants, [`describe`] for help texts and units),
//! and the process's Prometheus recorder ([`install`]): real histograms with
//! [`SECONDS_BUCKETS`] (no summaries), and every crate's catalogue described, so each series
//! on `/metrics` has `# HELP` and `# TYPE`.
//!
//! Prometheus naming: counters end in `_total`, histograms in their unit (`_seconds`), one
//! series per fact. Labels are bounded (routes are templates, never raw paths).

use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::Mutex;

/// Counter `{method, route, status}`: HTTP requests answered.
pub const HTTP_REQUESTS: &str = "ccm_http_requests_total";
/// Histogram `{route}`: seconds to answer an HTTP request.
pub const HTTP_REQUEST_SECONDS: &str = "ccm_http_request_seconds";
/// Counter: connections cut because a write stalled.
pub const HTTP_WRITE_STALLS: &str = "ccm_http_write_stalls_total";
/// Counter `{method}`: failed authentications (`bearer`, `csrf`, `sign_in`, `oidc`).
pub const AUTH_FAILURES: &str = "ccm_auth_failures_total";
/// Counter: fetches of the OIDC provider's signing keys.
pub const OIDC_JWKS_FETCHES: &str = "ccm_oidc_jwks_fetches_total";
/// Gauge `{state}`: workers by EC2 state (set when `/metrics` is scraped).
pub const WORKERS: &str = "ccm_workers";
/// Gauge `{status}`: workers by service status (set when `/metrics` is scraped).
pub const WORKERS_BY_SERVICE: &str = "ccm_workers_by_service";
/// Gauge: workers whose last successful poll is older than their stale threshold (set when
/// `/metrics` is scraped).
pub const WORKERS_STALE: &str = "ccm_workers_stale";
/// Gauge: live SSE clients.
pub const SSE_CLIENTS: &str = "ccm_sse_clients";
/// Counter: events replayed to SSE clients from the event log.
pub const SSE_REPLAYED: &str = "ccm_sse_replayed_total";
/// Counter `{reason}`: SSE clients cut off (`lagged`, `replay_failed`, …).
pub const SSE_DROPPED: &str = "ccm_sse_dropped_total";
/// Gauge: live browser sessions.
pub const SESSIONS: &str = "ccm_sessions";

/// Counter: failed fetches of the OIDC provider's JWKS (each starts a back-off).
pub const OIDC_JWKS_FETCH_FAILURES: &str = "ccm_oidc_jwks_fetch_failures_total";
/// Counter `{reason}`: event streams told to start over (`last_event_id_ahead`).
pub const SSE_RESETS: &str = "ccm_sse_resets_total";
/// Gauge: open HTTP connections on the listener.
pub const HTTP_CONNECTIONS: &str = "ccm_http_connections";
/// Counter: connections closed at once because `[server] max_connections` was reached.
pub const HTTP_CONNECTIONS_REFUSED: &str = "ccm_http_connections_refused_total";
/// Counter `{kind}`: connections or requests cut by a server timeout (`header`, `body`,
/// `keep_alive`, `tls_handshake`).
pub const HTTP_TIMEOUTS: &str = "ccm_http_timeouts_total";
/// Counter `{outcome}`: worker views answered from the view cache (`hit`) or rendered and
/// kept (`miss`).
pub const VIEW_CACHE: &str = "ccm_api_view_cache_total";

/// Gives every metric of this crate its help text and unit, in the recorder installed now.
pub fn describe() {
    describe_counter!(
        VIEW_CACHE,
        Unit::Count,
        "Worker views (list rows, details) answered from the view cache (`hit`) or rendered and kept (`miss`)."
    );
    describe_counter!(
        OIDC_JWKS_FETCH_FAILURES,
        Unit::Count,
        "Failed fetches of the OIDC provider's JWKS; each starts or lengthens a back-off."
    );
    describe_counter!(
        SSE_RESETS,
        Unit::Count,
        "Event streams told to start over, by reason (`last_event_id_ahead`)."
    );
    describe_gauge!(
        HTTP_CONNECTIONS,
        Unit::Count,
        "Open HTTP connections on the listener."
    );
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED,
        Unit::Count,
        "Connections closed at once because `[server] max_connections` was reached."
    );
    describe_counter!(
        HTTP_TIMEOUTS,
        Unit::Count,
        "Connections or requests cut by a server timeout, by kind (header, body, keep_alive, tls_handshake)."
    );
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests answered, by method, route template and status."
    );
    describe_histogram!(
        HTTP_REQUEST_SECONDS,
        Unit::Seconds,
        "Time to answer an HTTP request, by route template (streams: until the headers)."
    );
    describe_counter!(
        HTTP_WRITE_STALLS,
        Unit::Count,
        "Connections cut because a write to the client stalled."
    );
    describe_counter!(
        AUTH_FAILURES,
        Unit::Count,
        "Failed authentications, by method (bearer, csrf, sign_in, oidc)."
    );
    describe_counter!(
        OIDC_JWKS_FETCHES,
        Unit::Count,
        "Fetches of the OIDC provider's signing keys (JWKS)."
    );
    describe_gauge!(WORKERS, Unit::Count, "Workers by EC2 state.");
    describe_gauge!(
        WORKERS_BY_SERVICE,
        Unit::Count,
        "Workers by CML service status."
    );
    describe_gauge!(
        WORKERS_STALE,
        Unit::Count,
        "Workers whose data is stale (no successful poll within the stale threshold)."
    );
    describe_gauge!(SSE_CLIENTS, Unit::Count, "Live event-stream (SSE) clients.");
    describe_counter!(
        SSE_REPLAYED,
        Unit::Count,
        "Events replayed to event-stream clients from the event log."
    );
    describe_counter!(
        SSE_DROPPED,
        Unit::Count,
        "Event-stream clients cut off, by reason."
    );
    describe_gauge!(SESSIONS, Unit::Count, "Live browser sessions.");
}

/// Bucket bounds of every `_seconds` histogram: 1 ms to 5 min (HTTP answers and polls sit at
/// the low end, fleet jobs at 10,000 workers at the high end).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// The exporter as ccm configures it: histograms (with buckets) for every `_seconds` metric.
pub fn prometheus() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
}

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The exporter refused its configuration.
    #[error("metrics exporter: {0}")]
    Build(#[from] BuildError),
    /// Another recorder was installed first (not by [`install`]).
    #[error("another metrics recorder is already installed")]
    AlreadyInstalled,
}

/// Installs the process's Prometheus recorder ([`prometheus`]) and describes the metrics of
/// `ccm-resilience`, `ccm-engine`, `ccm-webhooks` and this crate. Idempotent: later calls return the same
/// handle (for `/metrics`).
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut slot = HANDLE.lock();
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let recorder = prometheus()?.build_recorder();
    let handle = recorder.handle();
    ::metrics::set_global_recorder(recorder).map_err(|_| MetricsError::AlreadyInstalled)?;
    ccm_resilience::metrics::describe();
    ccm_engine::metrics::describe();
    ccm_webhooks::metrics::describe();
    describe();
    *slot = Some(handle.clone());
    Ok(handle)
}

#[cfg(test)]
mod tests {
    /// Every constant of this file is described, and named by the Prometheus conventions for
    /// the kind it is described as.
    #[test]
    fn every_metric_should_be_described_and_named_by_the_conventions() {
        let names = ccm_resilience::metrics::check_catalogue(include_str!("metrics.rs"));
        assert!(names >= 11, "found only {names} metrics");
    }
}
