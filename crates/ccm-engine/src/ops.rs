//! Commands that talk to a worker's CML: on-demand refresh, lab actions, and the full sync
//! cycle used by triggered jobs and benchmarks.

use std::time::Duration;

use ccm_cml::CmlError;
use ccm_domain::{
    Actor, EventKind, LabAction, LabId, LabRecord, RefreshSkip, WorkerAction, WorkerId,
};
use ccm_resilience::ThrottleError;
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, RefreshOutcome};
use crate::error::EngineError;
use crate::jobs::{JobKind, refresh_labs, sync_worker};

/// The result of one full CML sync cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CycleReport {
    /// Workers polled.
    pub workers: usize,
    /// Wall time of the cycle.
    pub seconds: f64,
}

/// Maps a CML error on a command to the engine's error shapes (404 → not found, 400 →
/// invalid, 409 → conflict, anything else → upstream failure).
pub(crate) fn cml_error(err: CmlError, what: &'static str, id: &str) -> EngineError {
    match &err {
        CmlError::NotFound { .. } => EngineError::NotFound {
            what,
            id: id.to_owned(),
        },
        CmlError::InvalidArgument { .. } => EngineError::invalid(what, err.to_string()),
        CmlError::Http { status: 400, .. } => EngineError::invalid(what, err.to_string()),
        CmlError::Http { status: 409, .. } => EngineError::Conflict(err.to_string()),
        _ => EngineError::Cml(err),
    }
}

impl Engine {
    /// Refreshes one worker now (its EC2 state, a CML sync, its labs). Throttled per worker
    /// and de-duplicated: a request while one runs joins it; a request too soon after the
    /// last is skipped. Only a refresh that runs is recorded (`ccm.worker.refresh_requested`);
    /// a skipped one writes nothing and the caller is told why.
    pub async fn refresh_worker(
        &self,
        id: WorkerId,
        by: &Actor,
    ) -> Result<RefreshOutcome, EngineError> {
        let worker = self.worker(id).await?;
        if let Some(reason) = worker.refresh_blocker() {
            return Ok(RefreshOutcome::Skipped {
                reason,
                retry_in_seconds: None,
            });
        }
        match self.inner.refresh_throttle.try_acquire(id) {
            Ok(guard) => {
                self.emit(
                    Some(id),
                    vec![EventKind::WorkerRefreshRequested { by: by.clone() }],
                )
                .await;
                let engine = self.clone();
                let result = self
                    .inner
                    .refresh_flight
                    .run(id, async move {
                        if let (Some(instance), region) =
                            (worker.instance_id.clone(), worker.region.clone())
                        {
                            engine.observe_instance(id, &region, &instance).await;
                        }
                        let sync = sync_worker(&engine, id).await;
                        let labs = refresh_labs(&engine, id).await;
                        sync.and(labs)
                    })
                    .await;
                drop(guard);
                self.flush().await;
                result.map_err(EngineError::Upstream)?;
                Ok(RefreshOutcome::Refreshed)
            }
            Err(ThrottleError::AlreadyRunning) => {
                // Join the running refresh (if it just finished, this returns at once).
                let _ = self.inner.refresh_flight.run(id, async { Ok(()) }).await;
                Ok(RefreshOutcome::Joined)
            }
            Err(ThrottleError::Throttled { retry_in }) => Ok(RefreshOutcome::Skipped {
                reason: RefreshSkip::Throttled,
                retry_in_seconds: Some(retry_in.as_secs().max(1)),
            }),
        }
    }

    /// Waits until every poll result queued so far is stored.
    pub async fn flush(&self) {
        if let Some(writer) = self.writer() {
            writer.barrier().await;
        }
    }

    /// The labs of a worker, as last read.
    pub async fn labs(&self, id: WorkerId) -> Result<Vec<LabRecord>, EngineError> {
        self.worker(id).await?;
        Ok(self.inner.store.list_labs(id).await?)
    }

    fn lab_target(&self, worker: &ccm_domain::Worker) -> Result<ccm_cml::Target, EngineError> {
        let endpoint = match (&worker.endpoint, worker.ec2_state) {
            (Some(e), ccm_domain::Ec2State::Running) => e.clone(),
            _ => {
                return Err(EngineError::Conflict(format!(
                    "worker {} is not running with a CML endpoint",
                    worker.id
                )));
            }
        };
        self.inner
            .cml
            .target(&endpoint)
            .map_err(|e| EngineError::Upstream(e.to_string()))
    }

