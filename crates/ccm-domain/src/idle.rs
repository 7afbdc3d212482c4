//! The idle policy: a pure function of (worker, settings, now).
//!
//! A worker is **idle** when `now − max(last activity, last resume, creation) ≥ timeout`,
//! where activity is telemetry in the activity categories and, unless
//! `running_nodes_count_as_use` is off, running nodes. It is **paused** only when it is idle,
//! idle detection is on globally and for the worker, nobody keeps it awake (a snooze), it is
//! outside the grace window after a resume, it is running, and its activity was read recently
//! enough to be trusted (a worker whose CML cannot be asked is never stopped on a guess). In
//! dry-run mode the decision says what would happen and nothing is paused. Every decision says
//! when the policy would act (`pause_at`) and whether the warning is due (`warn`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ec2::Ec2State;
use crate::ids::Actor;
use crate::worker::Worker;

/// Idle detection settings (runtime settings; changeable without a restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdleSettings {
    /// Global switch for idle detection and auto-pause.
    pub enabled: bool,
    /// Idle after this long without activity.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// No auto-pause for this long after a resume.
    #[serde(with = "humantime_serde")]
    pub snooze_after_resume: Duration,
    /// Report what would be paused, pause nothing.
    pub dry_run: bool,
    /// Activity must have been read successfully within this long, or nothing is paused.
    #[serde(with = "humantime_serde")]
    pub activity_max_age: Duration,
    /// Labs with running nodes count as use even when nobody interacts with them (long runs
    /// left on purpose). Off: only telemetry counts, and such workers are paused.
    pub running_nodes_count_as_use: bool,
    /// `ccm.worker.idle_warning` this long before an idle pause or a schedule stop (0: none).
    #[serde(with = "humantime_serde")]
    pub warning_before: Duration,
    /// The timeout while the fleet is busy (see `busy_fleet_percent`): a worker gone quiet
    /// while most of its fleet is in use is probably on a break (lunch, a meeting), not done
    /// for the day. Never shorter than `timeout`.
    #[serde(with = "humantime_serde")]
    pub break_timeout: Duration,
    /// The fleet is busy when at least this percentage of its workers were in use within the
    /// timeout (0: never; the plain timeout always applies).
    pub busy_fleet_percent: u8,
}

impl Default for IdleSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            timeout: Duration::from_secs(60 * 60),
            snooze_after_resume: Duration::from_secs(60 * 60),
            dry_run: false,
            activity_max_age: Duration::from_secs(15 * 60),
            running_nodes_count_as_use: true,
            warning_before: Duration::from_secs(10 * 60),
            break_timeout: Duration::from_secs(2 * 60 * 60),
            busy_fleet_percent: 50,
        }
    }
}

/// What the idle policy decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleDecision {
    /// Whether the worker is idle.
    pub idle: bool,
    /// Time since the reference point (latest of activity, resume, creation).
    pub idle_for: Duration,
    /// The reference point.
    pub since: DateTime<Utc>,
    /// What to do.
    pub action: IdleAction,
    /// When the policy would pause the worker if nothing happens meanwhile (none when it is
    /// not running, idle detection is off, or its activity cannot be read).
    pub pause_at: Option<DateTime<Utc>>,
    /// The warning before that pause is due: `pause_at − warning_before ≤ now`.
    pub warn: bool,
    /// The timeout that applied: `break_timeout` while the fleet is busy, else `timeout`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Whether the fleet counted as busy.
    pub fleet_busy: bool,
}

/// The action the idle policy asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum IdleAction {
    /// Stop the worker (reason: idle timeout).
    Pause,
    /// Dry run: this worker would be paused.
    WouldPause,
    /// Leave it alone, for this reason.
    Keep {
        /// Why.
        reason: KeepReason,
    },
}

/// Why an idle evaluation keeps the worker running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum KeepReason {
    /// The worker is not running.
    NotRunning,
    /// Used recently; idle in `remaining`.
    NotIdle {
        /// Time left before it counts as idle.
        #[serde(with = "humantime_serde")]
        remaining: Duration,
    },
    /// Idle detection is switched off globally.
    DisabledGlobally,
    /// Idle detection is switched off for this worker.
    DisabledForWorker,
    /// Someone keeps the worker awake until `until`.
    KeptAwake {
        /// End of the snooze.
        until: DateTime<Utc>,
        /// Who set it.
        by: Actor,
    },
    /// Resumed recently; auto-pause waits `remaining`.
    Snoozed {
        /// Time left in the snooze window.
        #[serde(with = "humantime_serde")]
        remaining: Duration,
    },
    /// Activity could not be read recently: ccm cannot tell whether somebody uses it.
    ActivityUnknown,
}

