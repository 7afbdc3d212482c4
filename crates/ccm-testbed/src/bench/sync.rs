//! `ccm bench sync`: full CML sync cycles of a simulated fleet through a real engine.
//!
//! The run: start the simulator (child processes), register its workers as running workers
//! in a temporary SQLite store (the product's store, durability settings included, so
//! persistence is part of what is measured), start an engine with background polling off,
//! run one warm-up cycle (logins, connections; reported apart, not counted) and then the
//! measured cycles with [`Engine::run_cml_cycle`], which returns once every result is
//! stored. Requests are counted by the simulator (its control API), so retries and logins
//! are included and nothing ccm says about itself is trusted.
//!
//! `--store postgres` runs the same on a throwaway durable PostgreSQL server (Debian's
//! package, started in a temporary directory); `--store both` measures SQLite and then
//! PostgreSQL on the same simulated fleet in one run and reports the ratio of their medians.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ccm_cloud::CloudProvider;
use ccm_cml::{CmlClient, CmlConfig};
use ccm_cml_sim::{SimLauncher, WorkerSelector};
use ccm_domain::worker::{AddressPreference, EndpointPolicy, InstanceObservation};
use ccm_domain::{Actor, Ec2State, InstanceId, Region, RuntimeSettings, Worker};
use ccm_engine::{CML_SYNC_CALLS, Engine, EngineConfig, EngineParts, TokioClock};
use ccm_resilience::{BulkheadConfig, ResilienceConfig};
use ccm_store::{DatabaseUrl, PgStore, SqliteStore, Store, StoreConfig};
use serde::Serialize;

use super::BenchError;
use super::peer::{PeerReport, SeedPoller, run_seed_poller};
use super::procstat;
use super::report::{Statuses, Summary, round3};
use super::sim_process::{SimProcess, SimSpec};
use crate::ec2::{Ec2SimConfig, SimulatedCloud};

/// What to run (the flags of `ccm bench sync`).
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// How to run the CML simulator's command line (`ccm sim`) in child processes.
    pub simulator: SimLauncher,
    /// Simulated workers.
    pub workers: u32,
    /// Latency the simulator adds to every request, in milliseconds.
    pub latency_ms: u64,
    /// Workers synced at once (the `cml_poll` bulkhead gets the gate slots of a sync per
    /// worker, [`fleet_resilience_for`]; its queue holds the whole fleet). `None`: the product
    /// default.
    pub concurrency: Option<u32>,
    /// Measured cycles (one warm-up cycle runs first and is reported apart).
    pub cycles: u32,
    /// Share of workers (0–100 %) that never answer (`P%:blackhole` in the simulator).
    pub blackhole_percent: u8,
    /// How long an open breaker rejects calls before a probe (`None`: the product default).
    pub breaker_open_for: Option<Duration>,
    /// Idle keep-alive connections ccm keeps per worker (`[cml] pool_max_idle_per_host`).
    pub idle_connections_per_worker: u32,
    /// The same for plain-HTTP workers (`[cml] plain_pool_max_idle_per_host`).
    pub plain_idle_connections_per_worker: u32,
    /// How long an idle connection is kept (`None`: the product default).
    pub idle_timeout: Option<Duration>,
    /// Serve the simulated workers over HTTPS with a generated CA that ccm trusts.
    pub tls: bool,
    /// With `tls`: the simulator offers HTTP/2 by ALPN, as CML's nginx does (`false`: it
    /// speaks HTTP/1.1 only, like a server without HTTP/2).
    pub sim_http2: bool,
    /// `[cml] http2`: ccm (and the floor) offer HTTP/2 (the product default).
    pub client_http2: bool,
    /// Also run the Python seed-poller on the same fleet and report the speedup.
    pub peer: Option<SeedPoller>,
    /// Address of the first simulated worker (the others count up).
    pub listen_base: Ipv4Addr,
    /// Port of every simulated worker.
    pub port: u16,
    /// Most simulated workers per simulator process.
    pub shard_size: u32,
    /// Longest the whole run may take; children are stopped and the run fails after it.
    pub timeout: Duration,
    /// Which store(s) the engine writes to.
    pub store: BenchStore,
    /// Also run the floor ([`super::floor`]): a minimal client on ccm's HTTP stack making the
    /// same requests at the same concurrency on the same fleet, after ccm's cycles.
    pub floor: bool,
}

