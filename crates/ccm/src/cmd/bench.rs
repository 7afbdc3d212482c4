//! `ccm bench`: reproducible performance runs that print one JSON object (BENCHMARKS.md).
//!
//! Thin glue: the flags become the options of a harness in `ccm_testbed::bench`, which runs
//! the benchmark and returns its report; this module prints it.
//!
//! - `ccm bench sync` — full CML sync cycles of a simulated fleet (`ccm sim` in child
//!   processes) through a real engine; optionally the Python seed-poller on the same fleet.
//! - `ccm bench sse` — live events fanned out to many SSE subscribers of the real API.
//! - `ccm bench api` — the API under load (worker list, worker detail, event streams) while a
//!   full CML cycle of the same fleet runs.
//! - `ccm bench idle` — idle policies (ccm's and three baselines) on usage traces replayed
//!   over simulated days: idle hours stopped, wrongful pauses, waits, money.
//! - `ccm bench failover` — seconds from kill -9 of one `ccm serve` replica until its workers
//!   are polled again, and double polls (`super::failover`).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use ccm_testbed::bench::{self, ApiOptions, SeedPoller, SseOptions, StreamKind, SyncOptions};

use crate::config::ConfigError;

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
    Sse(SseArgs),
    /// The API under load (worker list, worker detail, event streams, a viewer token) while
    /// a full CML cycle of the same fleet runs.
    Api(ApiArgs),
    /// Seconds from kill -9 of one `ccm serve` replica until every one of its workers was
    /// polled again by the others, and double polls (needs PostgreSQL and moto).
    Failover(super::failover::FailoverArgs),
    /// Idle policies on usage traces over simulated days (ccm and three baselines).
    Idle(IdleArgs),
}

/// `ccm bench idle` flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct IdleArgs {
    /// Trace: a preset (training, dev, weekend, long-runs), `random` (uniform gaps),
    /// `random-workday` (gaps of a working day: short breaks, lunch, done for the day), `all`
    /// (every preset and both random models), or a path to a .trace file. Repeatable.
    #[arg(long = "trace", default_value = "all")]
    pub(crate) traces: Vec<String>,
    /// Where the presets are.
    #[arg(long, default_value = "bench/traces")]
    pub(crate) traces_dir: PathBuf,
    /// Policies to run: ccm, ccm-nodes-ignored, original, cpu-threshold, fixed-schedule
    /// (comma-separated; default: all but ccm-nodes-ignored, which is added on long-runs).
    #[arg(long, value_delimiter = ',')]
    pub(crate) policies: Vec<String>,
    /// Seed of the random trace.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Workers of the random trace.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub(crate) random_workers: u32,
    /// Days of the random trace.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=62))]
    pub(crate) random_days: u32,
    /// Simulated time per step.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub(crate) tick: Duration,
    /// Simulated time from a start until CML is ready.
    #[arg(long, default_value = "6m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub(crate) boot: Duration,
    /// ccm's idle timeout, and the measurement's reference.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub(crate) timeout: Duration,
    /// Price of an instance-hour.
    #[arg(long, default_value_t = 3.96)]
    pub(crate) price: f64,
    /// Write the chart (SVG) here.
    #[arg(long)]
    pub(crate) svg: Option<PathBuf>,
    /// First loopback address of the simulated CML fleet.
    #[arg(long, default_value = "127.77.0.1")]
    pub(crate) listen_base: Ipv4Addr,
    /// Run ccm's jobs at every tick, not only where they can change something (same report,
    /// slower; to check the shortcut).
    #[arg(long)]
    pub(crate) every_tick: bool,
    /// Add the fair comparison: cpu-threshold's window and fixed-schedule's hours swept over
    /// a handful of values, and per baseline its best money at no more wrongful pauses than
    /// ccm's.
    #[arg(long)]
    pub(crate) sweep: bool,
    /// With --sweep: sweep original's timeout too (an engine run per value: slow).
    #[arg(long, requires = "sweep")]
    pub(crate) sweep_original: bool,
}

