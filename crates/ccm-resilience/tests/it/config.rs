use std::time::Duration;

use ccm_resilience::{ConfigError, ResilienceConfig};

use crate::support::secs;

#[test]
fn defaults_should_be_the_documented_ones() {
    let c = ResilienceConfig::default();
    assert!(c.timeout.enabled);
    assert_eq!(
        (c.timeout.per_attempt, c.timeout.deadline),
        (secs(15), secs(60))
    );
    assert_eq!(
        (c.retry.max_attempts, c.retry.base, c.retry.cap),
        (3, secs(1), secs(10))
    );
    assert_eq!(
        (c.budget.ratio, c.budget.min_per_second, c.budget.window),
        (0.2, 10, secs(10))
    );
    assert_eq!(
        (c.breaker.failure_threshold, c.breaker.open_for),
        (5, secs(60))
    );
    assert_eq!(
        (
            c.bulkheads.cml_poll.max_concurrent,
            c.bulkheads.cml_poll.max_queue
        ),
        (512, 10_000)
    );
    assert_eq!(
        (c.bulkheads.labs.max_concurrent, c.bulkheads.labs.max_queue),
        (32, 1_000)
    );
    assert_eq!(
        (c.bulkheads.aws.max_concurrent, c.bulkheads.aws.max_queue),
        (16, 1_000)
    );
    assert_eq!((c.rate_limit.per_second, c.rate_limit.burst), (20, 40));
    assert_eq!(c.refresh_throttle.min_interval, secs(10));
    assert!(
        c.retry.enabled
            && c.budget.enabled
            && c.breaker.enabled
            && c.bulkheads.enabled
            && c.rate_limit.enabled
            && c.refresh_throttle.enabled
    );
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn an_empty_section_should_give_the_defaults() {
    let c: ResilienceConfig = toml::from_str("").unwrap();
    assert_eq!(c, ResilienceConfig::default());
}

#[test]
fn humantime_durations_should_parse_and_round_trip() {
    let c: ResilienceConfig = toml::from_str(
        r#"
        [timeout]
        per_attempt = "2s 500ms"
        deadline = "10m"
        [retry]
        enabled = false
        base = "250ms"
        [bulkheads.labs]
        max_concurrent = 8
        "#,
    )
    .unwrap();
    assert_eq!(c.timeout.per_attempt, Duration::from_millis(2500));
    assert_eq!(c.timeout.deadline, secs(600));
    assert!(!c.retry.enabled);
    assert_eq!(c.retry.base, Duration::from_millis(250));
    assert_eq!(c.retry.cap, secs(10), "unset keys keep their defaults");
    assert_eq!(c.bulkheads.labs.max_concurrent, 8);
    assert_eq!(c.bulkheads.labs.max_queue, 1_000);

    let text = toml::to_string(&c).unwrap();
    assert!(text.contains("deadline = \"10m\""), "{text}");
    let back: ResilienceConfig = toml::from_str(&text).unwrap();
    assert_eq!(back, c);
}

#[test]
fn unknown_keys_should_be_rejected() {
    for text in [
        "[retry]\nmax_attempt = 3",
        "[breaker]\nthreshold = 5",
        "[bulkheads.aws]\nqueue = 3",
        "surprise = true",
    ] {
        let err = toml::from_str::<ResilienceConfig>(text).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{text}: {err}");
    }
}

#[test]
fn bad_durations_should_be_rejected() {
    let err = toml::from_str::<ResilienceConfig>("[timeout]\ndeadline = \"soon\"").unwrap_err();
    assert!(err.to_string().contains("deadline"), "{err}");
}

#[test]
fn validate_should_name_the_offending_key() {
    type Spoil = Box<dyn Fn(&mut ResilienceConfig)>;
    let cases: Vec<(&str, Spoil)> = vec![
        (
            "resilience.timeout.per_attempt",
            Box::new(|c| c.timeout.per_attempt = Duration::ZERO),
        ),
        (
            "resilience.timeout.deadline",
            Box::new(|c| c.timeout.deadline = secs(1)),
        ),
        (
            "resilience.retry.max_attempts",
            Box::new(|c| c.retry.max_attempts = 0),
        ),
        (
            "resilience.retry.base",
            Box::new(|c| c.retry.base = Duration::ZERO),
        ),
        (
            "resilience.retry.cap",
            Box::new(|c| c.retry.cap = Duration::from_millis(10)),
        ),
        (
            "resilience.budget.ratio",
            Box::new(|c| c.budget.ratio = -0.1),
        ),
        (
            "resilience.budget.ratio",
            Box::new(|c| c.budget.ratio = f64::NAN),
        ),
        (
            "resilience.budget.window",
            Box::new(|c| c.budget.window = Duration::from_millis(10)),
        ),
        (
            "resilience.breaker.failure_threshold",
            Box::new(|c| c.breaker.failure_threshold = 0),
        ),
        (
            "resilience.breaker.open_for",
            Box::new(|c| c.breaker.open_for = Duration::ZERO),
        ),
        (
            "resilience.bulkheads.labs.max_concurrent",
            Box::new(|c| c.bulkheads.labs.max_concurrent = 0),
        ),
        (
            "resilience.rate_limit.per_second",
            Box::new(|c| c.rate_limit.per_second = 0),
        ),
        (
            "resilience.rate_limit.burst",
            Box::new(|c| c.rate_limit.burst = 0),
        ),
    ];
    for (key, spoil) in cases {
        let mut c = ResilienceConfig::default();
        spoil(&mut c);
        match c.validate() {
            Err(ConfigError::Invalid { key: got, reason }) => {
                assert_eq!(got, key);
                let msg = c.validate().unwrap_err().to_string();
                assert!(msg.starts_with("invalid value for resilience."), "{msg}");
                assert!(msg.contains(reason));
            }
            Ok(()) => panic!("{key}: spoiled config passed validation"),
        }
    }
}

#[test]
fn disabled_config_should_switch_every_policy_off_and_still_validate() {
    let c = ResilienceConfig::disabled();
    assert!(
        !(c.timeout.enabled
            || c.retry.enabled
            || c.budget.enabled
            || c.breaker.enabled
            || c.bulkheads.enabled
            || c.rate_limit.enabled
            || c.refresh_throttle.enabled)
    );
    assert_eq!(c.validate(), Ok(()));
}
