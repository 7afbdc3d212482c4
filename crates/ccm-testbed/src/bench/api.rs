//! `ccm bench api`: the API under load while a full CML cycle of the same fleet runs.
//!
//! The run: start the simulator (child processes, as `ccm bench sync`), register its workers
//! in a real store (a temporary SQLite file, or a throwaway PostgreSQL server), start a real
//! engine, run one warm-up cycle (logins; not measured), serve the real API on a loopback
//! port with a **viewer** token (made as `ccm token new` makes one: a random token whose
//! SHA-256 is configured), connect the event-stream subscribers, then start the HTTP clients
//! and run the measured cycles. While the cycles run:
//!
//! - each client asks, once per `client_interval` (its think time), alternately for a page
//!   of the worker list (`list_query`: a filter and a sort, `limit=100`) and for one
//!   worker's detail, and records the time to the whole answer; an answer that is not 200
//!   with the expected JSON is an error (every client makes at least one request of each
//!   kind, so a short run still measures both);
//! - each subscriber reads its event stream and records, for every event, the time from the
//!   event's creation (its CloudEvent `time`, stamped by the engine's clock) to its receipt
//!   (the same clock), and counts the `ccm.worker.synced` events it gets: every subscriber
//!   must get every one it asked for ([`StreamKind`]).
//!
//! Clients and subscribers run in this process, on the same two cores as the server, the
//! engine and (in their own processes) the simulator: the figures include that load. The
//! simulator's processes run at a lower OS priority (`sim_nice`, default +10 like the
//! engine): in a real deployment the CML controllers are other machines.
//!
//! **Runtimes** (ARCHITECTURE.md, "Runtimes"): as `ccm serve`, the API runs on a runtime of
//! its own and the engine (its polls, writer and jobs) on another whose threads run at a
//! lower OS priority (`[server] threads`, `[engine] threads` and `nice`; [`ApiOptions`]).
//! The clients and subscribers are the outside world: they run on the caller's runtime, with
//! its own threads, so that their scheduling is not charged to the server. `one_runtime`
//! puts the server and the engine back on the caller's runtime, with the clients (the layout
//! before issue 13's round 5), for comparison.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ccm_api::sse_client::{SseItem, SseReader};
use ccm_api::{ApiConfig, ApiState, AuthConfig, Role, generate_token};
use ccm_cml_sim::SimLauncher;
use ccm_domain::WorkerId;
use ccm_domain::worker::{AddressPreference, EndpointPolicy};
use ccm_engine::{Engine, EngineRuntimeConfig};
use ccm_store::{SqliteStore, Store, StoreConfig, WorkerFilter};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::BenchError;
use super::procstat;
use super::report::{Statuses, round3};
use super::sim_process::{SimProcess, SimSpec};
use super::sync::{BenchStore, fleet_resilience, postgres_store, register, start_engine, statuses};

/// The type of event every subscriber counts (one per worker per cycle).
const SYNCED: &str = "ccm.worker.synced";

/// What each event-stream subscriber follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// One worker each (`?worker=<id>`, as the worker page follows its worker), the fleet's
    /// workers dealt round-robin: subscriber `i` follows worker `i mod workers`.
    #[default]
    Worker,
    /// The whole fleet (no filter, as the fleet page's live store): every event to every
    /// subscriber.
    Fleet,
}

/// What to run (the flags of `ccm bench api`).
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// How to run the CML simulator's command line (`ccm sim`) in child processes.
    pub simulator: SimLauncher,
    /// Simulated workers.
    pub workers: u32,
    /// HTTP clients asking for the list and details.
    pub clients: u32,
    /// Each client's pause between two requests (its think time).
    pub client_interval: Duration,
    /// Event-stream subscribers.
    pub subscribers: u32,
    /// What each subscriber follows.
    pub stream: StreamKind,
    /// Subscribers connecting at once while they are set up.
    pub connect_concurrency: usize,
    /// The worker list's query string (filters, sort, `limit`), without `?`.
    pub list_query: String,
    /// Measured CML cycles (one warm-up cycle runs first, before the load).
    pub cycles: u32,
    /// Latency the simulator adds to every request, in milliseconds.
    pub latency_ms: u64,
    /// Workers synced at once (`None`: the product default).
    pub concurrency: Option<u32>,
    /// Address of the first simulated worker (the others count up).
    pub listen_base: Ipv4Addr,
    /// Port of every simulated worker.
    pub port: u16,
    /// Most simulated workers per simulator process.
    pub shard_size: u32,
    /// Address the API listens on (port chosen by the system).
    pub api_ip: IpAddr,
    /// How long subscribers may take, after the last cycle, to receive their last events.
    pub drain: Duration,
    /// The store (`Sqlite` or `Postgres`; `Both` is refused).
    pub store: BenchStore,
    /// Longest the whole run may take; children are stopped and the run fails after it.
    pub timeout: Duration,
    /// Worker threads of the API's runtime (`[server] threads`; 0: one per core).
    pub server_threads: usize,
    /// The engine's runtime (`[engine]`: threads and nice).
    pub engine_runtime: EngineRuntimeConfig,
    /// Server, engine, clients and subscribers all on the caller's runtime (no runtime of
    /// their own, no nice): the layout before issue 13's round 5, for comparison.
    pub one_runtime: bool,
    /// Added to the simulator processes' nice value (0 to 19; 0: this process's priority).
    /// The simulated CML controllers run elsewhere in a real deployment; lowered like the
    /// engine, they do not take cores from the API they are measured against.
    pub sim_nice: i32,
    /// `[api] view_prepare_max` for the run (`None`: the product default), to compare with
    /// and without views prepared ahead in one binary.
    pub view_prepare_max: Option<usize>,
}

