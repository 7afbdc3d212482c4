//! This crate's metric catalogue: every name as a constant (the record sites use these), and
//! [`describe`], which gives each its help text and unit. Prometheus naming: counters end in
//! `_total`, histograms in their unit (`_seconds`). Labels are bounded (`job` is a job name).

use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Histogram `{job}`: seconds one poll of one worker took (`cml_sync`, `labs`).
pub const POLL_SECONDS: &str = "ccm_poll_seconds";
/// Histogram `{job}`: seconds one run of a job took.
pub const JOB_SECONDS: &str = "ccm_job_seconds";
/// Counter `{job}`: polls skipped because the previous poll of that worker still ran.
pub const POLL_OVERLAP_SKIPPED: &str = "ccm_poll_overlap_skipped_total";
/// Counter: events published.
pub const EVENTS: &str = "ccm_events_total";
/// Counter: events that could not be appended to the event log.
pub const EVENTS_LOST: &str = "ccm_events_lost_total";
/// Counter: workers saved by the writer.
pub const WORKER_WRITES: &str = "ccm_worker_writes_total";
/// Counter: worker saves that failed.
pub const WORKER_WRITES_FAILED: &str = "ccm_worker_writes_failed_total";
/// Histogram: seconds one writer flush (load, apply, save in one transaction) took.
pub const WRITER_FLUSH_SECONDS: &str = "ccm_writer_flush_seconds";

/// Counter `{task}`: restarts of a supervised background task after a panic or an early end.
pub const TASK_RESTARTS: &str = "ccm_task_restarts_total";
/// Counter: job writes refused because the job's grant (lease) was no longer held.
pub const JOB_WRITES_REFUSED: &str = "ccm_job_writes_refused_total";
/// Counter: poll results the store refused because their lease had been taken over or had
/// expired (fencing); dropped, never retried.
pub const FENCING_REFUSALS: &str = "ccm_fencing_refusals_total";
/// Gauge: leases this replica holds (worker partitions and fleet jobs).
pub const LEASES_HELD: &str = "ccm_leases_held";
/// Counter: leases this replica took over from another replica whose lease had expired.
pub const LEASE_TAKEOVERS: &str = "ccm_lease_takeovers_total";
/// Counter: heartbeat or lease renewal rounds that failed (database unreachable).
pub const LEASE_RENEW_FAILURES: &str = "ccm_lease_renew_failures_total";
/// Gauge: live replicas this replica sees (itself included).
pub const REPLICAS_LIVE: &str = "ccm_replicas_live";
/// Counter: writer batches kept for another attempt after the database failed.
pub const WRITER_RETRIES: &str = "ccm_writer_retries_total";

/// Gives every metric of this crate its help text and unit, in the recorder installed now
/// (call it once after installing one; without a recorder it does nothing).
pub fn describe() {
    describe_counter!(
        FENCING_REFUSALS,
        Unit::Count,
        "Poll results refused by the store because their lease was taken over or expired (fencing)."
    );
    describe_gauge!(
        LEASES_HELD,
        Unit::Count,
        "Leases this replica holds (worker partitions and fleet jobs)."
    );
    describe_counter!(
        LEASE_TAKEOVERS,
        Unit::Count,
        "Leases taken over from a replica whose lease had expired."
    );
    describe_counter!(
        LEASE_RENEW_FAILURES,
        Unit::Count,
        "Heartbeat and lease renewal rounds that failed."
    );
    describe_gauge!(
        REPLICAS_LIVE,
        Unit::Count,
        "Live replicas this replica sees, itself included."
    );
    describe_counter!(
        WRITER_RETRIES,
        Unit::Count,
        "Writer batches kept for another attempt after a database failure."
    );
    describe_counter!(
        TASK_RESTARTS,
        Unit::Count,
        "Restarts of a supervised background task after a panic or an unexpected end, by task."
    );
    describe_counter!(
        JOB_WRITES_REFUSED,
        Unit::Count,
        "Job writes refused because the grant they were made under is no longer held."
    );
    describe_histogram!(
        POLL_SECONDS,
        Unit::Seconds,
        "Duration of one poll of one worker, by job (`cml_sync`, `labs`)."
    );
    describe_histogram!(
        JOB_SECONDS,
        Unit::Seconds,
        "Duration of one run of a background job, by job."
    );
    describe_counter!(
        POLL_OVERLAP_SKIPPED,
        Unit::Count,
        "Polls skipped because the previous poll of the same worker was still running, by job."
    );
    describe_counter!(
        EVENTS,
        Unit::Count,
        "Events published (to the event log and live subscribers)."
    );
    describe_counter!(
        EVENTS_LOST,
        Unit::Count,
        "Events that could not be appended to the event log."
    );
    describe_counter!(
        WORKER_WRITES,
        Unit::Count,
        "Workers saved by the batching writer."
    );
    describe_counter!(
        WORKER_WRITES_FAILED,
        Unit::Count,
        "Worker saves that failed."
    );
    describe_histogram!(
        WRITER_FLUSH_SECONDS,
        Unit::Seconds,
        "Duration of one writer flush: load, apply and save a batch in one transaction."
    );
}

#[cfg(test)]
mod tests {
    /// Every constant of this file is described, and named by the Prometheus conventions for
    /// the kind it is described as.
    #[test]
    fn every_metric_should_be_described_and_named_by_the_conventions() {
        let names = ccm_resilience::metrics::check_catalogue(include_str!("metrics.rs"));
        assert!(names >= 8, "found only {names} metrics");
    }
}
