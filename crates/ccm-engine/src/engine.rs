//! [`Engine`]: the public front. It owns the store, the cloud provider, the CML client, the
//! resilience policies, the event bus and the background jobs, and offers every command and
//! query the API and the CLI need.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ccm_cloud::{CloudProvider, ImageQuery, InstanceQuery, RunSpec};
use ccm_domain::worker::{Ami, EndpointPolicy, NewWorker};
use ccm_domain::{
    Actor, AmiId, Ec2State, EventKind, InstanceId, InstanceType, PauseReason, Region,
    RuntimeSettings, Worker, WorkerAction, WorkerId,
};
use ccm_resilience::Resilience;
use ccm_store::{
    EventQuery, MetricsPoint, Page, Store, StoredEvent, Versioned, WorkerFilter, update_worker,
};
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::{BusEvent, EventBus};
use crate::clock::Clock;
use crate::config::EngineConfig;
use crate::convert::observation;
use crate::error::EngineError;
use crate::jobs::{JobBoard, JobKind, JobStatus};
use crate::writer::{Mutation, WriterHandle};

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

/// What the scheduler needs to know of a worker, kept in memory for the whole fleet.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Slot {
    pub(crate) region: Region,
    pub(crate) instance_id: Option<InstanceId>,
    pub(crate) state: Ec2State,
    pub(crate) service: ccm_domain::ServiceStatus,
    pub(crate) endpoint: Option<Arc<str>>,
    pub(crate) own_user_id: Option<Arc<str>>,
    pub(crate) created_at: DateTime<Utc>,
}

impl Slot {
    fn of(w: &Worker) -> Self {
        Self {
            region: w.region.clone(),
            instance_id: w.instance_id.clone(),
            state: w.ec2_state,
            service: w.service.status,
            endpoint: w.endpoint.as_deref().map(Arc::from),
            own_user_id: w.cml.own_user_id.as_deref().map(Arc::from),
            created_at: w.created_at,
        }
    }

    /// Running with an endpoint: CML can be asked.
    pub(crate) fn reachable(&self) -> Option<&Arc<str>> {
        (self.state == Ec2State::Running)
            .then_some(self.endpoint.as_ref())
            .flatten()
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) cloud: Arc<dyn CloudProvider>,
    pub(crate) cml: ccm_cml::CmlClient,
    pub(crate) resilience: Resilience,
    pub(crate) endpoint: EndpointPolicy,
    pub(crate) config: EngineConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) bus: EventBus,
    pub(crate) settings: watch::Sender<Versioned<RuntimeSettings>>,
    pub(crate) fleet: DashMap<WorkerId, Slot>,
    pub(crate) writer: Mutex<Option<WriterHandle>>,
    pub(crate) jobs: JobBoard,
    /// Bound the workers whose CML polls run at once (see `jobs::cml_gates`).
    pub(crate) cml_gates: crate::jobs::CmlGates,
    /// The (job, worker) polls running now: one at a time per pair (see `jobs::PollClaim`).
    pub(crate) polls: Mutex<std::collections::HashSet<(JobKind, WorkerId)>>,
    /// How many probes of workers known to be down triggered cycles left running in the
    /// background (see `jobs::run_cycle`; `Engine::probes_in_flight`).
    pub(crate) probing: std::sync::atomic::AtomicUsize,
    pub(crate) refresh_throttle: ccm_resilience::RefreshThrottle<WorkerId>,
    pub(crate) refresh_flight: ccm_resilience::SingleFlight<WorkerId, Result<(), String>>,
    pub(crate) idle_marks: DashMap<WorkerId, String>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) running: std::sync::atomic::AtomicBool,
}

/// The fleet monitor. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("workers", &self.inner.fleet.len())
            .finish()
    }
}

/// How to pick the image of a new worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmiSelector {
    /// The configured default (`[provisioning] ami_id` or `ami_name_pattern`).
    Default,
    /// This image.
    Id(AmiId),
    /// The newest image whose name matches.
    NamePattern(String),
}

/// A request to provision a new worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateWorker {
    /// Display name (also the `Name` tag).
    pub name: String,
    /// Region (default: `[provisioning] region`, else the provider's first).
    pub region: Option<Region>,
    /// Instance type (default from the configuration).
    pub instance_type: Option<InstanceType>,
    /// Image.
    pub ami: AmiSelector,
    /// Extra tags.
    pub tags: BTreeMap<String, String>,
}

/// Which instances to import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportSelector {
    /// These instances.
    InstanceIds(Vec<InstanceId>),
    /// Instances launched from this image.
    AmiId(AmiId),
    /// Instances launched from images whose name matches.
    AmiNamePattern(String),
    /// The configured `[import]` filter.
    Configured,
}

