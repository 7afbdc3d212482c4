//! The `[database]` section of the configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// SQLite `synchronous` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    /// fsync at every commit: nothing committed is lost, even on power loss.
    #[default]
    Full,
    /// fsync at checkpoints: committed writes survive a crash of ccm, not of the machine.
    Normal,
}

/// Where and how ccm stores its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite database file (created if missing).
    pub path: PathBuf,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long a writer waits for the database lock.
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
    /// Durability of commits.
    pub synchronous: Synchronous,
    /// Width of one metrics history bucket (samples inside are averaged).
    #[serde(with = "humantime_serde")]
    pub metrics_bucket: Duration,
    /// How much metrics history to keep per worker.
    #[serde(with = "humantime_serde")]
    pub metrics_retention: Duration,
    /// How long events stay in the log.
    #[serde(with = "humantime_serde")]
    pub event_retention: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("ccm.db"),
            max_connections: 8,
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Full,
            metrics_bucket: Duration::from_secs(5 * 60),
            metrics_retention: Duration::from_secs(24 * 3600),
            event_retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl StoreConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.path.as_os_str().is_empty() {
            return Err("database.path: must not be empty".into());
        }
        if !(1..=64).contains(&self.max_connections) {
            return Err(format!(
                "database.max_connections: {} is out of range (1 to 64)",
                self.max_connections
            ));
        }
        if self.metrics_bucket < Duration::from_secs(10) {
            return Err("database.metrics_bucket: must be at least 10s".into());
        }
        if self.metrics_retention < self.metrics_bucket {
            return Err("database.metrics_retention: must be at least one metrics_bucket".into());
        }
        if self.event_retention < Duration::from_secs(3600) {
            return Err("database.event_retention: must be at least 1h".into());
        }
        Ok(())
    }
}
