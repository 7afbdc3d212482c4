use std::net::Ipv4Addr;

use chrono::TimeZone;

use super::*;
use crate::service::ReasonCode;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

fn policy() -> EndpointPolicy {
    EndpointPolicy {
        scheme: "http".into(),
        port: Some(9443),
        address: AddressPreference::Public,
        tag: DEFAULT_ENDPOINT_TAG.into(),
    }
}

fn obs(state: Ec2State, ip: Option<[u8; 4]>) -> InstanceObservation {
    InstanceObservation {
        instance_id: InstanceId::parse("i-0123456789abcdef0").unwrap(),
        state,
        instance_type: Some(InstanceType::parse("m5zn.metal").unwrap()),
        ami_id: Some(AmiId::parse("ami-0123456789abcdef0").unwrap()),
        public_ip: ip.map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        private_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5))),
        tags: BTreeMap::from([("Name".to_owned(), "cml-7".to_owned())]),
        launched_at: Some(t(0)),
        detailed_monitoring: false,
        state_reason: None,
    }
}

fn running_worker() -> Worker {
    let region = Region::parse("eu-west-1").unwrap();
    let (w, _) = Worker::import(
        &obs(Ec2State::Running, Some([127, 1, 0, 7])),
        region,
        &policy(),
        Actor::user("alice"),
        t(0),
    );
    w
}

fn alice() -> Actor {
    Actor::user("alice")
}

fn types(events: &[EventKind]) -> Vec<&'static str> {
    events.iter().map(EventKind::type_name).collect()
}

#[test]
fn import_should_name_the_worker_from_its_tag_and_derive_the_endpoint() {
    let w = running_worker();
    assert_eq!(w.name, "cml-7");
    assert_eq!(w.ec2_state, Ec2State::Running);
    assert_eq!(w.endpoint.as_deref(), Some("http://127.1.0.7:9443"));
    assert_eq!(
        w.instance_type.as_ref().map(InstanceType::as_str),
        Some("m5zn.metal")
    );

    let mut untagged = obs(Ec2State::Stopped, None);
    untagged.tags.clear();
    let (w, events) = Worker::import(
        &untagged,
        Region::parse("eu-west-1").unwrap(),
        &policy(),
        alice(),
        t(0),
    );
    assert_eq!(w.name, "i-0123456789abcdef0");
    assert_eq!(w.endpoint, None);
    assert_eq!(
        types(&events),
        ["ccm.worker.imported", "ccm.worker.state_changed"]
    );
}

#[test]
fn provisioning_should_go_from_pending_to_running_and_derive_the_endpoint_when_an_ip_appears() {
    let new = NewWorker {
        name: "lab-1".into(),
        region: Region::parse("us-east-1").unwrap(),
        instance_type: InstanceType::parse("c5.metal").unwrap(),
        ami: Ami {
            id: AmiId::parse("ami-0123abcd").unwrap(),
            name: Some("cml-2.9".into()),
            owner: Some("123456789012".into()),
        },
        tags: BTreeMap::new(),
    };
    let (mut w, events) = Worker::provision(new, alice(), t(0));
    assert_eq!(types(&events), ["ccm.worker.created"]);
    assert_eq!(
        (w.ec2_state, w.instance_id.is_none()),
        (Ec2State::Pending, true)
    );
    assert_eq!(w.tags.get("Name").map(String::as_str), Some("lab-1"));
    assert_eq!(
        w.request(WorkerAction::Stop, None, &alice(), t(1)),
        Err(CommandError::NoInstance)
    );

    let id = InstanceId::parse("i-0123456789abcdef0").unwrap();
    assert_eq!(
        types(&w.assign_instance(id, t(1))),
        ["ccm.worker.provisioned"]
    );
    let events = w
        .observe_ec2(&obs(Ec2State::Pending, None), &policy(), t(2))
        .unwrap();
    assert!(events.is_empty());
    assert_eq!(
        w.endpoint.as_deref(),
        Some("http://10.0.0.5:9443"),
        "falls back to the private address"
    );
    w.observe_ec2(
        &obs(Ec2State::Running, Some([127, 1, 0, 9])),
        &policy(),
        t(30),
    )
    .unwrap();
    assert_eq!(w.endpoint.as_deref(), Some("http://127.1.0.9:9443"));
}

