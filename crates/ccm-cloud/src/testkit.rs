//! The behavioural suite every [`CloudProvider`] must pass. The simulated provider runs it in
//! `ccm-testbed`'s tests (under paused time, bare and wrapped in [`crate::ResilientCloud`] in
//! this crate's tests) and the AWS provider against moto in `ccm-cloud-aws`'s tests, so that
//! they cannot drift apart.
//!
//! A test binary provides a [`Harness`] and expands [`provider_suite!`](crate::provider_suite),
//! which writes one test per case:
//!
//! ```ignore
//! async fn harness() -> ccm_cloud::testkit::Harness { /* … */ }
//! ccm_cloud::provider_suite!(#[tokio::test(start_paused = true)] harness = harness());
//! ```
//!
//! Every case isolates itself with a unique `ccm:test` tag, so cases may share one provider.
//! Only behaviour both AWS (as moto emulates it) and the simulator show is asserted here;
//! provider-specific behaviour (timings, hooks, moto's gaps) is tested next to each provider.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ccm_domain::{AmiId, Ec2State, InstanceId, InstanceType, Region};
use chrono::{DateTime, Utc};

use crate::{
    CloudError, CloudProvider, ImageQuery, Instance, InstanceFilter, InstanceMetrics,
    InstanceQuery, MetricKind, MetricsWindow, PageRequest, RunSpec, Tags, glob_match,
};

/// Puts metric datapoints for an instance, observed now (CloudWatch PutMetricData, or the
/// simulated cloud's `put_metric`).
#[async_trait]
pub trait MetricSeeder: Send + Sync {
    /// Records `value` for `kind` of instance `id`.
    async fn put(&self, region: &Region, id: &InstanceId, kind: MetricKind, value: f64);
}

/// What the suite needs to know about the provider under test.
pub struct Harness {
    /// The provider under test.
    pub provider: Arc<dyn CloudProvider>,
    /// The region to work in.
    pub region: Region,
    /// A name pattern that finds at least one launchable image of the caller's own account
    /// (e.g. `cml-controller-2.9*`) **and** a newer public image of another account (a
    /// squatter: what a lookup without owners would pick).
    pub image_pattern: String,
    /// The instance type to launch.
    pub instance_type: InstanceType,
    /// Puts metrics, so that reading them can be checked with known values.
    pub metrics: Arc<dyn MetricSeeder>,
    /// The provider's notion of now (the simulator's clock moves with `tokio::time`).
    pub now: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
    /// Longest wait for a state change.
    pub state_timeout: Duration,
    /// Interval between two describes while waiting.
    pub poll: Duration,
    /// Anything that must live as long as the test (a moto server, a proxy).
    pub keep_alive: Vec<Box<dyn Any + Send + Sync>>,
}

