//! Off-hours schedules: windows of the week, in a time zone, during which a worker is kept
//! stopped (`Mon-Thu 19:00-07:00; Fri 19:00-Mon 07:00 Europe/Paris`).
//!
//! A worker stopped by its schedule is started again when the window ends; a worker stopped
//! for idleness is not (see [`decide`]). Local times are turned into instants with the bundled
//! tz database (`jiff`): a start or end that falls into a DST gap moves forward by the gap, one
//! that falls into a repeated hour takes its first occurrence (RFC 5545's and Temporal's
//! "compatible" rule), so a window never vanishes and never runs twice.
//!
//! **Grammar** (one line; whitespace between tokens):
//!
//! ```text
//! schedule := window (';' window)* TZ
//! window   := DAYS HH:MM '-' HH:MM        daily window on each of DAYS; an end at or before
//!                                        the start is on the next day; 24:00 is midnight
//!           | DAY HH:MM '-' DAY HH:MM     one span of the week, e.g. Fri 19:00-Mon 07:00
//! DAYS     := 'daily' | DAY ('-' DAY)? (',' DAY ('-' DAY)?)*     e.g. Mon-Fri, Sat,Sun
//! DAY      := Mon | Tue | Wed | Thu | Fri | Sat | Sun            (any case, or full names)
//! TZ       := an IANA zone name (Europe/Paris, America/New_York) or UTC
//! ```
//!
//! The days of a daily window are the days it *starts* on: `Mon-Fri 19:00-07:00` covers the
//! nights from Monday to Saturday morning.

use std::fmt;

use chrono::{DateTime, Utc};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::WorkerId;
use crate::worker::Worker;

