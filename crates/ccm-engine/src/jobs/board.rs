//! [`JobBoard`]: what the API shows of each job — runs, failures, in flight, the last run and
//! its error (the text of its [`crate::error::JobError`], causes included).

use std::collections::HashMap;
use std::time::Duration;

use ccm_domain::settings::PollingSettings;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::job_kind::JobKind;

/// What the board knows of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Job.
    pub job: JobKind,
    /// Switched on in the settings.
    pub enabled: bool,
    /// Interval.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Runs finished (per-worker jobs: worker polls).
    pub runs: u64,
    /// Runs that failed.
    pub failures: u64,
    /// Running right now (per-worker jobs: workers in flight).
    pub in_flight: u64,
    /// Workers scheduled (per-worker jobs).
    pub scheduled: u64,
    /// Last run started.
    pub last_started: Option<DateTime<Utc>>,
    /// Last run finished.
    pub last_finished: Option<DateTime<Utc>>,
    /// Its duration in milliseconds.
    pub last_duration_ms: Option<u64>,
    /// Its error, if it failed.
    pub last_error: Option<String>,
}

#[derive(Debug, Default, Clone)]
struct Entry {
    runs: u64,
    failures: u64,
    in_flight: u64,
    scheduled: u64,
    last_started: Option<DateTime<Utc>>,
    last_finished: Option<DateTime<Utc>>,
    last_duration_ms: Option<u64>,
    last_error: Option<String>,
}

/// Job statistics, for the API.
#[derive(Debug, Default)]
pub(crate) struct JobBoard {
    entries: Mutex<HashMap<JobKind, Entry>>,
}

impl JobBoard {
    fn with<R>(&self, job: JobKind, f: impl FnOnce(&mut Entry) -> R) -> R {
        f(self.entries.lock().entry(job).or_default())
    }

    pub(crate) fn started(&self, job: JobKind, now: DateTime<Utc>) {
        self.with(job, |e| {
            e.in_flight += 1;
            e.last_started = Some(now);
        });
    }

    pub(crate) fn finished(
        &self,
        job: JobKind,
        now: DateTime<Utc>,
        took: Duration,
        error: Option<String>,
    ) {
        self.with(job, |e| {
            e.in_flight = e.in_flight.saturating_sub(1);
            e.runs += 1;
            e.last_finished = Some(now);
            e.last_duration_ms = Some(took.as_millis() as u64);
            if error.is_some() {
                e.failures += 1;
            }
            e.last_error = error;
        });
        metrics::histogram!(crate::metrics::JOB_SECONDS, "job" => job.as_str())
            .record(took.as_secs_f64());
    }

    pub(crate) fn scheduled(&self, job: JobKind, n: usize) {
        self.with(job, |e| e.scheduled = n as u64);
    }

    pub(crate) fn snapshot(&self, polling: &PollingSettings) -> Vec<JobStatus> {
        let entries = self.entries.lock();
        JobKind::ALL
            .into_iter()
            .filter(|job| job.runs_in_engine())
            .map(|job| {
                let e = entries.get(&job).cloned().unwrap_or_default();
                let (enabled, interval) = job.schedule(polling);
                JobStatus {
                    job,
                    enabled,
                    interval,
                    runs: e.runs,
                    failures: e.failures,
                    in_flight: e.in_flight,
                    scheduled: e.scheduled,
                    last_started: e.last_started,
                    last_finished: e.last_finished,
                    last_duration_ms: e.last_duration_ms,
                    last_error: e.last_error,
                }
            })
            .collect()
    }
}
