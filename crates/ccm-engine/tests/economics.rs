//! Snoozes, warnings and schedules end to end, on the embedded fleet (CML simulator on
//! loopback, simulated cloud, in-memory store). Wall time is a manual clock the tests step;
//! jobs are triggered explicitly, so nothing waits on a timer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use ccm_domain::idle::IdleSettings;
use ccm_domain::lifecycle::{PauseReason, ResumeReason};
use ccm_domain::schedule::ScheduleRule;
use ccm_domain::{Actor, Ec2State, EventKind, RuntimeSettings, ServiceStatus, Worker};
use ccm_engine::{JobKind, ManualClock};
use ccm_store::{SqliteStore, WorkerFilter};
use ccm_testbed::embedded::{Embedded, EmbeddedOptions};
use chrono::Timelike;

async fn start(
    workers: usize,
    base: [u8; 4],
    settings: RuntimeSettings,
) -> (Embedded, Arc<ManualClock>) {
    let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let (mut opts, clock) = EmbeddedOptions::for_tests(workers, Ipv4Addr::from(base), store);
    opts.settings = settings;
    let fleet = Embedded::start(opts).await.unwrap();
    (fleet, clock)
}

fn settings() -> RuntimeSettings {
    RuntimeSettings {
        polling: ccm_domain::settings::PollingSettings::all_off(),
        idle: IdleSettings {
            busy_fleet_percent: 0,
            // The fleet is imported by ccm and nobody uses it: these tests are about the
            // plain timeout, not `nobody_since_start` (its own test is in ccm-domain).
            nobody_since_start_timeout: IdleSettings::default().timeout,
            ..IdleSettings::default()
        },
        ..RuntimeSettings::default()
    }
}