/// The store a `ccm bench sync` run writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchStore {
    /// A SQLite file in a temporary directory (the product's settings).
    #[default]
    Sqlite,
    /// A throwaway durable PostgreSQL server (fsync and synchronous commit on).
    Postgres,
    /// SQLite, then PostgreSQL, on the same simulated fleet.
    Both,
}

/// The PostgreSQL half of a `--store both` run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PostgresRun {
    /// Time to register the workers and start the engine.
    pub setup_seconds: f64,
    /// The warm-up cycle.
    pub warmup_seconds: f64,
    /// Measured cycle times.
    pub cycle_seconds: Summary,
    /// Each measured cycle's time, in order.
    pub per_cycle_seconds: Vec<f64>,
    /// ccm's CPU time during the measured cycles.
    pub cpu_seconds: f64,
    /// Workers by service status after the last cycle.
    pub statuses: Statuses,
    /// PostgreSQL's median cycle ÷ SQLite's (the target: ≤ 1.3).
    pub median_vs_sqlite: f64,
}

/// What the blackholed workers saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlackholeReport {
    /// Workers that never answer.
    pub workers: u64,
    /// How long an open breaker rejects calls before it lets a probe through.
    pub breaker_open_for_seconds: f64,
    /// Requests the blackholed workers received in the warm-up cycle.
    pub warmup_requests: u64,
    /// Requests the blackholed workers received in each measured cycle.
    pub requests_per_cycle: Vec<u64>,
    /// Requests the blackholed workers received in the last measured cycle.
    pub requests_last_cycle: u64,
    /// Breakers open or half-open after the last cycle.
    pub breakers_open: usize,
}

/// What `ccm bench sync` reports (its JSON; BENCHMARKS.md explains every field).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncReport {
    /// Always `sync`.
    pub benchmark: &'static str,
    /// Simulated workers.
    pub workers: u32,
    /// Measured cycles.
    pub cycles: u32,
    /// Latency the simulator added to every request.
    pub latency_ms: u64,
    /// Workers synced at once.
    pub concurrency: usize,
    /// Slots of the `cml_poll` bulkhead (calls in flight): `concurrency` × calls per sync.
    pub cml_poll_slots: usize,
    /// `[cml] pool_max_idle_per_host`: keep-alive connections kept per worker between calls.
    pub idle_connections_per_worker: u32,
    /// `[cml] plain_pool_max_idle_per_host`: the same over plain HTTP (runs without `--tls`).
    pub plain_idle_connections_per_worker: u32,
    /// Share of workers that never answered.
    pub blackhole_percent: u8,
    /// Whether the workers were served over HTTPS (`--tls`).
    pub tls: bool,
    /// The store the figures below were measured on (`sqlite` or `postgres`).
    pub store: &'static str,
    /// The warm-up cycle (first logins, new connections); not in `cycle_seconds`.
    pub warmup_seconds: f64,
    /// Measured cycle times.
    pub cycle_seconds: Summary,
    /// Each measured cycle's time, in order.
    pub per_cycle_seconds: Vec<f64>,
    /// Requests the simulator received during the measured cycles (all shards).
    pub requests: u64,
    /// `requests` ÷ total measured cycle time.
    pub requests_per_second: f64,
    /// ccm's peak resident memory over the whole run (VmHWM), MiB; the simulator's processes
    /// are not included.
    pub rss_mb: f64,
    /// ccm's resident memory after the last cycle, MiB.
    pub rss_end_mb: f64,
    /// Most file descriptors ccm held at once during the measured cycles (sampled every
    /// 50 ms; the open-file limit here is 20,000).
    pub open_fds_peak: usize,
    /// ccm's user + system CPU time during the measured cycles.
    pub cpu_seconds: f64,
    /// The simulator's CPU time during the measured cycles (it shares the machine).
    pub sim_cpu_seconds: f64,
    /// Time to register the workers in the store and start the engine.
    pub setup_seconds: f64,
    /// Workers by service status after the last cycle.
    pub statuses: Statuses,
    /// With `blackhole_percent` > 0: what the blackholed workers saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blackholed: Option<BlackholeReport>,
    /// With a peer: its figures on the same fleet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerReport>,
    /// Peer median ÷ ccm median.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speedup: Option<f64>,
    /// With `--store both`: the same cycles on PostgreSQL (the figures above are SQLite's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresRun>,
    /// With `--tls`: TLS handshakes the simulator completed during the measured cycles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_handshakes: Option<u64>,
    /// With `--tls`: of those, handshakes that resumed a session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_resumed: Option<u64>,
    /// TCP connections the simulator accepted during the measured cycles (one per worker per
    /// cycle when each sync shares one connection).
    pub connections: u64,
    /// With `--tls`: of those, connections that spoke HTTP/2 (chosen by ALPN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h2_connections: Option<u64>,
    /// With `--floor`: the floor's median cycle (same stack, requests and concurrency, no ccm
    /// logic), measured on the same fleet after ccm's cycles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor_seconds: Option<f64>,
    /// With `--floor`: the floor's cycles {min, median, max}.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor_cycle_seconds: Option<Summary>,
    /// With `--floor`: requests of the floor that failed (expected 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor_failed_requests: Option<u64>,
    /// With `--floor`: ccm's median cycle ÷ the floor's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_floor: Option<f64>,
}

