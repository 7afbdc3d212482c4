//! `AwsCloud` against moto in server mode (a real AWS-compatible HTTP endpoint on loopback):
//! the shared provider suite, plus what only the AWS provider does (SDK retries, throttling
//! through a fault-injecting proxy, error mapping of moto's gaps, several regions).
//!
//! Needs `moto_server`: `CCM_MOTO_SERVER`, or `<repo>/.venv/bin/moto_server` (see
//! `ccm_cloud_aws::moto::INSTALL_HINT`). Without it every test here fails with the install lines.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
use ccm_cloud::testkit::{Harness, MetricSeeder};
use ccm_cloud::{
    CloudError, CloudProvider, ImageQuery, InstanceQuery, MetricKind, MetricsWindow, RunSpec,
};
use ccm_cloud_aws::{AwsCloud, AwsConfig, Secret};
use ccm_domain::{InstanceId, InstanceType, Region};
use support::{Fault, FaultProxy, Moto};
use url::Url;

const REGION: &str = "us-east-1";
const SECRET: &str = "moto-test-secret-key-0123456789";

fn region() -> Region {
    Region::parse(REGION).unwrap()
}

fn config(endpoint: &str) -> AwsConfig {
    AwsConfig {
        regions: vec![region()],
        endpoint_url: Some(Url::parse(endpoint).unwrap()),
        access_key_id: Some("AKIAMOTOTESTKEY00001".to_owned()),
        secret_access_key: Some(Secret::new(SECRET)),
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(10),
        operation_timeout: Duration::from_secs(30),
        ..AwsConfig::default()
    }
}

/// PutMetricData straight through the CloudWatch SDK (moto emits no EC2 metrics itself).
struct CloudWatchSeeder {
    client: aws_sdk_cloudwatch::Client,
}

impl CloudWatchSeeder {
    async fn new(endpoint: &str) -> Self {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_cloudwatch::config::Credentials::new(
                "AKIAMOTOTESTKEY00001",
                SECRET,
                None,
                None,
                "test",
            ))
            .load()
            .await;
        Self {
            client: aws_sdk_cloudwatch::Client::new(&shared),
        }
    }
}

#[async_trait]
impl MetricSeeder for CloudWatchSeeder {
    async fn put(&self, _region: &Region, id: &InstanceId, kind: MetricKind, value: f64) {
        let (namespace, name) = match kind {
            MetricKind::Cpu => ccm_cloud::CPU_METRIC,
            MetricKind::Memory => ccm_cloud::MEMORY_METRIC,
        };
        self.client
            .put_metric_data()
            .namespace(namespace)
            .metric_data(
                MetricDatum::builder()
                    .metric_name(name)
                    .dimensions(
                        Dimension::builder()
                            .name("InstanceId")
                            .value(id.as_str())
                            .build(),
                    )
                    .value(value)
                    .build(),
            )
            .send()
            .await
            .expect("PutMetricData on moto");
    }
}

async fn harness() -> Harness {
    let moto = support::moto().await;
    let cloud = AwsCloud::connect(&config(&moto.url))
        .await
        .expect("connect");
    Harness {
        provider: Arc::new(cloud),
        region: region(),
        image_pattern: "cml-controller-2.9*".to_owned(),
        instance_type: InstanceType::parse("m5.large").unwrap(),
        metrics: Arc::new(CloudWatchSeeder::new(&moto.url).await),
        now: Arc::new(chrono::Utc::now),
        state_timeout: Duration::from_secs(30),
        poll: Duration::from_millis(100),
        keep_alive: vec![Box::new(moto)],
    }
}

ccm_cloud::provider_suite!(
    #[tokio::test]
    harness = harness()
);

// === what only the AWS provider does ===