async fn until<F: Fn(&[Worker]) -> bool>(fleet: &Embedded, job: JobKind, what: &str, check: F) {
    for _ in 0..100 {
        fleet.engine.trigger_job(job).await.ok();
        let ws = fleet
            .engine
            .workers(&WorkerFilter::default())
            .await
            .unwrap()
            .items;
        if check(&ws) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition never held: {what}");
}

/// The first Wednesday 12:00 UTC at least a day after `t`.
fn next_wednesday_noon(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::Datelike;
    let mut day = t.date_naive() + chrono::Duration::days(1);
    while day.weekday() != chrono::Weekday::Wed {
        day += chrono::Duration::days(1);
    }
    day.and_hms_opt(12, 0, 0).unwrap().and_utc()
}

async fn kinds(fleet: &Embedded, w: &Worker) -> Vec<EventKind> {
    fleet
        .engine
        .worker_events(w.id, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.kind)
        .collect()
}

#[tokio::test]
async fn a_warning_should_come_before_the_pause_and_a_snooze_should_hold_it_off() {
    let (fleet, clock) = start(1, [127, 64, 0, 1], settings()).await;
    until(&fleet, JobKind::CmlSync, "ready", |ws| {
        ws[0].service.status == ServiceStatus::Ready
    })
    .await;
    let id = fleet
        .engine
        .workers(&WorkerFilter::default())
        .await
        .unwrap()
        .items[0]
        .id;

    // 51 minutes without activity: the pause is due at 60, the warning at 50.
    clock.advance(Duration::from_secs(51 * 60));
    fleet.engine.trigger_job(JobKind::Activity).await.unwrap();
    let w = fleet.engine.worker(id).await.unwrap();
    assert_eq!(w.ec2_state, Ec2State::Running);
    let warnings = |ks: &[EventKind]| {
        ks.iter()
            .filter(|k| {
                matches!(
                    k,
                    EventKind::WorkerIdleWarning {
                        reason: PauseReason::IdleTimeout,
                        ..
                    }
                )
            })
            .count()
    };
    assert_eq!(warnings(&kinds(&fleet, &w).await), 1);
    // Once per coming pause, not once per poll.
    fleet.engine.trigger_job(JobKind::Activity).await.unwrap();
    assert_eq!(warnings(&kinds(&fleet, &w).await), 1);

    // Someone keeps it awake for two hours: no pause at 61 minutes.
    let until_at = fleet.engine.now() + chrono::Duration::hours(2);
    let w = fleet
        .engine
        .snooze_worker(id, until_at, &Actor::user("bob"))
        .await
        .unwrap();
    assert_eq!(w.monitoring.snooze.as_ref().unwrap().by, Actor::user("bob"));
    clock.advance(Duration::from_secs(10 * 60));
    fleet.engine.trigger_job(JobKind::Activity).await.unwrap();
    assert_eq!(
        fleet.engine.worker(id).await.unwrap().ec2_state,
        Ec2State::Running
    );

    // A snooze in the past is refused (one line, naming the field).
    let err = fleet
        .engine
        .snooze_worker(id, fleet.engine.now(), &Actor::user("bob"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("until"), "{err}");

    // It ends by itself: past its end the worker is paused for idleness.
    clock.advance(Duration::from_secs(111 * 60));
    fleet.engine.trigger_job(JobKind::Activity).await.unwrap();
    let w = fleet.engine.worker(id).await.unwrap();
    assert!(
        matches!(w.ec2_state, Ec2State::Stopping | Ec2State::Stopped),
        "{}",
        w.ec2_state
    );
    assert_eq!(w.monitoring.pause_reason, Some(PauseReason::IdleTimeout));
    let ks = kinds(&fleet, &w).await;
    assert!(
        ks.iter()
            .any(|k| matches!(k, EventKind::WorkerSnoozed { .. }))
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_schedule_should_stop_a_worker_in_off_hours_and_start_it_when_they_end() {
    // Off-hours from 10 to 70 minutes after "now", as a daily UTC window. "Now" is the next
    // Wednesday 12:00 UTC, not the wall clock: a window across midnight or Monday 00:00 UTC
    // (where the savings report starts a new ISO week, splitting the stopped hour in two
    // groups) would make the outcome depend on when the test runs.
    let now = next_wednesday_noon(chrono::Utc::now());
    let hm = |t: chrono::DateTime<chrono::Utc>| format!("{:02}:{:02}", t.hour(), t.minute());
    let from = now + chrono::Duration::minutes(10);
    let to = now + chrono::Duration::minutes(70);
    let mut s = settings();
    s.idle.enabled = false; // only the schedule acts here
    s.schedules = vec![
        serde_json::from_value::<ScheduleRule>(serde_json::json!({
            "selector": "tag:ccm:cml=true",
            "off_hours": format!("daily {}-{} UTC", hm(from), hm(to)),
        }))
        .unwrap(),
    ];
    let (fleet, clock) = start(1, [127, 65, 0, 1], s).await;
    clock.set(now);
    until(&fleet, JobKind::CmlSync, "ready", |ws| {
        ws[0].service.status == ServiceStatus::Ready
    })
    .await;
    let id = fleet
        .engine
        .workers(&WorkerFilter::default())
        .await
        .unwrap()
        .items[0]
        .id;

    // Working hours, 5 minutes before the window: a warning, no stop.
    clock.set(now + chrono::Duration::minutes(6));
    fleet.engine.trigger_job(JobKind::Schedules).await.unwrap();
    let w = fleet.engine.worker(id).await.unwrap();
    assert_eq!(w.ec2_state, Ec2State::Running);
    assert!(kinds(&fleet, &w).await.iter().any(|k| matches!(
        k,
        EventKind::WorkerIdleWarning {
            reason: PauseReason::Schedule,
            ..
        }
    )));

    // Off-hours: stopped, with the reason.
    clock.set(now + chrono::Duration::minutes(11));
    fleet.engine.trigger_job(JobKind::Schedules).await.unwrap();
    until(&fleet, JobKind::Ec2Sync, "stopped", |ws| {
        ws[0].ec2_state == Ec2State::Stopped
    })
    .await;
    let w = fleet.engine.worker(id).await.unwrap();
    assert_eq!(w.monitoring.pause_reason, Some(PauseReason::Schedule));
    assert_eq!(w.monitoring.pauses.schedule, 1);

    // Still off-hours: nothing starts it.
    clock.set(now + chrono::Duration::minutes(40));
    fleet.engine.trigger_job(JobKind::Schedules).await.unwrap();
    assert_eq!(
        fleet.engine.worker(id).await.unwrap().ec2_state,
        Ec2State::Stopped
    );

    // The window ends: started again, reason `schedule`.
    clock.set(now + chrono::Duration::minutes(71));
    fleet.engine.trigger_job(JobKind::Schedules).await.unwrap();
    until(&fleet, JobKind::Ec2Sync, "running", |ws| {
        ws[0].ec2_state == Ec2State::Running
    })
    .await;
    let w = fleet.engine.worker(id).await.unwrap();
    assert_eq!(w.monitoring.resumes.schedule, 1);
    assert!(kinds(&fleet, &w).await.iter().any(|k| matches!(
        k,
        EventKind::WorkerResumed {
            reason: ResumeReason::Schedule,
            ..
        }
    )));
    // The stopped hours count as savings by reason `schedule`.
    let report = fleet.engine.savings(None).await.unwrap();
    assert!(
        report
            .groups
            .iter()
            .any(|g| g.reason == "schedule" && g.hours > 0.9)
    );
    fleet.shutdown().await;
}