/// Runs the sync benchmark (bounded by [`SyncOptions::timeout`]; the simulator's processes
/// are stopped whichever way it ends, also when the future is dropped).
pub async fn sync(options: SyncOptions) -> Result<SyncReport, BenchError> {
    let limit = options.timeout;
    tokio::time::timeout(limit, run(options))
        .await
        .map_err(|_| BenchError::Timeout(limit))?
}

/// The IPv4 address in a base URL such as `http://127.100.0.1:9443`.
fn ip_of(url: &str) -> Result<Ipv4Addr, BenchError> {
    let host = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split([':', '/'])
        .next()
        .unwrap_or_default();
    host.parse()
        .map_err(|_| BenchError::Simulator(format!("an endpoint without an IPv4 host: {url}")))
}

/// Runtime settings with every background job off: the benchmark drives the cycles.
fn quiet_settings() -> RuntimeSettings {
    RuntimeSettings {
        polling: ccm_domain::settings::PollingSettings::all_off(),
        ..RuntimeSettings::default()
    }
}

/// Registers one running worker per simulator endpoint, directly in the store.
pub(super) async fn register(
    store: &dyn Store,
    endpoints: &[String],
    policy: &EndpointPolicy,
) -> Result<(), BenchError> {
    let region = Region::parse("eu-west-1").map_err(BenchError::setup("region"))?;
    let by = Actor::system("bench");
    let now = chrono::Utc::now();
    for (i, url) in endpoints.iter().enumerate() {
        let ip = ip_of(url)?;
        let obs = InstanceObservation {
            instance_id: InstanceId::parse(&format!("i-{i:017x}"))
                .map_err(BenchError::setup("instance id"))?,
            state: Ec2State::Running,
            instance_type: None,
            ami_id: None,
            public_ip: Some(IpAddr::V4(ip)),
            private_ip: None,
            tags: BTreeMap::from([("Name".to_owned(), format!("bench-{i:05}"))]),
            launched_at: Some(now),
            detailed_monitoring: false,
            state_reason: None,
        };
        let (worker, _) = Worker::import(&obs, region.clone(), policy, by.clone(), now);
        if worker.endpoint.as_deref() != Some(url.as_str()) {
            return Err(BenchError::Invalid(format!(
                "worker {i}: endpoint {:?} does not match the simulator's {url}",
                worker.endpoint
            )));
        }
        store
            .insert(&worker)
            .await
            .map_err(BenchError::setup("store"))?;
    }
    Ok(())
}

