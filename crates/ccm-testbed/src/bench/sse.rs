//! `ccm bench sse`: an embedded fleet, the API on a loopback port, N event-stream clients
//! over real HTTP, timestamped events published on the engine's bus; measures the
//! event-to-delivery latency (publish call → message parsed by the client) and counts the
//! clients dropped.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ccm_api::sse_client::{SseItem, SseReader};
use ccm_api::{ApiConfig, ApiState, AuthConfig, Role, generate_token};
use ccm_domain::{EventKind, ServiceStatus};
use serde::Serialize;
use tokio::time::Instant;

use super::BenchError;
use crate::embedded::{Embedded, EmbeddedOptions};

/// How to run the benchmark.
#[derive(Debug, Clone)]
pub struct SseOptions {
    /// Pause between two published events.
    pub interval: Duration,
    /// First loopback address of the simulated CML fleet (one worker).
    pub fleet_base: Ipv4Addr,
    /// Address the API listens on (port chosen by the system).
    pub api_ip: IpAddr,
    /// Clients connecting at once while the subscribers are set up.
    pub connect_concurrency: usize,
    /// How long to wait for the last deliveries after the last event.
    pub drain: Duration,
    /// Frames a client may fall behind by (`api.sse_buffer`).
    pub sse_buffer: usize,
}

impl Default for SseOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(2),
            fleet_base: Ipv4Addr::new(127, 98, 0, 1),
            api_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            connect_concurrency: 100,
            drain: Duration::from_secs(30),
            sse_buffer: ApiConfig::default().sse_buffer,
        }
    }
}

/// What the benchmark measured (the JSON of `ccm bench sse`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SseReport {
    /// Clients connected.
    pub subscribers: usize,
    /// Events published.
    pub events: usize,
    /// Deliveries expected (`subscribers × events`).
    pub expected: u64,
    /// Deliveries measured.
    pub delivered: u64,
    /// Clients that were dropped (reset, error or end of stream) before the last event.
    pub dropped_clients: usize,
    /// Median event-to-delivery latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Worst, milliseconds.
    pub max_ms: f64,
    /// Time to connect every client, seconds.
    pub connect_seconds: f64,
    /// Time to publish every event, seconds.
    pub publish_seconds: f64,
}

impl std::fmt::Display for SseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} subscribers × {} events: delivered {}/{}, dropped clients {}, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (connect {:.2} s, publish {:.2} s)",
            self.subscribers,
            self.events,
            self.delivered,
            self.expected,
            self.dropped_clients,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.connect_seconds,
            self.publish_seconds
        )
    }
}

/// A failure of the run itself (sockets, HTTP, tasks).
fn fail(e: impl std::fmt::Display) -> BenchError {
    BenchError::Invalid(format!("sse benchmark: {e}"))
}

