//! Full CML sync cycles (`Engine::run_cml_cycle`) under a tight `cml_poll` bulkhead: the
//! regression test for the poll that held a bulkhead slot while its own calls waited for one
//! (a deadlock as soon as polls held every slot), and the shape of a sync (four calls per
//! ready worker, one probe for a worker that does not answer).
//!
//! Addresses 127.112.x are this file's. Background polling is off; cycles are triggered.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use ccm_cml_sim::faults::FaultSpec;
use ccm_domain::ServiceStatus;
use ccm_resilience::BulkheadConfig;
use ccm_store::SqliteStore;
use ccm_testbed::embedded::{Embedded, EmbeddedOptions};

async fn fleet(
    workers: usize,
    base: [u8; 4],
    cml_poll: BulkheadConfig,
    tweak: impl FnOnce(&mut ccm_resilience::ResilienceConfig),
) -> Embedded {
    let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let mut opts = EmbeddedOptions::new(workers, Ipv4Addr::from(base), store);
    opts.settings.polling = ccm_domain::settings::PollingSettings::all_off();
    opts.boot = Duration::ZERO;
    opts.sim.latency = Duration::from_millis(5);
    let r = &mut opts.resilience;
    r.bulkheads.cml_poll = cml_poll;
    r.timeout.per_attempt = Duration::from_millis(400);
    r.timeout.deadline = Duration::from_secs(2);
    r.retry.max_attempts = 1;
    r.breaker.failure_threshold = 6;
    r.breaker.open_for = Duration::from_secs(600);
    tweak(r);
    Embedded::start(opts).await.unwrap()
}

fn count(fleet: &Embedded, status: ServiceStatus) -> u64 {
    fleet
        .engine
        .counts()
        .by_service
        .get(status.as_str())
        .copied()
        .unwrap_or(0)
}