#[test]
fn a_provisioning_failure_should_leave_the_worker_failed_with_the_reason() {
    let new = NewWorker {
        name: "x".into(),
        region: Region::parse("us-east-1").unwrap(),
        instance_type: InstanceType::parse("c5.metal").unwrap(),
        ami: Ami {
            id: AmiId::parse("ami-0123abcd").unwrap(),
            name: None,
            owner: None,
        },
        tags: BTreeMap::new(),
    };
    let (mut w, _) = Worker::provision(new, alice(), t(0));
    let events = w
        .fail_provisioning(
            "InsufficientInstanceCapacity: no c5.metal in us-east-1a",
            t(5),
        )
        .unwrap();
    assert_eq!(
        types(&events),
        ["ccm.worker.provisioning_failed", "ccm.worker.state_changed"]
    );
    assert_eq!(w.ec2_state, Ec2State::Failed);
    assert!(
        w.state_reason
            .as_deref()
            .unwrap()
            .contains("InsufficientInstanceCapacity")
    );
    // A failed worker without an instance is terminated without calling EC2.
    let events = w.terminate_without_instance(&alice(), t(6));
    assert_eq!(w.ec2_state, Ec2State::Terminated);
    assert_eq!(
        types(&events),
        ["ccm.worker.state_changed", "ccm.worker.terminated"]
    );
}

#[test]
fn stopping_should_clear_ips_endpoint_and_live_metrics() {
    let mut w = running_worker();
    w.record_sync(
        CmlSync {
            info: Some(CallResult::Ok(CmlInfo {
                version: "2.9.0".into(),
                ready: true,
            })),
            stats: Some(CallResult::Ok(CmlStats {
                cpu_percent: 12.0,
                ..CmlStats::default()
            })),
            ..CmlSync::default()
        },
        t(10),
    );
    w.record_cloudwatch(
        Ok(CloudWatchMetrics {
            cpu_percent: Some(5.0),
            ..Default::default()
        }),
        t(10),
    );
    assert_eq!(w.service.status, ServiceStatus::Ready);

    let events = w
        .observe_ec2(
            &obs(Ec2State::Stopping, Some([127, 1, 0, 7])),
            &policy(),
            t(20),
        )
        .unwrap();
    assert_eq!(
        types(&events),
        [
            "ccm.worker.state_changed",
            "ccm.worker.paused",
            "ccm.worker.service_changed"
        ]
    );
    assert_eq!(
        (w.public_ip, w.private_ip, w.endpoint.as_deref()),
        (None, None, None)
    );
    assert!(w.cml.stats.last_good.is_none() && w.cloudwatch.last_good.is_none());
    assert_eq!(w.service.status, ServiceStatus::Unknown);
    assert!(
        w.cml.info.last_good.is_some(),
        "the version stays known while stopped"
    );
}

/// An EC2 read begun before a user's tag change answers with the old tags (and monitoring);
/// applied after the change (its write landed first), it must not bring them back. A read
/// begun after it does.
#[test]
fn an_ec2_read_begun_before_a_users_change_should_not_undo_it() {
    let mut w = running_worker();
    let mut old = obs(Ec2State::Running, Some([127, 1, 0, 7]));
    old.tags.insert("owner".into(), "ui-test".into());
    w.observe_ec2(&old, &policy(), t(5)).unwrap();
    assert_eq!(w.tags.get("owner").map(String::as_str), Some("ui-test"));

    w.apply_tags(BTreeMap::new(), vec!["owner".into()], &alice(), t(20));
    // Asked for at 10 (before the change), answered and applied at 30.
    w.observe_ec2_read_at(&old, &policy(), t(10), t(30))
        .unwrap();
    assert!(!w.tags.contains_key("owner"), "{:?}", w.tags);
    assert_eq!(w.ec2_state, Ec2State::Running, "the rest still applies");

    // Someone puts it back in EC2; a read begun after the change brings it.
    w.observe_ec2_read_at(&old, &policy(), t(40), t(41))
        .unwrap();
    assert_eq!(w.tags.get("owner").map(String::as_str), Some("ui-test"));

    // The same for detailed monitoring, turned on by a command at 50.
    assert!(!w.monitoring.detailed_monitoring);
    w.detailed_monitoring_enabled(&alice(), t(50));
    w.observe_ec2_read_at(&old, &policy(), t(45), t(55))
        .unwrap();
    assert!(w.monitoring.detailed_monitoring, "an older read says off");
    w.observe_ec2_read_at(&old, &policy(), t(60), t(61))
        .unwrap();
    assert!(
        !w.monitoring.detailed_monitoring,
        "a later read is EC2's word"
    );
}

#[test]
fn an_invalid_transition_should_change_nothing() {
    let mut w = running_worker();
    w.observe_ec2(&obs(Ec2State::Terminated, None), &policy(), t(5))
        .unwrap();
    let before = w.clone();
    let err = w
        .observe_ec2(&obs(Ec2State::Running, Some([1, 2, 3, 4])), &policy(), t(6))
        .unwrap_err();
    assert_eq!(
        (err.from, err.to),
        (Ec2State::Terminated, Ec2State::Running)
    );
    assert_eq!(w, before);
}

