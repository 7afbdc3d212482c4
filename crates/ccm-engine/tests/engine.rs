//! The engine end to end, on the embedded fleet: the CML simulator on loopback addresses, the
//! simulated cloud, an in-memory store. Network I/O runs in real time; wall time for the
//! domain (idle timeouts, snoozes) comes from a manual clock the tests advance, and jobs are
//! triggered explicitly (background polling is switched off) — so nothing waits on a timer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use ccm_cml_sim::faults::FaultSpec;
use ccm_domain::idle::IdleSettings;
use ccm_domain::lifecycle::PauseReason;
use ccm_domain::{Actor, Ec2State, EventKind, RuntimeSettings, ServiceStatus, Worker};
use ccm_engine::{
    AmiSelector, BusEvent, CreateWorker, ImportRequest, ImportSelector, JobKind, ManualClock,
};
use ccm_store::{SqliteStore, WorkerFilter};
use ccm_testbed::embedded::{Embedded, EmbeddedOptions};

/// The test settings of `EmbeddedOptions::for_tests`: every background job off.
fn quiet_settings() -> RuntimeSettings {
    RuntimeSettings {
        polling: ccm_domain::settings::PollingSettings::all_off(),
        ..RuntimeSettings::default()
    }
}

async fn start(
    workers: usize,
    base: [u8; 4],
    tweak: impl FnOnce(&mut EmbeddedOptions),
) -> (Embedded, Arc<ManualClock>) {
    let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let (mut opts, clock) = EmbeddedOptions::for_tests(workers, Ipv4Addr::from(base), store);
    opts.spare = 4;
    tweak(&mut opts);
    let fleet = Embedded::start(opts).await.unwrap();
    (fleet, clock)
}

async fn workers(fleet: &Embedded) -> Vec<Worker> {
    let mut all = fleet
        .engine
        .workers(&WorkerFilter::default())
        .await
        .unwrap()
        .items;
    all.sort_by_key(|w| w.endpoint.clone());
    all
}