/// Waits (bounded) until the background probes a cycle left running have ended.
async fn probes_done(fleet: &Embedded) {
    let due = tokio::time::Instant::now() + Duration::from_secs(10);
    while fleet.engine.probes_in_flight() > 0 {
        assert!(tokio::time::Instant::now() < due, "a probe never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_should_finish_when_polls_outnumber_the_bulkhead_slots() {
    // 4 call slots for 40 workers: polls queue for the gate, calls never wait behind polls.
    let fleet = fleet(40, [127, 112, 0, 1], BulkheadConfig::new(4, 10_000), |_| {}).await;
    for cycle in 0..2 {
        let report = tokio::time::timeout(Duration::from_secs(30), fleet.engine.run_cml_cycle())
            .await
            .expect("a cycle must not deadlock on the cml_poll bulkhead");
        assert_eq!(report.workers, 40);
        assert_eq!(count(&fleet, ServiceStatus::Ready), 40, "cycle {cycle}");
    }
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_workers_should_get_four_calls_and_dead_ones_one_probe_then_none() {
    let fleet = fleet(
        10,
        [127, 112, 1, 1],
        BulkheadConfig::new(512, 10_000),
        // One failure in the cycle it dies in, two probes: then the breaker opens.
        |r| r.breaker.failure_threshold = 3,
    )
    .await;
    fleet.engine.run_cml_cycle().await;
    assert_eq!(count(&fleet, ServiceStatus::Ready), 10);
    let dead = fleet.sim.worker(3).unwrap();
    dead.apply_faults(&FaultSpec::parse("3:blackhole").unwrap());

    let before = fleet.sim.counters();
    fleet.engine.run_cml_cycle().await;
    let after = fleet.sim.counters();
    // Ready at the last sync: the four calls one after another (plain HTTP); the worker that
    // just died gets system_information only (it timed out, the others are not attempted).
    assert_eq!(after.requests - before.requests, 9 * 4 + 1);
    assert_eq!(count(&fleet, ServiceStatus::Unavailable), 1);

    // Unavailable now: probed in the background, with system_information alone (failures 2
    // and 3 of 3).
    for _ in 0..2 {
        let dead_before = dead.counters().requests;
        fleet.engine.run_cml_cycle().await;
        probes_done(&fleet).await;
        assert_eq!(dead.counters().requests - dead_before, 1);
    }
    // Its breaker is open now: no request at all.
    let dead_before = dead.counters().requests;
    let report = fleet.engine.run_cml_cycle().await;
    assert_eq!(report.workers, 10);
    assert_eq!(dead.counters().requests, dead_before);
    assert_eq!(count(&fleet, ServiceStatus::Ready), 9);
    assert_eq!(count(&fleet, ServiceStatus::Unavailable), 1);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_should_not_wait_for_the_probe_of_a_dead_worker() {
    // A probe of a blackholed worker takes its whole timeout (`cml.probe_timeout`, 5 s).
    let fleet = fleet(5, [127, 112, 2, 1], BulkheadConfig::new(512, 10_000), |r| {
        r.timeout.per_attempt = Duration::from_secs(10);
        r.timeout.deadline = Duration::from_secs(20);
        r.breaker.failure_threshold = 1;
        r.breaker.open_for = Duration::from_millis(300);
    })
    .await;
    fleet.engine.run_cml_cycle().await;
    let dead = fleet.sim.worker(2).unwrap();
    dead.power_off();
    // Refused connections fail fast and open the breaker (threshold 1).
    fleet.engine.run_cml_cycle().await;
    assert_eq!(count(&fleet, ServiceStatus::Unavailable), 1);
    dead.power_on(Duration::ZERO);
    dead.apply_faults(&FaultSpec::parse("2:blackhole").unwrap());
    // Once the open period is over, the next call is the breaker's probe.
    let due = tokio::time::Instant::now() + Duration::from_secs(5);
    while fleet
        .engine
        .resilience()
        .breakers()
        .snapshot()
        .iter()
        .any(|b| b.retry_in.is_some_and(|r| !r.is_zero()))
    {
        assert!(
            tokio::time::Instant::now() < due,
            "the breaker never became due"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = dead.counters().requests;
    let report = tokio::time::timeout(Duration::from_secs(5), fleet.engine.run_cml_cycle())
        .await
        .expect("the cycle must not wait for the probe's 5 s timeout");
    assert_eq!(report.workers, 5);
    // The probe went out (one request) and is still waiting for its answer.
    let sent = tokio::time::Instant::now() + Duration::from_secs(5);
    while dead.counters().requests == before {
        assert!(tokio::time::Instant::now() < sent, "no probe was sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(dead.counters().requests, before + 1);
    // While it is out, cycles leave the worker alone.
    fleet.engine.run_cml_cycle().await;
    assert_eq!(dead.counters().requests, before + 1);
    assert_eq!(count(&fleet, ServiceStatus::Ready), 4);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cycles_at_once_should_sync_each_worker_once() {
    let fleet = fleet(
        4,
        [127, 112, 3, 1],
        BulkheadConfig::new(512, 10_000),
        |_| {},
    )
    .await;
    fleet.engine.run_cml_cycle().await;
    assert_eq!(count(&fleet, ServiceStatus::Ready), 4);
    // Every request now takes 300 ms: the first cycle's syncs are still running when the
    // second cycle starts (join! polls it right after the first one claimed its workers).
    for i in 0..4 {
        let w = fleet.sim.worker(i).unwrap();
        w.apply_faults(&FaultSpec::parse(&format!("{i}:latency=300ms")).unwrap());
    }
    let before = fleet.sim.counters().requests;
    let (a, b) = tokio::join!(fleet.engine.run_cml_cycle(), fleet.engine.run_cml_cycle());
    assert_eq!((a.workers, b.workers), (4, 4));
    assert_eq!(
        fleet.sim.counters().requests - before,
        16,
        "four calls per worker: one sync each, never two at once"
    );
    assert_eq!(count(&fleet, ServiceStatus::Ready), 4);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_sync_should_make_one_connection_per_worker() {
    let fleet = fleet(
        20,
        [127, 112, 4, 1],
        BulkheadConfig::new(512, 10_000),
        |_| {},
    )
    .await;
    fleet.engine.run_cml_cycle().await;
    assert_eq!(count(&fleet, ServiceStatus::Ready), 20);
    for cycle in 0..3 {
        let before = fleet.sim.counters();
        let report = fleet.engine.run_cml_cycle().await;
        let after = fleet.sim.counters();
        assert_eq!(report.workers, 20);
        // The four calls one after another on one kept-alive connection, closed by the last.
        assert_eq!(after.requests - before.requests, 80, "cycle {cycle}");
        assert_eq!(after.connections - before.connections, 20, "cycle {cycle}");
        assert_eq!(count(&fleet, ServiceStatus::Ready), 20, "cycle {cycle}");
    }
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_closes_the_connection_mid_sync_should_still_be_synced() {
    let fleet = fleet(
        4,
        [127, 112, 5, 1],
        BulkheadConfig::new(512, 10_000),
        |_| {},
    )
    .await;
    fleet.engine.run_cml_cycle().await;
    assert_eq!(count(&fleet, ServiceStatus::Ready), 4);
    // Worker 1 closes its connection after every system_health answer (and worker 2 after
    // every answer): the sync's next call opens a new one.
    let sick = fleet.sim.worker(1).unwrap();
    sick.apply_faults(&FaultSpec::parse("1/system_health:close").unwrap());
    let always = fleet.sim.worker(2).unwrap();
    always.apply_faults(&FaultSpec::parse("2:close").unwrap());
    let (sick_before, always_before) = (sick.counters(), always.counters());
    let report = fleet.engine.run_cml_cycle().await;
    assert_eq!(report.workers, 4);
    let (sick_after, always_after) = (sick.counters(), always.counters());
    assert_eq!(sick_after.requests - sick_before.requests, 4);
    assert_eq!(sick_after.connections - sick_before.connections, 2);
    assert_eq!(always_after.requests - always_before.requests, 4);
    assert_eq!(always_after.connections - always_before.connections, 4);
    // Ready: every call answered (a failed one would make the worker degraded).
    assert_eq!(count(&fleet, ServiceStatus::Ready), 4);
    fleet.shutdown().await;
}
