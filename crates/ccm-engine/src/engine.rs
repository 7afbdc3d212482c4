//! [`Engine`]: the public front. It wires the parts together at start and delegates every
//! command and query to the part that owns it:
//!
//! | part | module |
//! |---|---|
//! | state and queries (store, fleet index, settings, bus, writer) | `state`, `fleet` |
//! | commands on workers | `commands` |
//! | provisioning and imports | `provisioning` |
//! | CML commands (refresh, labs, licences) | `cml_commands`, `licence` |
//! | resilience events → domain events | `resilience_events` |
//! | jobs (loops, cycles, board) | `jobs` |
//! | who owns which worker and job | `ownership` |
//! | supervised background tasks | `supervisor` |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ccm_cloud::CloudProvider;
use ccm_domain::worker::EndpointPolicy;
use ccm_domain::{
    Actor, EventKind, LabAction, LabId, LabRecord, PauseReason, Region, RuntimeSettings, Worker,
    WorkerAction, WorkerId,
};
use ccm_resilience::Resilience;
use ccm_store::{MetricsPoint, Page, Store, StoredEvent, Versioned, WorkerFilter};
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::bus::{BusEvent, EventBus};
use crate::clock::Clock;
use crate::cml_commands::CmlCommands;
use crate::commands::WorkerCommands;
use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::job_kind::JobKind;
use crate::jobs::{ContextParts, JobContext, JobRunner, JobStatus};
use crate::ownership::{Ownership, SingleNode};
use crate::provisioning::Provisioning;
use crate::resilience_events::ResilienceEvents;
use crate::state::State;
use crate::supervisor::{Criticality, RestartPolicy, Supervisor, TaskStatus};
use crate::types::{
    AmiSelector, ComponentHealth, CreateWorker, CycleReport, FleetCounts, HealthReport,
    ImportPreview, ImportReport, ImportRequest, ProvisioningOptions, RefreshOutcome,
};

/// The fleet picture before the idle policy drew one: one shared value, so that a reader can
/// tell "still the same picture" by pointer ([`Engine::fleet_picture`]).
static NO_FLEET_PICTURE: std::sync::LazyLock<Arc<ccm_domain::idle::FleetPicture>> =
    std::sync::LazyLock::new(Arc::default);

/// What the engine is built from.
pub struct EngineParts {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// The cloud provider (AWS, or simulated), already wrapped in its resilience policies.
    pub cloud: Arc<dyn CloudProvider>,
    /// The CML client for the whole fleet.
    pub cml: ccm_cml::CmlClient,
    /// The resilience policies shared with the CML client (breakers, bulkheads, budget).
    pub resilience: Resilience,
    /// How worker endpoints are built from their addresses.
    pub endpoint: EndpointPolicy,
    /// Configuration.
    pub config: EngineConfig,
    /// Runtime settings to start with when the database has none.
    pub initial_settings: RuntimeSettings,
    /// Where `now` comes from.
    pub clock: Arc<dyn Clock>,
}

struct Inner {
    state: Arc<State>,
    ownership: Arc<dyn Ownership>,
    cloud: Arc<dyn CloudProvider>,
    resilience: Resilience,
    config: EngineConfig,
    tasks: Supervisor,
    jobs: JobRunner,
    commands: Arc<WorkerCommands>,
    provisioning: Provisioning,
    cml: CmlCommands,
    /// Set by [`Engine::follow_cluster`] (several replicas on PostgreSQL).
    cluster: std::sync::OnceLock<(Arc<crate::cluster::Listen>, crate::cluster::LeaseOwnership)>,
    running: AtomicBool,
}

/// The fleet monitor. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("workers", &self.inner.state.fleet().len())
            .finish()
    }
}

impl Engine {
    /// Builds the engine and starts its background work: the batched writer and the jobs,
    /// as the only replica (it owns every worker and job: [`SingleNode`]).
    pub async fn start(parts: EngineParts) -> Result<Self, EngineError> {
        Self::start_with_ownership(parts, Arc::new(SingleNode)).await
    }

