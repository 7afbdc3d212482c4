//! [`CmlCommands`]: commands that talk to a worker's CML — the on-demand refresh (throttled
//! and de-duplicated per worker), lab actions, topology download and import; licences are in
//! `licence.rs`. CML errors become [`EngineError`]s here, once
//! ([`EngineError::from_cml_command`]).

use std::sync::Arc;

use ccm_cml::{CmlClient, CmlError};
use ccm_domain::{
    Actor, CmlCall, EventKind, LabAction, LabId, LabRecord, RefreshSkip, Worker, WorkerId,
};
use ccm_resilience::{RefreshThrottle, SingleFlight, ThrottleConfig, ThrottleError};
use ccm_store::StoreError;

use crate::cluster::{LeaseOwnership, refresh_key};
use crate::commands::WorkerCommands;
use crate::config::LicenceConfig;
use crate::error::{EngineError, JobError, UpstreamError};
use crate::jobs::{JobContext, refresh_labs, sync_worker};
use crate::ownership::Grant;
use crate::state::State;
use crate::supervisor::Supervisor;
use crate::types::RefreshOutcome;

/// CML commands. Cheap to clone.
#[derive(Clone)]
pub(crate) struct CmlCommands {
    inner: Arc<Inner>,
}

struct Inner {
    state: Arc<State>,
    jobs: Arc<JobContext>,
    commands: Arc<WorkerCommands>,
    throttle: RefreshThrottle<WorkerId>,
    /// The throttle's interval in force (zero when it is off), for the cluster-wide claim.
    throttle_interval: std::time::Duration,
    flight: SingleFlight<WorkerId, Result<(), Arc<JobError>>>,
    licence: LicenceConfig,
    tasks: Supervisor,
}