/// A peer implementation to run on the same fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Peer {
    /// The Python yardstick in `bench/seed-poller` (httpx, tenacity, aiobreaker).
    SeedPoller,
}

/// The store `ccm bench sync` writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StoreArg {
    /// A SQLite file in a temporary directory (the product's settings).
    Sqlite,
    /// A throwaway durable PostgreSQL server (Debian's `postgresql` package).
    Postgres,
    /// SQLite, then PostgreSQL, on the same simulated fleet; reports the ratio of medians.
    Both,
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
    /// slots per worker over HTTPS, 2 over plain HTTP, whose calls go one by one; its queue
    /// holds the whole fleet). Default: the product default.
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
    /// Idle keep-alive connections ccm keeps per worker (`[cml] pool_max_idle_per_host`;
    /// default: the product's, 1, which lets a sync's calls share one connection). 0: none
    /// between calls (every call opens its own connection, HTTP/2 included).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub(crate) idle_connections_per_worker: u32,
    /// The same for plain-HTTP workers (runs without `--tls`; `[cml]
    /// plain_pool_max_idle_per_host`; default: the product's, 1: a sync's calls one after
    /// another on one connection, closed by the last). 0: all four at once, a connection each.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub(crate) plain_idle_connections_per_worker: u32,
    /// How long an idle connection is kept (`[cml] pool_idle_timeout`; default: the product's).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub(crate) idle_timeout: Option<Duration>,
    /// Serve the simulated workers over HTTPS (a generated CA that ccm trusts through
    /// `[cml] tls = { ca_file }`): every new connection costs a TLS handshake.
    #[arg(long, conflicts_with = "peer")]
    pub(crate) tls: bool,
    /// With --tls: the simulator speaks HTTP/1.1 only (no ALPN), like a server without
    /// HTTP/2; by default it offers h2 as CML's nginx does.
    #[arg(long, requires = "tls")]
    pub(crate) sim_http1: bool,
    /// ccm and the floor speak HTTP/1.1 only (`[cml] http2 = false`, the product's default).
    #[arg(long, conflicts_with = "http2")]
    pub(crate) http1: bool,
    /// ccm and the floor offer HTTP/2 by ALPN (`[cml] http2 = true`), for comparison.
    #[arg(long)]
    pub(crate) http2: bool,
    /// Also run this implementation on the same fleet, and report the speedup.
    #[arg(long, value_enum)]
    pub(crate) peer: Option<Peer>,
    /// The peer's concurrency (the seed-poller's default is 10).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) peer_concurrency: u32,
    /// The seed-poller's directory (`seed_poller.py`, `requirements.txt`)
    /// [default: bench/seed-poller under the working directory].
    #[arg(long = "seed-poller", alias = "peer-dir", value_name = "DIR")]
    pub(crate) seed_poller: Option<PathBuf>,
    /// The peer's Python virtualenv (created when missing).
    #[arg(long, value_name = "DIR", default_value = "target/seed-poller-venv")]
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
    /// The store the engine writes to.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub(crate) store: StoreArg,
    /// Also run the floor: a minimal client on ccm's HTTP stack (same TLS, pool, requests and
    /// concurrency, no ccm logic) on the same fleet; reports `floor_seconds` and
    /// `ratio_to_floor`.
    #[arg(long)]
    pub(crate) floor: bool,
}

/// `ccm bench sse` flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SseArgs {
    /// SSE clients connected at once.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    pub(crate) subscribers: u32,
    /// Events published.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) events: u32,
    /// Pause between two published events.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub(crate) interval: Duration,
    /// Address of the one simulated worker the engine needs.
    #[arg(long, default_value = "127.98.0.1")]
    pub(crate) listen_base: Ipv4Addr,
    /// Longest the whole run may take.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub(crate) timeout: Duration,
}

/// What each event-stream subscriber of `ccm bench api` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StreamArg {
    /// One worker each (`?worker=<id>`, as the worker page), dealt round-robin.
    Worker,
    /// The whole fleet (no filter, as the fleet page's live store).
    Fleet,
}

