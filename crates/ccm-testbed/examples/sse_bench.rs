//! The SSE benchmark without the `ccm` binary (so a release build skips the AWS SDK):
//! `cargo run --release -p ccm-testbed --example sse_bench -- [SUBSCRIBERS] [EVENTS] [INTERVAL_MS]`
//! (defaults 1000, 1000, 2). Prints the report, and its JSON on the last line.

use std::time::Duration;

use ccm_testbed::bench::{SseOptions, sse};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| -> Result<u64, Box<dyn std::error::Error>> {
        Ok(match args.get(i) {
            Some(v) => v.parse()?,
            None => default,
        })
    };
    let subscribers = arg(0, 1000)? as usize;
    let events = arg(1, 1000)? as usize;
    let interval = Duration::from_millis(arg(2, 2)?);
    let report = sse(
        subscribers,
        events,
        SseOptions {
            interval,
            ..SseOptions::default()
        },
    )
    .await?;
    println!("{report}");
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