/// moto, a proxy in front of it, and an `AwsCloud` talking to the proxy.
async fn behind_proxy(tune: impl FnOnce(&mut AwsConfig)) -> (Moto, FaultProxy, AwsCloud) {
    let moto = support::moto().await;
    let proxy = FaultProxy::start(&moto.url).await;
    let mut config = config(&proxy.url);
    tune(&mut config);
    let cloud = AwsCloud::connect(&config).await.expect("connect");
    (moto, proxy, cloud)
}

/// Makes `n` quick successful calls, as a busy ccm would have made before a throttling
/// burst. Adaptive mode sizes its client-side rate limiter from the measured send rate: on a
/// client that has sent almost nothing, one throttle makes the next retry wait 8 to 18 s (the
/// limiter's floor is 0.5 tokens/s and a throttled retry costs 10 tokens), which the cold
/// test below shows.
async fn warm_up(cloud: &AwsCloud, n: usize) {
    for _ in 0..n {
        cloud
            .describe_instances(&region(), &InstanceQuery::all())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn adaptive_retry_should_ride_out_a_burst_of_request_limit_exceeded() {
    // The SDK's adaptive limiter paces retries by measured throughput, so on a loaded machine
    // the wait varies: give the operation room; what matters is the count and the success.
    let (_moto, proxy, cloud) = behind_proxy(|c| {
        c.max_attempts = 3;
        c.operation_timeout = Duration::from_secs(60);
    })
    .await;
    warm_up(&cloud, 40).await;
    proxy.reset_counts();
    proxy.fail_next(2, Fault::THROTTLE);
    let started = tokio::time::Instant::now();
    let found = cloud
        .describe_instances(&region(), &InstanceQuery::all())
        .await;
    let elapsed = started.elapsed();
    assert!(found.is_ok(), "{found:?}");
    assert_eq!(
        proxy.count("DescribeInstances"),
        3,
        "two throttled attempts, then success"
    );
    eprintln!("burst of 2 throttles ridden out in {elapsed:?} (warm client)");
}

#[tokio::test]
async fn adaptive_retry_should_ride_out_a_burst_even_on_a_cold_client() {
    let (_moto, proxy, cloud) = behind_proxy(|c| {
        c.max_attempts = 3;
        c.operation_timeout = Duration::from_secs(60);
    })
    .await;
    proxy.fail_next(1, Fault::THROTTLE);
    let started = tokio::time::Instant::now();
    let found = tokio::time::timeout(
        Duration::from_secs(70),
        cloud.describe_instances(&region(), &InstanceQuery::all()),
    )
    .await
    .expect("the operation timeout bounds the call");
    assert!(found.is_ok(), "{found:?}");
    assert_eq!(proxy.count("DescribeInstances"), 2);
    eprintln!(
        "one throttle on a cold client ridden out in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn sustained_throttling_should_end_in_a_throttled_error_within_the_deadline() {
    let (_moto, proxy, cloud) = behind_proxy(|c| {
        c.max_attempts = 3;
        c.operation_timeout = Duration::from_secs(60);
    })
    .await;
    warm_up(&cloud, 40).await;
    proxy.reset_counts();
    proxy.fail_always(Fault::THROTTLE);
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(70),
        cloud.describe_instances(&region(), &InstanceQuery::all()),
    )
    .await
    .expect("the call must end by itself, never hang");
    let elapsed = started.elapsed();
    let err = result.unwrap_err();
    assert!(matches!(err, CloudError::Throttled { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("RequestLimitExceeded"), "{err}");
    assert_eq!(
        proxy.count("DescribeInstances"),
        3,
        "exactly max_attempts attempts"
    );
    eprintln!("sustained throttling gave up after {elapsed:?}");
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}

#[tokio::test]
async fn the_operation_timeout_should_cut_retries_short_under_sustained_throttling() {
    let (_moto, proxy, cloud) = behind_proxy(|c| {
        c.max_attempts = 10;
        c.connect_timeout = Duration::from_millis(500);
        c.operation_timeout = Duration::from_millis(1500);
    })
    .await;
    proxy.fail_always(Fault::THROTTLE);
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        cloud.describe_instances(&region(), &InstanceQuery::all()),
    )
    .await
    .expect("the operation timeout must end the call");
    let elapsed = started.elapsed();
    let err = result.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert!(
        proxy.count("DescribeInstances") < 10,
        "the deadline came first"
    );
}

#[tokio::test]
async fn non_transient_aws_errors_should_map_and_not_be_retried() {
    let (_moto, proxy, cloud) = behind_proxy(|_| {}).await;
    let cases = [
        (
            Fault {
                status: 401,
                code: "AuthFailure",
            },
            "auth",
        ),
        (
            Fault {
                status: 400,
                code: "InstanceLimitExceeded",
            },
            "quota_exceeded",
        ),
        (
            Fault {
                status: 400,
                code: "InvalidSubnetID.NotFound",
            },
            "invalid_parameter",
        ),
    ];
    for (fault, kind) in cases {
        proxy.reset_counts();
        proxy.fail_next(1, fault.clone());
        let err = cloud
            .describe_instances(&region(), &InstanceQuery::all())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), kind, "{fault:?}: {err}");
        assert_eq!(
            proxy.count("DescribeInstances"),
            1,
            "{fault:?} must not be retried"
        );
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains(SECRET), "the secret leaked: {text}");
        }
    }
    // A server error is retried by the SDK and then reported as unavailable.
    proxy.reset_counts();
    proxy.fail_always(Fault {
        status: 500,
        code: "InternalError",
    });
    let err = cloud
        .describe_instances(&region(), &InstanceQuery::all())
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::Unavailable { .. }), "{err}");
    assert_eq!(proxy.count("DescribeInstances"), 3);
}