/// The store `ccm bench api` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ApiStoreArg {
    /// A SQLite file in a temporary directory (the product's settings).
    Sqlite,
    /// A throwaway durable PostgreSQL server (Debian's `postgresql` package).
    Postgres,
}

/// `ccm bench api` flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ApiArgs {
    /// Simulated workers.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    pub(crate) workers: u32,
    /// HTTP clients asking, in turn, for a page of the worker list and a worker's detail.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=2_000))]
    pub(crate) clients: u32,
    /// Each client's pause between two requests (its think time).
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub(crate) client_interval: Duration,
    /// Event-stream subscribers (two descriptors each: both ends are in this process).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(0..=9_000))]
    pub(crate) subscribers: u32,
    /// What each subscriber follows.
    #[arg(long, value_enum, default_value = "worker")]
    pub(crate) stream: StreamArg,
    /// The worker list's query string: filters, sort and page, as the API takes them.
    #[arg(long, default_value = bench::DEFAULT_LIST_QUERY, value_name = "QUERY")]
    pub(crate) list_query: String,
    /// Measured CML cycles under the load (one warm-up cycle runs first, without it).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) cycles: u32,
    /// Latency the simulator adds to every request, in milliseconds.
    #[arg(long, default_value_t = 20, value_name = "MS")]
    pub(crate) latency_ms: u64,
    /// Workers synced at once (default: the product default).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) concurrency: Option<u32>,
    /// Address of the first simulated worker (the others count up).
    #[arg(long, default_value = "127.120.0.1")]
    pub(crate) listen_base: Ipv4Addr,
    /// Port of every simulated worker.
    #[arg(long, default_value_t = 9443)]
    pub(crate) port: u16,
    /// Most simulated workers per simulator process (bigger fleets run in several).
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) shard_size: u32,
    /// Address the API listens on (a loopback address; the port is chosen by the system).
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) api_listen: Ipv4Addr,
    /// The store the engine and the API use.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub(crate) store: ApiStoreArg,
    /// Longest the whole run may take; children are stopped and the run fails after it.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub(crate) timeout: Duration,
    /// Worker threads of the API's runtime (`[server] threads`; 0: one per core).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub(crate) server_threads: u16,
    /// Worker threads of the engine's runtime (`[engine] threads`; 0: one per core).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub(crate) engine_threads: u16,
    /// Nice increment of the engine's threads (`[engine] nice`, 0 to 19).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub(crate) engine_nice: i32,
    /// Run the server, the engine, the clients and the subscribers on one runtime (the layout
    /// before the split), for comparison.
    #[arg(long)]
    pub(crate) one_runtime: bool,
    /// Nice increment of the simulator's processes (0 to 19): the simulated CML controllers
    /// run elsewhere in a real deployment, so by default they yield the cores to ccm as the
    /// engine does.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub(crate) sim_nice: i32,
}

/// Runs a benchmark and prints its JSON report on stdout.
pub(crate) fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd.command {
        BenchCommand::Sync(args) => sync(args),
        BenchCommand::Sse(args) => sse(args),
        BenchCommand::Api(args) => api(args),
        BenchCommand::Idle(args) => idle(args),
        BenchCommand::Failover(args) => failover(args),
    }
}