/// A schedule that could not be parsed: what was wrong, naming the part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schedule {text:?}: {reason}")]
pub struct ScheduleError {
    /// The text as given (cut to 200 characters).
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

/// Minutes since local midnight, 0..=1440.
type Minute = u16;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Window {
    /// On every day marked (index: Monday = 0), from `start` to `end` (next day if not after).
    Daily {
        days: [bool; 7],
        start: Minute,
        end: Minute,
    },
    /// From one day and time of the week to another.
    Span {
        from_day: u8,
        from: Minute,
        to_day: u8,
        to: Minute,
    },
}

/// Off-hours windows in a time zone. Serialised as its text.
#[derive(Clone)]
pub struct Schedule {
    text: String,
    windows: Vec<Window>,
    tz: TimeZone,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.text).finish()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Schedule {}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Schedule::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Where `now` stands in a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ScheduleState {
    /// Inside off-hours, from `since` until `until` (windows that touch are one).
    OffHours {
        /// When this stretch of off-hours began.
        since: DateTime<Utc>,
        /// When it ends.
        until: DateTime<Utc>,
    },
    /// Working hours; the next off-hours begin at `next` (none within two weeks: `None`).
    Working {
        /// The next start of off-hours.
        next: Option<DateTime<Utc>>,
    },
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const FULL_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

fn parse_day(s: &str) -> Result<u8, String> {
    let l = s.to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|d| *d == l)
        .or_else(|| FULL_NAMES.iter().position(|d| *d == l))
        .map(|i| i as u8)
        .ok_or_else(|| format!("{s:?} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
}

fn parse_days(s: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    if s.eq_ignore_ascii_case("daily") {
        return Ok([true; 7]);
    }
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse_day(a)?, parse_day(b)?);
                let mut d = a;
                loop {
                    days[d as usize] = true;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days[parse_day(part)? as usize] = true,
        }
    }
    Ok(days)
}

fn parse_time(s: &str) -> Result<Minute, String> {
    let bad = || format!("{s:?} is not a time (HH:MM, 00:00 to 24:00)");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn parse_window(s: &str) -> Result<Window, String> {
    let tokens: Vec<&str> = s.split_whitespace().collect();
    match tokens.as_slice() {
        // `Fri 19:00-Mon 07:00` splits into `Fri`, `19:00-Mon`, `07:00`.
        [from_day, middle, to] if middle.contains('-') => {
            let (from, to_day) = middle
                .split_once('-')
                .ok_or_else(|| format!("{s:?}: expected DAY HH:MM-DAY HH:MM"))?;
            Ok(Window::Span {
                from_day: parse_day(from_day)?,
                from: parse_time(from)?,
                to_day: parse_day(to_day)?,
                to: parse_time(to)?,
            })
        }
        [days, range] => {
            let (start, end) = range
                .split_once('-')
                .ok_or_else(|| format!("{range:?} is not a range (HH:MM-HH:MM)"))?;
            let (start, end) = (parse_time(start)?, parse_time(end)?);
            if start == 1440 {
                return Err(format!("{range:?}: a window cannot start at 24:00"));
            }
            Ok(Window::Daily {
                days: parse_days(days)?,
                start,
                end,
            })
        }
        _ => Err(format!(
            "{s:?}: expected DAYS HH:MM-HH:MM or DAY HH:MM-DAY HH:MM"
        )),
    }
}

impl Schedule {
    /// Parses a schedule (grammar in the module docs); the error names the part at fault.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let err = |reason: String| ScheduleError {
            text: text.chars().take(200).collect(),
            reason,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(err(
                "empty; expected e.g. \"Mon-Fri 19:00-07:00 Europe/Paris\"".into(),
            ));
        }
        if trimmed.len() > 500 {
            return Err(err("longer than 500 characters".into()));
        }
        let (body, zone) = trimmed
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| err("expected windows followed by a time zone".into()))?;
        let tz = TimeZone::get(zone).map_err(|_| {
            err(format!(
                "{zone:?} is not a time zone (an IANA name such as Europe/Paris, or UTC)"
            ))
        })?;
        let windows = body
            .split(';')
            .map(|w| parse_window(w.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        if windows.len() > 20 {
            return Err(err("more than 20 windows".into()));
        }
        Ok(Self {
            text: trimmed.to_owned(),
            windows,
            tz,
        })
    }

    /// The IANA name of the schedule's time zone.
    pub fn time_zone(&self) -> &str {
        self.tz.iana_name().unwrap_or("UTC")
    }

    /// The instant of `minute` on local `date` (DST gaps move forward, folds take the first).
    fn instant(&self, date: Date, minute: Minute) -> Option<DateTime<Utc>> {
        let (date, minute) = if minute >= 1440 {
            (date.tomorrow().ok()?, minute - 1440)
        } else {
            (date, minute)
        };
        let dt = date.at((minute / 60) as i8, (minute % 60) as i8, 0, 0);
        let ts = dt.to_zoned(self.tz.clone()).ok()?.timestamp();
        DateTime::from_timestamp(ts.as_second(), 0)
    }

    /// The windows that start on local `date`, as UTC intervals.
    fn windows_on(&self, date: Date) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let day = date.weekday().to_monday_zero_offset() as usize;
        let mut out = Vec::new();
        for w in &self.windows {
            let (start, end_date, end) = match *w {
                Window::Daily { days, start, end } => {
                    if !days[day] {
                        continue;
                    }
                    let next = end <= start;
                    (
                        start,
                        if next {
                            date.tomorrow().ok()
                        } else {
                            Some(date)
                        },
                        end,
                    )
                }
                Window::Span {
                    from_day,
                    from,
                    to_day,
                    to,
                } => {
                    if from_day as usize != day {
                        continue;
                    }
                    let mut ahead = (i16::from(to_day) - i16::from(from_day)).rem_euclid(7);
                    if ahead == 0 && to <= from {
                        ahead = 7;
                    }
                    (
                        from,
                        date.checked_add(jiff::Span::new().days(ahead)).ok(),
                        to,
                    )
                }
            };
            let (Some(s), Some(e)) = (
                self.instant(date, start),
                end_date.and_then(|d| self.instant(d, end)),
            ) else {
                continue;
            };
            if e > s {
                out.push((s, e));
            }
        }
        out
    }

    /// Every window occurrence that starts between 9 days before and 15 days after `now`,
    /// merged where they overlap or touch, in order.
    fn intervals(&self, now: DateTime<Utc>) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let Ok(ts) = jiff::Timestamp::from_second(now.timestamp()) else {
            return Vec::new();
        };
        let today = ts.to_zoned(self.tz.clone()).date();
        let mut all = Vec::new();
        for offset in -9i64..=15 {
            if let Ok(d) = today.checked_add(jiff::Span::new().days(offset)) {
                all.extend(self.windows_on(d));
            }
        }
        all.sort();
        let mut merged: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
        for (s, e) in all {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        merged
    }

    /// Where `now` stands: in off-hours (since, until) or working (next off-hours).
    pub fn state_at(&self, now: DateTime<Utc>) -> ScheduleState {
        let intervals = self.intervals(now);
        if let Some(&(since, until)) = intervals.iter().find(|(s, e)| *s <= now && now < *e) {
            return ScheduleState::OffHours { since, until };
        }
        ScheduleState::Working {
            next: intervals.iter().map(|(s, _)| *s).find(|s| *s > now),
        }
    }
}

