use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ccm_resilience::{
    Backoff, BreakerConfig, BreakerRegistry, BreakerState, Bulkhead, BulkheadConfig, Call,
    CallError, ErrorClass, NoopObserver, RefreshThrottle, Resilience, ThrottleError, Verdict,
};
use futures::future::join_all;
use parking_lot::Mutex;
use proptest::prelude::*;
use tokio::time::Instant;

use crate::support::{Counter, TestError, millis, retry_only, secs};

/// A current-thread runtime with paused time, one per proptest case.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn backoff_delays_should_stay_under_a_ceiling_that_grows_to_the_cap(
        base_ms in 1u64..10_000,
        cap_factor in 1u64..100,
        retry in 0u32..80,
        seed in any::<u64>(),
    ) {
        let (base, cap) = (millis(base_ms), millis(base_ms * cap_factor));
        let b = Backoff::new(base, cap).with_seed(seed);
        prop_assert_eq!(b.ceiling(0), base);
        prop_assert!(b.ceiling(retry) <= cap);
        prop_assert!(b.ceiling(retry) <= b.ceiling(retry + 1));
        if retry < 20 {
            prop_assert_eq!(b.ceiling(retry), (base * 2u32.pow(retry)).min(cap));
        }
        for _ in 0..20 {
            prop_assert!(b.delay(retry) <= b.ceiling(retry));
        }
    }
}