/// A request to import existing instances as workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRequest {
    /// Region to search (all configured regions when `None`).
    pub region: Option<Region>,
    /// What to import.
    pub selector: ImportSelector,
    /// Import every match; without it, more than one match is refused.
    pub all: bool,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImportReport {
    /// Instances that matched.
    pub matched: u32,
    /// Workers created.
    pub imported: Vec<WorkerId>,
    /// Instances that already were workers.
    pub existing: Vec<WorkerId>,
    /// Instances left out, and why.
    pub skipped: Vec<(String, String)>,
}

/// What an on-demand refresh did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RefreshOutcome {
    /// The refresh ran.
    Refreshed,
    /// A refresh was already running; this request joined it.
    Joined,
    /// Not started, and why.
    Skipped {
        /// Why.
        reason: ccm_domain::RefreshSkip,
        /// When a new refresh is allowed, for `throttled`.
        retry_in_seconds: Option<u64>,
    },
}

/// Worker counts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FleetCounts {
    /// Workers known.
    pub total: u64,
    /// By EC2 state.
    pub by_state: BTreeMap<String, u64>,
    /// By service status.
    pub by_service: BTreeMap<String, u64>,
}

/// Health of the engine and what it depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Overall: every component healthy.
    pub healthy: bool,
    /// The database answers.
    pub database: ComponentHealth,
    /// The scheduler runs.
    pub scheduler: ComponentHealth,
    /// The cloud provider, per region (breaker state of its endpoints).
    pub providers: Vec<ComponentHealth>,
    /// Workers known.
    pub workers: usize,
}

/// One component's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentHealth {
    /// Name.
    pub name: String,
    /// Healthy.
    pub ok: bool,
    /// Details.
    pub detail: String,
}

impl Engine {
    /// Builds the engine and starts its background work: the batched writer and the jobs.
    pub async fn start(parts: EngineParts) -> Result<Self, EngineError> {
        parts
            .config
            .validate()
            .map_err(|e| EngineError::invalid("config", e))?;
        let bus = EventBus::new(
            parts.store.clone(),
            parts.clock.clone(),
            &parts.config.event_source,
        );
        let stored = parts.store.runtime_settings().await?;
        let settings = if stored.version == 0 {
            Versioned {
                value: parts.initial_settings.clone(),
                version: 0,
            }
        } else {
            stored
        };
        settings
            .value
            .validate()
            .map_err(|e| EngineError::invalid(e.key, e.message))?;
        let (settings_tx, _) = watch::channel(settings);
        let throttle_cfg = parts.resilience.config().refresh_throttle.clone();
        let cml_gates = crate::jobs::cml_gates(parts.resilience.config());
        let inner = Arc::new(Inner {
            store: parts.store,
            cloud: parts.cloud,
            cml: parts.cml,
            resilience: parts.resilience,
            endpoint: parts.endpoint,
            config: parts.config,
            clock: parts.clock,
            bus,
            settings: settings_tx,
            fleet: DashMap::new(),
            writer: Mutex::new(None),
            jobs: JobBoard::default(),
            cml_gates,
            polls: Mutex::new(std::collections::HashSet::new()),
            probing: std::sync::atomic::AtomicUsize::new(0),
            refresh_throttle: ccm_resilience::RefreshThrottle::new(&throttle_cfg),
            refresh_flight: ccm_resilience::SingleFlight::new(),
            idle_marks: DashMap::new(),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            running: std::sync::atomic::AtomicBool::new(false),
        });
        let engine = Self { inner };
        engine.load_fleet().await?;
        let weak = Arc::downgrade(&engine.inner);
        let on_saved: crate::writer::OnSaved = Arc::new(move |w: &Worker| {
            if let Some(inner) = weak.upgrade() {
                inner.fleet.insert(w.id, Slot::of(w));
            }
        });
        let writer = crate::writer::spawn(
            engine.inner.store.clone(),
            engine.inner.bus.clone(),
            on_saved,
            engine.inner.config.write_batch,
            engine.inner.config.write_interval,
            &engine.inner.tracker,
        );
        *engine.inner.writer.lock() = Some(writer);
        engine.resume_interrupted_provisioning().await;
        crate::jobs::spawn_all(&engine);
        engine
            .inner
            .running
            .store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(workers = engine.inner.fleet.len(), "engine started");
        Ok(engine)
    }

    /// Stops the jobs, lets in-flight work finish (up to the configured grace), flushes the
    /// writer. Nothing accepted is left half-written.
    pub async fn shutdown(&self) {
        self.inner
            .running
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.inner.cancel.cancel();
        // Dropping the writer handle lets the writer drain and end.
        self.inner.writer.lock().take();
        self.inner.tracker.close();
        if tokio::time::timeout(self.inner.config.shutdown_grace, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace elapsed with work still running");
        }
        tracing::info!("engine stopped");
    }

    async fn load_fleet(&self) -> Result<(), EngineError> {
        let all = self.inner.store.list(&WorkerFilter::default()).await?;
        for w in &all.items {
            self.inner.fleet.insert(w.id, Slot::of(w));
        }
        Ok(())
    }

    // === queries ===

    /// The store (read access for the API).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The resilience policies (breaker and budget views).
    pub fn resilience(&self) -> &Resilience {
        &self.inner.resilience
    }