/// Which workers a schedule rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// One worker, by id (`worker:<id>`).
    Worker(WorkerId),
    /// Every worker with this tag value (`tag:key=value`).
    Tag {
        /// Tag key.
        key: String,
        /// Tag value.
        value: String,
    },
}

impl Selector {
    /// Parses `worker:<id>` or `tag:key=value`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(id) = text.strip_prefix("worker:") {
            return id
                .parse()
                .map(Self::Worker)
                .map_err(|_| format!("{id:?} is not a worker id"));
        }
        if let Some(tag) = text.strip_prefix("tag:") {
            let (key, value) = tag
                .split_once('=')
                .ok_or_else(|| format!("{tag:?}: expected tag:key=value"))?;
            if key.is_empty() || key.len() > 128 || value.len() > 256 {
                return Err(format!(
                    "{tag:?}: tag keys 1-128 characters, values up to 256"
                ));
            }
            return Ok(Self::Tag {
                key: key.to_owned(),
                value: value.to_owned(),
            });
        }
        Err(format!("{text:?}: expected worker:<id> or tag:key=value"))
    }

    /// Whether `worker` is selected.
    pub fn matches(&self, worker: &Worker) -> bool {
        match self {
            Self::Worker(id) => worker.id == *id,
            Self::Tag { key, value } => worker.tags.get(key) == Some(value),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Worker(id) => write!(f, "worker:{id}"),
            Self::Tag { key, value } => write!(f, "tag:{key}={value}"),
        }
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Selector::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One schedule rule of the runtime settings: the workers it selects and their off-hours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRule {
    /// `worker:<id>` or `tag:key=value`.
    pub selector: Selector,
    /// Off-hours windows with their time zone.
    pub off_hours: Schedule,
}

/// The rule that applies to `worker`: the first naming it by id, else the first matching tag.
pub fn rule_for<'a>(rules: &'a [ScheduleRule], worker: &Worker) -> Option<&'a ScheduleRule> {
    rules
        .iter()
        .find(|r| matches!(r.selector, Selector::Worker(_)) && r.selector.matches(worker))
        .or_else(|| rules.iter().find(|r| r.selector.matches(worker)))
}

/// What a schedule asks for now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ScheduleAction {
    /// Stop the worker (reason `schedule`).
    Stop,
    /// Start the worker again: the window that stopped it has ended.
    Start,
    /// Nothing to do, for this reason.
    Keep {
        /// Why (`working_hours`, `not_running`, `kept_awake`, `resumed_in_window`,
        /// `stopped_otherwise`, `transitioning`).
        reason: String,
    },
}