impl CmlCommands {
    pub(crate) fn new(
        state: Arc<State>,
        jobs: Arc<JobContext>,
        commands: Arc<WorkerCommands>,
        throttle: &ThrottleConfig,
        licence: LicenceConfig,
        tasks: Supervisor,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                state,
                jobs,
                commands,
                throttle: RefreshThrottle::new(throttle),
                throttle_interval: if throttle.enabled {
                    throttle.min_interval
                } else {
                    std::time::Duration::ZERO
                },
                flight: SingleFlight::new(),
                licence,
                tasks,
            }),
        }
    }

    pub(crate) fn state(&self) -> &State {
        &self.inner.state
    }

    pub(crate) fn cml(&self) -> &CmlClient {
        self.inner.jobs.cml()
    }

    pub(crate) fn licence_config(&self) -> &LicenceConfig {
        &self.inner.licence
    }

    pub(crate) fn tasks(&self) -> &Supervisor {
        &self.inner.tasks
    }

    /// Forgets a deleted worker's refresh throttle.
    pub(crate) fn forget(&self, id: WorkerId) {
        self.inner.throttle.remove(&id);
    }

    async fn emit(&self, id: WorkerId, kinds: Vec<EventKind>) {
        self.inner.state.emit(Some(id), kinds).await;
    }

    /// Refreshes one worker now (its EC2 state, a CML sync, its labs). Throttled per worker
    /// and de-duplicated: a request while one runs joins it; a request too soon after the
    /// last is skipped. Only a refresh that runs is recorded (`ccm.worker.refresh_requested`);
    /// a skipped one writes nothing and the caller is told why.
    ///
    /// With several replicas (`cluster`), the throttle and the single flight hold across them:
    /// the refresh also takes the cluster-wide claim `refresh:<id>` in the database, kept while
    /// it runs and until the throttle's interval has passed since it started. A refresh asked
    /// on another replica meanwhile is skipped as throttled, never run twice.
    pub(crate) async fn refresh(
        &self,
        id: WorkerId,
        by: &Actor,
        cluster: Option<&LeaseOwnership>,
    ) -> Result<RefreshOutcome, EngineError> {
        let worker = self.inner.state.worker(id).await?;
        if let Some(reason) = worker.refresh_blocker() {
            return Ok(RefreshOutcome::Skipped {
                reason,
                retry_in_seconds: None,
            });
        }
        match self.inner.throttle.try_acquire(id) {
            Ok(guard) => {
                let started = tokio::time::Instant::now();
                let claim = match cluster {
                    None => None,
                    Some(lease) => {
                        let hold = lease.config().lease_ttl.max(self.inner.throttle_interval);
                        match lease.claim(refresh_key(id), hold).await {
                            Ok(Some(claim)) => Some((lease, claim)),
                            Ok(None) => {
                                let secs = self.inner.throttle_interval.as_secs().max(1);
                                return Ok(RefreshOutcome::Skipped {
                                    reason: RefreshSkip::Throttled,
                                    retry_in_seconds: Some(secs),
                                });
                            }
                            Err(e) => return Err(EngineError::Store(e)),
                        }
                    }
                };
                self.emit(
                    id,
                    vec![EventKind::WorkerRefreshRequested { by: by.clone() }],
                )
                .await;
                let this = self.clone();
                // Boxed: the refresh is a deep future, and it is either awaited here or
                // inside `hold_while`; one heap copy instead of two on the stack.
                let result = Box::pin(self.inner.flight.run(id, async move {
                    if let (Some(instance), region) =
                        (worker.instance_id.clone(), worker.region.clone())
                    {
                        this.inner
                            .commands
                            .observe_instance(id, &region, &instance)
                            .await;
                    }
                    // A command: any process may refresh any worker.
                    let grant = Grant::command();
                    let sync = sync_worker(&this.inner.jobs, &grant, id).await;
                    let labs = refresh_labs(&this.inner.jobs, &grant, id).await;
                    sync.and(labs).map_err(Arc::new)
                }));
                let result = match &claim {
                    None => result.await,
                    Some((lease, claim)) => match lease.hold_while(claim, result).await {
                        Ok(result) => result,
                        Err(lost) => {
                            return Err(EngineError::Store(StoreError::Fenced {
                                key: lost.key,
                                token: lost.fence,
                            }));
                        }
                    },
                };
                if let Some((lease, claim)) = claim {
                    let keep = self
                        .inner
                        .throttle_interval
                        .saturating_sub(started.elapsed());
                    lease.settle(claim, keep).await;
                }
                drop(guard);
                self.inner.state.flush().await;
                result.map_err(UpstreamError::from_job)?;
                Ok(RefreshOutcome::Refreshed)
            }
            Err(ThrottleError::AlreadyRunning) => {
                // Join the running refresh (if it just finished, this returns at once).
                let _ = self.inner.flight.run(id, async { Ok(()) }).await;
                Ok(RefreshOutcome::Joined)
            }
            Err(ThrottleError::Throttled { retry_in }) => {
                let secs = retry_in.as_secs().max(1);
                Ok(RefreshOutcome::Skipped {
                    reason: RefreshSkip::Throttled,
                    retry_in_seconds: Some(secs),
                })
            }
        }
    }

    /// The labs of a worker, as last read.
    pub(crate) async fn labs(&self, id: WorkerId) -> Result<Vec<LabRecord>, EngineError> {
        self.inner.state.labs(id).await
    }

    /// The CML target of a worker that is running with an endpoint.
    pub(crate) fn target(&self, worker: &Worker) -> Result<ccm_cml::Target, EngineError> {
        let endpoint = match (&worker.endpoint, worker.ec2_state) {
            (Some(e), ccm_domain::Ec2State::Running) => e.clone(),
            _ => {
                return Err(EngineError::Conflict(format!(
                    "worker {} is not running with a CML endpoint",
                    worker.id
                )));
            }
        };
        self.cml()
            .target(&endpoint)
            .map_err(|e| UpstreamError::bad_gateway(e.to_string()).into())
    }

    /// Starts, stops, wipes or deletes a lab, then refreshes the worker's labs.
    pub(crate) async fn lab_action(
        &self,
        id: WorkerId,
        lab: &LabId,
        action: LabAction,
        by: &Actor,
    ) -> Result<(), EngineError> {
        let worker = self.inner.state.worker(id).await?;
        let target = self.target(&worker)?;
        let cml = self.cml();
        let result = match action {
            LabAction::Start => cml.start_lab(&target, lab).await,
            LabAction::Stop => cml.stop_lab(&target, lab).await,
            LabAction::Wipe => cml.wipe_lab(&target, lab).await,
            LabAction::Delete => cml.delete_lab(&target, lab).await,
            LabAction::Download | LabAction::Import => {
                return Err(EngineError::invalid(
                    "action",
                    "use download_lab or import_lab",
                ));
            }
        };
        self.after_lab_action(id, Some(lab), action, result.map(|()| None), by)
            .await
    }

    /// The lab's topology as YAML.
    pub(crate) async fn download_lab(
        &self,
        id: WorkerId,
        lab: &LabId,
        by: &Actor,
    ) -> Result<String, EngineError> {
        let worker = self.inner.state.worker(id).await?;
        let target = self.target(&worker)?;
        match self.cml().download_lab(&target, lab).await {
            // A read: logged, never written to the event log (a viewer causes no writes).
            Ok(yaml) => {
                tracing::info!(worker = %id, lab = %lab, by = %by, "lab topology downloaded");
                Ok(yaml)
            }
            Err(err) => {
                tracing::info!(worker = %id, lab = %lab, by = %by, error = %err, "lab topology download failed");
                Err(EngineError::from_cml_command(
                    err,
                    CmlCall::Labs,
                    "lab",
                    lab.as_str(),
                ))
            }
        }
    }

    /// Imports a topology (YAML or JSON) as a new lab; returns its id.
    pub(crate) async fn import_lab(
        &self,
        id: WorkerId,
        topology: &str,
        title: Option<&str>,
        by: &Actor,
    ) -> Result<LabId, EngineError> {
        if topology.trim().is_empty() {
            return Err(EngineError::invalid("topology", "must not be empty"));
        }
        let worker = self.inner.state.worker(id).await?;
        let target = self.target(&worker)?;
        let result = self.cml().import_lab(&target, topology, title).await;
        let lab = match &result {
            Ok(r) => Some(LabId::parse(&r.id).map_err(|e| {
                UpstreamError::bad_gateway(format!("CML returned a malformed lab id: {e}"))
            })?),
            Err(_) => None,
        };
        self.after_lab_action(
            id,
            lab.as_ref(),
            LabAction::Import,
            result.map(|_| title.map(str::to_owned)),
            by,
        )
        .await?;
        lab.ok_or_else(|| UpstreamError::bad_gateway("import returned no lab").into())
    }

    async fn after_lab_action(
        &self,
        id: WorkerId,
        lab: Option<&LabId>,
        action: LabAction,
        result: Result<Option<String>, CmlError>,
        by: &Actor,
    ) -> Result<(), EngineError> {
        match result {
            Ok(title) => {
                // The worker's labs are read again first, so that a client reloading them on
                // the event below already sees the action's outcome (a started lab shows as
                // started at once, not at the next labs poll).
                if let Err(e) = refresh_labs(&self.inner.jobs, &Grant::command(), id).await {
                    tracing::debug!(worker = %id, error = %crate::error::chain(&e), "labs refresh after an action failed");
                }
                self.inner.state.flush().await;
                self.emit(
                    id,
                    vec![EventKind::LabActionCompleted {
                        lab_id: lab.map(ToString::to_string).unwrap_or_default(),
                        action,
                        title,
                        by: by.clone(),
                    }],
                )
                .await;
                Ok(())
            }
            Err(err) => {
                self.emit(
                    id,
                    vec![EventKind::LabActionFailed {
                        lab_id: lab.map(ToString::to_string),
                        action,
                        error: err.to_string(),
                    }],
                )
                .await;
                Err(EngineError::from_cml_command(
                    err,
                    CmlCall::Labs,
                    "lab",
                    &lab.map(ToString::to_string).unwrap_or_default(),
                ))
            }
        }
    }
}