#[test]
fn pauses_should_be_counted_by_their_true_reason() {
    // (what ccm asked for, when, when the stop is seen) → counted reason
    let cases: [(Option<PauseReason>, i64, i64, PauseReason); 4] = [
        (
            Some(PauseReason::IdleTimeout),
            0,
            60,
            PauseReason::IdleTimeout,
        ),
        (Some(PauseReason::Manual), 0, 60, PauseReason::Manual),
        (None, 0, 60, PauseReason::External),
        (
            Some(PauseReason::IdleTimeout),
            0,
            31 * 60,
            PauseReason::External,
        ),
    ];
    for (asked, at, seen, expected) in cases {
        let mut w = running_worker();
        if let Some(reason) = asked {
            let action = if reason == PauseReason::Manual {
                WorkerAction::Stop
            } else {
                WorkerAction::Pause
            };
            w.request(action, Some(reason), &Actor::system("idle"), t(at))
                .unwrap();
        }
        let events = w
            .observe_ec2(&obs(Ec2State::Stopping, None), &policy(), t(seen))
            .unwrap();
        w.observe_ec2(&obs(Ec2State::Stopped, None), &policy(), t(seen + 30))
            .unwrap();
        let paused: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, EventKind::WorkerPaused { .. }))
            .collect();
        assert_eq!(paused.len(), 1, "stopping then stopped is one pause");
        assert_eq!(
            w.monitoring.pause_reason,
            Some(expected),
            "{asked:?} seen after {seen}s"
        );
        let c = &w.monitoring.pauses;
        assert_eq!(c.idle_timeout + c.manual + c.schedule + c.external, 1);
        let counted = match expected {
            PauseReason::IdleTimeout => c.idle_timeout,
            PauseReason::Manual => c.manual,
            PauseReason::Schedule => c.schedule,
            PauseReason::External => c.external,
        };
        assert_eq!(counted, 1);
    }
}

#[test]
fn resumes_should_be_counted_and_close_the_savings_interval() {
    let mut w = running_worker();
    w.request(
        WorkerAction::Pause,
        Some(PauseReason::IdleTimeout),
        &Actor::system("idle"),
        t(0),
    )
    .unwrap();
    w.observe_ec2(&obs(Ec2State::Stopped, None), &policy(), t(100))
        .unwrap();
    assert_eq!(
        w.seconds_stopped_by_ccm(t(400)),
        300,
        "an ongoing pause counts up to now"
    );

    w.request(WorkerAction::Resume, None, &alice(), t(3700))
        .unwrap();
    let events = w
        .observe_ec2(&obs(Ec2State::Pending, None), &policy(), t(3700))
        .unwrap();
    assert!(events.iter().any(|e| matches!(
        e,
        EventKind::WorkerResumed {
            reason: ResumeReason::Manual,
            ..
        }
    )));
    assert_eq!(w.monitoring.resumes.manual, 1);
    assert_eq!(w.monitoring.last_resume, Some(t(3700)));
    assert_eq!(w.seconds_stopped_by_ccm(t(9999)), 3600);

    // An external stop and start add nothing to the savings.
    w.observe_ec2(
        &obs(Ec2State::Running, Some([127, 1, 0, 7])),
        &policy(),
        t(3800),
    )
    .unwrap();
    w.observe_ec2(&obs(Ec2State::Stopped, None), &policy(), t(4000))
        .unwrap();
    w.observe_ec2(
        &obs(Ec2State::Running, Some([127, 1, 0, 7])),
        &policy(),
        t(5000),
    )
    .unwrap();
    assert_eq!(w.monitoring.resumes.external, 1);
    assert_eq!(w.monitoring.pauses.external, 1);
    assert_eq!(w.seconds_stopped_by_ccm(t(9999)), 3600);
    let kinds: Vec<_> = w
        .monitoring
        .history
        .iter()
        .map(|h| (h.kind, h.reason.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (HistoryKind::Paused, "idle_timeout"),
            (HistoryKind::Resumed, "manual"),
            (HistoryKind::Paused, "external"),
            (HistoryKind::Resumed, "external")
        ]
    );
}

#[test]
fn the_history_should_stay_bounded() {
    let mut w = running_worker();
    for i in 0..100 {
        w.observe_ec2(&obs(Ec2State::Stopped, None), &policy(), t(i * 10))
            .unwrap();
        w.observe_ec2(
            &obs(Ec2State::Running, Some([127, 1, 0, 7])),
            &policy(),
            t(i * 10 + 5),
        )
        .unwrap();
    }
    assert_eq!(w.monitoring.history.len(), HISTORY_LEN);
    assert_eq!(w.monitoring.pauses.external, 100);
}

