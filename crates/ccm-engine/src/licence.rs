//! Licence registration and deregistration: asynchronous in CML, so the engine accepts the
//! request, then polls `/licensing` until COMPLETED or FAILED (or a timeout), each step an
//! event. The token is never stored, logged or put in an event.

use std::sync::Arc;
use std::time::Duration;

use ccm_cml::{Deregistration, Secret};
use ccm_domain::licence::{Licence, RegistrationStatus};
use ccm_domain::{Actor, CmlCall, EventKind, Worker, WorkerAction, WorkerId};

use crate::cml_commands::CmlCommands;
use crate::error::{EngineError, UpstreamError};

/// How long a licence poll waits between reads at most (a guard on configuration).
const MAX_POLL: Duration = Duration::from_secs(60);

impl CmlCommands {
    /// Checks that the worker's state allows a licence action (nothing is recorded).
    async fn licence_precondition(&self, id: WorkerId, by: &Actor) -> Result<Worker, EngineError> {
        let now = self.state().now();
        let mut w = self.state().worker(id).await?;
        w.request(WorkerAction::Licence, None, by, now)?;
        Ok(w)
    }

    fn licence_target(&self, worker: &Worker) -> Result<ccm_cml::Target, EngineError> {
        let endpoint = worker.endpoint.clone().unwrap_or_default();
        self.cml()
            .target(&endpoint)
            .map_err(|e| UpstreamError::bad_gateway(e.to_string()).into())
    }

    /// Asks the worker's CML to register with `token`; returns once CML accepted the request.
    /// The outcome arrives as events (`ccm.licence.registered` or
    /// `ccm.licence.registration_failed`).
    pub(crate) async fn register_licence(
        &self,
        id: WorkerId,
        token: Secret,
        reregister: bool,
        by: &Actor,
    ) -> Result<(), EngineError> {
        let worker = self.licence_precondition(id, by).await?;
        let target = self.licence_target(&worker)?;
        let state = self.state();
        state
            .emit(
                Some(id),
                [EventKind::LicenceRegistrationRequested {
                    reregister,
                    by: by.clone(),
                }],
            )
            .await;
        if let Err(err) = self
            .cml()
            .register_licence(&target, &token, reregister)
            .await
        {
            state
                .emit(
                    Some(id),
                    [EventKind::LicenceRegistrationFailed {
                        reason: err.to_string(),
                    }],
                )
                .await;
            return Err(EngineError::from_cml_command(
                err,
                CmlCall::Licensing,
                "licence",
                &id.to_string(),
            ));
        }
        let this = self.clone();
        self.tasks()
            .spawn(async move { this.watch_registration(id, target).await });
        Ok(())
    }

    async fn watch_registration(&self, id: WorkerId, target: ccm_cml::Target) {
        let cfg = self.licence_config().clone();
        let state = self.state();
        let deadline = tokio::time::Instant::now() + cfg.timeout;
        let mut last: Option<String> = None;
        let cancel = self.tasks().cancel_token().clone();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(cfg.poll_interval.min(MAX_POLL)) => {}
            }
            match self.cml().licensing(&target).await {
                Ok(status) => {
                    let licence: Licence = status.into();
                    self.record_licence(id, licence.clone()).await;
                    match licence.registration.clone() {
                        RegistrationStatus::Completed => {
                            state
                                .emit(
                                    Some(id),
                                    [EventKind::LicenceRegistered {
                                        smart_account: licence.smart_account,
                                        virtual_account: licence.virtual_account,
                                    }],
                                )
                                .await;
                            return;
                        }
                        RegistrationStatus::Failed => {
                            let reason = licence
                                .last_failure
                                .unwrap_or_else(|| "registration failed".into());
                            state
                                .emit(Some(id), [EventKind::LicenceRegistrationFailed { reason }])
                                .await;
                            return;
                        }
                        other => {
                            let text = other.as_str().to_owned();
                            if last.as_deref() != Some(text.as_str()) {
                                state
                                    .emit(
                                        Some(id),
                                        [EventKind::LicenceRegistrationProgress {
                                            status: text.clone(),
                                        }],
                                    )
                                    .await;
                                last = Some(text);
                            }
                        }
                    }
                }
                Err(err) => {
                    tracing::debug!(worker = %id, error = %err, "licence poll failed; will retry")
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let reason = format!(
                    "no outcome after {}",
                    humantime_serde::re::humantime::format_duration(cfg.timeout)
                );
                state
                    .emit(Some(id), [EventKind::LicenceRegistrationFailed { reason }])
                    .await;
                return;
            }
        }
    }

    async fn record_licence(&self, id: WorkerId, licence: Licence) {
        let now = self.state().now();
        self.state()
            .submit(
                id,
                Arc::new(move |w| {
                    w.cml.licence.succeed(licence.clone(), now);
                    Vec::new()
                }),
            )
            .await;
    }

    /// Deregisters the worker's licence.
    pub(crate) async fn deregister_licence(
        &self,
        id: WorkerId,
        by: &Actor,
    ) -> Result<(), EngineError> {
        let worker = self.licence_precondition(id, by).await?;
        let target = self.licence_target(&worker)?;
        let state = self.state();
        state
            .emit(
                Some(id),
                [EventKind::LicenceDeregistrationRequested { by: by.clone() }],
            )
            .await;
        match self.cml().deregister_licence(&target).await {
            Ok(outcome) => {
                if outcome == Deregistration::LocalOnly {
                    tracing::warn!(worker = %id, "licence deregistered locally only: the licensing service was unreachable");
                }
                state
                    .emit(Some(id), [EventKind::LicenceDeregistered {}])
                    .await;
                if let Ok(status) = self.cml().licensing(&target).await {
                    self.record_licence(id, status.into()).await;
                }
                state.flush().await;
                Ok(())
            }
            Err(err) => {
                state
                    .emit(
                        Some(id),
                        [EventKind::LicenceDeregistrationFailed {
                            reason: err.to_string(),
                        }],
                    )
                    .await;
                Err(EngineError::from_cml_command(
                    err,
                    CmlCall::Licensing,
                    "licence",
                    &id.to_string(),
                ))
            }
        }
    }
}
