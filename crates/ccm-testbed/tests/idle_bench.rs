//! `ccm bench idle` end to end on a tiny trace: the real engine, the simulated cloud and CML,
//! a manual clock. What each policy does with three workers over one day is known in advance.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::net::Ipv4Addr;
use std::time::Duration;

use ccm_testbed::bench::idle::{IdleOptions, PolicyKind, Trace, idle};

const TRACE: &str = "\
name tiny
start 2026-03-02   # a Monday
days 1
workers 3
# Worker 1 works in the morning, then leaves; worker 2 starts a long run and leaves it
# running on purpose; worker 3 is never used.
on Mon 09:00 11:00 interactive workers 1
on Mon 09:00 10:00 interactive workers 2
on Mon 10:00 24:00 running workers 2
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_policy_should_stop_what_it_can_and_wrongful_pauses_should_be_counted() {
    let trace = Trace::parse("tiny", TRACE).unwrap();
    let mut opts = IdleOptions::new(trace);
    opts.policies = vec![
        PolicyKind::Ccm,
        PolicyKind::CcmNodesIgnored,
        PolicyKind::Schedule,
    ];
    opts.tick = Duration::from_secs(15 * 60);
    opts.boot = Duration::from_secs(15 * 60);
    opts.listen_base = Ipv4Addr::new(127, 78, 0, 1);
    let r = idle(opts).await.unwrap();
    let p = |name: &str| r.policies.iter().find(|p| p.policy == name).unwrap();
    let (ccm, ignored, schedule) = (p("ccm"), p("ccm-nodes-ignored"), p("fixed-schedule"));

    // Idle per the trace: worker 1 22 h of 24, worker 2 9 h, worker 3 24 h = 55 h;
    // stoppable: minus the 1 h timeout per idle stretch (w1: 2, w2: 1, w3: 1) = 51 h.
    assert!((ccm.idle_hours - 55.0).abs() < 0.01, "{ccm:?}");
    assert!((ccm.stoppable_hours - 51.0).abs() < 0.01, "{ccm:?}");

    // ccm: the long run counts as use; the idle ones are stopped an hour (one tick at most
    // later) after their last activity; nothing it stopped was in use or used again soon.
    assert_eq!(ccm.wrongful_pauses, 0, "{ccm:?}");
    assert!(ccm.pauses >= 2, "{ccm:?}");
    assert!(ccm.percent_stopped >= 90.0, "{ccm:?}");
    assert_eq!(
        ccm.user_resumes, 2,
        "workers 1 and 2 were stopped overnight: {ccm:?}"
    );
    assert!(ccm.wait_hours > 0.0);

    // Running nodes ignored: the long run is paused while in use.
    assert!(ignored.wrongful_in_use >= 1, "{ignored:?}");
    assert!(ignored.money_saved >= ccm.money_saved - 0.01);

    // The fixed schedule stops everything at once (Monday 00:00 is outside 08-18), starts
    // it at 08:00 and stops it at 18:00, in the middle of worker 2's run.
    assert_eq!(schedule.wrongful_in_use, 1, "{schedule:?}");
    assert!(
        schedule.instance_hours > ccm.instance_hours,
        "{schedule:?} {ccm:?}"
    );
}

/// Skipping the quiet ticks is a shortcut, not a different measurement: on a small random
/// fleet (sessions, lunch gaps, design work, overnight runs) every figure of ccm and of the
/// original rule is the same as with ccm's jobs run at every tick. Run twice each, it also
/// shows the engine policies are reproducible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_quiet_ticks_should_change_no_figure_and_runs_should_repeat() {
    let run = |skip: bool, base: u8| async move {
        let mut opts = IdleOptions::new(Trace::random(3, 6, 2));
        opts.policies = vec![PolicyKind::Ccm, PolicyKind::Original];
        opts.tick = Duration::from_secs(10 * 60);
        opts.skip_quiet = skip;
        opts.listen_base = Ipv4Addr::new(127, 79, base, 1);
        let mut r = idle(opts).await.unwrap();
        let ticks: Vec<u64> = r.policies.iter().map(|p| p.engine_ticks).collect();
        for p in &mut r.policies {
            p.run_seconds = 0.0;
            p.engine_ticks = 0;
        }
        (r, ticks)
    };
    let (every, every_ticks) = run(false, 0).await;
    let (skipped, skipped_ticks) = run(true, 1).await;
    // Two days of 10-minute ticks: 288 each; the quiet nights are skipped.
    assert_eq!(every_ticks, vec![288, 288]);
    assert!(
        skipped_ticks.iter().all(|t| *t < 200),
        "quiet ticks should be skipped: {skipped_ticks:?}"
    );
    assert!(
        every.policies.iter().all(|p| p.pauses > 0),
        "the trace pauses workers: {every:?}"
    );
    assert_eq!(every, skipped);
    assert_eq!(
        skipped,
        run(true, 2).await.0,
        "a second run repeats the first"
    );
}