#[test]
fn commands_should_respect_the_state() {
    use Ec2State::*;
    use WorkerAction::*;
    // action, state, allowed
    let table = [
        (Start, Stopped, true),
        (Start, Running, false),
        (Start, Pending, false),
        (Start, Stopping, false),
        (Start, Terminated, false),
        (Resume, Stopped, true),
        (Resume, Running, false),
        (Stop, Running, true),
        (Stop, Pending, true),
        (Stop, Stopped, false),
        (Stop, Stopping, false),
        (Stop, ShuttingDown, false),
        (Pause, Running, true),
        (Pause, Stopped, false),
        (Terminate, Running, true),
        (Terminate, Stopped, true),
        (Terminate, Failed, true),
        (Terminate, ShuttingDown, false),
        (Terminate, Terminated, false),
        (Refresh, Running, true),
        (Refresh, Stopped, false),
        (Refresh, Pending, false),
        (UpdateTags, Running, true),
        (UpdateTags, Stopped, true),
        (UpdateTags, Terminated, false),
        (EnableDetailedMonitoring, Running, true),
        (EnableDetailedMonitoring, ShuttingDown, false),
        (Delete, Running, true),
        (Delete, Terminated, true),
    ];
    for (action, state, allowed) in table {
        let mut w = running_worker();
        w.ec2_state = state;
        let result = w.request(action, None, &alice(), t(1));
        assert_eq!(result.is_ok(), allowed, "{action:?} in {state}: {result:?}");
        if let Err(err) = result {
            assert!(matches!(err, CommandError::Conflict { .. }));
            assert!(err.to_string().contains(state.as_str()));
        }
    }
    let mut w = running_worker();
    assert!(
        w.request(Pause, Some(PauseReason::External), &alice(), t(1))
            .is_err()
    );
}

#[test]
fn a_failed_action_should_forget_the_pending_stop() {
    let mut w = running_worker();
    w.request(
        WorkerAction::Pause,
        Some(PauseReason::IdleTimeout),
        &Actor::system("idle"),
        t(0),
    )
    .unwrap();
    let events = w.action_failed(WorkerAction::Pause, "UnauthorizedOperation", t(1));
    assert_eq!(types(&events), ["ccm.worker.action_failed"]);
    w.observe_ec2(&obs(Ec2State::Stopped, None), &policy(), t(60))
        .unwrap();
    assert_eq!(w.monitoring.pause_reason, Some(PauseReason::External));
}

#[test]
fn a_sync_should_keep_stale_values_and_count_running_nodes_as_activity() {
    let mut w = running_worker();
    let stats = CmlStats {
        running_nodes: Some(3),
        cpu_percent: 40.0,
        ..CmlStats::default()
    };
    let events = w.record_sync(
        CmlSync {
            info: Some(CallResult::Ok(CmlInfo {
                version: "2.9.0".into(),
                ready: true,
            })),
            health: Some(CallResult::NotSupported),
            stats: Some(CallResult::Ok(stats)),
            licence: Some(CallResult::Ok(Licence {
                registration: "COMPLETED".into(),
                authorization: None,
                smart_account: None,
                virtual_account: None,
                expires: None,
                product: None,
                is_enterprise: None,
                last_failure: None,
                features: vec![],
            })),
        },
        t(100),
    );
    assert_eq!(
        types(&events),
        ["ccm.worker.service_changed", "ccm.worker.synced"]
    );
    assert_eq!(w.service.status, ServiceStatus::Ready);
    assert_eq!(w.monitoring.last_activity, Some(t(100)));

    fn down<T>(call: CmlCall) -> CallResult<T> {
        CallResult::Failed(Reason::new(call, ReasonCode::Timeout))
    }
    let events = w.record_sync(
        CmlSync {
            info: Some(down(CmlCall::SystemInformation)),
            health: Some(down(CmlCall::SystemHealth)),
            stats: Some(down(CmlCall::SystemStats)),
            licence: Some(down(CmlCall::Licensing)),
        },
        t(200),
    );
    assert_eq!(
        types(&events),
        ["ccm.worker.service_changed", "ccm.worker.synced"]
    );
    assert_eq!(w.service.status, ServiceStatus::Unavailable);
    assert_eq!(w.service.reasons.len(), 4);
    let view = w
        .cml
        .stats
        .view(t(250), std::time::Duration::from_secs(600));
    assert_eq!(view.freshness, crate::observed::Freshness::Stale);
    assert_eq!(view.value.and_then(|s| s.running_nodes), Some(3));
    assert_eq!(view.age, Some(std::time::Duration::from_secs(150)));
    assert_eq!(
        w.monitoring.last_activity,
        Some(t(100)),
        "a failed read is not activity"
    );
}

