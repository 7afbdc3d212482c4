//! [`WorkerCommands`]: commands on one worker's instance and record — start, stop, pause,
//! resume, terminate, tags, detailed monitoring, the idle-detection switch, delete — each
//! validated on the domain aggregate first, then sent to the cloud, then recorded.
//!
//! The idle policy's pause reaches this module only through [`IdlePause`] (the jobs' narrow
//! view of it).

use std::collections::BTreeMap;
use std::sync::Arc;

use ccm_cloud::{CloudProvider, InstanceQuery};
use ccm_domain::worker::EndpointPolicy;
use ccm_domain::{
    Actor, EventKind, InstanceId, PauseReason, Region, ResumeReason, Worker, WorkerAction, WorkerId,
};
use ccm_resilience::Resilience;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use crate::convert::observation;
use crate::error::EngineError;
use crate::jobs::IdlePause;
use crate::state::State;

/// Commands on workers.
pub(crate) struct WorkerCommands {
    state: Arc<State>,
    cloud: Arc<dyn CloudProvider>,
    endpoint: EndpointPolicy,
    resilience: Resilience,
}

impl WorkerCommands {
    pub(crate) fn new(
        state: Arc<State>,
        cloud: Arc<dyn CloudProvider>,
        endpoint: EndpointPolicy,
        resilience: Resilience,
    ) -> Self {
        Self {
            state,
            cloud,
            endpoint,
            resilience,
        }
    }