/// Waits (bounded) for an event matching `pred` on `rx`.
async fn wait_event(
    rx: &mut tokio::sync::broadcast::Receiver<BusEvent>,
    what: &str,
    pred: impl Fn(&BusEvent) -> bool,
) -> BusEvent {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("bus closed while waiting for {what}: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Waits (bounded) until `check` holds, triggering `job` between looks.
async fn until<F: Fn(&[Worker]) -> bool>(
    fleet: &Embedded,
    job: JobKind,
    what: &str,
    check: F,
) -> Vec<Worker> {
    for _ in 0..100 {
        fleet.engine.trigger_job(job).await.ok();
        let ws = workers(fleet).await;
        if check(&ws) {
            return ws;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition never held: {what}");
}

#[tokio::test]
async fn a_worker_going_down_should_degrade_then_be_unavailable_then_recover() {
    let (fleet, _clock) = start(3, [127, 60, 0, 1], |_| {}).await;
    let ws = until(&fleet, JobKind::CmlSync, "all ready", |ws| {
        ws.iter().all(|w| w.service.status == ServiceStatus::Ready)
    })
    .await;
    assert_eq!(ws.len(), 3);
    let sick = ws[0].clone();
    assert!(sick.cml.stats.last_good.is_some());
    let sim = fleet.sim.worker(0).unwrap();
    assert_eq!(Some(sim.endpoint()), sick.endpoint);

    // Half sick: system_health fails → degraded, with the reason.
    sim.apply_faults(&FaultSpec::parse("0/system_health:error=500").unwrap());
    fleet.engine.trigger_job(JobKind::CmlSync).await.unwrap();
    let w = fleet.engine.worker(sick.id).await.unwrap();
    assert_eq!(w.service.status, ServiceStatus::Degraded);
    assert!(
        w.service
            .reasons
            .iter()
            .any(|r| r.call.as_str() == "system_health" && r.status == Some(500)),
        "{:?}",
        w.service.reasons
    );

    // Down: nothing answers → unavailable; the last good values are served stale with their age.
    let mut rx = fleet.engine.subscribe();
    sim.clear_faults();
    sim.apply_faults(&FaultSpec::parse("0:down").unwrap());
    fleet.engine.trigger_job(JobKind::CmlSync).await.unwrap();
    let w = fleet.engine.worker(sick.id).await.unwrap();
    assert_eq!(w.service.status, ServiceStatus::Unavailable);
    assert!(!w.service.reasons.is_empty());
    let view = w
        .cml
        .stats
        .view(fleet.engine.now(), fleet.engine.stale_max_age());
    assert_eq!(view.freshness, ccm_domain::Freshness::Stale);
    assert!(view.value.is_some() && view.age.is_some());
    // The others are untouched.
    let others = workers(&fleet).await;
    assert!(
        others
            .iter()
            .filter(|o| o.id != sick.id)
            .all(|o| o.service.status == ServiceStatus::Ready)
    );

    // Keep polling: the breaker opens and the worker gets no more requests.
    let opened = until(&fleet, JobKind::CmlSync, "breaker open", |_| {
        fleet
            .engine
            .breaker_of(&w)
            .is_some_and(|b| b.state == ccm_resilience::BreakerState::Open)
    })
    .await;
    drop(opened);
    wait_event(&mut rx, "breaker opened", |e| {
        matches!(e.event.kind, EventKind::BreakerOpened { .. })
            && e.event.worker_id() == Some(sick.id)
    })
    .await;
    let hits = || {
        let c = sim.counters();
        c.requests + c.connections
    };
    let before = hits();
    fleet.engine.trigger_job(JobKind::CmlSync).await.unwrap();
    assert_eq!(hits(), before, "an open breaker sends nothing");
    let w = fleet.engine.worker(sick.id).await.unwrap();
    assert!(
        w.service
            .reasons
            .iter()
            .any(|r| r.code == ccm_domain::ReasonCode::CircuitOpen),
        "{:?}",
        w.service.reasons
    );

    // Back up: after the open period one probe goes through, and the worker is ready again.
    sim.clear_faults();
    until(&fleet, JobKind::CmlSync, "ready again", |ws| {
        ws.iter().all(|w| w.service.status == ServiceStatus::Ready)
    })
    .await;
    wait_event(&mut rx, "breaker closed", |e| {
        matches!(e.event.kind, EventKind::BreakerClosed { .. })
    })
    .await;
    fleet.shutdown().await;
}

fn idle_settings(timeout_min: u64, snooze_min: u64, dry_run: bool) -> RuntimeSettings {
    let mut s = quiet_settings();
    s.idle = IdleSettings {
        enabled: true,
        timeout: Duration::from_secs(timeout_min * 60),
        snooze_after_resume: Duration::from_secs(snooze_min * 60),
        dry_run,
        activity_max_age: Duration::from_secs(15 * 60),
        // The plain timeout: no longer break timeout while half of these tiny fleets is busy
        // (that rule has its own test in economics.rs).
        busy_fleet_percent: 0,
        ..IdleSettings::default()
    };
    s
}

#[tokio::test]
async fn idle_workers_should_be_paused_and_busy_ones_never() {
    let (fleet, clock) = start(2, [127, 61, 0, 1], |o| {
        o.settings = idle_settings(60, 60, false)
    })
    .await;
    let ws = until(&fleet, JobKind::CmlSync, "all ready", |ws| {
        ws.iter().all(|w| w.service.status == ServiceStatus::Ready)
    })
    .await;
    let (idle, busy) = (ws[0].clone(), ws[1].clone());

    // A user runs a lab on the second worker: running nodes are activity.
    let sim_busy = fleet.sim.worker(1).unwrap();
    let lab = sim_busy
        .import_lab_as_user(ccm_cml_sim::SAMPLE_LAB_YAML)
        .unwrap();
    sim_busy.start_lab_as_user(lab).unwrap();
    until(&fleet, JobKind::CmlSync, "nodes running", |ws| {
        ws[1]
            .cml
            .stats
            .last_good
            .as_ref()
            .and_then(|s| s.value.running_nodes)
            .unwrap_or(0)
            > 0
    })
    .await;

    // Not yet idle: nothing happens.
    fleet.engine.trigger_job(JobKind::Activity).await.unwrap();
    assert_eq!(
        fleet.engine.worker(idle.id).await.unwrap().ec2_state,
        Ec2State::Running
    );

    clock.advance(Duration::from_secs(61 * 60));
    fleet.engine.trigger_job(JobKind::CmlSync).await.unwrap();
    fleet.engine.trigger_job(JobKind::Activity).await.unwrap();

    let idle = fleet.engine.worker(idle.id).await.unwrap();
    let events = fleet.engine.worker_events(idle.id, None, 50).await.unwrap();
    assert!(
        matches!(idle.ec2_state, Ec2State::Stopping | Ec2State::Stopped),
        "{}: {:?}\n{:?}",
        idle.ec2_state,
        idle.monitoring,
        events
            .iter()
            .map(|e| e.event.kind.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(idle.monitoring.pauses.idle_timeout, 1);
    assert_eq!(idle.monitoring.pause_reason, Some(PauseReason::IdleTimeout));
    let busy = fleet.engine.worker(busy.id).await.unwrap();
    assert_eq!(
        busy.ec2_state,
        Ec2State::Running,
        "a worker with running nodes is never paused"
    );
    assert_eq!(busy.monitoring.pauses.idle_timeout, 0);
    // ccm's own logins (it logged in to read telemetry) did not count as activity.
    assert!(idle.cml.own_user_id.is_some());
    fleet.shutdown().await;
}

#[tokio::test]
async fn the_snooze_after_resume_should_be_honoured() {
    let (fleet, clock) = start(1, [127, 62, 0, 1], |o| {
        o.settings = idle_settings(10, 60, false)
    })
    .await;
    let ws = until(&fleet, JobKind::CmlSync, "ready", |ws| {
        ws.iter().all(|w| w.service.status == ServiceStatus::Ready)
    })
    .await;
    let id = ws[0].id;
    let admin = Actor::user("alice");
    fleet.engine.stop_worker(id, &admin).await.unwrap();
    until(&fleet, JobKind::Ec2Sync, "stopped", |ws| {
        ws[0].ec2_state == Ec2State::Stopped
    })
    .await;
    fleet.engine.resume_worker(id, &admin).await.unwrap();
    until(&fleet, JobKind::Ec2Sync, "running", |ws| {
        ws[0].ec2_state == Ec2State::Running
    })
    .await;
    until(&fleet, JobKind::CmlSync, "ready", |ws| {
        ws[0].service.status == ServiceStatus::Ready
    })
    .await;

    clock.advance(Duration::from_secs(20 * 60)); // idle (10 min) but inside the 60 min snooze
    fleet.engine.trigger_job(JobKind::Activity).await.unwrap();
    let w = fleet.engine.worker(id).await.unwrap();
    assert_eq!(w.ec2_state, Ec2State::Running);
    assert_eq!(w.monitoring.resumes.manual, 1);
    assert_eq!(w.monitoring.pauses.manual, 1);

    clock.advance(Duration::from_secs(41 * 60)); // snooze over
    fleet.engine.trigger_job(JobKind::Activity).await.unwrap();
    let w = fleet.engine.worker(id).await.unwrap();
    assert!(
        matches!(w.ec2_state, Ec2State::Stopping | Ec2State::Stopped),
        "{}",
        w.ec2_state
    );
    assert_eq!(w.monitoring.pauses.idle_timeout, 1);
    fleet.shutdown().await;
}

#[tokio::test]
async fn dry_run_should_pause_nothing_and_say_what_it_would_do() {
    let (fleet, clock) = start(1, [127, 63, 0, 1], |o| {
        o.settings = idle_settings(60, 60, true)
    })
    .await;
    let mut rx = fleet.engine.subscribe();
    until(&fleet, JobKind::CmlSync, "ready", |ws| {
        ws[0].service.status == ServiceStatus::Ready
    })
    .await;
    clock.advance(Duration::from_secs(90 * 60));
    fleet.engine.trigger_job(JobKind::Activity).await.unwrap();
    let e = wait_event(&mut rx, "idle detected", |e| {
        matches!(e.event.kind, EventKind::WorkerIdleDetected { .. })
    })
    .await;
    let EventKind::WorkerIdleDetected {
        action,
        idle_for_seconds,
        timeout_rule,
        ..
    } = &e.event.kind
    else {
        unreachable!()
    };
    assert_eq!(action, "would_pause");
    // Imported by ccm (`system:`) and never used since: its own shorter timeout.
    assert_eq!(
        *timeout_rule,
        Some(ccm_domain::idle::TimeoutRule::NobodySinceStart),
        "the rule it decided on"
    );
    assert!(*idle_for_seconds >= 90 * 60);
    let w = workers(&fleet).await.remove(0);
    assert_eq!(w.ec2_state, Ec2State::Running);
    assert!(fleet.sim.worker(0).unwrap().is_up());
    fleet.shutdown().await;
}

#[tokio::test]
async fn importing_twice_should_make_one_worker() {
    let (fleet, _) = start(3, [127, 64, 0, 1], |_| {}).await;
    assert_eq!(workers(&fleet).await.len(), 3);
    // Imported with the name of the AMI they run, looked up in EC2.
    let image = &ccm_testbed::ec2::Ec2SimConfig::default().images[0];
    for w in workers(&fleet).await {
        let ami = w.ami.clone().unwrap();
        assert_eq!(ami.id, image.id);
        assert_eq!(ami.name.as_deref(), Some(image.name.as_str()), "{w:?}");
    }
    let req = ImportRequest {
        region: None,
        selector: ImportSelector::Configured,
        all: true,
        restricted_to_filter: false,
    };
    let report = fleet
        .engine
        .import_workers(req.clone(), &Actor::user("a"))
        .await
        .unwrap();
    assert_eq!(
        (report.matched, report.imported.len(), report.existing.len()),
        (3, 0, 3)
    );
    let instance = workers(&fleet).await[0].instance_id.clone().unwrap();
    let by_id = ImportRequest {
        region: None,
        selector: ImportSelector::InstanceIds(vec![instance]),
        all: false,
        restricted_to_filter: false,
    };
    let report = fleet
        .engine
        .import_workers(by_id, &Actor::user("a"))
        .await
        .unwrap();
    assert_eq!((report.imported.len(), report.existing.len()), (0, 1));
    assert_eq!(workers(&fleet).await.len(), 3);
    // Without `all`, several matches are refused rather than guessed at.
    let err = fleet
        .engine
        .import_workers(ImportRequest { all: false, ..req }, &Actor::user("a"))
        .await
        .unwrap_err();
    assert!(matches!(err, ccm_engine::EngineError::Conflict(_)), "{err}");
    fleet.shutdown().await;
}

#[tokio::test]
async fn provisioning_should_reach_running_or_fail_with_the_reason() {
    // One spare address: the first new instance gets it, the second finds no capacity.
    let (fleet, _) = start(1, [127, 65, 0, 1], |o| {
        o.import = false;
        o.spare = 1;
    })
    .await;
    let mut rx = fleet.engine.subscribe();
    let admin = Actor::user("alice");
    let req = |name: &str| CreateWorker {
        name: name.into(),
        region: None,
        instance_type: None,
        ami: AmiSelector::Default,
        tags: Default::default(),
    };
    let w = fleet
        .engine
        .create_worker(req("fresh"), &admin)
        .await
        .unwrap();
    assert_eq!(w.ec2_state, Ec2State::Pending);
    assert!(
        w.ami
            .as_ref()
            .unwrap()
            .name
            .as_deref()
            .unwrap()
            .starts_with("cml-controller-2.9")
    );
    let e = wait_event(&mut rx, "provisioning outcome", |e| {
        matches!(
            e.event.kind,
            EventKind::WorkerProvisioned { .. } | EventKind::WorkerProvisioningFailed { .. }
        ) && e.event.worker_id() == Some(w.id)
    })
    .await;
    assert!(
        matches!(e.event.kind, EventKind::WorkerProvisioned { .. }),
        "{:?}",
        e.event.kind
    );
    let running = until(&fleet, JobKind::Ec2Sync, "running", |ws| {
        ws.iter()
            .any(|x| x.id == w.id && x.ec2_state == Ec2State::Running)
    })
    .await;
    let created = running.iter().find(|x| x.id == w.id).unwrap();
    assert!(created.instance_id.is_some());
    assert_eq!(created.created_by, admin);

    let w = fleet
        .engine
        .create_worker(req("doomed"), &admin)
        .await
        .unwrap();
    wait_event(&mut rx, "provisioning failed", |e| {
        matches!(e.event.kind, EventKind::WorkerProvisioningFailed { .. })
            && e.event.worker_id() == Some(w.id)
    })
    .await;
    let failed = fleet.engine.worker(w.id).await.unwrap();
    assert_eq!(failed.ec2_state, Ec2State::Failed);
    assert!(
        failed
            .state_reason
            .as_deref()
            .is_some_and(|r| r.contains("capacity")),
        "{failed:?}"
    );

    let err = fleet
        .engine
        .create_worker(
            CreateWorker {
                ami: AmiSelector::NamePattern("no-such-image-*".into()),
                ..req("x")
            },
            &admin,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ccm_engine::EngineError::Invalid { .. }),
        "{err}"
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn concurrent_lab_refreshes_should_not_duplicate_records() {
    let (fleet, _) = start(1, [127, 66, 0, 1], |_| {}).await;
    let ws = until(&fleet, JobKind::CmlSync, "ready", |ws| {
        ws[0].service.status == ServiceStatus::Ready
    })
    .await;
    let sim = fleet.sim.worker(0).unwrap();
    for _ in 0..3 {
        sim.import_lab_as_user(ccm_cml_sim::SAMPLE_LAB_YAML)
            .unwrap();
    }
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let engine = fleet.engine.clone();
            tokio::spawn(async move { engine.trigger_job(JobKind::Labs).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let labs = fleet.engine.labs(ws[0].id).await.unwrap();
    assert_eq!(labs.len(), 3);
    let mut ids: Vec<_> = labs.iter().map(|l| l.lab_id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    assert_eq!(
        fleet
            .engine
            .worker(ws[0].id)
            .await
            .unwrap()
            .labs_count
            .last_good
            .unwrap()
            .value,
        3
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn licence_registration_should_end_registered_or_failed() {
    let (fleet, _) = start(2, [127, 67, 0, 1], |o| {
        o.sim.licence_delay = Duration::from_millis(200);
        o.engine.licence.poll_interval = Duration::from_millis(100);
        o.engine.licence.timeout = Duration::from_secs(10);
    })
    .await;
    let ws = until(&fleet, JobKind::CmlSync, "ready", |ws| {
        ws.iter().all(|w| w.service.status == ServiceStatus::Ready)
    })
    .await;
    let mut rx = fleet.engine.subscribe();
    let admin = Actor::user("alice");
    fleet
        .engine
        .register_licence(
            ws[0].id,
            ccm_cml::Secret::new("GoodToken123"),
            false,
            &admin,
        )
        .await
        .unwrap();
    let e = wait_event(&mut rx, "registered", |e| {
        matches!(e.event.kind, EventKind::LicenceRegistered { .. })
    })
    .await;
    assert_eq!(e.event.worker_id(), Some(ws[0].id));

    fleet
        .engine
        .register_licence(ws[1].id, ccm_cml::Secret::new("bad-token-1"), false, &admin)
        .await
        .unwrap();
    let e = wait_event(&mut rx, "registration failed", |e| {
        matches!(e.event.kind, EventKind::LicenceRegistrationFailed { .. })
    })
    .await;
    assert_eq!(e.event.worker_id(), Some(ws[1].id));
    // The token is never in an event.
    let log = fleet
        .engine
        .store()
        .read(&Default::default())
        .await
        .unwrap();
    let text =
        serde_json::to_string(&log.iter().map(|e| e.event.clone()).collect::<Vec<_>>()).unwrap();
    assert!(!text.contains("GoodToken123") && !text.contains("bad-token-1"));
    // A malformed token is refused at once.
    let err = fleet
        .engine
        .register_licence(
            ws[1].id,
            ccm_cml::Secret::new("no spaces allowed"),
            false,
            &admin,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ccm_engine::EngineError::Invalid { .. }),
        "{err}"
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn refreshes_should_be_throttled_say_why_and_persist_nothing_when_skipped() {
    let (fleet, _) = start(1, [127, 68, 0, 1], |o| {
        o.resilience.refresh_throttle.min_interval = Duration::from_secs(600)
    })
    .await;
    let ws = until(&fleet, JobKind::CmlSync, "ready", |ws| {
        ws[0].service.status == ServiceStatus::Ready
    })
    .await;
    let id = ws[0].id;
    let me = Actor::user("a");
    assert_eq!(
        fleet.engine.refresh_worker(id, &me).await.unwrap(),
        ccm_engine::RefreshOutcome::Refreshed
    );
    let events = fleet.engine.worker_events(id, None, 500).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e.event.kind, EventKind::WorkerRefreshRequested { .. }))
            .count(),
        1,
        "the refresh that ran is recorded"
    );
    let head = fleet.engine.store().last_seq().await.unwrap();
    for _ in 0..20 {
        match fleet.engine.refresh_worker(id, &me).await.unwrap() {
            ccm_engine::RefreshOutcome::Skipped {
                reason: ccm_domain::RefreshSkip::Throttled,
                retry_in_seconds: Some(s),
            } => assert!(s > 500),
            other => panic!("expected throttled, got {other:?}"),
        }
    }
    fleet.engine.flush().await;
    assert_eq!(
        fleet.engine.store().last_seq().await.unwrap(),
        head,
        "throttled refreshes wrote nothing to the event log"
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn settings_changes_should_apply_without_a_restart_and_polls_never_overlap() {
    // Every CML request takes 500 ms: one sync (4 calls and a login) takes about 2.5 s.
    let (fleet, _) = start(2, [127, 69, 0, 1], |o| {
        o.sim.latency = Duration::from_millis(500)
    })
    .await;
    let sims: Vec<_> = (0..2).map(|i| fleet.sim.worker(i).unwrap()).collect();
    let info =
        |s: &ccm_cml_sim::SimWorker| s.counters().get(ccm_cml_sim::Endpoint::SystemInformation);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        sims.iter().all(|s| info(s) == 0),
        "background CML polling is off"
    );

    let mut settings = fleet.engine.settings().value;
    settings.polling.cml_enabled = true;
    settings.polling.cml_interval = Duration::from_millis(100);
    let err = fleet
        .engine
        .update_settings(settings.clone(), None, &Actor::user("a"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ccm_engine::EngineError::Invalid { .. }),
        "100 ms is below the minimum: {err}"
    );
    // Switched on at a 1 s interval, shorter than one sync: due slots come while the previous
    // sync still runs, and are skipped rather than started on top of it.
    settings.polling.cml_interval = Duration::from_secs(1);
    fleet
        .engine
        .update_settings(settings, None, &Actor::user("a"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    for s in &sims {
        let n = info(s);
        assert!(n >= 1, "polled once at least: {n}");
        // The first sync (probe, login, calls) takes about 1.5 s, later ones 0.5 s: due slots
        // come while a sync still runs. Never two at once for one worker (the simulator saw
        // at most one system_information request of a worker in flight at a time).
        let most = s
            .counters()
            .max_in_flight(ccm_cml_sim::Endpoint::SystemInformation);
        assert_eq!(most, 1, "overlapping polls of one worker ({n} requests)");
    }
    fleet.engine.flush().await;
    assert!(
        workers(&fleet)
            .await
            .iter()
            .all(|w| w.service.status == ServiceStatus::Ready)
    );
    let jobs = fleet.engine.jobs();
    let cml = jobs.iter().find(|j| j.job == JobKind::CmlSync).unwrap();
    assert!(
        cml.enabled && cml.runs >= 2 && cml.scheduled == 2,
        "{cml:?}"
    );
    fleet.shutdown().await;
}

// === image trust, guardrails, EC2 status checks (issue 12 items 1–2, issue 14) ===

fn squatter() -> ccm_cloud::Image {
    ccm_testbed::ec2::Ec2SimConfig::default_images()
        .into_iter()
        .find(|i| i.owner_id.as_deref() == Some(ccm_testbed::ec2::SQUATTER_ACCOUNT))
        .unwrap()
}

fn refusal(err: ccm_engine::EngineError) -> ccm_engine::PolicyRefusal {
    match err {
        ccm_engine::EngineError::Refused(r) => r,
        other => panic!("expected a guardrail refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_name_lookup_should_skip_a_newer_public_image_of_another_account() {
    let (fleet, _) = start(1, [127, 151, 0, 1], |o| o.spare = 2).await;
    let own = ccm_testbed::ec2::Ec2SimConfig::default_images()[0].clone();
    let squatter = squatter();
    assert!(
        squatter.creation_date > own.creation_date,
        "the squatter is newer"
    );
    let admin = Actor::user("alice");
    let req = |ami| CreateWorker {
        name: "trusting".into(),
        region: None,
        instance_type: None,
        ami,
        tags: Default::default(),
    };
    // The default pattern (cml-controller-2.9*) finds only this account's image.
    let preview = fleet
        .engine
        .preview_image(None, &AmiSelector::Default)
        .await
        .unwrap();
    assert_eq!(preview.id, own.id);
    let mut rx = fleet.engine.subscribe();
    let w = fleet
        .engine
        .create_worker(
            req(AmiSelector::NamePattern("cml-controller-2.9*".into())),
            &admin,
        )
        .await
        .unwrap();
    wait_event(&mut rx, "provisioned", |e| {
        matches!(e.event.kind, EventKind::WorkerProvisioned { .. })
            && e.event.worker_id() == Some(w.id)
    })
    .await;
    let ami = w.ami.unwrap();
    assert_eq!(ami.id, own.id);
    assert_eq!(
        ami.owner.as_deref(),
        Some(ccm_testbed::ec2::DEFAULT_ACCOUNT),
        "the owner is recorded"
    );

    // The squatter's id is refused, naming its owner and the rule; nothing is launched.
    let launches = fleet.cloud.calls("RunInstances");
    let before = workers(&fleet).await.len();
    let err = fleet
        .engine
        .create_worker(req(AmiSelector::Id(squatter.id.clone())), &admin)
        .await
        .unwrap_err();
    let r = refusal(err);
    assert_eq!(r.kind, ccm_engine::RefusalKind::NotAllowed);
    assert_eq!(r.rule, "provisioning.ami_owners");
    assert_eq!(r.field, Some("ami_id"));
    assert!(
        r.message.contains(ccm_testbed::ec2::SQUATTER_ACCOUNT),
        "{}",
        r.message
    );
    assert!(r.message.contains("(self)"), "{}", r.message);
    assert_eq!(workers(&fleet).await.len(), before);
    assert_eq!(fleet.cloud.calls("RunInstances"), launches);

    // An instance type beyond the allowed ones (default: the configured one only).
    let err = fleet
        .engine
        .create_worker(
            CreateWorker {
                instance_type: Some(ccm_domain::InstanceType::parse("p5.48xlarge").unwrap()),
                ..req(AmiSelector::Default)
            },
            &admin,
        )
        .await
        .unwrap_err();
    let r = refusal(err);
    assert_eq!(r.kind, ccm_engine::RefusalKind::NotAllowed);
    assert_eq!(r.rule, "provisioning.allowed_instance_types");
    assert!(r.message.contains("m5zn.metal"), "{}", r.message);
    fleet.shutdown().await;

    // Listing the other account trusts it: its (newer) image then wins a name lookup.
    let (fleet, _) = start(1, [127, 152, 0, 1], |o| {
        o.spare = 2;
        o.engine.provisioning.ami_owners =
            vec!["self".into(), ccm_testbed::ec2::SQUATTER_ACCOUNT.into()];
    })
    .await;
    let preview = fleet
        .engine
        .preview_image(None, &AmiSelector::Default)
        .await
        .unwrap();
    assert_eq!(preview.id, squatter.id);
    let w = fleet
        .engine
        .create_worker(req(AmiSelector::Id(squatter.id.clone())), &admin)
        .await
        .unwrap();
    assert_eq!(
        w.ami.unwrap().owner.as_deref(),
        Some(ccm_testbed::ec2::SQUATTER_ACCOUNT)
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn below_admin_an_import_should_take_only_instances_the_import_filter_matches() {
    let (fleet, _) = start(1, [127, 153, 0, 1], |o| o.spare = 2).await;
    let region = ccm_cloud::CloudProvider::regions(&fleet.cloud)[0].clone();
    let squatter = squatter();
    let foreign = ccm_cloud::CloudProvider::run_instance(
        &fleet.cloud,
        &region,
        &ccm_cloud::RunSpec::new(
            squatter.id.clone(),
            ccm_domain::InstanceType::parse("m5zn.metal").unwrap(),
            "foreign",
        ),
    )
    .await
    .unwrap();
    let own = workers(&fleet).await[0].instance_id.clone().unwrap();
    let import = |selector, restricted| ImportRequest {
        region: None,
        selector,
        all: true,
        restricted_to_filter: restricted,
    };
    let manager = Actor::user("mona");
    for selector in [
        ImportSelector::InstanceIds(vec![own.clone(), foreign.id.clone()]),
        ImportSelector::AmiId(squatter.id.clone()),
    ] {
        let err = fleet
            .engine
            .import_workers(import(selector, true), &manager)
            .await
            .unwrap_err();
        let r = refusal(err);
        assert_eq!(r.kind, ccm_engine::RefusalKind::Role);
        assert_eq!(r.rule, "import");
        assert!(r.message.contains(foreign.id.as_str()), "{}", r.message);
        assert!(
            !r.message.contains(own.as_str()),
            "only the outsider is named: {}",
            r.message
        );
    }
    assert_eq!(workers(&fleet).await.len(), 1, "nothing was imported");
    // An instance the filter matches is fine below admin.
    let report = fleet
        .engine
        .import_workers(
            import(ImportSelector::InstanceIds(vec![own]), true),
            &manager,
        )
        .await
        .unwrap();
    assert_eq!(report.existing.len(), 1);
    // An admin may import the outsider; its image's owner is recorded.
    let report = fleet
        .engine
        .import_workers(
            import(ImportSelector::InstanceIds(vec![foreign.id.clone()]), false),
            &Actor::user("alice"),
        )
        .await
        .unwrap();
    assert_eq!(report.imported.len(), 1);
    let w = fleet.engine.worker(report.imported[0]).await.unwrap();
    let ami = w.ami.unwrap();
    assert_eq!(
        ami.owner.as_deref(),
        Some(ccm_testbed::ec2::SQUATTER_ACCOUNT)
    );
    assert_eq!(ami.name.as_deref(), Some(squatter.name.as_str()));
    fleet.shutdown().await;
}

#[tokio::test]
async fn an_impaired_status_check_should_degrade_a_worker_whose_cml_still_answers() {
    let (fleet, _) = start(2, [127, 154, 0, 1], |_| {}).await;
    until(&fleet, JobKind::CmlSync, "all ready", |ws| {
        ws.iter().all(|w| w.service.status == ServiceStatus::Ready)
    })
    .await;
    // One DescribeInstanceStatus per region and page, not per worker.
    let calls = fleet.cloud.calls("DescribeInstanceStatus");
    fleet.engine.trigger_job(JobKind::Ec2Sync).await.unwrap();
    assert_eq!(fleet.cloud.calls("DescribeInstanceStatus"), calls + 1);
    let ws = workers(&fleet).await;
    for w in &ws {
        let checks = w.ec2_status.last_good.as_ref().expect("checks read").value;
        assert!(!checks.impaired(), "{checks:?}");
        assert_eq!(w.service.status, ServiceStatus::Ready);
    }

    let (sick, well) = (&ws[0], &ws[1]);
    let mut rx = fleet.engine.subscribe();
    fleet.cloud.set_status_checks(
        sick.instance_id.as_ref().unwrap(),
        Some(ccm_domain::StatusChecks {
            system: ccm_domain::CheckStatus::Ok,
            instance: ccm_domain::CheckStatus::Impaired,
        }),
    );
    fleet.engine.trigger_job(JobKind::Ec2Sync).await.unwrap();
    let e = wait_event(&mut rx, "status checks changed", |e| {
        matches!(e.event.kind, EventKind::WorkerStatusChecksChanged { .. })
            && e.event.worker_id() == Some(sick.id)
    })
    .await;
    assert!(matches!(
        e.event.kind,
        EventKind::WorkerStatusChecksChanged {
            instance: ccm_domain::CheckStatus::Impaired,
            ..
        }
    ));
    let is_impaired_reason =
        |r: &ccm_domain::Reason| r.code == ccm_domain::ReasonCode::Ec2StatusImpaired;
    let w = fleet.engine.worker(sick.id).await.unwrap();
    assert_eq!(w.service.status, ServiceStatus::Degraded);
    assert!(
        w.service.reasons.iter().any(is_impaired_reason),
        "{:?}",
        w.service.reasons
    );
    assert_eq!(
        fleet.engine.worker(well.id).await.unwrap().service.status,
        ServiceStatus::Ready
    );
    // CML still answers: a CML sync keeps it degraded for EC2's reason alone.
    fleet.engine.trigger_job(JobKind::CmlSync).await.unwrap();
    let w = fleet.engine.worker(sick.id).await.unwrap();
    assert_eq!(w.service.status, ServiceStatus::Degraded);
    assert_eq!(w.service.reasons.len(), 1, "{:?}", w.service.reasons);
    assert_eq!(w.service.cml_status, Some(ServiceStatus::Ready));

    // Recovered checks lift it again.
    fleet
        .cloud
        .set_status_checks(sick.instance_id.as_ref().unwrap(), None);
    fleet.engine.trigger_job(JobKind::Ec2Sync).await.unwrap();
    let w = fleet.engine.worker(sick.id).await.unwrap();
    assert_eq!(w.service.status, ServiceStatus::Ready);
    assert!(!w.service.reasons.iter().any(is_impaired_reason));
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_failed_status_read_should_still_apply_states_and_keep_the_checks_stale() {
    let (fleet, _) = start(1, [127, 155, 0, 1], |_| {}).await;
    fleet.engine.trigger_job(JobKind::Ec2Sync).await.unwrap();
    let w = workers(&fleet).await.remove(0);
    let checks = w.ec2_status.last_good.clone().expect("checks read");
    let instance = w.instance_id.clone().unwrap();
    // The worker is stopped outside ccm, and the status call fails in the same sync.
    ccm_cloud::CloudProvider::stop_instances(&fleet.cloud, &w.region, &[instance])
        .await
        .unwrap();
    fleet.cloud.fail_next_of("DescribeInstanceStatus", 1);
    let err = fleet
        .engine
        .trigger_job(JobKind::Ec2Sync)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(w.region.as_str()), "{err}");
    let w = fleet.engine.worker(w.id).await.unwrap();
    assert!(
        matches!(w.ec2_state, Ec2State::Stopping | Ec2State::Stopped),
        "the state was applied: {:?}",
        w.ec2_state
    );
    assert_eq!(
        w.ec2_status.last_good,
        Some(checks),
        "the last good checks are kept"
    );
    let error = w
        .ec2_status
        .error
        .as_ref()
        .expect("the failed read is recorded");
    assert_eq!(error.call, ccm_domain::CmlCall::Ec2Status);
    assert_eq!(w.ec2_status.consecutive_failures, 1);
    fleet.shutdown().await;
}

#[tokio::test]
async fn stale_workers_should_be_the_running_ones_whose_cml_data_is_too_old() {
    let (fleet, clock) = start(2, [127, 132, 0, 1], |_| {}).await;
    fleet.engine.trigger_job(JobKind::Ec2Sync).await.unwrap();
    fleet.engine.trigger_job(JobKind::CmlSync).await.unwrap();
    assert_eq!(fleet.engine.stale_workers(), 0);
    let max_age = fleet.engine.stale_max_age();
    clock.advance(max_age + Duration::from_secs(1));
    assert_eq!(fleet.engine.stale_workers(), 2);
    // A fresh sync makes them current again.
    fleet.engine.trigger_job(JobKind::CmlSync).await.unwrap();
    assert_eq!(fleet.engine.stale_workers(), 0);
    fleet.shutdown().await;
}

#[tokio::test]
async fn an_endpoint_tag_should_redirect_one_worker_and_a_bad_one_should_degrade_only_its_worker() {
    use ccm_cloud::CloudProvider;
    let (fleet, _clock) = start(3, [127, 72, 0, 1], |o| o.spare = 1).await;
    let ws = until(&fleet, JobKind::CmlSync, "all ready", |ws| {
        ws.iter().all(|w| w.service.status == ServiceStatus::Ready)
    })
    .await;
    let (moved, bad) = (ws[0].clone(), ws[1].clone());
    let spare = fleet.sim.worker(3).unwrap(); // a CML no instance's address points at
    spare.power_on(Duration::ZERO);
    let tag = |w: &Worker, value: String| {
        let cloud = fleet.cloud.clone();
        let (region, id) = (w.region.clone(), w.instance_id.clone().unwrap());
        async move {
            let tags = [(ccm_domain::worker::DEFAULT_ENDPOINT_TAG.to_owned(), value)].into();
            cloud.create_tags(&region, &[id], &tags).await.unwrap();
        }
    };
    tag(&moved, format!("{}/", spare.endpoint())).await;
    tag(&bad, "https://admin:s3cret@cml.example".to_owned()).await;
    fleet.engine.trigger_job(JobKind::Ec2Sync).await.unwrap();

    let w = fleet.engine.worker(moved.id).await.unwrap();
    assert_eq!(w.endpoint, Some(spare.endpoint()));
    // The tagged CML is polled (the fleet index follows the stored change within a cycle).
    let before = spare.counters().requests;
    until(&fleet, JobKind::CmlSync, "the tagged CML polled", |_| {
        spare.counters().requests > before
    })
    .await;
    let w = fleet.engine.worker(moved.id).await.unwrap();
    assert_eq!(w.service.status, ServiceStatus::Ready);

    let w = fleet.engine.worker(bad.id).await.unwrap();
    assert_eq!(w.endpoint, None);
    assert_eq!(w.service.status, ServiceStatus::Degraded);
    let reasons = format!("{:?}", w.service.reasons);
    assert!(reasons.contains("ccm:cml-endpoint"), "{reasons}");
    assert!(!reasons.contains("s3cret"), "{reasons}");
    let third = fleet.engine.worker(ws[2].id).await.unwrap();
    assert_eq!(
        third.service.status,
        ServiceStatus::Ready,
        "the others are untouched"
    );
    fleet.shutdown().await;
}
