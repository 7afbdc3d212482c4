//! Rough numbers for the simulated cloud at fleet size: seeding, a full describe (1000 per
//! page), describes of id batches, and metrics for every instance.
//!
//! `cargo run -p ccm-testbed --example ec2_sim_bench -- 10000`

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a measuring tool")]

use std::net::Ipv4Addr;
use std::time::Duration;

use ccm_cloud::{CloudProvider, InstanceQuery, MetricsWindow};
use ccm_domain::InstanceId;
use ccm_testbed::ec2::{Ec2SimConfig, SimulatedCloud};
use tokio::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let started = Instant::now();
    let cloud = SimulatedCloud::new(Ec2SimConfig {
        seed_instances: n,
        ip_pool: Ec2SimConfig::loopback_pool(Ipv4Addr::new(127, 1, 0, 1), n as u32),
        ..Ec2SimConfig::default()
    })
    .expect("config");
    println!("seed {n} instances: {:?}", started.elapsed());
    let region = cloud.regions()[0].clone();

    let started = Instant::now();
    let all = cloud
        .describe_instances(&region, &InstanceQuery::all())
        .await
        .unwrap();
    println!(
        "describe all ({} instances, {} calls): {:?}",
        all.len(),
        cloud.calls("DescribeInstances"),
        started.elapsed()
    );

    let ids: Vec<InstanceId> = all.iter().map(|i| i.id.clone()).collect();
    let started = Instant::now();
    let by_id = cloud
        .describe_instances(&region, &InstanceQuery::ids(ids.clone()))
        .await
        .unwrap();
    println!(
        "describe by ids ({} instances, {} calls total): {:?}",
        by_id.len(),
        cloud.calls("DescribeInstances"),
        started.elapsed()
    );

    let window = MetricsWindow::ending_at(
        cloud.now(),
        Duration::from_secs(600),
        Duration::from_secs(60),
    );
    let started = Instant::now();
    let metrics = cloud
        .instance_metrics(&region, &ids, &window)
        .await
        .unwrap();
    println!(
        "metrics of {} instances ({} GetMetricData calls): {:?}",
        metrics.len(),
        cloud.calls("GetMetricData"),
        started.elapsed()
    );
}
