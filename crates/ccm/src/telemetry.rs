//! `[telemetry]`: optional export of ccm's spans to an OpenTelemetry collector over OTLP/HTTP
//! (protobuf), off by default. The spans are the ones the logs already have (`http`,
//! `command`, `job`, `poll`, `cml.call`/`cml.attempt`, `cloud.call`/`cloud.attempt`,
//! `webhook`); `tracing-opentelemetry` turns them into OpenTelemetry spans with their fields as
//! attributes, so a request's trace shows the HTTP span, the engine's command and every CML or
//! AWS call under it.
//!
//! Batches are sent by the SDK's own thread (blocking HTTP client), never by the async
//! runtime; a collector that is down costs dropped spans, not latency. The SDK's
//! `OTEL_BSP_*` variables (batch delay and sizes) apply.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde::{Deserialize, Serialize};

/// The `[telemetry]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TelemetryConfig {
    /// Base URL of an OTLP/HTTP collector (`http://otel-collector:4318`); spans go to
    /// `<url>/v1/traces`. Unset: no export.
    pub(crate) otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub(crate) service_name: String,
    /// Fraction of traces exported (0 to 1; a sampled parent keeps its children).
    pub(crate) sample_ratio: f64,
    /// Which spans are exported: a tracing filter like `[log] level` (`info`,
    /// `ccm_engine=debug,info`), independent of the log's.
    pub(crate) level: String,
    /// Longest time one export request may take.
    #[serde(with = "humantime_serde")]
    pub(crate) timeout: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "ccm".into(),
            sample_ratio: 1.0,
            level: "info".into(),
            timeout: Duration::from_secs(10),
        }
    }
}

impl TelemetryConfig {
    /// Range checks; each message starts with the dotted key.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if let Some(e) = &self.otlp_endpoint {
            let ok = url::Url::parse(e).ok().filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.username().is_empty()
                    && u.password().is_none()
                    && u.query().is_none()
            });
            if ok.is_none() {
                return Err(format!(
                    "telemetry.otlp_endpoint: {e:?} is not an http(s) base URL without credentials or query (e.g. http://otel-collector:4318)"
                ));
            }
        }
        if self.service_name.trim().is_empty() {
            return Err("telemetry.service_name: must not be empty".into());
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err("telemetry.sample_ratio: must be between 0 and 1".into());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err()
            || self.level.trim().is_empty()
        {
            return Err(format!(
                "telemetry.level: {:?} is not a tracing filter",
                self.level
            ));
        }
        if self.timeout < Duration::from_millis(100) || self.timeout > Duration::from_secs(120) {
            return Err("telemetry.timeout: must be between 100ms and 2m".into());
        }
        Ok(())
    }

    /// The traces URL: the endpoint with `/v1/traces`.
    pub(crate) fn traces_url(&self) -> Option<String> {
        self.otlp_endpoint
            .as_deref()
            .map(|e| format!("{}/v1/traces", e.trim_end_matches('/')))
    }
}

/// The running export: flushed and shut down when dropped (after the async runtime ended).
pub(crate) struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("ccm: telemetry: the last spans could not be exported: {e}");
        }
    }
}

impl Telemetry {
    /// Starts the exporter when `otlp_endpoint` is set; the tracer to hand to the
    /// `tracing-opentelemetry` layer. Must be called outside the async runtime.
    pub(crate) fn start(
        config: &TelemetryConfig,
    ) -> anyhow::Result<Option<(Self, opentelemetry_sdk::trace::Tracer)>> {
        let Some(url) = config.traces_url() else {
            return Ok(None);
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(config.timeout)
            .build()
            .map_err(|e| crate::config::ConfigError(format!("telemetry.otlp_endpoint: {e}")))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("ccm");
        Ok(Some((Self { provider }, tracer)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_should_be_base_urls_without_secrets() {
        let mut c = TelemetryConfig::default();
        c.validate().unwrap();
        assert_eq!(c.traces_url(), None);
        c.otlp_endpoint = Some("http://otel:4318/".into());
        c.validate().unwrap();
        assert_eq!(c.traces_url().unwrap(), "http://otel:4318/v1/traces");
        for bad in [
            "otel:4318",
            "ftp://otel/",
            "http://u:p@otel:4318",
            "http://otel:4318?k=v",
        ] {
            c.otlp_endpoint = Some(bad.into());
            let err = c.validate().unwrap_err();
            assert!(err.starts_with("telemetry.otlp_endpoint: "), "{bad}: {err}");
        }
        c.otlp_endpoint = None;
        c.sample_ratio = 1.5;
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("telemetry.sample_ratio")
        );
    }
}