    /// Starts, stops, wipes or deletes a lab, then refreshes the worker's labs.
    pub async fn lab_action(
        &self,
        id: WorkerId,
        lab: &LabId,
        action: LabAction,
        by: &Actor,
    ) -> Result<(), EngineError> {
        let worker = self.worker(id).await?;
        let target = self.lab_target(&worker)?;
        let cml = &self.inner.cml;
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
    pub async fn download_lab(
        &self,
        id: WorkerId,
        lab: &LabId,
        by: &Actor,
    ) -> Result<String, EngineError> {
        let worker = self.worker(id).await?;
        let target = self.lab_target(&worker)?;
        // A read: logged, never an event (viewers may download; they must not cause writes).
        match self.inner.cml.download_lab(&target, lab).await {
            Ok(yaml) => {
                tracing::info!(worker = %id, lab = %lab, by = %by, "lab topology downloaded");
                Ok(yaml)
            }
            Err(err) => {
                tracing::info!(worker = %id, lab = %lab, by = %by, error = %err, "lab topology download failed");
                Err(cml_error(err, "lab", lab.as_str()))
            }
        }
    }

    /// Imports a topology (YAML or JSON) as a new lab; returns its id.
    pub async fn import_lab(
        &self,
        id: WorkerId,
        topology: &str,
        title: Option<&str>,
        by: &Actor,
    ) -> Result<LabId, EngineError> {
        if topology.trim().is_empty() {
            return Err(EngineError::invalid("topology", "must not be empty"));
        }
        let worker = self.worker(id).await?;
        let target = self.lab_target(&worker)?;
        let result = self.inner.cml.import_lab(&target, topology, title).await;
        let lab = match &result {
            Ok(r) => Some(LabId::parse(&r.id).map_err(|e| {
                EngineError::Upstream(format!("CML returned a malformed lab id: {e}"))
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
        lab.ok_or_else(|| EngineError::Upstream("import returned no lab".into()))
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
                self.emit(
                    Some(id),
                    vec![EventKind::LabActionCompleted {
                        lab_id: lab.map(ToString::to_string).unwrap_or_default(),
                        action,
                        title,
                        by: by.clone(),
                    }],
                )
                .await;
                if let Err(e) = refresh_labs(self, id).await {
                    tracing::debug!(worker = %id, error = %e, "labs refresh after an action failed");
                }
                self.flush().await;
                Ok(())
            }
            Err(err) => {
                self.emit(
                    Some(id),
                    vec![EventKind::LabActionFailed {
                        lab_id: lab.map(ToString::to_string),
                        action,
                        error: err.to_string(),
                    }],
                )
                .await;
                Err(cml_error(
                    err,
                    "lab",
                    &lab.map(ToString::to_string).unwrap_or_default(),
                ))
            }
        }
    }

    /// CML syncs of workers known to be down that a cycle left running in the background
    /// (see [`Self::run_cml_cycle`]).
    pub fn probes_in_flight(&self) -> usize {
        self.inner
            .probing
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs one full CML sync of every running worker, as fast as the CML gate allows
    /// (`cml_poll.max_concurrent / CML_SYNC_CALLS` workers at once, their calls in the
    /// `cml_poll` bulkhead), and waits until the results are stored. A worker known to be down
    /// (`unavailable` at its last sync, or its breaker due for its probe) is probed in the
    /// background and not waited for ([`Self::probes_in_flight`]).
    pub async fn run_cml_cycle(&self) -> CycleReport {
        let members: Vec<WorkerId> = self
            .members(|s| s.reachable().is_some())
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let workers = members.len();
        let started = tokio::time::Instant::now();
        crate::jobs::run_cycle(self, JobKind::CmlSync, members).await;
        self.flush().await;
        CycleReport {
            workers,
            seconds: started.elapsed().as_secs_f64(),
        }
    }

    /// Marks an action as requested on the record without calling anything (used by the
    /// licence flow to check its preconditions).
    pub(crate) async fn precondition(
        &self,
        id: WorkerId,
        action: WorkerAction,
        by: &Actor,
    ) -> Result<ccm_domain::Worker, EngineError> {
        let now = self.now();
        let mut w = self.worker(id).await?;
        w.request(action, None, by, now)?;
        Ok(w)
    }
}

/// How long a licence poll waits between reads at most (a guard on configuration).
pub(crate) const MAX_POLL: Duration = Duration::from_secs(60);