    /// Subscribes to live events.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<BusEvent> {
        self.inner.bus.subscribe()
    }

    /// Live subscribers.
    pub fn subscribers(&self) -> usize {
        self.inner.bus.subscribers()
    }

    /// Publishes events (used by the API for events it originates, e.g. a snapshot is not
    /// published; settings changes are).
    pub async fn emit(&self, worker: Option<WorkerId>, kinds: Vec<EventKind>) {
        self.inner.bus.emit(worker, kinds).await;
    }

    /// The current time, as the engine sees it.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Whether the scheduler is running.
    pub fn is_running(&self) -> bool {
        self.inner.running.load(std::sync::atomic::Ordering::SeqCst)
            && !self.inner.cancel.is_cancelled()
    }

    /// The runtime settings in force.
    pub fn settings(&self) -> Versioned<RuntimeSettings> {
        self.inner.settings.borrow().clone()
    }

    /// Watches the runtime settings.
    pub fn watch_settings(&self) -> watch::Receiver<Versioned<RuntimeSettings>> {
        self.inner.settings.subscribe()
    }

    /// Replaces the runtime settings (validated; applied at once, without a restart).
    /// `expected_version` guards against lost updates (`None`: overwrite).
    pub async fn update_settings(
        &self,
        new: RuntimeSettings,
        expected_version: Option<u64>,
        by: &Actor,
    ) -> Result<Versioned<RuntimeSettings>, EngineError> {
        new.validate()
            .map_err(|e| EngineError::invalid(e.key, e.message))?;
        let current = self.settings();
        let stored = self.inner.store.runtime_settings().await?;
        let expected = expected_version.unwrap_or(stored.version);
        let saved = self
            .inner
            .store
            .put_runtime_settings(&new, expected, by.as_str())
            .await?;
        let changed = new.changed_keys(&current.value);
        self.inner.settings.send_replace(saved.clone());
        if !changed.is_empty() {
            self.inner
                .bus
                .emit(
                    None,
                    [EventKind::SettingsUpdated {
                        changed,
                        by: by.clone(),
                    }],
                )
                .await;
        }
        Ok(saved)
    }

    /// One worker.
    pub async fn worker(&self, id: WorkerId) -> Result<Worker, EngineError> {
        self.inner
            .store
            .get(id)
            .await?
            .ok_or(EngineError::NotFound {
                what: "worker",
                id: id.to_string(),
            })
    }

    /// A page of workers.
    pub async fn workers(&self, filter: &WorkerFilter) -> Result<Page<Worker>, EngineError> {
        Ok(self.inner.store.list(filter).await?)
    }

    /// The metrics history of a worker since `since`.
    pub async fn metrics_history(
        &self,
        id: WorkerId,
        since: DateTime<Utc>,
    ) -> Result<Vec<MetricsPoint>, EngineError> {
        self.worker(id).await?;
        Ok(self.inner.store.metrics_history(id, since).await?)
    }

    /// Events of one worker, newest first.
    pub async fn worker_events(
        &self,
        id: WorkerId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, EngineError> {
        self.worker(id).await?;
        let q = EventQuery {
            subjects: vec![id.to_string()],
            before,
            limit,
            newest_first: true,
            ..Default::default()
        };
        Ok(self.inner.store.read(&q).await?)
    }

    /// The breaker state of a worker's CML endpoint.
    pub fn breaker_of(&self, worker: &Worker) -> Option<ccm_resilience::BreakerSnapshot> {
        worker
            .endpoint
            .as_deref()
            .and_then(|e| self.inner.resilience.breakers().snapshot_of(e))
    }

    /// Status of the background jobs.
    pub fn jobs(&self) -> Vec<JobStatus> {
        self.inner.jobs.snapshot(&self.settings().value.polling)
    }

    /// Runs a job now (a full cycle for per-worker jobs). Returns when it is done.
    pub async fn trigger_job(&self, job: JobKind) -> Result<(), EngineError> {
        crate::jobs::run_now(self, job).await
    }

    /// The savings report.
    pub async fn savings(&self) -> Result<ccm_domain::savings::SavingsReport, EngineError> {
        let all = self.inner.store.list(&WorkerFilter::default()).await?;
        let p = &self.inner.config.pricing;
        Ok(ccm_domain::savings::savings_report(
            &all.items,
            &p.hourly,
            &p.currency,
            self.now(),
        ))
    }

    /// Health of the database, the scheduler and the providers.
    pub async fn health(&self) -> HealthReport {
        let database = match self.inner.store.ping().await {
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
        let scheduler = ComponentHealth {
            name: "scheduler".into(),
            ok: self.is_running(),
            detail: if self.is_running() {
                "running".into()
            } else {
                "stopped".into()
            },
        };
        let breakers = self.inner.resilience.breakers();
        let providers: Vec<ComponentHealth> = self
            .inner
            .cloud
            .regions()
            .into_iter()
            .map(|r| {
                let key = format!("aws:{r}:ec2");
                let state = breakers.state(&key);
                let ok = !matches!(state, ccm_resilience::BreakerState::Open);
                ComponentHealth {
                    name: format!("{}:{r}", self.inner.cloud.name()),
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
            workers: self.inner.fleet.len(),
        }
    }

    /// Counts of workers by EC2 state and by service status, from memory (cheap enough for
    /// every `/metrics` scrape).
    pub fn counts(&self) -> FleetCounts {
        let mut counts = FleetCounts::default();
        for slot in self.inner.fleet.iter() {
            counts.total += 1;
            *counts
                .by_state
                .entry(slot.state.as_str().to_owned())
                .or_insert(0) += 1;
            *counts
                .by_service
                .entry(slot.service.as_str().to_owned())
                .or_insert(0) += 1;
        }
        counts
    }

    // === internals used by commands and jobs ===

    pub(crate) fn writer(&self) -> Option<WriterHandle> {
        self.inner.writer.lock().clone()
    }

    /// Queues a batched mutation (polls).
    pub(crate) fn submit(&self, id: WorkerId, mutation: Mutation) {
        match self.writer() {
            Some(w) => w.submit(id, mutation),
            None => tracing::debug!(worker = %id, "writer stopped; dropping a poll result"),
        }
    }

    /// Applies a change now (commands): reload-and-retry on conflicts, cache refreshed,
    /// events published. `change` returns the events or refuses.
    pub(crate) async fn change<F, E>(
        &self,
        id: WorkerId,
        mut change: F,
    ) -> Result<Worker, EngineError>
    where
        F: FnMut(&mut Worker) -> Result<Vec<EventKind>, E>,
        E: Into<EngineError>,
    {
        let (saved, events) = update_worker(self.inner.store.as_ref(), id, |w| change(w)).await?;
        self.inner.fleet.insert(saved.id, Slot::of(&saved));
        self.inner.bus.emit(Some(saved.id), events).await;
        Ok(saved)
    }

    fn default_region(&self) -> Result<Region, EngineError> {
        if let Some(r) = &self.inner.config.provisioning.region {
            return Region::parse(r).map_err(|e| EngineError::invalid("region", e));
        }
        self.inner
            .cloud
            .regions()
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::invalid("region", "no region given and none configured"))
    }

    // === commands ===

    /// Provisions a new worker: the record is created `pending` at once and RunInstances runs
    /// in the background; the worker gets its instance, or becomes `failed` with the reason.
    pub async fn create_worker(
        &self,
        req: CreateWorker,
        by: &Actor,
    ) -> Result<Worker, EngineError> {
        let name = req.name.trim().to_owned();
        if name.is_empty() || name.len() > 128 {
            return Err(EngineError::invalid("name", "must be 1 to 128 characters"));
        }
        let region = match req.region {
            Some(r) => r,
            None => self.default_region()?,
        };
        let p = &self.inner.config.provisioning;
        let instance_type = match req.instance_type {
            Some(t) => t,
            None => InstanceType::parse(&p.instance_type)
                .map_err(|e| EngineError::invalid("instance_type", e))?,
        };
        let query = match req.ami {
            AmiSelector::Id(id) => ImageQuery::Ids(vec![id]),
            AmiSelector::NamePattern(pattern) => ImageQuery::Name {
                pattern,
                owners: Vec::new(),
            },
            AmiSelector::Default => match (&p.ami_id, &p.ami_name_pattern) {
                (Some(id), _) => ImageQuery::Ids(vec![
                    AmiId::parse(id).map_err(|e| EngineError::invalid("ami", e))?,
                ]),
                (None, Some(pattern)) => ImageQuery::Name {
                    pattern: pattern.clone(),
                    owners: Vec::new(),
                },
                (None, None) => {
                    return Err(EngineError::invalid(
                        "ami",
                        "no AMI given and none configured",
                    ));
                }
            },
        };
        let images = self.inner.cloud.find_images(&region, &query).await?;
        let image = images
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::invalid("ami", "no image matches"))?;
        let mut tags = p.tags.clone();
        tags.extend(req.tags);
        let new = NewWorker {
            name,
            region: region.clone(),
            instance_type,
            ami: Ami {
                id: image.id.clone(),
                name: Some(image.name.clone()),
            },
            tags,
        };
        let (worker, events) = Worker::provision(new, by.clone(), self.now());
        let saved = self.inner.store.insert(&worker).await?;
        self.inner.fleet.insert(saved.id, Slot::of(&saved));
        self.inner.bus.emit(Some(saved.id), events).await;
        let engine = self.clone();
        let w = saved.clone();
        self.inner
            .tracker
            .spawn(async move { engine.provision(w).await });
        Ok(saved)
    }

    async fn provision(&self, worker: Worker) {
        let p = &self.inner.config.provisioning;
        let (Some(itype), Some(ami)) = (worker.instance_type.clone(), worker.ami.clone()) else {
            let _ = self
                .change(worker.id, |w| {
                    w.fail_provisioning("no instance type or image", self.now())
                })
                .await;
            return;
        };
        let mut spec = RunSpec::new(ami.id, itype, worker.name.clone())
            .with_client_token(format!("ccm-{}", worker.id.as_uuid().simple()));
        spec.subnet_id.clone_from(&p.subnet_id);
        spec.security_group_ids.clone_from(&p.security_group_ids);
        spec.key_name.clone_from(&p.key_name);
        spec.detailed_monitoring = p.detailed_monitoring;
        spec.tags = worker
            .tags
            .iter()
            .filter(|(k, _)| k.as_str() != "Name")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        spec.tags
            .insert("ccm:worker-id".into(), worker.id.to_string());
        let result = self.inner.cloud.run_instance(&worker.region, &spec).await;
        let now = self.now();
        let policy = self.inner.endpoint.clone();
        let outcome = match result {
            Ok(instance) => {
                let obs = observation(&instance);
                self.change(worker.id, |w| {
                    let mut events = w.assign_instance(instance.id.clone(), now);
                    match w.observe_ec2(&obs, &policy, now) {
                        Ok(more) => events.extend(more),
                        Err(e) => events.push(EventKind::WorkerInvalidTransition {
                            from: e.from,
                            to: e.to,
                        }),
                    }
                    Ok::<_, EngineError>(events)
                })
                .await
            }
            Err(err) => {
                tracing::warn!(worker = %worker.id, error = %err, "provisioning failed");
                let reason = err.to_string();
                self.change(worker.id, |w| {
                    w.fail_provisioning(&reason, now)
                        .map_err(|e| EngineError::Conflict(e.to_string()))
                })
                .await
            }
        };
        if let Err(err) = outcome {
            tracing::error!(worker = %worker.id, error = %err, "could not record the provisioning outcome");
        }
    }

    /// Workers left `pending` without an instance by a previous run are provisioned again
    /// (with the same client token, so EC2 never launches twice), or failed when too old.
    async fn resume_interrupted_provisioning(&self) {
        let filter = WorkerFilter {
            ec2_states: vec!["pending".into()],
            ..Default::default()
        };
        let Ok(page) = self.inner.store.list(&filter).await else {
            return;
        };
        for w in page.items.into_iter().filter(|w| w.instance_id.is_none()) {
            if self.now() - w.created_at > chrono::Duration::hours(12) {
                let now = self.now();
                let _ = self
                    .change(w.id, |x| {
                        x.fail_provisioning(
                            "provisioning was interrupted and is too old to resume",
                            now,
                        )
                        .map_err(|e| EngineError::Conflict(e.to_string()))
                    })
                    .await;
            } else {
                let engine = self.clone();
                self.inner
                    .tracker
                    .spawn(async move { engine.provision(w).await });
            }
        }
    }

    /// Imports existing instances; importing an instance twice returns the existing worker.
    pub async fn import_workers(
        &self,
        req: ImportRequest,
        by: &Actor,
    ) -> Result<ImportReport, EngineError> {
        let regions: Vec<Region> = match &req.region {
            Some(r) => vec![r.clone()],
            None if !self.inner.config.import.regions.is_empty() => self
                .inner
                .config
                .import
                .regions
                .iter()
                .filter_map(|r| Region::parse(r).ok())
                .collect(),
            None => self.inner.cloud.regions(),
        };
        if regions.is_empty() {
            return Err(EngineError::invalid("region", "no region to search"));
        }
        let mut candidates = Vec::new();
        for region in &regions {
            let query = match &req.selector {
                ImportSelector::InstanceIds(ids) => {
                    if ids.is_empty() {
                        return Err(EngineError::invalid("instance_ids", "must not be empty"));
                    }
                    InstanceQuery::ids(ids.iter().cloned())
                }
                ImportSelector::AmiId(id) => {
                    InstanceQuery::all().with(ccm_cloud::InstanceFilter::ImageId(vec![id.clone()]))
                }
                ImportSelector::AmiNamePattern(pattern) => {
                    match self.images_matching(region, pattern).await? {
                        Some(filter) => InstanceQuery::all().with(filter),
                        None => continue,
                    }
                }
                ImportSelector::Configured => {
                    let cfg = &self.inner.config.import;
                    let mut q = InstanceQuery::all();
                    if let Some(tag) = &cfg.tag
                        && let Some((k, v)) = tag.split_once('=')
                    {
                        q = q.with(ccm_cloud::InstanceFilter::tag(k, v));
                    }
                    if let Some(pattern) = &cfg.ami_name_pattern {
                        match self.images_matching(region, pattern).await? {
                            Some(filter) => q = q.with(filter),
                            None => continue,
                        }
                    }
                    if cfg.tag.is_none() && cfg.ami_name_pattern.is_none() {
                        return Err(EngineError::invalid(
                            "import",
                            "no [import] filter is configured",
                        ));
                    }
                    q
                }
            };
            candidates.extend(self.inner.cloud.describe_instances(region, &query).await?);
        }
        let mut report = ImportReport {
            matched: candidates.len() as u32,
            ..Default::default()
        };
        if let ImportSelector::InstanceIds(ids) = &req.selector {
            for id in ids {
                if !candidates.iter().any(|c| &c.id == id) {
                    report
                        .skipped
                        .push((id.to_string(), "not found in the searched regions".into()));
                }
            }
        }
        let importable: Vec<_> = candidates
            .into_iter()
            .filter(|i| !i.state.is_final())
            .collect();
        if !req.all
            && importable.len() > 1
            && !matches!(req.selector, ImportSelector::InstanceIds(_))
        {
            return Err(EngineError::Conflict(format!(
                "{} instances match; import them all explicitly (all = true)",
                importable.len()
            )));
        }
        let names = self.ami_names(&importable).await;
        for instance in &importable {
            let obs = observation(instance);
            let (mut worker, events) = Worker::import(
                &obs,
                instance.region.clone(),
                &self.inner.endpoint,
                by.clone(),
                self.now(),
            );
            if let Some(ami) = worker.ami.as_mut() {
                ami.name = names.get(&ami.id).cloned();
            }
            let (saved, created) = self.inner.store.insert_or_get(&worker).await?;
            self.inner.fleet.insert(saved.id, Slot::of(&saved));
            if created {
                self.inner.bus.emit(Some(saved.id), events).await;
                report.imported.push(saved.id);
            } else {
                report.existing.push(saved.id);
            }
        }
        self.inner
            .bus
            .emit(
                None,
                [EventKind::ImportCompleted {
                    matched: report.matched,
                    imported: report.imported.len() as u32,
                    existing: report.existing.len() as u32,
                    by: by.clone(),
                }],
            )
            .await;
        Ok(report)
    }

    /// The names of the AMIs these instances run, one lookup per region. Best effort: an
    /// image that is gone (or a failed lookup) leaves the name unknown, never the import.
    async fn ami_names(&self, instances: &[ccm_cloud::Instance]) -> HashMap<AmiId, String> {
        let mut by_region: BTreeMap<&Region, Vec<AmiId>> = BTreeMap::new();
        for i in instances {
            let ids = by_region.entry(&i.region).or_default();
            if !ids.contains(&i.image_id) {
                ids.push(i.image_id.clone());
            }
        }
        let mut names = HashMap::new();
        for (region, ids) in by_region {
            match self
                .inner
                .cloud
                .find_images(region, &ImageQuery::Ids(ids))
                .await
            {
                Ok(images) => names.extend(images.into_iter().map(|i| (i.id, i.name))),
                Err(e) => {
                    tracing::warn!(region = %region, error = %e, "AMI names unknown for this import");
                }
            }
        }
        names
    }

    async fn images_matching(
        &self,
        region: &Region,
        pattern: &str,
    ) -> Result<Option<ccm_cloud::InstanceFilter>, EngineError> {
        let images = self
            .inner
            .cloud
            .find_images(
                region,
                &ImageQuery::Name {
                    pattern: pattern.to_owned(),
                    owners: Vec::new(),
                },
            )
            .await?;
        if images.is_empty() {
            return Ok(None);
        }
        Ok(Some(ccm_cloud::InstanceFilter::ImageId(
            images.into_iter().map(|i| i.id).collect(),
        )))
    }

    /// Starts a stopped worker.
    pub async fn start_worker(&self, id: WorkerId, by: &Actor) -> Result<Worker, EngineError> {
        self.ec2_action(id, WorkerAction::Start, None, by).await
    }

    /// Stops a running worker (counted as a manual pause).
    pub async fn stop_worker(&self, id: WorkerId, by: &Actor) -> Result<Worker, EngineError> {
        self.ec2_action(id, WorkerAction::Stop, Some(PauseReason::Manual), by)
            .await
    }

    /// Pauses a running worker (stop with a reason; an operator's pause is `manual`).
    pub async fn pause_worker(
        &self,
        id: WorkerId,
        reason: PauseReason,
        by: &Actor,
    ) -> Result<Worker, EngineError> {
        self.ec2_action(id, WorkerAction::Pause, Some(reason), by)
            .await
    }

    /// Resumes a paused worker.
    pub async fn resume_worker(&self, id: WorkerId, by: &Actor) -> Result<Worker, EngineError> {
        self.ec2_action(id, WorkerAction::Resume, None, by).await
    }

    /// Terminates the worker's instance, for good.
    pub async fn terminate_worker(&self, id: WorkerId, by: &Actor) -> Result<Worker, EngineError> {
        let w = self.worker(id).await?;
        if w.instance_id.is_none() {
            let now = self.now();
            return self
                .change(id, |x| {
                    x.request(WorkerAction::Terminate, None, by, now)?;
                    Ok::<_, EngineError>(x.terminate_without_instance(by, now))
                })
                .await;
        }
        self.ec2_action(id, WorkerAction::Terminate, None, by).await
    }

    async fn ec2_action(
        &self,
        id: WorkerId,
        action: WorkerAction,
        reason: Option<PauseReason>,
        by: &Actor,
    ) -> Result<Worker, EngineError> {
        let now = self.now();
        let worker = self
            .change(id, |w| w.request(action, reason, by, now))
            .await?;
        let (Some(instance), region) = (worker.instance_id.clone(), worker.region.clone()) else {
            return Err(EngineError::Conflict(
                "the worker has no EC2 instance yet".into(),
            ));
        };
        let ids = [instance.clone()];
        let cloud = &self.inner.cloud;
        let result = match action {
            WorkerAction::Start | WorkerAction::Resume => {
                cloud.start_instances(&region, &ids).await
            }
            WorkerAction::Stop | WorkerAction::Pause => cloud.stop_instances(&region, &ids).await,
            WorkerAction::Terminate => cloud.terminate_instances(&region, &ids).await,
            _ => return Ok(worker),
        };
        match result {
            Ok(_) => {
                self.observe_instance(id, &region, &instance).await;
                self.worker(id).await
            }
            Err(err) => {
                let message = err.to_string();
                let now = self.now();
                self.change(id, |w| {
                    Ok::<_, EngineError>(w.action_failed(action, &message, now))
                })
                .await?;
                Err(err.into())
            }
        }
    }

    /// Reads one instance now and applies what EC2 says (after an action).
    pub(crate) async fn observe_instance(
        &self,
        id: WorkerId,
        region: &Region,
        instance: &InstanceId,
    ) {
        match self
            .inner
            .cloud
            .describe_instances(region, &InstanceQuery::ids([instance.clone()]))
            .await
        {
            Ok(found) => {
                let policy = self.inner.endpoint.clone();
                let now = self.now();
                let obs = found.iter().find(|i| &i.id == instance).map(observation);
                let _ = self
                    .change(id, |w| {
                        Ok::<_, EngineError>(match &obs {
                            Some(o) => match w.observe_ec2(o, &policy, now) {
                                Ok(events) => events,
                                Err(e) => vec![EventKind::WorkerInvalidTransition {
                                    from: e.from,
                                    to: e.to,
                                }],
                            },
                            None => Vec::new(),
                        })
                    })
                    .await;
            }
            Err(err) => {
                tracing::debug!(worker = %id, error = %err, "could not read the instance after an action")
            }
        }
    }

    /// Deletes the worker record (the instance is untouched).
    pub async fn delete_worker(&self, id: WorkerId, by: &Actor) -> Result<(), EngineError> {
        let w = self.worker(id).await?;
        if !self.inner.store.delete(id).await? {
            return Err(EngineError::NotFound {
                what: "worker",
                id: id.to_string(),
            });
        }
        self.inner.fleet.remove(&id);
        if let Some(endpoint) = &w.endpoint {
            self.inner.resilience.breakers().remove(endpoint);
        }
        self.inner.refresh_throttle.remove(&id);
        self.inner
            .bus
            .emit(Some(id), [EventKind::WorkerDeleted { by: by.clone() }])
            .await;
        Ok(())
    }

    /// Sets and removes tags, in EC2 and on the record.
    pub async fn update_tags(
        &self,
        id: WorkerId,
        set: BTreeMap<String, String>,
        remove: Vec<String>,
        by: &Actor,
    ) -> Result<Worker, EngineError> {
        for (k, v) in &set {
            if k.is_empty() || k.len() > 128 || v.len() > 256 || k.starts_with("aws:") {
                return Err(EngineError::invalid(
                    "tags",
                    format!("tag {k:?}: keys 1-128 characters, values up to 256, no aws: prefix"),
                ));
            }
        }
        let now = self.now();
        let w = self
            .change(id, |w| w.request(WorkerAction::UpdateTags, None, by, now))
            .await?;
        let (Some(instance), region) = (w.instance_id.clone(), w.region.clone()) else {
            return Err(EngineError::Conflict(
                "the worker has no EC2 instance yet".into(),
            ));
        };
        if !set.is_empty() {
            self.inner
                .cloud
                .create_tags(&region, std::slice::from_ref(&instance), &set)
                .await?;
        }
        if !remove.is_empty() {
            self.inner
                .cloud
                .delete_tags(&region, std::slice::from_ref(&instance), &remove)
                .await?;
        }
        self.change(id, |w| {
            Ok::<_, EngineError>(w.apply_tags(set.clone(), remove.clone(), by, now))
        })
        .await
    }

    /// Turns on detailed CloudWatch monitoring.
    pub async fn enable_detailed_monitoring(
        &self,
        id: WorkerId,
        by: &Actor,
    ) -> Result<Worker, EngineError> {
        let now = self.now();
        let w = self
            .change(id, |w| {
                w.request(WorkerAction::EnableDetailedMonitoring, None, by, now)
            })
            .await?;
        let (Some(instance), region) = (w.instance_id.clone(), w.region.clone()) else {
            return Err(EngineError::Conflict(
                "the worker has no EC2 instance yet".into(),
            ));
        };
        self.inner
            .cloud
            .enable_detailed_monitoring(&region, &[instance])
            .await?;
        self.change(id, |w| {
            Ok::<_, EngineError>(w.detailed_monitoring_enabled(by, now))
        })
        .await
    }

    /// Switches idle detection for one worker.
    pub async fn set_idle_detection(
        &self,
        id: WorkerId,
        enabled: bool,
        by: &Actor,
    ) -> Result<Worker, EngineError> {
        let now = self.now();
        self.change(id, |w| {
            Ok::<_, EngineError>(w.set_idle_detection(enabled, by, now))
        })
        .await
    }

    /// Workers in memory (id → slot), for jobs.
    pub(crate) fn members(&self, pred: impl Fn(&Slot) -> bool) -> Vec<(WorkerId, Slot)> {
        self.inner
            .fleet
            .iter()
            .filter(|e| pred(e.value()))
            .map(|e| (*e.key(), e.value().clone()))
            .collect()
    }

    /// Workers by region with their instance ids, for batched EC2 jobs.
    pub(crate) fn by_region(
        &self,
        pred: impl Fn(&Slot) -> bool,
    ) -> HashMap<Region, Vec<(WorkerId, InstanceId)>> {
        let mut out: HashMap<Region, Vec<(WorkerId, InstanceId)>> = HashMap::new();
        for e in self.inner.fleet.iter() {
            if let (true, Some(i)) = (pred(e.value()), &e.value().instance_id) {
                out.entry(e.value().region.clone())
                    .or_default()
                    .push((*e.key(), i.clone()));
            }
        }
        out
    }

    /// The stale-data maximum age in force.
    pub fn stale_max_age(&self) -> Duration {
        self.settings().value.polling.stale_max_age
    }
}

/// Resilience events waiting to be published on an engine's bus (see
/// [`resilience_with_bus`]).
pub struct ResilienceEvents(tokio::sync::mpsc::UnboundedReceiver<ccm_resilience::ResilienceEvent>);

/// Builds the resilience policies so that their state changes (breaker opened, budget
/// exhausted, bulkhead full) become domain events: pass the returned events to
/// [`Engine::forward_resilience_events`] once the engine runs. `extra` also receives them.
pub fn resilience_with_bus(
    config: &ccm_resilience::ResilienceConfig,
    extra: Option<Arc<dyn ccm_resilience::Observer>>,
) -> (ResilienceEvents, Resilience) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let bus = Arc::new(ForwardObserver { tx, extra });
    (ResilienceEvents(rx), Resilience::new(config, bus))
}

