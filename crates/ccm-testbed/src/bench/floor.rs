//! `ccm bench sync --floor`: the machine's floor for a sync cycle, measured in the same run.
//!
//! A minimal client on ccm's own HTTP stack ([`ccm_cml::http_client`]: the same reqwest,
//! hyper and rustls, the same TLS mode, pool and session-cache settings) makes the requests of
//! a ccm sync in the engine's order ([`ccm_cml::sync_order`]: over HTTPS with HTTP/2
//! `system_information`, then `system_health`, `system_stats` and `licensing` as streams on its
//! connection; over plain HTTP/1.1 the four one after another on one kept-alive connection,
//! the last with `Connection: close`; all four at once without a pool) with the same number
//! of workers at once, against the same simulated fleet. No engine, resilience policies, decoding into the domain, status
//! derivation or store: what is left is the transport and the simulator, so ccm's median ÷
//! this median is what ccm's own logic costs.

use std::sync::Arc;
use tokio::time::Instant;

use ccm_cml::{CmlConfig, SyncOrder, http_client, sync_order};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::BenchError;
use super::report::Summary;

/// The calls of one sync, as ccm makes them to a worker that was `ready` (authenticated), in
/// the order of `ccm_cml::sync_order`.
const PATHS: [&str; 4] = [
    "/api/v0/system_information",
    "/api/v0/system_health",
    "/api/v0/system_stats",
    "/api/v0/licensing",
];

/// What the floor measured.
#[derive(Debug, Clone)]
pub(crate) struct FloorRun {
    /// The login round (one per worker), not counted.
    pub(crate) warmup_seconds: f64,
    /// Each measured cycle's time.
    pub(crate) per_cycle_seconds: Vec<f64>,
    /// Requests that did not end in a 2xx with its body read, over all measured cycles.
    pub(crate) failed_requests: u64,
}

impl FloorRun {
    /// The measured cycles' summary.
    pub(crate) fn summary(&self) -> Summary {
        Summary::of(&self.per_cycle_seconds)
    }
}

/// Logs in to every worker once, then runs `cycles` cycles of the four sync calls per worker
/// with `concurrency` workers at once.
pub(crate) async fn run_floor(
    config: &CmlConfig,
    endpoints: &[String],
    concurrency: usize,
    cycles: u32,
) -> Result<FloorRun, BenchError> {
    // One client for the fleet, as ccm's (the endpoints share a scheme).
    let first = endpoints.first().map_or("", String::as_str);
    let client = http_client(config, first).map_err(BenchError::setup("floor client"))?;
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let credentials = serde_json::json!({
        "username": config.username,
        "password": config.password.expose(),
    })
    .to_string();

    let started = Instant::now();
    let mut logins = JoinSet::new();
    for (i, base) in endpoints.iter().enumerate() {
        let (client, gate, base, body) = (
            client.clone(),
            gate.clone(),
            base.clone(),
            credentials.clone(),
        );
        logins.spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            let resp = client
                .post(format!("{base}/api/v0/authenticate"))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .ok()?;
            let bytes = resp.error_for_status().ok()?.bytes().await.ok()?;
            let token: String = serde_json::from_slice(&bytes).ok()?;
            Some((i, Arc::<str>::from(format!("Bearer {token}"))))
        });
    }
    let mut tokens: Vec<Option<Arc<str>>> = vec![None; endpoints.len()];
    while let Some(joined) = logins.join_next().await {
        if let Ok(Some((i, token))) = joined
            && let Some(slot) = tokens.get_mut(i)
        {
            *slot = Some(token);
        }
    }
    let logged_in = tokens.iter().filter(|t| t.is_some()).count();
    if logged_in < endpoints.len() {
        return Err(BenchError::Invalid(format!(
            "floor: only {logged_in} of {} workers accepted the login",
            endpoints.len()
        )));
    }
    let warmup_seconds = started.elapsed().as_secs_f64();
    let bases: Vec<Arc<str>> = endpoints.iter().map(|e| Arc::from(e.as_str())).collect();

    let mut per_cycle_seconds = Vec::with_capacity(cycles as usize);
    let mut failed_requests = 0u64;
    for _ in 0..cycles {
        let started = Instant::now();
        let mut set = JoinSet::new();
        for (base, token) in bases.iter().zip(&tokens) {
            let Some(token) = token.clone() else { continue };
            let (client, gate, base) = (client.clone(), gate.clone(), base.clone());
            let order = sync_order(config, &base);
            set.spawn(async move {
                let Ok(_permit) = gate.acquire_owned().await else {
                    return PATHS.len() as u64;
                };
                let call = |path: &'static str, close: bool| {
                    let mut req = client
                        .get(format!("{base}{path}"))
                        .header(reqwest::header::AUTHORIZATION, &*token);
                    if close {
                        req = req.header(reqwest::header::CONNECTION, "close");
                    }
                    async move {
                        match req.send().await {
                            Ok(resp) if resp.status().is_success() => {
                                u64::from(resp.bytes().await.is_err())
                            }
                            _ => 1,
                        }
                    }
                };
                match order {
                    SyncOrder::FirstThenStreams => {
                        let a = call(PATHS[0], false).await;
                        let (b, c, d) = tokio::join!(
                            call(PATHS[1], false),
                            call(PATHS[2], false),
                            call(PATHS[3], false)
                        );
                        a + b + c + d
                    }
                    SyncOrder::OneByOne => {
                        let a = call(PATHS[0], false).await;
                        let b = call(PATHS[1], false).await;
                        let c = call(PATHS[2], false).await;
                        a + b + c + call(PATHS[3], true).await
                    }
                    SyncOrder::AllAtOnce => {
                        let (a, b, c, d) = tokio::join!(
                            call(PATHS[0], false),
                            call(PATHS[1], false),
                            call(PATHS[2], false),
                            call(PATHS[3], false)
                        );
                        a + b + c + d
                    }
                }
            });
        }
        while let Some(joined) = set.join_next().await {
            failed_requests += joined.unwrap_or(PATHS.len() as u64);
        }
        per_cycle_seconds.push(started.elapsed().as_secs_f64());
    }
    Ok(FloorRun {
        warmup_seconds,
        per_cycle_seconds,
        failed_requests,
    })
}
