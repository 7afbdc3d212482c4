//! `ccm bench sse`: fan-out of live events to many SSE subscribers of the real API.
//!
//! Runs [`ccm_api::bench_sse`]: one embedded simulated worker and the API on loopback,
//! `--subscribers` clients on `/api/v1/events/stream`, `--events` events published at
//! `--interval`; reports what every client received and the publish-to-receive latency.

use std::time::Duration;

use anyhow::Context as _;

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
    pub(crate) listen_base: std::net::Ipv4Addr,
    /// Longest the whole run may take.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub(crate) timeout: Duration,
}

/// Runs the benchmark and prints its JSON report on stdout (the summary on stderr).
pub(super) fn main(args: SseArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let options = ccm_api::SseBenchOptions {
        interval: args.interval,
        fleet_base: args.listen_base,
        ..ccm_api::SseBenchOptions::default()
    };
    let report = runtime.block_on(async {
        tokio::time::timeout(
            args.timeout,
            ccm_api::bench_sse(args.subscribers as usize, args.events as usize, options),
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
