//! Behaviour specific to the simulator (timing, hooks, pool binding, faults). What every
//! provider must do is in the shared `testkit` suite.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use ccm_cloud::InstanceFilter;
use ccm_domain::{Ec2State, InstanceId, InstanceType, Region};
use parking_lot::Mutex;

use super::*;

fn region() -> Region {
    Region::parse("eu-west-1").unwrap()
}

fn config() -> Ec2SimConfig {
    Ec2SimConfig {
        pending_delay: Duration::from_secs(30),
        stopping_delay: Duration::from_secs(20),
        shutting_down_delay: Duration::from_secs(10),
        ip_pool: Ec2SimConfig::loopback_pool(Ipv4Addr::new(127, 1, 0, 1), 3),
        ..Ec2SimConfig::default()
    }
}

fn spec(cloud: &SimulatedCloud, name: &str) -> RunSpec {
    RunSpec::new(
        cloud.config().images[0].id.clone(),
        InstanceType::parse("m5.large").unwrap(),
        name,
    )
}

async fn state_of(cloud: &SimulatedCloud, id: &InstanceId) -> Ec2State {
    let found = cloud
        .describe_instances(&region(), &InstanceQuery::ids([id.clone()]))
        .await
        .unwrap();
    found[0].state
}

#[derive(Default)]
struct RecordingHook {
    events: Mutex<Vec<(String, InstanceId, Option<IpAddr>)>>,
}

impl PowerHook for RecordingHook {
    fn on_running(&self, instance: &Instance) {
        self.events
            .lock()
            .push(("running".into(), instance.id.clone(), instance.public_ip));
    }
    fn on_stopped(&self, instance: &Instance) {
        self.events
            .lock()
            .push(("stopped".into(), instance.id.clone(), instance.public_ip));
    }
}

#[tokio::test(start_paused = true)]
async fn pending_should_become_running_exactly_after_the_configured_delay() {
    let cloud = SimulatedCloud::new(config()).unwrap();
    let launched = cloud
        .run_instance(&region(), &spec(&cloud, "w1"))
        .await
        .unwrap();
    assert_eq!(launched.state, Ec2State::Pending);
    assert!(
        launched.id.as_str().len() == 19,
        "i- + 17 hex: {}",
        launched.id
    );
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert_eq!(state_of(&cloud, &launched.id).await, Ec2State::Pending);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(state_of(&cloud, &launched.id).await, Ec2State::Running);
}

