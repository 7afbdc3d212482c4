use std::sync::Arc;
use std::time::Duration;

use ccm_resilience::bulkhead::{AWS, CML_POLL, LABS};
use ccm_resilience::{
    Call, CallError, ErrorClass, RecordingObserver, Resilience, ResilienceConfig, ResilienceEvent,
};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::support::{Counter, TestError, millis, retry_only, secs};

/// Records the instant of every attempt.
#[derive(Clone, Default)]
struct Starts(Arc<Mutex<Vec<Instant>>>);

impl Starts {
    fn mark(&self) {
        self.0.lock().push(Instant::now());
    }

    fn gaps(&self) -> Vec<Duration> {
        self.0.lock().windows(2).map(|w| w[1] - w[0]).collect()
    }

    fn len(&self) -> usize {
        self.0.lock().len()
    }
}

#[tokio::test(start_paused = true)]
async fn call_should_stop_retrying_at_max_attempts() {
    let r = Resilience::builder(&retry_only()).jitter_seed(1).build();
    let n = Counter::default();
    let res: Result<(), _> = r
        .call(&Call::new("w"), |attempt| {
            let hit = n.hit();
            assert_eq!(hit, attempt, "attempts are numbered from 1");
            async { Err(TestError::transient()) }
        })
        .await;
    assert_eq!(res, Err(CallError::Inner(TestError::transient())));
    assert_eq!(n.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_call_should_override_the_attempt_limit_and_the_attempt_timeout() {
    let r = Resilience::builder(&retry_only()).jitter_seed(1).build();
    let n = Counter::default();
    let res: Result<(), _> = r
        .call(&Call::new("w").max_attempts(1), |_| {
            n.hit();
            async { Err(TestError::transient()) }
        })
        .await;
    assert_eq!(res, Err(CallError::Inner(TestError::transient())));
    assert_eq!(n.get(), 1, "max_attempts(1) never retries");

    let t0 = Instant::now();
    let res: Result<(), CallError<TestError>> = r
        .call(
            &Call::new("w").max_attempts(1).attempt_timeout(secs(40)),
            |_| std::future::pending(),
        )
        .await;
    assert_eq!(res, Err(CallError::Timeout { after: secs(40) }));
    assert_eq!(
        t0.elapsed(),
        secs(40),
        "the override replaces the configured 15 s"
    );
}

#[tokio::test(start_paused = true)]
async fn call_should_return_the_first_success() {
    let r = Resilience::builder(&retry_only()).jitter_seed(1).build();
    let n = Counter::default();
    let res = r
        .call(&Call::new("w"), |attempt| {
            n.hit();
            async move {
                if attempt < 2 {
                    Err(TestError::transient())
                } else {
                    Ok(attempt)
                }
            }
        })
        .await;
    assert_eq!(res, Ok(2));
    assert_eq!(n.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_calls_should_never_be_retried() {
    let r = Resilience::new(&retry_only(), Arc::new(ccm_resilience::NoopObserver));
    let n = Counter::default();
    let res: Result<(), _> = r
        .call(&Call::new("w").non_idempotent(), |_| {
            n.hit();
            async { Err(TestError::transient()) }
        })
        .await;
    assert_eq!(res, Err(CallError::Inner(TestError::transient())));
    assert_eq!(n.get(), 1);

    // A timeout of a non-idempotent call is not retried either.
    let n = Counter::default();
    let res: Result<(), CallError<TestError>> = r
        .call(&Call::new("w").non_idempotent(), |_| {
            n.hit();
            std::future::pending()
        })
        .await;
    assert_eq!(res, Err(CallError::Timeout { after: secs(15) }));
    assert_eq!(n.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn failures_and_benign_errors_should_never_be_retried() {
    let r = Resilience::new(&retry_only(), Arc::new(ccm_resilience::NoopObserver));
    for err in [TestError::failure(), TestError::benign()] {
        let n = Counter::default();
        let res: Result<(), _> = r
            .call(&Call::new("w"), |_| {
                n.hit();
                let err = err.clone();
                async move { Err(err) }
            })
            .await;
        assert_eq!(res, Err(CallError::Inner(err)));
        assert_eq!(n.get(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn timeouts_should_be_retried_and_end_as_timeout() {
    let r = Resilience::builder(&retry_only()).jitter_seed(3).build();
    let starts = Starts::default();
    let t0 = Instant::now();
    let res: Result<(), CallError<TestError>> = r
        .call(&Call::new("w"), |_| {
            starts.mark();
            std::future::pending()
        })
        .await;
    assert_eq!(res, Err(CallError::Timeout { after: secs(15) }));
    assert_eq!(starts.len(), 3);
    // Each gap is the 15 s timeout plus a jittered backoff within its ceiling (1 s, then 2 s).
    let gaps = starts.gaps();
    assert!(gaps[0] >= secs(15) && gaps[0] <= secs(16), "{gaps:?}");
    assert!(gaps[1] >= secs(15) && gaps[1] <= secs(17), "{gaps:?}");
    assert!(t0.elapsed() <= secs(60));
}

#[tokio::test(start_paused = true)]
async fn retry_delays_should_stay_within_full_jitter_bounds() {
    let mut cfg = retry_only();
    cfg.retry.max_attempts = 5;
    cfg.retry.base = millis(100);
    cfg.retry.cap = millis(300);
    let mut seen_small = [false; 4];
    let mut seen_large = [false; 4];
    for seed in 0..200 {
        let r = Resilience::builder(&cfg).jitter_seed(seed).build();
        let starts = Starts::default();
        let _ = r
            .call(&Call::new("w"), |_| {
                starts.mark();
                async { Err::<(), _>(TestError::transient()) }
            })
            .await;
        let gaps = starts.gaps();
        assert_eq!(gaps.len(), 4);
        for (retry, gap) in gaps.iter().enumerate() {
            let ceiling = [millis(100), millis(200), millis(300), millis(300)][retry];
            assert!(
                *gap <= ceiling,
                "seed {seed} retry {retry}: {gap:?} > {ceiling:?}"
            );
            seen_small[retry] |= *gap < ceiling / 10;
            seen_large[retry] |= *gap > ceiling * 9 / 10;
        }
    }
    assert_eq!(
        seen_small, [true; 4],
        "delays should reach the bottom of the range"
    );
    assert_eq!(
        seen_large, [true; 4],
        "delays should reach the top of the range"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_should_be_honoured_and_never_shortened() {
    let mut cfg = retry_only();
    cfg.timeout.deadline = secs(120);
    let r = Resilience::builder(&cfg).jitter_seed(9).build();
    let starts = Starts::default();
    let res: Result<(), _> = r
        .call(&Call::new("w"), |_| {
            starts.mark();
            async { Err(TestError::retry_after(secs(30))) }
        })
        .await;
    assert_eq!(res, Err(CallError::Inner(TestError::retry_after(secs(30)))));
    // 30 s is above the 10 s cap and above any jitter: the wait is exactly Retry-After.
    assert_eq!(starts.gaps(), vec![secs(30), secs(30)]);

    // A short Retry-After does not shorten a longer jittered backoff.
    let mut cfg = retry_only();
    cfg.retry.base = secs(8);
    cfg.retry.cap = secs(8);
    let r = Resilience::builder(&cfg).jitter_seed(5).build();
    let starts = Starts::default();
    let _ = r
        .call(&Call::new("w"), |_| {
            starts.mark();
            async { Err::<(), _>(TestError::retry_after(millis(1))) }
        })
        .await;
    for gap in starts.gaps() {
        assert!(gap >= millis(1) && gap <= secs(8), "{gap:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_beyond_the_deadline_should_end_the_call_without_waiting() {
    let r = Resilience::new(&retry_only(), Arc::new(ccm_resilience::NoopObserver));
    let n = Counter::default();
    let t0 = Instant::now();
    let res: Result<(), _> = r
        .call(&Call::new("w"), |_| {
            n.hit();
            async { Err(TestError::retry_after(secs(50))) }
        })
        .await;
    // 50 s of Retry-After plus a 15 s attempt does not fit in 60 s.
    assert_eq!(
        res,
        Err(CallError::DeadlineExceeded {
            after: Duration::ZERO,
            last: Some(TestError::retry_after(secs(50)))
        })
    );
    assert_eq!(n.get(), 1);
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_retry_should_not_start_when_it_cannot_finish_before_the_deadline() {
    let mut cfg = retry_only();
    cfg.timeout.deadline = secs(20);
    let r = Resilience::builder(&cfg).jitter_seed(1).build();
    let n = Counter::default();
    let t0 = Instant::now();
    let res: Result<(), CallError<TestError>> = r
        .call(&Call::new("w"), |_| {
            n.hit();
            std::future::pending()
        })
        .await;
    // After a 15 s timeout, 5 s remain: less than a 15 s attempt.
    assert_eq!(
        res,
        Err(CallError::DeadlineExceeded {
            after: secs(15),
            last: None
        })
    );
    assert_eq!(n.get(), 1);
    assert_eq!(t0.elapsed(), secs(15));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_shorter_than_the_attempt_timeout_should_cut_the_attempt() {
    let mut cfg = retry_only();
    cfg.breaker.enabled = true;
    cfg.breaker.failure_threshold = 1;
    let r = Resilience::new(&cfg, Arc::new(ccm_resilience::NoopObserver));
    let t0 = Instant::now();
    let res: Result<(), CallError<TestError>> = r
        .call(&Call::new("w").deadline(secs(5)), |_| {
            std::future::pending()
        })
        .await;
    assert_eq!(
        res,
        Err(CallError::DeadlineExceeded {
            after: secs(5),
            last: None
        })
    );
    assert_eq!(t0.elapsed(), secs(5));
    // An attempt cut by the caller's deadline is no verdict on the endpoint.
    assert_eq!(
        r.breakers().snapshot_of("w").unwrap().consecutive_failures,
        0
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_deadline_should_apply_even_when_timeouts_are_off() {
    let r = Resilience::disabled();
    let t0 = Instant::now();
    let res: Result<(), CallError<TestError>> = r
        .call(&Call::new("w").deadline(secs(3)), |_| {
            std::future::pending()
        })
        .await;
    assert!(matches!(res, Err(CallError::DeadlineExceeded { .. })));
    assert_eq!(t0.elapsed(), secs(3));
}

#[tokio::test(start_paused = true)]
async fn the_disabled_stack_should_make_exactly_one_unbounded_attempt() {
    let r = Resilience::disabled();
    let n = Counter::default();
    let res: Result<(), _> = r
        .call(&Call::new("w").bulkhead(LABS).rate_limit("eu"), |_| {
            n.hit();
            async { Err(TestError::transient()) }
        })
        .await;
    assert_eq!(res, Err(CallError::Inner(TestError::transient())));
    assert_eq!(n.get(), 1);

    // No timeout: a slow attempt finishes.
    let res: Result<u8, CallError<TestError>> = r
        .call(&Call::new("w"), |_| async {
            tokio::time::sleep(secs(3600)).await;
            Ok(7)
        })
        .await;
    assert_eq!(res, Ok(7));
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_should_reject_without_calling_the_operation() {
    let mut cfg = ResilienceConfig::default();
    cfg.retry.enabled = false;
    let obs = RecordingObserver::new();
    let r = Resilience::new(&cfg, obs.clone());
    let n = Counter::default();
    for _ in 0..5 {
        let res: Result<(), _> = r
            .call(&Call::new("https://w1"), |_| {
                n.hit();
                async { Err(TestError::failure()) }
            })
            .await;
        assert!(matches!(res, Err(CallError::Inner(_))));
    }
    assert_eq!(n.get(), 5);
    for _ in 0..20 {
        let res: Result<(), CallError<TestError>> = r
            .call(&Call::new("https://w1"), |_| {
                n.hit();
                async { Ok(()) }
            })
            .await;
        let err = res.unwrap_err();
        assert!(err.is_rejection());
        assert_eq!(
            err,
            CallError::CircuitOpen {
                key: "https://w1".into(),
                retry_in: secs(60)
            }
        );
    }
    assert_eq!(n.get(), 5, "no call reaches the operation while open");
    // Another key is unaffected.
    let ok: Result<(), CallError<TestError>> =
        r.call(&Call::new("https://w2"), |_| async { Ok(()) }).await;
    assert_eq!(ok, Ok(()));
    assert_eq!(
        obs.events(),
        vec![ResilienceEvent::BreakerOpened {
            key: "https://w1".into(),
            consecutive_failures: 5,
            reason: "test failure".into()
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn a_breaker_opening_during_retries_should_end_the_call_with_its_last_error() {
    let mut cfg = retry_only();
    cfg.retry.max_attempts = 10;
    cfg.breaker.enabled = true;
    cfg.breaker.failure_threshold = 2;
    let r = Resilience::builder(&cfg).jitter_seed(1).build();
    let n = Counter::default();
    let res: Result<(), _> = r
        .call(&Call::new("w"), |_| {
            n.hit();
            async { Err(TestError::transient()) }
        })
        .await;
    assert_eq!(res, Err(CallError::Inner(TestError::transient())));
    assert_eq!(
        n.get(),
        2,
        "the third attempt is refused by the open breaker"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_should_reject_the_call_with_a_typed_error() {
    let mut cfg = ResilienceConfig::disabled();
    cfg.bulkheads.enabled = true;
    cfg.bulkheads.labs.max_concurrent = 1;
    cfg.bulkheads.labs.max_queue = 1;
    let obs = RecordingObserver::new();
    let r = Resilience::new(&cfg, obs.clone());
    let labs = r.bulkhead(LABS);
    let held = labs.acquire().await.unwrap();

    let queued = tokio::spawn({
        let r = r.clone();
        async move {
            r.call(&Call::new("w").bulkhead(LABS), |_| async {
                Ok::<_, TestError>(1)
            })
            .await
        }
    });
    while labs.queued() < 1 {
        tokio::task::yield_now().await;
    }
    let n = Counter::default();
    let res: Result<(), _> = r
        .call(&Call::new("w").bulkhead(LABS), |_| {
            n.hit();
            async { Ok::<_, TestError>(()) }
        })
        .await;
    let err = res.unwrap_err();
    assert!(err.is_rejection());
    assert_eq!(
        err,
        CallError::BulkheadFull {
            name: "labs".into()
        }
    );
    assert_eq!(n.get(), 0);
    assert_eq!(
        obs.events(),
        vec![ResilienceEvent::BulkheadRejected {
            name: "labs".into(),
            max_concurrent: 1,
            max_queue: 1
        }]
    );

    drop(held);
    assert_eq!(queued.await.unwrap(), Ok(1));
}

#[tokio::test(start_paused = true)]
async fn waiting_for_a_bulkhead_should_count_against_the_deadline() {
    let mut cfg = ResilienceConfig::default();
    cfg.bulkheads.aws.max_concurrent = 1;
    let r = Resilience::new(&cfg, Arc::new(ccm_resilience::NoopObserver));
    let _held = r.bulkhead(AWS).acquire().await.unwrap();
    let t0 = Instant::now();
    let res: Result<(), CallError<TestError>> = r
        .call(&Call::new("aws:eu-west-1:ec2").bulkhead(AWS), |_| async {
            Ok(())
        })
        .await;
    assert_eq!(
        res,
        Err(CallError::DeadlineExceeded {
            after: secs(60),
            last: None
        })
    );
    assert_eq!(t0.elapsed(), secs(60));
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_call_should_wait_for_its_token_before_each_attempt() {
    let mut cfg = retry_only();
    cfg.rate_limit.enabled = true;
    cfg.rate_limit.per_second = 2;
    cfg.rate_limit.burst = 1;
    cfg.retry.base = millis(1);
    cfg.retry.cap = millis(1);
    let r = Resilience::builder(&cfg).jitter_seed(2).build();
    let starts = Starts::default();
    let _ = r
        .call(
            &Call::new("aws:eu-west-1:ec2").rate_limit("eu-west-1"),
            |_| {
                starts.mark();
                async { Err::<(), _>(TestError::transient()) }
            },
        )
        .await;
    // One token per 500 ms: the retries wait for theirs even though backoff is ~1 ms.
    for gap in starts.gaps() {
        assert!(gap >= millis(500) && gap <= millis(501), "{gap:?}");
    }
    assert_eq!(starts.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_full_stack_should_pass_a_healthy_call_through_once() {
    let r = Resilience::new(
        &ResilienceConfig::default(),
        Arc::new(ccm_resilience::NoopObserver),
    );
    let n = Counter::default();
    let call = Call::new("https://w1")
        .bulkhead(ccm_resilience::bulkhead::CML_POLL)
        .rate_limit("eu-west-1");
    for i in 0..100u32 {
        let res = r
            .call(&call, |_| {
                n.hit();
                async move { Ok::<_, TestError>(i) }
            })
            .await;
        assert_eq!(res, Ok(i));
    }
    assert_eq!(n.get(), 100);
    assert_eq!(r.bulkhead(CML_POLL).in_flight(), 0);
    assert_eq!(r.budget().snapshot().calls, 100);
    assert_eq!(r.budget().snapshot().retries, 0);
    assert_eq!(
        r.breakers().state("https://w1"),
        ccm_resilience::BreakerState::Closed
    );
}

#[test]
fn call_error_should_display_lowercase_messages_and_expose_the_last_error() {
    use std::error::Error as _;
    let e: CallError<TestError> = CallError::CircuitOpen {
        key: "https://w1".into(),
        retry_in: secs(30),
    };
    assert_eq!(
        e.to_string(),
        "circuit breaker for https://w1 is open (next probe in 30s)"
    );
    let e: CallError<TestError> = CallError::BudgetExhausted {
        last: TestError::transient(),
    };
    assert_eq!(e.to_string(), "retry budget exhausted");
    assert_eq!(
        e.source().map(ToString::to_string),
        Some("test error (transient error)".to_owned())
    );
    assert_eq!(e.inner(), Some(&TestError::transient()));
    let mapped = e.map_inner(|t| t.class);
    assert_eq!(
        mapped,
        CallError::BudgetExhausted {
            last: ErrorClass::Transient
        }
    );
    let e: CallError<TestError> = CallError::Timeout { after: secs(15) };
    assert_eq!(e.to_string(), "attempt timed out after 15s");
    assert!(!e.is_rejection());
    assert_eq!(
        CallError::<TestError>::BulkheadFull { name: "aws".into() }.to_string(),
        "bulkhead aws is full"
    );
}
