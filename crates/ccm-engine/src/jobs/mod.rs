//! The background jobs and the board that reports on them.
//!
//! Two shapes of job:
//! - **per worker** (CML sync, labs, activity and idle): each worker is polled on its own
//!   schedule ([`crate::scheduler::Spread`]), never twice at once, behind a gate (the CML
//!   gates, [`cml_gates`], or the `labs` bulkhead) that bounds the workers in flight;
//! - **fleet** (EC2 sync and CloudWatch metrics, batched per region; auto-import; event
//!   retention): one run per interval.
//!
//! Intervals and switches come from the runtime settings and take effect at once.

mod activity;
mod cml;
mod ec2;
mod labs;
mod metrics_job;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ccm_domain::WorkerId;
use ccm_domain::settings::PollingSettings;
use ccm_resilience::Bulkhead;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

pub(crate) use activity::{evaluate_idle, read_activity};
pub(crate) use cml::sync_worker;
pub(crate) use labs::refresh_labs;

use crate::engine::{Engine, Slot};
use crate::error::EngineError;
use crate::scheduler::Spread;

/// The jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// EC2 state of every worker, batched per region.
    Ec2Sync,
    /// CML sync of every running worker.
    CmlSync,
    /// CloudWatch metrics of running workers, batched per region.
    Metrics,
    /// Labs of every running worker.
    Labs,
    /// Activity (telemetry) and the idle policy.
    Activity,
    /// Import of instances matching the `[import]` filter.
    AutoImport,
    /// Deletes events past their retention.
    EventRetention,
}

impl JobKind {
    /// Every job.
    pub const ALL: [JobKind; 7] = [
        Self::Ec2Sync,
        Self::CmlSync,
        Self::Metrics,
        Self::Labs,
        Self::Activity,
        Self::AutoImport,
        Self::EventRetention,
    ];

    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ec2Sync => "ec2_sync",
            Self::CmlSync => "cml_sync",
            Self::Metrics => "metrics",
            Self::Labs => "labs",
            Self::Activity => "activity",
            Self::AutoImport => "auto_import",
            Self::EventRetention => "event_retention",
        }
    }

    /// Parses an API name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|j| j.as_str() == s)
    }

    /// (enabled, interval) from the settings.
    pub fn schedule(self, p: &PollingSettings) -> (bool, Duration) {
        match self {
            Self::Ec2Sync => (p.ec2_enabled, p.ec2_interval),
            Self::CmlSync => (p.cml_enabled, p.cml_interval),
            Self::Metrics => (p.metrics_enabled, p.metrics_interval),
            Self::Labs => (p.labs_enabled, p.labs_interval),
            Self::Activity => (p.activity_enabled, p.activity_interval),
            Self::AutoImport => (p.auto_import_enabled, p.auto_import_interval),
            Self::EventRetention => (true, Duration::from_secs(3600)),
        }
    }

    fn per_worker(self) -> bool {
        matches!(self, Self::CmlSync | Self::Labs | Self::Activity)
    }
}

/// Most CML calls one worker's sync makes at once (system_information, system_health,
/// system_stats and licensing).
pub const CML_SYNC_CALLS: usize = 4;

/// The gates that bound how many workers' CML polls (sync, activity) run at once: one for
/// workers that answer, one for probes of workers known to be down.
///
/// Neither is the `cml_poll` bulkhead itself: the CML client runs each call of a poll in that
/// bulkhead, so a poll that held a `cml_poll` slot while its calls waited for another would
/// deadlock as soon as polls held every slot (10,000 workers queued behind 512 slots did
/// exactly that). The worker gate admits `cml_poll.max_concurrent / CML_SYNC_CALLS` workers,
/// so that the calls of the workers in flight fit in the bulkhead and never queue behind
/// other workers'. Probes of dead workers take their whole timeout; in the same gate they
/// would hold the slots the live workers need (a cycle after 300 of 1,000 workers died took
/// 10 s instead of 0.6 s), so they have their own gate of the same width. Both queue like the
/// bulkhead.
#[derive(Debug, Clone)]
pub(crate) struct CmlGates {
    pub(crate) workers: Bulkhead,
    pub(crate) probes: Bulkhead,
}

