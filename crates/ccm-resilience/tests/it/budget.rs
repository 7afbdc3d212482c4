use std::sync::Arc;

use ccm_resilience::{
    BudgetConfig, Call, CallError, RecordingObserver, Resilience, ResilienceEvent, RetryBudget,
};
use futures::future::join_all;

use crate::support::{Counter, TestError, retry_only, secs};

fn budget(ratio: f64, min_per_second: u32) -> (RetryBudget, Arc<RecordingObserver>) {
    let obs = RecordingObserver::new();
    let b = RetryBudget::new(
        &BudgetConfig {
            enabled: true,
            ratio,
            min_per_second,
            window: secs(10),
        },
        obs.clone(),
    );
    (b, obs)
}

#[tokio::test(start_paused = true)]
async fn total_attempts_should_stay_within_the_budget_when_every_call_fails() {
    const CALLS: u32 = 1_000;
    let mut cfg = retry_only();
    cfg.budget.enabled = true; // 20 %, 10/s over 10 s: a floor of 100 retries
    let obs = RecordingObserver::new();
    let r = Resilience::builder(&cfg)
        .observer(obs.clone())
        .jitter_seed(4)
        .build();
    let attempts = Counter::default();
    let calls = (0..CALLS).map(|i| {
        let (r, attempts) = (r.clone(), attempts.clone());
        tokio::spawn(async move {
            let key = format!("w{i}");
            r.call(&Call::new(&key), |_| {
                attempts.hit();
                async { Err::<(), _>(TestError::transient()) }
            })
            .await
        })
    });
    let results: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    // Without a budget: 3 × 1000 attempts. With it: at most (1 + 0.2) × 1000 + 100.
    let bound = 1_300;
    let n = attempts.get();
    assert!(n <= bound, "{n} attempts exceed the bound {bound}");
    assert!(
        n >= bound - 1,
        "{n} attempts: the budget should be used up, not more"
    );
    let exhausted = results
        .iter()
        .filter(|r| matches!(r, Err(CallError::BudgetExhausted { .. })))
        .count();
    assert!(exhausted > 0);
    let snap = r.budget().snapshot();
    assert_eq!(snap.calls, u64::from(CALLS));
    assert_eq!(snap.retries, u64::from(n - CALLS));
    assert!(snap.exhausted);
    assert_eq!(snap.available, 0);
    assert_eq!(
        obs.events()
            .iter()
            .filter(|e| **e == ResilienceEvent::BudgetExhausted)
            .count(),
        1,
        "exhaustion is one event, not one per refusal"
    );
}

#[tokio::test(start_paused = true)]
async fn the_floor_should_allow_retries_without_traffic() {
    let (b, _) = budget(0.0, 2);
    // 2/s over a 10 s window.
    let allowed = (0..100).filter(|_| b.try_withdraw()).count();
    assert_eq!(allowed, 20);
}

#[tokio::test(start_paused = true)]
async fn deposits_should_earn_retries_at_the_ratio() {
    let (b, _) = budget(0.25, 0);
    assert!(!b.try_withdraw());
    for _ in 0..40 {
        b.deposit();
    }
    let allowed = (0..100).filter(|_| b.try_withdraw()).count();
    assert_eq!(allowed, 10);
}

#[tokio::test(start_paused = true)]
async fn the_budget_should_recover_once_the_window_has_passed() {
    let (b, obs) = budget(0.5, 0);
    for _ in 0..4 {
        b.deposit();
    }
    assert!(b.try_withdraw() && b.try_withdraw());
    assert!(!b.try_withdraw());
    assert!(!b.try_withdraw());
    assert_eq!(obs.events(), vec![ResilienceEvent::BudgetExhausted]);

    // The retries expire with the calls: after the window, new calls earn fresh retries.
    tokio::time::advance(secs(11)).await;
    assert_eq!(b.snapshot().calls, 0);
    assert_eq!(b.snapshot().retries, 0);
    b.deposit();
    b.deposit();
    assert_eq!(
        obs.events(),
        vec![
            ResilienceEvent::BudgetExhausted,
            ResilienceEvent::BudgetRecovered
        ]
    );
    assert!(b.try_withdraw());
    assert!(!b.snapshot().exhausted);
}

#[tokio::test(start_paused = true)]
async fn the_window_should_slide_slot_by_slot() {
    let (b, _) = budget(1.0, 0);
    for _ in 0..5 {
        b.deposit(); // t = 0
    }
    tokio::time::advance(secs(5)).await;
    for _ in 0..5 {
        b.deposit(); // t = 5
    }
    assert_eq!(b.snapshot().calls, 10);
    tokio::time::advance(secs(6)).await; // t = 11: the first five have left the window
    assert_eq!(b.snapshot().calls, 5);
    assert_eq!(b.snapshot().available, 5);
    tokio::time::advance(secs(5)).await; // t = 16
    assert_eq!(b.snapshot().calls, 0);
}

#[tokio::test(start_paused = true)]
async fn a_disabled_budget_should_allow_every_retry() {
    let b = RetryBudget::new(
        &BudgetConfig {
            enabled: false,
            ..BudgetConfig::default()
        },
        Arc::new(ccm_resilience::NoopObserver),
    );
    assert!((0..10_000).all(|_| b.try_withdraw()));
    assert!(!b.snapshot().exhausted);
}

#[test]
fn concurrent_withdrawals_should_never_overdraw_the_budget() {
    let (b, _) = budget(0.0, 50); // 500 retries in the window
    let allowed = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..1_000 {
                    if b.try_withdraw() {
                        allowed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    // The 8,000 tries take far less than the 10 s window, so exactly the reserve is handed
    // out, however the threads interleave.
    assert_eq!(allowed.into_inner(), 500);
}