#[test]
fn a_vanished_instance_should_be_terminated() {
    let mut w = running_worker();
    let events = w.observe_gone(t(10));
    assert_eq!(w.ec2_state, Ec2State::Terminated);
    assert!(types(&events).contains(&"ccm.worker.terminated"));
    assert!(w.observe_gone(t(20)).is_empty());
}

#[test]
fn a_requested_termination_should_record_who_did_it() {
    let mut w = running_worker();
    w.request(WorkerAction::Terminate, None, &alice(), t(1))
        .unwrap();
    w.observe_ec2(&obs(Ec2State::ShuttingDown, None), &policy(), t(2))
        .unwrap();
    w.observe_ec2(&obs(Ec2State::Terminated, None), &policy(), t(3))
        .unwrap();
    assert_eq!(w.terminated_by, Some(alice()));
    assert_eq!(w.terminated_at, Some(t(2)));
}

#[test]
fn endpoints_should_follow_the_policy() {
    let v4 = |a, b, c, d| Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
    let p = EndpointPolicy::default();
    assert_eq!(
        p.endpoint(v4(1, 2, 3, 4), v4(10, 0, 0, 1)).as_deref(),
        Some("https://1.2.3.4")
    );
    let private = EndpointPolicy {
        address: AddressPreference::Private,
        ..EndpointPolicy::default()
    };
    assert_eq!(
        private.endpoint(v4(1, 2, 3, 4), v4(10, 0, 0, 1)).as_deref(),
        Some("https://10.0.0.1")
    );
    assert_eq!(p.endpoint(None, None), None);
    let v6 = Some("2001:db8::1".parse().unwrap());
    assert_eq!(
        policy().endpoint(v6, None).as_deref(),
        Some("http://[2001:db8::1]:9443")
    );
}

