//! The policy stack around the simulated provider (`ccm-testbed`), under paused time.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use ccm_cloud::{
    CloudError, CloudProvider, InstanceQuery, MetricsWindow, ResilientCloud, ResilientCloudConfig,
    RunSpec, Service,
};
use ccm_domain::{AmiId, InstanceType, Region};
use ccm_resilience::{BreakerState, NoopObserver, Resilience, ResilienceConfig};
use ccm_testbed::ec2::{Ec2SimConfig, SimulatedCloud};

fn west() -> Region {
    Region::parse("eu-west-1").unwrap()
}

fn east() -> Region {
    Region::parse("us-east-1").unwrap()
}

fn sim() -> SimulatedCloud {
    SimulatedCloud::new(Ec2SimConfig {
        regions: vec![west(), east()],
        ip_pool: Ec2SimConfig::loopback_pool(Ipv4Addr::new(127, 7, 0, 1), 16),
        ..Ec2SimConfig::default()
    })
    .unwrap()
}

fn wrap(sim: &SimulatedCloud, config: ResilientCloudConfig) -> ResilientCloud {
    ResilientCloud::new(
        Arc::new(sim.clone()),
        &ResilienceConfig::default(),
        &config,
        Arc::new(NoopObserver),
    )
}

fn spec(image: &str) -> RunSpec {
    RunSpec::new(
        AmiId::parse(image).unwrap(),
        InstanceType::parse("m5.large").unwrap(),
        "w",
    )
}

#[tokio::test(start_paused = true)]
async fn a_bad_ami_should_never_open_the_region_breaker() {
    let sim = sim();
    let cloud = wrap(&sim, ResilientCloudConfig::default());
    for _ in 0..12 {
        let err = cloud
            .run_instance(&west(), &spec("ami-0000000000000dead"))
            .await
            .unwrap_err();
        assert!(matches!(err, CloudError::InvalidParameter { .. }), "{err}");
    }
    assert_eq!(
        sim.calls("RunInstances"),
        12,
        "each attempted once, none refused"
    );
    let key = Service::Ec2.breaker_key(&west());
    assert_eq!(
        cloud.resilience().breakers().state(&key),
        BreakerState::Closed
    );
    cloud
        .describe_instances(&west(), &InstanceQuery::all())
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn repeated_unavailability_should_open_only_that_region_and_service_breaker() {
    let sim = sim();
    let cloud = wrap(&sim, ResilientCloudConfig::default());
    sim.fail_next_unavailable(5);
    for _ in 0..5 {
        let err = cloud
            .describe_instances(&west(), &InstanceQuery::all())
            .await
            .unwrap_err();
        assert!(matches!(err, CloudError::Unavailable { .. }), "{err}");
    }
    let before = sim.calls("DescribeInstances");
    let err = cloud
        .describe_instances(&west(), &InstanceQuery::all())
        .await
        .unwrap_err();
    match &err {
        CloudError::Unavailable { message, retry_in } => {
            assert!(message.contains("aws:eu-west-1:ec2"), "{message}");
            assert!(retry_in.is_some_and(|d| d > Duration::ZERO), "{retry_in:?}");
        }
        other => panic!("expected an open breaker, got {other:?}"),
    }
    assert!(err.to_string().contains("retry in"), "{err}");
    assert_eq!(
        sim.calls("DescribeInstances"),
        before,
        "an open breaker makes no call"
    );

    // The other region and the other service of the same region are unaffected.
    cloud
        .describe_instances(&east(), &InstanceQuery::all())
        .await
        .unwrap();
    let window =
        MetricsWindow::ending_at(sim.now(), Duration::from_secs(600), Duration::from_secs(60));
    cloud.instance_metrics(&west(), &[], &window).await.unwrap();

    // After the open period a probe goes through and closes it again.
    tokio::time::sleep(ResilienceConfig::default().breaker.open_for).await;
    cloud
        .describe_instances(&west(), &InstanceQuery::all())
        .await
        .unwrap();
    let key = Service::Ec2.breaker_key(&west());
    assert_eq!(
        cloud.resilience().breakers().state(&key),
        BreakerState::Closed
    );
}

#[tokio::test(start_paused = true)]
async fn policy_retries_should_stay_off_by_default() {
    let sim = sim();
    let cloud = wrap(&sim, ResilientCloudConfig::default());
    sim.throttle_next(1);
    let err = cloud
        .describe_instances(&west(), &InstanceQuery::all())
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::Throttled { .. }), "{err}");
    assert_eq!(
        sim.calls("DescribeInstances"),
        1,
        "the SDK retries, not the policy stack"
    );
}