/// `ccm bench idle`: reads the traces (one-line errors naming the file and line), runs every
/// policy on each, prints the reports as one JSON array and their tables on stderr.
fn idle(args: IdleArgs) -> anyhow::Result<()> {
    use bench::idle::{PRESETS, PolicyKind, Trace};
    if !(args.price.is_finite() && args.price >= 0.0) {
        return Err(ConfigError("--price: a price is a number, 0 or more".into()).into());
    }
    if args.tick < Duration::from_secs(60) || args.tick > Duration::from_secs(3600) {
        return Err(ConfigError("--tick: 1m to 1h".into()).into());
    }
    let mut policies = Vec::new();
    for p in &args.policies {
        policies.push(PolicyKind::parse(p).ok_or_else(|| {
            ConfigError(format!(
                "--policies: {p:?} is not a policy (ccm, ccm-nodes-ignored, original, cpu-threshold, fixed-schedule)"
            ))
        })?);
    }
    let mut names: Vec<String> = Vec::new();
    for t in &args.traces {
        if t == "all" {
            names.extend(PRESETS.iter().map(|p| (*p).to_owned()));
            names.push("random".into());
            names.push("random-workday".into());
        } else {
            names.push(t.clone());
        }
    }
    let mut traces = Vec::new();
    for name in names {
        let trace = if name == "random" {
            Trace::random(args.seed, args.random_workers as usize, args.random_days)
        } else if name == "random-workday" {
            Trace::random_workday(args.seed, args.random_workers as usize, args.random_days)
        } else {
            bench::idle::load_trace(&name, &args.traces_dir).map_err(|e| {
                ConfigError(format!(
                    "--trace {name}: {e} (run from the repository root or pass --traces-dir)"
                ))
            })?
        };
        traces.push(trace);
    }
    let runtime = super::runtime::build()?;
    let mut reports = Vec::new();
    for trace in traces {
        let mut opts = bench::idle::default_options(trace);
        if !policies.is_empty() {
            opts.policies = policies.clone();
        }
        opts.tick = args.tick;
        opts.boot = args.boot;
        opts.timeout = args.timeout;
        opts.price = args.price;
        opts.listen_base = args.listen_base;
        opts.skip_quiet = !args.every_tick;
        opts.sweep = args.sweep;
        opts.sweep_original = args.sweep_original;
        let report = runtime.block_on(async move {
            tokio::select! {
                r = bench::idle::idle(opts) => r.context("idle benchmark failed"),
                () = super::runtime::shutdown_signal() => anyhow::bail!("interrupted"),
            }
        })?;
        eprint!("{}", bench::idle::table(&report));
        reports.push(report);
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
    if let Some(path) = &args.svg {
        std::fs::write(path, bench::idle::chart(&reports))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("{}", serde_json::to_string_pretty(&reports)?);
    Ok(())
}

/// `ccm bench sync`: checks the flags, runs the harness until done, Ctrl-C or SIGTERM (the
/// simulator's processes are stopped either way) and prints the report.
fn sync(args: SyncArgs) -> anyhow::Result<()> {
    let peer = match args.peer {
        None => None,
        Some(Peer::SeedPoller) => Some(SeedPoller {
            dir: bench::locate_seed_poller(args.seed_poller.as_deref()).map_err(|e| {
                let hint = match args.seed_poller {
                    Some(_) => "check --seed-poller DIR",
                    None => "run from the repository root or pass --seed-poller DIR",
                };
                ConfigError(format!("{e}; {hint}"))
            })?,
            venv: args.peer_venv,
            concurrency: args.peer_concurrency,
        }),
    };
    let options = SyncOptions {
        simulator: super::sim_launcher()?,
        workers: args.workers,
        latency_ms: args.latency_ms,
        concurrency: args.concurrency,
        cycles: args.cycles,
        blackhole_percent: args.blackhole_percent,
        breaker_open_for: args.breaker_open_for,
        idle_connections_per_worker: args.idle_connections_per_worker,
        plain_idle_connections_per_worker: args.plain_idle_connections_per_worker,
        idle_timeout: args.idle_timeout,
        tls: args.tls,
        sim_http2: !args.sim_http1,
        client_http2: if args.http2 || args.http1 {
            args.http2
        } else {
            ccm_cml::CmlConfig::default().http2
        },
        peer,
        listen_base: args.listen_base,
        port: args.port,
        shard_size: args.shard_size,
        timeout: args.timeout,
        store: match args.store {
            StoreArg::Sqlite => bench::BenchStore::Sqlite,
            StoreArg::Postgres => bench::BenchStore::Postgres,
            StoreArg::Both => bench::BenchStore::Both,
        },
        floor: args.floor,
    };
    let runtime = super::runtime::build()?;
    let outcome = runtime.block_on(async move {
        tokio::select! {
            r = bench::sync(options) => r.context("sync benchmark failed"),
            () = super::runtime::shutdown_signal() => anyhow::bail!("interrupted"),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    let report = outcome?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `ccm bench failover`: runs it (bounded by `--timeout`; every child is killed at the end or
/// on Ctrl-C) and prints the report.
fn failover(args: super::failover::FailoverArgs) -> anyhow::Result<()> {
    let runtime = super::runtime::build()?;
    let outcome = runtime.block_on(async move {
        tokio::select! {
            r = super::failover::run(args) => r.context("failover benchmark failed"),
            () = super::runtime::shutdown_signal() => anyhow::bail!("interrupted"),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    let report = outcome?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `ccm bench sse`: runs the harness (bounded by `--timeout`) and prints the report, its
/// summary on stderr.
fn sse(args: SseArgs) -> anyhow::Result<()> {
    let runtime = super::runtime::build()?;
    let options = SseOptions {
        interval: args.interval,
        fleet_base: args.listen_base,
        ..SseOptions::default()
    };
    let report = runtime.block_on(async {
        tokio::time::timeout(
            args.timeout,
            bench::sse(args.subscribers as usize, args.events as usize, options),
        )
        .await
        .with_context(|| {
            format!(
                "the benchmark took longer than --timeout {:?}",
                args.timeout
            )
        })?
        .context("SSE benchmark failed")
    })?;
    eprintln!("{report}");
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// `ccm bench api`: checks the flags, runs the harness until done, Ctrl-C or SIGTERM (the
/// simulator's processes are stopped either way) and prints the report.
fn api(args: ApiArgs) -> anyhow::Result<()> {
    if !args.api_listen.is_loopback() {
        return Err(ConfigError("--api-listen: a loopback address (127.0.0.0/8)".into()).into());
    }
    if !args.listen_base.is_loopback() {
        return Err(ConfigError("--listen-base: a loopback address (127.0.0.0/8)".into()).into());
    }
    if args.list_query.len() > 1024 || args.list_query.starts_with('?') {
        return Err(ConfigError(
            "--list-query: a query string without the leading '?', at most 1024 bytes".into(),
        )
        .into());
    }
    if args.client_interval < Duration::from_millis(1)
        || args.client_interval > Duration::from_secs(60)
    {
        return Err(ConfigError("--client-interval: 1ms to 60s".into()).into());
    }
    let mut options = ApiOptions::new(super::sim_launcher()?);
    options.workers = args.workers;
    options.clients = args.clients;
    options.client_interval = args.client_interval;
    options.subscribers = args.subscribers;
    options.stream = match args.stream {
        StreamArg::Worker => StreamKind::Worker,
        StreamArg::Fleet => StreamKind::Fleet,
    };
    options.list_query = args.list_query;
    options.cycles = args.cycles;
    options.latency_ms = args.latency_ms;
    options.concurrency = args.concurrency;
    options.listen_base = args.listen_base;
    options.port = args.port;
    options.shard_size = args.shard_size;
    options.api_ip = args.api_listen.into();
    options.store = match args.store {
        ApiStoreArg::Sqlite => bench::BenchStore::Sqlite,
        ApiStoreArg::Postgres => bench::BenchStore::Postgres,
    };
    options.timeout = args.timeout;
    options.server_threads = usize::from(args.server_threads);
    options.engine_runtime = ccm_engine::EngineRuntimeConfig {
        threads: usize::from(args.engine_threads),
        nice: args.engine_nice,
    };
    options.one_runtime = args.one_runtime;
    options.sim_nice = args.sim_nice;
    let runtime = super::runtime::build()?;
    let outcome = runtime.block_on(async move {
        tokio::select! {
            r = bench::api(options) => r.context("api benchmark failed"),
            () = super::runtime::shutdown_signal() => anyhow::bail!("interrupted"),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    let report = outcome?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