/// The `[cml]` section of a run: product defaults, the run's pool (idle connections per
/// worker over HTTPS, idle timeout; `plain_pool` over plain HTTP) and the simulator's CA.
fn cml_config(
    policy: &EndpointPolicy,
    pool: (usize, Option<Duration>),
    plain_pool: usize,
    ca_file: Option<std::path::PathBuf>,
    http2: bool,
) -> CmlConfig {
    let mut cml_cfg = CmlConfig {
        endpoint: policy.clone(),
        http2,
        ..CmlConfig::default()
    };
    cml_cfg.pool_max_idle_per_host = pool.0;
    cml_cfg.plain_pool_max_idle_per_host = plain_pool;
    if let Some(ca) = ca_file {
        cml_cfg.tls = ccm_cml::TlsConfig::CaFile(ca);
    }
    if let Some(idle) = pool.1 {
        cml_cfg.pool_idle_timeout = idle;
    }
    cml_cfg
}

/// Everything one engine needs, built on `store`, with the product's `[cml] http2` (and
/// `pool` over plain HTTP too).
pub(super) async fn start_engine(
    store: Arc<dyn Store>,
    resilience_cfg: &ResilienceConfig,
    policy: EndpointPolicy,
    pool: (usize, Option<Duration>),
    ca_file: Option<std::path::PathBuf>,
) -> Result<Engine, BenchError> {
    let http2 = CmlConfig::default().http2;
    start_engine_with(store, resilience_cfg, policy, pool, pool.0, ca_file, http2).await
}

/// [`start_engine`] with the plain-HTTP pool and `[cml] http2` set.
async fn start_engine_with(
    store: Arc<dyn Store>,
    resilience_cfg: &ResilienceConfig,
    policy: EndpointPolicy,
    pool: (usize, Option<Duration>),
    plain_pool: usize,
    ca_file: Option<std::path::PathBuf>,
    http2: bool,
) -> Result<Engine, BenchError> {
    let (events, resilience) = ccm_engine::resilience_with_bus(resilience_cfg, None);
    let cml_cfg = cml_config(&policy, pool, plain_pool, ca_file, http2);
    let cml = CmlClient::new(&cml_cfg, resilience.clone()).map_err(BenchError::setup("cml"))?;
    let cloud: Arc<dyn CloudProvider> =
        Arc::new(SimulatedCloud::new(Ec2SimConfig::default()).map_err(BenchError::setup("cloud"))?);
    let config = EngineConfig::new(
        Default::default(),
        Default::default(),
        Default::default(),
        Default::default(),
    );
    let engine = Engine::start(EngineParts {
        store,
        cloud,
        cml,
        resilience,
        endpoint: policy,
        config,
        initial_settings: quiet_settings(),
        clock: Arc::new(TokioClock::new()),
    })
    .await
    .map_err(BenchError::setup("engine"))?;
    engine.forward_resilience_events(events);
    Ok(engine)
}

/// The resilience configuration of a benchmark's engine for `n` workers, and the workers
/// synced at once, for syncs with up to [`CML_SYNC_CALLS`] calls at once (HTTPS; see
/// [`fleet_resilience_for`]).
pub(super) fn fleet_resilience(n: usize, concurrency: Option<u32>) -> (ResilienceConfig, usize) {
    fleet_resilience_for(n, concurrency, CML_SYNC_CALLS)
}

