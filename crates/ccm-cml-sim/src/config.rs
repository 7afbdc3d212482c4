//! Configuration of a simulated fleet.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::faults::FaultSpec;

/// A password that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(p: impl Into<String>) -> Self {
        Password(p.into())
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

impl From<&str> for Password {
    fn from(s: &str) -> Self {
        Password(s.to_owned())
    }
}

/// How long the node state machine takes after `PUT /labs/{id}/start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTiming {
    /// QUEUED → STARTED for the first node.
    #[serde(with = "humantime_serde")]
    pub queue: Duration,
    /// Extra delay per following node (nodes start one after another).
    #[serde(with = "humantime_serde")]
    pub stagger: Duration,
    /// STARTED → BOOTED.
    #[serde(with = "humantime_serde")]
    pub boot: Duration,
}

impl Default for NodeTiming {
    fn default() -> Self {
        NodeTiming {
            queue: Duration::from_secs(2),
            stagger: Duration::from_millis(500),
            boot: Duration::from_secs(30),
        }
    }
}

/// Resources of the one simulated compute host, for `system_stats`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostResources {
    /// CPU count.
    pub cpus: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Disk in bytes.
    pub disk_bytes: u64,
    /// CPU percent with no node running.
    pub idle_cpu_percent: f64,
    /// CPU percent added per running node.
    pub cpu_percent_per_node: f64,
    /// Memory in bytes used with no node running.
    pub base_memory_used: u64,
    /// Disk in bytes used with no node running.
    pub base_disk_used: u64,
}

impl Default for HostResources {
    fn default() -> Self {
        HostResources {
            cpus: 32,
            memory_bytes: 128 << 30,
            disk_bytes: 1 << 40,
            idle_cpu_percent: 2.5,
            cpu_percent_per_node: 4.0,
            base_memory_used: 6 << 30,
            base_disk_used: 60 << 30,
        }
    }
}

/// The optional background activity generator, used by `ccm demo`: a share of the workers
/// has a (non-admin) user who logs in and starts and stops a lab now and then, so that
/// those workers look busy and the others go idle.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivityConfig {
    /// Share of the workers with an active user, 0..=1 (chosen by percentage bucket).
    pub fraction: f64,
    /// How often each active user does something.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for ActivityConfig {
    fn default() -> Self {
        ActivityConfig {
            fraction: 0.3,
            interval: Duration::from_secs(60),
        }
    }
}

/// Everything a simulated fleet needs to start. `Default` is one worker on
/// `127.1.0.1:9443`, plain HTTP, admin/admin, 24 h tokens, CML 2.9.0.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CmlSimConfig {
    /// Number of workers (each on its own loopback address).
    pub workers: usize,
    /// Address of the first worker; the next ones count up (127.1.0.1, 127.1.0.2, …).
    pub listen_base: Ipv4Addr,
    /// Port of every worker; 0 picks a free port per worker (tests).
    pub port: u16,
    /// Serve HTTPS with certificates from a generated CA.
    pub tls: bool,
    /// With `tls`: offer HTTP/2 by ALPN (`h2`, then `http/1.1`), as CML's nginx does; a client
    /// that picks it gets an HTTP/2 connection (counted in `h2_connections`). Off: the
    /// simulator speaks HTTP/1.1 only, like a server without HTTP/2.
    #[serde(default)]
    pub http2: bool,
    /// Where to write the CA certificate (PEM) when `tls`; default: a file in the temp dir,
    /// removed when the fleet is dropped (a file given here is kept).
    pub ca_out: Option<PathBuf>,
    /// Latency added to every request of every worker.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Random extra latency, up to this much, on every request.
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
    /// Faults given to workers at start.
    pub faults: FaultSpec,
    /// The admin user name.
    pub username: String,
    /// The admin password.
    pub password: Password,
    /// Lifetime of issued tokens (also what `GET /web_session_timeout` reports).
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// What `system_information.version` reports.
    pub version: String,
    /// Node state machine timing.
    pub node_timing: NodeTiming,
    /// How long a licence registration stays IN_PROGRESS.
    #[serde(with = "humantime_serde")]
    pub licence_delay: Duration,
    /// With a licence, labs cannot start more nodes than this in total (None: no limit).
    pub licensed_node_limit: Option<usize>,
    /// How many telemetry events each worker keeps (oldest dropped first).
    pub telemetry_cap: usize,
    /// Compute host resources reported by `system_stats`.
    pub resources: HostResources,
    /// The optional activity generator.
    pub activity: Option<ActivityConfig>,
    /// Fleet-wide index of this fleet's first worker (shards of a bigger fleet).
    pub index_offset: usize,
}

impl Default for CmlSimConfig {
    fn default() -> Self {
        CmlSimConfig {
            workers: 1,
            listen_base: Ipv4Addr::new(127, 1, 0, 1),
            port: 9443,
            tls: false,
            http2: false,
            ca_out: None,
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            faults: FaultSpec::default(),
            username: "admin".to_owned(),
            password: Password::from("admin"),
            token_ttl: Duration::from_secs(86_400),
            version: "2.9.0+build.3".to_owned(),
            node_timing: NodeTiming::default(),
            licence_delay: Duration::from_secs(5),
            licensed_node_limit: None,
            telemetry_cap: 5_000,
            resources: HostResources::default(),
            activity: None,
            index_offset: 0,
        }
    }
}

impl CmlSimConfig {
    /// The listen address of the worker with this fleet-wide index, if it stays inside
    /// 127.0.0.0/8 (and short of the broadcast address 127.255.255.255).
    pub fn worker_ip(&self, global_index: usize) -> Option<Ipv4Addr> {
        let base = u32::from(self.listen_base);
        let ip = base.checked_add(u32::try_from(global_index).ok()?)?;
        let ip = Ipv4Addr::from(ip);
        (ip.octets()[0] == 127 && ip != Ipv4Addr::new(127, 255, 255, 255)).then_some(ip)
    }
}
