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

/// The sweep runs each cheap baseline at its handful of settings (the default once), and the
/// fair comparison picks, per baseline, the most money among the settings with no more
/// wrongful pauses than ccm's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_should_run_each_setting_once_and_compare_at_equal_wrongful_pauses() {
    let trace = Trace::parse("tiny", TRACE).unwrap();
    let mut opts = IdleOptions::new(trace);
    opts.policies = vec![PolicyKind::Ccm, PolicyKind::Cpu, PolicyKind::Schedule];
    opts.tick = Duration::from_secs(15 * 60);
    opts.boot = Duration::from_secs(15 * 60);
    opts.listen_base = Ipv4Addr::new(127, 78, 1, 1);
    opts.sweep = true;
    let r = idle(opts).await.unwrap();
    let names: Vec<&str> = r.sweep.iter().map(|p| p.policy.as_str()).collect();
    assert_eq!(
        names,
        [
            "cpu-threshold (window 15m)",
            "cpu-threshold (window 30m)",
            "cpu-threshold (window 120m)",
            "cpu-threshold (window 240m)",
            "fixed-schedule (07-19)",
            "fixed-schedule (07-21)",
            "fixed-schedule (06-22)",
            "fixed-schedule (00-24)",
        ],
        "the defaults (1 h, 08-18) ran once, as the plain baselines"
    );
    // Weekdays all day: the schedule stops nothing on a Monday but at the first tick.
    let all_day = r
        .sweep
        .iter()
        .find(|p| p.policy.ends_with("(00-24)"))
        .unwrap();
    assert!(all_day.pauses <= 3, "{all_day:?}");
    let ccm = r.policies.iter().find(|p| p.policy == "ccm").unwrap();
    assert_eq!(r.fair.len(), 2, "{:?}", r.fair);
    for f in &r.fair {
        assert_eq!(f.ccm_wrongful, ccm.wrongful_pauses);
        let settings: Vec<_> = r
            .policies
            .iter()
            .chain(&r.sweep)
            .filter(|p| p.policy.starts_with(&f.baseline))
            .collect();
        assert_eq!(f.settings_measured, settings.len());
        let best = settings
            .iter()
            .filter(|p| p.wrongful_pauses <= ccm.wrongful_pauses)
            .map(|p| p.money_saved)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        assert_eq!(f.best_money, best, "{f:?}");
        if let Some(b) = best {
            assert!((f.ccm_ahead.unwrap() - (ccm.money_saved - b)).abs() < 1e-9);
        }
    }
    assert!(ccm_testbed::bench::idle::table(&r).contains("fair: ccm"));
}

/// A user who arrives at a stopped worker waits for it, then logs in as soon as CML is ready
/// (their actions while it booted are lost): ccm sees them from then on. Worker 1's designer
/// acts rarely (one action a day on average): without that log-in, the last thing ccm saw is
/// the resume, and the pause an hour after it would fall into the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_waited_for_a_resume_should_log_in_when_the_worker_is_ready() {
    let trace = Trace::parse(
        "waits",
        "\
start 2026-03-02
days 1
workers 3
seed 4
interaction 24h
on Mon 09:00 10:10 design workers 1
",
    )
    .unwrap();
    let mut opts = IdleOptions::new(trace);
    opts.policies = vec![PolicyKind::Ccm];
    opts.boot = Duration::from_secs(10 * 60);
    opts.listen_base = Ipv4Addr::new(127, 78, 2, 1);
    let r = idle(opts).await.unwrap();
    let ccm = &r.policies[0];
    assert_eq!(ccm.user_resumes, 1, "{ccm:?}");
    assert_eq!(ccm.wrongful_pauses, 0, "{ccm:?}");
    // Paused at night (idle since the start), and again after the session.
    assert_eq!(ccm.pauses, 4, "{ccm:?}");
}
