use std::time::Duration;

use ccm_resilience::{Backoff, RetryConfig};

use crate::support::secs;

#[test]
fn ceiling_should_double_per_retry_until_the_cap() {
    let b = Backoff::from_config(&RetryConfig::default());
    let ceilings: Vec<_> = (0..6).map(|r| b.ceiling(r)).collect();
    assert_eq!(
        ceilings,
        vec![secs(1), secs(2), secs(4), secs(8), secs(10), secs(10)]
    );
    assert_eq!(b.ceiling(31), secs(10));
    assert_eq!(b.ceiling(u32::MAX), secs(10));
}

#[test]
fn full_jitter_delays_should_stay_within_bounds_and_spread_over_them() {
    const SAMPLES: usize = 20_000;
    const BUCKETS: usize = 10;
    let b = Backoff::new(secs(1), secs(10)).with_seed(7);
    for retry in 0..6 {
        let ceiling = b.ceiling(retry);
        let mut buckets = [0usize; BUCKETS];
        let mut sum = 0.0;
        let (mut min, mut max) = (Duration::MAX, Duration::ZERO);
        for _ in 0..SAMPLES {
            let d = b.delay(retry);
            assert!(
                d <= ceiling,
                "retry {retry}: {d:?} above ceiling {ceiling:?}"
            );
            let frac = d.as_secs_f64() / ceiling.as_secs_f64();
            buckets[((frac * BUCKETS as f64) as usize).min(BUCKETS - 1)] += 1;
            sum += frac;
            min = min.min(d);
            max = max.max(d);
        }
        // Uniform: each tenth of [0, ceiling] gets 10 % of the samples (σ ≈ 0.2 % here; allow
        // ±1.5 %, more than 7σ), the mean is half the ceiling, and both ends are reached.
        for (i, &n) in buckets.iter().enumerate() {
            let share = n as f64 / SAMPLES as f64;
            assert!(
                (0.085..=0.115).contains(&share),
                "retry {retry}: bucket {i} holds {share:.3} of the delays"
            );
        }
        let mean = sum / SAMPLES as f64;
        assert!(
            (0.48..=0.52).contains(&mean),
            "retry {retry}: mean {mean:.3}"
        );
        assert!(min < ceiling / 100, "retry {retry}: smallest delay {min:?}");
        assert!(
            max > ceiling * 99 / 100,
            "retry {retry}: largest delay {max:?}"
        );
    }
}

#[test]
fn seeded_backoff_should_repeat_its_delays() {
    let draw = |seed| {
        let b = Backoff::default().with_seed(seed);
        (0..20).map(|r| b.delay(r % 5)).collect::<Vec<_>>()
    };
    assert_eq!(draw(42), draw(42));
    assert_ne!(draw(42), draw(43));
}

#[test]
fn thread_rng_backoff_should_stay_within_bounds() {
    let b = Backoff::new(Duration::from_millis(3), Duration::from_millis(50));
    for retry in 0..10 {
        for _ in 0..200 {
            assert!(b.delay(retry) <= b.ceiling(retry));
        }
    }
}

#[test]
fn cap_below_base_should_be_raised_to_base() {
    let b = Backoff::new(secs(5), secs(1));
    assert_eq!(b.cap(), secs(5));
    assert_eq!(b.ceiling(3), secs(5));
}
