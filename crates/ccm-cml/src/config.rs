//! The `[cml]` section of the config file: credentials, TLS, connection pool, body limit, and
//! how a worker's base URL is built.
//!
//! Per-attempt timeouts, deadlines and retries are **not** here: they come from
//! `[resilience]` (one source of truth; see [`CmlClient`](crate::CmlClient)).

use std::path::PathBuf;
use std::time::Duration;

use ccm_domain::worker::EndpointPolicy;
use serde::{Deserialize, Serialize};

use crate::pin::CertFingerprint;
use crate::secret::Secret;

/// How certificates of CML workers are checked.
///
/// In TOML: `tls = "verify"`, `tls = { ca_file = "/etc/ccm/cml-ca.pem" }`,
/// `tls = { fingerprint = "sha256:AB:CD:…" }` or `tls = "insecure"`. For self-signed
/// controllers (CML's default) use a CA file or a pinned fingerprint, not `insecure`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsConfig {
    /// Verify against the system's root certificates.
    #[default]
    Verify,
    /// Verify against the CA certificates in this PEM file only (self-signed CML fleets).
    CaFile(PathBuf),
    /// Trust exactly the controller whose leaf certificate has this SHA-256 fingerprint (no CA
    /// or hostname check; the handshake signatures are still verified). See [`CertFingerprint`].
    Fingerprint(CertFingerprint),
    /// Do not verify certificates at all: anyone on the path can read the CML password.
    /// Allowed, but warned about once at start ([`CmlConfig::warnings`]).
    Insecure,
}

/// The `[cml]` section.
///
/// `password` defaults to `admin`, the simulator's password (and CML's well-known default):
/// fine for `ccm demo`, never for a real fleet: set it in production.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CmlConfig {
    /// CML user ccm logs in as (an admin, so that licensing works).
    pub username: String,
    /// Its password.
    pub password: Secret,
    /// Certificate checking for every worker.
    pub tls: TlsConfig,
    /// Longest time to establish a TCP (and TLS) connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Timeout of the single `system_information` attempt that probes a worker which was not
    /// `ready` at its last sync (see [`crate::CmlClient::probe`]). Short and never retried, so
    /// that a dead or blackholed worker holds a poll slot for this long, not for
    /// `resilience.timeout.per_attempt` × `resilience.retry.max_attempts`.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// How long an idle keep-alive connection stays in the pool (it may live up to twice as
    /// long: the pool is swept at this interval). An HTTP/2 connection counts as idle from
    /// the start of its last request.
    ///
    /// Default 250 ms, not reqwest's 90 s: keep-alive pays off within one worker's sync (its
    /// three calls start one `system_information` round trip after the first), while every
    /// idle connection costs ~20 KB (HTTP/1.1) to ~45 KB (HTTP/2 over TLS) of buffers, and a
    /// worker's next sync comes a whole cycle later. Measured on a 10,000-worker TLS fleet
    /// synced as fast as it goes (BENCHMARKS.md, issue 13 round 3): 2 s kept ~3,500
    /// connections open (305 MB peak RSS), 250 ms ~800 (186 MB); a sync whose first call
    /// takes longer than this opens a second connection (0.8 % of them there, under load).
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per worker (1–2 is plenty: calls to one worker are few and
    /// spread over the sync interval; 10,000 workers × many idle sockets would exhaust FDs).
    pub pool_max_idle_per_host: usize,
    /// Idle connections kept per worker over plain HTTP (`http://` workers: the simulator,
    /// a lab network). Default 1: a sync's four calls then go one after another on one
    /// kept-alive connection, and the last call closes it (`Connection: close`), so one
    /// connection serves a whole sync and none idles after it ([`crate::SyncOrder::OneByOne`];
    /// four connections per sync cost ~30 % of ccm's CPU at 10,000 workers, BENCHMARKS.md
    /// issue 13 round 5). 0: the four calls go at once, each on a connection of its own,
    /// none kept. `pool_max_idle_per_host` applies to HTTPS, where HTTP/2 shares it.
    pub plain_pool_max_idle_per_host: usize,
    /// Workers whose TLS sessions are kept for resumption (0: none). A resumed handshake skips
    /// the certificate (sent, signed, verified), the bulk of a TLS connection's CPU on both
    /// sides; rustls' default cache holds 256 sessions, so size this to the fleet. A worker's
    /// entry holds 1 single-use session ticket (an HTTP/2 sync's one connection), 2 once its
    /// connections used them up (enough for every connection of an HTTP/1.1 sync), each with a copy of the worker's certificate chain: ~1–1.5 KB per ticket with a
    /// CML-sized certificate.
    pub tls_session_cache: usize,
    /// Offer HTTP/2 to workers by ALPN (`h2`, then `http/1.1`), as CML's nginx accepts it.
    /// A worker that speaks it gets one connection for a whole sync: the first call
    /// (`system_information`) opens it, the other three share it as streams; a worker that
    /// does not answers on HTTP/1.1 as before. Needs `pool_max_idle_per_host` ≥ 1 (hyper
    /// shares an HTTP/2 connection through its pool). `false` (the default): HTTP/1.1 only,
    /// and a sync's calls go one after another on one connection that the last closes, as
    /// over plain HTTP ([`crate::SyncOrder::OneByOne`]; with `pool_max_idle_per_host` ≥ 1):
    /// at 10,000 workers it held 10–17 MB less than HTTP/2 (whose idle connections stay
    /// pooled until the idle timeout) and cost the controllers less CPU, cycles as fast
    /// (BENCHMARKS.md, issue 13 rounds 6 and 7); one worker's sync waits four round trips
    /// instead of two.
    pub http2: bool,
    /// Largest response body read, in bytes (telemetry can hold ~3,000 events).
    pub max_body_bytes: usize,
    /// How a worker's base URL is built from its addresses.
    pub endpoint: EndpointPolicy,
}