#[tokio::test(start_paused = true)]
async fn stop_start_and_terminate_should_pass_through_their_transitional_states() {
    let cloud = SimulatedCloud::new(config()).unwrap();
    let id = cloud
        .run_instance(&region(), &spec(&cloud, "w"))
        .await
        .unwrap()
        .id;
    tokio::time::sleep(Duration::from_secs(30)).await;

    let changes = cloud
        .stop_instances(&region(), std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(
        (changes[0].previous, changes[0].current),
        (Ec2State::Running, Ec2State::Stopping)
    );
    tokio::time::sleep(Duration::from_secs(19)).await;
    assert_eq!(state_of(&cloud, &id).await, Ec2State::Stopping);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped = &cloud
        .describe_instances(&region(), &InstanceQuery::ids([id.clone()]))
        .await
        .unwrap()[0];
    assert_eq!(stopped.state, Ec2State::Stopped);
    assert_eq!(
        stopped.public_ip, None,
        "a stopped instance has no public IP"
    );
    assert!(
        stopped
            .state_reason
            .as_deref()
            .unwrap_or("")
            .contains("User initiated")
    );

    // Starting a stopping instance is refused; stopping a stopped one changes nothing.
    let again = cloud
        .stop_instances(&region(), std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(
        (again[0].previous, again[0].current),
        (Ec2State::Stopped, Ec2State::Stopped)
    );

    let started = cloud
        .start_instances(&region(), std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(started[0].current, Ec2State::Pending);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(state_of(&cloud, &id).await, Ec2State::Running);

    let gone = cloud
        .terminate_instances(&region(), std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(gone[0].current, Ec2State::ShuttingDown);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(state_of(&cloud, &id).await, Ec2State::Terminated);
    let err = cloud
        .start_instances(&region(), std::slice::from_ref(&id))
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::IncorrectState { .. }), "{err}");

    // After the retention, the instance is gone altogether.
    tokio::time::sleep(cloud.config().terminated_retention).await;
    let found = cloud
        .describe_instances(&region(), &InstanceQuery::ids([id.clone()]))
        .await
        .unwrap();
    assert!(found.is_empty());
    let err = cloud.stop_instances(&region(), &[id]).await.unwrap_err();
    assert!(matches!(err, CloudError::NotFound { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn stopping_a_pending_instance_should_be_an_incorrect_state() {
    let cloud = SimulatedCloud::new(config()).unwrap();
    let id = cloud
        .run_instance(&region(), &spec(&cloud, "w"))
        .await
        .unwrap()
        .id;
    let err = cloud.stop_instances(&region(), &[id]).await.unwrap_err();
    assert!(matches!(err, CloudError::IncorrectState { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn the_power_hook_should_hear_running_and_stopped_with_the_bound_address() {
    let hook = Arc::new(RecordingHook::default());
    let cloud = SimulatedCloud::with_power_hook(config(), hook.clone()).unwrap();
    let id = cloud
        .run_instance(&region(), &spec(&cloud, "w"))
        .await
        .unwrap()
        .id;
    // Nobody calls the cloud: the hook must still fire on time.
    tokio::time::sleep(Duration::from_secs(31)).await;
    let first = IpAddr::V4(Ipv4Addr::new(127, 1, 0, 1));
    assert_eq!(
        hook.events.lock().clone(),
        vec![("running".into(), id.clone(), Some(first))]
    );
    cloud
        .stop_instances(&region(), std::slice::from_ref(&id))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    cloud
        .start_instances(&region(), std::slice::from_ref(&id))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let events = hook.events.lock().clone();
    let kinds: Vec<&str> = events.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(kinds, ["running", "stopped", "running"]);
    assert!(
        events.iter().all(|(_, _, ip)| *ip == Some(first)),
        "bound for life: {events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn instance_n_should_get_pool_address_n_and_an_exhausted_pool_is_a_capacity_error() {
    let cloud = SimulatedCloud::new(config()).unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            cloud
                .run_instance(&region(), &spec(&cloud, &format!("w{n}")))
                .await
                .unwrap()
                .id,
        );
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    let found = cloud
        .describe_instances(&region(), &InstanceQuery::ids(ids.clone()))
        .await
        .unwrap();
    for (n, id) in ids.iter().enumerate() {
        let instance = found.iter().find(|i| &i.id == id).unwrap();
        assert_eq!(
            instance.public_ip,
            Some(IpAddr::V4(Ipv4Addr::new(127, 1, 0, 1 + n as u8)))
        );
    }
    let err = cloud
        .run_instance(&region(), &spec(&cloud, "w4"))
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::QuotaExceeded { .. }), "{err}");

    // Terminating frees the address for the next launch.
    cloud
        .terminate_instances(&region(), &ids[1..2])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let next = cloud
        .run_instance(&region(), &spec(&cloud, "w5"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let next = &cloud
        .describe_instances(&region(), &InstanceQuery::ids([next.id]))
        .await
        .unwrap()[0];
    assert_eq!(
        next.public_ip,
        Some(IpAddr::V4(Ipv4Addr::new(127, 1, 0, 2)))
    );
}

#[tokio::test(start_paused = true)]
async fn seeded_instances_should_be_running_tagged_and_reported_to_the_hook() {
    let hook = Arc::new(RecordingHook::default());
    let cloud = SimulatedCloud::with_power_hook(
        Ec2SimConfig {
            seed_instances: 2,
            ..config()
        },
        hook.clone(),
    )
    .unwrap();
    let found = cloud
        .describe_instances(
            &region(),
            &InstanceQuery::all().with(InstanceFilter::tag("ccm:cml", "true")),
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert!(
        found
            .iter()
            .all(|i| i.state == Ec2State::Running && i.public_ip.is_some())
    );
    assert_eq!(found[0].name(), Some("cml-worker-001"));
    assert!(found[0].launch_time.unwrap() < cloud.now() - chrono::Duration::hours(2));
    assert_eq!(hook.events.lock().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_should_give_the_same_instance_ids() {
    let a = SimulatedCloud::new(config()).unwrap();
    let b = SimulatedCloud::new(config()).unwrap();
    let ia = a.run_instance(&region(), &spec(&a, "w")).await.unwrap().id;
    let ib = b.run_instance(&region(), &spec(&b, "w")).await.unwrap().id;
    assert_eq!(ia, ib);
    let c = SimulatedCloud::new(Ec2SimConfig {
        seed: 2,
        ..config()
    })
    .unwrap();
    assert_ne!(
        c.run_instance(&region(), &spec(&c, "w")).await.unwrap().id,
        ia
    );
}

#[tokio::test(start_paused = true)]
async fn a_repeated_client_token_should_return_the_first_instance() {
    let cloud = SimulatedCloud::new(config()).unwrap();
    let spec = spec(&cloud, "w").with_client_token("worker-42");
    let first = cloud.run_instance(&region(), &spec).await.unwrap();
    let second = cloud.run_instance(&region(), &spec).await.unwrap();
    assert_eq!(first.id, second.id);
    let all = cloud
        .describe_instances(&region(), &InstanceQuery::all())
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    let changed = spec.with_tag("x", "y");
    let err = cloud.run_instance(&region(), &changed).await.unwrap_err();
    assert_eq!(err.code(), Some("IdempotentParameterMismatch"));
}

#[tokio::test(start_paused = true)]
async fn injected_throttling_should_fail_exactly_the_next_n_calls() {
    let cloud = SimulatedCloud::new(config()).unwrap();
    cloud.throttle_next(2);
    for _ in 0..2 {
        let err = cloud
            .describe_instances(&region(), &InstanceQuery::all())
            .await
            .unwrap_err();
        assert!(matches!(err, CloudError::Throttled { .. }), "{err}");
        assert!(err.is_transient());
    }
    cloud
        .describe_instances(&region(), &InstanceQuery::all())
        .await
        .unwrap();
    assert_eq!(cloud.calls("DescribeInstances"), 3);

    cloud.set_throttle_rate(1.0);
    assert!(
        cloud
            .describe_instances(&region(), &InstanceQuery::all())
            .await
            .is_err()
    );
    cloud.set_throttle_rate(0.0);
    cloud.fail_next_unavailable(1);
    let err = cloud
        .describe_instances(&region(), &InstanceQuery::all())
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::Unavailable { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn injected_latency_should_delay_every_call_on_tokio_time() {
    let cloud = SimulatedCloud::new(config()).unwrap();
    cloud.set_latency(Duration::from_millis(250));
    let started = tokio::time::Instant::now();
    cloud
        .describe_instances(&region(), &InstanceQuery::all())
        .await
        .unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn metrics_for_many_instances_should_take_one_call_per_250() {
    let cloud = SimulatedCloud::new(Ec2SimConfig {
        seed_instances: 3,
        ..config()
    })
    .unwrap();
    let ids: Vec<InstanceId> = cloud
        .describe_instances(&region(), &InstanceQuery::all())
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    let window = MetricsWindow::ending_at(
        cloud.now(),
        Duration::from_secs(600),
        Duration::from_secs(60),
    );
    let metrics = cloud
        .instance_metrics(&region(), &ids, &window)
        .await
        .unwrap();
    assert_eq!(cloud.calls("GetMetricData"), 1);
    assert_eq!(metrics.len(), 3);
    for m in metrics.values() {
        let cpu = m.cpu_percent.unwrap();
        assert!(cpu.at >= window.start() && cpu.at <= window.end);
        assert!(m.memory_used_percent.is_some());
    }
    let many: Vec<InstanceId> = (0..251)
        .map(|n| InstanceId::parse(&format!("i-{n:017x}")).unwrap())
        .collect();
    let metrics = cloud
        .instance_metrics(&region(), &many, &window)
        .await
        .unwrap();
    assert_eq!(cloud.calls("GetMetricData"), 3, "251 ids take two calls");
    assert!(metrics.values().all(|m| *m == InstanceMetrics::default()));
}

#[tokio::test(start_paused = true)]
async fn enabling_detailed_monitoring_should_show_in_describe() {
    let cloud = SimulatedCloud::new(config()).unwrap();
    let mut s = spec(&cloud, "w");
    s.detailed_monitoring = false;
    let id = cloud.run_instance(&region(), &s).await.unwrap().id;
    let before = &cloud
        .describe_instances(&region(), &InstanceQuery::ids([id.clone()]))
        .await
        .unwrap()[0];
    assert!(!before.detailed_monitoring);
    cloud
        .enable_detailed_monitoring(&region(), std::slice::from_ref(&id))
        .await
        .unwrap();
    let after = &cloud
        .describe_instances(&region(), &InstanceQuery::ids([id]))
        .await
        .unwrap()[0];
    assert!(after.detailed_monitoring);
}

#[tokio::test(start_paused = true)]
async fn a_region_that_is_not_configured_should_be_refused_and_instances_stay_in_their_region() {
    let other = Region::parse("us-east-1").unwrap();
    let cloud = SimulatedCloud::new(Ec2SimConfig {
        regions: vec![region(), other.clone()],
        ..config()
    })
    .unwrap();
    let id = cloud
        .run_instance(&region(), &spec(&cloud, "w"))
        .await
        .unwrap()
        .id;
    let err = cloud.stop_instances(&other, &[id]).await.unwrap_err();
    assert!(matches!(err, CloudError::NotFound { .. }));
    let nowhere = Region::parse("ap-south-2").unwrap();
    let err = cloud
        .describe_instances(&nowhere, &InstanceQuery::all())
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::InvalidParameter { .. }), "{err}");
}