impl IdleAction {
    /// A short name for events and logs: `pause`, `would_pause`, `keep:<reason>`.
    pub fn label(&self) -> String {
        match self {
            Self::Pause => "pause".into(),
            Self::WouldPause => "would_pause".into(),
            Self::Keep { reason } => {
                let name = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
                    .unwrap_or_default();
                format!("keep:{name}")
            }
        }
    }
}

fn since(a: DateTime<Utc>, b: DateTime<Utc>) -> Duration {
    (a - b).to_std().unwrap_or_default()
}

/// Evaluates the idle policy for `worker` at `now`, not knowing how busy the fleet is (the
/// plain timeout applies).
pub fn evaluate(worker: &Worker, settings: &IdleSettings, now: DateTime<Utc>) -> IdleDecision {
    evaluate_in(worker, settings, None, now)
}

/// Whether `worker` counts as in use at `now` for the fleet's busy share: running, with
/// activity (as the settings define it) or a resume within the timeout.
pub fn in_use(worker: &Worker, settings: &IdleSettings, now: DateTime<Utc>) -> bool {
    let m = &worker.monitoring;
    let activity = if settings.running_nodes_count_as_use {
        m.last_activity
    } else {
        m.last_interaction
    };
    worker.ec2_state == Ec2State::Running
        && [activity, m.last_resume]
            .into_iter()
            .flatten()
            .max()
            .is_some_and(|at| since(now, at) < settings.timeout)
}

/// The share of `workers` in use at `now` (0 to 1; terminated workers are left out).
pub fn busy_share<'a>(
    workers: impl IntoIterator<Item = &'a Worker>,
    settings: &IdleSettings,
    now: DateTime<Utc>,
) -> f64 {
    let (mut total, mut busy) = (0u32, 0u32);
    for w in workers {
        if w.ec2_state.is_final() {
            continue;
        }
        total += 1;
        if in_use(w, settings, now) {
            busy += 1;
        }
    }
    if total == 0 {
        0.0
    } else {
        f64::from(busy) / f64::from(total)
    }
}

