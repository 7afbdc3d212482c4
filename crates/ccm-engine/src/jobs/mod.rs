//! The background jobs and their wiring ([`JobRunner`]).
//!
//! Two shapes of job:
//! - **per worker** (CML sync, labs, activity and idle): each worker this process owns is
//!   polled on its own schedule ([`crate::scheduler::Spread`]), never twice at once
//!   ([`gates::PollClaims`]), behind a gate (the CML gates or the `labs` bulkhead) that bounds
//!   the workers in flight;
//! - **fleet** (EC2 sync and CloudWatch metrics, batched per region; auto-import; event
//!   retention): one run per interval, when [`crate::ownership::Ownership::may_run`] grants it.
//!
//! Every job gets a [`JobContext`], never the engine. Each loop runs supervised
//! (`job:<name>`, see [`crate::supervisor`]) inside an `info_span!("job", job)`; each worker
//! poll inside an `info_span!("poll", job, worker, fence)`. Intervals and switches come from
//! the runtime settings and take effect at once.
//!
//! **Job events** (`ccm.job.started`, `ccm.job.completed`, `ccm.job.failed`) are emitted per
//! *run*: every fleet-job run (scheduled or on demand) and every triggered cycle of a
//! per-worker job (`run_now`, `run_cml_cycle`), with its duration and counts — never per
//! worker poll (10,000 workers would flood the log; a poll's outcome is the worker's own
//! status and events). A run this process is not granted emits nothing.

mod activity;
mod board;
mod cml;
mod context;
mod ec2;
mod gates;
mod labs;
mod metrics;
mod schedule;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ccm_domain::settings::PollingSettings;
use ccm_domain::{EventKind, WorkerId};
use tracing::Instrument;

pub use board::JobStatus;
pub(crate) use cml::sync_worker;
pub(crate) use context::{AutoImport, ContextParts, IdlePause, JobContext};
pub use gates::CML_SYNC_CALLS;
pub(crate) use labs::refresh_labs;

use crate::error::{JobError, chain};
use crate::job_kind::JobKind;
use crate::ownership::Grant;
use crate::scheduler::Spread;
use crate::supervisor::{Criticality, Supervisor};
use crate::types::CycleReport;
use board::JobBoard;
use gates::{CmlGates, PollClaims, enter, known_down, polls_cml};

/// Spawns the job loops, runs triggered jobs and cycles, keeps the board. Cheap to clone.
#[derive(Clone)]
pub(crate) struct JobRunner {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<JobContext>,
    tasks: Supervisor,
    board: JobBoard,
    claims: PollClaims,
    gates: CmlGates,
    /// Probes of workers known to be down that triggered cycles left running.
    probing: AtomicUsize,
}

impl JobRunner {
    pub(crate) fn new(ctx: Arc<JobContext>, tasks: Supervisor) -> Self {
        let gates = CmlGates::new(ctx.resilience().config());
        Self {
            inner: Arc::new(Inner {
                ctx,
                tasks,
                board: JobBoard::default(),
                claims: PollClaims::default(),
                gates,
                probing: AtomicUsize::new(0),
            }),
        }
    }

    /// Starts every job's loop, each supervised as `job:<name>`.
    pub(crate) fn spawn_all(&self) {
        for job in JobKind::ALL.into_iter().filter(|j| j.runs_in_engine()) {
            let runner = self.clone();
            self.inner.tasks.supervise(
                format!("job:{}", job.as_str()),
                Criticality::Critical,
                None,
                move || {
                    let runner = runner.clone();
                    let span = tracing::info_span!("job", job = job.as_str());
                    async move {
                        if job.per_worker() {
                            runner.per_worker_loop(job).await;
                        } else {
                            runner.fleet_loop(job).await;
                        }
                    }
                    .instrument(span)
                },
            );
        }
    }

    /// The board.
    pub(crate) fn statuses(&self, polling: &PollingSettings) -> Vec<JobStatus> {
        self.inner.board.snapshot(polling)
    }

    /// CML syncs of workers known to be down that cycles left running in the background.
    pub(crate) fn probes_in_flight(&self) -> usize {
        self.inner.probing.load(Ordering::Relaxed)
    }

    /// Runs `job` now: a full cycle over every owned member for per-worker jobs, one run
    /// otherwise (when this process may run it). Returns when the results are stored.
    pub(crate) async fn run_now(&self, job: JobKind) -> Result<(), JobError> {
        let span = tracing::info_span!(
            "job",
            job = job.as_str(),
            trigger = Trigger::OnDemand.as_str(),
            fence = tracing::field::Empty
        );
        let result = async {
            if job.per_worker() {
                self.announced_cycle(job, Trigger::OnDemand).await;
                Ok(())
            } else {
                self.fleet_run(job, Trigger::OnDemand).await
            }
        }
        .instrument(span)
        .await;
        self.inner.ctx.flush().await;
        result
    }

