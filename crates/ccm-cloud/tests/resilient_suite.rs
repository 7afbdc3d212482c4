//! The shared provider suite against the simulated cloud (`ccm-testbed`) wrapped in
//! `ResilientCloud`: the policy stack must not change what a provider does when nothing fails.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use ccm_cloud::testkit::{Harness, MetricSeeder};
use ccm_cloud::{MetricKind, ResilientCloud, ResilientCloudConfig};
use ccm_domain::{InstanceId, InstanceType, Region};
use ccm_resilience::{NoopObserver, ResilienceConfig};
use ccm_testbed::ec2::{Ec2SimConfig, SimulatedCloud};

/// Puts metrics straight into the simulated cloud.
struct Seeder(SimulatedCloud);

#[async_trait::async_trait]
impl MetricSeeder for Seeder {
    async fn put(&self, _region: &Region, id: &InstanceId, kind: MetricKind, value: f64) {
        self.0.put_metric(id, kind, value);
    }
}

async fn harness() -> Harness {
    let cloud = SimulatedCloud::new(Ec2SimConfig {
        ip_pool: Ec2SimConfig::loopback_pool(Ipv4Addr::new(127, 43, 0, 1), 64),
        ..Ec2SimConfig::default()
    })
    .expect("a valid simulated cloud");
    let resilient = ResilientCloud::new(
        Arc::new(cloud.clone()),
        &ResilienceConfig::default(),
        &ResilientCloudConfig::default(),
        Arc::new(NoopObserver),
    );
    let clock = cloud.clone();
    Harness {
        provider: Arc::new(resilient),
        region: Region::parse("eu-west-1").expect("region"),
        image_pattern: "cml-controller-2.9*".to_owned(),
        instance_type: InstanceType::parse("m5zn.metal").expect("type"),
        metrics: Arc::new(Seeder(cloud)),
        now: Arc::new(move || clock.now()),
        state_timeout: Duration::from_secs(300),
        poll: Duration::from_secs(1),
        keep_alive: Vec::new(),
    }
}

ccm_cloud::provider_suite!(
    #[tokio::test(start_paused = true)]
    harness = harness()
);
