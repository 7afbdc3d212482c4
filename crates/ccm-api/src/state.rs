//! [`ApiState`]: what every handler shares — the engine, the configuration, the
//! authenticator, the SSE hub, the rendered worker views, the metrics handle, the listener's TLS configuration and the
//! cookie policy that follows from it.

use std::sync::Arc;

use ccm_engine::Engine;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::{ApiConfig, AuthConfig, ConfigError, CookieSecure, ServerConfig};
use crate::sse::Hub;
use crate::view_cache::ViewCache;

/// How cookies are set: whether `Secure`, and whether their names carry the `__Host-`
/// prefix (only when every cookie is `Secure`: the browser then refuses one set without
/// `Secure`, with a `Domain`, or for a path other than `/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CookiePolicy {
    /// `Some(secure)` when fixed; `None`: per request (a trusted proxy's
    /// `X-Forwarded-Proto`).
    pub(crate) secure: Option<bool>,
    /// Names are `__Host-` prefixed.
    pub(crate) host_prefix: bool,
}

impl CookiePolicy {
    fn new(server: &ServerConfig, api: &ApiConfig, auth: &AuthConfig) -> Result<Self, ConfigError> {
        let https_url = api
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
        let secure = match (auth.cookie_secure, server.tls()) {
            (CookieSecure::Never, true) => {
                return Err(ConfigError {
                    key: "auth.cookie_secure".into(),
                    message: "\"never\" contradicts server.tls_cert: the listener speaks only HTTPS, so cookies are Secure".into(),
                });
            }
            (_, true) | (CookieSecure::Always, _) => Some(true),
            (CookieSecure::Never, false) => Some(false),
            (CookieSecure::Auto, false) if https_url => Some(true),
            (CookieSecure::Auto, false) if api.trust_forwarded_headers => None,
            (CookieSecure::Auto, false) => Some(false),
        };
        Ok(Self {
            secure,
            host_prefix: secure == Some(true),
        })
    }

    /// A cookie's name under this policy.
    pub(crate) fn name(&self, base: &'static str) -> std::borrow::Cow<'static, str> {
        if self.host_prefix {
            format!("__Host-{base}").into()
        } else {
            base.into()
        }
    }
}

struct Inner {
    engine: Engine,
    webhooks: std::sync::OnceLock<ccm_webhooks::Webhooks>,
    config: ApiConfig,
    server: ServerConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    cookies: CookiePolicy,
    proxies: Vec<ipnet::IpNet>,
    auth: Authenticator,
    metrics: Option<PrometheusHandle>,
    hub: Arc<Hub>,
    views: ViewCache,
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
    /// Validates the configuration and builds the state, with the default `[server]`
    /// section (plain HTTP). `metrics` renders `/metrics` (the binary installs the global
    /// recorder once and passes its handle; without one, `/metrics` answers 503). Must be
    /// called inside a tokio runtime (it starts the SSE hub).
    pub fn new(
        engine: Engine,
        config: ApiConfig,
        auth: AuthConfig,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Self, ConfigError> {
        Self::with_server(engine, ServerConfig::default(), config, auth, metrics)
    }

    /// As [`ApiState::new`], with a `[server]` section: its TLS certificate and key are
    /// read here, so a missing or unusable file is a configuration error naming it.
    pub fn with_server(
        engine: Engine,
        server: ServerConfig,
        config: ApiConfig,
        auth: AuthConfig,
        metrics: Option<PrometheusHandle>,
    ) -> Result<Self, ConfigError> {
        server.validate()?;
        config.validate()?;
        auth.validate()?;
        let proxies = config.proxies()?;
        let cookies = CookiePolicy::new(&server, &config, &auth)?;
        let tls = crate::tls::acceptor(&server)?;
        let sessions: Arc<dyn ccm_store::SessionRepo> = engine.store().clone();
        let auth = Authenticator::new(auth, Some(sessions))?;
        let stop = CancellationToken::new();
        let hub = Hub::start(
            &engine,
            config.sse_buffer,
            config.sse_max_clients,
            stop.clone(),
        );
        let views = ViewCache::new(config.view_cache_entries, config.view_prepare_max);
        let this = Self {
            inner: Arc::new(Inner {
                engine,
                webhooks: std::sync::OnceLock::new(),
                config,
                server,
                tls,
                cookies,
                proxies,
                auth,
                metrics,
                hub,
                views,
                stop,
            }),
        };
        this.follow_session_ends();
        this.prepare_views_ahead();
        Ok(this)
    }

    /// Renders the hot workers' views for each next second shortly before it begins
    /// ([`crate::view_cache`]), while the state lives.
    fn prepare_views_ahead(&self) {
        if !self.inner.views.prepares() {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        self.inner.engine.spawn_supervised(
            "view_prepare",
            ccm_engine::Criticality::BestEffort,
            self.inner.stop.clone(),
            move || {
                let weak = weak.clone();
                async move {
                    loop {
                        let Some(now) = weak.upgrade().map(|i| i.engine.now()) else {
                            return;
                        };
                        let wait = crate::view_cache::until_prepare(
                            now,
                            crate::view_cache::PREPARE_LEAD,
                        );
                        tokio::time::sleep(wait).await;
                        let Some(inner) = weak.upgrade() else {
                            return;
                        };
                        if let Err(e) = inner.views.prepare_next_second(&inner.engine).await {
                            tracing::debug!(error = %e, "views were not prepared for the next second");
                        }
                    }
                }
            },
        );
    }

    /// Renders the views of the workers hot now (read twice in each of the last two seconds)
    /// for the next one now (what the background task does shortly before each second
    /// ends); returns how many. For tests and benchmarks.
    #[doc(hidden)]
    pub async fn prepare_views(&self) -> usize {
        self.inner
            .views
            .prepare_next_second(&self.inner.engine)
            .await
            .unwrap_or(0)
    }

    /// What the rendered-view cache has done so far (hits, prepared views, misses).
    pub fn view_cache_stats(&self) -> crate::view_cache::ViewCacheStats {
        self.inner.views.stats()
    }

    /// On several replicas: a sign-out on any replica ends the session here too (memory and
    /// open event streams), within the notification's latency.
    fn follow_session_ends(&self) {
        if self.inner.engine.ended_sessions().is_none() {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        self.inner.engine.spawn_supervised(
            "session_ends",
            ccm_engine::Criticality::BestEffort,
            self.inner.stop.clone(),
            move || {
                let weak = weak.clone();
                async move {
                    let Some(mut rx) = weak.upgrade().and_then(|i| i.engine.ended_sessions())
                    else {
                        return;
                    };
                    loop {
                        match rx.recv().await {
                            Ok(key) => match weak.upgrade() {
                                Some(inner) => inner.auth.sessions.end_key(&key),
                                None => return,
                            },
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                                tracing::warn!(
                                    missed = n,
                                    "missed session ends from other replicas"
                                );
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        }
                    }
                }
            },
        );
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The rendered worker views (list pages and details).
    pub(crate) fn views(&self) -> &ViewCache {
        &self.inner.views
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

    /// The `[server]` configuration.
    pub fn server(&self) -> &ServerConfig {
        &self.inner.server
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

    pub(crate) fn tls(&self) -> Option<&tokio_rustls::TlsAcceptor> {
        self.inner.tls.as_ref()
    }

    pub(crate) fn cookies(&self) -> CookiePolicy {
        self.inner.cookies
    }

    pub(crate) fn proxies(&self) -> &[ipnet::IpNet] {
        &self.inner.proxies
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