/// Applies a schedule to a worker at `now`.
///
/// - In off-hours, a running worker is stopped, unless someone keeps it awake (snooze) or
///   started it during this stretch of off-hours (an operator's start is not undone).
/// - In working hours, a worker the schedule stopped is started; one stopped for any other
///   reason (idle, manual, external) stays stopped.
pub fn decide(worker: &Worker, state: ScheduleState, now: DateTime<Utc>) -> ScheduleAction {
    use crate::ec2::Ec2State;
    use crate::lifecycle::PauseReason;
    let keep = |r: &str| ScheduleAction::Keep { reason: r.into() };
    let m = &worker.monitoring;
    if m.pending_pause.is_some() || m.pending_resume.is_some() {
        return keep("transitioning");
    }
    match state {
        ScheduleState::OffHours { since, .. } => {
            if worker.ec2_state != Ec2State::Running {
                return keep("not_running");
            }
            if m.snooze.as_ref().is_some_and(|s| s.until > now) {
                return keep("kept_awake");
            }
            if m.last_resume.is_some_and(|r| r >= since) {
                return keep("resumed_in_window");
            }
            ScheduleAction::Stop
        }
        ScheduleState::Working { .. } => {
            if worker.ec2_state == Ec2State::Stopped
                && m.pause_reason == Some(PauseReason::Schedule)
            {
                ScheduleAction::Start
            } else if worker.ec2_state == Ec2State::Stopped {
                keep("stopped_otherwise")
            } else {
                keep("working_hours")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn a_weeknight_schedule_should_cover_nights_and_end_in_the_morning() {
        // 2026-03-02 is a Monday; Paris is UTC+1 in March before the 29th.
        let s = Schedule::parse("Mon-Fri 19:00-07:00 Europe/Paris").unwrap();
        assert_eq!(
            s.state_at(utc(2026, 3, 2, 19, 0)),
            ScheduleState::OffHours {
                since: utc(2026, 3, 2, 18, 0),
                until: utc(2026, 3, 3, 6, 0)
            }
        );
        assert_eq!(
            s.state_at(utc(2026, 3, 3, 12, 0)),
            ScheduleState::Working {
                next: Some(utc(2026, 3, 3, 18, 0))
            }
        );
        // Friday night's window ends Saturday 07:00; Saturday itself is working time
        // (the days are the days a window starts on).
        assert_eq!(
            s.state_at(utc(2026, 3, 7, 12, 0)),
            ScheduleState::Working {
                next: Some(utc(2026, 3, 9, 18, 0))
            }
        );
    }

    #[test]
    fn windows_that_touch_should_merge_into_one_stretch() {
        let s = Schedule::parse("Mon-Thu 19:00-07:00; Fri 19:00-Mon 07:00 UTC").unwrap();
        assert_eq!(
            s.state_at(utc(2026, 3, 8, 12, 0)),
            ScheduleState::OffHours {
                since: utc(2026, 3, 6, 19, 0),
                until: utc(2026, 3, 9, 7, 0)
            }
        );
        let s = Schedule::parse("Mon-Fri 18:00-24:00; Tue-Sat 00:00-08:00 UTC").unwrap();
        assert_eq!(
            s.state_at(utc(2026, 3, 3, 2, 0)),
            ScheduleState::OffHours {
                since: utc(2026, 3, 2, 18, 0),
                until: utc(2026, 3, 3, 8, 0)
            }
        );
    }

    #[test]
    fn schedules_should_follow_dst_changes_in_their_time_zone() {
        // Europe/Paris springs forward on 2026-03-29 (02:00 → 03:00) and falls back on
        // 2026-10-25 (03:00 → 02:00).
        let s = Schedule::parse("daily 19:00-07:00 Europe/Paris").unwrap();
        // Saturday night before the change: 19:00 CET = 18:00 UTC, ends 07:00 CEST = 05:00 UTC.
        assert_eq!(
            s.state_at(utc(2026, 3, 28, 23, 0)),
            ScheduleState::OffHours {
                since: utc(2026, 3, 28, 18, 0),
                until: utc(2026, 3, 29, 5, 0)
            }
        );
        // The night of the fall-back: 19:00 CEST = 17:00 UTC, 07:00 CET = 06:00 UTC (13 h).
        assert_eq!(
            s.state_at(utc(2026, 10, 24, 23, 0)),
            ScheduleState::OffHours {
                since: utc(2026, 10, 24, 17, 0),
                until: utc(2026, 10, 25, 6, 0)
            }
        );
        // A window starting inside the spring gap (02:30 does not exist) starts at 03:30 CEST.
        let gap = Schedule::parse("Sun 02:30-04:00 Europe/Paris").unwrap();
        assert_eq!(
            gap.state_at(utc(2026, 3, 29, 1, 45)),
            ScheduleState::OffHours {
                since: utc(2026, 3, 29, 1, 30),
                until: utc(2026, 3, 29, 2, 0)
            }
        );
        // A window starting in the repeated hour (02:30 happens twice) takes the first one.
        let fold = Schedule::parse("Sun 02:30-05:00 Europe/Paris").unwrap();
        assert_eq!(
            fold.state_at(utc(2026, 10, 25, 0, 45)),
            ScheduleState::OffHours {
                since: utc(2026, 10, 25, 0, 30),
                until: utc(2026, 10, 25, 4, 0)
            }
        );
    }

    fn worker(state: crate::ec2::Ec2State) -> Worker {
        use crate::ids::{Actor, InstanceId, Region};
        use crate::worker::{EndpointPolicy, InstanceObservation};
        let obs = InstanceObservation {
            instance_id: InstanceId::parse("i-0123abcd").unwrap(),
            state,
            instance_type: None,
            ami_id: None,
            public_ip: None,
            private_ip: None,
            tags: [("team".to_owned(), "training".to_owned())].into(),
            launched_at: None,
            detailed_monitoring: false,
            state_reason: None,
        };
        Worker::import(
            &obs,
            Region::parse("eu-west-1").unwrap(),
            &EndpointPolicy::default(),
            Actor::user("a"),
            utc(2026, 3, 2, 8, 0),
        )
        .0
    }

    #[test]
    fn a_schedule_should_stop_in_off_hours_and_start_only_what_it_stopped() {
        use crate::ec2::Ec2State;
        use crate::ids::Actor;
        use crate::lifecycle::PauseReason;
        let s = Schedule::parse("Mon-Fri 19:00-07:00 UTC").unwrap();
        let night = utc(2026, 3, 2, 20, 0);
        let morning = utc(2026, 3, 3, 7, 5);
        let label = |a: ScheduleAction| match a {
            ScheduleAction::Keep { reason } => reason,
            other => serde_json::to_value(other).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned(),
        };
        let running = worker(Ec2State::Running);
        assert_eq!(label(decide(&running, s.state_at(night), night)), "stop");
        assert_eq!(
            label(decide(&running, s.state_at(morning), morning)),
            "working_hours"
        );
        // Kept awake: not stopped; started by someone during the window: not stopped again.
        let mut snoozed = running.clone();
        snoozed
            .snooze(utc(2026, 3, 2, 22, 0), &Actor::user("bob"), night)
            .unwrap();
        assert_eq!(
            label(decide(&snoozed, s.state_at(night), night)),
            "kept_awake"
        );
        let mut resumed = running.clone();
        resumed.monitoring.last_resume = Some(utc(2026, 3, 2, 19, 30));
        assert_eq!(
            label(decide(&resumed, s.state_at(night), night)),
            "resumed_in_window"
        );
        // Stopped by the schedule: started when the window ends; stopped for idleness: not.
        let mut by_schedule = worker(Ec2State::Stopped);
        by_schedule.monitoring.pause_reason = Some(PauseReason::Schedule);
        assert_eq!(
            label(decide(&by_schedule, s.state_at(night), night)),
            "not_running"
        );
        assert_eq!(
            label(decide(&by_schedule, s.state_at(morning), morning)),
            "start"
        );
        let mut by_idle = by_schedule.clone();
        by_idle.monitoring.pause_reason = Some(PauseReason::IdleTimeout);
        assert_eq!(
            label(decide(&by_idle, s.state_at(morning), morning)),
            "stopped_otherwise"
        );
        // Rules: a worker's own rule first, then the first matching tag.
        let rules: Vec<ScheduleRule> = serde_json::from_value(serde_json::json!([
            {"selector": "tag:team=training", "off_hours": "daily 18:00-08:00 UTC"},
            {"selector": format!("worker:{}", running.id), "off_hours": "Sat,Sun 00:00-24:00 UTC"},
        ]))
        .unwrap();
        assert_eq!(
            rule_for(&rules, &running).unwrap().off_hours.to_string(),
            "Sat,Sun 00:00-24:00 UTC"
        );
        assert_eq!(
            rule_for(&rules, &worker(Ec2State::Running))
                .unwrap()
                .off_hours
                .to_string(),
            "daily 18:00-08:00 UTC"
        );
    }

    #[test]
    fn bad_schedules_should_be_refused_naming_the_part() {
        let cases = [
            ("", "empty"),
            ("Mon-Fri 19:00-07:00", "not a time zone"),
            (
                "Mon-Fri 19:00-07:00 Mars/Olympus",
                "\"Mars/Olympus\" is not a time zone",
            ),
            ("Mon-Fry 19:00-07:00 UTC", "\"Fry\" is not a day"),
            ("Mon-Fri 25:00-07:00 UTC", "\"25:00\" is not a time"),
            ("Mon-Fri 19:00 UTC", "not a range"),
            ("Mon-Fri 19:60-07:00 UTC", "\"19:60\" is not a time"),
            ("Mon-Fri 24:00-07:00 UTC", "cannot start at 24:00"),
            ("Mon 1 2 3 UTC", "expected DAYS"),
        ];
        for (text, want) in cases {
            let err = Schedule::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn schedules_should_serialise_as_their_text() {
        let rule: ScheduleRule = serde_json::from_str(
            r#"{"selector":"tag:team=training","off_hours":"Sat,Sun 00:00-24:00 UTC"}"#,
        )
        .unwrap();
        assert_eq!(
            rule.selector,
            Selector::Tag {
                key: "team".into(),
                value: "training".into()
            }
        );
        assert_eq!(rule.off_hours.time_zone(), "UTC");
        let back = serde_json::to_value(&rule).unwrap();
        assert_eq!(back["off_hours"], "Sat,Sun 00:00-24:00 UTC");
        assert!(
            serde_json::from_str::<ScheduleRule>(
                r#"{"selector":"x","off_hours":"daily 1:00-2:00 UTC"}"#
            )
            .is_err()
        );
    }
}