    /// Starts, stops, pauses, resumes or terminates the worker's instance.
    pub(crate) async fn ec2_action(
        &self,
        id: WorkerId,
        action: WorkerAction,
        reason: Option<PauseReason>,
        by: &Actor,
    ) -> Result<Worker, EngineError> {
        let now = self.state.now();
        let worker = self
            .state
            .change(id, |w| w.request(action, reason, by, now))
            .await?;
        let (Some(instance), region) = (worker.instance_id.clone(), worker.region.clone()) else {
            return Err(EngineError::Conflict(
                "the worker has no EC2 instance yet".into(),
            ));
        };
        let ids = [instance.clone()];
        let cloud = &self.cloud;
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
                self.state.worker(id).await
            }
            Err(err) => {
                let message = err.to_string();
                let now = self.state.now();
                self.state
                    .change(id, |w| {
                        Ok::<_, EngineError>(w.action_failed(action, &message, now))
                    })
                    .await?;
                Err(err.into())
            }
        }
    }

    /// Terminates the worker's instance, for good (a worker without one is ended at once).
    pub(crate) async fn terminate(&self, id: WorkerId, by: &Actor) -> Result<Worker, EngineError> {
        let w = self.state.worker(id).await?;
        if w.instance_id.is_none() {
            let now = self.state.now();
            return self
                .state
                .change(id, |x| {
                    x.request(WorkerAction::Terminate, None, by, now)?;
                    Ok::<_, EngineError>(x.terminate_without_instance(by, now))
                })
                .await;
        }
        self.ec2_action(id, WorkerAction::Terminate, None, by).await
    }

    /// Reads one instance now and applies what EC2 says (after an action, on a refresh).
    pub(crate) async fn observe_instance(
        &self,
        id: WorkerId,
        region: &Region,
        instance: &InstanceId,
    ) {
        match self
            .cloud
            .describe_instances(region, &InstanceQuery::ids([instance.clone()]))
            .await
        {
            Ok(found) => {
                let now = self.state.now();
                let obs = found.iter().find(|i| &i.id == instance).map(observation);
                let _ = self
                    .state
                    .change(id, |w| {
                        Ok::<_, EngineError>(match &obs {
                            Some(o) => match w.observe_ec2(o, &self.endpoint, now) {
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

    /// Deletes the worker record (the instance is untouched) and forgets its breaker.
    pub(crate) async fn delete(&self, id: WorkerId, by: &Actor) -> Result<(), EngineError> {
        let w = self.state.worker(id).await?;
        if !self.state.delete(id).await? {
            return Err(EngineError::NotFound {
                what: "worker",
                id: id.to_string(),
            });
        }
        if let Some(endpoint) = &w.endpoint {
            self.resilience.breakers().remove(endpoint);
        }
        self.state
            .emit(Some(id), [EventKind::WorkerDeleted { by: by.clone() }])
            .await;
        Ok(())
    }

    /// Sets and removes tags, in EC2 and on the record.
    pub(crate) async fn update_tags(
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
        let now = self.state.now();
        let w = self
            .state
            .change(id, |w| w.request(WorkerAction::UpdateTags, None, by, now))
            .await?;
        let (Some(instance), region) = (w.instance_id.clone(), w.region.clone()) else {
            return Err(EngineError::Conflict(
                "the worker has no EC2 instance yet".into(),
            ));
        };
        if !set.is_empty() {
            self.cloud
                .create_tags(&region, std::slice::from_ref(&instance), &set)
                .await?;
        }
        if !remove.is_empty() {
            self.cloud
                .delete_tags(&region, std::slice::from_ref(&instance), &remove)
                .await?;
        }
        self.state
            .change(id, |w| {
                Ok::<_, EngineError>(w.apply_tags(set.clone(), remove.clone(), by, now))
            })
            .await
    }

    /// Turns on detailed CloudWatch monitoring.
    pub(crate) async fn enable_detailed_monitoring(
        &self,
        id: WorkerId,
        by: &Actor,
    ) -> Result<Worker, EngineError> {
        let now = self.state.now();
        let w = self
            .state
            .change(id, |w| {
                w.request(WorkerAction::EnableDetailedMonitoring, None, by, now)
            })
            .await?;
        let (Some(instance), region) = (w.instance_id.clone(), w.region.clone()) else {
            return Err(EngineError::Conflict(
                "the worker has no EC2 instance yet".into(),
            ));
        };
        self.cloud
            .enable_detailed_monitoring(&region, &[instance])
            .await?;
        self.state
            .change(id, |w| {
                Ok::<_, EngineError>(w.detailed_monitoring_enabled(by, now))
            })
            .await
    }

    /// Switches idle detection for one worker.
    pub(crate) async fn set_idle_detection(
        &self,
        id: WorkerId,
        enabled: bool,
        by: &Actor,
    ) -> Result<Worker, EngineError> {
        let now = self.state.now();
        self.state
            .change(id, |w| {
                Ok::<_, EngineError>(w.set_idle_detection(enabled, by, now))
            })
            .await
    }
}

impl WorkerCommands {
    /// Keeps the worker awake until `until` (`None`: ends the snooze in force).
    pub(crate) async fn snooze(
        &self,
        id: WorkerId,
        until: Option<DateTime<Utc>>,
        by: &Actor,
    ) -> Result<Worker, EngineError> {
        let now = self.state.now();
        self.state
            .change(id, |w| match until {
                Some(until) => w
                    .snooze(until, by, now)
                    .map_err(|e| EngineError::invalid("until", e)),
                None => Ok(w.clear_snooze(by, now)),
            })
            .await
    }
}

impl IdlePause for WorkerCommands {
    fn pause_idle(&self, id: WorkerId) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move {
            self.ec2_action(
                id,
                WorkerAction::Pause,
                Some(PauseReason::IdleTimeout),
                &Actor::system("idle"),
            )
            .await
            .map(|_| ())
        })
    }

    fn pause_scheduled(&self, id: WorkerId) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move {
            self.ec2_action(
                id,
                WorkerAction::Pause,
                Some(PauseReason::Schedule),
                &Actor::system("schedule"),
            )
            .await
            .map(|_| ())
        })
    }

    fn resume_scheduled(&self, id: WorkerId) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move {
            let now = self.state.now();
            let by = Actor::system("schedule");
            let worker = self
                .state
                .change(id, |w| {
                    let events = w.request(WorkerAction::Resume, None, &by, now)?;
                    // The pending start names the schedule as its reason.
                    if let Some(p) = &mut w.monitoring.pending_resume {
                        p.reason = ResumeReason::Schedule;
                    }
                    Ok::<_, EngineError>(events)
                })
                .await?;
            let (Some(instance), region) = (worker.instance_id.clone(), worker.region.clone())
            else {
                return Err(EngineError::Conflict(
                    "the worker has no EC2 instance yet".into(),
                ));
            };
            match self
                .cloud
                .start_instances(&region, std::slice::from_ref(&instance))
                .await
            {
                Ok(_) => {
                    self.observe_instance(id, &region, &instance).await;
                    Ok(())
                }
                Err(err) => {
                    let message = err.to_string();
                    let now = self.state.now();
                    self.state
                        .change(id, |w| {
                            Ok::<_, EngineError>(w.action_failed(
                                WorkerAction::Resume,
                                &message,
                                now,
                            ))
                        })
                        .await?;
                    Err(err.into())
                }
            }
        })
    }
}