impl Default for CmlConfig {
    fn default() -> Self {
        Self {
            username: "admin".to_owned(),
            password: Secret::from("admin"),
            tls: TlsConfig::Verify,
            connect_timeout: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_millis(250),
            pool_max_idle_per_host: 1,
            plain_pool_max_idle_per_host: 1,
            tls_session_cache: 16_384,
            http2: false,
            max_body_bytes: 8 << 20,
            endpoint: EndpointPolicy::default(),
        }
    }
}

/// A value in `[cml]` that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmlConfigError {
    /// The key holds a value outside its allowed range.
    #[error("invalid value for {key}: {reason}")]
    Invalid {
        /// The full key, e.g. `cml.connect_timeout`.
        key: &'static str,
        /// What the value must be.
        reason: &'static str,
    },
    /// The CA file cannot be read or holds no usable certificate.
    #[error("cml.tls.ca_file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the http client: {0}")]
    Client(String),
}

fn check(ok: bool, key: &'static str, reason: &'static str) -> Result<(), CmlConfigError> {
    if ok {
        Ok(())
    } else {
        Err(CmlConfigError::Invalid { key, reason })
    }
}

impl CmlConfig {
    /// The settings that expose the CML password or trust any server, one line each naming
    /// the setting: `cml.tls = "insecure"` and `cml.endpoint.scheme = "http"`. Empty for a
    /// safe config. [`CmlClient::new`](crate::CmlClient::new) logs each once, at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.tls == TlsConfig::Insecure {
            out.push(
                "cml.tls = \"insecure\": cml certificates are not verified, so anyone on the \
                 path can pose as a worker and read the cml password; use \
                 tls = { ca_file = … } or tls = { fingerprint = \"sha256:…\" }"
                    .to_owned(),
            );
        }
        if self.endpoint.scheme == "http" {
            out.push(
                "cml.endpoint.scheme = \"http\": the cml password and tokens cross the network \
                 in clear text; use https"
                    .to_owned(),
            );
        }
        out
    }

    /// Checks every value; the error names the first offending key. (The CA file is read
    /// when the client is built, [`CmlClient::new`](crate::CmlClient::new).)
    pub fn validate(&self) -> Result<(), CmlConfigError> {
        check(
            (1..=32).contains(&self.username.chars().count()),
            "cml.username",
            "must be 1 to 32 characters",
        )?;
        check(
            !self.password.is_empty(),
            "cml.password",
            "must not be empty",
        )?;
        if let TlsConfig::CaFile(path) = &self.tls {
            check(
                !path.as_os_str().is_empty(),
                "cml.tls.ca_file",
                "must name a file",
            )?;
        }
        check(
            self.connect_timeout >= Duration::from_millis(10)
                && self.connect_timeout <= Duration::from_secs(300),
            "cml.connect_timeout",
            "must be between 10ms and 5m",
        )?;
        check(
            self.probe_timeout >= Duration::from_millis(10)
                && self.probe_timeout <= Duration::from_secs(300),
            "cml.probe_timeout",
            "must be between 10ms and 5m",
        )?;
        check(
            self.pool_idle_timeout >= Duration::from_millis(100)
                && self.pool_idle_timeout <= Duration::from_secs(3600),
            "cml.pool_idle_timeout",
            "must be between 100ms and 1h",
        )?;
        check(
            self.pool_max_idle_per_host <= 64,
            "cml.pool_max_idle_per_host",
            "must be at most 64",
        )?;
        check(
            self.plain_pool_max_idle_per_host <= 64,
            "cml.plain_pool_max_idle_per_host",
            "must be at most 64",
        )?;
        check(
            self.tls_session_cache <= 1_000_000,
            "cml.tls_session_cache",
            "must be at most 1000000",
        )?;
        check(
            (64 << 10..=256 << 20).contains(&self.max_body_bytes),
            "cml.max_body_bytes",
            "must be between 64 KiB and 256 MiB",
        )?;
        check(
            matches!(self.endpoint.scheme.as_str(), "http" | "https"),
            "cml.endpoint.scheme",
            "must be http or https",
        )?;
        check(
            self.endpoint.port != Some(0),
            "cml.endpoint.port",
            "must be between 1 and 65535",
        )?;
        Ok(())
    }
}