/// Writes one `async fn` test per suite case. The attributes given first (e.g.
/// `#[tokio::test(start_paused = true)]`) go on every test; `harness` is an expression
/// evaluating to a future of [`Harness`].
#[macro_export]
macro_rules! provider_suite {
    ($(#[$attr:meta])* harness = $harness:expr) => {
        $crate::provider_suite!(@cases [$(#[$attr])*] ($harness);
            images_should_be_found_by_name_pattern_and_by_id,
            owner_filters_should_skip_another_accounts_public_image,
            a_launched_instance_should_carry_its_spec_and_tags,
            instances_should_go_through_the_ec2_state_machine,
            describe_should_page_through_more_than_one_page,
            describe_should_filter_by_ids_tags_and_state,
            tags_should_be_created_and_deleted,
            instance_status_should_follow_the_instance_state,
            metrics_should_be_read_for_many_instances_at_once,
            an_unknown_instance_should_be_not_found,
            an_unknown_image_should_be_an_invalid_parameter,
        );
    };
    (@cases $attrs:tt ($harness:expr); $($case:ident),* $(,)?) => {
        $( $crate::provider_suite!(@one $attrs ($harness) $case); )*
    };
    (@one [$($attr:tt)*] ($harness:expr) $case:ident) => {
        $($attr)*
        async fn $case() {
            let harness = $harness.await;
            $crate::testkit::$case(&harness).await;
        }
    };
}

// === helpers ===

/// The tag that isolates one case's instances from every other case's.
fn unique_tag() -> (String, String) {
    (
        "ccm:test".to_owned(),
        format!("{:016x}", rand::random::<u64>()),
    )
}

fn tag_filter(tag: &(String, String)) -> InstanceFilter {
    InstanceFilter::tag(tag.0.clone(), tag.1.clone())
}

/// The caller's own newest image matching the harness's pattern.
async fn image(h: &Harness) -> AmiId {
    let images = h
        .provider
        .find_images(
            &h.region,
            &ImageQuery::Name {
                pattern: h.image_pattern.clone(),
                owners: vec!["self".into()],
            },
        )
        .await
        .expect("find_images by the harness's pattern");
    images
        .first()
        .unwrap_or_else(|| panic!("no image matches {:?}", h.image_pattern))
        .id
        .clone()
}

fn spec(h: &Harness, image: &AmiId, name: &str, tag: &(String, String)) -> RunSpec {
    RunSpec::new(image.clone(), h.instance_type.clone(), name)
        .with_tag(tag.0.clone(), tag.1.clone())
}

async fn launch(h: &Harness, image: &AmiId, name: &str, tag: &(String, String)) -> Instance {
    h.provider
        .run_instance(&h.region, &spec(h, image, name, tag))
        .await
        .expect("run_instance")
}

async fn describe_one(h: &Harness, id: &InstanceId) -> Option<Instance> {
    let found = h
        .provider
        .describe_instances(&h.region, &InstanceQuery::ids([id.clone()]))
        .await
        .expect("describe_instances by id");
    assert!(found.len() <= 1, "one id, at most one instance: {found:?}");
    found.into_iter().next()
}

/// Polls until the instance is in `want`; panics after the harness's timeout.
async fn wait_for(h: &Harness, id: &InstanceId, want: Ec2State) -> Instance {
    let waited = tokio::time::timeout(h.state_timeout, async {
        loop {
            if let Some(instance) = describe_one(h, id).await
                && instance.state == want
            {
                return instance;
            }
            tokio::time::sleep(h.poll).await;
        }
    })
    .await;
    match waited {
        Ok(instance) => instance,
        Err(_) => panic!(
            "{id} did not become {want} within {:?}; it is {:?}",
            h.state_timeout,
            describe_one(h, id).await.map(|i| i.state)
        ),
    }
}

fn unknown_instance() -> InstanceId {
    InstanceId::parse("i-0000000000000dead").unwrap()
}

fn ids_of(instances: &[Instance]) -> BTreeSet<InstanceId> {
    instances.iter().map(|i| i.id.clone()).collect()
}

// === cases ===

pub async fn images_should_be_found_by_name_pattern_and_by_id(h: &Harness) {
    let query = ImageQuery::Name {
        pattern: h.image_pattern.clone(),
        owners: vec![],
    };
    let images = h.provider.find_images(&h.region, &query).await.unwrap();
    assert!(!images.is_empty(), "{:?} finds nothing", h.image_pattern);
    for image in &images {
        assert!(
            glob_match(&h.image_pattern, &image.name),
            "{} does not match",
            image.name
        );
    }
    let dates: Vec<_> = images.iter().map(|i| i.creation_date).collect();
    let mut sorted = dates.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(dates, sorted, "newest first");

    let first = images[0].clone();
    let by_id = h
        .provider
        .find_images(&h.region, &ImageQuery::Ids(vec![first.id.clone()]))
        .await
        .unwrap();
    assert_eq!(by_id.len(), 1);
    assert_eq!(by_id[0].id, first.id);
    assert_eq!(by_id[0].name, first.name);

    let none = ImageQuery::Name {
        pattern: "no-such-image-*".into(),
        owners: vec![],
    };
    assert!(
        h.provider
            .find_images(&h.region, &none)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn owner_filters_should_skip_another_accounts_public_image(h: &Harness) {
    let by_name = |owners: Vec<String>| ImageQuery::Name {
        pattern: h.image_pattern.clone(),
        owners,
    };
    let anyone = h
        .provider
        .find_images(&h.region, &by_name(vec![]))
        .await
        .unwrap();
    let own = h
        .provider
        .find_images(&h.region, &by_name(vec!["self".into()]))
        .await
        .unwrap();
    assert!(
        !own.is_empty(),
        "the harness offers an image of its own account"
    );
    let account = own[0].owner_id.clone().expect("an owner id");
    assert!(
        own.iter()
            .all(|i| i.owner_id.as_deref() == Some(account.as_str()))
    );
    // Without owners, the newest match is another account's public image: the squatter.
    let squatter = anyone[0].clone();
    assert_ne!(
        squatter.owner_id.as_deref(),
        Some(account.as_str()),
        "{anyone:?}"
    );
    assert_eq!(squatter.public, Some(true), "{squatter:?}");
    assert!(squatter.creation_date > own[0].creation_date);
    assert!(!own.iter().any(|i| i.id == squatter.id));
    let foreign = squatter.owner_id.clone().unwrap();
    // An account id works as an owner too.
    let theirs = h
        .provider
        .find_images(&h.region, &by_name(vec![foreign.clone()]))
        .await
        .unwrap();
    assert!(theirs.iter().any(|i| i.id == squatter.id));
    assert!(
        theirs
            .iter()
            .all(|i| i.owner_id.as_deref() == Some(foreign.as_str()))
    );
    let both = h
        .provider
        .find_images(&h.region, &by_name(vec!["self".into(), foreign]))
        .await
        .unwrap();
    assert_eq!(both.len(), own.len() + theirs.len());

    // By id: the owner filter leaves the squatter out instead of failing; without it, the
    // image is found with its owner (so that a refusal can name it).
    let owned = h
        .provider
        .find_images(
            &h.region,
            &ImageQuery::OwnedIds {
                ids: vec![squatter.id.clone(), own[0].id.clone()],
                owners: vec!["self".into()],
            },
        )
        .await
        .unwrap();
    assert_eq!(
        owned.iter().map(|i| &i.id).collect::<Vec<_>>(),
        [&own[0].id]
    );
    let missing = AmiId::parse("ami-0000000000000dead").unwrap();
    let none = h
        .provider
        .find_images(
            &h.region,
            &ImageQuery::OwnedIds {
                ids: vec![missing],
                owners: vec!["self".into()],
            },
        )
        .await
        .unwrap();
    assert!(none.is_empty(), "an unknown id is absent, not an error");
    let found = h
        .provider
        .find_images(&h.region, &ImageQuery::Ids(vec![squatter.id.clone()]))
        .await
        .unwrap();
    assert_eq!(found[0].owner_id, squatter.owner_id);
}

pub async fn a_launched_instance_should_carry_its_spec_and_tags(h: &Harness) {
    let tag = unique_tag();
    let image = image(h).await;
    let launched = launch(h, &image, "suite-launch", &tag).await;
    let hex = launched.id.as_str().strip_prefix("i-").unwrap();
    assert_eq!(hex.len(), 17, "AWS's long id format: {}", launched.id);
    assert!(matches!(
        launched.state,
        Ec2State::Pending | Ec2State::Running
    ));
    assert_eq!(launched.region, h.region);
    assert_eq!(launched.image_id, image);
    assert_eq!(launched.instance_type, h.instance_type);
    assert_eq!(launched.name(), Some("suite-launch"));
    assert_eq!(launched.tags.get(&tag.0), Some(&tag.1));
    let launch_time = launched.launch_time.expect("a launch time");
    let age = (h.now)() - launch_time;
    assert!(
        age.num_seconds().abs() < 600,
        "launch time {launch_time} is not now"
    );

    let described = describe_one(h, &launched.id).await.expect("described");
    assert_eq!(described.id, launched.id);
    assert_eq!(described.tags, launched.tags);
    assert!(
        described.detailed_monitoring,
        "RunSpec::new asks for detailed monitoring"
    );
    assert!(described.private_ip.is_some());
}

pub async fn instances_should_go_through_the_ec2_state_machine(h: &Harness) {
    let tag = unique_tag();
    let image = image(h).await;
    let id = launch(h, &image, "suite-states", &tag).await.id;
    let running = wait_for(h, &id, Ec2State::Running).await;
    assert!(
        running.public_ip.is_some(),
        "a running instance has a public IP"
    );

    let stop = h
        .provider
        .stop_instances(&h.region, std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(stop.len(), 1);
    assert_eq!(stop[0].id, id);
    assert_eq!(stop[0].previous, Ec2State::Running);
    assert!(matches!(
        stop[0].current,
        Ec2State::Stopping | Ec2State::Stopped
    ));
    let stopped = wait_for(h, &id, Ec2State::Stopped).await;
    assert_eq!(
        stopped.public_ip, None,
        "a stopped instance has no public IP"
    );

    // Stopping a stopped instance is not an error.
    let again = h
        .provider
        .stop_instances(&h.region, std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(again[0].previous, Ec2State::Stopped);

    let start = h
        .provider
        .start_instances(&h.region, std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(start[0].previous, Ec2State::Stopped);
    assert!(matches!(
        start[0].current,
        Ec2State::Pending | Ec2State::Running
    ));
    wait_for(h, &id, Ec2State::Running).await;

    let end = h
        .provider
        .terminate_instances(&h.region, std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(end[0].previous, Ec2State::Running);
    assert!(matches!(
        end[0].current,
        Ec2State::ShuttingDown | Ec2State::Terminated
    ));
    let terminated = wait_for(h, &id, Ec2State::Terminated).await;
    assert_eq!(terminated.public_ip, None);
}

pub async fn describe_should_page_through_more_than_one_page(h: &Harness) {
    let tag = unique_tag();
    let image = image(h).await;
    let mut launched = BTreeSet::new();
    for n in 0..7 {
        launched.insert(launch(h, &image, &format!("suite-page-{n}"), &tag).await.id);
    }
    let query = InstanceQuery::all().with(tag_filter(&tag));
    let first = h
        .provider
        .describe_instances_page(&h.region, &query, &PageRequest::first(5))
        .await
        .unwrap();
    assert_eq!(first.instances.len(), 5);
    let token = first.next_token.clone().expect("a second page");
    let second = h
        .provider
        .describe_instances_page(
            &h.region,
            &query,
            &PageRequest {
                token: Some(token),
                size: Some(5),
            },
        )
        .await
        .unwrap();
    assert_eq!(second.instances.len(), 2);
    assert_eq!(second.next_token, None);
    let mut seen = ids_of(&first.instances);
    seen.extend(ids_of(&second.instances));
    assert_eq!(
        seen, launched,
        "the pages together hold every instance once"
    );

    let all = h
        .provider
        .describe_instances(&h.region, &query)
        .await
        .unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!(ids_of(&all), launched);
}

pub async fn describe_should_filter_by_ids_tags_and_state(h: &Harness) {
    let tag = unique_tag();
    let image = image(h).await;
    let mut ids = Vec::new();
    for (n, role) in ["a", "a", "b"].iter().enumerate() {
        let spec = spec(h, &image, &format!("suite-filter-{n}"), &tag).with_tag("role", *role);
        ids.push(h.provider.run_instance(&h.region, &spec).await.unwrap().id);
    }
    let mine = || InstanceQuery::all().with(tag_filter(&tag));
    let role_a = h
        .provider
        .describe_instances(&h.region, &mine().with(InstanceFilter::tag("role", "a")))
        .await
        .unwrap();
    assert_eq!(ids_of(&role_a), ids[..2].iter().cloned().collect());
    let any_role = h
        .provider
        .describe_instances(
            &h.region,
            &mine().with(InstanceFilter::TagKey("role".into())),
        )
        .await
        .unwrap();
    assert_eq!(any_role.len(), 3);

    // Ids: unknown ones are absent, never an error.
    let by_ids = h
        .provider
        .describe_instances(
            &h.region,
            &InstanceQuery::ids([ids[2].clone(), unknown_instance()]),
        )
        .await
        .unwrap();
    assert_eq!(ids_of(&by_ids), [ids[2].clone()].into_iter().collect());

    for id in &ids {
        wait_for(h, id, Ec2State::Running).await;
    }
    h.provider
        .stop_instances(&h.region, &ids[..1])
        .await
        .unwrap();
    wait_for(h, &ids[0], Ec2State::Stopped).await;
    let running = h
        .provider
        .describe_instances(
            &h.region,
            &mine().with(InstanceFilter::State(vec![Ec2State::Running])),
        )
        .await
        .unwrap();
    assert_eq!(ids_of(&running), ids[1..].iter().cloned().collect());
    let stopped_or_pending = h
        .provider
        .describe_instances(
            &h.region,
            &mine().with(InstanceFilter::State(vec![
                Ec2State::Stopped,
                Ec2State::Pending,
            ])),
        )
        .await
        .unwrap();
    assert_eq!(
        ids_of(&stopped_or_pending),
        [ids[0].clone()].into_iter().collect()
    );
    let by_type = h
        .provider
        .describe_instances(
            &h.region,
            &mine().with(InstanceFilter::InstanceType(vec![h.instance_type.clone()])),
        )
        .await
        .unwrap();
    assert_eq!(by_type.len(), 3);
    let by_image = h
        .provider
        .describe_instances(
            &h.region,
            &mine().with(InstanceFilter::ImageId(vec![image.clone()])),
        )
        .await
        .unwrap();
    assert_eq!(by_image.len(), 3);
}

pub async fn tags_should_be_created_and_deleted(h: &Harness) {
    let tag = unique_tag();
    let image = image(h).await;
    let a = launch(h, &image, "suite-tags-a", &tag).await.id;
    let b = launch(h, &image, "suite-tags-b", &tag).await.id;
    let mut tags = Tags::new();
    tags.insert("owner".into(), "alice".into());
    tags.insert("team".into(), "net".into());
    h.provider
        .create_tags(&h.region, &[a.clone(), b.clone()], &tags)
        .await
        .unwrap();
    for id in [&a, &b] {
        let instance = describe_one(h, id).await.unwrap();
        assert_eq!(
            instance.tags.get("owner").map(String::as_str),
            Some("alice")
        );
        assert_eq!(instance.tags.get("team").map(String::as_str), Some("net"));
    }
    // Overwriting a value.
    let mut new_owner = Tags::new();
    new_owner.insert("owner".into(), "bob".into());
    h.provider
        .create_tags(&h.region, std::slice::from_ref(&a), &new_owner)
        .await
        .unwrap();
    let instance = describe_one(h, &a).await.unwrap();
    assert_eq!(instance.tags.get("owner").map(String::as_str), Some("bob"));

    h.provider
        .delete_tags(&h.region, std::slice::from_ref(&a), &["owner".into()])
        .await
        .unwrap();
    let instance = describe_one(h, &a).await.unwrap();
    assert!(!instance.tags.contains_key("owner"));
    assert_eq!(instance.tags.get("team").map(String::as_str), Some("net"));
    assert_eq!(instance.name(), Some("suite-tags-a"));
    // An empty key list deletes nothing (EC2 would read it as "all tags").
    h.provider
        .delete_tags(&h.region, std::slice::from_ref(&a), &[])
        .await
        .unwrap();
    assert_eq!(describe_one(h, &a).await.unwrap().tags, instance.tags);
    // The other instance kept its tags.
    let other = describe_one(h, &b).await.unwrap();
    assert_eq!(other.tags.get("owner").map(String::as_str), Some("alice"));
}

pub async fn instance_status_should_follow_the_instance_state(h: &Harness) {
    let tag = unique_tag();
    let image = image(h).await;
    let id = launch(h, &image, "suite-status", &tag).await.id;
    wait_for(h, &id, Ec2State::Running).await;
    let status = h
        .provider
        .describe_instance_status(&h.region, std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].id, id);
    assert_eq!(status[0].state, Ec2State::Running);

    h.provider
        .stop_instances(&h.region, std::slice::from_ref(&id))
        .await
        .unwrap();
    wait_for(h, &id, Ec2State::Stopped).await;
    let status = h
        .provider
        .describe_instance_status(&h.region, std::slice::from_ref(&id))
        .await
        .unwrap();
    assert_eq!(status.len(), 1, "stopped instances are included");
    assert_eq!(status[0].state, Ec2State::Stopped);

    let all = h
        .provider
        .describe_instance_status(&h.region, &[])
        .await
        .unwrap();
    assert!(
        all.iter().any(|s| s.id == id),
        "an empty id list means every instance"
    );

    let err = h
        .provider
        .describe_instance_status(&h.region, &[unknown_instance()])
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::NotFound { .. }), "{err}");
}

pub async fn metrics_should_be_read_for_many_instances_at_once(h: &Harness) {
    let tag = unique_tag();
    let image = image(h).await;
    let a = launch(h, &image, "suite-metrics-a", &tag).await.id;
    let b = launch(h, &image, "suite-metrics-b", &tag).await.id;
    wait_for(h, &a, Ec2State::Running).await;
    wait_for(h, &b, Ec2State::Running).await;
    h.metrics.put(&h.region, &a, MetricKind::Cpu, 12.5).await;
    h.metrics
        .put(&h.region, &a, MetricKind::Memory, 47.25)
        .await;
    h.metrics.put(&h.region, &b, MetricKind::Cpu, 80.0).await;

    let window = MetricsWindow::ending_at(
        (h.now)() + chrono::Duration::seconds(60),
        Duration::from_secs(900),
        Duration::from_secs(60),
    );
    let unknown = unknown_instance();
    let metrics = h
        .provider
        .instance_metrics(&h.region, &[a.clone(), b.clone(), unknown.clone()], &window)
        .await
        .unwrap();
    assert_eq!(metrics.len(), 3, "every asked id is in the result");

    let in_window = |at: DateTime<Utc>| at >= window.start() && at <= window.end;
    let ma = metrics[&a];
    let cpu = ma.cpu_percent.expect("cpu of a");
    assert!((cpu.value - 12.5).abs() < 1e-9, "{cpu:?}");
    assert!(in_window(cpu.at), "{cpu:?}");
    let mem = ma.memory_used_percent.expect("memory of a");
    assert!((mem.value - 47.25).abs() < 1e-9, "{mem:?}");

    let mb = metrics[&b];
    assert!((mb.cpu_percent.expect("cpu of b").value - 80.0).abs() < 1e-9);
    assert_eq!(mb.memory_used_percent, None, "no memory datapoint for b");
    assert_eq!(metrics[&unknown], InstanceMetrics::default());
}

pub async fn an_unknown_instance_should_be_not_found(h: &Harness) {
    let ids = [unknown_instance()];
    let region = &h.region;
    let errors = [
        h.provider.stop_instances(region, &ids).await.unwrap_err(),
        h.provider.start_instances(region, &ids).await.unwrap_err(),
        h.provider
            .terminate_instances(region, &ids)
            .await
            .unwrap_err(),
    ];
    for err in errors {
        assert!(matches!(err, CloudError::NotFound { .. }), "{err}");
        assert!(!err.is_transient());
        assert!(
            err.to_string().contains(ids[0].as_str()),
            "names the id: {err}"
        );
        assert!(
            err.to_string().contains("terminated"),
            "says what to do: {err}"
        );
    }
    let found = h
        .provider
        .describe_instances(region, &InstanceQuery::ids(ids.clone()))
        .await
        .unwrap();
    assert!(found.is_empty());
}

pub async fn an_unknown_image_should_be_an_invalid_parameter(h: &Harness) {
    let tag = unique_tag();
    let missing = AmiId::parse("ami-0000000000000dead").unwrap();
    let err = h
        .provider
        .run_instance(&h.region, &spec(h, &missing, "suite-bad-ami", &tag))
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::InvalidParameter { .. }), "{err}");
    assert!(!err.is_transient());
    assert!(
        err.code().is_some_and(|c| c.starts_with("InvalidAMIID")),
        "{err:?}"
    );
    assert!(err.to_string().contains("fix the request"), "{err}");
    // Nothing was launched.
    let mine = InstanceQuery::all().with(tag_filter(&tag));
    assert!(
        h.provider
            .describe_instances(&h.region, &mine)
            .await
            .unwrap()
            .is_empty()
    );

    let err = h
        .provider
        .find_images(&h.region, &ImageQuery::Ids(vec![missing]))
        .await
        .unwrap_err();
    assert!(matches!(err, CloudError::InvalidParameter { .. }), "{err}");
}