/// Runs the SSE benchmark: `subscribers` clients, `events` events.
pub async fn sse(
    subscribers: usize,
    events: usize,
    options: SseOptions,
) -> Result<SseReport, BenchError> {
    let store = Arc::new(
        ccm_store::SqliteStore::open_in_memory()
            .await
            .map_err(BenchError::setup("store"))?,
    );
    let mut opts = EmbeddedOptions::new(1, options.fleet_base, store);
    opts.settings.polling = ccm_domain::settings::PollingSettings::all_off();
    opts.spare = 0;
    let fleet = Embedded::start(opts)
        .await
        .map_err(BenchError::setup("embedded fleet"))?;
    let token = generate_token();
    let api = ApiConfig {
        sse_buffer: options.sse_buffer,
        sse_max_clients: subscribers + 16,
        ..ApiConfig::default()
    };
    let auth = AuthConfig::default().with_token("bench", Role::Viewer, &token);
    let state =
        ApiState::new(fleet.engine.clone(), api, auth, None).map_err(BenchError::setup("api"))?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(options.api_ip, 0))
        .await
        .map_err(fail)?;
    let addr = listener.local_addr().map_err(fail)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ccm_api::serve(listener, state.clone(), async move {
        let _ = stop_rx.await;
    }));

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .map_err(fail)?;
    let url = format!("http://{addr}/api/v1/events?type=ccm.worker.synced&snapshot=false");
    let base = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..events).map(|_| AtomicU64::new(0)).collect());

    // Connect every subscriber (a bounded number at a time).
    let connect_started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(
        options.connect_concurrency.max(1),
    ));
    let mut connecting = tokio::task::JoinSet::new();
    for _ in 0..subscribers {
        let (client, url, token, gate) = (client.clone(), url.clone(), token.clone(), gate.clone());
        connecting.spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(fail)?;
            let res = client
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .map_err(fail)?;
            if !res.status().is_success() {
                return Err(fail(format!("subscribe: http {}", res.status())));
            }
            Ok::<_, BenchError>(SseReader::new(res))
        });
    }
    let mut readers = Vec::with_capacity(subscribers);
    while let Some(r) = connecting.join_next().await {
        readers.push(r.map_err(fail)??);
    }
    let connect_seconds = connect_started.elapsed().as_secs_f64();

    // Each client records the latency of every bench event it gets.
    let mut receiving = tokio::task::JoinSet::new();
    for mut reader in readers {
        let sent = sent.clone();
        receiving.spawn(async move {
            let mut latencies: Vec<u64> = Vec::with_capacity(events);
            while latencies.len() < events {
                match reader.next().await {
                    Some(Ok(SseItem::Message(m))) if m.event_type() == "ccm.worker.synced" => {
                        let now = base.elapsed().as_nanos() as u64;
                        let index = serde_json::from_str::<serde_json::Value>(&m.data)
                            .ok()
                            .and_then(|v| {
                                v["data"]["version"]
                                    .as_str()
                                    .and_then(|s| s.strip_prefix("bench:"))
                                    .and_then(|s| s.parse::<usize>().ok())
                            });
                        if let Some(i) = index.filter(|i| *i < events) {
                            let at = sent[i].load(Ordering::Acquire);
                            latencies.push(now.saturating_sub(at));
                        }
                    }
                    Some(Ok(SseItem::Message(_) | SseItem::Comment(_))) => {}
                    Some(Err(_)) | None => return (latencies, true),
                }
            }
            (latencies, false)
        });
    }

    let publish_started = Instant::now();
    for i in 0..events {
        sent[i].store(base.elapsed().as_nanos() as u64, Ordering::Release);
        fleet
            .engine
            .emit(
                None,
                vec![EventKind::WorkerSynced {
                    service: ServiceStatus::Ready,
                    version: Some(format!("bench:{i}")),
                    cpu_percent: None,
                    memory_percent: None,
                    running_nodes: None,
                }],
            )
            .await;
        tokio::time::sleep(options.interval).await;
    }
    let publish_seconds = publish_started.elapsed().as_secs_f64();

    let mut all: Vec<u64> = Vec::with_capacity(subscribers * events);
    let mut dropped = 0;
    let deadline = Instant::now() + options.drain;
    loop {
        let next = tokio::time::timeout_at(deadline, receiving.join_next()).await;
        match next {
            Ok(Some(Ok((latencies, was_dropped)))) => {
                dropped += usize::from(was_dropped);
                all.extend(latencies);
            }
            Ok(Some(Err(e))) => return Err(fail(e)),
            Ok(None) => break,
            Err(_) => {
                // Clients still waiting for deliveries that never came count as dropped.
                dropped += receiving.len();
                receiving.abort_all();
                break;
            }
        }
    }
    let _ = stop_tx.send(());
    state.close_streams();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    fleet.shutdown().await;

    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        all[i.min(all.len() - 1)] as f64 / 1e6
    };
    Ok(SseReport {
        subscribers,
        events,
        expected: (subscribers * events) as u64,
        delivered: all.len() as u64,
        dropped_clients: dropped,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        connect_seconds,
        publish_seconds,
    })
}
