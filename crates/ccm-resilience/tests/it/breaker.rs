use std::sync::Arc;
use std::time::Duration;

use ccm_resilience::{
    BreakerConfig, BreakerOpen, BreakerRegistry, BreakerState, Call, CallError, RecordingObserver,
    Resilience, ResilienceConfig, ResilienceEvent, Verdict,
};
use futures::future::join_all;

use crate::support::{Counter, TestError, secs};

fn registry(threshold: u32, open_for: Duration) -> (BreakerRegistry, Arc<RecordingObserver>) {
    let obs = RecordingObserver::new();
    let reg = BreakerRegistry::new(
        &BreakerConfig {
            enabled: true,
            failure_threshold: threshold,
            open_for,
        },
        obs.clone(),
    );
    (reg, obs)
}

fn fail(reg: &BreakerRegistry, key: &str) {
    reg.acquire(key)
        .expect("breaker should admit")
        .failure(|| "boom".into());
}

fn opened(key: &str, failures: u32) -> ResilienceEvent {
    ResilienceEvent::BreakerOpened {
        key: key.into(),
        consecutive_failures: failures,
        reason: "boom".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn breaker_should_open_after_threshold_consecutive_failures() {
    let (reg, obs) = registry(3, secs(60));
    fail(&reg, "a");
    fail(&reg, "a");
    assert_eq!(reg.state("a"), BreakerState::Closed);
    assert_eq!(reg.snapshot_of("a").unwrap().consecutive_failures, 2);
    assert!(obs.events().is_empty());
    fail(&reg, "a");
    assert_eq!(reg.state("a"), BreakerState::Open);
    assert_eq!(obs.events(), vec![opened("a", 3)]);
    assert_eq!(reg.open_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn success_and_benign_outcomes_should_reset_the_failure_count() {
    let (reg, _) = registry(3, secs(60));
    for verdict in [
        Verdict::Success,
        Verdict::from(ccm_resilience::ErrorClass::Benign),
    ] {
        fail(&reg, "a");
        fail(&reg, "a");
        reg.acquire("a").unwrap().record(verdict, String::new);
        assert_eq!(reg.snapshot_of("a").unwrap().consecutive_failures, 0);
        fail(&reg, "a");
        fail(&reg, "a");
        assert_eq!(reg.state("a"), BreakerState::Closed);
        reg.acquire("a").unwrap().success();
    }
}

#[tokio::test(start_paused = true)]
async fn breaker_should_reject_while_open_and_tell_when_it_will_probe() {
    let (reg, _) = registry(1, secs(60));
    fail(&reg, "a");
    assert_eq!(
        reg.acquire("a").unwrap_err(),
        BreakerOpen { retry_in: secs(60) }
    );
    tokio::time::advance(secs(45)).await;
    assert_eq!(
        reg.acquire("a").unwrap_err(),
        BreakerOpen { retry_in: secs(15) }
    );
    let snap = reg.snapshot_of("a").unwrap();
    assert_eq!(snap.state, BreakerState::Open);
    assert_eq!(snap.retry_in, Some(secs(15)));
    assert!(snap.opened_at.is_some());
}

#[tokio::test(start_paused = true)]
async fn breaker_should_half_open_after_open_for_and_close_on_a_successful_probe() {
    let (reg, obs) = registry(1, secs(60));
    fail(&reg, "a");
    tokio::time::advance(secs(60)).await;
    let probe = reg.acquire("a").unwrap();
    assert!(probe.is_probe());
    assert_eq!(reg.state("a"), BreakerState::HalfOpen);
    assert_eq!(
        reg.acquire("a").unwrap_err(),
        BreakerOpen {
            retry_in: Duration::ZERO
        }
    );
    probe.success();
    assert_eq!(reg.state("a"), BreakerState::Closed);
    assert!(!reg.acquire("a").unwrap().is_probe());
    assert_eq!(reg.open_count(), 0);
    assert_eq!(
        obs.events(),
        vec![
            opened("a", 1),
            ResilienceEvent::BreakerHalfOpen { key: "a".into() },
            ResilienceEvent::BreakerClosed { key: "a".into() },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn breaker_should_reopen_after_a_failed_probe() {
    let (reg, obs) = registry(2, secs(60));
    fail(&reg, "a");
    fail(&reg, "a");
    tokio::time::advance(secs(61)).await;
    reg.acquire("a").unwrap().failure(|| "boom".into());
    assert_eq!(reg.state("a"), BreakerState::Open);
    // A full open period again, counted from the failed probe.
    assert_eq!(
        reg.acquire("a").unwrap_err(),
        BreakerOpen { retry_in: secs(60) }
    );
    assert_eq!(reg.open_count(), 1);
    assert_eq!(
        obs.events(),
        vec![
            opened("a", 2),
            ResilienceEvent::BreakerHalfOpen { key: "a".into() },
            opened("a", 3),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_dropped_without_verdict_should_free_the_probe_slot() {
    let (reg, _) = registry(1, secs(10));
    fail(&reg, "a");
    tokio::time::advance(secs(10)).await;
    let probe = reg.acquire("a").unwrap();
    assert!(reg.acquire("a").is_err());
    drop(probe);
    assert_eq!(reg.state("a"), BreakerState::HalfOpen);
    let next = reg.acquire("a").unwrap();
    assert!(next.is_probe());
    next.success();
    assert_eq!(reg.state("a"), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn late_outcomes_of_attempts_started_while_closed_should_not_decide() {
    let (reg, _) = registry(1, secs(10));
    let early_ok = reg.acquire("a").unwrap();
    let early_fail = reg.acquire("a").unwrap();
    fail(&reg, "a");
    early_ok.success();
    assert_eq!(
        reg.state("a"),
        BreakerState::Open,
        "late success must not close"
    );
    tokio::time::advance(secs(10)).await;
    let probe = reg.acquire("a").unwrap();
    early_fail.failure(|| "late".into());
    assert_eq!(
        reg.state("a"),
        BreakerState::HalfOpen,
        "late failure must not reopen"
    );
    probe.success();
    assert_eq!(reg.state("a"), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn exactly_one_probe_should_reach_the_operation_among_concurrent_callers() {
    let mut cfg = ResilienceConfig::default();
    cfg.retry.enabled = false;
    cfg.breaker.failure_threshold = 1;
    let obs = RecordingObserver::new();
    let r = Resilience::new(&cfg, obs.clone());
    let _ = r
        .call(&Call::new("w"), |_| async {
            Err::<(), _>(TestError::failure())
        })
        .await;
    tokio::time::advance(secs(60)).await;

    let n = Counter::default();
    let calls = (0..50).map(|_| {
        let (r, n) = (r.clone(), n.clone());
        tokio::spawn(async move {
            r.call(&Call::new("w"), |_| {
                n.hit();
                async {
                    tokio::time::sleep(secs(1)).await;
                    Ok::<_, TestError>(())
                }
            })
            .await
        })
    });
    let results: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(n.get(), 1, "exactly one probe");
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    for res in results.iter().filter(|r| r.is_err()) {
        assert!(matches!(
            res,
            Err(CallError::CircuitOpen { retry_in, .. }) if retry_in.is_zero()
        ));
    }
    assert_eq!(r.breakers().state("w"), BreakerState::Closed);
    assert_eq!(
        obs.events()
            .iter()
            .filter(|e| matches!(e, ResilienceEvent::BreakerHalfOpen { .. }))
            .count(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_probe_should_reopen_the_breaker() {
    let mut cfg = ResilienceConfig::default();
    cfg.retry.enabled = false;
    cfg.breaker.failure_threshold = 1;
    let r = Resilience::new(&cfg, Arc::new(ccm_resilience::NoopObserver));
    let _ = r
        .call(&Call::new("w"), |_| async {
            Err::<(), _>(TestError::transient())
        })
        .await;
    tokio::time::advance(secs(60)).await;
    let res: Result<(), CallError<TestError>> =
        r.call(&Call::new("w"), |_| std::future::pending()).await;
    assert_eq!(res, Err(CallError::Timeout { after: secs(15) }));
    let snap = r.breakers().snapshot_of("w").unwrap();
    assert_eq!(snap.state, BreakerState::Open);
    assert_eq!(snap.consecutive_failures, 2);
}

#[tokio::test(start_paused = true)]
async fn a_disabled_breaker_should_never_reject() {
    let reg = BreakerRegistry::new(
        &BreakerConfig {
            enabled: false,
            ..BreakerConfig::default()
        },
        Arc::new(ccm_resilience::NoopObserver),
    );
    for _ in 0..100 {
        fail(&reg, "a");
    }
    assert_eq!(reg.state("a"), BreakerState::Closed);
    assert!(reg.is_empty(), "a disabled registry keeps no state");
}

#[tokio::test(start_paused = true)]
async fn snapshot_reset_and_remove_should_reflect_every_breaker() {
    let (reg, obs) = registry(1, secs(60));
    reg.acquire("c").unwrap().success();
    fail(&reg, "a");
    fail(&reg, "b");
    let snap = reg.snapshot();
    let keys: Vec<_> = snap.iter().map(|s| (s.key.as_str(), s.state)).collect();
    assert_eq!(
        keys,
        vec![
            ("a", BreakerState::Open),
            ("b", BreakerState::Open),
            ("c", BreakerState::Closed)
        ]
    );
    assert_eq!(snap[2].retry_in, None);
    assert_eq!(snap[2].opened_at, None);
    assert_eq!(reg.open_count(), 2);

    reg.reset("a");
    assert_eq!(reg.state("a"), BreakerState::Closed);
    assert_eq!(
        obs.take().last(),
        Some(&ResilienceEvent::BreakerClosed { key: "a".into() })
    );
    reg.remove("b");
    assert_eq!(reg.len(), 2);
    assert_eq!(
        reg.state("b"),
        BreakerState::Closed,
        "unknown keys read as closed"
    );
    assert_eq!(reg.open_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_keys_should_each_get_their_own_breaker() {
    let (reg, _) = registry(1, secs(60));
    for i in 0..10_000 {
        let key = format!("https://10.0.{}.{}", i / 256, i % 256);
        if i % 2 == 0 {
            fail(&reg, &key);
        } else {
            reg.acquire(&key).unwrap().success();
        }
    }
    assert_eq!(reg.len(), 10_000);
    assert_eq!(reg.open_count(), 5_000);
    assert_eq!(
        reg.snapshot()
            .iter()
            .filter(|s| s.state == BreakerState::Open)
            .count(),
        5_000
    );
}
