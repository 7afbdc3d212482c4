//! Job events: one `ccm.job.started` and one `ccm.job.completed` (or `ccm.job.failed`) per
//! fleet-job run and per triggered cycle, with duration and counts — never per worker poll.
//!
//! Addresses 127.131.x are this file's.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use ccm_domain::EventKind;
use ccm_engine::{BusEvent, JobKind};
use ccm_store::{EventQuery, SqliteStore};
use ccm_testbed::embedded::{Embedded, EmbeddedOptions};
use tokio::sync::broadcast::Receiver;

/// The `job` of a job event.
trait JobOf {
    fn kind_job(&self) -> Option<&str>;
}

impl JobOf for ccm_domain::Event {
    fn kind_job(&self) -> Option<&str> {
        match &self.kind {
            EventKind::JobStarted { job, .. }
            | EventKind::JobCompleted { job, .. }
            | EventKind::JobFailed { job, .. } => Some(job),
            _ => None,
        }
    }
}

async fn start(workers: usize, base: [u8; 4]) -> Embedded {
    let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let (opts, _clock) = EmbeddedOptions::for_tests(workers, Ipv4Addr::from(base), store);
    Embedded::start(opts).await.unwrap()
}

/// The events of `job` received so far (none are expected after the awaited call returned).
/// Other jobs are left out: a fleet job of the engine's own schedule (event retention runs
/// always) may announce a run at any time, e.g. when a loaded machine delays the test.
fn job_events(rx: &mut Receiver<BusEvent>, job: &str) -> Vec<EventKind> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if e.event.type_name().starts_with("ccm.job.") && e.event.kind_job() == Some(job) {
            out.push(e.event.kind.clone());
        }
    }
    out
}

#[tokio::test]
async fn a_triggered_cycle_should_announce_its_start_and_its_counts() {
    let fleet = start(3, [127, 131, 0, 1]).await;
    fleet.engine.trigger_job(JobKind::Ec2Sync).await.unwrap();
    let mut rx = fleet.engine.subscribe();
    fleet.engine.trigger_job(JobKind::CmlSync).await.unwrap();
    let events = job_events(&mut rx, "cml_sync");
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[0],
        EventKind::JobStarted {
            job: "cml_sync".into(),
            trigger: "on_demand".into()
        }
    );
    let EventKind::JobCompleted { job, summary, .. } = &events[1] else {
        panic!("{:?}", events[1]);
    };
    assert_eq!(job, "cml_sync");
    assert_eq!(summary["trigger"], "on_demand");
    assert_eq!(summary["workers"], 3, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["probing"], 0, "{summary}");

    // A benchmark cycle is announced the same way, as a cycle.
    let report = fleet.engine.run_cml_cycle().await;
    assert_eq!(report.workers, 3);
    let events = job_events(&mut rx, "cml_sync");
    assert!(
        matches!(&events[..], [EventKind::JobStarted { trigger, .. }, EventKind::JobCompleted { .. }] if trigger == "cycle"),
        "{events:?}"
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_failing_fleet_job_should_leave_job_failed_in_the_log_with_its_error() {
    let fleet = start(2, [127, 131, 1, 1]).await;
    let mut rx = fleet.engine.subscribe();
    fleet.engine.trigger_job(JobKind::Ec2Sync).await.unwrap();
    let ok = job_events(&mut rx, "ec2_sync");
    assert!(
        matches!(&ok[..], [EventKind::JobStarted { job, .. }, EventKind::JobCompleted { summary, .. }] if job == "ec2_sync" && summary["regions"] == 1),
        "{ok:?}"
    );

    fleet.cloud.fail_next_unavailable(1_000);
    assert!(fleet.engine.trigger_job(JobKind::Ec2Sync).await.is_err());
    fleet.cloud.fail_next_unavailable(0);
    let failed = job_events(&mut rx, "ec2_sync");
    let [
        EventKind::JobStarted { .. },
        EventKind::JobFailed {
            job,
            error,
            trigger,
            duration_ms,
        },
    ] = &failed[..]
    else {
        panic!("{failed:?}");
    };
    assert_eq!(job, "ec2_sync");
    assert_eq!(trigger.as_deref(), Some("on_demand"));
    assert!(duration_ms.is_some());
    assert!(!error.is_empty());

    // Started and completed are for live views; the failure is kept.
    let logged = fleet
        .engine
        .store()
        .read(&EventQuery {
            types: vec![
                "ccm.job.started".into(),
                "ccm.job.completed".into(),
                "ccm.job.failed".into(),
            ],
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].event.type_name(), "ccm.job.failed");
    fleet.shutdown().await;
}

#[tokio::test]
async fn scheduled_worker_polls_should_not_announce_job_events() {
    let fleet = start(2, [127, 131, 2, 1]).await;
    fleet.engine.trigger_job(JobKind::Ec2Sync).await.unwrap();
    let mut rx = fleet.engine.subscribe();
    let mut settings = fleet.engine.settings();
    settings.value.polling.cml_enabled = true;
    settings.value.polling.cml_interval = Duration::from_secs(1);
    fleet
        .engine
        .update_settings(
            settings.value,
            Some(settings.version),
            &ccm_domain::Actor::system("test"),
        )
        .await
        .unwrap();
    // Four scheduled syncs (two per worker) while watching for job events.
    let mut synced = 0;
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while synced < 4 {
            let e = rx.recv().await.unwrap();
            match e.event.type_name() {
                "ccm.worker.synced" => synced += 1,
                // Fleet jobs (event retention runs always) announce their runs; polls do not.
                t if t.starts_with("ccm.job.") && e.event.kind_job() == Some("cml_sync") => {
                    seen.push(e.event.kind.clone())
                }
                _ => {}
            }
        }
    })
    .await
    .expect("scheduled CML syncs");
    assert!(seen.is_empty(), "{seen:?}");
    fleet.shutdown().await;
}

#[tokio::test]
async fn the_webhook_job_should_be_granted_but_never_run_by_the_engine() {
    let fleet = start(1, [127, 131, 3, 1]).await;
    let grant = fleet
        .engine
        .ownership()
        .may_run(JobKind::Webhooks, None)
        .expect("a single node runs every fleet job");
    assert!(fleet.engine.ownership().holds(&grant));
    assert!(
        fleet
            .engine
            .jobs()
            .iter()
            .all(|j| j.job != JobKind::Webhooks),
        "not on the engine's board"
    );
    let err = fleet
        .engine
        .trigger_job(JobKind::Webhooks)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ccm_engine::EngineError::Conflict(_)),
        "{err:?}"
    );
    assert!(
        fleet
            .engine
            .tasks()
            .iter()
            .all(|t| t.name != "job:webhooks"),
        "no loop of its own in the engine"
    );
    fleet.shutdown().await;
}