impl ApiOptions {
    /// The defaults of `ccm bench api` with `simulator` (10,000 workers, 200 clients, 5,000
    /// subscribers following one worker each, one measured cycle, SQLite).
    pub fn new(simulator: SimLauncher) -> Self {
        Self {
            simulator,
            workers: 10_000,
            clients: 200,
            client_interval: Duration::from_millis(500),
            subscribers: 5_000,
            stream: StreamKind::Worker,
            connect_concurrency: 100,
            list_query: DEFAULT_LIST_QUERY.to_owned(),
            cycles: 1,
            latency_ms: 20,
            concurrency: None,
            listen_base: Ipv4Addr::new(127, 120, 0, 1),
            port: 9443,
            shard_size: 4000,
            api_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            drain: Duration::from_secs(30),
            store: BenchStore::Sqlite,
            timeout: Duration::from_secs(3600),
            server_threads: ccm_api::ServerConfig::default().threads,
            engine_runtime: EngineRuntimeConfig::default(),
            one_runtime: false,
            sim_nice: EngineRuntimeConfig::default().nice,
            view_prepare_max: None,
        }
    }
}

/// The list query the clients send by default: running workers, most recently updated
/// first (the column every sync rewrites), a page of 100.
pub const DEFAULT_LIST_QUERY: &str = "state=running&sort=updated&order=desc&limit=100";

/// Latencies of one kind of request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestStats {
    /// Requests made (errors included).
    pub requests: u64,
    /// Requests that failed: transport errors, a status other than 200, a body that is not
    /// the expected JSON.
    pub errors: u64,
    /// The errors by kind (`http 503`, `transport`, `body`).
    pub error_kinds: BTreeMap<String, u64>,
    /// Median time to the whole answer, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
}

/// What the event-stream subscribers got.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventStats {
    /// Subscribers asked for.
    pub subscribers: usize,
    /// What each followed.
    pub stream: StreamKind,
    /// Subscribers that could not connect (transport error or a status other than 200).
    pub connect_errors: u64,
    /// `ccm.worker.synced` deliveries expected over all subscribers (each subscriber: one
    /// per cycle per worker it follows).
    pub expected: u64,
    /// `ccm.worker.synced` deliveries counted.
    pub delivered: u64,
    /// Events received in all (every type), each with its latency below.
    pub received: u64,
    /// Subscribers whose stream ended, failed or was reset before they got every event, or
    /// that still missed some when the drain time was over.
    pub dropped_clients: usize,
    /// Median time from an event's creation to its receipt, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
    /// Events seen on the engine's bus by one in-process receiver (every type): the first
    /// part of a delivery, from the event's creation (stamped when the writer's batch starts)
    /// to its publication after the batch committed.
    pub published: u64,
    /// Median time from creation to publication, milliseconds (the rest of `p50_ms` is the
    /// SSE hub, the streams and the subscribers).
    pub published_p50_ms: f64,
    /// 99th percentile from creation to publication, milliseconds.
    pub published_p99_ms: f64,
    /// Slowest from creation to publication, milliseconds.
    pub published_max_ms: f64,
}

/// Where the server, the engine and the outside world ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuntimeLayout {
    /// `split` (the API's runtime, the engine's, the clients' — as `ccm serve`) or `one`
    /// (everything on one runtime).
    pub layout: &'static str,
    /// `[server] threads` (0: one per core).
    pub server_threads: usize,
    /// `[engine] threads` (0: one per core).
    pub engine_threads: usize,
    /// `[engine] nice`.
    pub engine_nice: i32,
    /// The simulator processes' nice increment (not part of the product: the simulated CML
    /// controllers run elsewhere in a real deployment).
    pub sim_nice: i32,
}

