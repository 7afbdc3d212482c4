//! `ccm bench`: reproducible performance runs that print one JSON object.
//!
//! - `ccm bench sync` — the fleet sync benchmark: spawns the CML simulator (`ccm sim`, in its
//!   own processes), registers its workers in a real engine on a temporary SQLite file, runs
//!   full CML sync cycles and reports their times, the requests the simulator received, ccm's
//!   peak memory and CPU time, and the resulting statuses; optionally runs the Python
//!   seed-poller on the same fleet and reports the speedup. See BENCHMARKS.md.
//! - `ccm bench sse` — live-event fan-out: many SSE clients of the real API, every event
//!   counted at every client, with its latency.

mod peer;
mod procstat;
mod sim;
mod sse;
mod sync;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// `ccm bench` and its benchmarks.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchCmd {
    #[command(subcommand)]
    pub(crate) command: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum BenchCommand {
    /// Full CML sync cycles of a simulated fleet (optionally against the Python seed-poller).
    Sync(SyncArgs),
    /// Live events fanned out to many SSE subscribers of the API.
    Sse(sse::SseArgs),
}

/// A peer implementation to run on the same fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Peer {
    /// The Python yardstick in `bench/seed-poller` (httpx, tenacity, aiobreaker).
    SeedPoller,
}

/// `ccm bench sync` flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SyncArgs {
    /// Simulated workers.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    pub(crate) workers: u32,
    /// Latency the simulator adds to every request, in milliseconds.
    #[arg(long, default_value_t = 20, value_name = "MS")]
    pub(crate) latency_ms: u64,
    /// Workers synced at once, like the peer's semaphore (the `cml_poll` bulkhead gets 4 call
    /// slots per worker, its queue holds the whole fleet). Default: the product default.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) concurrency: Option<u32>,
    /// Measured cycles (one warm-up cycle runs first and is reported apart).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) cycles: u32,
    /// Share of workers (0–100 %) that never answer (`P%:blackhole` in the simulator).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub(crate) blackhole_percent: u8,
    /// How long an open circuit breaker rejects calls before a probe (product default 60s).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub(crate) breaker_open_for: Option<Duration>,
    /// Idle keep-alive connections ccm keeps per worker (`[cml] pool_max_idle_per_host`).
    /// 0: none between calls, so memory and file descriptors stay flat however big the fleet
    /// (one idle connection costs ~16 KiB and a descriptor; see BENCHMARKS.md).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub(crate) idle_connections_per_worker: u32,
    /// How long an idle connection is kept (`[cml] pool_idle_timeout`; default: the product's).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub(crate) idle_timeout: Option<Duration>,
    /// Serve the simulated workers over HTTPS (a generated CA that ccm trusts through
    /// `[cml] tls = { ca_file }`): every new connection costs a TLS handshake.
    #[arg(long, conflicts_with = "peer")]
    pub(crate) tls: bool,
    /// Also run this implementation on the same fleet, and report the speedup.
    #[arg(long, value_enum)]
    pub(crate) peer: Option<Peer>,
    /// The peer's concurrency (the seed-poller's default is 10).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) peer_concurrency: u32,
    /// Directory holding `seed_poller.py` and `requirements.txt`.
    #[arg(long, value_name = "DIR", default_value = default_peer_dir())]
    pub(crate) peer_dir: PathBuf,
    /// The peer's Python virtualenv (created when missing).
    #[arg(long, value_name = "DIR", default_value = default_peer_venv())]
    pub(crate) peer_venv: PathBuf,
    /// Address of the first simulated worker (the others count up).
    #[arg(long, default_value = "127.100.0.1")]
    pub(crate) listen_base: Ipv4Addr,
    /// Port of every simulated worker.
    #[arg(long, default_value_t = 9443)]
    pub(crate) port: u16,
    /// Most simulated workers per simulator process (bigger fleets run in several).
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) shard_size: u32,
    /// Longest the whole run may take; children are stopped and the run fails after it.
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub(crate) timeout: Duration,
}

/// The repository's `bench/seed-poller`, as seen from where this binary was built.
fn default_peer_dir() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/seed-poller")
}

/// `target/seed-poller-venv` of the repository this binary was built from (gitignored).
fn default_peer_venv() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/seed-poller-venv")
}

/// Runs a benchmark and prints its JSON report on stdout.
pub(crate) fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd.command {
        BenchCommand::Sync(args) => sync::main(args),
        BenchCommand::Sse(args) => sse::main(args),
    }
}
