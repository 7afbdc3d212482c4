use std::time::Duration;

use ccm_cml::{CmlClient, CmlError, Target};
use ccm_cml_sim::{Endpoint as SimEndpoint, FaultSpec};
use ccm_resilience::BreakerState;

use crate::support::{client_with, eventually, fleet, resilience_config};

/// One polling call, chosen by `i` (system_information, system_health, licensing).
async fn poll(c: &CmlClient, t: &Target, i: usize) -> Result<(), CmlError> {
    match i % 3 {
        0 => c.system_information(t).await.map(|_| ()),
        1 => c.system_health(t).await.map(|_| ()),
        _ => c.licensing(t).await.map(|_| ()),
    }
}

#[tokio::test]
async fn a_blackholed_worker_should_cost_threshold_timeouts_then_no_request_until_the_probe() {
    const THRESHOLD: u32 = 3;
    let f = fleet(30, 1, |_| {}).await;
    let mut cfg = resilience_config();
    cfg.timeout.per_attempt = Duration::from_millis(200);
    cfg.timeout.deadline = Duration::from_secs(2);
    cfg.breaker.failure_threshold = THRESHOLD;
    cfg.breaker.open_for = Duration::from_secs(1);
    let c = client_with(&cfg);
    let t = c.target(&f.endpoints()[0]).unwrap();
    let w = f.worker(0).unwrap();
    c.system_health(&t).await.unwrap();

    w.apply_faults(&FaultSpec::parse("*:blackhole").unwrap());
    w.reset_counters();
    let mut timeouts = 0;
    let mut rejected = 0;
    for i in 0..12 {
        match poll(&c, &t, i).await {
            Err(CmlError::Timeout { after, .. }) => {
                assert_eq!(after, Duration::from_millis(200));
                timeouts += 1;
            }
            Err(CmlError::CircuitOpen { .. }) => rejected += 1,
            other => panic!("call {i}: unexpected {other:?}"),
        }
    }
    assert_eq!(
        w.counters().requests,
        u64::from(THRESHOLD),
        "the blackhole got exactly the breaker threshold of attempts"
    );
    assert!(
        timeouts >= 1 && rejected >= 10,
        "{timeouts} timeouts, {rejected} rejected"
    );
    assert_eq!(
        c.resilience().breakers().state(t.base_url()),
        BreakerState::Open
    );

    // Nothing reaches the worker while the breaker is open; then exactly one probe does.
    let probe = eventually(Duration::from_secs(5), "the half-open probe", || async {
        assert_eq!(
            w.counters().requests,
            u64::from(THRESHOLD),
            "a request leaked"
        );
        match poll(&c, &t, 1).await {
            Err(CmlError::CircuitOpen { .. }) => None,
            other => Some(other),
        }
    })
    .await;
    assert!(matches!(probe, Err(CmlError::Timeout { .. })), "{probe:?}");
    assert_eq!(w.counters().requests, u64::from(THRESHOLD) + 1, "one probe");
    assert!(matches!(
        poll(&c, &t, 0).await,
        Err(CmlError::CircuitOpen { .. })
    ));

    // Once the worker answers again, the next probe closes the breaker.
    w.clear_faults();
    eventually(Duration::from_secs(5), "the breaker to close", || async {
        poll(&c, &t, 0).await.ok()
    })
    .await;
    assert_eq!(
        c.resilience().breakers().state(t.base_url()),
        BreakerState::Closed
    );
    f.shutdown().await;
}

#[tokio::test]
async fn a_401_storm_over_twenty_workers_should_cost_one_login_per_worker() {
    const WORKERS: usize = 20;
    let f = fleet(31, WORKERS, |_| {}).await;
    let c = client_with(&resilience_config());
    let targets: Vec<Target> = f.endpoints().iter().map(|u| c.target(u).unwrap()).collect();
    for t in &targets {
        c.system_health(t).await.unwrap();
    }
    for w in f.workers() {
        w.expire_tokens_now();
        w.reset_counters();
    }

    let tasks = (0..WORKERS * 10).map(|i| {
        let c = c.clone();
        let t = targets[i % WORKERS].clone();
        tokio::spawn(async move { poll(&c, &t, 1 + i % 2).await })
    });
    for r in futures::future::join_all(tasks).await {
        r.unwrap().unwrap();
    }
    for (i, w) in f.workers().enumerate() {
        let counters = w.counters();
        assert_eq!(counters.logins, 1, "worker {i}: {counters:?}");
        assert_eq!(counters.get(SimEndpoint::AuthExtended), 1, "worker {i}");
        // Each of the 10 calls was sent, refused once at most, and repeated once at most.
        let polls = counters.get(SimEndpoint::SystemHealth) + counters.get(SimEndpoint::Licensing);
        assert!(
            (10..=20).contains(&polls),
            "worker {i}: {polls} poll requests"
        );
    }
    assert_eq!(c.resilience().breakers().open_count(), 0);
    f.shutdown().await;
}

/// Resilience for a worker failing half its calls: retries may add only 20 % of the calls
/// (no floor), over a window longer than the test.
fn flapping_config(breaker_threshold: Option<u32>) -> ccm_resilience::ResilienceConfig {
    let mut cfg = resilience_config();
    cfg.budget.ratio = 0.2;
    cfg.budget.min_per_second = 0;
    cfg.budget.window = Duration::from_secs(60);
    match breaker_threshold {
        Some(n) => cfg.breaker.failure_threshold = n,
        None => cfg.breaker.enabled = false,
    }
    cfg.breaker.open_for = Duration::from_secs(60);
    cfg
}