/// What `ccm bench api` reports (its JSON; BENCHMARKS.md, "API under load").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiReport {
    /// Always `api`.
    pub benchmark: &'static str,
    /// Simulated workers.
    pub workers: u32,
    /// HTTP clients.
    pub clients: u32,
    /// Each client's pause between two requests, milliseconds.
    pub client_interval_ms: u64,
    /// The store (`sqlite` or `postgres`).
    pub store: &'static str,
    /// Measured CML cycles.
    pub cycles: u32,
    /// Latency the simulator added to every request.
    pub latency_ms: u64,
    /// The worker list's query string.
    pub list_query: String,
    /// Time to register the workers and start the engine.
    pub setup_seconds: f64,
    /// The warm-up cycle (before any load).
    pub warmup_seconds: f64,
    /// Each measured cycle's time, under the load.
    pub cycle_seconds: Vec<f64>,
    /// Time to connect every subscriber.
    pub connect_seconds: f64,
    /// `GET /api/v1/workers?{list_query}`.
    pub list: RequestStats,
    /// `GET /api/v1/workers/{id}`.
    pub detail: RequestStats,
    /// Requests per second the clients made during the measured cycles.
    pub requests_per_second: f64,
    /// The event streams.
    pub events: EventStats,
    /// Open-file limit (soft) during the run, after raising it to the hard limit.
    pub open_files_limit: u64,
    /// Most file descriptors this process held at once (sampled every 500 ms).
    pub open_fds_peak: usize,
    /// Peak resident memory of this process (engine, API, clients and subscribers), MiB.
    pub rss_mb: f64,
    /// This process's CPU time during the measured cycles.
    pub cpu_seconds: f64,
    /// The simulator's CPU time during the measured cycles.
    pub sim_cpu_seconds: f64,
    /// Workers by service status after the last cycle.
    pub statuses: Statuses,
    /// The runtimes the run used.
    pub runtimes: RuntimeLayout,
    /// What the API's rendered-view cache did over the run (views answered from the cache,
    /// from the ones prepared ahead for their second, rendered while answering; prepared).
    pub view_cache: ccm_api::ViewCacheStats,
}

/// Runs the API benchmark (bounded by [`ApiOptions::timeout`]; the simulator's processes
/// are stopped whichever way it ends).
pub async fn api(options: ApiOptions) -> Result<ApiReport, BenchError> {
    let limit = options.timeout;
    tokio::time::timeout(limit, run(options))
        .await
        .map_err(|_| BenchError::Timeout(limit))?
}

/// A failure of the run itself (sockets, HTTP, tasks).
fn fail(e: impl std::fmt::Display) -> BenchError {
    BenchError::Invalid(format!("api benchmark: {e}"))
}

/// Raises the soft open-file limit to the hard one when it is below `needed`; returns the
/// soft limit in force. Fails when even the hard limit is below `needed`.
fn raise_open_files(needed: u64) -> Result<u64, BenchError> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(BenchError::setup("rlimit"))?;
    if soft >= needed {
        return Ok(soft);
    }
    if hard < needed {
        return Err(BenchError::Invalid(format!(
            "the open-file limit is {hard} (hard) and this run needs about {needed} \
             (two per loopback stream): use fewer subscribers or clients"
        )));
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(BenchError::setup("rlimit"))?;
    Ok(hard)
}

/// The `p` quantile of sorted nanoseconds, in milliseconds (0 when empty).
fn quantile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    round3(sorted[i.min(sorted.len() - 1)] as f64 / 1e6)
}

fn request_stats(
    mut nanos: Vec<u64>,
    requests: u64,
    error_kinds: BTreeMap<String, u64>,
) -> RequestStats {
    nanos.sort_unstable();
    RequestStats {
        requests,
        errors: error_kinds.values().sum(),
        error_kinds,
        p50_ms: quantile_ms(&nanos, 0.50),
        p99_ms: quantile_ms(&nanos, 0.99),
        max_ms: quantile_ms(&nanos, 1.0),
    }
}