/// The resilience configuration of a benchmark's engine for `n` workers whose syncs take
/// `gate_slots` of the gate's `cml_poll` call slots ([`ccm_cml::SyncOrder::gate_slots`]: 2 over
/// plain HTTP, 4 over HTTPS), and the workers synced at once. `concurrency` (`--concurrency
/// C`) is in workers, like the peer's semaphore: the bulkhead gets C × `gate_slots` (`None`:
/// the product default, `cml_poll.max_concurrent / gate_slots` workers). Its queue holds the
/// whole fleet.
pub(super) fn fleet_resilience_for(
    n: usize,
    concurrency: Option<u32>,
    gate_slots: usize,
) -> (ResilienceConfig, usize) {
    let gate_slots = gate_slots.max(1);
    let mut resilience_cfg = ResilienceConfig::default();
    let default_poll = resilience_cfg.bulkheads.cml_poll.clone();
    let concurrency = concurrency.map_or((default_poll.max_concurrent / gate_slots).max(1), |c| {
        c as usize
    });
    resilience_cfg.bulkheads.cml_poll = BulkheadConfig::new(
        concurrency * gate_slots,
        default_poll.max_queue.max(n * CML_SYNC_CALLS),
    );
    (resilience_cfg, concurrency)
}

pub(super) fn statuses(engine: &Engine) -> Statuses {
    let counts = engine.counts();
    let get = |k: &str| counts.by_service.get(k).copied().unwrap_or(0);
    Statuses {
        ready: get("ready"),
        degraded: get("degraded"),
        unavailable: get("unavailable"),
        unknown: get("unknown"),
    }
}

async fn run(args: SyncOptions) -> Result<SyncReport, BenchError> {
    let started = tokio::time::Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("ccm-bench-")
        .tempdir()
        .map_err(BenchError::io("cannot create a temporary directory"))?;
    let p = args.blackhole_percent;
    let blackhole_sel = (p > 0).then(|| format!("{p}%"));
    let spec = SimSpec {
        launcher: args.simulator.clone(),
        workers: args.workers,
        listen_base: args.listen_base,
        port: args.port,
        latency_ms: args.latency_ms,
        faults: blackhole_sel.as_ref().map(|s| format!("{s}:blackhole")),
        shard_size: args.shard_size,
        tls_ca_out: args.tls.then(|| dir.path().join("sim-ca.pem")),
        http2: args.tls && args.sim_http2,
        nice: 0,
    };
    eprintln!(
        "ccm bench: starting the simulator ({} workers, {} ms latency{})",
        args.workers,
        args.latency_ms,
        blackhole_sel
            .as_ref()
            .map(|s| format!(", {s} blackholed"))
            .unwrap_or_default()
    );
    let sim = SimProcess::start(&spec, dir.path()).await?;
    let outcome = measure_stores(&args, &sim, dir.path(), blackhole_sel.as_deref(), started).await;
    sim.stop().await;
    outcome
}

/// A throwaway durable PostgreSQL server (Debian's package, in a temporary directory; stopped
/// when dropped) and the URL of a fresh database in it.
pub async fn throwaway_postgres()
-> Result<(ccm_store::testkit::postgres::TestPostgres, DatabaseUrl), BenchError> {
    eprintln!("ccm bench: starting a throwaway PostgreSQL server");
    let server =
        tokio::task::spawn_blocking(ccm_store::testkit::postgres::TestPostgres::start_durable)
            .await
            .map_err(BenchError::setup("postgres"))?
            .map_err(BenchError::setup("postgres"))?;
    let url = server
        .create_database()
        .await
        .map_err(BenchError::setup("postgres"))?;
    Ok((server, url))
}

/// A throwaway PostgreSQL server and a store on a fresh database in it.
pub(super) async fn postgres_store()
-> Result<(ccm_store::testkit::postgres::TestPostgres, Arc<dyn Store>), BenchError> {
    let (server, url) = throwaway_postgres().await?;
    let store = PgStore::connect(&url, &StoreConfig::default())
        .await
        .map_err(BenchError::setup("postgres store"))?;
    Ok((server, Arc::new(store)))
}