    /// One full CML sync of every owned running worker, stored when it returns (workers
    /// known to be down are probed in the background, see [`Self::run_cycle`]).
    pub(crate) async fn run_cml_cycle(&self) -> CycleReport {
        let started = tokio::time::Instant::now();
        let counts = self
            .announced_cycle(JobKind::CmlSync, Trigger::Cycle)
            .instrument(tracing::info_span!(
                "job",
                job = "cml_sync",
                trigger = Trigger::Cycle.as_str()
            ))
            .await;
        self.inner.ctx.flush().await;
        CycleReport {
            workers: counts.members,
            seconds: started.elapsed().as_secs_f64(),
        }
    }

    /// A triggered cycle of a per-worker job between its `ccm.job.started` and
    /// `ccm.job.completed` events (with the counts). Returns once the results are stored.
    async fn announced_cycle(&self, job: JobKind, trigger: Trigger) -> CycleCounts {
        let ctx = &self.inner.ctx;
        let members = self.members(job);
        let len = members.len();
        ctx.announce(vec![EventKind::JobStarted {
            job: job.as_str().to_owned(),
            trigger: trigger.as_str().to_owned(),
        }])
        .await;
        let started = tokio::time::Instant::now();
        if job == JobKind::Activity
            && ccm_domain::idle::fleet_picture_needed(&ctx.settings().idle)
            && let Err(e) = ctx.refresh_fleet_picture().await
        {
            tracing::warn!(error = %e, "the fleet's busy share and return profile could not be computed");
        }
        let counts = CycleCounts {
            members: len,
            ..self.run_cycle(job, members).await
        };
        ctx.flush().await;
        ctx.announce(vec![EventKind::JobCompleted {
            job: job.as_str().to_owned(),
            duration_ms: millis(started.elapsed()),
            summary: serde_json::json!({
                "trigger": trigger.as_str(),
                "workers": counts.workers,
                "failed": counts.failed,
                "probing": counts.probing,
            }),
        }])
        .await;
        counts
    }

    /// The workers a per-worker job polls: the running ones with an endpoint that this
    /// process owns.
    fn members(&self, job: JobKind) -> Vec<WorkerId> {
        if !job.per_worker() {
            return Vec::new();
        }
        self.inner.ctx.owned(|s| s.reachable().is_some())
    }

    /// Polls every worker in `members` once, as fast as the job's gate allows. Returns when
    /// all are done, except workers known to be down. Used by triggered cycles and by
    /// `ccm bench`.
    ///
    /// - A poll is spawned only once it holds its gate slot, so a cycle of 10,000 workers
    ///   keeps at most the gate's width of tasks alive (not 10,000 waiting futures), and never
    ///   fills the gate's queue that the background jobs share.
    /// - A CML sync of a worker known to be down — `unavailable` at its last sync, or its
    ///   breaker due for the half-open probe — runs in the background, after the others have
    ///   their slots: confirming a dead worker takes a timeout (`cml.probe_timeout`, or the
    ///   attempt timeout for a breaker probe), and the cycle must not wait on a sick endpoint.
    ///   Its outcome is stored when it ends; cycles leave the worker out until then. Workers
    ///   whose breaker is open and not due cost nothing (the call is refused at once, no
    ///   request is sent).
    async fn run_cycle(&self, job: JobKind, members: Vec<WorkerId>) -> CycleCounts {
        let ctx = &self.inner.ctx;
        let mut counts = CycleCounts::default();
        let (down, up): (Vec<_>, Vec<_>) = members
            .into_iter()
            .filter_map(|id| self.inner.claims.take(job, id).map(|claim| (id, claim)))
            .partition(|(id, _)| job == JobKind::CmlSync && known_down(ctx, *id));
        let mut set = tokio::task::JoinSet::new();
        for (id, claim) in up {
            let span = poll_span(job, id);
            let gate = self.inner.gates.gate(ctx, job, id, false);
            let Some(permit) = enter(gate).instrument(span.clone()).await else {
                continue;
            };
            while let Some(done) = set.try_join_next() {
                counts.add(done.ok().flatten());
            }
            let runner = self.clone();
            let poll = async move {
                let outcome = runner.poll(job, id).await;
                drop((permit, claim));
                outcome
            }
            .instrument(span);
            // On the engine's runtime, also when the cycle was triggered from another (the
            // API's, a benchmark's).
            match self.inner.tasks.home() {
                Some(home) => set.spawn_on(poll, home),
                None => set.spawn(poll),
            };
        }
        for (id, claim) in down {
            counts.probing += 1;
            self.inner.probing.fetch_add(1, Ordering::Relaxed);
            let runner = self.clone();
            let gate = self.inner.gates.gate(ctx, job, id, true);
            self.inner.tasks.spawn(
                async move {
                    if let Some(permit) = enter(gate).await {
                        runner.poll(job, id).await;
                        drop(permit);
                    }
                    drop(claim);
                    runner.inner.probing.fetch_sub(1, Ordering::Relaxed);
                }
                .instrument(poll_span(job, id)),
            );
        }
        while let Some(done) = set.join_next().await {
            counts.add(done.ok().flatten());
        }
        counts
    }