/// Evaluates the idle policy for `worker` at `now`, given the share of its fleet in use
/// (`None`: unknown, the plain timeout applies).
pub fn evaluate_in(
    worker: &Worker,
    settings: &IdleSettings,
    fleet_busy_share: Option<f64>,
    now: DateTime<Utc>,
) -> IdleDecision {
    let fleet_busy = settings.busy_fleet_percent > 0
        && fleet_busy_share.is_some_and(|s| s * 100.0 >= f64::from(settings.busy_fleet_percent));
    let timeout = if fleet_busy {
        settings.timeout.max(settings.break_timeout)
    } else {
        settings.timeout
    };
    let settings = &IdleSettings {
        timeout,
        ..settings.clone()
    };
    let m = &worker.monitoring;
    let activity = if settings.running_nodes_count_as_use {
        m.last_activity
    } else {
        m.last_interaction
    };
    let reference = [activity, m.last_resume, Some(worker.created_at)]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(worker.created_at);
    let idle_for = since(now, reference);
    let idle = idle_for >= settings.timeout;
    let keep = |reason| IdleAction::Keep { reason };
    let snooze = worker.snoozed_until(now);
    let chrono_of = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);

    let action = if worker.ec2_state != Ec2State::Running {
        keep(KeepReason::NotRunning)
    } else if !idle {
        keep(KeepReason::NotIdle {
            remaining: settings.timeout - idle_for,
        })
    } else if !settings.enabled {
        keep(KeepReason::DisabledGlobally)
    } else if !m.idle_detection {
        keep(KeepReason::DisabledForWorker)
    } else if let Some(s) = snooze {
        keep(KeepReason::KeptAwake {
            until: s.until,
            by: s.by.clone(),
        })
    } else if let Some(resumed) = m
        .last_resume
        .filter(|r| since(now, *r) < settings.snooze_after_resume)
    {
        keep(KeepReason::Snoozed {
            remaining: settings.snooze_after_resume - since(now, resumed),
        })
    } else if m
        .activity_checked_at
        .is_none_or(|at| since(now, at) > settings.activity_max_age)
    {
        keep(KeepReason::ActivityUnknown)
    } else if settings.dry_run {
        IdleAction::WouldPause
    } else {
        IdleAction::Pause
    };
    let acts = worker.ec2_state == Ec2State::Running
        && settings.enabled
        && m.idle_detection
        && !matches!(
            action,
            IdleAction::Keep {
                reason: KeepReason::ActivityUnknown
            }
        );
    let pause_at = acts.then(|| {
        let mut at = reference.checked_add_signed(chrono_of(settings.timeout));
        if let Some(s) = snooze {
            at = at.map(|a| a.max(s.until));
        }
        if let Some(r) = m.last_resume {
            let grace = r.checked_add_signed(chrono_of(settings.snooze_after_resume));
            at = at.zip(grace).map(|(a, g)| a.max(g));
        }
        at.unwrap_or(DateTime::<Utc>::MAX_UTC).max(now)
    });
    let warn = !settings.dry_run
        && !settings.warning_before.is_zero()
        && pause_at.is_some_and(|at| now >= at - chrono_of(settings.warning_before));
    IdleDecision {
        idle,
        idle_for,
        since: reference,
        action,
        pause_at,
        warn,
        timeout,
        fleet_busy,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::ids::{Actor, InstanceId, Region};
    use crate::worker::{EndpointPolicy, InstanceObservation};

    const MIN: i64 = 60;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn worker() -> Worker {
        let obs = InstanceObservation {
            instance_id: InstanceId::parse("i-0123abcd").unwrap(),
            state: Ec2State::Running,
            instance_type: None,
            ami_id: None,
            public_ip: None,
            private_ip: None,
            tags: Default::default(),
            launched_at: None,
            detailed_monitoring: false,
            state_reason: None,
        };
        let (w, _) = Worker::import(
            &obs,
            Region::parse("eu-west-1").unwrap(),
            &EndpointPolicy::default(),
            Actor::user("a"),
            t(0),
        );
        w
    }

    struct Case {
        name: &'static str,
        now: i64,
        activity: Option<i64>,
        resume: Option<i64>,
        checked: Option<i64>,
        state: Ec2State,
        global: bool,
        per_worker: bool,
        dry_run: bool,
        idle: bool,
        action: &'static str,
    }

    const BASE: Case = Case {
        name: "",
        now: 120 * MIN,
        activity: None,
        resume: None,
        checked: Some(119 * MIN),
        state: Ec2State::Running,
        global: true,
        per_worker: true,
        dry_run: false,
        idle: true,
        action: "pause",
    };

    #[test]
    fn every_idle_rule_should_hold() {
        let cases = [
            Case {
                name: "idle since creation",
                ..BASE
            },
            Case {
                name: "exactly at the timeout",
                now: 60 * MIN,
                checked: Some(60 * MIN),
                ..BASE
            },
            Case {
                name: "one second short of the timeout",
                now: 60 * MIN - 1,
                checked: Some(59 * MIN),
                idle: false,
                action: "keep:not_idle",
                ..BASE
            },
            Case {
                name: "recent activity",
                activity: Some(100 * MIN),
                idle: false,
                action: "keep:not_idle",
                ..BASE
            },
            Case {
                name: "old activity",
                activity: Some(30 * MIN),
                ..BASE
            },
            Case {
                name: "resumed recently resets the clock",
                resume: Some(90 * MIN),
                idle: false,
                action: "keep:not_idle",
                ..BASE
            },
            Case {
                name: "resumed long ago",
                resume: Some(50 * MIN),
                now: 115 * MIN,
                checked: Some(114 * MIN),
                ..BASE
            },
            Case {
                name: "global switch off",
                global: false,
                action: "keep:disabled_globally",
                ..BASE
            },
            Case {
                name: "worker switch off",
                per_worker: false,
                action: "keep:disabled_for_worker",
                ..BASE
            },
            Case {
                name: "not running",
                state: Ec2State::Stopped,
                action: "keep:not_running",
                ..BASE
            },
            Case {
                name: "pending",
                state: Ec2State::Pending,
                action: "keep:not_running",
                ..BASE
            },
            Case {
                name: "dry run",
                dry_run: true,
                action: "would_pause",
                ..BASE
            },
            Case {
                name: "activity never read",
                checked: None,
                action: "keep:activity_unknown",
                ..BASE
            },
            Case {
                name: "activity read too long ago",
                checked: Some(100 * MIN),
                action: "keep:activity_unknown",
                ..BASE
            },
        ];
        for c in cases {
            let mut w = worker();
            w.ec2_state = c.state;
            w.monitoring.last_activity = c.activity.map(t);
            w.monitoring.last_resume = c.resume.map(t);
            w.monitoring.activity_checked_at = c.checked.map(t);
            w.monitoring.idle_detection = c.per_worker;
            let s = IdleSettings {
                enabled: c.global,
                dry_run: c.dry_run,
                ..IdleSettings::default()
            };
            let d = evaluate(&w, &s, t(c.now));
            assert_eq!(d.idle, c.idle, "{}: idle", c.name);
            assert_eq!(
                d.action.label(),
                c.action,
                "{}: action {:?}",
                c.name,
                d.action
            );
        }
    }

    #[test]
    fn the_snooze_window_should_hold_even_with_a_short_timeout() {
        let mut w = worker();
        w.monitoring.last_resume = Some(t(0));
        w.monitoring.activity_checked_at = Some(t(20 * MIN));
        let s = IdleSettings {
            timeout: Duration::from_secs(10 * 60),
            ..IdleSettings::default()
        };
        let d = evaluate(&w, &s, t(20 * MIN));
        assert!(d.idle);
        assert_eq!(
            d.action,
            IdleAction::Keep {
                reason: KeepReason::Snoozed {
                    remaining: Duration::from_secs(40 * 60)
                }
            }
        );
        let d = evaluate(&w, &s, t(60 * MIN));
        assert_eq!(
            d.action,
            IdleAction::Keep {
                reason: KeepReason::ActivityUnknown
            },
            "checked 40 min ago"
        );
        w.monitoring.activity_checked_at = Some(t(60 * MIN));
        assert_eq!(evaluate(&w, &s, t(60 * MIN)).action, IdleAction::Pause);
    }

    #[test]
    fn a_snooze_should_keep_an_idle_worker_awake_until_it_ends() {
        let mut w = worker();
        w.monitoring.activity_checked_at = Some(t(119 * MIN));
        w.snooze(t(180 * MIN), &Actor::user("alice"), t(100 * MIN))
            .unwrap();
        let s = IdleSettings::default();
        let d = evaluate(&w, &s, t(120 * MIN));
        assert_eq!(
            d.action,
            IdleAction::Keep {
                reason: KeepReason::KeptAwake {
                    until: t(180 * MIN),
                    by: Actor::user("alice")
                }
            }
        );
        assert_eq!(d.pause_at, Some(t(180 * MIN)));
        assert!(!d.warn, "warned 10 min before the snooze ends, not at 120");
        assert!(evaluate(&w, &s, t(170 * MIN)).warn);
        // It ends by itself.
        w.monitoring.activity_checked_at = Some(t(180 * MIN));
        assert_eq!(evaluate(&w, &s, t(180 * MIN)).action, IdleAction::Pause);
        // Snoozes in the past or too far ahead are refused.
        assert!(w.snooze(t(10), &Actor::user("a"), t(200 * MIN)).is_err());
        assert!(
            w.snooze(
                t(200 * MIN + 15 * 24 * 60 * MIN),
                &Actor::user("a"),
                t(200 * MIN)
            )
            .is_err()
        );
    }

    #[test]
    fn running_nodes_should_count_as_use_only_when_the_setting_says_so() {
        use crate::cml::CmlStats;
        use crate::worker::{CallResult, CmlSync};
        let mut w = worker();
        let stats = CmlStats {
            running_nodes: Some(3),
            ..CmlStats::default()
        };
        w.record_sync(
            CmlSync {
                stats: Some(CallResult::Ok(stats)),
                ..CmlSync::default()
            },
            t(100 * MIN),
        );
        w.record_activity_check(Some(t(10 * MIN)), t(119 * MIN));
        let on = IdleSettings::default();
        let d = evaluate(&w, &on, t(120 * MIN));
        assert_eq!(d.action.label(), "keep:not_idle");
        assert_eq!(d.since, t(100 * MIN));
        assert_eq!(d.pause_at, Some(t(160 * MIN)));
        assert_eq!(
            w.monitoring.last_activity_source,
            Some(crate::worker::ActivitySource::RunningNodes { count: 3 })
        );
        let off = IdleSettings {
            running_nodes_count_as_use: false,
            ..IdleSettings::default()
        };
        let d = evaluate(&w, &off, t(120 * MIN));
        assert_eq!(
            d.action,
            IdleAction::Pause,
            "telemetry only: idle since 10 min"
        );
        assert_eq!(d.since, t(10 * MIN));
    }

    #[test]
    fn the_warning_should_be_due_before_the_pause_and_never_in_dry_run() {
        let mut w = worker();
        w.monitoring.last_activity = Some(t(0));
        w.monitoring.activity_checked_at = Some(t(49 * MIN));
        let s = IdleSettings::default();
        let d = evaluate(&w, &s, t(49 * MIN));
        assert_eq!(d.pause_at, Some(t(60 * MIN)));
        assert!(!d.warn, "11 minutes before");
        let d = evaluate(&w, &s, t(50 * MIN));
        assert!(d.warn, "10 minutes before");
        assert_eq!(d.action.label(), "keep:not_idle");
        let dry = IdleSettings {
            dry_run: true,
            ..IdleSettings::default()
        };
        assert!(!evaluate(&w, &dry, t(50 * MIN)).warn);
        let none = IdleSettings {
            warning_before: Duration::ZERO,
            ..IdleSettings::default()
        };
        assert!(!evaluate(&w, &none, t(59 * MIN)).warn);
        // A resume's grace window postpones the pause, and the warning with it.
        w.monitoring.last_resume = Some(t(30 * MIN));
        let d = evaluate(&w, &s, t(50 * MIN));
        assert_eq!(d.pause_at, Some(t(90 * MIN)));
        assert!(!d.warn);
    }

    #[test]
    fn a_busy_fleet_should_give_a_quiet_worker_the_break_timeout() {
        let mut w = worker();
        w.monitoring.last_activity = Some(t(0));
        w.monitoring.activity_checked_at = Some(t(89 * MIN));
        let s = IdleSettings::default();
        assert_eq!(
            evaluate_in(&w, &s, Some(0.3), t(90 * MIN)).action,
            IdleAction::Pause
        );
        let d = evaluate_in(&w, &s, Some(0.5), t(90 * MIN));
        assert!(d.fleet_busy);
        assert_eq!(d.timeout, Duration::from_secs(2 * 3600));
        assert_eq!(d.action.label(), "keep:not_idle");
        assert_eq!(d.pause_at, Some(t(120 * MIN)));
        let off = IdleSettings {
            busy_fleet_percent: 0,
            ..IdleSettings::default()
        };
        assert_eq!(
            evaluate_in(&w, &off, Some(1.0), t(90 * MIN)).action,
            IdleAction::Pause
        );
        // The share: running workers with activity within the timeout, of all not terminated.
        let mut busy = worker();
        busy.monitoring.last_activity = Some(t(80 * MIN));
        let mut stopped = worker();
        stopped.ec2_state = Ec2State::Stopped;
        let mut gone = worker();
        gone.ec2_state = Ec2State::Terminated;
        let share = busy_share([&w, &busy, &stopped, &gone], &s, t(90 * MIN));
        assert!((share - 1.0 / 3.0).abs() < 1e-9, "{share}");
    }

    #[test]
    fn the_remaining_time_should_be_reported() {
        let mut w = worker();
        w.monitoring.last_activity = Some(t(0));
        let d = evaluate(&w, &IdleSettings::default(), t(45 * MIN));
        assert_eq!(d.idle_for, Duration::from_secs(45 * 60));
        assert_eq!(
            d.action,
            IdleAction::Keep {
                reason: KeepReason::NotIdle {
                    remaining: Duration::from_secs(15 * 60)
                }
            }
        );
        assert_eq!(d.since, t(0));
    }
}