pub(crate) fn cml_gates(config: &ccm_resilience::ResilienceConfig) -> CmlGates {
    let b = &config.bulkheads;
    if !b.enabled {
        return CmlGates {
            workers: Bulkhead::unlimited("cml_workers"),
            probes: Bulkhead::unlimited("cml_probes"),
        };
    }
    let gate = ccm_resilience::BulkheadConfig::new(
        (b.cml_poll.max_concurrent / CML_SYNC_CALLS).max(1),
        b.cml_poll.max_queue,
    );
    let observer = || Arc::new(ccm_resilience::NoopObserver);
    CmlGates {
        workers: Bulkhead::new("cml_workers", &gate, observer()),
        probes: Bulkhead::new("cml_probes", &gate, observer()),
    }
}

/// Whether a job's polls make their calls in the `cml_poll` bulkhead (and so pass a CML gate).
fn polls_cml(job: JobKind) -> bool {
    matches!(job, JobKind::CmlSync | JobKind::Activity)
}

/// The gate one worker's poll passes: for polls whose calls run in the `cml_poll` bulkhead,
/// the probe gate when the worker is known to be `down` ([`known_down`]) and the worker gate
/// otherwise; the `labs` bulkhead for labs refreshes.
fn gate(engine: &Engine, job: JobKind, down: bool) -> Option<Bulkhead> {
    match job {
        JobKind::CmlSync | JobKind::Activity if down => Some(engine.inner.cml_gates.probes.clone()),
        JobKind::CmlSync | JobKind::Activity => Some(engine.inner.cml_gates.workers.clone()),
        JobKind::Labs => Some(
            engine
                .inner
                .resilience
                .bulkhead(ccm_resilience::bulkhead::LABS),
        ),
        _ => None,
    }
}

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

    fn started(&self, job: JobKind, now: DateTime<Utc>) {
        self.with(job, |e| {
            e.in_flight += 1;
            e.last_started = Some(now);
        });
    }

    fn finished(&self, job: JobKind, now: DateTime<Utc>, took: Duration, error: Option<String>) {
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

    fn scheduled(&self, job: JobKind, n: usize) {
        self.with(job, |e| e.scheduled = n as u64);
    }

    pub(crate) fn snapshot(&self, polling: &PollingSettings) -> Vec<JobStatus> {
        let entries = self.entries.lock();
        JobKind::ALL
            .into_iter()
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

/// Which workers a per-worker job polls.
fn members_of(engine: &Engine, job: JobKind) -> Vec<WorkerId> {
    let reachable = |s: &Slot| s.reachable().is_some();
    match job {
        JobKind::CmlSync | JobKind::Labs | JobKind::Activity => engine
            .members(reachable)
            .into_iter()
            .map(|(id, _)| id)
            .collect(),
        _ => Vec::new(),
    }
}

/// Runs one poll of one worker for a per-worker job.
async fn poll_worker(engine: &Engine, job: JobKind, id: WorkerId) -> Result<(), String> {
    match job {
        JobKind::CmlSync => sync_worker(engine, id).await,
        JobKind::Labs => refresh_labs(engine, id).await,
        JobKind::Activity => {
            read_activity(engine, id).await?;
            evaluate_idle(engine, id).await
        }
        _ => Ok(()),
    }
}

/// Runs one fleet job once.
async fn run_fleet_job(engine: &Engine, job: JobKind) -> Result<(), String> {
    match job {
        JobKind::Ec2Sync => ec2::sync_all(engine).await,
        JobKind::Metrics => metrics_job::collect(engine).await,
        JobKind::AutoImport => {
            let req = crate::engine::ImportRequest {
                region: None,
                selector: crate::engine::ImportSelector::Configured,
                all: true,
            };
            engine
                .import_workers(req, &ccm_domain::Actor::system("auto-import"))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        JobKind::EventRetention => {
            let keep = chrono::Duration::from_std(engine.inner.config.event_retention)
                .unwrap_or(chrono::Duration::days(30));
            engine
                .inner
                .store
                .prune_events(engine.now() - keep)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        _ => Ok(()),
    }
}

/// Starts every job's loop.
pub(crate) fn spawn_all(engine: &Engine) {
    for job in JobKind::ALL {
        let e = engine.clone();
        if job.per_worker() {
            engine.inner.tracker.spawn(per_worker_loop(e, job));
        } else {
            engine.inner.tracker.spawn(fleet_loop(e, job));
        }
    }
}

/// Runs `job` now: a full cycle over every member for per-worker jobs, one run otherwise.
pub(crate) async fn run_now(engine: &Engine, job: JobKind) -> Result<(), EngineError> {
    let result = if job.per_worker() {
        let members = members_of(engine, job);
        run_cycle(engine, job, members).await;
        Ok(())
    } else {
        timed(engine, job, run_fleet_job(engine, job))
            .await
            .map_err(EngineError::Upstream)
    };
    engine.flush().await;
    result
}

/// Polls every worker in `members` once, as fast as the job's gate allows. Returns when all
/// are done, except workers known to be down. Used by triggered cycles and by `ccm bench`.
///
/// - A poll is spawned only once it holds its gate slot, so a cycle of 10,000 workers keeps
///   at most the gate's width of tasks alive (not 10,000 waiting futures), and never fills
///   the gate's queue that the background jobs share.
/// - A CML sync of a worker known to be down — `unavailable` at its last sync, or its breaker
///   due for the half-open probe — runs in the background, after the others have their
///   slots: confirming a dead worker takes a timeout (`cml.probe_timeout`, or the attempt
///   timeout for a breaker probe), and the cycle must not wait on a sick endpoint. Its
///   outcome is stored when it ends; cycles leave the worker out until then. Workers whose
///   breaker is open and not due cost nothing (the call is refused at once, no request is
///   sent).
pub(crate) async fn run_cycle(engine: &Engine, job: JobKind, members: Vec<WorkerId>) {
    let (down, up): (Vec<_>, Vec<_>) = members
        .into_iter()
        .filter_map(|id| PollClaim::take(engine, job, id).map(|claim| (id, claim)))
        .partition(|(id, _)| job == JobKind::CmlSync && known_down(engine, *id));
    let mut set = tokio::task::JoinSet::new();
    for (id, claim) in up {
        let Some(permit) = enter(gate(engine, job, false), job, id).await else {
            continue;
        };
        while set.try_join_next().is_some() {}
        let e = engine.clone();
        set.spawn(async move {
            let _ = timed(&e, job, poll_worker(&e, job, id)).await;
            drop((permit, claim));
        });
    }
    for (id, claim) in down {
        engine.inner.probing.fetch_add(1, Ordering::Relaxed);
        let (e, gate) = (engine.clone(), gate(engine, job, true));
        engine.inner.tracker.spawn(async move {
            if let Some(permit) = enter(gate, job, id).await {
                let _ = timed(&e, job, poll_worker(&e, job, id)).await;
                drop(permit);
            }
            drop(claim);
            e.inner.probing.fetch_sub(1, Ordering::Relaxed);
        });
    }
    while set.join_next().await.is_some() {}
}

/// Waits for a slot of `gate` (`None`: no limit). `None` when the gate's queue is full: the
/// poll is skipped (logged; its worker's next due time comes round again).
async fn enter(
    gate: Option<Bulkhead>,
    job: JobKind,
    id: WorkerId,
) -> Option<Option<ccm_resilience::BulkheadPermit>> {
    let Some(g) = gate else {
        return Some(None);
    };
    match g.acquire().await {
        Ok(p) => Some(Some(p)),
        Err(full) => {
            tracing::debug!(job = job.as_str(), worker = %id, error = %full, "gate full, poll skipped");
            None
        }
    }
}

/// One worker's poll for one job, claimed so that no other poll of that job runs for that
/// worker at the same time — scheduled polls and triggered cycles alike; released on drop.
pub(crate) struct PollClaim {
    engine: Engine,
    key: (JobKind, WorkerId),
}

impl PollClaim {
    /// The claim, or `None` (counted) when a poll of this job for this worker is running.
    pub(crate) fn take(engine: &Engine, job: JobKind, id: WorkerId) -> Option<Self> {
        if engine.inner.polls.lock().insert((job, id)) {
            Some(Self {
                engine: engine.clone(),
                key: (job, id),
            })
        } else {
            metrics::counter!(crate::metrics::POLL_OVERLAP_SKIPPED, "job" => job.as_str())
                .increment(1);
            None
        }
    }
}

impl Drop for PollClaim {
    fn drop(&mut self) {
        self.engine.inner.polls.lock().remove(&self.key);
    }
}

/// Whether a worker is known to be down: `unavailable` at its last sync, or its breaker due
/// for the half-open probe.
fn known_down(engine: &Engine, id: WorkerId) -> bool {
    let unavailable = engine
        .inner
        .fleet
        .get(&id)
        .is_some_and(|s| s.service == ccm_domain::ServiceStatus::Unavailable);
    unavailable || probe_due(engine, id)
}

/// Whether the worker's next CML call would be its breaker's half-open probe (open and due,
/// or half-open already).
fn probe_due(engine: &Engine, id: WorkerId) -> bool {
    let Some(endpoint) = engine.inner.fleet.get(&id).and_then(|s| s.endpoint.clone()) else {
        return false;
    };
    match engine.inner.resilience.breakers().snapshot_of(&endpoint) {
        Some(b) => match b.state {
            ccm_resilience::BreakerState::HalfOpen => true,
            ccm_resilience::BreakerState::Open => b.retry_in.is_some_and(|r| r.is_zero()),
            _ => false,
        },
        None => false,
    }
}

async fn timed<F: Future<Output = Result<(), String>>>(
    engine: &Engine,
    job: JobKind,
    fut: F,
) -> Result<(), String> {
    let board = &engine.inner.jobs;
    board.started(job, engine.now());
    let started = tokio::time::Instant::now();
    let result = fut.await;
    if let Err(e) = &result {
        // One worker's poll failing is normal fleet life (its status says so); a fleet job
        // failing is worth a warning.
        if job.per_worker() {
            tracing::debug!(job = job.as_str(), error = %e, "poll failed");
        } else {
            tracing::warn!(job = job.as_str(), error = %e, "job failed");
        }
    }
    board.finished(job, engine.now(), started.elapsed(), result.clone().err());
    result
}

/// One poll of one worker, under the job's gate, counted on the board.
async fn guarded_poll(engine: &Engine, job: JobKind, id: WorkerId) {
    let down = polls_cml(job) && known_down(engine, id);
    let Some(permit) = enter(gate(engine, job, down), job, id).await else {
        return;
    };
    let _ = timed(engine, job, poll_worker(engine, job, id)).await;
    drop(permit);
}

async fn per_worker_loop(engine: Engine, job: JobKind) {
    let mut settings = engine.watch_settings();
    let (_, interval) = job.schedule(&settings.borrow().value.polling);
    let mut spread = Spread::new(interval);
    let cancel = engine.inner.cancel.clone();
    loop {
        let (enabled, interval) = job.schedule(&settings.borrow().value.polling);
        if !enabled {
            engine.inner.jobs.scheduled(job, 0);
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = settings.changed() => if r.is_err() { return },
            }
            continue;
        }
        let now = tokio::time::Instant::now();
        spread.set_interval(interval, now);
        spread.reconcile(&members_of(&engine, job), now);
        engine.inner.jobs.scheduled(job, spread.len());
        for id in spread.take_due(now) {
            let Some(claim) = PollClaim::take(&engine, job, id) else {
                continue;
            };
            let e = engine.clone();
            engine.inner.tracker.spawn(async move {
                guarded_poll(&e, job, id).await;
                drop(claim);
            });
        }
        // Wake at the next due time, but at least every second to pick up fleet changes.
        let next = spread
            .next_due()
            .unwrap_or(now + Duration::from_secs(1))
            .min(now + Duration::from_secs(1));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
            r = settings.changed() => if r.is_err() { return },
        }
    }
}

async fn fleet_loop(engine: Engine, job: JobKind) {
    let mut settings = engine.watch_settings();
    let cancel = engine.inner.cancel.clone();
    // First run soon after start, then every interval.
    let mut next = tokio::time::Instant::now() + Duration::from_millis(200);
    loop {
        let (enabled, interval) = job.schedule(&settings.borrow().value.polling);
        if enabled && tokio::time::Instant::now() >= next {
            let _ = timed(&engine, job, run_fleet_job(&engine, job)).await;
            next = tokio::time::Instant::now() + interval;
        } else if !enabled {
            next = tokio::time::Instant::now() + interval;
        }
        let wake = next.min(tokio::time::Instant::now() + interval);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => {}
            r = settings.changed() => {
                if r.is_err() { return }
                // A new interval counts from the last run.
                let (_, interval) = job.schedule(&settings.borrow().value.polling);
                next = next.min(tokio::time::Instant::now() + interval);
            }
        }
    }
}
