//! Measures one CML sync of a whole fleet: for every worker, the four sync calls
//! (system_information, system_health, system_stats, licensing), `ROUNDS` times, through one
//! shared `CmlClient` with the default resilience policies. Prints the time per round and
//! the process's resident memory.
//!
//! Start a simulated fleet first, e.g.
//! `ccm sim --workers 10000 --listen-base 127.30.0.1 --port 9443 --endpoints-out /tmp/eps.txt`,
//! then run
//! `cargo run --release -p ccm-cml --example fleet_sync -- /tmp/eps.txt [CONCURRENCY] [ROUNDS]`.

use std::sync::Arc;
use std::time::Duration;

use ccm_cml::{CmlClient, CmlConfig};
use ccm_resilience::{Resilience, ResilienceConfig};
use futures::StreamExt;

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let file = args
        .next()
        .ok_or("usage: fleet_sync ENDPOINTS_FILE [CONCURRENCY] [ROUNDS]")?;
    let concurrency: usize = args.next().map_or(Ok(1000), |s| s.parse())?;
    let rounds: usize = args.next().map_or(Ok(3), |s| s.parse())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(&file, concurrency, rounds))
}

async fn run(
    file: &str,
    concurrency: usize,
    rounds: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    // Pool knobs from the environment, to compare settings without rebuilding.
    let mut cfg = CmlConfig::default();
    if let Some(n) = std::env::var("CML_POOL_MAX_IDLE_PER_HOST")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.pool_max_idle_per_host = n;
    }
    if let Some(ms) = std::env::var("CML_POOL_IDLE_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.pool_idle_timeout = Duration::from_millis(ms);
    }
    println!(
        "pool_max_idle_per_host {}, pool_idle_timeout {:?}",
        cfg.pool_max_idle_per_host, cfg.pool_idle_timeout
    );
    let resilience = Resilience::new(
        &ResilienceConfig::default(),
        Arc::new(ccm_resilience::NoopObserver),
    );
    let client = CmlClient::new(&cfg, resilience)?;
    let targets = std::fs::read_to_string(file)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| client.target(l.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    // CML_SPREAD_SECS: start worker i at i/n of this many seconds into the round, as the
    // engine spreads polls over its interval (default: as fast as the concurrency allows).
    let spread = std::env::var("CML_SPREAD_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .map(Duration::from_secs_f64);
    println!(
        "{} workers, concurrency {concurrency}, spread {spread:?}, rss before: {} KiB",
        targets.len(),
        status_kib("VmRSS:")
    );
    let n = targets.len().max(1);
    for round in 1..=rounds {
        let started = tokio::time::Instant::now();
        let failures: usize = futures::stream::iter(targets.iter().enumerate())
            .map(|(i, t)| {
                let client = client.clone();
                async move {
                    if let Some(spread) = spread {
                        tokio::time::sleep_until(started + spread.mul_f64(i as f64 / n as f64))
                            .await;
                    }
                    let mut failed = 0;
                    failed += usize::from(client.system_information(t).await.is_err());
                    failed += usize::from(client.system_health(t).await.is_err());
                    failed += usize::from(client.system_stats(t).await.is_err());
                    failed += usize::from(client.licensing(t).await.is_err());
                    failed
                }
            })
            .buffer_unordered(concurrency)
            .fold(0, |acc, f| async move { acc + f })
            .await;
        let elapsed = started.elapsed();
        println!(
            "round {round}: {} calls in {:.2} s ({:.0} calls/s), {failures} failed, rss {} KiB, peak {} KiB",
            targets.len() * 4,
            elapsed.as_secs_f64(),
            (targets.len() * 4) as f64 / elapsed.as_secs_f64().max(1e-9),
            status_kib("VmRSS:"),
            status_kib("VmHWM:"),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("sessions: {}", client.session_count());
    Ok(())
}
