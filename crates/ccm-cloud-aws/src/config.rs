//! [`AwsConfig`]: the `[aws]` section of the config file.

use std::time::Duration;

use ccm_domain::Region;
use serde::{Deserialize, Serialize};
use url::Url;

/// The `[aws]` section: regions, endpoint, credentials, retry and timeouts.
///
/// Credentials come from the standard chain (environment, shared profile, web identity,
/// container or instance role) unless `access_key_id` and `secret_access_key` are set here.
/// `profile` picks a named profile from the shared config files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsConfig {
    /// The regions ccm manages instances in; each gets its own clients, breaker and rate limit.
    pub regions: Vec<Region>,
    /// An AWS-compatible endpoint (for example moto or LocalStack) used instead of AWS's own
    /// for EC2 and CloudWatch.
    pub endpoint_url: Option<Url>,
    /// A named profile from `~/.aws/config` / `~/.aws/credentials`.
    pub profile: Option<String>,
    /// A static access key id (together with `secret_access_key`); otherwise the standard chain.
    pub access_key_id: Option<String>,
    /// The static secret access key.
    pub secret_access_key: Option<Secret>,
    /// The session token of temporary static credentials.
    pub session_token: Option<Secret>,
    /// How the SDK retries: `adaptive` (client-side rate limiting when throttled) or `standard`.
    pub retry_mode: RetryMode,
    /// Attempts per call in total, the first included (the SDK's retries).
    pub max_attempts: u32,
    /// Longest time to open a connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for the first byte of a response.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Deadline of one operation, the SDK's retries and their backoff included.
    #[serde(with = "humantime_serde")]
    pub operation_timeout: Duration,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            regions: Region::parse("us-east-1").into_iter().collect(),
            endpoint_url: None,
            profile: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            retry_mode: RetryMode::Adaptive,
            max_attempts: 3,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            operation_timeout: Duration::from_secs(90),
        }
    }
}

/// The SDK's retry strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetryMode {
    /// Standard retries plus a client-side token bucket that slows down after throttling.
    #[default]
    Adaptive,
    /// Exponential backoff with jitter only.
    Standard,
}

/// The secret access key and session token are [`Secret`]s (`***` in `Debug`, `Display` and
/// serialized output): ccm's one secret type, re-exported from `ccm-domain`.
pub use ccm_domain::Secret;

/// A value in `[aws]` that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid aws.{key}: {message}")]
pub struct ConfigError {
    /// The offending key (`regions`, `endpoint_url`, …).
    pub key: &'static str,
    /// What is wrong and what would be right.
    pub message: String,
}

