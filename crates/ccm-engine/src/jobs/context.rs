//! [`JobContext`]: everything a job may read and write, handed to every job run and worker
//! poll — as kube-rs hands a reconciler its `Context` — instead of the whole engine.
//!
//! - **Reads**: the fleet index (only the workers this process owns, see
//!   [`crate::ownership`]), the runtime settings, the store (for reads), the CML client, the
//!   cloud provider, the resilience policies, the clock.
//! - **Writes**, each under the [`Grant`] the work runs with (refused once it is no longer
//!   held): mutations queued to the batched writer, lab records, events, event pruning.
//! - **Two commands** through narrow traits: the idle pause ([`IdlePause`]) and the
//!   auto-import ([`AutoImport`]).

use std::sync::Arc;
use std::time::Duration;

use ccm_cloud::CloudProvider;
use ccm_cml::CmlClient;
use ccm_domain::idle::FleetPicture;
use ccm_domain::worker::EndpointPolicy;
use ccm_domain::{EventKind, InstanceId, LabRecord, Region, RuntimeSettings, Worker, WorkerId};
use ccm_resilience::Resilience;
use ccm_store::{MetricsSample, Store, Versioned};
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::error::{EngineError, JobError};
use crate::fleet::Slot;
use crate::job_kind::JobKind;
use crate::ownership::{Grant, GrantScope, Ownership};
use crate::state::State;
use crate::types::ImportReport;
use crate::writer::Mutation;

/// Workers read at a time when a fleet-wide picture is built.
const FLEET_READ_CHUNK: usize = 256;

/// The idle policy's and the schedules' commands: pause this worker because it is idle or
/// its off-hours began; start it again because its off-hours ended.
pub(crate) trait IdlePause: Send + Sync {
    /// Pauses the worker (reason `idle_timeout`, by `system:idle`).
    fn pause_idle(&self, id: WorkerId) -> BoxFuture<'_, Result<(), EngineError>>;
    /// Pauses the worker (reason `schedule`, by `system:schedule`).
    fn pause_scheduled(&self, id: WorkerId) -> BoxFuture<'_, Result<(), EngineError>>;
    /// Starts the worker again (reason `schedule`, by `system:schedule`).
    fn resume_scheduled(&self, id: WorkerId) -> BoxFuture<'_, Result<(), EngineError>>;
}

/// The auto-import job's one command: import what the `[import]` filter matches.
pub(crate) trait AutoImport: Send + Sync {
    /// Imports every instance the configured filter matches (by `system:auto-import`).
    fn import_configured(&self) -> BoxFuture<'_, Result<ImportReport, EngineError>>;
}

/// One region's share of a job that runs per region: its grant and its workers (with their
/// instances).
pub(crate) struct RegionWork {
    pub(crate) region: Region,
    pub(crate) grant: Grant,
    pub(crate) workers: Vec<(WorkerId, InstanceId)>,
}

/// What a [`JobContext`] is built from.
pub(crate) struct ContextParts {
    pub(crate) state: Arc<State>,
    pub(crate) cml: CmlClient,
    pub(crate) cloud: Arc<dyn CloudProvider>,
    pub(crate) resilience: Resilience,
    pub(crate) endpoint: EndpointPolicy,
    pub(crate) ownership: Arc<dyn Ownership>,
    pub(crate) pause: Arc<dyn IdlePause>,
    pub(crate) import: Arc<dyn AutoImport>,
    pub(crate) event_retention: Duration,
}

/// What jobs read and write.
pub(crate) struct JobContext {
    state: Arc<State>,
    cml: CmlClient,
    cloud: Arc<dyn CloudProvider>,
    resilience: Resilience,
    endpoint: EndpointPolicy,
    ownership: Arc<dyn Ownership>,
    pause: Arc<dyn IdlePause>,
    import: Arc<dyn AutoImport>,
    event_retention: Duration,
    /// The idle decision last announced per worker (one event per change, not per poll).
    idle_marks: DashMap<WorkerId, String>,
    /// The pause time last warned about per worker (one warning per coming pause).
    warn_marks: DashMap<WorkerId, DateTime<Utc>>,
}