    /// One poll of one worker, if this process owns it now; counted on the board. Runs in
    /// the poll's span (the grant's token is recorded on it). `None` when not owned, else
    /// whether the poll succeeded.
    async fn poll(&self, job: JobKind, id: WorkerId) -> Option<bool> {
        let ctx = &self.inner.ctx;
        let Some(grant) = ctx.ownership().owns_worker(id) else {
            tracing::debug!("not owned any more; poll skipped");
            return None;
        };
        tracing::Span::current().record("fence", grant.token().get());
        Some(
            self.timed(job, poll_worker(ctx, &grant, job, id))
                .await
                .is_ok(),
        )
    }

    /// One poll of one worker, under the job's gate (scheduled polls).
    async fn guarded_poll(&self, job: JobKind, id: WorkerId) {
        let ctx = &self.inner.ctx;
        let down = polls_cml(job) && known_down(ctx, id);
        let Some(permit) = enter(self.inner.gates.gate(ctx, job, id, down)).await else {
            return;
        };
        self.poll(job, id).await;
        drop(permit);
    }

    /// Runs one fleet job once: regional jobs per granted region, the others when granted;
    /// a run that happens is announced (`ccm.job.started`, then `completed` or `failed`).
    async fn fleet_run(&self, job: JobKind, trigger: Trigger) -> Result<(), JobError> {
        let ctx = &self.inner.ctx;
        if job.per_region() {
            let regions = ctx.regions(job, |_| true).len();
            if regions == 0 {
                tracing::debug!("no region of this job is granted here");
                return Ok(());
            }
            let summary = serde_json::json!({ "trigger": trigger.as_str(), "regions": regions });
            let run = self.timed(job, regional_job(ctx, job));
            return self.announced(job, trigger, summary, run).await;
        }
        let Some(grant) = ctx.ownership().may_run(job, None) else {
            tracing::debug!("another replica runs this job");
            return Ok(());
        };
        tracing::Span::current().record("fence", grant.token().get());
        let summary = serde_json::json!({ "trigger": trigger.as_str() });
        let run = self.timed(job, global_job(ctx, &grant, job));
        self.announced(job, trigger, summary, run).await
    }

    /// Runs one fleet-job run between its job events.
    async fn announced<F>(
        &self,
        job: JobKind,
        trigger: Trigger,
        summary: serde_json::Value,
        run: F,
    ) -> Result<(), JobError>
    where
        F: Future<Output = Result<(), JobError>>,
    {
        let ctx = &self.inner.ctx;
        ctx.announce(vec![EventKind::JobStarted {
            job: job.as_str().to_owned(),
            trigger: trigger.as_str().to_owned(),
        }])
        .await;
        let started = tokio::time::Instant::now();
        let result = run.await;
        let duration_ms = millis(started.elapsed());
        let done = match &result {
            Ok(()) => EventKind::JobCompleted {
                job: job.as_str().to_owned(),
                duration_ms,
                summary,
            },
            Err(e) => EventKind::JobFailed {
                job: job.as_str().to_owned(),
                error: chain(e),
                trigger: Some(trigger.as_str().to_owned()),
                duration_ms: Some(duration_ms),
            },
        };
        ctx.announce(vec![done]).await;
        result
    }

    /// Runs `fut` as one run of `job` on the board; logs a failure (with its causes).
    async fn timed<F>(&self, job: JobKind, fut: F) -> Result<(), JobError>
    where
        F: Future<Output = Result<(), JobError>>,
    {
        let ctx = &self.inner.ctx;
        let board = &self.inner.board;
        board.started(job, ctx.now());
        let started = tokio::time::Instant::now();
        let result = fut.await;
        let error = result.as_ref().err().map(|e| chain(e));
        if let Some(e) = &error {
            // One worker's poll failing is normal fleet life (its status says so); a fleet
            // job failing is worth a warning.
            if job.per_worker() {
                tracing::debug!(error = %e, "poll failed");
            } else {
                tracing::warn!(error = %e, "job failed");
            }
        }
        board.finished(job, ctx.now(), started.elapsed(), error);
        result
    }

