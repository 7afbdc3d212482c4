//! The policy stack's pure parts: error classification, policy failures, derived config.
//! The stack around a provider is tested in `tests/resilient.rs` (against the simulated cloud).

use super::*;

#[test]
fn errors_should_be_classified_so_that_only_the_region_s_health_counts() {
    let cases = [
        (
            CloudError::from_aws(Some("RequestLimitExceeded"), None, Some(503)),
            ErrorClass::Transient,
        ),
        (CloudError::unavailable("down"), ErrorClass::Transient),
        (
            CloudError::from_aws(Some("AuthFailure"), None, Some(401)),
            ErrorClass::Failure,
        ),
        (
            CloudError::from_aws(Some("Weird"), None, Some(400)),
            ErrorClass::Failure,
        ),
        (
            CloudError::from_aws(Some("InvalidAMIID.NotFound"), None, Some(400)),
            ErrorClass::Benign,
        ),
        (
            CloudError::from_aws(Some("InvalidInstanceID.NotFound"), None, Some(400)),
            ErrorClass::Benign,
        ),
        (
            CloudError::from_aws(Some("InstanceLimitExceeded"), None, Some(400)),
            ErrorClass::Benign,
        ),
        (
            CloudError::from_aws(Some("IncorrectInstanceState"), None, Some(400)),
            ErrorClass::Benign,
        ),
        (
            CloudError::Unsupported {
                operation: "MonitorInstances".into(),
                message: String::new(),
            },
            ErrorClass::Benign,
        ),
    ];
    for (err, class) in cases {
        assert_eq!(err.class(), class, "{err}");
        assert_eq!(err.class().is_retryable(), err.is_transient(), "{err}");
    }
}

#[test]
fn policy_failures_should_become_cloud_errors_that_say_what_happened() {
    let open = from_call_error(CallError::CircuitOpen {
        key: "aws:eu-west-1:ec2".into(),
        retry_in: Duration::from_secs(42),
    });
    assert!(
        matches!(open, CloudError::Unavailable { retry_in: Some(d), .. } if d == Duration::from_secs(42))
    );
    let full = from_call_error(CallError::BulkheadFull { name: "aws".into() });
    assert!(full.to_string().contains("bulkhead aws"), "{full}");
    let throttled = from_call_error(CallError::DeadlineExceeded {
        after: Duration::from_secs(30),
        last: Some(CloudError::from_aws(
            Some("RequestLimitExceeded"),
            Some("slow down"),
            Some(503),
        )),
    });
    assert!(
        matches!(throttled, CloudError::Throttled { .. }),
        "{throttled}"
    );
    assert!(throttled.to_string().contains("deadline"), "{throttled}");
    let budget = from_call_error(CallError::BudgetExhausted {
        last: CloudError::unavailable("x"),
    });
    assert!(matches!(budget, CloudError::Unavailable { .. }));
}

#[test]
fn the_derived_config_should_leave_retries_to_the_sdk_and_time_the_whole_call() {
    let shared = ResilienceConfig::default();
    let derived = ResilientCloudConfig::default().derive(&shared);
    assert!(!derived.retry.enabled);
    assert_eq!(derived.timeout.per_attempt, Duration::from_secs(100));
    assert_eq!(derived.timeout.deadline, Duration::from_secs(100));
    assert_eq!(derived.breaker, shared.breaker);
    assert_eq!(derived.bulkheads, shared.bulkheads);
    assert_eq!(derived.rate_limit, shared.rate_limit);
    let retrying = ResilientCloudConfig {
        attempts: 3,
        ..ResilientCloudConfig::default()
    }
    .derive(&shared);
    assert!(retrying.retry.enabled);
    assert_eq!(retrying.timeout.per_attempt, Duration::from_secs(25));
}