impl JobContext {
    pub(crate) fn new(parts: ContextParts) -> Self {
        Self {
            state: parts.state,
            cml: parts.cml,
            cloud: parts.cloud,
            resilience: parts.resilience,
            endpoint: parts.endpoint,
            ownership: parts.ownership,
            pause: parts.pause,
            import: parts.import,
            event_retention: parts.event_retention,
            idle_marks: DashMap::new(),
            warn_marks: DashMap::new(),
        }
    }

    // === reads ===

    /// The current time, as the engine sees it.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.state.now()
    }

    /// The runtime settings in force.
    pub(crate) fn settings(&self) -> RuntimeSettings {
        self.state.settings().value
    }

    /// Watches the runtime settings (job loops follow their intervals and switches).
    pub(crate) fn watch_settings(&self) -> watch::Receiver<Versioned<RuntimeSettings>> {
        self.state.watch_settings()
    }

    /// One worker's slot in the fleet index.
    pub(crate) fn slot(&self, id: WorkerId) -> Option<Slot> {
        self.state.fleet().get(id)
    }

    /// The workers this process owns whose slot satisfies `pred`.
    pub(crate) fn owned(&self, pred: impl Fn(&Slot) -> bool) -> Vec<WorkerId> {
        self.state
            .fleet()
            .select(pred)
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| self.ownership.owns_worker(*id).is_some())
            .collect()
    }

    /// For a job that runs per region: each region this process may run it in now, with its
    /// grant and the workers (with an instance) whose slot satisfies `pred`.
    pub(crate) fn regions(&self, job: JobKind, pred: impl Fn(&Slot) -> bool) -> Vec<RegionWork> {
        self.state
            .fleet()
            .by_region(pred)
            .into_iter()
            .filter_map(|(region, workers)| {
                let grant = self.ownership.may_run(job, Some(&region))?;
                Some(RegionWork {
                    region,
                    grant,
                    workers,
                })
            })
            .collect()
    }

    /// Who owns what.
    pub(crate) fn ownership(&self) -> &dyn Ownership {
        self.ownership.as_ref()
    }

    /// One worker, from the store.
    pub(crate) async fn worker(&self, id: WorkerId) -> Result<Worker, JobError> {
        self.state
            .worker(id)
            .await
            .map_err(|e| JobError::command("read worker", e))
    }

    /// The CML client.
    pub(crate) fn cml(&self) -> &CmlClient {
        &self.cml
    }

    /// The cloud provider.
    pub(crate) fn cloud(&self) -> &dyn CloudProvider {
        self.cloud.as_ref()
    }

    /// The resilience policies (breaker states, bulkheads).
    pub(crate) fn resilience(&self) -> &Resilience {
        &self.resilience
    }

    /// How endpoints are derived from instance addresses.
    pub(crate) fn endpoint(&self) -> &EndpointPolicy {
        &self.endpoint
    }

    /// How long events are kept.
    pub(crate) fn event_retention(&self) -> Duration {
        self.event_retention
    }

    /// Remembers the idle decision announced for a worker; `true` when it changed.
    pub(crate) fn note_idle(&self, id: WorkerId, label: &str) -> bool {
        self.idle_marks.insert(id, label.to_owned()).as_deref() != Some(label)
    }

    /// Forgets a worker's idle decision (it is busy, or was paused).
    pub(crate) fn clear_idle(&self, id: WorkerId) {
        self.idle_marks.remove(&id);
    }

    /// Remembers that a pause at `at` was warned about; `true` when it had not been.
    pub(crate) fn note_warning(&self, id: WorkerId, at: DateTime<Utc>) -> bool {
        self.warn_marks.insert(id, at) != Some(at)
    }

    /// What the idle policy knows of this process's fleet (its busy share, its return
    /// profile), computed at most once a minute of engine time.
    pub(crate) async fn fleet_picture(&self) -> Result<Arc<FleetPicture>, JobError> {
        let now = self.now();
        if let Some((at, picture)) = self.state.fleet_picture()
            && now >= at
            && now - at < chrono::Duration::seconds(60)
        {
            return Ok(picture);
        }
        self.refresh_fleet_picture().await
    }

    /// Computes the share of the fleet in use now and keeps it for the next minute of
    /// engine time. A triggered activity cycle calls it before its first poll, so every
    /// worker of the cycle is judged against the same share — the fleet as the previous
    /// reads left it — whatever order the concurrent polls finish in (otherwise the share
    /// would depend on which reads happened to be stored first).
    pub(crate) async fn refresh_fleet_picture(&self) -> Result<Arc<FleetPicture>, JobError> {
        let now = self.now();
        let settings = self.settings().idle;
        // The owned ids first, then their documents a chunk at a time: the whole fleet at
        // once (~6 KB a worker) would be the process's peak memory every activity cycle.
        let ids: Vec<WorkerId> = self
            .store()
            .list_stamps(&ccm_store::WorkerFilter::default())
            .await
            .map_err(JobError::Store)?
            .items
            .into_iter()
            .map(|s| s.id)
            .filter(|id| self.ownership.owns_worker(*id).is_some())
            .collect();
        let mut picture = FleetPicture::builder(&settings, now);
        for chunk in ids.chunks(FLEET_READ_CHUNK) {
            for w in &self
                .store()
                .get_many(chunk)
                .await
                .map_err(JobError::Store)?
            {
                picture.add(w);
            }
        }
        let picture = Arc::new(picture.finish());
        self.state.set_fleet_picture(now, picture.clone());
        Ok(picture)
    }

    /// Every worker this process owns, from the store (fleet jobs that need whole records).
    pub(crate) async fn owned_workers(&self) -> Result<Vec<Worker>, JobError> {
        let all = self
            .store()
            .list(&ccm_store::WorkerFilter::default())
            .await
            .map_err(JobError::Store)?;
        Ok(all
            .items
            .into_iter()
            .filter(|w| self.ownership.owns_worker(w.id).is_some())
            .collect())
    }

    // === writes (under a grant) ===

    /// Whether writes under `grant` are still allowed.
    /// [`Self::held`] as a result: `Err(NotHeld)` when the grant has lapsed.
    fn require(&self, grant: &Grant) -> Result<(), JobError> {
        if self.held(grant) {
            Ok(())
        } else {
            Err(JobError::NotHeld)
        }
    }

    fn held(&self, grant: &Grant) -> bool {
        let held = *grant.scope() == GrantScope::Command || self.ownership.holds(grant);
        if !held {
            metrics::counter!(crate::metrics::JOB_WRITES_REFUSED).increment(1);
            tracing::debug!(scope = ?grant.scope(), fence = %grant.token(), "grant no longer held; result dropped");
        }
        held
    }

    /// Queues a mutation to the batched writer, fenced by the grant's lease (waits while the
    /// writer's queue is full).
    pub(crate) async fn submit(&self, grant: &Grant, id: WorkerId, mutation: Mutation) {
        if !self.held(grant) {
            return;
        }
        match self.state.writer() {
            Some(w) => w.submit(id, mutation, self.ownership.fence(grant)).await,
            None => tracing::debug!(worker = %id, "writer stopped; dropping a poll result"),
        }
    }

    /// Queues a mutation and a metrics history sample, saved together.
    pub(crate) async fn submit_with_sample(
        &self,
        grant: &Grant,
        id: WorkerId,
        mutation: Mutation,
        at: DateTime<Utc>,
        sample: MetricsSample,
    ) {
        if !self.held(grant) {
            return;
        }
        match self.state.writer() {
            Some(w) => {
                w.submit_with_sample(id, mutation, self.ownership.fence(grant), at, sample)
                    .await;
            }
            None => tracing::debug!(worker = %id, "writer stopped; dropping a poll result"),
        }
    }

    /// Queues a mutation and waits until it is saved.
    pub(crate) async fn apply(
        &self,
        grant: &Grant,
        id: WorkerId,
        mutation: Mutation,
    ) -> Result<Worker, JobError> {
        self.require(grant)?;
        let writer = self
            .state
            .writer()
            .ok_or_else(|| JobError::Write("the writer has stopped".into()))?;
        writer
            .apply(id, mutation, self.ownership.fence(grant))
            .await
            .map_err(JobError::Write)
    }

    /// Replaces a worker's lab records; returns (added, removed).
    pub(crate) async fn replace_labs(
        &self,
        grant: &Grant,
        id: WorkerId,
        records: &[LabRecord],
    ) -> Result<(u32, u32), JobError> {
        self.require(grant)?;
        self.store()
            .replace_labs(id, records, self.ownership.fence(grant).as_ref())
            .await
            .map_err(JobError::from_store)
    }

    /// Adds or updates lab records without removing any.
    pub(crate) async fn upsert_labs(
        &self,
        grant: &Grant,
        records: &[LabRecord],
    ) -> Result<(), JobError> {
        self.require(grant)?;
        self.store()
            .upsert_labs(records, self.ownership.fence(grant).as_ref())
            .await
            .map_err(JobError::from_store)
    }

    /// Deletes events older than `before`.
    pub(crate) async fn prune_events(
        &self,
        grant: &Grant,
        before: DateTime<Utc>,
    ) -> Result<(), JobError> {
        self.require(grant)?;
        self.store()
            .prune_events(before)
            .await
            .map(|_| ())
            .map_err(JobError::Store)
    }

    /// Publishes events.
    pub(crate) async fn emit(
        &self,
        grant: &Grant,
        worker: Option<WorkerId>,
        kinds: Vec<EventKind>,
    ) {
        if self.held(grant) {
            self.state.emit(worker, kinds).await;
        }
    }

    /// Publishes this process's job events (`ccm.job.*`): they describe a run made here, so
    /// they need no grant.
    pub(crate) async fn announce(&self, kinds: Vec<EventKind>) {
        self.state.emit(None, kinds).await;
    }

    /// Waits until every poll result queued so far is stored.
    pub(crate) async fn flush(&self) {
        self.state.flush().await;
    }

    // === commands ===

    /// Pauses an idle worker.
    pub(crate) async fn pause_idle(&self, grant: &Grant, id: WorkerId) -> Result<(), JobError> {
        self.require(grant)?;
        self.pause
            .pause_idle(id)
            .await
            .map_err(|e| JobError::command("idle pause", e))
    }

    /// Pauses a worker whose off-hours began.
    pub(crate) async fn pause_scheduled(
        &self,
        grant: &Grant,
        id: WorkerId,
    ) -> Result<(), JobError> {
        self.require(grant)?;
        self.pause
            .pause_scheduled(id)
            .await
            .map_err(|e| JobError::command("schedule pause", e))
    }

    /// Starts a worker whose off-hours ended.
    pub(crate) async fn resume_scheduled(
        &self,
        grant: &Grant,
        id: WorkerId,
    ) -> Result<(), JobError> {
        self.require(grant)?;
        self.pause
            .resume_scheduled(id)
            .await
            .map_err(|e| JobError::command("schedule start", e))
    }

    /// Imports what the `[import]` filter matches.
    pub(crate) async fn import_configured(&self, grant: &Grant) -> Result<(), JobError> {
        self.require(grant)?;
        self.import
            .import_configured()
            .await
            .map(|_| ())
            .map_err(|e| JobError::command("auto-import", e))
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.state.store()
    }
}