#[tokio::test]
async fn monitor_instances_on_moto_should_be_a_clear_unsupported_error() {
    let (_moto, _proxy, cloud) = behind_proxy(|c| c.max_attempts = 1).await;
    let image = cloud
        .find_images(
            &region(),
            &ImageQuery::Name {
                pattern: "cml-controller-2.9*".into(),
                owners: vec![],
            },
        )
        .await
        .unwrap()[0]
        .id
        .clone();
    let mut spec = RunSpec::new(image, InstanceType::parse("m5.large").unwrap(), "monitor");
    spec.detailed_monitoring = false;
    let id = cloud.run_instance(&region(), &spec).await.unwrap().id;
    let err = cloud
        .enable_detailed_monitoring(&region(), &[id])
        .await
        .unwrap_err();
    match &err {
        CloudError::Unsupported { operation, .. } => assert_eq!(operation, "MonitorInstances"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert!(
        !err.is_transient(),
        "an unimplemented operation is not worth retrying"
    );
    assert!(
        err.to_string().contains("not supported by this endpoint"),
        "{err}"
    );
}

#[tokio::test]
async fn metrics_of_many_instances_should_take_one_get_metric_data_call_per_250() {
    let (_moto, proxy, cloud) = behind_proxy(|_| {}).await;
    let ids: Vec<InstanceId> = (0..300)
        .map(|n| InstanceId::parse(&format!("i-{n:017x}")).unwrap())
        .collect();
    let window = MetricsWindow::ending_at(
        chrono::Utc::now(),
        Duration::from_secs(600),
        Duration::from_secs(60),
    );
    let metrics = cloud
        .instance_metrics(&region(), &ids[..250], &window)
        .await
        .unwrap();
    assert_eq!(metrics.len(), 250);
    assert_eq!(proxy.count("GetMetricData"), 1);
    let metrics = cloud
        .instance_metrics(&region(), &ids, &window)
        .await
        .unwrap();
    assert_eq!(metrics.len(), 300);
    assert_eq!(
        proxy.count("GetMetricData"),
        3,
        "300 instances take two more calls"
    );
}

#[tokio::test]
async fn each_region_should_see_only_its_own_instances() {
    let moto = support::moto().await;
    let west = Region::parse("eu-west-1").unwrap();
    let cloud = AwsCloud::connect(&AwsConfig {
        regions: vec![region(), west.clone()],
        ..config(&moto.url)
    })
    .await
    .unwrap();
    assert_eq!(cloud.regions(), vec![region(), west.clone()]);
    let image = cloud
        .find_images(
            &region(),
            &ImageQuery::Name {
                pattern: "cml-*".into(),
                owners: vec![],
            },
        )
        .await
        .unwrap()[0]
        .id
        .clone();
    let spec = RunSpec::new(image, InstanceType::parse("m5.large").unwrap(), "east");
    let id = cloud.run_instance(&region(), &spec).await.unwrap().id;
    let east = cloud
        .describe_instances(&region(), &InstanceQuery::ids([id.clone()]))
        .await
        .unwrap();
    assert_eq!(east.len(), 1);
    assert_eq!(east[0].region, region());
    let there = cloud
        .describe_instances(&west, &InstanceQuery::ids([id]))
        .await
        .unwrap();
    assert!(there.is_empty());
    let nowhere = Region::parse("ap-south-2").unwrap();
    let err = cloud
        .describe_instances(&nowhere, &InstanceQuery::all())
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::InvalidParameter { .. }), "{err}");
}

