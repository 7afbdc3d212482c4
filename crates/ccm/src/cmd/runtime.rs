//! Process plumbing shared by the long-running commands: the tokio runtime, logging, the
//! Prometheus recorder and the shutdown signal.

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::{Config, ConfigError, LogConfig, LogFormat};
use crate::telemetry::{Telemetry, TelemetryConfig};

/// A multi-threaded tokio runtime.
pub(crate) fn build() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The two runtimes of `ccm serve` and `ccm demo` (ARCHITECTURE.md, "Runtimes"): the API's
/// (`[server] threads`, the process's priority; the command's own future runs on it) and the
/// engine's (`[engine] threads`, its threads lowered by `[engine] nice`), on which the engine
/// is started so that its polls, writer and jobs run there.
pub(crate) struct Runtimes {
    pub(crate) api: tokio::runtime::Runtime,
    pub(crate) engine: tokio::runtime::Runtime,
}

impl Runtimes {
    /// Builds both from the configuration.
    pub(crate) fn build(config: &Config) -> anyhow::Result<Self> {
        let api = ccm_engine::runtime::build("ccm-api", config.server.threads, 0)
            .context("cannot start the API's runtime")?;
        let engine = config
            .engine
            .build()
            .context("cannot start the engine's runtime")?;
        Ok(Self { api, engine })
    }

    /// Runs `main` on the API's runtime with a handle to the engine's, then ends both: the
    /// engine's after `main` returned (by then `main` has shut the engine down; what is left
    /// gets `grace`), then the API's.
    pub(crate) fn run<F, T>(
        self,
        grace: std::time::Duration,
        main: impl FnOnce(tokio::runtime::Handle) -> F,
    ) -> T
    where
        F: std::future::Future<Output = T>,
    {
        let outcome = self.api.block_on(main(self.engine.handle().clone()));
        self.engine.shutdown_timeout(grace);
        self.api.shutdown_timeout(grace);
        outcome
    }
}

/// Installs the log subscriber of every subcommand and, when `[telemetry] otlp_endpoint` is
/// set, the OpenTelemetry layer next to it (each with its own filter). Log lines go to standard
/// error (standard output is for what a command prints), as text or JSON (`log.format`). The
/// log filter is, first found:
///
/// 1. `RUST_LOG`, when set and not empty;
/// 2. `log.level` — from the config file or `CCM_LOG__LEVEL` for the commands that read the
///    configuration (`serve`, `demo`), from `CCM_LOG__LEVEL` alone for the others;
/// 3. the command's default (see [`env_log_config`]; `info` in the configuration).
///
/// Keep the returned guard until the runtime has ended: dropping it flushes the last spans.
/// Call outside the async runtime.
pub(crate) fn init_tracing(
    config: &LogConfig,
    telemetry: &TelemetryConfig,
) -> anyhow::Result<Option<Telemetry>> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let rust_log = std::env::var("RUST_LOG").ok();
    let (source, directives) = filter_directives(rust_log.as_deref(), &config.level);
    let filter = tracing_subscriber::EnvFilter::try_new(directives)
        .map_err(|e| crate::config::ConfigError(format!("{source}: {e}")))?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true);
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

/// The filter to use and where it came from (named in the error of a bad filter).
fn filter_directives<'a>(rust_log: Option<&'a str>, level: &'a str) -> (&'static str, &'a str) {
    match rust_log {
        Some(r) if !r.trim().is_empty() => ("RUST_LOG", r),
        _ => ("log.level", level),
    }
}

/// `[log]` for a command that does not read the configuration file (`sim`, `bench`, the API
/// client commands): `CCM_LOG__LEVEL` and `CCM_LOG__FORMAT` if set, else `default_level` as
/// text. Parsed and validated like the configuration, so a bad value is the same one-line
/// error (exit 64).
pub(crate) fn env_log_config(default_level: &str) -> Result<LogConfig, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CCM_LOG__"))
        .collect();
    let level_set = env.iter().any(|(k, _)| k == "CCM_LOG__LEVEL");
    let mut log = Config::load(None, env)?.log;
    if !level_set {
        default_level.clone_into(&mut log.level);
    }
    Ok(log)
}

/// Installs the global Prometheus recorder once (histogram buckets, every crate's metrics
/// described: `ccm_api::metrics::install`) and returns its handle (`/metrics` renders it from
/// the API's own route).
pub(crate) fn metrics() -> anyhow::Result<PrometheusHandle> {
    Ok(ccm_api::metrics::install()?)
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

#[cfg(test)]
mod tests {
    use super::filter_directives;

    #[test]
    fn rust_log_should_win_over_log_level_when_set() {
        assert_eq!(
            filter_directives(Some("ccm_engine=debug"), "info"),
            ("RUST_LOG", "ccm_engine=debug")
        );
    }

    #[test]
    fn an_unset_or_empty_rust_log_should_leave_log_level_in_charge() {
        assert_eq!(filter_directives(None, "warn"), ("log.level", "warn"));
        assert_eq!(filter_directives(Some("  "), "warn"), ("log.level", "warn"));
    }
}