#[tokio::test]
async fn a_worker_failing_half_its_calls_should_get_no_more_than_the_budgeted_retries() {
    const CALLS: u64 = 200;
    let f = fleet(32, 1, |_| {}).await;
    let c = client_with(&flapping_config(None));
    let t = c.target(&f.endpoints()[0]).unwrap();
    let w = f.worker(0).unwrap();
    w.apply_faults(&FaultSpec::parse("*:error=503@50%").unwrap());

    let mut budget_refusals = 0;
    for _ in 0..CALLS {
        match c.system_information(&t).await {
            Ok(_) => {}
            Err(CmlError::BudgetExhausted { last, .. }) => {
                assert_eq!(last.status(), Some(503));
                budget_refusals += 1;
            }
            Err(e) if e.status() == Some(503) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    let requests = w.counters().get(SimEndpoint::SystemInformation);
    // Unbounded, 3 attempts per call would average 1.75 requests per call (350); the budget
    // allows 20 % on top of the calls.
    assert!(
        (CALLS + 1..=CALLS + CALLS / 5).contains(&requests),
        "{requests} requests for {CALLS} calls"
    );
    assert!(budget_refusals > 0, "the budget had to refuse retries");
    f.shutdown().await;
}

#[tokio::test]
async fn a_flapping_worker_should_trip_its_breaker_and_then_get_no_requests() {
    const CALLS: u64 = 200;
    let f = fleet(34, 1, |_| {}).await;
    let c = client_with(&flapping_config(Some(2)));
    let t = c.target(&f.endpoints()[0]).unwrap();
    let w = f.worker(0).unwrap();
    w.apply_faults(&FaultSpec::parse("*:error=503@50%").unwrap());

    let mut rejected = 0;
    let mut at_first_rejection = None;
    for _ in 0..CALLS {
        match c.system_information(&t).await {
            Err(CmlError::CircuitOpen { .. }) => {
                rejected += 1;
                at_first_rejection
                    .get_or_insert_with(|| w.counters().get(SimEndpoint::SystemInformation));
            }
            Ok(_) | Err(CmlError::BudgetExhausted { .. }) => {}
            Err(e) if e.status() == Some(503) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    let requests = w.counters().get(SimEndpoint::SystemInformation);
    let attempted = CALLS - rejected;
    assert!(rejected > 0, "two failures in a row open the breaker");
    assert_eq!(
        Some(requests),
        at_first_rejection,
        "no request reached the worker once its breaker was open"
    );
    assert!(
        requests <= attempted + attempted / 5,
        "{requests} requests for {attempted} attempted calls"
    );
    assert_eq!(
        c.resilience().breakers().state(t.base_url()),
        BreakerState::Open
    );
    f.shutdown().await;
}

#[tokio::test]
async fn calls_to_a_hung_worker_should_not_hold_up_calls_to_a_healthy_one() {
    let f = fleet(33, 2, |_| {}).await;
    let mut cfg = resilience_config();
    cfg.timeout.per_attempt = Duration::from_secs(5);
    cfg.timeout.deadline = Duration::from_secs(10);
    let c = client_with(&cfg);
    let sick = c.target(&f.endpoints()[0]).unwrap();
    let healthy = c.target(&f.endpoints()[1]).unwrap();
    let sick_worker = f.worker(0).unwrap();
    sick_worker.apply_faults(&FaultSpec::parse("*:blackhole").unwrap());

    let stuck: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            let t = sick.clone();
            tokio::spawn(async move { c.system_information(&t).await.map(|_| ()) })
        })
        .collect();
    eventually(
        Duration::from_secs(5),
        "20 requests hanging at the sick worker",
        || async { (sick_worker.counters().requests == 20).then_some(()) },
    )
    .await;
    for _ in 0..20 {
        c.system_health(&healthy).await.unwrap();
    }
    assert!(
        stuck.iter().all(|h| !h.is_finished()),
        "the healthy calls finished while every call to the hung worker still waits"
    );
    for h in &stuck {
        h.abort();
    }
    f.shutdown().await;
}

#[tokio::test]
async fn a_probe_of_a_blackholed_worker_should_be_one_short_attempt_never_retried() {
    let f = fleet(38, 1, |_| {}).await;
    let mut cfg = resilience_config();
    cfg.timeout.per_attempt = Duration::from_secs(20);
    cfg.timeout.deadline = Duration::from_secs(60);
    cfg.retry.max_attempts = 3;
    let c = CmlClient::new(
        &ccm_cml::CmlConfig {
            probe_timeout: Duration::from_millis(150),
            ..crate::support::cml_config()
        },
        ccm_resilience::Resilience::builder(&cfg)
            .jitter_seed(7)
            .build(),
    )
    .unwrap();
    let t = c.target(&f.endpoints()[0]).unwrap();
    let w = f.worker(0).unwrap();
    let info = c.probe(&t).await.unwrap();
    assert!(info.ready, "a healthy worker answers the probe");

    w.apply_faults(&FaultSpec::parse("*:blackhole").unwrap());
    w.reset_counters();
    // The policy's own attempt timeout (20 s) and retries would take a minute: the probe's
    // single 150 ms attempt is all a dead worker gets.
    let probe = tokio::time::timeout(Duration::from_secs(10), c.probe(&t))
        .await
        .expect("the probe should end after its own short timeout");
    match probe {
        Err(CmlError::Timeout { after, .. }) => assert_eq!(after, Duration::from_millis(150)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(w.counters().requests, 1, "one attempt, no retry");
}