/// Runs the measurement on the store(s) `args.store` names.
async fn measure_stores(
    args: &SyncOptions,
    sim: &SimProcess,
    dir: &Path,
    blackhole_sel: Option<&str>,
    started: tokio::time::Instant,
) -> Result<SyncReport, BenchError> {
    let sqlite = || async {
        let store_cfg = StoreConfig {
            path: Some(dir.join("bench.db")),
            ..StoreConfig::default()
        };
        let store = SqliteStore::open(&store_cfg)
            .await
            .map_err(BenchError::setup("store"))?;
        Ok::<Arc<dyn Store>, BenchError>(Arc::new(store))
    };
    match args.store {
        BenchStore::Sqlite => {
            measure(args, sim, sqlite().await?, "sqlite", blackhole_sel, started).await
        }
        BenchStore::Postgres => {
            let (_server, store) = postgres_store().await?;
            measure(args, sim, store, "postgres", blackhole_sel, started).await
        }
        BenchStore::Both => {
            let mut report =
                measure(args, sim, sqlite().await?, "sqlite", blackhole_sel, started).await?;
            let (_server, store) = postgres_store().await?;
            let on_pg = SyncOptions {
                peer: None,
                ..args.clone()
            };
            let pg = measure(&on_pg, sim, store, "postgres", blackhole_sel, started).await?;
            let ratio = if report.cycle_seconds.median > 0.0 {
                round3(pg.cycle_seconds.median / report.cycle_seconds.median)
            } else {
                0.0
            };
            eprintln!(
                "ccm bench: median cycle {:.3} s on SQLite, {:.3} s on PostgreSQL ({ratio}x)",
                report.cycle_seconds.median, pg.cycle_seconds.median
            );
            report.postgres = Some(PostgresRun {
                setup_seconds: pg.setup_seconds,
                warmup_seconds: pg.warmup_seconds,
                cycle_seconds: pg.cycle_seconds,
                per_cycle_seconds: pg.per_cycle_seconds,
                cpu_seconds: pg.cpu_seconds,
                statuses: pg.statuses,
                median_vs_sqlite: ratio,
            });
            Ok(report)
        }
    }
}