async fn run(args: ApiOptions) -> Result<ApiReport, BenchError> {
    if args.store == BenchStore::Both {
        return Err(BenchError::Invalid(
            "ccm bench api runs on one store: sqlite or postgres".into(),
        ));
    }
    if !(0..=ccm_engine::runtime::MAX_NICE).contains(&args.sim_nice) {
        return Err(BenchError::Invalid(format!(
            "the simulator's nice: {} is out of range (0 to {})",
            args.sim_nice,
            ccm_engine::runtime::MAX_NICE
        )));
    }
    let streams = u64::from(args.subscribers) + u64::from(args.clients);
    let open_files_limit = raise_open_files(2 * streams + 1024)?;
    let dir = tempfile::Builder::new()
        .prefix("ccm-bench-api-")
        .tempdir()
        .map_err(BenchError::io("cannot create a temporary directory"))?;
    let spec = SimSpec {
        launcher: args.simulator.clone(),
        workers: args.workers,
        listen_base: args.listen_base,
        port: args.port,
        latency_ms: args.latency_ms,
        faults: None,
        shard_size: args.shard_size,
        tls_ca_out: None,
        http2: false,
        nice: args.sim_nice,
    };
    eprintln!(
        "ccm bench api: starting the simulator ({} workers, {} ms latency)",
        args.workers, args.latency_ms
    );
    let runtimes = Runtimes::new(&args)?;
    let sim = SimProcess::start(&spec, dir.path()).await?;
    // The store is opened on the API's runtime, as `ccm serve` opens it on its main one.
    let api_rt = runtimes.api();
    let outcome = match args.store {
        BenchStore::Postgres => match on(&api_rt, postgres_store()).await.and_then(|r| r) {
            Ok((_server, store)) => {
                measure(&args, &sim, &runtimes, store, "postgres", open_files_limit).await
            }
            Err(e) => Err(e),
        },
        _ => {
            let cfg = StoreConfig {
                path: Some(dir.path().join("bench.db")),
                ..StoreConfig::default()
            };
            match on(&api_rt, async move { SqliteStore::open(&cfg).await }).await {
                Ok(Ok(store)) => {
                    measure(
                        &args,
                        &sim,
                        &runtimes,
                        Arc::new(store),
                        "sqlite",
                        open_files_limit,
                    )
                    .await
                }
                Ok(Err(e)) => Err(BenchError::setup("store")(e)),
                Err(e) => Err(e),
            }
        }
    };
    sim.stop().await;
    outcome
}

/// The server's and the engine's runtimes (`None`: the caller's, `one_runtime`). Dropping
/// them does not wait for their tasks (it may happen inside the caller's runtime): by then
/// the engine and the server have been stopped.
struct Runtimes {
    api: Option<tokio::runtime::Runtime>,
    engine: Option<tokio::runtime::Runtime>,
    layout: RuntimeLayout,
}

impl Runtimes {
    fn new(args: &ApiOptions) -> Result<Self, BenchError> {
        let layout = RuntimeLayout {
            layout: if args.one_runtime { "one" } else { "split" },
            server_threads: args.server_threads,
            engine_threads: args.engine_runtime.threads,
            engine_nice: args.engine_runtime.nice,
            sim_nice: args.sim_nice,
        };
        if args.one_runtime {
            return Ok(Self {
                api: None,
                engine: None,
                layout,
            });
        }
        args.engine_runtime
            .validate()
            .map_err(BenchError::Invalid)?;
        ccm_engine::runtime::validate_threads("server.threads", args.server_threads)
            .map_err(BenchError::Invalid)?;
        Ok(Self {
            api: Some(
                ccm_engine::runtime::build("ccm-api", args.server_threads, 0)
                    .map_err(BenchError::setup("api runtime"))?,
            ),
            engine: Some(
                args.engine_runtime
                    .build()
                    .map_err(BenchError::setup("engine runtime"))?,
            ),
            layout,
        })
    }

    fn handle(rt: Option<&tokio::runtime::Runtime>) -> tokio::runtime::Handle {
        rt.map_or_else(tokio::runtime::Handle::current, |rt| rt.handle().clone())
    }

    /// The API's runtime.
    fn api(&self) -> tokio::runtime::Handle {
        Self::handle(self.api.as_ref())
    }

    /// The engine's runtime.
    fn engine(&self) -> tokio::runtime::Handle {
        Self::handle(self.engine.as_ref())
    }
}

impl Drop for Runtimes {
    fn drop(&mut self) {
        for rt in [self.engine.take(), self.api.take()].into_iter().flatten() {
            rt.shutdown_background();
        }
    }
}

/// Runs `f` on `rt` and waits for it (from any runtime).
async fn on<F>(rt: &tokio::runtime::Handle, f: F) -> Result<F::Output, BenchError>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    rt.spawn(f).await.map_err(fail)
}

/// Every worker id in the store.
async fn worker_ids(engine: &Engine) -> Result<Vec<WorkerId>, BenchError> {
    let mut ids = Vec::new();
    loop {
        let page = engine
            .workers(&WorkerFilter {
                limit: 1000,
                offset: ids.len() as u32,
                ..WorkerFilter::default()
            })
            .await
            .map_err(BenchError::setup("worker list"))?;
        let n = page.items.len();
        ids.extend(page.items.iter().map(|w| w.id));
        if n < 1000 {
            return Ok(ids);
        }
    }
}

/// The part of a worker page the clients check.
#[derive(Deserialize)]
struct PageShape {
    items: Vec<serde::de::IgnoredAny>,
    total: u64,
}