#[tokio::test(start_paused = true)]
async fn policy_retries_should_ride_out_a_throttling_burst_when_switched_on() {
    let sim = sim();
    let cloud = wrap(
        &sim,
        ResilientCloudConfig {
            attempts: 3,
            ..ResilientCloudConfig::default()
        },
    );
    sim.throttle_next(2);
    cloud
        .describe_instances(&west(), &InstanceQuery::all())
        .await
        .unwrap();
    assert_eq!(sim.calls("DescribeInstances"), 3);
}

#[tokio::test(start_paused = true)]
async fn sustained_throttling_should_end_in_a_throttled_error_within_the_deadline() {
    let sim = sim();
    let deadline = Duration::from_secs(30);
    let cloud = wrap(
        &sim,
        ResilientCloudConfig {
            attempts: 3,
            deadline,
            attempt_timeout: None,
        },
    );
    sim.set_throttle_rate(1.0);
    let started = tokio::time::Instant::now();
    let err = cloud
        .describe_instances(&west(), &InstanceQuery::all())
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::Throttled { .. }), "{err}");
    assert!(
        started.elapsed() <= deadline,
        "took {:?}",
        started.elapsed()
    );
    assert!(sim.calls("DescribeInstances") <= 3);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_provider_should_end_at_the_deadline_as_unavailable() {
    let sim = sim();
    let deadline = Duration::from_secs(20);
    let cloud = wrap(
        &sim,
        ResilientCloudConfig {
            deadline,
            attempts: 1,
            attempt_timeout: None,
        },
    );
    sim.set_latency(Duration::from_secs(3600));
    let started = tokio::time::Instant::now();
    let err = cloud
        .describe_instances(&west(), &InstanceQuery::all())
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::Unavailable { .. }), "{err}");
    assert!(err.is_transient());
    assert_eq!(started.elapsed(), deadline);
}

#[tokio::test(start_paused = true)]
async fn a_launch_with_a_client_token_should_be_retried_without_launching_twice() {
    let sim = sim();
    let cloud = wrap(
        &sim,
        ResilientCloudConfig {
            attempts: 3,
            ..ResilientCloudConfig::default()
        },
    );
    let image = sim.config().images[0].id.to_string();
    sim.fail_next_unavailable(1);
    let launched = cloud.run_instance(&west(), &spec(&image)).await.unwrap();
    assert_eq!(sim.calls("RunInstances"), 2);
    let all = cloud
        .describe_instances(&west(), &InstanceQuery::all())
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, launched.id);
}

#[tokio::test(start_paused = true)]
async fn a_shared_policy_stack_should_keep_cloud_timing_and_show_cloud_breakers() {
    // The shared stack is set up for CML: 15 s attempts, 3 attempts.
    let shared = Resilience::new(&ResilienceConfig::default(), Arc::new(NoopObserver));
    let sim = sim();
    let deadline = Duration::from_secs(40);
    let cloud = ResilientCloud::sharing(
        Arc::new(sim.clone()),
        shared.clone(),
        &ResilientCloudConfig {
            deadline,
            attempts: 1,
            attempt_timeout: None,
        },
    );
    sim.throttle_next(1);
    let err = cloud
        .describe_instances(&west(), &InstanceQuery::all())
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::Throttled { .. }), "{err}");
    assert_eq!(
        sim.calls("DescribeInstances"),
        1,
        "no policy retry even though the shared stack retries"
    );

    sim.set_latency(Duration::from_secs(3600));
    let started = tokio::time::Instant::now();
    let err = cloud
        .describe_instances(&west(), &InstanceQuery::all())
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::Unavailable { .. }), "{err}");
    assert_eq!(
        started.elapsed(),
        deadline,
        "the cloud deadline, not the 15 s CML attempt timeout"
    );
    let key = Service::Ec2.breaker_key(&west());
    assert!(
        shared.breakers().snapshot_of(&key).is_some(),
        "the breaker lives in the shared registry"
    );
}
