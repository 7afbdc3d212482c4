//! The SSE benchmark harness at a small scale: the API, the embedded fleet and real clients.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::net::Ipv4Addr;

use ccm_testbed::bench::{SseOptions, sse};

#[tokio::test]
async fn the_sse_benchmark_should_deliver_every_event_to_every_subscriber() {
    let options = SseOptions {
        fleet_base: Ipv4Addr::new(127, 99, 121, 1),
        ..SseOptions::default()
    };
    let report = sse(20, 50, options).await.unwrap();
    assert_eq!(report.expected, 1000);
    assert_eq!(report.delivered, 1000, "{report}");
    assert_eq!(report.dropped_clients, 0, "{report}");
    assert!(
        report.p50_ms > 0.0 && report.p50_ms <= report.p99_ms && report.p99_ms <= report.max_ms,
        "{report}"
    );
}