/// The part of a worker the clients check.
#[derive(Deserialize)]
struct WorkerShape {
    id: WorkerId,
}

/// The part of a CloudEvent a subscriber reads.
#[derive(Deserialize)]
struct EventStamp {
    time: DateTime<Utc>,
}

/// Latencies and counts of one kind of request, shared by the clients.
#[derive(Default)]
struct Recorder {
    nanos: parking_lot::Mutex<Vec<u64>>,
    requests: AtomicU64,
    errors: AtomicU64,
    error_kinds: parking_lot::Mutex<BTreeMap<String, u64>>,
}

impl Recorder {
    fn record(&self, took: Duration, outcome: Result<(), String>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(()) => self.nanos.lock().push(took.as_nanos() as u64),
            Err(kind) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                *self.error_kinds.lock().entry(kind).or_default() += 1;
            }
        }
    }

    fn stats(&self) -> RequestStats {
        request_stats(
            std::mem::take(&mut *self.nanos.lock()),
            self.requests.load(Ordering::Relaxed),
            self.error_kinds.lock().clone(),
        )
    }
}

/// One request: its time, and whether it answered 200 with a body `check` accepts (else the
/// kind of error).
async fn timed(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    check: impl FnOnce(&[u8]) -> bool,
) -> (Duration, Result<(), String>) {
    let started = Instant::now();
    let answer = async {
        let res = client.get(url).bearer_auth(token).send().await?;
        let status = res.status();
        let body = res.bytes().await?;
        Ok::<_, reqwest::Error>((status, body))
    }
    .await;
    let took = started.elapsed();
    let outcome = match answer {
        Err(e) if e.is_timeout() => Err("timeout".to_owned()),
        Err(_) => Err("transport".to_owned()),
        Ok((status, _)) if status != reqwest::StatusCode::OK => {
            Err(format!("http {}", status.as_u16()))
        }
        Ok((_, body)) if !check(&body) => Err("body".to_owned()),
        Ok(_) => Ok(()),
    };
    (took, outcome)
}