    /// Like [`Self::start`], with polls and fleet jobs shared out by `ownership` (several
    /// replicas: each polls the workers and runs the jobs its grants cover).
    pub async fn start_with_ownership(
        parts: EngineParts,
        ownership: Arc<dyn Ownership>,
    ) -> Result<Self, EngineError> {
        parts
            .config
            .validate()
            .map_err(|e| EngineError::invalid("config", e))?;
        let bus = EventBus::new(
            parts.store.clone(),
            parts.clock.clone(),
            &parts.config.event_source,
        );
        let state = Arc::new(
            State::load(
                parts.store.clone(),
                bus.clone(),
                parts.clock.clone(),
                parts.initial_settings,
            )
            .await?,
        );
        let tasks = Supervisor::new(RestartPolicy::default());
        let weak = Arc::downgrade(&state);
        let writer = crate::writer::spawn(
            parts.store,
            bus,
            Arc::new(move |w: &Worker| {
                if let Some(state) = weak.upgrade() {
                    state.fleet().remember(w);
                }
            }),
            (
                parts.config.write_batch,
                parts.config.write_interval,
                parts.config.write_queue,
            ),
            &tasks,
        );
        state.attach_writer(writer);
        let commands = Arc::new(WorkerCommands::new(
            state.clone(),
            parts.cloud.clone(),
            parts.endpoint.clone(),
            parts.resilience.clone(),
        ));
        let provisioning = Provisioning::new(
            state.clone(),
            parts.cloud.clone(),
            parts.endpoint.clone(),
            parts.config.provisioning.clone(),
            parts.config.import.clone(),
            tasks.clone(),
        );
        let ctx = Arc::new(JobContext::new(ContextParts {
            state: state.clone(),
            cml: parts.cml,
            cloud: parts.cloud.clone(),
            resilience: parts.resilience.clone(),
            endpoint: parts.endpoint,
            ownership: ownership.clone(),
            pause: commands.clone(),
            import: Arc::new(provisioning.clone()),
            event_retention: parts.config.event_retention,
        }));
        let jobs = JobRunner::new(ctx.clone(), tasks.clone());
        let cml = CmlCommands::new(
            state.clone(),
            ctx,
            commands.clone(),
            &parts.resilience.config().refresh_throttle,
            parts.config.licence.clone(),
            tasks.clone(),
        );
        let engine = Self {
            inner: Arc::new(Inner {
                state,
                ownership,
                cloud: parts.cloud,
                resilience: parts.resilience,
                config: parts.config,
                tasks,
                jobs,
                commands,
                provisioning,
                cml,
                cluster: std::sync::OnceLock::new(),
                running: AtomicBool::new(false),
            }),
        };
        engine.inner.provisioning.resume_interrupted().await;
        engine.inner.jobs.spawn_all();
        engine.inner.running.store(true, Ordering::SeqCst);
        tracing::info!(workers = engine.inner.state.fleet().len(), "engine started");
        Ok(engine)
    }

    /// Stops the jobs, lets in-flight work finish (up to the configured grace), flushes the
    /// writer. Nothing accepted is left half-written.
    pub async fn shutdown(&self) {
        self.inner.running.store(false, Ordering::SeqCst);
        self.inner.tasks.cancel();
        // Dropping the writer handle lets the writer drain and end.
        self.inner.state.detach_writer();
        if !self
            .inner
            .tasks
            .wait(self.inner.config.shutdown_grace)
            .await
        {
            tracing::warn!("shutdown grace elapsed with work still running");
        }
        tracing::info!("engine stopped");
    }

    /// Publishes resilience state changes as domain events (subject: the worker whose
    /// endpoint the breaker guards, when there is one). Supervised as `resilience_events`.
    pub fn forward_resilience_events(&self, events: ResilienceEvents) {
        let queue = events.into_shared();
        let state = self.inner.state.clone();
        let cancel = self.inner.tasks.cancel_token().clone();
        self.inner.tasks.supervise(
            "resilience_events",
            Criticality::BestEffort,
            None,
            move || crate::resilience_events::forward(queue.clone(), state.clone(), cancel.clone()),
        );
    }