async fn measure(
    args: &SyncOptions,
    sim: &SimProcess,
    store: Arc<dyn Store>,
    store_name: &'static str,
    blackhole_sel: Option<&str>,
    started: tokio::time::Instant,
) -> Result<SyncReport, BenchError> {
    let n = args.workers as usize;
    let policy = EndpointPolicy {
        scheme: if args.tls { "https" } else { "http" }.into(),
        port: Some(args.port),
        address: AddressPreference::Public,
        ..EndpointPolicy::default()
    };
    let pool = (args.idle_connections_per_worker as usize, args.idle_timeout);
    let plain_pool = args.plain_idle_connections_per_worker as usize;
    let cml_cfg = cml_config(
        &policy,
        pool,
        plain_pool,
        sim.ca_file.clone(),
        args.client_http2,
    );
    // The endpoints share a scheme: one order for the fleet.
    let gate_slots = sim.endpoints.first().map_or(CML_SYNC_CALLS, |e| {
        ccm_cml::sync_order(&cml_cfg, e).gate_slots()
    });
    let (mut resilience_cfg, concurrency) = fleet_resilience_for(n, args.concurrency, gate_slots);
    let cml_poll_slots = concurrency * gate_slots;
    if let Some(open_for) = args.breaker_open_for {
        resilience_cfg.breaker.open_for = open_for;
    }
    resilience_cfg
        .validate()
        .map_err(BenchError::setup("resilience"))?;

    let setup = tokio::time::Instant::now();
    register(store.as_ref(), &sim.endpoints, &policy).await?;
    let engine = start_engine_with(
        store,
        &resilience_cfg,
        policy.clone(),
        pool,
        plain_pool,
        sim.ca_file.clone(),
        args.client_http2,
    )
    .await?;
    let setup_seconds = setup.elapsed().as_secs_f64();
    eprintln!(
        "ccm bench: {n} workers registered in {store_name} and engine started in {setup_seconds:.1} s"
    );

    let blackholed_workers = (0..n)
        .filter(|&i| blackhole_sel.is_some() && WorkerSelector::bucket(i) < args.blackhole_percent)
        .count() as u64;
    let bh_requests = || async {
        match blackhole_sel {
            Some(sel) => sim.requests_of(sel).await,
            None => Ok(0),
        }
    };

    let mut bh_before = bh_requests().await?;
    let warm = engine.run_cml_cycle().await;
    let bh_after = bh_requests().await?;
    let warmup_requests = bh_after - bh_before;
    bh_before = bh_after;
    eprintln!(
        "ccm bench: warm-up cycle: {:.3} s ({} workers), RSS {:.1} MiB",
        warm.seconds,
        warm.workers,
        procstat::rss_mib().unwrap_or(0.0)
    );
    if warm.workers != n {
        return Err(BenchError::Invalid(format!(
            "the engine polled {} workers, not {n}",
            warm.workers
        )));
    }

    let fds_peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sampler = {
        let peak = fds_peak.clone();
        tokio::spawn(async move {
            loop {
                let n = procstat::open_fds().unwrap_or(0);
                peak.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let cpu_before = procstat::cpu_seconds().unwrap_or(0.0);
    let sim_cpu_before = sim.cpu_seconds();
    let mut times = Vec::with_capacity(args.cycles as usize);
    let mut requests = 0u64;
    let mut bh_per_cycle = Vec::new();
    let tls_before = sim.counters().await?;
    for k in 1..=args.cycles {
        let before = sim.counters().await?.requests;
        let cycle = with_progress(sim, k, args.cycles, before, engine.run_cml_cycle()).await;
        let after = sim.counters().await?.requests;
        requests += after.saturating_sub(before);
        times.push(cycle.seconds);
        let per_second = after.saturating_sub(before) as f64 / cycle.seconds.max(1e-9);
        let rss = procstat::rss_mib().unwrap_or(0.0);
        let bh_now = bh_requests().await?;
        let bh = bh_now.saturating_sub(bh_before);
        bh_before = bh_now;
        if blackhole_sel.is_some() {
            bh_per_cycle.push(bh);
            eprintln!(
                "ccm bench: cycle {k}/{}: {:.3} s, {} requests ({per_second:.0}/s), RSS {rss:.1} MiB, {bh} to blackholed workers, {} breakers open",
                args.cycles,
                cycle.seconds,
                after.saturating_sub(before),
                engine.resilience().breakers().open_count()
            );
        } else {
            eprintln!(
                "ccm bench: cycle {k}/{}: {:.3} s, {} requests ({per_second:.0}/s), RSS {rss:.1} MiB",
                args.cycles,
                cycle.seconds,
                after.saturating_sub(before)
            );
        }
    }
    let tls_after = sim.counters().await?;
    let cpu_seconds = procstat::cpu_seconds().unwrap_or(0.0) - cpu_before;
    let sim_cpu_seconds = sim.cpu_seconds() - sim_cpu_before;
    sampler.abort();
    let statuses = statuses(&engine);
    let breakers_open = engine.resilience().breakers().open_count();
    let rss_end_mb = procstat::rss_mib().unwrap_or(0.0);
    engine.shutdown().await;
    let rss_mb = procstat::peak_rss_mib().unwrap_or(0.0);

    let floor = if args.floor {
        eprintln!(
            "ccm bench: running the floor (ccm's HTTP stack alone, {concurrency} workers at once) on the same fleet"
        );
        let run =
            super::floor::run_floor(&cml_cfg, &sim.endpoints, concurrency, args.cycles).await?;
        eprintln!(
            "ccm bench: floor: logins {:.3} s, cycles {:?} s, {} failed requests",
            run.warmup_seconds, run.per_cycle_seconds, run.failed_requests
        );
        Some(run)
    } else {
        None
    };

    let total: f64 = times.iter().sum();
    let summary = Summary::of(&times);
    let peer = match &args.peer {
        None => None,
        Some(peer) => {
            let left = args.timeout.saturating_sub(started.elapsed());
            eprintln!(
                "ccm bench: running the seed-poller (concurrency {}) on the same fleet",
                peer.concurrency
            );
            Some(run_seed_poller(peer, &sim.endpoints_file, args.cycles, left).await?)
        }
    };
    let speedup = peer
        .as_ref()
        .filter(|_| summary.median > 0.0)
        .map(|p| round3(p.cycle_seconds.median / summary.median));
    Ok(SyncReport {
        benchmark: "sync",
        workers: args.workers,
        cycles: args.cycles,
        latency_ms: args.latency_ms,
        concurrency,
        cml_poll_slots,
        idle_connections_per_worker: args.idle_connections_per_worker,
        plain_idle_connections_per_worker: args.plain_idle_connections_per_worker,
        blackhole_percent: args.blackhole_percent,
        tls: args.tls,
        store: store_name,
        warmup_seconds: round3(warm.seconds),
        cycle_seconds: summary.rounded(),
        per_cycle_seconds: times.iter().copied().map(round3).collect(),
        requests,
        requests_per_second: if total > 0.0 {
            (requests as f64 / total).round()
        } else {
            0.0
        },
        rss_mb: (rss_mb * 10.0).round() / 10.0,
        rss_end_mb: (rss_end_mb * 10.0).round() / 10.0,
        open_fds_peak: fds_peak.load(std::sync::atomic::Ordering::Relaxed),
        cpu_seconds: (cpu_seconds * 100.0).round() / 100.0,
        sim_cpu_seconds: (sim_cpu_seconds * 100.0).round() / 100.0,
        setup_seconds: round3(setup_seconds),
        statuses,
        blackholed: blackhole_sel.map(|_| BlackholeReport {
            workers: blackholed_workers,
            breaker_open_for_seconds: resilience_cfg.breaker.open_for.as_secs_f64(),
            warmup_requests,
            requests_last_cycle: bh_per_cycle.last().copied().unwrap_or(0),
            requests_per_cycle: bh_per_cycle,
            breakers_open,
        }),
        peer,
        speedup,
        postgres: None,
        tls_handshakes: args.tls.then(|| {
            tls_after
                .tls_handshakes
                .saturating_sub(tls_before.tls_handshakes)
        }),
        tls_resumed: args
            .tls
            .then(|| tls_after.tls_resumed.saturating_sub(tls_before.tls_resumed)),
        connections: tls_after.connections.saturating_sub(tls_before.connections),
        h2_connections: args.tls.then(|| {
            tls_after
                .h2_connections
                .saturating_sub(tls_before.h2_connections)
        }),
        floor_seconds: floor.as_ref().map(|f| round3(f.summary().median)),
        floor_cycle_seconds: floor.as_ref().map(|f| f.summary().rounded()),
        floor_failed_requests: floor.as_ref().map(|f| f.failed_requests),
        ratio_to_floor: floor
            .as_ref()
            .map(|f| f.summary().median)
            .filter(|m| *m > 0.0)
            .map(|m| round3(summary.median / m)),
    })
}

/// Runs one measured cycle, printing a progress line (seconds so far, requests per second,
/// RSS) every few seconds while it lasts.
async fn with_progress<F: std::future::Future>(
    sim: &SimProcess,
    k: u32,
    cycles: u32,
    requests_before: u64,
    cycle: F,
) -> F::Output {
    const EVERY: Duration = Duration::from_secs(3);
    let started = tokio::time::Instant::now();
    let mut cycle = std::pin::pin!(cycle);
    let mut tick = tokio::time::interval_at(started + EVERY, EVERY);
    loop {
        tokio::select! {
            out = cycle.as_mut() => return out,
            _ = tick.tick() => {
                let secs = started.elapsed().as_secs_f64();
                let so_far = match sim.counters().await {
                    Ok(c) => c.requests.saturating_sub(requests_before),
                    Err(_) => 0,
                };
                eprintln!(
                    "ccm bench: cycle {k}/{cycles}: {secs:.0} s, {so_far} requests ({:.0}/s), RSS {:.1} MiB",
                    so_far as f64 / secs.max(1e-9),
                    procstat::rss_mib().unwrap_or(0.0)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_addresses_should_be_read_from_base_urls() {
        assert_eq!(
            ip_of("http://127.100.0.7:9443").unwrap(),
            Ipv4Addr::new(127, 100, 0, 7)
        );
        assert!(ip_of("http://cml.example:9443").is_err());
    }
}