struct ForwardObserver {
    tx: tokio::sync::mpsc::UnboundedSender<ccm_resilience::ResilienceEvent>,
    extra: Option<Arc<dyn ccm_resilience::Observer>>,
}

impl ccm_resilience::Observer for ForwardObserver {
    fn on_event(&self, event: &ccm_resilience::ResilienceEvent) {
        let _ = self.tx.send(event.clone());
        if let Some(extra) = &self.extra {
            extra.on_event(event);
        }
    }
}

impl Engine {
    /// Publishes resilience state changes as domain events (subject: the worker whose
    /// endpoint the breaker guards, when there is one).
    pub fn forward_resilience_events(&self, events: ResilienceEvents) {
        let engine = self.clone();
        let mut rx = events.0;
        let cancel = self.inner.cancel.clone();
        self.inner.tracker.spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = cancel.cancelled() => return,
                    e = rx.recv() => match e { Some(e) => e, None => return },
                };
                use ccm_resilience::ResilienceEvent as R;
                let (key, kind) = match event {
                    R::BreakerOpened {
                        key,
                        consecutive_failures,
                        reason,
                    } => (
                        Some(key.clone()),
                        EventKind::BreakerOpened {
                            key,
                            consecutive_failures,
                            reason,
                        },
                    ),
                    R::BreakerHalfOpen { key } => {
                        (Some(key.clone()), EventKind::BreakerHalfOpen { key })
                    }
                    R::BreakerClosed { key } => {
                        (Some(key.clone()), EventKind::BreakerClosed { key })
                    }
                    R::BudgetExhausted => (None, EventKind::RetryBudgetExhausted {}),
                    R::BudgetRecovered => (None, EventKind::RetryBudgetRecovered {}),
                    R::BulkheadRejected {
                        name,
                        max_concurrent,
                        max_queue,
                    } => (
                        None,
                        EventKind::BulkheadRejected {
                            name,
                            max_concurrent: max_concurrent as u64,
                            max_queue: max_queue as u64,
                        },
                    ),
                };
                let subject = key.and_then(|k| engine.worker_by_endpoint(&k));
                engine.inner.bus.emit(subject, [kind]).await;
            }
        });
    }

    fn worker_by_endpoint(&self, endpoint: &str) -> Option<WorkerId> {
        self.inner
            .fleet
            .iter()
            .find(|e| e.value().endpoint.as_deref() == Some(endpoint))
            .map(|e| *e.key())
    }
}
