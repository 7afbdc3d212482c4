//! Process plumbing shared by the long-running commands: the tokio runtime, logging, the
//! Prometheus recorder and the shutdown signal.

use std::sync::OnceLock;

use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::config::{LogConfig, LogFormat};
use crate::telemetry::{Telemetry, TelemetryConfig};

/// A multi-threaded tokio runtime.
pub(crate) fn build() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Installs the log subscriber (`[log]`) and, when `[telemetry] otlp_endpoint` is set, the
/// OpenTelemetry layer; each has its own filter. Keep the returned guard until the runtime
/// has ended: dropping it flushes the last spans. Call outside the async runtime.
pub(crate) fn init_tracing(
    config: &LogConfig,
    telemetry: &TelemetryConfig,
) -> anyhow::Result<Option<Telemetry>> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_new(&config.level)
        .map_err(|e| crate::config::ConfigError(format!("log.level: {e}")))?;
    let fmt = tracing_subscriber::fmt::layer().with_target(true);
    let fmt = match config.format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
    };
    let (guard, otel) = match Telemetry::start(telemetry)? {
        Some((guard, tracer)) => {
            let filter = tracing_subscriber::EnvFilter::try_new(&telemetry.level)
                .map_err(|e| crate::config::ConfigError(format!("telemetry.level: {e}")))?;
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(filter);
            (Some(guard), Some(layer))
        }
        None => (None, None),
    };
    // Already installed (tests): keep the first.
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    Ok(guard)
}

/// Installs the global Prometheus recorder once and returns its handle (`/metrics` renders
/// it from the API's own route).
pub(crate) fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
    }
}
