//! Values with the time they were observed, and stale-data fallback.
//!
//! Every value ccm shows carries `observed_at`. When a fresh read of a source fails, the last
//! good value is still served, marked stale with its age, until it is older than a maximum age;
//! after that it is reported as unknown. [`Sourced`] holds one source's last good value and how
//! its latest read went; [`Sourced::view`] applies the rule at a given `now`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::service::Reason;

/// A value and the time it was observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observed<T> {
    /// The value.
    pub value: T,
    /// When it was read from its source.
    pub observed_at: DateTime<Utc>,
}

impl<T> Observed<T> {
    /// Wraps `value` observed at `at`.
    pub fn new(value: T, at: DateTime<Utc>) -> Self {
        Self {
            value,
            observed_at: at,
        }
    }

    /// How long ago it was observed (zero if `now` is earlier, e.g. after a clock step back).
    pub fn age(&self, now: DateTime<Utc>) -> std::time::Duration {
        (now - self.observed_at).to_std().unwrap_or_default()
    }
}

/// How trustworthy a source's value is right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Freshness {
    /// The latest read succeeded and the value is within the maximum age.
    Fresh,
    /// The latest read failed; the last good value is served, within the maximum age.
    Stale,
    /// There is no value, or it is older than the maximum age: report it as unknown.
    Unknown,
}

/// One source's last good value plus the outcome of its latest read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sourced<T> {
    /// The last value read successfully.
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub last_good: Option<Observed<T>>,
    /// When the latest read was attempted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempted_at: Option<DateTime<Utc>>,
    /// Why the latest read failed (`None` when it succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Reason>,
    /// Reads failed in a row since the last success.
    #[serde(default)]
    pub consecutive_failures: u32,
}

fn none<T>() -> Option<T> {
    None
}

impl<T> Default for Sourced<T> {
    fn default() -> Self {
        Self {
            last_good: None,
            attempted_at: None,
            error: None,
            consecutive_failures: 0,
        }
    }
}

/// What [`Sourced::view`] shows at a given time.
#[derive(Debug, Clone, PartialEq)]
pub struct View<'a, T> {
    /// The value to show (`None` when unknown).
    pub value: Option<&'a T>,
    /// When the shown value was observed.
    pub observed_at: Option<DateTime<Utc>>,
    /// Its age at `now`.
    pub age: Option<std::time::Duration>,
    /// Fresh, stale or unknown.
    pub freshness: Freshness,
    /// Why the latest read failed, if it did.
    pub error: Option<&'a Reason>,
}

impl<T> Sourced<T> {
    /// Records a successful read.
    pub fn succeed(&mut self, value: T, now: DateTime<Utc>) {
        self.last_good = Some(Observed::new(value, now));
        self.attempted_at = Some(now);
        self.error = None;
        self.consecutive_failures = 0;
    }

    /// Records a failed read; the last good value is kept.
    pub fn fail(&mut self, reason: Reason, now: DateTime<Utc>) {
        self.attempted_at = Some(now);
        self.error = Some(reason);
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
    }

    /// Forgets everything (the worker stopped: its live values no longer mean anything).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// The value as it should be shown at `now`, with its freshness.
    pub fn view(&self, now: DateTime<Utc>, max_age: std::time::Duration) -> View<'_, T> {
        let Some(good) = &self.last_good else {
            return View {
                value: None,
                observed_at: None,
                age: None,
                freshness: Freshness::Unknown,
                error: self.error.as_ref(),
            };
        };
        let age = good.age(now);
        let freshness = if age > max_age {
            Freshness::Unknown
        } else if self.error.is_some() {
            Freshness::Stale
        } else {
            Freshness::Fresh
        };
        View {
            value: (freshness != Freshness::Unknown).then_some(&good.value),
            observed_at: Some(good.observed_at),
            age: Some(age),
            freshness,
            error: self.error.as_ref(),
        }
    }

    /// The last good value if it may still be shown at `now` (fresh or stale).
    pub fn current(&self, now: DateTime<Utc>, max_age: std::time::Duration) -> Option<&T> {
        self.view(now, max_age).value
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;
    use crate::service::{CmlCall, Reason, ReasonCode};

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn timeout() -> Reason {
        Reason::new(CmlCall::SystemStats, ReasonCode::Timeout)
    }

    #[test]
    fn stale_data_fallback_should_follow_the_rules() {
        let max = Duration::from_secs(600);
        struct Case {
            name: &'static str,
            steps: &'static [(&'static str, i64)],
            now: i64,
            freshness: Freshness,
            value: Option<u32>,
            age: Option<u64>,
        }
        let cases = [
            Case {
                name: "never read",
                steps: &[],
                now: 0,
                freshness: Freshness::Unknown,
                value: None,
                age: None,
            },
            Case {
                name: "never succeeded",
                steps: &[("fail", 0)],
                now: 5,
                freshness: Freshness::Unknown,
                value: None,
                age: None,
            },
            Case {
                name: "fresh",
                steps: &[("ok", 0)],
                now: 30,
                freshness: Freshness::Fresh,
                value: Some(1),
                age: Some(30),
            },
            Case {
                name: "stale after a failure",
                steps: &[("ok", 0), ("fail", 60)],
                now: 90,
                freshness: Freshness::Stale,
                value: Some(1),
                age: Some(90),
            },
            Case {
                name: "stale at exactly the max age",
                steps: &[("ok", 0), ("fail", 60)],
                now: 600,
                freshness: Freshness::Stale,
                value: Some(1),
                age: Some(600),
            },
            Case {
                name: "unknown past the max age",
                steps: &[("ok", 0), ("fail", 60)],
                now: 601,
                freshness: Freshness::Unknown,
                value: None,
                age: Some(601),
            },
            Case {
                name: "fresh value too old is unknown",
                steps: &[("ok", 0)],
                now: 700,
                freshness: Freshness::Unknown,
                value: None,
                age: Some(700),
            },
            Case {
                name: "recovered",
                steps: &[("ok", 0), ("fail", 60), ("ok", 120)],
                now: 130,
                freshness: Freshness::Fresh,
                value: Some(3),
                age: Some(10),
            },
        ];
        for case in cases {
            let mut s = Sourced::<u32>::default();
            for (i, (step, at)) in case.steps.iter().enumerate() {
                match *step {
                    "ok" => s.succeed(i as u32 + 1, t(*at)),
                    _ => s.fail(timeout(), t(*at)),
                }
            }
            let v = s.view(t(case.now), max);
            assert_eq!(v.freshness, case.freshness, "{}", case.name);
            assert_eq!(v.value.copied(), case.value, "{}", case.name);
            assert_eq!(v.age.map(|a| a.as_secs()), case.age, "{}", case.name);
        }
    }

    #[test]
    fn failures_should_be_counted_until_a_success() {
        let mut s = Sourced::<u32>::default();
        s.fail(timeout(), t(0));
        s.fail(timeout(), t(1));
        assert_eq!(s.consecutive_failures, 2);
        assert_eq!(
            s.view(t(2), Duration::from_secs(60)).error,
            Some(&timeout())
        );
        s.succeed(7, t(3));
        assert_eq!(s.consecutive_failures, 0);
        assert!(s.error.is_none());
    }

    #[test]
    fn age_should_never_be_negative() {
        let o = Observed::new(1, t(100));
        assert_eq!(o.age(t(50)), Duration::ZERO);
    }
}