    /// Runs a long-lived task of another crate (the API's SSE hub) under the engine's
    /// supervisor: restarted with backoff when it panics or ends before `stop` is cancelled,
    /// counted in `ccm_task_restarts_total{task}`, reported by [`Self::health`] (and, when
    /// `critical`, making the engine not ready while down). Every run is also ended when the
    /// engine shuts down. It runs on the **caller's** runtime (the SSE hub on the API's), not
    /// on the engine's ([`crate::runtime`]).
    pub fn spawn_supervised<F, Fut>(
        &self,
        name: &str,
        criticality: Criticality,
        stop: CancellationToken,
        factory: F,
    ) where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let engine_stop = self.inner.tasks.cancel_token().clone();
        let span = tracing::info_span!("task", task = name);
        self.inner
            .tasks
            .supervise_here(name, criticality, Some(stop), move || {
                let run = factory();
                let engine_stop = engine_stop.clone();
                async move {
                    tokio::select! {
                        _ = engine_stop.cancelled() => {}
                        _ = run => {}
                    }
                }
                .instrument(span.clone())
            });
    }

    /// The runtime the engine runs its background work on (the one it was started on):
    /// polls, the writer, jobs, provisioning ([`crate::runtime`]). `None` only for an engine
    /// started outside any runtime, which cannot happen through [`Self::start`].
    pub fn runtime(&self) -> Option<tokio::runtime::Handle> {
        self.inner.tasks.home().cloned()
    }

    // === queries ===

    /// The store (read access for the API).
    pub fn store(&self) -> &Arc<dyn Store> {
        self.inner.state.store()
    }

    /// The resilience policies (breaker and budget views).
    pub fn resilience(&self) -> &Resilience {
        &self.inner.resilience
    }

    /// Subscribes to live events.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<BusEvent> {
        self.inner.state.bus().subscribe()
    }

    /// Live subscribers.
    pub fn subscribers(&self) -> usize {
        self.inner.state.bus().subscribers()
    }

    /// Publishes events (used by the API for events it originates, e.g. a snapshot is not
    /// published; settings changes are).
    pub async fn emit(&self, worker: Option<WorkerId>, kinds: Vec<EventKind>) {
        self.inner.state.emit(worker, kinds).await;
    }

    /// The current time, as the engine sees it.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.state.now()
    }

    /// Whether the scheduler is running and no critical background task is down.
    pub fn is_running(&self) -> bool {
        self.inner.running.load(Ordering::SeqCst)
            && !self.inner.tasks.is_stopping()
            && self.inner.tasks.critical_down().is_empty()
    }

    /// Whether this process may act: `Err` names why not (e.g. its cluster membership has
    /// lapsed). Part of `/readyz`.
    pub fn readiness(&self) -> Result<(), String> {
        self.inner.ownership.readiness()
    }

    /// The event bus (the cluster's log tailer feeds it).
    pub fn bus(&self) -> &EventBus {
        self.inner.state.bus()
    }

    /// Follows what other replicas do, through the store's notifications: their events reach
    /// this replica's subscribers in log order, their worker changes this replica's fleet index,
    /// their settings changes this replica's settings. Supervised as `cluster_tail`.
    /// `lease` is this replica's ownership (for [`Self::cluster_view`]). Call once, right
    /// after start.
    pub fn follow_cluster(
        &self,
        listen: crate::cluster::Listen,
        lease: crate::cluster::LeaseOwnership,
    ) {
        let state = self.inner.state.clone();
        let cancel = self.inner.tasks.cancel_token().clone();
        let listen = Arc::new(listen);
        if self.inner.cluster.set((listen.clone(), lease)).is_err() {
            tracing::warn!("follow_cluster called twice; ignored");
            return;
        }
        state.bus().set_tailed();
        self.inner
            .tasks
            .supervise("cluster_tail", Criticality::Critical, None, move || {
                crate::cluster::tail(state.clone(), listen.clone(), cancel.clone())
            });
    }

    /// Sessions ended on any replica (keys: SHA-256 of the id, hex), when this engine follows
    /// a cluster; `None` for a single node.
    pub fn ended_sessions(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        self.inner.cluster.get().map(|(l, _)| l.ended_sessions())
    }

    /// Every replica and lease, when this engine is one of several replicas (`None` for a
    /// single node).
    pub async fn cluster_view(
        &self,
    ) -> Option<Result<crate::cluster::ClusterView, ccm_store::StoreError>> {
        let (_, lease) = self.inner.cluster.get()?;
        Some(lease.view().await.map(|mut view| {
            let holders: std::collections::HashMap<&str, &str> = view
                .leases
                .iter()
                .map(|l| (l.key.as_str(), l.holder.as_str()))
                .collect();
            let mut workers = BTreeMap::new();
            for (id, _) in self.inner.state.fleet().select(|_| true) {
                let key = crate::cluster::partition_key(id, view.partitions);
                if let Some(holder) = holders.get(key.as_str()) {
                    *workers.entry((*holder).to_owned()).or_insert(0u64) += 1;
                }
            }
            view.workers = workers;
            view
        }))
    }

    /// The runtime settings in force.
    pub fn settings(&self) -> Versioned<RuntimeSettings> {
        self.inner.state.settings()
    }

    /// Watches the runtime settings.
    pub fn watch_settings(&self) -> watch::Receiver<Versioned<RuntimeSettings>> {
        self.inner.state.watch_settings()
    }

    /// Replaces the runtime settings (validated; applied at once, without a restart).
    /// `expected_version` guards against lost updates (`None`: overwrite).
    pub async fn update_settings(
        &self,
        new: RuntimeSettings,
        expected_version: Option<u64>,
        by: &Actor,
    ) -> Result<Versioned<RuntimeSettings>, EngineError> {
        self.inner
            .state
            .update_settings(new, expected_version, by)
            .await
    }

    /// One worker.
    pub async fn worker(&self, id: WorkerId) -> Result<Worker, EngineError> {
        self.inner.state.worker(id).await
    }

    /// A page of workers.
    pub async fn workers(&self, filter: &WorkerFilter) -> Result<Page<Worker>, EngineError> {
        self.inner.state.workers(filter).await
    }

    /// The same page as [`Self::workers`] as ids and committed versions only (no document
    /// read): what a reader holding rendered copies checks them against.
    pub async fn worker_stamps(
        &self,
        filter: &WorkerFilter,
    ) -> Result<Page<ccm_store::WorkerStamp>, EngineError> {
        Ok(self.inner.state.store().list_stamps(filter).await?)
    }

    /// Several workers by id, as committed now, in no particular order (missing ids are left
    /// out: deleted since they were listed).
    pub async fn workers_by_id(&self, ids: &[WorkerId]) -> Result<Vec<Worker>, EngineError> {
        Ok(self.inner.state.store().get_many(ids).await?)
    }

    /// The metrics history of a worker since `since`.
    pub async fn metrics_history(
        &self,
        id: WorkerId,
        since: DateTime<Utc>,
    ) -> Result<Vec<MetricsPoint>, EngineError> {
        self.inner.state.metrics_history(id, since).await
    }

    /// Events of one worker, newest first.
    pub async fn worker_events(
        &self,
        id: WorkerId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, EngineError> {
        self.inner.state.worker_events(id, before, limit).await
    }

    /// The breaker state of a worker's CML endpoint.
    pub fn breaker_of(&self, worker: &Worker) -> Option<ccm_resilience::BreakerSnapshot> {
        worker.endpoint.as_deref().and_then(|e| self.breaker_at(e))
    }

    /// The breaker state of a CML endpoint (a worker's `endpoint`), if it has one.
    pub fn breaker_at(&self, endpoint: &str) -> Option<ccm_resilience::BreakerSnapshot> {
        self.inner.resilience.breakers().snapshot_of(endpoint)
    }

    /// Status of the background jobs.
    pub fn jobs(&self) -> Vec<JobStatus> {
        self.inner.jobs.statuses(&self.settings().value.polling)
    }

    /// The supervised background tasks.
    pub fn tasks(&self) -> Vec<TaskStatus> {
        self.inner.tasks.statuses()
    }

    /// Runs a job now (a full cycle for per-worker jobs). Returns when it is done. A job the
    /// engine does not run itself (webhook delivery) is a conflict.
    pub async fn trigger_job(&self, job: JobKind) -> Result<(), EngineError> {
        if !job.runs_in_engine() {
            return Err(EngineError::Conflict(format!(
                "{} runs in its own loop and cannot be triggered",
                job.as_str()
            )));
        }
        Ok(self.inner.jobs.run_now(job).await?)
    }

    /// Who owns which worker and fleet job. Work that another crate runs for the engine's
    /// fleet (webhook delivery: [`JobKind::Webhooks`]) asks it for a grant before each batch
    /// and checks the grant before each write, exactly as the engine's own fleet jobs do.
    pub fn ownership(&self) -> Arc<dyn Ownership> {
        self.inner.ownership.clone()
    }

    /// The share of the fleet in use as the idle policy last saw it (`None` before the first
    /// activity cycle).
    pub fn fleet_busy_share(&self) -> Option<f64> {
        self.fleet_picture().busy_share
    }

    /// What the idle policy last knew of the fleet (busy share, return profile; empty before
    /// the first activity cycle). The same `Arc` until the picture changes.
    pub fn fleet_picture(&self) -> Arc<ccm_domain::idle::FleetPicture> {
        self.inner
            .state
            .fleet_picture()
            .map(|(_, p)| p)
            .unwrap_or_else(|| NO_FLEET_PICTURE.clone())
    }

    /// The savings report; its groups (week × reason) are also split by the value of tag
    /// `group_tag` when given.
    pub async fn savings(
        &self,
        group_tag: Option<&str>,
    ) -> Result<ccm_domain::savings::SavingsReport, EngineError> {
        self.inner
            .state
            .savings(&self.inner.config.pricing, group_tag)
            .await
    }

    /// Health of the database, the scheduler (and the supervised tasks) and the providers.
    pub async fn health(&self) -> HealthReport {
        let database = match self.store().ping().await {
            Ok(()) => ComponentHealth {
                name: "database".into(),
                ok: true,
                detail: "ok".into(),
            },
            Err(e) => ComponentHealth {
                name: "database".into(),
                ok: false,
                detail: e.to_string(),
            },
        };
        let scheduler = scheduler_health(
            self.inner.running.load(Ordering::SeqCst) && !self.inner.tasks.is_stopping(),
            &self.inner.tasks.critical_down(),
        );
        let breakers = self.inner.resilience.breakers();
        let cloud = &self.inner.cloud;
        let providers: Vec<ComponentHealth> = cloud
            .regions()
            .into_iter()
            .map(|r| {
                let key = format!("aws:{r}:ec2");
                let state = breakers.state(&key);
                let ok = !matches!(state, ccm_resilience::BreakerState::Open);
                ComponentHealth {
                    name: format!("{}:{r}", cloud.name()),
                    ok,
                    detail: format!("breaker {state:?}").to_lowercase(),
                }
            })
            .collect();
        HealthReport {
            healthy: database.ok && scheduler.ok && providers.iter().all(|p| p.ok),
            database,
            scheduler,
            providers,
            workers: self.inner.state.fleet().len(),
            tasks: self.tasks(),
        }
    }

    /// Counts of workers by EC2 state and by service status, from memory (cheap enough for
    /// every `/metrics` scrape).
    pub fn counts(&self) -> FleetCounts {
        self.inner.state.fleet().counts()
    }

    /// Running workers whose CML data is older than the stale-data maximum age (from memory,
    /// cheap enough for every `/metrics` scrape: `ccm_workers_stale`).
    pub fn stale_workers(&self) -> usize {
        self.inner
            .state
            .fleet()
            .stale(self.now(), self.stale_max_age())
    }

    /// The stale-data maximum age in force.
    pub fn stale_max_age(&self) -> Duration {
        self.settings().value.polling.stale_max_age
    }

    /// Waits until every poll result queued so far is stored.
    pub async fn flush(&self) {
        self.inner.state.flush().await;
    }

    /// CML syncs of workers known to be down that a cycle left running in the background
    /// (see [`Self::run_cml_cycle`]).
    pub fn probes_in_flight(&self) -> usize {
        self.inner.jobs.probes_in_flight()
    }

    /// Runs one full CML sync of every running worker, as fast as the CML gate allows
    /// (`cml_poll.max_concurrent / CML_SYNC_CALLS` workers at once, twice as many whose calls
    /// go one by one — plain HTTP —, their calls in the `cml_poll` bulkhead), and waits until
    /// the results are stored. A worker known to be down
    /// (`unavailable` at its last sync, or its breaker due for its probe) is probed in the
    /// background and not waited for ([`Self::probes_in_flight`]).
    pub async fn run_cml_cycle(&self) -> CycleReport {
        self.inner.jobs.run_cml_cycle().await
    }

    // === commands: provisioning and imports ===

    /// Provisions a new worker: the record is created `pending` at once and RunInstances runs
    /// in the background; the worker gets its instance, or becomes `failed` with the reason.
    pub async fn create_worker(
        &self,
        req: CreateWorker,
        by: &Actor,
    ) -> Result<Worker, EngineError> {
        self.inner.provisioning.create(req, by).await
    }

    /// The image a create with `selector` would launch in `region` (default region when
    /// `None`), under the same owner rule (`[provisioning] ami_owners`), without launching
    /// anything: for previews.
    pub async fn preview_image(
        &self,
        region: Option<Region>,
        selector: &AmiSelector,
    ) -> Result<ccm_cloud::Image, EngineError> {
        self.inner
            .provisioning
            .preview_image(region, selector)
            .await
    }

    /// What a create or import form may offer (regions, instance types, image defaults,
    /// the configured import filter).
    pub fn provisioning_options(&self) -> ProvisioningOptions {
        self.inner.provisioning.options()
    }

    /// The instances an import would take and which already are workers; changes nothing.
    pub async fn preview_import(&self, req: ImportRequest) -> Result<ImportPreview, EngineError> {
        self.inner.provisioning.preview_import(req).await
    }

    /// Imports existing instances; importing an instance twice returns the existing worker.
    pub async fn import_workers(
        &self,
        req: ImportRequest,
        by: &Actor,
    ) -> Result<ImportReport, EngineError> {
        self.inner.provisioning.import(req, by).await
    }

    // === commands: workers ===

    /// Starts a stopped worker.
    pub async fn start_worker(&self, id: WorkerId, by: &Actor) -> Result<Worker, EngineError> {
        self.inner
            .commands
            .ec2_action(id, WorkerAction::Start, None, by)
            .instrument(command_span("start", id))
            .await
    }

    /// Stops a running worker (counted as a manual pause).
    pub async fn stop_worker(&self, id: WorkerId, by: &Actor) -> Result<Worker, EngineError> {
        self.inner
            .commands
            .ec2_action(id, WorkerAction::Stop, Some(PauseReason::Manual), by)
            .instrument(command_span("stop", id))
            .await
    }

    /// Pauses a running worker (stop with a reason; an operator's pause is `manual`).
    pub async fn pause_worker(
        &self,
        id: WorkerId,
        reason: PauseReason,
        by: &Actor,
    ) -> Result<Worker, EngineError> {
        self.inner
            .commands
            .ec2_action(id, WorkerAction::Pause, Some(reason), by)
            .instrument(command_span("pause", id))
            .await
    }

    /// Resumes a paused worker.
    pub async fn resume_worker(&self, id: WorkerId, by: &Actor) -> Result<Worker, EngineError> {
        self.inner
            .commands
            .ec2_action(id, WorkerAction::Resume, None, by)
            .instrument(command_span("resume", id))
            .await
    }

    /// Terminates the worker's instance, for good.
    pub async fn terminate_worker(&self, id: WorkerId, by: &Actor) -> Result<Worker, EngineError> {
        self.inner
            .commands
            .terminate(id, by)
            .instrument(command_span("terminate", id))
            .await
    }

    /// Deletes the worker record (the instance is untouched).
    pub async fn delete_worker(&self, id: WorkerId, by: &Actor) -> Result<(), EngineError> {
        self.inner.cml.forget(id);
        self.inner
            .commands
            .delete(id, by)
            .instrument(command_span("delete", id))
            .await
    }

    /// Sets and removes tags, in EC2 and on the record.
    pub async fn update_tags(
        &self,
        id: WorkerId,
        set: BTreeMap<String, String>,
        remove: Vec<String>,
        by: &Actor,
    ) -> Result<Worker, EngineError> {
        self.inner
            .commands
            .update_tags(id, set, remove, by)
            .instrument(command_span("tags", id))
            .await
    }

    /// Turns on detailed CloudWatch monitoring.
    pub async fn enable_detailed_monitoring(
        &self,
        id: WorkerId,
        by: &Actor,
    ) -> Result<Worker, EngineError> {
        self.inner
            .commands
            .enable_detailed_monitoring(id, by)
            .instrument(command_span("detailed_monitoring", id))
            .await
    }

    /// Keeps a worker awake until `until`: no idle pause and no schedule stop before then
    /// (at most 14 days ahead; ends by itself).
    pub async fn snooze_worker(
        &self,
        id: WorkerId,
        until: DateTime<Utc>,
        by: &Actor,
    ) -> Result<Worker, EngineError> {
        self.inner.commands.snooze(id, Some(until), by).await
    }

    /// Ends a worker's snooze now.
    pub async fn clear_snooze(&self, id: WorkerId, by: &Actor) -> Result<Worker, EngineError> {
        self.inner.commands.snooze(id, None, by).await
    }

    /// Switches idle detection for one worker.
    pub async fn set_idle_detection(
        &self,
        id: WorkerId,
        enabled: bool,
        by: &Actor,
    ) -> Result<Worker, EngineError> {
        self.inner
            .commands
            .set_idle_detection(id, enabled, by)
            .instrument(command_span("idle_detection", id))
            .await
    }

    // === commands: CML ===

    /// Refreshes one worker now (its EC2 state, a CML sync, its labs). Throttled per worker
    /// and de-duplicated: a request while one runs joins it; a request too soon after the
    /// last is skipped. With several replicas both hold across them (a refresh running or
    /// recent on another replica skips this one as throttled).
    pub async fn refresh_worker(
        &self,
        id: WorkerId,
        by: &Actor,
    ) -> Result<RefreshOutcome, EngineError> {
        let cluster = self.inner.cluster.get().map(|(_, lease)| lease);
        self.inner
            .cml
            .refresh(id, by, cluster)
            .instrument(command_span("refresh", id))
            .await
    }

    /// The labs of a worker, as last read.
    pub async fn labs(&self, id: WorkerId) -> Result<Vec<LabRecord>, EngineError> {
        self.inner.cml.labs(id).await
    }

    /// Starts, stops, wipes or deletes a lab, then refreshes the worker's labs.
    pub async fn lab_action(
        &self,
        id: WorkerId,
        lab: &LabId,
        action: LabAction,
        by: &Actor,
    ) -> Result<(), EngineError> {
        self.inner
            .cml
            .lab_action(id, lab, action, by)
            .instrument(command_span("lab_action", id))
            .await
    }

    /// The lab's topology as YAML.
    pub async fn download_lab(
        &self,
        id: WorkerId,
        lab: &LabId,
        by: &Actor,
    ) -> Result<String, EngineError> {
        self.inner
            .cml
            .download_lab(id, lab, by)
            .instrument(command_span("download_lab", id))
            .await
    }

    /// Imports a topology (YAML or JSON) as a new lab; returns its id.
    pub async fn import_lab(
        &self,
        id: WorkerId,
        topology: &str,
        title: Option<&str>,
        by: &Actor,
    ) -> Result<LabId, EngineError> {
        self.inner
            .cml
            .import_lab(id, topology, title, by)
            .instrument(command_span("import_lab", id))
            .await
    }

    /// Asks the worker's CML to register with `token`; returns once CML accepted the request.
    /// The outcome arrives as events (`ccm.licence.registered` or
    /// `ccm.licence.registration_failed`).
    pub async fn register_licence(
        &self,
        id: WorkerId,
        token: ccm_cml::Secret,
        reregister: bool,
        by: &Actor,
    ) -> Result<(), EngineError> {
        self.inner
            .cml
            .register_licence(id, token, reregister, by)
            .instrument(command_span("register_licence", id))
            .await
    }

    /// Deregisters the worker's licence.
    pub async fn deregister_licence(&self, id: WorkerId, by: &Actor) -> Result<(), EngineError> {
        self.inner
            .cml
            .deregister_licence(id, by)
            .instrument(command_span("deregister_licence", id))
            .await
    }
}

/// The span of one operator command on a worker: `command` and the worker id (its CML and
/// cloud calls are child spans).
fn command_span(command: &'static str, id: WorkerId) -> tracing::Span {
    tracing::info_span!("command", command, worker = %id)
}

/// The scheduler's health: running, and no critical background task down.
fn scheduler_health(running: bool, down: &[String]) -> ComponentHealth {
    let detail = match (running, down.is_empty()) {
        (false, _) => "stopped".to_owned(),
        (true, true) => "running".to_owned(),
        (true, false) => format!("down, restarting: {}", down.join(", ")),
    };
    ComponentHealth {
        name: "scheduler".into(),
        ok: running && down.is_empty(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_critical_task_down_should_make_the_scheduler_unhealthy() {
        let ok = scheduler_health(true, &[]);
        assert!(ok.ok);
        assert_eq!(ok.detail, "running");
        let down = scheduler_health(true, &["writer".to_owned()]);
        assert!(!down.ok);
        assert_eq!(down.detail, "down, restarting: writer");
        assert!(!scheduler_health(false, &[]).ok);
    }
}