    async fn per_worker_loop(self, job: JobKind) {
        let ctx = self.inner.ctx.clone();
        let mut settings = ctx.watch_settings();
        let (_, interval) = job.schedule(&settings.borrow().value.polling);
        let mut spread = Spread::new(interval);
        let cancel = self.inner.tasks.cancel_token().clone();
        loop {
            let (enabled, interval) = job.schedule(&settings.borrow().value.polling);
            if !enabled {
                self.inner.board.scheduled(job, 0);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = settings.changed() => if r.is_err() { return },
                }
                continue;
            }
            let now = tokio::time::Instant::now();
            spread.set_interval(interval, now);
            spread.reconcile(&self.members(job), now);
            self.inner.board.scheduled(job, spread.len());
            for id in spread.take_due(now) {
                let Some(claim) = self.inner.claims.take(job, id) else {
                    continue;
                };
                let runner = self.clone();
                self.inner.tasks.spawn(
                    async move {
                        runner.guarded_poll(job, id).await;
                        drop(claim);
                    }
                    .instrument(poll_span(job, id)),
                );
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

    async fn fleet_loop(self, job: JobKind) {
        let mut settings = self.inner.ctx.watch_settings();
        let cancel = self.inner.tasks.cancel_token().clone();
        // First run soon after start, then every interval.
        let mut next = tokio::time::Instant::now() + Duration::from_millis(200);
        loop {
            let (enabled, interval) = job.schedule(&settings.borrow().value.polling);
            if enabled && tokio::time::Instant::now() >= next {
                let _ = self
                    .fleet_run(job, Trigger::Scheduled)
                    .instrument(tracing::info_span!("run", fence = tracing::field::Empty))
                    .await;
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
}

/// What started a job run (the `trigger` of its events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// Its interval came round.
    Scheduled,
    /// Someone asked (`POST /system/jobs/{job}/run`).
    OnDemand,
    /// A full CML cycle (`Engine::run_cml_cycle`: benchmarks, tests).
    Cycle,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::OnDemand => "on_demand",
            Self::Cycle => "cycle",
        }
    }
}

/// What a triggered cycle did, for its `ccm.job.completed` summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CycleCounts {
    /// Workers the cycle was for (owned, running, with an endpoint).
    members: usize,
    /// Workers polled and waited for.
    workers: usize,
    /// Of those, polls that failed.
    failed: usize,
    /// Workers known to be down, probed in the background (not waited for).
    probing: usize,
}

impl CycleCounts {
    /// Counts one poll's outcome (`None`: skipped, no longer owned).
    fn add(&mut self, outcome: Option<bool>) {
        if let Some(ok) = outcome {
            self.workers += 1;
            if !ok {
                self.failed += 1;
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The span of one worker's poll: `worker` is always the worker id; `fence` is recorded once
/// the grant is known.
fn poll_span(job: JobKind, id: WorkerId) -> tracing::Span {
    tracing::info_span!(
        "poll",
        job = job.as_str(),
        worker = %id,
        fence = tracing::field::Empty
    )
}

/// Runs one poll of one worker for a per-worker job.
async fn poll_worker(
    ctx: &JobContext,
    grant: &Grant,
    job: JobKind,
    id: WorkerId,
) -> Result<(), JobError> {
    match job {
        JobKind::CmlSync => sync_worker(ctx, grant, id).await,
        JobKind::Labs => refresh_labs(ctx, grant, id).await,
        JobKind::Activity => {
            activity::read_activity(ctx, grant, id).await?;
            activity::evaluate_idle(ctx, grant, id).await
        }
        _ => Ok(()),
    }
}

/// Runs a job that asks for a grant per region.
async fn regional_job(ctx: &JobContext, job: JobKind) -> Result<(), JobError> {
    match job {
        JobKind::Ec2Sync => ec2::sync_all(ctx).await,
        JobKind::Metrics => metrics::collect(ctx).await,
        _ => Ok(()),
    }
}

/// Runs a fleet job granted as a whole.
async fn global_job(ctx: &JobContext, grant: &Grant, job: JobKind) -> Result<(), JobError> {
    match job {
        JobKind::AutoImport => ctx.import_configured(grant).await,
        JobKind::Schedules => schedule::apply_schedules(ctx).await,
        JobKind::EventRetention => {
            let keep = chrono::Duration::from_std(ctx.event_retention())
                .unwrap_or(chrono::Duration::days(30));
            ctx.prune_events(grant, ctx.now() - keep).await
        }
        _ => Ok(()),
    }
}
