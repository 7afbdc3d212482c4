//! The `[database]` section of the configuration, and [`DatabaseUrl`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sqlx::postgres::PgConnectOptions;

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

/// The SQLite file used when neither `path` nor `url` is set.
pub const DEFAULT_SQLITE_PATH: &str = "ccm.db";

/// Where and how ccm stores its data: an SQLite file (`path`, the default) or a PostgreSQL
/// server (`url`, for several replicas).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite database file (created if missing); [`DEFAULT_SQLITE_PATH`] when neither this
    /// nor `url` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// PostgreSQL server (`postgres://user:password@host:5432/database`). Setting it selects
    /// PostgreSQL; setting it and `path` is an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<DatabaseUrl>,
    /// Connections in the pool (SQLite: readers, beside one writer; PostgreSQL: each of its
    /// two pools, writes and reads).
    pub max_connections: u32,
    /// SQLite: how long a writer waits for the database lock.
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
    /// SQLite: durability of commits.
    pub synchronous: Synchronous,
    /// SQLite: page cache of each read connection, in KiB (SQLite's own default is 2,048).
    /// Reads of pages not cached come from the operating system's file cache, so a small
    /// one costs a copy, not a disk read; 8 read connections with 2 MiB each held ~7–11 MB of
    /// a 10,000-worker fleet's peak (BENCHMARKS.md, issue 13 round 4). The write connection
    /// keeps SQLite's default.
    pub sqlite_read_cache_kib: u32,
    /// PostgreSQL: how long a query waits for a connection, opening a new one included (also
    /// the limit for the first connection at start).
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// PostgreSQL: the server cancels any statement running longer (`statement_timeout`).
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
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
            path: None,
            url: None,
            max_connections: 8,
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Full,
            sqlite_read_cache_kib: 512,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            metrics_bucket: Duration::from_secs(5 * 60),
            metrics_retention: Duration::from_secs(24 * 3600),
            event_retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Which database a [`StoreConfig`] selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend<'a> {
    /// An SQLite file.
    Sqlite(&'a Path),
    /// A PostgreSQL server.
    Postgres(&'a DatabaseUrl),
}

impl StoreConfig {
    /// The SQLite file: `path`, else [`DEFAULT_SQLITE_PATH`].
    pub fn sqlite_path(&self) -> &Path {
        self.path
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_SQLITE_PATH))
    }

    /// PostgreSQL when `url` is set, else SQLite.
    pub fn backend(&self) -> Backend<'_> {
        match &self.url {
            Some(url) => Backend::Postgres(url),
            None => Backend::Sqlite(self.sqlite_path()),
        }
    }

    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.path.is_some() && self.url.is_some() {
            return Err("database.path and database.url: set only one of them \
                        (path for SQLite, url for PostgreSQL)"
                .into());
        }
        if self.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err("database.path: must not be empty".into());
        }
        if !(64..=1 << 20).contains(&self.sqlite_read_cache_kib) {
            return Err(format!(
                "database.sqlite_read_cache_kib: {} is out of range (64 to 1048576)",
                self.sqlite_read_cache_kib
            ));
        }
        if !(1..=64).contains(&self.max_connections) {
            return Err(format!(
                "database.max_connections: {} is out of range (1 to 64)",
                self.max_connections
            ));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&self.acquire_timeout)
        {
            return Err("database.acquire_timeout: must be between 100ms and 5m".into());
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.statement_timeout) {
            return Err("database.statement_timeout: must be between 1s and 1h".into());
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

/// A PostgreSQL connection URL, validated when parsed. Its password (in the user part or a
/// `password` parameter) never shows: `Debug`, `Display` and `Serialize` print `***` in its
/// place, and parse errors do not repeat the URL. [`DatabaseUrl::expose`] is for the one call
/// that connects.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

/// The query parameters sqlx understands; anything else is refused (a typo would be ignored
/// silently otherwise, and sqlx logs unknown parameters with their values).
const KNOWN_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

impl DatabaseUrl {
    /// Parses and checks a `postgres://` URL. The error never contains the URL.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text.trim()).map_err(|e| {
            format!("not a valid URL ({e}); expected postgres://user:password@host:5432/database")
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "scheme {:?} is not supported; expected postgres://user:password@host:5432/database",
                url.scheme()
            ));
        }
        let mut has_host = url.host_str().is_some_and(|h| !h.is_empty());
        let mut has_db = !url.path().trim_start_matches('/').is_empty();
        for (key, value) in url.query_pairs() {
            let key = key.as_ref();
            if !(KNOWN_PARAMS.contains(&key) || key.starts_with("options[")) {
                return Err(format!("unknown connection parameter {key:?}"));
            }
            match key {
                "host" | "hostaddr" => has_host = true,
                "dbname" => has_db = true,
                "sslmode" | "ssl-mode" => match value.as_ref() {
                    "disable" | "allow" | "prefer" => {}
                    "require" | "verify-ca" | "verify-full" => {
                        return Err(format!(
                            "sslmode={value}: this ccm is built without TLS to PostgreSQL; \
                             use a local network, a TLS-terminating proxy, or sslmode=prefer"
                        ));
                    }
                    other => return Err(format!("sslmode={other:?} is not a mode")),
                },
                _ => {}
            }
        }
        if !has_host {
            return Err("no host; expected postgres://user:password@host:5432/database".into());
        }
        if !has_db {
            return Err(
                "no database name; expected postgres://user:password@host:5432/database".into(),
            );
        }
        // sqlx's own parse must agree; its errors may quote parts of the URL, so only say
        // that it failed.
        PgConnectOptions::from_str(url.as_str())
            .map_err(|_| "not a usable PostgreSQL URL".to_owned())?;
        Ok(Self(url.to_string()))
    }

    /// The URL with its password, for connecting. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with `***` in place of any password.
    pub fn redacted(&self) -> String {
        let Ok(mut url) = url::Url::parse(&self.0) else {
            return "postgres://***".into();
        };
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        if url.query_pairs().any(|(k, _)| k == "password") {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "password" {
                        "***".to_owned()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        url.to_string()
    }

    /// `host:port/database`, for messages about connecting (no user, no password).
    pub fn target(&self) -> String {
        match self.connect_options() {
            Ok(o) => format!(
                "{}:{}/{}",
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or_default()
            ),
            Err(_) => "?".into(),
        }
    }

    /// sqlx's connection options for this URL.
    pub fn connect_options(&self) -> Result<PgConnectOptions, String> {
        PgConnectOptions::from_str(&self.0).map_err(|_| "not a usable PostgreSQL URL".to_owned())
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_should_never_print() {
        let url = DatabaseUrl::parse("postgres://ccm:hunter2@db.internal:5433/ccm").unwrap();
        assert_eq!(url.to_string(), "postgres://ccm:***@db.internal:5433/ccm");
        assert_eq!(
            format!("{url:?}"),
            "postgres://ccm:***@db.internal:5433/ccm"
        );
        assert_eq!(
            serde_json::to_string(&url).unwrap(),
            "\"postgres://ccm:***@db.internal:5433/ccm\""
        );
        assert_eq!(url.target(), "db.internal:5433/ccm");
        assert!(url.expose().contains("hunter2"));
        let url =
            DatabaseUrl::parse("postgresql://db/ccm?user=ccm&password=hunter2&application_name=x")
                .unwrap();
        assert!(!url.to_string().contains("hunter2"), "{url}");
        assert!(url.to_string().contains("password=***"), "{url}");
        let opts = url.connect_options().unwrap();
        assert_eq!(opts.get_username(), "ccm");
    }

    #[test]
    fn bad_urls_should_be_refused_without_repeating_them() {
        for bad in [
            "mysql://u:hunter2@h/db",
            "postgres://u:hunter2@/db",
            "postgres://u:hunter2@h",
            "postgres://u:hunter2@h/db?sslmode=require",
            "postgres://u:hunter2@h/db?sslmode=bogus",
            "postgres://u:hunter2@h/db?pasword=hunter2",
            "postgres://u:hunter2@h:99999/db",
            "not a url hunter2",
        ] {
            let err = DatabaseUrl::parse(bad).unwrap_err();
            assert!(!err.contains("hunter2"), "{bad} → {err}");
            assert_eq!(err.lines().count(), 1);
        }
    }

    #[test]
    fn both_path_and_url_should_be_an_error_naming_both() {
        let config = StoreConfig {
            path: Some("x.db".into()),
            url: Some(DatabaseUrl::parse("postgres://h/db").unwrap()),
            ..StoreConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert!(
            err.contains("database.path") && err.contains("database.url"),
            "{err}"
        );
        assert_eq!(
            StoreConfig::default().backend(),
            Backend::Sqlite(Path::new("ccm.db"))
        );
    }
}