/// One client: a list page and a detail in turn, one request per `interval`, until `stop`
/// (and at least one of each).
#[allow(clippy::too_many_arguments)]
async fn client_loop(
    n: usize,
    client: reqwest::Client,
    base: String,
    list_query: Arc<str>,
    token: Arc<str>,
    ids: Arc<Vec<WorkerId>>,
    interval: Duration,
    list: Arc<Recorder>,
    detail: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
) {
    // Spread the clients over the interval, so they do not all ask at the same instant.
    let offset = interval.mul_f64(rand::random::<f64>());
    let mut tick = tokio::time::interval_at(Instant::now() + offset, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let list_url = format!("{base}/api/v1/workers?{list_query}");
    for k in 0usize.. {
        // Every client makes at least one request of each kind, however short the run.
        if k < 2 {
            tick.tick().await;
        } else {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
        }
        if k % 2 == 0 {
            let (took, ok) = timed(&client, &list_url, &token, |b| {
                serde_json::from_slice::<PageShape>(b)
                    .is_ok_and(|p| p.total > 0 && !p.items.is_empty())
            })
            .await;
            list.record(took, ok);
        } else {
            let id = ids[(n * 7919 + k) % ids.len()];
            let url = format!("{base}/api/v1/workers/{id}");
            let (took, ok) = timed(&client, &url, &token, |b| {
                serde_json::from_slice::<WorkerShape>(b).is_ok_and(|w| w.id == id)
            })
            .await;
            detail.record(took, ok);
        }
    }
}

/// What one subscriber measured.
struct Received {
    latencies: Vec<u64>,
    synced: u64,
    complete: bool,
}

/// One subscriber: reads its stream until it has `expected` synced events, it ends, or
/// `stop`.
async fn subscriber_loop(
    mut reader: SseReader,
    engine: Engine,
    expected: u64,
    mut stop: watch::Receiver<bool>,
    delivered: Arc<AtomicU64>,
) -> Received {
    let mut out = Received {
        latencies: Vec::new(),
        synced: 0,
        complete: expected == 0,
    };
    while !out.complete {
        let item = tokio::select! {
            _ = stop.wait_for(|s| *s) => return out,
            item = reader.next() => item,
        };
        match item {
            Some(Ok(SseItem::Message(m))) => {
                if m.event_type() == "reset" {
                    return out;
                }
                let now = engine.now();
                if let Ok(stamp) = serde_json::from_str::<EventStamp>(&m.data) {
                    let ns = (now - stamp.time).num_nanoseconds().unwrap_or(0).max(0);
                    out.latencies.push(ns as u64);
                }
                if m.event_type() == SYNCED {
                    out.synced += 1;
                    delivered.fetch_add(1, Ordering::Relaxed);
                    out.complete = out.synced >= expected;
                }
            }
            Some(Ok(SseItem::Comment(_))) => {}
            Some(Err(_)) | None => return out,
        }
    }
    out
}

async fn measure(
    args: &ApiOptions,
    sim: &SimProcess,
    runtimes: &Runtimes,
    store: Arc<dyn Store>,
    store_name: &'static str,
    open_files_limit: u64,
) -> Result<ApiReport, BenchError> {
    let n = args.workers as usize;
    let policy = EndpointPolicy {
        scheme: "http".into(),
        port: Some(args.port),
        address: AddressPreference::Public,
        ..EndpointPolicy::default()
    };
    let (resilience_cfg, _) = fleet_resilience(n, args.concurrency);
    let setup = Instant::now();
    register(store.as_ref(), &sim.endpoints, &policy).await?;
    // Started on the engine's runtime: its polls, writer and jobs run there.
    let engine = on(&runtimes.engine(), async move {
        start_engine(store, &resilience_cfg, policy, (0, None), None).await
    })
    .await??;
    let setup_seconds = setup.elapsed().as_secs_f64();
    eprintln!(
        "ccm bench api: {n} workers registered in {store_name} and engine started in {setup_seconds:.1} s"
    );
    let warm = cycle(&runtimes.engine(), &engine).await?;
    eprintln!(
        "ccm bench api: warm-up cycle: {:.3} s ({} workers)",
        warm.seconds, warm.workers
    );
    if warm.workers != n {
        engine.shutdown().await;
        return Err(BenchError::Invalid(format!(
            "the engine polled {} workers, not {n}",
            warm.workers
        )));
    }
    let outcome = load(args, sim, runtimes, &engine).await;
    engine.shutdown().await;
    let mut report = outcome?;
    report.store = store_name;
    report.setup_seconds = round3(setup_seconds);
    report.warmup_seconds = round3(warm.seconds);
    report.open_files_limit = open_files_limit;
    report.rss_mb = (procstat::peak_rss_mib().unwrap_or(0.0) * 10.0).round() / 10.0;
    report.runtimes = runtimes.layout.clone();
    Ok(report)
}

/// One full CML cycle, run from the engine's runtime (as its scheduled cycles are).
async fn cycle(
    engine_rt: &tokio::runtime::Handle,
    engine: &Engine,
) -> Result<ccm_engine::CycleReport, BenchError> {
    let engine = engine.clone();
    on(engine_rt, async move { engine.run_cml_cycle().await }).await
}

/// The API, the subscribers and the clients around the measured cycles.
async fn load(
    args: &ApiOptions,
    sim: &SimProcess,
    runtimes: &Runtimes,
    engine: &Engine,
) -> Result<ApiReport, BenchError> {
    let n = args.workers as usize;
    let subscribers = args.subscribers as usize;
    let ids = Arc::new(worker_ids(engine).await?);
    if ids.len() != n {
        return Err(BenchError::Invalid(format!(
            "the store holds {} workers, not {n}",
            ids.len()
        )));
    }

    // The API, as `ccm serve` runs it, with one viewer token.
    let token: Arc<str> = generate_token().into();
    // The product's defaults (10,000 event-stream clients), raised only for a bigger run.
    let defaults = ApiConfig::default();
    let api = ApiConfig {
        sse_max_clients: defaults.sse_max_clients.max(subscribers + 16),
        view_prepare_max: args.view_prepare_max.unwrap_or(defaults.view_prepare_max),
        ..defaults
    };
    let auth = AuthConfig::default().with_token("bench-viewer", Role::Viewer, &token);
    // On the API's runtime: the state (its SSE hub), the listener and every connection.
    let api_rt = runtimes.api();
    let state = {
        let _api_rt = api_rt.enter();
        ApiState::new(engine.clone(), api, auth, None).map_err(BenchError::setup("api"))?
    };
    let listener = std::net::TcpListener::bind(SocketAddr::new(args.api_ip, 0)).map_err(fail)?;
    listener.set_nonblocking(true).map_err(fail)?;
    let addr = listener.local_addr().map_err(fail)?;
    let base = format!("http://{addr}");
    let (server_stop, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = state.clone();
    let server = api_rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        ccm_api::serve(listener, serving, async move {
            let _ = server_stopped.await;
        })
        .await
    });
    let outcome = drive(args, sim, runtimes, engine, &base, &token, ids)
        .await
        .map(|report| ApiReport {
            view_cache: state.view_cache_stats(),
            ..report
        });
    let _ = server_stop.send(());
    state.close_streams();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    outcome
}