#[tokio::test]
async fn an_unreachable_endpoint_should_be_unavailable_quickly() {
    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cloud = AwsCloud::connect(&AwsConfig {
        max_attempts: 2,
        ..config(&format!("http://127.0.0.1:{port}"))
    })
    .await
    .unwrap();
    let started = tokio::time::Instant::now();
    let err = cloud
        .describe_instances(&region(), &InstanceQuery::all())
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::Unavailable { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn the_region_breaker_should_cut_off_a_failing_region_but_never_trip_on_bad_amis() {
    use ccm_cloud::{ResilientCloud, ResilientCloudConfig, Service};
    use ccm_resilience::{BreakerState, NoopObserver, ResilienceConfig};

    let (_moto, proxy, aws) = behind_proxy(|c| c.max_attempts = 1).await;
    let shared = ResilienceConfig::default();
    let cloud = ResilientCloud::new(
        Arc::new(aws),
        &shared,
        &ResilientCloudConfig::default(),
        Arc::new(NoopObserver),
    );
    let key = Service::Ec2.breaker_key(&region());
    let bad = RunSpec::new(
        ccm_domain::AmiId::parse("ami-0000000000000dead").unwrap(),
        InstanceType::parse("m5.large").unwrap(),
        "bad",
    );
    for _ in 0..(shared.breaker.failure_threshold + 2) {
        let err = cloud.run_instance(&region(), &bad).await.unwrap_err();
        assert!(matches!(err, CloudError::InvalidParameter { .. }), "{err}");
    }
    assert_eq!(
        cloud.resilience().breakers().state(&key),
        BreakerState::Closed
    );

    proxy.fail_always(Fault {
        status: 500,
        code: "InternalError",
    });
    for _ in 0..shared.breaker.failure_threshold {
        let err = cloud
            .describe_instances(&region(), &InstanceQuery::all())
            .await
            .unwrap_err();
        assert!(matches!(err, CloudError::Unavailable { .. }), "{err}");
    }
    assert_eq!(
        cloud.resilience().breakers().state(&key),
        BreakerState::Open
    );
    let sent = proxy.count("DescribeInstances");
    let err = cloud
        .describe_instances(&region(), &InstanceQuery::all())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("circuit breaker aws:us-east-1:ec2 is open"),
        "{err}"
    );
    assert_eq!(
        proxy.count("DescribeInstances"),
        sent,
        "nothing sent while open"
    );
    // CloudWatch in the same region has its own breaker.
    assert_eq!(
        cloud
            .resilience()
            .breakers()
            .state(&Service::CloudWatch.breaker_key(&region())),
        BreakerState::Closed
    );
}

#[tokio::test]
async fn an_instance_aws_describes_oddly_should_be_skipped_not_fail_the_describe() {
    let (_moto, proxy, cloud) = behind_proxy(|_| {}).await;
    let image = cloud
        .find_images(
            &region(),
            &ImageQuery::Name {
                pattern: "cml-*".into(),
                owners: vec![],
            },
        )
        .await
        .unwrap()[0]
        .id
        .clone();
    let spec = |name: &str| {
        RunSpec::new(
            image.clone(),
            InstanceType::parse("m5.large").unwrap(),
            name,
        )
        .with_tag("odd", "test")
    };
    let good = cloud
        .run_instance(&region(), &spec("good"))
        .await
        .unwrap()
        .id;
    let bad = cloud
        .run_instance(&region(), &spec("bad"))
        .await
        .unwrap()
        .id;
    proxy.rewrite(bad.as_str(), "i-NOT-AN-ID");
    let query = InstanceQuery::all().with(ccm_cloud::InstanceFilter::tag("odd", "test"));
    let page = cloud
        .describe_instances_page(&region(), &query, &ccm_cloud::PageRequest::default())
        .await
        .unwrap();
    assert_eq!(page.instances.len(), 1);
    assert_eq!(page.instances[0].id, good);
    assert_eq!(page.skipped.len(), 1);
    assert_eq!(page.skipped[0].raw_id, "i-NOT-AN-ID");
    assert!(
        page.skipped[0].reason.contains("instance id"),
        "{:?}",
        page.skipped[0]
    );
    let all = cloud.describe_instances(&region(), &query).await.unwrap();
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn a_regions_status_checks_should_come_in_one_call_per_page_with_stopped_instances() {
    let (_moto, proxy, cloud) = behind_proxy(|_| {}).await;
    let image = cloud
        .find_images(
            &region(),
            &ImageQuery::Name {
                pattern: "cml-controller-2.9*".into(),
                owners: vec!["self".into()],
            },
        )
        .await
        .unwrap()[0]
        .id
        .clone();
    let launch = |name: &str| {
        let spec = RunSpec::new(
            image.clone(),
            InstanceType::parse("m5.large").unwrap(),
            name,
        );
        let cloud = cloud.clone();
        async move { cloud.run_instance(&region(), &spec).await.unwrap().id }
    };
    let running = launch("status-running").await;
    let stopped = launch("status-stopped").await;
    cloud
        .stop_instances(&region(), std::slice::from_ref(&stopped))
        .await
        .unwrap();
    proxy.reset_counts();
    let statuses = cloud
        .describe_instance_status(&region(), &[])
        .await
        .unwrap();
    assert_eq!(
        proxy.count("DescribeInstanceStatus"),
        1,
        "one call for the page"
    );
    let of = |statuses: &[ccm_cloud::InstanceStatus], id: &InstanceId| {
        statuses
            .iter()
            .find(|s| &s.id == id)
            .unwrap_or_else(|| panic!("{id} not listed: {statuses:?}"))
            .clone()
    };
    let r = of(&statuses, &running);
    assert_eq!(
        (r.system_status, r.instance_status),
        (ccm_cloud::CheckStatus::Ok, ccm_cloud::CheckStatus::Ok)
    );
    assert!(!r.checks().impaired());
    let s = of(&statuses, &stopped);
    assert_eq!(
        s.state,
        ccm_domain::Ec2State::Stopped,
        "stopped ones are included"
    );
    assert_eq!(s.system_status, ccm_cloud::CheckStatus::NotApplicable);

    // moto never fails a check; the proxy makes it say so, as EC2 would.
    proxy.rewrite("<status>ok</status>", "<status>impaired</status>");
    let statuses = cloud
        .describe_instance_status(&region(), &[])
        .await
        .unwrap();
    let r = of(&statuses, &running);
    assert_eq!(r.system_status, ccm_cloud::CheckStatus::Impaired);
    assert_eq!(r.instance_status, ccm_cloud::CheckStatus::Impaired);
    assert!(r.checks().impaired());
}
