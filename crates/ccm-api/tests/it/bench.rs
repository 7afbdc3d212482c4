use std::net::Ipv4Addr;

use ccm_api::{SseBenchOptions, bench_sse};

#[tokio::test]
async fn the_sse_benchmark_should_deliver_every_event_to_every_subscriber() {
    let options = SseBenchOptions {
        fleet_base: Ipv4Addr::new(127, 99, 121, 1),
        ..SseBenchOptions::default()
    };
    let report = bench_sse(20, 50, options).await.unwrap();
    assert_eq!(report.expected, 1000);
    assert_eq!(report.delivered, 1000, "{report}");
    assert_eq!(report.dropped_clients, 0, "{report}");
    assert!(
        report.p50_ms > 0.0 && report.p50_ms <= report.p99_ms && report.p99_ms <= report.max_ms,
        "{report}"
    );
}