#[test]
fn endpoint_tag_values_should_be_checked() {
    for (given, want) in [
        ("http://127.2.0.9:9443", "http://127.2.0.9:9443"),
        ("https://cml-7.lab.example/", "https://cml-7.lab.example"),
        ("https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443"),
        ("HTTPS://cml.example/api/v0", "HTTPS://cml.example/api/v0"),
    ] {
        assert_eq!(parse_endpoint_tag(given).as_deref(), Ok(want), "{given}");
    }
    for (given, why) in [
        ("ftp://cml.example", "scheme"),
        ("cml.example", "not a url"),
        ("https://admin:s3cret@cml.example", "credentials"),
        ("https://admin@cml.example", "credentials"),
        ("https://cml.example/#top", "fragment"),
        ("https://cml.example/?a=1", "query"),
        ("https://", "no host"),
        ("https://:443", "no host"),
        ("https://cml.example:0", "port"),
        ("https://cml.example:99999", "port"),
        ("https://cml example", "spaces"),
        ("https://[2001:db8::1", "ipv6"),
        ("https://cml!.example", "host"),
    ] {
        let err = parse_endpoint_tag(given).unwrap_err();
        assert!(err.reason.contains(why), "{given}: {err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}

#[test]
fn an_endpoint_tag_should_replace_the_derived_endpoint() {
    let mut o = obs(Ec2State::Running, Some([127, 1, 0, 7]));
    o.tags
        .insert(DEFAULT_ENDPOINT_TAG.into(), "http://127.9.0.1:9000/".into());
    let mut w = running_worker();
    w.observe_ec2(&o, &policy(), t(10)).unwrap();
    assert_eq!(w.endpoint.as_deref(), Some("http://127.9.0.1:9000"));

    // Another key configured: this tag is not looked at.
    let other = EndpointPolicy {
        tag: "team:cml-url".into(),
        ..policy()
    };
    w.observe_ec2(&o, &other, t(20)).unwrap();
    assert_eq!(w.endpoint.as_deref(), Some("http://127.1.0.7:9443"));
    // An empty key switches tags off.
    let off = EndpointPolicy {
        tag: String::new(),
        ..policy()
    };
    w.observe_ec2(&o, &off, t(30)).unwrap();
    assert_eq!(w.endpoint.as_deref(), Some("http://127.1.0.7:9443"));

    // Stopped: no endpoint, whatever the tag says.
    w.observe_ec2(&obs_with(&o, Ec2State::Stopping), &policy(), t(40))
        .unwrap();
    assert_eq!(w.endpoint, None);
}

fn obs_with(o: &InstanceObservation, state: Ec2State) -> InstanceObservation {
    InstanceObservation {
        state,
        public_ip: None,
        ..o.clone()
    }
}

#[test]
fn an_invalid_endpoint_tag_should_degrade_only_that_worker_without_echoing_it() {
    let mut o = obs(Ec2State::Running, Some([127, 1, 0, 7]));
    o.tags.insert(
        DEFAULT_ENDPOINT_TAG.into(),
        "https://admin:s3cret@cml.example".into(),
    );
    let mut w = running_worker();
    let events = w.observe_ec2(&o, &policy(), t(10)).unwrap();
    assert_eq!(w.endpoint, None, "not the address instead");
    assert_eq!(w.service.status, ServiceStatus::Degraded);
    let text = w.service.reasons[0].to_string();
    assert!(text.contains(DEFAULT_ENDPOINT_TAG), "{text}");
    assert!(text.contains("credentials"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert_eq!(types(&events), ["ccm.worker.service_changed"]);
    assert!(!format!("{events:?}").contains("s3cret"));
    // Seen again: no new event.
    assert!(w.observe_ec2(&o, &policy(), t(20)).unwrap().is_empty());

    // Fixed: the endpoint is back (the next CML sync assesses the worker).
    o.tags
        .insert(DEFAULT_ENDPOINT_TAG.into(), "https://cml.example".into());
    w.observe_ec2(&o, &policy(), t(30)).unwrap();
    assert_eq!(w.endpoint.as_deref(), Some("https://cml.example"));
}

#[test]
fn workers_should_round_trip_through_json() {
    let mut w = running_worker();
    w.request(
        WorkerAction::Pause,
        Some(PauseReason::Manual),
        &alice(),
        t(1),
    )
    .unwrap();
    let json = serde_json::to_string(&w).unwrap();
    let back: Worker = serde_json::from_str(&json).unwrap();
    assert_eq!(back, w);
}

#[test]
fn allowed_actions_should_follow_the_command_rules() {
    use WorkerAction::*;
    let mut w = running_worker();
    let running = w.allowed_actions();
    assert_eq!(
        running,
        [
            Stop,
            Pause,
            Terminate,
            Delete,
            UpdateTags,
            EnableDetailedMonitoring,
            Refresh,
            Licence
        ]
    );
    w.ec2_state = Ec2State::Stopped;
    assert_eq!(
        w.allowed_actions(),
        [
            Start,
            Resume,
            Terminate,
            Delete,
            UpdateTags,
            EnableDetailedMonitoring
        ]
    );
    w.ec2_state = Ec2State::Terminated;
    assert_eq!(w.allowed_actions(), [Delete]);
    assert!(
        w.monitoring.pending_pause.is_none(),
        "asking changes nothing"
    );
}

#[test]
fn action_blockers_should_give_the_refusal_of_every_action_not_allowed() {
    use WorkerAction::*;
    let mut w = running_worker();
    let blocked = w.action_blockers();
    let names: Vec<_> = blocked.iter().map(|(a, _)| *a).collect();
    assert_eq!(names, [Start, Resume]);
    assert!(blocked[0].1.contains("already running"), "{blocked:?}");
    assert_eq!(w.cml_blocker(), None);
    w.ec2_state = Ec2State::Stopped;
    let blocked = w.action_blockers();
    let refresh = blocked.iter().find(|(a, _)| *a == Refresh).unwrap();
    assert!(refresh.1.contains("only a running worker"), "{refresh:?}");
    assert!(w.cml_blocker().unwrap().contains("running"));
    // Allowed and blocked together are every action, once.
    assert_eq!(w.allowed_actions().len() + blocked.len(), 10);
}

fn ready_sync() -> CmlSync {
    CmlSync {
        info: Some(CallResult::Ok(CmlInfo {
            version: "2.9.0".into(),
            ready: true,
        })),
        health: Some(CallResult::NotSupported),
        stats: Some(CallResult::Ok(CmlStats::default())),
        licence: Some(CallResult::NotSupported),
    }
}

fn checks(system: CheckStatus, instance: CheckStatus) -> StatusChecks {
    StatusChecks { system, instance }
}

use crate::ec2::CheckStatus;

#[test]
fn an_impaired_status_check_should_degrade_a_ready_worker_until_it_recovers() {
    let mut w = running_worker();
    w.record_sync(ready_sync(), t(10));
    assert_eq!(w.service.status, ServiceStatus::Ready);

    let ok = w.record_ec2_status(Ok(checks(CheckStatus::Ok, CheckStatus::Ok)), t(20));
    assert_eq!(types(&ok), ["ccm.worker.status_checks_changed"]);
    assert_eq!(w.service.status, ServiceStatus::Ready);
    assert!(
        w.record_ec2_status(Ok(checks(CheckStatus::Ok, CheckStatus::Ok)), t(30))
            .is_empty(),
        "the same checks again are no event"
    );

    let events = w.record_ec2_status(Ok(checks(CheckStatus::Ok, CheckStatus::Impaired)), t(40));
    assert_eq!(
        types(&events),
        [
            "ccm.worker.status_checks_changed",
            "ccm.worker.service_changed"
        ]
    );
    assert_eq!(w.service.status, ServiceStatus::Degraded);
    assert_eq!(w.service.reasons.len(), 1);
    assert_eq!(w.service.reasons[0].call, CmlCall::Ec2Status);
    assert_eq!(w.service.reasons[0].code, ReasonCode::Ec2StatusImpaired);

    // CML still answers: the next sync keeps the worker degraded, with one EC2 reason.
    let events = w.record_sync(ready_sync(), t(50));
    assert_eq!(types(&events), ["ccm.worker.synced"]);
    assert_eq!(w.service.status, ServiceStatus::Degraded);
    assert_eq!(w.service.cml_status, Some(ServiceStatus::Ready));
    assert_eq!(w.service.reasons.len(), 1);

    // A failed read keeps the last checks (stale), and the status with them.
    let failed = Reason::new(CmlCall::Ec2Status, ReasonCode::Other).with_detail("throttled");
    assert!(w.record_ec2_status(Err(failed), t(60)).is_empty());
    assert_eq!(w.service.status, ServiceStatus::Degraded);
    let view = w
        .ec2_status
        .view(t(60), std::time::Duration::from_secs(600));
    assert_eq!(view.freshness, crate::observed::Freshness::Stale);

    let events = w.record_ec2_status(Ok(checks(CheckStatus::Ok, CheckStatus::Ok)), t(70));
    assert_eq!(
        types(&events),
        [
            "ccm.worker.status_checks_changed",
            "ccm.worker.service_changed"
        ]
    );
    assert_eq!(w.service.status, ServiceStatus::Ready);
    assert!(w.service.reasons.is_empty());
}

#[test]
fn status_checks_should_not_touch_the_service_of_a_worker_that_is_not_running() {
    let mut w = running_worker();
    w.record_sync(ready_sync(), t(10));
    w.observe_ec2(&obs(Ec2State::Stopped, None), &policy(), t(20))
        .unwrap();
    assert_eq!(w.service.status, ServiceStatus::Unknown);
    let events = w.record_ec2_status(
        Ok(checks(CheckStatus::NotApplicable, CheckStatus::Impaired)),
        t(30),
    );
    assert_eq!(types(&events), ["ccm.worker.status_checks_changed"]);
    assert_eq!(w.service.status, ServiceStatus::Unknown);
    assert!(w.service.reasons.is_empty());
}

#[test]
fn a_worker_stored_before_status_checks_and_owners_should_still_load() {
    let mut json = serde_json::to_value(running_worker()).unwrap();
    let doc = json.as_object_mut().unwrap();
    doc.remove("ec2_status");
    doc["service"].as_object_mut().unwrap().remove("cml_status");
    doc["ami"].as_object_mut().unwrap().remove("owner");
    let w: Worker = serde_json::from_value(json).unwrap();
    assert_eq!(w.ec2_status, Sourced::default());
    assert_eq!(w.ami.unwrap().owner, None);
}

#[test]
fn check_request_should_agree_with_request_in_every_state() {
    let actions = WorkerAction::ALL;
    let by = Actor::system("test");
    for state in Ec2State::ALL {
        for with_instance in [true, false] {
            for with_endpoint in [true, false] {
                let mut w = running_worker();
                w.ec2_state = state;
                if !with_instance {
                    w.instance_id = None;
                }
                if !with_endpoint {
                    w.endpoint = None;
                }
                for action in actions {
                    for reason in [None, Some(PauseReason::Manual), Some(PauseReason::External)] {
                        let checked = w.check_request(action, reason);
                        let before = w.clone();
                        let asked = w.clone().request(action, reason, &by, t(1)).map(|_| ());
                        assert_eq!(
                            checked.map_err(|e| e.to_string()),
                            asked.map_err(|e| e.to_string()),
                            "{state:?} {action:?} {reason:?}"
                        );
                        assert_eq!(w, before, "checking changes nothing");
                    }
                }
            }
        }
    }
}

fn telemetry(category: &str) -> ActivitySource {
    ActivitySource::Telemetry {
        category: category.into(),
        user_id: Some("alice".into()),
    }
}

#[test]
fn quiet_stretches_should_be_remembered_as_breaks_ending_at_the_return() {
    let mut w = running_worker();
    w.record_interaction(Some((t(0), telemetry("user_activity"))), t(0));
    // 10 minutes: too short to be a break.
    w.record_interaction(Some((t(600), telemetry("user_activity"))), t(600));
    assert!(w.monitoring.breaks.is_empty());
    // 90 minutes of quiet, then activity again.
    w.record_interaction(Some((t(600 + 5400), telemetry("user_activity"))), t(6000));
    assert_eq!(
        w.monitoring.breaks.back(),
        Some(&Break {
            from: t(600),
            to: t(6000)
        })
    );
    // Paused in between and resumed: the return is the resume, not the first action after
    // the boot.
    w.monitoring.last_resume = Some(t(6000 + 7200));
    w.record_interaction(
        Some((t(6000 + 7800), telemetry("user_activity"))),
        t(14_000),
    );
    assert_eq!(
        w.monitoring.breaks.back(),
        Some(&Break {
            from: t(6000),
            to: t(13_200)
        })
    );
    // Bounded.
    for i in 0..(BREAKS_KEPT as i64 + 10) {
        let at = t(20_000 + i * 3600);
        w.record_interaction(Some((at, telemetry("user_activity"))), at);
    }
    assert_eq!(w.monitoring.breaks.len(), BREAKS_KEPT);
}

#[test]
fn a_year_of_breaks_should_stay_a_few_kilobytes_and_old_documents_should_load() {
    let mut w = running_worker();
    let empty = serde_json::to_string(&w).unwrap().len();
    // A year of a busy worker: every day, work with six breaks from 20 min to 2 h, an
    // absence each, and a night away.
    let day = 24 * 3600;
    for d in 0..365 {
        let mut at = d * day + 8 * 3600;
        for gap in [20, 45, 70, 90, 120, 30] {
            w.record_interaction(Some((t(at), telemetry("user_activity"))), t(at));
            at += gap * 60;
        }
        w.record_interaction(Some((t(at), telemetry("user_activity"))), t(at));
    }
    let (breaks, absences) = (w.monitoring.breaks.len(), w.monitoring.absences.len());
    assert_eq!((breaks, absences), (BREAKS_KEPT, BREAKS_KEPT));
    let json = serde_json::to_string(&w).unwrap();
    let grown = json.len() - empty;
    assert!(grown < 12 * 1024, "{grown} bytes for 512 entries");
    let back: Worker = serde_json::from_str(&json).unwrap();
    assert_eq!(back, w);
    // A document written before (dated breaks) loads with the same breaks.
    let mut old = serde_json::to_value(&w).unwrap();
    let dated = |list: &std::collections::VecDeque<Break>| {
        list.iter()
            .map(|b| serde_json::json!({ "from": b.from, "to": b.to }))
            .collect::<Vec<_>>()
    };
    old["monitoring"]["breaks"] = dated(&w.monitoring.breaks).into();
    old["monitoring"]["absences"] = dated(&w.monitoring.absences).into();
    let old_len = old.to_string().len() - empty;
    assert!(
        old_len > 3 * grown,
        "dated: {old_len} bytes, compact: {grown}"
    );
    let loaded: Worker = serde_json::from_value(old).unwrap();
    assert_eq!(loaded.monitoring.breaks, w.monitoring.breaks);
    assert_eq!(loaded.monitoring.absences, w.monitoring.absences);
    // Saved again, it is compact.
    assert_eq!(serde_json::to_string(&loaded).unwrap().len(), json.len());
    // Recorded in whole seconds, so that a worker saved and loaded in between decides the
    // same: a fraction of a second never reaches the stored form.
    let mut f = running_worker();
    let ms = |s: i64, ms: i64| t(s) + chrono::Duration::milliseconds(ms);
    f.record_interaction(Some((ms(0, 400), telemetry("user_activity"))), ms(0, 400));
    f.record_interaction(
        Some((ms(4000, 700), telemetry("user_activity"))),
        ms(4000, 700),
    );
    let whole = Break {
        from: t(0),
        to: t(4000),
    };
    assert_eq!(f.monitoring.breaks.back(), Some(&whole));
    assert_eq!(f.monitoring.absences.back(), Some(&whole));
    let again: Worker = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
    assert_eq!(again, f);
    // Nonsense is refused, not panicked on.
    let mut bad = serde_json::to_value(&w).unwrap();
    bad["monitoring"]["breaks"] = serde_json::json!([[i64::MAX, 1]]);
    assert!(serde_json::from_value::<Worker>(bad).is_err());
}
