//! Licence registration and deregistration: asynchronous in CML, so the engine accepts the
//! request, then polls `/licensing` until COMPLETED or FAILED (or a timeout), each step an
//! event. The token is never stored, logged or put in an event.

use std::sync::Arc;

use ccm_cml::{Deregistration, Secret};
use ccm_domain::licence::{Licence, RegistrationStatus};
use ccm_domain::{Actor, EventKind, WorkerAction, WorkerId};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::ops::{MAX_POLL, cml_error};

impl Engine {
    /// Asks the worker's CML to register with `token`; returns once CML accepted the request.
    /// The outcome arrives as events (`ccm.licence.registered` or
    /// `ccm.licence.registration_failed`).
    pub async fn register_licence(
        &self,
        id: WorkerId,
        token: Secret,
        reregister: bool,
        by: &Actor,
    ) -> Result<(), EngineError> {
        let worker = self.precondition(id, WorkerAction::Licence, by).await?;
        let endpoint = worker.endpoint.clone().unwrap_or_default();
        let target = self
            .inner
            .cml
            .target(&endpoint)
            .map_err(|e| EngineError::Upstream(e.to_string()))?;
        self.emit(
            Some(id),
            vec![EventKind::LicenceRegistrationRequested {
                reregister,
                by: by.clone(),
            }],
        )
        .await;
        if let Err(err) = self
            .inner
            .cml
            .register_licence(&target, &token, reregister)
            .await
        {
            self.emit(
                Some(id),
                vec![EventKind::LicenceRegistrationFailed {
                    reason: err.to_string(),
                }],
            )
            .await;
            return Err(cml_error(err, "licence", &id.to_string()));
        }
        let engine = self.clone();
        self.inner
            .tracker
            .spawn(async move { engine.watch_registration(id, target).await });
        Ok(())
    }

    async fn watch_registration(&self, id: WorkerId, target: ccm_cml::Target) {
        let cfg = self.inner.config.licence.clone();
        let deadline = tokio::time::Instant::now() + cfg.timeout;
        let mut last: Option<String> = None;
        let cancel = self.inner.cancel.clone();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(cfg.poll_interval.min(MAX_POLL)) => {}
            }
            match self.inner.cml.licensing(&target).await {
                Ok(status) => {
                    let licence: Licence = status.into();
                    self.record_licence(id, licence.clone());
                    let status = licence.registration.clone();
                    match status {
                        RegistrationStatus::Completed => {
                            self.emit(
                                Some(id),
                                vec![EventKind::LicenceRegistered {
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
                            self.emit(
                                Some(id),
                                vec![EventKind::LicenceRegistrationFailed { reason }],
                            )
                            .await;
                            return;
                        }
                        other => {
                            let text = other.as_str().to_owned();
                            if last.as_deref() != Some(text.as_str()) {
                                self.emit(
                                    Some(id),
                                    vec![EventKind::LicenceRegistrationProgress {
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
                self.emit(
                    Some(id),
                    vec![EventKind::LicenceRegistrationFailed { reason }],
                )
                .await;
                return;
            }
        }
    }

    fn record_licence(&self, id: WorkerId, licence: Licence) {
        let now = self.now();
        self.submit(
            id,
            Arc::new(move |w| {
                w.cml.licence.succeed(licence.clone(), now);
                Vec::new()
            }),
        );
    }

    /// Deregisters the worker's licence.
    pub async fn deregister_licence(&self, id: WorkerId, by: &Actor) -> Result<(), EngineError> {
        let worker = self.precondition(id, WorkerAction::Licence, by).await?;
        let endpoint = worker.endpoint.clone().unwrap_or_default();
        let target = self
            .inner
            .cml
            .target(&endpoint)
            .map_err(|e| EngineError::Upstream(e.to_string()))?;
        self.emit(
            Some(id),
            vec![EventKind::LicenceDeregistrationRequested { by: by.clone() }],
        )
        .await;
        match self.inner.cml.deregister_licence(&target).await {
            Ok(outcome) => {
                if outcome == Deregistration::LocalOnly {
                    tracing::warn!(worker = %id, "licence deregistered locally only: the licensing service was unreachable");
                }
                self.emit(Some(id), vec![EventKind::LicenceDeregistered {}])
                    .await;
                if let Ok(status) = self.inner.cml.licensing(&target).await {
                    self.record_licence(id, status.into());
                }
                self.flush().await;
                Ok(())
            }
            Err(err) => {
                self.emit(
                    Some(id),
                    vec![EventKind::LicenceDeregistrationFailed {
                        reason: err.to_string(),
                    }],
                )
                .await;
                Err(cml_error(err, "licence", &id.to_string()))
            }
        }
    }
}
