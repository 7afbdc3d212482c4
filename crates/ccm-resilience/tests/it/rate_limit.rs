use std::time::Duration;

use ccm_resilience::{RateLimitConfig, RateLimited, RateLimiters};
use tokio::time::Instant;

use crate::support::{millis, secs};

fn limiters(per_second: u32, burst: u32) -> RateLimiters {
    RateLimiters::new(&RateLimitConfig {
        enabled: true,
        per_second,
        burst,
    })
}

#[tokio::test(start_paused = true)]
async fn a_burst_should_pass_then_tokens_should_come_at_the_rate() {
    let l = limiters(10, 5);
    for _ in 0..5 {
        assert_eq!(l.check("eu-west-1"), Ok(()));
    }
    assert_eq!(l.check("eu-west-1"), Err(millis(100)));
    // Another key has its own bucket.
    assert_eq!(l.check("us-east-1"), Ok(()));
    tokio::time::advance(millis(100)).await;
    assert_eq!(l.check("eu-west-1"), Ok(()));
    assert!(l.check("eu-west-1").is_err());
}

#[tokio::test(start_paused = true)]
async fn waiting_callers_should_be_spaced_at_the_rate() {
    let l = limiters(20, 1);
    let t0 = Instant::now();
    let mut at = Vec::new();
    for _ in 0..21 {
        l.until_ready("eu-west-1").await;
        at.push(t0.elapsed());
    }
    // One token at once, then one per 50 ms: 20 more take exactly one second.
    assert_eq!(at[0], Duration::ZERO);
    assert_eq!(at[20], secs(1));
    for w in at.windows(2) {
        assert_eq!(w[1] - w[0], millis(50));
    }
}

#[tokio::test(start_paused = true)]
async fn a_token_beyond_the_deadline_should_fail_without_waiting() {
    let l = limiters(1, 1);
    l.until_ready("k").await;
    let t0 = Instant::now();
    let res = l
        .until_ready_by("k", Some(Instant::now() + millis(500)))
        .await;
    assert_eq!(res, Err(RateLimited { wait: secs(1) }));
    assert_eq!(t0.elapsed(), Duration::ZERO);
    let res = l.until_ready_by("k", Some(Instant::now() + secs(2))).await;
    assert_eq!(res, Ok(secs(1)));
}

#[tokio::test(start_paused = true)]
async fn disabled_limiters_should_never_wait() {
    let l = RateLimiters::new(&RateLimitConfig {
        enabled: false,
        per_second: 1,
        burst: 1,
    });
    for _ in 0..1_000 {
        assert_eq!(l.check("k"), Ok(()));
    }
}