// === breaker: the registry against a reference model ===

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Success,
    Failure,
    Benign,
    /// Dropped without a verdict.
    Cancel,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Attempt(Outcome),
    /// Two attempts at once: the second is asked for while the first runs.
    Concurrent(Outcome),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        3 => Just(Outcome::Failure),
        2 => Just(Outcome::Success),
        1 => Just(Outcome::Benign),
        1 => Just(Outcome::Cancel),
    ];
    prop_oneof![
        5 => outcome.clone().prop_map(Op::Attempt),
        1 => outcome.prop_map(Op::Concurrent),
        2 => (0u64..90).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Model {
    Closed { failures: u32 },
    Open { since: Duration, failures: u32 },
    HalfOpen { failures: u32 },
}

impl Model {
    fn failures(self) -> u32 {
        match self {
            Self::Closed { failures }
            | Self::Open { failures, .. }
            | Self::HalfOpen { failures } => failures,
        }
    }

    fn state(self) -> BreakerState {
        match self {
            Self::Closed { .. } => BreakerState::Closed,
            Self::Open { .. } => BreakerState::Open,
            Self::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Acquire: `Err(retry_in)` or `Ok(is_probe)`.
    fn acquire(&mut self, now: Duration, open_for: Duration) -> Result<bool, Duration> {
        match *self {
            Self::Closed { .. } => Ok(false),
            Self::Open { since, failures } => {
                if now >= since + open_for {
                    *self = Self::HalfOpen { failures };
                    Ok(true)
                } else {
                    Err(since + open_for - now)
                }
            }
            Self::HalfOpen { .. } => Ok(true),
        }
    }

    fn record(&mut self, probe: bool, outcome: Outcome, now: Duration, threshold: u32) {
        let failures = self.failures();
        match (probe, outcome) {
            (_, Outcome::Cancel) => {}
            (true, Outcome::Success | Outcome::Benign) => *self = Self::Closed { failures: 0 },
            (true, Outcome::Failure) => {
                *self = Self::Open {
                    since: now,
                    failures: failures + 1,
                }
            }
            (false, Outcome::Success | Outcome::Benign) => {
                if let Self::Closed { .. } = self {
                    *self = Self::Closed { failures: 0 };
                }
            }
            (false, Outcome::Failure) => {
                if let Self::Closed { .. } = self {
                    *self = if failures + 1 >= threshold {
                        Self::Open {
                            since: now,
                            failures: failures + 1,
                        }
                    } else {
                        Self::Closed {
                            failures: failures + 1,
                        }
                    };
                }
            }
        }
    }
}

fn report(permit: ccm_resilience::BreakerPermit, outcome: Outcome) {
    match outcome {
        Outcome::Success => permit.success(),
        Outcome::Failure => permit.failure(|| "f".into()),
        Outcome::Benign => permit.record(Verdict::from(ErrorClass::Benign), String::new),
        Outcome::Cancel => drop(permit),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn breaker_should_follow_its_state_machine(
        threshold in 1u32..6,
        open_for_s in 1u64..60,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let open_for = secs(open_for_s);
        paused_runtime().block_on(async {
            let reg = BreakerRegistry::new(
                &BreakerConfig { enabled: true, failure_threshold: threshold, open_for },
                Arc::new(NoopObserver),
            );
            let start = Instant::now();
            let mut model = Model::Closed { failures: 0 };
            for op in ops {
                let now = start.elapsed();
                match op {
                    Op::Advance(s) => tokio::time::advance(secs(s)).await,
                    Op::Attempt(outcome) | Op::Concurrent(outcome) => {
                        let expected = model.acquire(now, open_for);
                        let got = reg.acquire("k");
                        match (&expected, got) {
                            (Err(retry_in), Err(open)) => prop_assert_eq!(open.retry_in, *retry_in),
                            (Ok(probe), Ok(permit)) => {
                                prop_assert_eq!(permit.is_probe(), *probe);
                                if let Op::Concurrent(_) = op {
                                    // While the first attempt runs, a second one is admitted
                                    // only if the first is not the probe.
                                    let second = reg.acquire("k");
                                    if *probe {
                                        prop_assert_eq!(second.unwrap_err().retry_in, Duration::ZERO);
                                    } else {
                                        prop_assert!(second.is_ok());
                                    }
                                }
                                report(permit, outcome);
                                model.record(*probe, outcome, now, threshold);
                            }
                            (expected, got) => prop_assert!(false, "model {:?}, registry {:?}", expected, got.map(|p| p.is_probe())),
                        }
                    }
                }
                let snap = reg.snapshot_of("k");
                let (state, failures) = snap.map_or((BreakerState::Closed, 0), |s| (s.state, s.consecutive_failures));
                prop_assert_eq!(state, model.state());
                prop_assert_eq!(failures, model.failures());
                prop_assert_eq!(reg.open_count(), usize::from(model.state() != BreakerState::Closed));
            }
            Ok(())
        })?;
    }
}

// === the call: deadline, attempts, backoff bounds, Retry-After ===

#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Ok(u64),
    Err(ErrorClass, Option<u64>, u64),
    Hang,
}

fn behaviour() -> impl Strategy<Value = Behaviour> {
    let class = prop_oneof![
        4 => Just(ErrorClass::Transient),
        1 => Just(ErrorClass::Failure),
        1 => Just(ErrorClass::Benign),
    ];
    prop_oneof![
        1 => (0u64..20_000).prop_map(Behaviour::Ok),
        4 => (class, proptest::option::weighted(0.3, 0u64..40_000), 0u64..20_000)
            .prop_map(|(c, ra, ms)| Behaviour::Err(c, ra, ms)),
        2 => Just(Behaviour::Hang),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_call_should_respect_its_deadline_attempt_limit_and_backoff_bounds(
        per_attempt_ms in 100u64..20_000,
        deadline_ms in 100u64..90_000,
        max_attempts in 1u32..6,
        base_ms in 1u64..2_000,
        cap_factor in 1u64..16,
        idempotent in any::<bool>(),
        script in proptest::collection::vec(behaviour(), 6),
        seed in any::<u64>(),
    ) {
        let mut cfg = retry_only();
        cfg.timeout.per_attempt = millis(per_attempt_ms);
        cfg.retry.max_attempts = max_attempts;
        cfg.retry.base = millis(base_ms);
        cfg.retry.cap = millis(base_ms * cap_factor);
        let per_attempt = millis(per_attempt_ms);
        let deadline = millis(deadline_ms);
        let backoff = Backoff::new(cfg.retry.base, cfg.retry.cap);
        paused_runtime().block_on(async {
            let r = Resilience::builder(&cfg).jitter_seed(seed).build();
            let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
            let t0 = Instant::now();
            let script2 = script.clone();
            let res = r
                .call(&Call::new("w").idempotent(idempotent).deadline(deadline), |attempt| {
                    starts.lock().push(Instant::now());
                    let b = script2[(attempt - 1) as usize];
                    async move {
                        match b {
                            Behaviour::Ok(ms) => {
                                tokio::time::sleep(millis(ms)).await;
                                Ok(attempt)
                            }
                            Behaviour::Err(class, ra, ms) => {
                                tokio::time::sleep(millis(ms)).await;
                                Err(TestError { class, retry_after: ra.map(millis) })
                            }
                            Behaviour::Hang => std::future::pending().await,
                        }
                    }
                })
                .await;
            let elapsed = t0.elapsed();
            let starts = starts.lock().clone();

            prop_assert!(elapsed <= deadline, "call took {:?}, deadline {:?}", elapsed, deadline);
            prop_assert!(starts.len() as u32 <= max_attempts);
            prop_assert!(!starts.is_empty());
            if !idempotent {
                prop_assert_eq!(starts.len(), 1);
            }
            // What each attempt amounted to: its own result if it came within the per-attempt
            // timeout (a tie goes to the operation), otherwise a timeout.
            let seen: Vec<Behaviour> = script
                .iter()
                .map(|b| match *b {
                    Behaviour::Ok(ms) | Behaviour::Err(_, _, ms) if millis(ms) > per_attempt => Behaviour::Hang,
                    b => b,
                })
                .collect();
            for (i, at) in starts.iter().enumerate().skip(1) {
                // A retry starts only if a full attempt still fits before the deadline.
                prop_assert!(*at - t0 + per_attempt <= deadline);
                // Only transient errors and timeouts are retried.
                let prev = seen[i - 1];
                prop_assert!(matches!(prev, Behaviour::Hang | Behaviour::Err(ErrorClass::Transient, _, _)));
                // The pause after the previous attempt is within the full-jitter bound, or
                // exactly the Retry-After when that is longer; never shorter than Retry-After.
                let prev_end = starts[i - 1] + match prev {
                    Behaviour::Err(_, _, ms) => millis(ms),
                    _ => per_attempt,
                };
                let pause = *at - prev_end;
                let ceiling = backoff.ceiling(i as u32 - 1);
                match prev {
                    Behaviour::Err(_, Some(ra), _) if millis(ra) >= ceiling => prop_assert_eq!(pause, millis(ra)),
                    Behaviour::Err(_, Some(ra), _) => prop_assert!(pause >= millis(ra) && pause <= ceiling),
                    _ => prop_assert!(pause <= ceiling),
                }
            }
            let last = seen[starts.len() - 1];
            match &res {
                Ok(attempt) => {
                    prop_assert!(matches!(last, Behaviour::Ok(_)));
                    prop_assert_eq!(*attempt as usize, starts.len());
                }
                Err(CallError::Inner(e)) => {
                    prop_assert!(matches!(last, Behaviour::Err(c, _, _) if c == e.class));
                }
                Err(CallError::Timeout { after }) => {
                    prop_assert_eq!(*after, per_attempt);
                    prop_assert!(matches!(last, Behaviour::Hang));
                }
                Err(CallError::DeadlineExceeded { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected {:?}", other),
            }
            Ok(())
        })?;
    }

    #[test]
    fn attempts_should_stay_within_the_budget_bound_when_every_call_fails(
        ratio_pct in 0u32..=100,
        min_per_second in 0u32..20,
        calls in 1u32..300,
        max_attempts in 1u32..5,
    ) {
        let mut cfg = retry_only();
        cfg.retry.max_attempts = max_attempts;
        cfg.retry.base = millis(1);
        cfg.retry.cap = millis(10);
        cfg.budget.enabled = true;
        cfg.budget.ratio = f64::from(ratio_pct) / 100.0;
        cfg.budget.min_per_second = min_per_second;
        let ratio = cfg.budget.ratio;
        paused_runtime().block_on(async {
            let r = Resilience::builder(&cfg).jitter_seed(u64::from(calls)).build();
            let attempts = Counter::default();
            let tasks = (0..calls).map(|_| {
                let (r, attempts) = (r.clone(), attempts.clone());
                tokio::spawn(async move {
                    r.call(&Call::new("k"), |_| {
                        attempts.hit();
                        async { Err::<(), _>(TestError::transient()) }
                    })
                    .await
                })
            });
            join_all(tasks).await;
            let n = f64::from(attempts.get());
            let floor = f64::from(min_per_second) * 10.0;
            let bound = (1.0 + ratio) * f64::from(calls) + floor;
            prop_assert!(n <= bound + 1e-6, "{} attempts > bound {}", n, bound);
            prop_assert!(n <= f64::from(max_attempts * calls));
            // The budget is used, not wasted: either every call made all its attempts or the
            // budget is spent to within one retry.
            prop_assert!(n >= f64::from(max_attempts * calls) || n > bound - 1.0 - 1e-6);
            Ok(())
        })?;
    }

    #[test]
    fn a_bulkhead_should_admit_queue_and_reject_exactly_by_its_limits(
        max_concurrent in 1usize..8,
        max_queue in 0usize..8,
        n in 0usize..30,
    ) {
        paused_runtime().block_on(async {
            let b = Bulkhead::new("p", &BulkheadConfig::new(max_concurrent, max_queue), Arc::new(NoopObserver));
            let running = Arc::new(AtomicUsize::new(0));
            let peak = Arc::new(AtomicUsize::new(0));
            let tasks = (0..n).map(|_| {
                let (b, running, peak) = (b.clone(), running.clone(), peak.clone());
                tokio::spawn(async move {
                    let slot = b.acquire().await?;
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(secs(1)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    drop(slot);
                    Ok::<_, ccm_resilience::BulkheadFull>(())
                })
            });
            let results: Vec<_> = join_all(tasks).await.into_iter().map(Result::unwrap).collect();
            let ok = results.iter().filter(|r| r.is_ok()).count();
            prop_assert_eq!(ok, n.min(max_concurrent + max_queue));
            prop_assert_eq!(peak.load(Ordering::SeqCst), n.min(max_concurrent));
            prop_assert_eq!((b.in_flight(), b.queued()), (0, 0));
            Ok(())
        })?;
    }

    #[test]
    fn the_throttle_should_allow_one_refresh_per_interval_per_key(
        interval_s in 1u64..30,
        steps in proptest::collection::vec((0u8..3, 0u64..20, any::<bool>()), 1..60),
    ) {
        paused_runtime().block_on(async {
            let t = RefreshThrottle::with_interval(secs(interval_s));
            let start = Instant::now();
            let mut held = std::collections::HashMap::new();
            let mut last_start: std::collections::HashMap<u8, Duration> = Default::default();
            for (key, advance, release) in steps {
                tokio::time::advance(secs(advance)).await;
                let now = start.elapsed();
                if release {
                    held.remove(&key);
                }
                let expected = if held.contains_key(&key) {
                    Err(ThrottleError::AlreadyRunning)
                } else if let Some(&s) = last_start.get(&key).filter(|&&s| now < s + secs(interval_s)) {
                    Err(ThrottleError::Throttled { retry_in: s + secs(interval_s) - now })
                } else {
                    Ok(())
                };
                match t.try_acquire(key) {
                    Ok(g) => {
                        prop_assert_eq!(expected, Ok(()));
                        last_start.insert(key, now);
                        held.insert(key, g);
                    }
                    Err(e) => prop_assert_eq!(expected, Err(e)),
                }
            }
            Ok(())
        })?;
    }
}
