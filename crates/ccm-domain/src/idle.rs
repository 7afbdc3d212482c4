//! The idle policy: a pure function of (worker, settings, now).
//!
//! A worker is **idle** when `now − max(last activity, last resume, creation) ≥ timeout`.
//! It is **paused** only when it is idle, idle detection is on globally and for the worker, it
//! is outside the snooze window after a resume, it is running, and its activity was read
//! recently enough to be trusted (a worker whose CML cannot be asked is never stopped on a
//! guess). In dry-run mode the decision says what would happen and nothing is paused.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ec2::Ec2State;
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
}

impl Default for IdleSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            timeout: Duration::from_secs(60 * 60),
            snooze_after_resume: Duration::from_secs(60 * 60),
            dry_run: false,
            activity_max_age: Duration::from_secs(15 * 60),
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

/// Evaluates the idle policy for `worker` at `now`.
pub fn evaluate(worker: &Worker, settings: &IdleSettings, now: DateTime<Utc>) -> IdleDecision {
    let m = &worker.monitoring;
    let reference = [m.last_activity, m.last_resume, Some(worker.created_at)]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(worker.created_at);
    let idle_for = since(now, reference);
    let idle = idle_for >= settings.timeout;
    let keep = |reason| IdleAction::Keep { reason };

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
    IdleDecision {
        idle,
        idle_for,
        since: reference,
        action,
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