async fn drive(
    args: &ApiOptions,
    sim: &SimProcess,
    runtimes: &Runtimes,
    engine: &Engine,
    base: &str,
    token: &Arc<str>,
    ids: Arc<Vec<WorkerId>>,
) -> Result<ApiReport, BenchError> {
    let n = ids.len();
    let subscribers = args.subscribers as usize;
    let cycles = u64::from(args.cycles);
    let (stop_tx, stop_rx) = watch::channel(false);

    // Subscribers: connected (a bounded number at a time) before the load starts.
    let sse_client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .map_err(fail)?;
    let connect_started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency.max(1)));
    let mut connecting = tokio::task::JoinSet::new();
    for i in 0..subscribers {
        let url = match args.stream {
            StreamKind::Worker => {
                format!("{base}/api/v1/events?snapshot=false&worker={}", ids[i % n])
            }
            StreamKind::Fleet => format!("{base}/api/v1/events?snapshot=false"),
        };
        let (client, token, gate) = (sse_client.clone(), token.clone(), gate.clone());
        connecting.spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let res = client.get(&url).bearer_auth(&*token).send().await.ok()?;
            res.status().is_success().then(|| SseReader::new(res))
        });
    }
    let mut readers = Vec::with_capacity(subscribers);
    let mut connect_errors = 0u64;
    while let Some(r) = connecting.join_next().await {
        match r.map_err(fail)? {
            Some(reader) => readers.push(reader),
            None => connect_errors += 1,
        }
    }
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    eprintln!(
        "ccm bench api: {} of {subscribers} subscribers connected in {connect_seconds:.1} s",
        readers.len()
    );
    let per_subscriber = match args.stream {
        StreamKind::Worker => cycles,
        StreamKind::Fleet => cycles * n as u64,
    };
    let delivered = Arc::new(AtomicU64::new(0));
    // Creation → publication, seen on the bus itself (the first part of every delivery).
    let published = tokio::spawn({
        let mut bus = engine.subscribe();
        let engine = engine.clone();
        let mut stop = stop_rx.clone();
        async move {
            let mut nanos = Vec::new();
            loop {
                let got = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return nanos,
                    got = bus.recv() => got,
                };
                match got {
                    Ok(e) => {
                        let ns = (engine.now() - e.event.time)
                            .num_nanoseconds()
                            .unwrap_or(0)
                            .max(0);
                        nanos.push(ns as u64);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return nanos,
                }
            }
        }
    });
    let mut receiving = tokio::task::JoinSet::new();
    for reader in readers {
        receiving.spawn(subscriber_loop(
            reader,
            engine.clone(),
            per_subscriber,
            stop_rx.clone(),
            delivered.clone(),
        ));
    }

    // Clients.
    // Idle connections are dropped well before the server's keep-alive timeout (`[server]
    // keep_alive_timeout`, 5 s by default): reusing one the server is closing at that moment
    // fails the request (the reuse-while-closing race), which reqwest's 90 s default invites.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients as usize)
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .map_err(fail)?;
    let (list, detail) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    let (client_stop_tx, client_stop_rx) = watch::channel(false);
    let list_query: Arc<str> = args.list_query.as_str().into();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..args.clients as usize {
        clients.spawn(client_loop(
            c,
            http.clone(),
            base.to_owned(),
            list_query.clone(),
            token.clone(),
            ids.clone(),
            args.client_interval,
            list.clone(),
            detail.clone(),
            client_stop_rx.clone(),
        ));
    }

    // Progress on stderr and the descriptor peak, while the cycles run.
    let fds_peak = Arc::new(AtomicUsize::new(0));
    let cycle_no = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let sampler = {
        let (peak, list, detail, delivered, cycle_no) = (
            fds_peak.clone(),
            list.clone(),
            detail.clone(),
            delivered.clone(),
            cycle_no.clone(),
        );
        tokio::spawn(async move {
            let mut k = 0u64;
            loop {
                peak.fetch_max(procstat::open_fds().unwrap_or(0), Ordering::Relaxed);
                if k.is_multiple_of(4) {
                    let (l, d) = (
                        list.requests.load(Ordering::Relaxed),
                        detail.requests.load(Ordering::Relaxed),
                    );
                    let errors =
                        list.errors.load(Ordering::Relaxed) + detail.errors.load(Ordering::Relaxed);
                    let secs = started.elapsed().as_secs_f64();
                    eprintln!(
                        "ccm bench api: {secs:.0} s, cycle {}, {l} list + {d} detail requests ({:.0}/s, {errors} errors), {} synced events delivered, RSS {:.0} MB",
                        cycle_no.load(Ordering::Relaxed),
                        (l + d) as f64 / secs.max(0.001),
                        delivered.load(Ordering::Relaxed),
                        procstat::rss_mib().unwrap_or(0.0)
                    );
                }
                k += 1;
                // Not more often: listing /proc/self/fd costs ~1 ms per thousand descriptors.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    // The measured cycles, under the load.
    let cpu_before = procstat::cpu_seconds().unwrap_or(0.0);
    let sim_cpu_before = sim.cpu_seconds();
    let load_started = Instant::now();
    let mut cycle_seconds = Vec::new();
    for k in 1..=args.cycles {
        cycle_no.store(u64::from(k), Ordering::Relaxed);
        let cycle = cycle(&runtimes.engine(), engine).await?;
        eprintln!(
            "ccm bench api: cycle {k}: {:.3} s ({} workers)",
            cycle.seconds, cycle.workers
        );
        cycle_seconds.push(round3(cycle.seconds));
    }
    let load_seconds = load_started.elapsed().as_secs_f64();
    let _ = client_stop_tx.send(true);
    while let Some(r) = clients.join_next().await {
        r.map_err(fail)?;
    }
    let cpu_seconds = procstat::cpu_seconds().unwrap_or(0.0) - cpu_before;
    let sim_cpu_seconds = sim.cpu_seconds() - sim_cpu_before;

    // The last deliveries.
    let mut latencies: Vec<u64> = Vec::new();
    let mut synced = 0u64;
    let mut dropped = 0usize;
    let deadline = Instant::now() + args.drain;
    let mut stopped = false;
    loop {
        let next = if stopped {
            receiving.join_next().await.map(Ok)
        } else {
            match tokio::time::timeout_at(deadline, receiving.join_next()).await {
                Ok(r) => r.map(Ok),
                Err(_) => Some(Err(())),
            }
        };
        match next {
            None => break,
            Some(Err(())) => {
                // Subscribers still missing events stop now and count as dropped.
                let _ = stop_tx.send(true);
                stopped = true;
            }
            Some(Ok(r)) => {
                let got = r.map_err(fail)?;
                dropped += usize::from(!got.complete);
                synced += got.synced;
                latencies.extend(got.latencies);
            }
        }
    }
    let _ = stop_tx.send(true);
    sampler.abort();
    let mut published = published.await.map_err(fail)?;
    published.sort_unstable();
    latencies.sort_unstable();
    let list = list.stats();
    let detail = detail.stats();
    let requests = list.requests + detail.requests;
    Ok(ApiReport {
        benchmark: "api",
        workers: args.workers,
        clients: args.clients,
        client_interval_ms: args.client_interval.as_millis() as u64,
        store: "",
        cycles: args.cycles,
        latency_ms: args.latency_ms,
        list_query: args.list_query.clone(),
        setup_seconds: 0.0,
        warmup_seconds: 0.0,
        cycle_seconds,
        connect_seconds: round3(connect_seconds),
        list,
        detail,
        requests_per_second: if load_seconds > 0.0 {
            (requests as f64 / load_seconds).round()
        } else {
            0.0
        },
        events: EventStats {
            subscribers,
            stream: args.stream,
            connect_errors,
            expected: per_subscriber * subscribers as u64,
            delivered: synced,
            received: latencies.len() as u64,
            dropped_clients: dropped + connect_errors as usize,
            p50_ms: quantile_ms(&latencies, 0.50),
            p99_ms: quantile_ms(&latencies, 0.99),
            max_ms: quantile_ms(&latencies, 1.0),
            published: published.len() as u64,
            published_p50_ms: quantile_ms(&published, 0.50),
            published_p99_ms: quantile_ms(&published, 0.99),
            published_max_ms: quantile_ms(&published, 1.0),
        },
        open_files_limit: 0,
        open_fds_peak: fds_peak.load(Ordering::Relaxed),
        rss_mb: 0.0,
        cpu_seconds: (cpu_seconds * 100.0).round() / 100.0,
        sim_cpu_seconds: (sim_cpu_seconds * 100.0).round() / 100.0,
        statuses: statuses(engine),
        runtimes: runtimes.layout.clone(),
        view_cache: ccm_api::ViewCacheStats::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_should_pick_the_nearest_rank_in_milliseconds() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1_000_000).collect();
        assert_eq!(quantile_ms(&v, 0.5), 51.0);
        assert_eq!(quantile_ms(&v, 0.99), 99.0);
        assert_eq!(quantile_ms(&v, 1.0), 100.0);
        assert_eq!(quantile_ms(&[], 0.99), 0.0);
    }

    #[test]
    fn request_stats_should_count_errors_apart_from_latencies() {
        let kinds = BTreeMap::from([("http 503".to_owned(), 1)]);
        let s = request_stats(vec![3_000_000, 1_000_000, 2_000_000], 4, kinds);
        assert_eq!((s.requests, s.errors), (4, 1));
        assert_eq!(s.error_kinds["http 503"], 1);
        assert_eq!((s.p50_ms, s.max_ms), (2.0, 3.0));
    }
}
