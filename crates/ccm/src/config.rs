//! Configuration: one TOML file plus `CCM_SECTION__KEY` environment variables, validated at
//! start. Every problem is one line that names the file, the key or the variable.
//!
//! Why hand-written on `toml` + `serde_path_to_error` rather than the `config` crate: we need
//! the exact dotted path of a bad or unknown key (and which environment variable supplied it)
//! in a one-line message, and `deny_unknown_fields` on every section; the layering itself is
//! twenty lines.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A configuration problem (exit code 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConfigError(pub(crate) String);

/// The `[log]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LogConfig {
    /// A tracing filter such as `info` or `ccm_engine=debug,info`.
    pub(crate) level: String,
    /// `text` or `json`.
    pub(crate) format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    pub(crate) server: ccm_api::ServerConfig,
    /// The engine's own runtime (threads, priority).
    pub(crate) engine: ccm_engine::EngineRuntimeConfig,
    pub(crate) log: LogConfig,
    pub(crate) telemetry: crate::telemetry::TelemetryConfig,
    pub(crate) api: ccm_api::ApiConfig,
    pub(crate) auth: ccm_api::AuthConfig,
    pub(crate) database: ccm_store::StoreConfig,
    /// Several replicas on one PostgreSQL database (ignored with SQLite).
    pub(crate) cluster: ccm_engine::ClusterConfig,
    pub(crate) resilience: ccm_resilience::ResilienceConfig,
    pub(crate) cml: ccm_cml::CmlConfig,
    pub(crate) aws: ccm_cloud_aws::AwsConfig,
    pub(crate) provisioning: ccm_engine::ProvisioningConfig,
    pub(crate) import: ccm_engine::ImportConfig,
    pub(crate) licence: ccm_engine::LicenceConfig,
    pub(crate) pricing: ccm_engine::PricingConfig,
    /// Initial runtime settings, used until an operator changes them (then the database wins).
    pub(crate) idle: ccm_domain::idle::IdleSettings,
    /// Initial poll intervals and switches (runtime settings, as `idle`).
    pub(crate) polling: ccm_domain::settings::PollingSettings,
    /// Initial off-hours schedules (runtime settings, as `idle`).
    pub(crate) schedules: Vec<ccm_domain::schedule::ScheduleRule>,
    /// Outbound events: `[[webhooks]]` entries (none by default; the example documents them
    /// commented out, and a test parses that block).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) webhooks: Vec<ccm_webhooks::WebhookConfig>,
}

impl Config {
    /// Loads `path` (if any), overlays `CCM_*__*` variables from `env`, and validates.
    pub(crate) fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut root = match path {
            Some(path) => read_file(path)?,
            None => toml::Table::new(),
        };
        let mut from_env = BTreeMap::new();
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix("CCM_") else {
                continue;
            };
            if !rest.contains("__") {
                continue; // CCM_CONFIG, CCM_TOKEN, CCM_API_URL…: command-line settings, not config keys
            }
            let keys: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
            if keys.iter().any(String::is_empty) {
                return Err(ConfigError(format!(
                    "environment variable {name}: empty key segment"
                )));
            }
            set_path(&mut root, &keys, parse_env_value(&raw))
                .map_err(|e| ConfigError(format!("environment variable {name}: {e}")))?;
            from_env.insert(keys.join("."), name);
        }
        let origin = |key: &str| -> String {
            let mut best: Option<&String> = None;
            for (k, var) in &from_env {
                if key == k
                    || key.starts_with(&format!("{k}."))
                    || k.starts_with(&format!("{key}."))
                {
                    best = Some(var);
                }
            }
            match (best, path) {
                (Some(var), _) => format!(" (from environment variable {var})"),
                (None, Some(p)) => format!(" (in {})", p.display()),
                (None, None) => String::new(),
            }
        };
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(root)).map_err(|e| {
                let key = e.path().to_string();
                let inner = e.into_inner().to_string();
                let inner = inner.lines().next().unwrap_or_default().to_owned();
                if key == "." || key.is_empty() {
                    ConfigError(format!("configuration: {inner}{}", origin("")))
                } else {
                    ConfigError(format!("{key}: {inner}{}", origin(&key)))
                }
            })?;
        config.validate().map_err(|e| {
            let key = e.split(':').next().unwrap_or_default().to_owned();
            ConfigError(format!("{e}{}", origin(&key)))
        })?;
        Ok(config)
    }

    /// Range checks across sections; each message starts with the dotted key.
    fn validate(&self) -> Result<(), String> {
        if self.log.level.trim().is_empty() {
            return Err("log.level: must not be empty".into());
        }
        self.server.validate().map_err(|e| e.to_string())?;
        self.engine.validate()?;
        self.telemetry.validate()?;
        self.api.validate().map_err(|e| e.to_string())?;
        self.auth.validate().map_err(|e| e.to_string())?;
        self.database.validate()?;
        self.cluster.validate()?;
        self.resilience.validate().map_err(
            |ccm_resilience::ConfigError::Invalid { key, reason }| format!("{key}: {reason}"),
        )?;
        self.cml.validate().map_err(|e| match e {
            ccm_cml::CmlConfigError::Invalid { key, reason } => format!("{key}: {reason}"),
            other => other.to_string(),
        })?;
        self.aws
            .validate()
            .map_err(|e| format!("aws.{}: {}", e.key, e.message))?;
        self.engine_config().validate()?;
        ccm_webhooks::validate_all(&self.webhooks).map_err(|e| e.to_string())?;
        let runtime = ccm_domain::RuntimeSettings {
            idle: self.idle.clone(),
            polling: self.polling.clone(),
            schedules: self.schedules.clone(),
        };
        runtime.validate().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The engine's part of the configuration.
    pub(crate) fn engine_config(&self) -> ccm_engine::EngineConfig {
        let mut c = ccm_engine::EngineConfig::new(
            self.provisioning.clone(),
            self.import.clone(),
            self.licence.clone(),
            self.pricing.clone(),
        );
        c.event_retention = self.database.event_retention;
        c
    }

    /// The initial runtime settings from the file.
    pub(crate) fn runtime_settings(&self) -> ccm_domain::RuntimeSettings {
        ccm_domain::RuntimeSettings {
            idle: self.idle.clone(),
            polling: self.polling.clone(),
            schedules: self.schedules.clone(),
        }
    }
}

fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?;
    text.parse::<toml::Table>().map_err(|e| {
        let message = e.message().to_owned();
        let at = e
            .span()
            .map(|span| {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!(" at line {line}")
            })
            .unwrap_or_default();
        ConfigError(format!("config file {}{at}: {message}", path.display()))
    })
}

/// An environment value as TOML if it parses as a TOML value (numbers, booleans, arrays,
/// inline tables), else as a plain string.
fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(root: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = keys.split_last().ok_or("empty key")?;
    let mut table = root;
    for key in parents {
        let entry = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| format!("{key} is not a section"))?;
    }
    table.insert(last.clone(), value);
    Ok(())
}

/// The commented example configuration, with every default.
pub(crate) const EXAMPLE: &str = include_str!("../config/example.toml");

#[cfg(test)]
mod tests;
