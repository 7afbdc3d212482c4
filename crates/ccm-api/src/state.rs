//! [`ApiState`]: what every handler shares — the engine, the configuration, the
//! authenticator, the SSE hub, the metrics handle.

use std::sync::Arc;

use ccm_engine::Engine;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::{ApiConfig, AuthConfig, ConfigError};
use crate::sse::Hub;

struct Inner {
    engine: Engine,
    webhooks: std::sync::OnceLock<ccm_webhooks::Webhooks>,
    config: ApiConfig,
    auth: Authenticator,
    metrics: Option<PrometheusHandle>,
    hub: Arc<Hub>,
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The shared state of the API. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("auth", &self.inner.auth)
            .field("sse_clients", &self.inner.hub.clients())
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// Validates the configuration and builds the state. `metrics` renders `/metrics` (the
    /// binary installs the global recorder once and passes its handle; without one,
    /// `/metrics` answers 503). Must be called inside a tokio runtime (it starts the SSE hub).
    pub fn new(
        engine: Engine,
        config: ApiConfig,
        auth: AuthConfig,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        auth.validate()?;
        let sessions: Arc<dyn ccm_store::SessionRepo> = engine.store().clone();
        let auth = Authenticator::new(auth, Some(sessions))?;
        let stop = CancellationToken::new();
        let hub = Hub::start(
            &engine,
            config.sse_buffer,
            config.sse_max_clients,
            stop.clone(),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                webhooks: std::sync::OnceLock::new(),
                config,
                auth,
                metrics,
                hub,
                stop,
            }),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Shows these webhook deliveries at `GET /api/v1/system/webhooks` (once; a second call
    /// is ignored).
    pub fn attach_webhooks(&self, webhooks: ccm_webhooks::Webhooks) {
        if self.inner.webhooks.set(webhooks).is_err() {
            tracing::warn!("webhooks were attached twice; keeping the first");
        }
    }

    /// The webhook deliveries, when attached.
    pub(crate) fn webhooks(&self) -> Option<&ccm_webhooks::Webhooks> {
        self.inner.webhooks.get()
    }

    /// The `[api]` configuration.
    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    /// Live SSE clients.
    pub fn sse_clients(&self) -> usize {
        self.inner.hub.clients()
    }

    /// Live browser sessions.
    pub fn sessions(&self) -> usize {
        self.inner.auth.sessions.len()
    }

    /// Ends every event stream (at shutdown: graceful shutdown waits for open connections).
    pub fn close_streams(&self) {
        self.inner.stop.cancel();
    }

    pub(crate) fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }

    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    pub(crate) fn metrics_handle(&self) -> Option<&PrometheusHandle> {
        self.inner.metrics.as_ref()
    }

    pub(crate) fn stop_token(&self) -> CancellationToken {
        self.inner.stop.clone()
    }
}