impl ConfigError {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

impl AwsConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.regions.is_empty() {
            return Err(ConfigError::new(
                "regions",
                "at least one region is needed, e.g. regions = [\"eu-west-1\"]",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for region in &self.regions {
            if !seen.insert(region) {
                return Err(ConfigError::new(
                    "regions",
                    format!("{region} is listed twice"),
                ));
            }
        }
        if let Some(url) = &self.endpoint_url {
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(ConfigError::new(
                    "endpoint_url",
                    format!("{url} must be an http:// or https:// URL with a host"),
                ));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(ConfigError::new(
                    "endpoint_url",
                    "must not carry credentials; use access_key_id and secret_access_key",
                ));
            }
        }
        if self.profile.as_deref().is_some_and(|p| p.trim().is_empty()) {
            return Err(ConfigError::new("profile", "must not be empty when set"));
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => {
                if id.trim().is_empty() || secret.expose().is_empty() {
                    return Err(ConfigError::new(
                        "access_key_id",
                        "access_key_id and secret_access_key must not be empty",
                    ));
                }
                if self.profile.is_some() {
                    return Err(ConfigError::new(
                        "profile",
                        "set either a profile or static keys (access_key_id, secret_access_key), not both",
                    ));
                }
            }
            (None, None) => {
                if self.session_token.is_some() {
                    return Err(ConfigError::new(
                        "session_token",
                        "needs access_key_id and secret_access_key",
                    ));
                }
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "secret_access_key",
                    "is required when access_key_id is set",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "access_key_id",
                    "is required when secret_access_key is set",
                ));
            }
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                "max_attempts",
                format!("{} is outside 1..=10", self.max_attempts),
            ));
        }
        for (key, value) in [
            ("connect_timeout", self.connect_timeout),
            ("read_timeout", self.read_timeout),
            ("operation_timeout", self.operation_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(key, "must be more than zero"));
            }
        }
        if self.operation_timeout < self.connect_timeout {
            return Err(ConfigError::new(
                "operation_timeout",
                "must be at least connect_timeout, or no call could ever connect",
            ));
        }
        Ok(())
    }

    /// Whether static credentials are configured.
    pub fn has_static_credentials(&self) -> bool {
        self.access_key_id.is_some() && self.secret_access_key.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_section_should_give_the_documented_defaults() {
        let config: AwsConfig = toml::from_str("").unwrap();
        assert_eq!(config, AwsConfig::default());
        assert_eq!(config.retry_mode, RetryMode::Adaptive);
        assert_eq!(config.max_attempts, 3);
        assert_eq!(config.connect_timeout, Duration::from_secs(10));
        assert_eq!(config.read_timeout, Duration::from_secs(60));
        config.validate().unwrap();
    }

    #[test]
    fn a_full_section_should_parse_with_humantime_durations() {
        let config: AwsConfig = toml::from_str(
            r#"
            regions = ["eu-west-1", "us-east-1"]
            endpoint_url = "http://127.0.0.1:5000"
            access_key_id = "AKIDEXAMPLE"
            secret_access_key = "wJalrXUtnFEMI"
            retry_mode = "standard"
            max_attempts = 5
            connect_timeout = "2s"
            read_timeout = "30s"
            operation_timeout = "1m"
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.regions.len(), 2);
        assert_eq!(config.retry_mode, RetryMode::Standard);
        assert_eq!(config.operation_timeout, Duration::from_secs(60));
        assert_eq!(
            config.secret_access_key.as_ref().map(Secret::expose),
            Some("wJalrXUtnFEMI")
        );
    }

    #[test]
    fn unknown_keys_should_be_rejected() {
        let err = toml::from_str::<AwsConfig>("region = \"eu-west-1\"").unwrap_err();
        assert!(err.to_string().contains("region"), "{err}");
    }

    #[test]
    fn secrets_should_never_show_in_debug_or_serialized_output() {
        let config = AwsConfig {
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some(Secret::new("very-secret-key")),
            session_token: Some(Secret::new("very-secret-token")),
            ..AwsConfig::default()
        };
        let debug = format!("{config:?}");
        let toml = toml::to_string(&config).unwrap();
        for text in [&debug, &toml] {
            assert!(!text.contains("very-secret"), "{text}");
            assert!(text.contains("***"), "{text}");
        }
    }

    #[test]
    fn invalid_values_should_name_their_key() {
        let cases: Vec<(AwsConfig, &str)> = vec![
            (
                AwsConfig {
                    regions: vec![],
                    ..AwsConfig::default()
                },
                "regions",
            ),
            (
                AwsConfig {
                    regions: vec![Region::parse("eu-west-1").unwrap(); 2],
                    ..AwsConfig::default()
                },
                "regions",
            ),
            (
                AwsConfig {
                    endpoint_url: Some(Url::parse("ftp://x").unwrap()),
                    ..AwsConfig::default()
                },
                "endpoint_url",
            ),
            (
                AwsConfig {
                    access_key_id: Some("AKID".into()),
                    ..AwsConfig::default()
                },
                "secret_access_key",
            ),
            (
                AwsConfig {
                    session_token: Some(Secret::new("t")),
                    ..AwsConfig::default()
                },
                "session_token",
            ),
            (
                AwsConfig {
                    access_key_id: Some("AKID".into()),
                    secret_access_key: Some(Secret::new("s")),
                    profile: Some("dev".into()),
                    ..AwsConfig::default()
                },
                "profile",
            ),
            (
                AwsConfig {
                    max_attempts: 0,
                    ..AwsConfig::default()
                },
                "max_attempts",
            ),
            (
                AwsConfig {
                    read_timeout: Duration::ZERO,
                    ..AwsConfig::default()
                },
                "read_timeout",
            ),
        ];
        for (config, key) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.key, key, "{err}");
            assert!(err.to_string().starts_with(&format!("invalid aws.{key}")));
        }
    }
}
