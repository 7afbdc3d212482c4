//! Usage traces for `ccm bench idle`: a plain, line-based file format that people can write
//! (presets in `bench/traces/`), its parser (errors name the line), a seeded random
//! generator, and the expansion into one timeline per worker.
//!
//! ```text
//! # comment (also after a line's content)
//! name      training            # label in the report (default: the file name)
//! start     2026-03-02          # first day (local midnight in `timezone`)
//! days      7                   # how many days (1 to 62)
//! timezone  Europe/Paris        # IANA zone of every time below (default UTC)
//! workers   200                 # fleet size (1 to 5000)
//! seed      1                   # seed of the jitter and probability draws (default 1)
//! interaction 20m               # mean gap between a present user's actions (default 20m)
//! skip-day  0.1                 # chance that a worker is not used at all on a given day
//!
//! # on DAYS FROM[~JITTER] TO[+Nd][~JITTER] KIND [workers A-B] [p PROB]
//! on Mon-Fri 09:00~10m 12:00~10m interactive
//! on Mon-Fri 17:00~30m 08:00     running    workers 1-20 p 0.5
//! # at DATE FROM TO KIND [workers A-B]          (one session, TO may be next day)
//! at 2026-03-04 19:00 23:00 design workers 7
//! ```
//!
//! Each `on` line is drawn per worker and per day: the session happens with probability `p`
//! (default 1) unless the worker skips the day, and its ends move by a uniform draw within
//! ±jitter. An end written at or before the start is on the next day (decided before the
//! jitter; a session whose drawn end falls at or before its drawn start does not happen);
//! `+Nd` puts it N days later (1 to 6). Workers are numbered from 1.
//!
//! Kinds — what a session means, and what the simulator sees:
//! - `interactive`: someone works with a running lab: they log in and start their lab at the
//!   start, act now and then (CML `user_activity` telemetry, on average every `interaction`),
//!   and the lab's nodes run throughout. In use.
//! - `design`: someone works without running nodes (editing topologies): log-in and actions,
//!   no nodes. In use.
//! - `running`: a lab left running on purpose with nobody there (a long test). Nodes run, no
//!   telemetry. In use.
//! - `forgotten`: a lab left running that nobody needs. Nodes run, no telemetry. Idle.
//!
//! Sessions may overlap; the strongest kind wins (interactive > design > running >
//! forgotten). A lab is stopped (`stop_lab` telemetry) when the nodes are no longer wanted.
//!
//! Two random generators stand beside the files, each from a seed: [`Trace::random`]
//! (`random`: one to three sessions a day with gaps drawn uniformly from 15 min to 5 h — a
//! stress test with no daily rhythm) and [`Trace::random_workday`] (`random-workday`: the same
//! days, with breaks drawn from what people do at work — short breaks between blocks of work,
//! a lunch around midday, done for the day in the evening; its parameters are in its docs).

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A trace that could not be read: the line and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}:{line}: {reason}")]
pub struct TraceError {
    /// The file (or preset) name.
    pub source_name: String,
    /// 1-based line number (0: the trace as a whole).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// What a worker is doing, as the trace says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A lab runs that nobody needs (idle).
    Forgotten,
    /// A lab runs on purpose, nobody there (in use).
    Running,
    /// Someone works without running nodes (in use).
    Design,
    /// Someone works with a running lab (in use).
    Interactive,
}

impl Kind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "interactive" => Self::Interactive,
            "design" => Self::Design,
            "running" => Self::Running,
            "forgotten" => Self::Forgotten,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Interactive => "interactive",
            Self::Design => "design",
            Self::Running => "running",
            Self::Forgotten => "forgotten",
        })
    }
}

/// A worker's state over an interval of its timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// The strongest session kind, `None` when nothing happens.
    pub kind: Option<Kind>,
}

impl State {
    /// The trace says the worker is used (a person, or a lab running on purpose).
    pub fn in_use(self) -> bool {
        matches!(
            self.kind,
            Some(Kind::Interactive | Kind::Design | Kind::Running)
        )
    }

    /// A person is at the worker.
    pub fn present(self) -> bool {
        matches!(self.kind, Some(Kind::Interactive | Kind::Design))
    }

    /// A lab's nodes run.
    pub fn nodes(self) -> bool {
        matches!(
            self.kind,
            Some(Kind::Interactive | Kind::Running | Kind::Forgotten)
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Recurring {
    days: [bool; 7],
    from: (u16, u16),
    to: (u16, u16),
    kind: Kind,
    workers: (usize, usize),
    p: f64,
}

#[derive(Debug, Clone, PartialEq)]
struct OneOff {
    date: Date,
    from: u16,
    to: u16,
    kind: Kind,
    workers: (usize, usize),
}

/// A parsed trace (before expansion).
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Label.
    pub name: String,
    /// First day.
    start: Date,
    /// Days.
    pub days: u32,
    tz: TimeZone,
    /// Fleet size.
    pub workers: usize,
    /// Draw seed.
    pub seed: u64,
    /// Mean gap between a present user's actions.
    pub interaction: std::time::Duration,
    skip_day: f64,
    recurring: Vec<Recurring>,
    one_off: Vec<OneOff>,
}

/// One worker's expanded timeline: intervals with their state, and the times a present user
/// acts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Timeline {
    /// `(from, state)`, sorted; each lasts until the next one's `from`.
    pub segments: Vec<(DateTime<Utc>, State)>,
    /// When the user acts (telemetry), sorted.
    pub actions: Vec<DateTime<Utc>>,
}

impl Timeline {
    /// The state at `t`.
    pub fn state_at(&self, t: DateTime<Utc>) -> State {
        let i = self.segments.partition_point(|(from, _)| *from <= t);
        if i == 0 {
            State { kind: None }
        } else {
            self.segments[i - 1].1
        }
    }

    /// The first time at or after `t` when the worker is in use, if any.
    pub fn next_use(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.state_at(t).in_use() {
            return Some(t);
        }
        self.segments
            .iter()
            .find(|(from, s)| *from > t && s.in_use())
            .map(|(from, _)| *from)
    }

    /// When the current segment at `t` began.
    pub fn segment_start(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let i = self.segments.partition_point(|(from, _)| *from <= t);
        (i > 0).then(|| self.segments[i - 1].0)
    }
}

fn parse_minutes(s: &str) -> Result<u16, String> {
    let bad = || format!("{s:?} is not a time (HH:MM)");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 24 || m > 59 || (h == 24 && m > 0) || s.len() > 5 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|_| format!("{s:?} is not a duration (e.g. 10m, 2h)"))
}

/// `HH:MM[+Nd][~JITTER]` → (minutes, possibly days later, and jitter minutes).
fn parse_time_jitter(s: &str) -> Result<(u16, u16), String> {
    let (t, j) = match s.split_once('~') {
        Some((t, j)) => {
            let j = parse_duration(j)?.as_secs() / 60;
            if j > 180 {
                return Err(format!("{s:?}: jitter at most 3h"));
            }
            (t, j as u16)
        }
        None => (s, 0),
    };
    let (t, days) = match t.split_once('+') {
        Some((t, d)) => {
            let days = d
                .strip_suffix('d')
                .and_then(|n| n.parse::<u16>().ok())
                .filter(|n| (1..=6).contains(n))
                .ok_or_else(|| format!("{s:?}: expected +Nd with N from 1 to 6"))?;
            (t, days)
        }
        None => (t, 0),
    };
    Ok((parse_minutes(t)? + days * 1440, j))
}

fn parse_days(s: &str) -> Result<[bool; 7], String> {
    // One grammar with the product's schedules: reuse it through a throwaway schedule.
    let probe = format!("{s} 00:00-01:00 UTC");
    let schedule = ccm_domain::schedule::Schedule::parse(&probe).map_err(|e| e.reason)?;
    let mut days = [false; 7];
    // 2026-03-02 is a Monday: probe each weekday.
    for (i, day) in days.iter_mut().enumerate() {
        let t = chrono::NaiveDate::from_ymd_opt(2026, 3, 2 + i as u32)
            .and_then(|d| d.and_hms_opt(0, 30, 0))
            .map(|d| d.and_utc());
        *day = t.is_some_and(|t| {
            matches!(
                schedule.state_at(t),
                ccm_domain::schedule::ScheduleState::OffHours { .. }
            )
        });
    }
    Ok(days)
}

fn parse_range(s: &str, workers: usize) -> Result<(usize, usize), String> {
    let bad = || format!("{s:?} is not a worker range (N or A-B, from 1)");
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (
            a.parse::<usize>().map_err(|_| bad())?,
            b.parse::<usize>().map_err(|_| bad())?,
        ),
        None => {
            let n = s.parse::<usize>().map_err(|_| bad())?;
            (n, n)
        }
    };
    if a == 0 || a > b {
        return Err(bad());
    }
    if b > workers {
        return Err(format!(
            "worker {b} is beyond the fleet ({workers} workers)"
        ));
    }
    Ok((a - 1, b - 1))
}

/// Options after the kind: `workers A-B`, `p PROB`.
fn parse_options(
    tokens: &[&str],
    workers: usize,
    allow_p: bool,
) -> Result<((usize, usize), f64), String> {
    let mut range = (0, workers.saturating_sub(1));
    let mut p = 1.0;
    let mut it = tokens.iter();
    while let Some(key) = it.next() {
        let value = it.next().ok_or_else(|| format!("{key:?} needs a value"))?;
        match *key {
            "workers" => range = parse_range(value, workers)?,
            "p" if allow_p => {
                p = value
                    .parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or_else(|| format!("{value:?} is not a probability (0 to 1)"))?;
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok((range, p))
}

/// One session of a worker before merging: from, to, what.
type Session = (DateTime<Utc>, DateTime<Utc>, Kind);

impl Trace {
    /// Parses a trace file's text; `source_name` names it in errors.
    pub fn parse(source_name: &str, text: &str) -> Result<Self, TraceError> {
        let err = |line: usize, reason: String| TraceError {
            source_name: source_name.to_owned(),
            line,
            reason,
        };
        let mut name = source_name.to_owned();
        let mut start = None;
        let mut days = 7u32;
        let mut tz = TimeZone::UTC;
        let mut workers = None;
        let mut seed = 1u64;
        let mut interaction = std::time::Duration::from_secs(20 * 60);
        let mut skip_day = 0.0;
        let mut lines: Vec<(usize, Vec<String>)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let content = raw.split('#').next().unwrap_or_default().trim();
            if content.is_empty() {
                continue;
            }
            let tokens: Vec<&str> = content.split_whitespace().collect();
            let one = |what: &str| -> Result<&str, TraceError> {
                match tokens.as_slice() {
                    [_, v] => Ok(*v),
                    _ => Err(err(n, format!("{what} takes one value"))),
                }
            };
            match tokens[0] {
                "name" => name = tokens[1..].join(" "),
                "start" => {
                    let v = one("start")?;
                    start = Some(
                        v.parse::<Date>()
                            .map_err(|_| err(n, format!("{v:?} is not a date (YYYY-MM-DD)")))?,
                    );
                }
                "days" => {
                    let v = one("days")?;
                    days = v
                        .parse()
                        .ok()
                        .filter(|d| (1..=62).contains(d))
                        .ok_or_else(|| err(n, format!("{v:?}: days is 1 to 62")))?;
                }
                "timezone" => {
                    let v = one("timezone")?;
                    tz = TimeZone::get(v)
                        .map_err(|_| err(n, format!("{v:?} is not a time zone")))?;
                }
                "workers" => {
                    let v = one("workers")?;
                    workers = Some(
                        v.parse::<usize>()
                            .ok()
                            .filter(|w| (1..=5000).contains(w))
                            .ok_or_else(|| err(n, format!("{v:?}: workers is 1 to 5000")))?,
                    );
                }
                "seed" => {
                    let v = one("seed")?;
                    seed = v
                        .parse()
                        .map_err(|_| err(n, format!("{v:?} is not a number")))?;
                }
                "interaction" => {
                    let d = parse_duration(one("interaction")?).map_err(|e| err(n, e))?;
                    if d < std::time::Duration::from_secs(60) {
                        return Err(err(n, "interaction is at least 1m".into()));
                    }
                    interaction = d;
                }
                "skip-day" => {
                    let v = one("skip-day")?;
                    skip_day = v
                        .parse::<f64>()
                        .ok()
                        .filter(|p| (0.0..=1.0).contains(p))
                        .ok_or_else(|| err(n, format!("{v:?} is not a probability (0 to 1)")))?;
                }
                "on" | "at" => lines.push((n, tokens.iter().map(|t| t.to_string()).collect())),
                other => {
                    return Err(err(
                        n,
                        format!(
                            "unknown directive {other:?} (name, start, days, timezone, workers, seed, interaction, skip-day, on, at)"
                        ),
                    ));
                }
            }
        }
        let start = start.ok_or_else(|| err(0, "no start date (start YYYY-MM-DD)".into()))?;
        let workers = workers.ok_or_else(|| err(0, "no fleet size (workers N)".into()))?;
        let mut recurring = Vec::new();
        let mut one_off = Vec::new();
        for (n, tokens) in lines {
            let t: Vec<&str> = tokens.iter().map(String::as_str).collect();
            if t[0] == "on" {
                let [_, days_s, from, to, kind, rest @ ..] = t.as_slice() else {
                    return Err(err(
                        n,
                        "expected: on DAYS FROM[~J] TO[~J] KIND [workers A-B] [p P]".into(),
                    ));
                };
                let kind = Kind::parse(kind).ok_or_else(|| {
                    err(
                        n,
                        format!("{kind:?} is not a kind (interactive, design, running, forgotten)"),
                    )
                })?;
                let (workers_r, p) = parse_options(rest, workers, true).map_err(|e| err(n, e))?;
                recurring.push(Recurring {
                    days: parse_days(days_s).map_err(|e| err(n, e))?,
                    from: parse_time_jitter(from).map_err(|e| err(n, e))?,
                    to: parse_time_jitter(to).map_err(|e| err(n, e))?,
                    kind,
                    workers: workers_r,
                    p,
                });
            } else {
                let [_, date, from, to, kind, rest @ ..] = t.as_slice() else {
                    return Err(err(
                        n,
                        "expected: at DATE FROM TO KIND [workers A-B]".into(),
                    ));
                };
                let kind = Kind::parse(kind).ok_or_else(|| {
                    err(
                        n,
                        format!("{kind:?} is not a kind (interactive, design, running, forgotten)"),
                    )
                })?;
                let (workers_r, _) = parse_options(rest, workers, false).map_err(|e| err(n, e))?;
                one_off.push(OneOff {
                    date: date
                        .parse()
                        .map_err(|_| err(n, format!("{date:?} is not a date (YYYY-MM-DD)")))?,
                    from: parse_minutes(from).map_err(|e| err(n, e))?,
                    to: parse_minutes(to).map_err(|e| err(n, e))?,
                    kind,
                    workers: workers_r,
                });
            }
        }
        Ok(Self {
            name,
            start,
            days,
            tz,
            workers,
            seed,
            interaction,
            skip_day,
            recurring,
            one_off,
        })
    }

    /// The seeded random trace: for each worker and day, a chance of no use at all; on the
    /// other days one to three sessions between 07:00 and 21:00 of random kinds and lengths,
    /// sometimes a lab left running overnight, now and then one forgotten.
    pub fn random(seed: u64, workers: usize, days: u32) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut one_off = Vec::new();
        let start: Date = jiff::civil::date(2026, 3, 2);
        for w in 0..workers {
            for d in 0..days {
                let Ok(date) = start.checked_add(jiff::Span::new().days(i64::from(d))) else {
                    continue;
                };
                let weekend = date.weekday().to_monday_zero_offset() >= 5;
                if rng.random_bool(if weekend { 0.9 } else { 0.35 }) {
                    continue;
                }
                let sessions = rng.random_range(1..=3u16);
                let mut at = rng.random_range(7 * 60..11 * 60u16);
                for _ in 0..sessions {
                    let len = rng.random_range(20..=240u16);
                    let end = (at + len).min(21 * 60);
                    if end <= at {
                        break;
                    }
                    let kind = match rng.random_range(0..20) {
                        0..=13 => Kind::Interactive,
                        14..=17 => Kind::Design,
                        _ => Kind::Interactive,
                    };
                    one_off.push(OneOff {
                        date,
                        from: at,
                        to: end,
                        kind,
                        workers: (w, w),
                    });
                    at = end + rng.random_range(15..=300u16);
                    if at >= 20 * 60 {
                        break;
                    }
                }
                let last_end = at.min(22 * 60);
                if rng.random_bool(0.08) {
                    // A long run left overnight on purpose, until the next morning.
                    one_off.push(OneOff {
                        date,
                        from: last_end.saturating_sub(1),
                        to: 8 * 60,
                        kind: Kind::Running,
                        workers: (w, w),
                    });
                }
            }
        }
        Self {
            name: format!("random (seed {seed})"),
            start,
            days,
            tz: TimeZone::UTC,
            workers,
            seed,
            interaction: std::time::Duration::from_secs(20 * 60),
            skip_day: 0.0,
            recurring: Vec::new(),
            one_off,
        }
    }

    /// The seeded random trace of working days (`random-workday`): the same days as
    /// [`Trace::random`] (a weekday untouched with probability 0.35, a weekend day 0.9, a lab
    /// left running overnight after 8 % of the days used), but the gaps between sessions
    /// drawn from a mixture of what people do at work, not from one uniform range:
    ///
    /// - the day starts around 09:00 (± 1 h) and ends — "done for the day" — around 17:30
    ///   (± 1.5 h);
    /// - work comes in blocks of 45 min to 2.5 h, separated by short breaks of 10 to 40 min
    ///   (coffee, a meeting; the lab is left running over half of them);
    /// - one lunch on 85 % of the days, beginning around 12:15 (± 45 min) and lasting 30 to
    ///   75 min, 105 min now and then (one lunch in ten runs 30 min over; the lab is left
    ///   running over 40 % of them);
    /// - a short evening look-in (30 to 90 min from 20:00–21:00) after 5 % of the days.
    ///
    /// Sessions are `interactive` (four in five) or `design`, as in the uniform model. The
    /// parameters are those of an office day, chosen before running any policy on it.
    pub fn random_workday(seed: u64, workers: usize, days: u32) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut one_off = Vec::new();
        let start: Date = jiff::civil::date(2026, 3, 2);
        // A symmetric draw in [-spread, spread], most likely near 0 (two uniform halves).
        let around = |rng: &mut StdRng, spread: u16| -> i32 {
            let h = i32::from(spread / 2);
            rng.random_range(-h..=h) + rng.random_range(-h..=h)
        };
        // A session; an end before its start is on the next day (as in a trace's `at` line).
        let mut session = |date: Date, from: u16, to: u16, kind: Kind, w: usize| {
            if to != from {
                one_off.push(OneOff {
                    date,
                    from,
                    to,
                    kind,
                    workers: (w, w),
                });
            }
        };
        for w in 0..workers {
            for d in 0..days {
                let Ok(date) = start.checked_add(jiff::Span::new().days(i64::from(d))) else {
                    continue;
                };
                let weekend = date.weekday().to_monday_zero_offset() >= 5;
                if rng.random_bool(if weekend { 0.9 } else { 0.35 }) {
                    continue;
                }
                let minute = |m: i32| m.clamp(0, 23 * 60 + 59) as u16;
                let arrive = minute(9 * 60 + around(&mut rng, 60));
                let leave = minute(17 * 60 + 30 + around(&mut rng, 90)).max(arrive + 60);
                let lunch = rng
                    .random_bool(0.85)
                    .then(|| minute(12 * 60 + 15 + around(&mut rng, 45)));
                let lunch_len =
                    rng.random_range(30..=75u16) + if rng.random_bool(0.1) { 30 } else { 0 };
                let lunch_lab = rng.random_bool(0.4);
                let mut lunch = lunch.filter(|l| *l > arrive && *l < leave);
                let mut at = arrive;
                while at < leave {
                    let kind = if rng.random_range(0..5) == 0 {
                        Kind::Design
                    } else {
                        Kind::Interactive
                    };
                    let mut end = (at + rng.random_range(45..=150u16)).min(leave);
                    let (gap, lab) = match lunch {
                        Some(l) if end >= l => {
                            end = l.max(at + 15).min(leave);
                            lunch = None;
                            (lunch_len, lunch_lab)
                        }
                        _ => (rng.random_range(10..=40u16), rng.random_bool(0.5)),
                    };
                    session(date, at, end, kind, w);
                    if end >= leave {
                        break;
                    }
                    let back = (end + gap).min(leave);
                    if lab && kind == Kind::Interactive {
                        session(date, end, back, Kind::Running, w);
                    }
                    at = back;
                }
                if rng.random_bool(0.05) {
                    let from = 20 * 60 + rng.random_range(0..=60u16);
                    session(
                        date,
                        from,
                        from + rng.random_range(30..=90u16),
                        Kind::Interactive,
                        w,
                    );
                }
                if rng.random_bool(0.08) {
                    // A long run left overnight on purpose, until the next morning.
                    session(date, leave.saturating_sub(1), 8 * 60, Kind::Running, w);
                }
            }
        }
        Self {
            name: format!("random-workday (seed {seed})"),
            start,
            days,
            tz: TimeZone::UTC,
            workers,
            seed,
            interaction: std::time::Duration::from_secs(20 * 60),
            skip_day: 0.0,
            recurring: Vec::new(),
            one_off,
        }
    }

    /// The instant of local `date` + `minutes` (may roll into the next days).
    fn instant(&self, date: Date, minutes: i64) -> Option<DateTime<Utc>> {
        let days = minutes.div_euclid(1440);
        let rest = minutes.rem_euclid(1440);
        let date = date.checked_add(jiff::Span::new().days(days)).ok()?;
        let dt = date.at((rest / 60) as i8, (rest % 60) as i8, 0, 0);
        let ts = dt.to_zoned(self.tz.clone()).ok()?.timestamp();
        DateTime::from_timestamp(ts.as_second(), 0)
    }

    /// The IANA name of the trace's time zone (`UTC` when it has none).
    pub fn time_zone_name(&self) -> &str {
        self.tz.iana_name().unwrap_or("UTC")
    }

    /// The first instant of the trace.
    pub fn start(&self) -> DateTime<Utc> {
        self.instant(self.start, 0).unwrap_or_default()
    }

    /// The end of the trace (exclusive).
    pub fn end(&self) -> DateTime<Utc> {
        self.instant(self.start, i64::from(self.days) * 1440)
            .unwrap_or_default()
    }

    /// The local weekday (0 = Monday) and minute of the day of `t`, in the trace's zone.
    pub fn local(&self, t: DateTime<Utc>) -> (u8, u16) {
        let Ok(ts) = jiff::Timestamp::from_second(t.timestamp()) else {
            return (0, 0);
        };
        let z = ts.to_zoned(self.tz.clone());
        (
            z.weekday().to_monday_zero_offset() as u8,
            (z.hour() as u16) * 60 + z.minute() as u16,
        )
    }

    /// Expands the trace: one timeline per worker (deterministic for a seed).
    pub fn expand(&self) -> Vec<Timeline> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut sessions: Vec<Vec<Session>> = vec![Vec::new(); self.workers];
        let end = self.end();
        for d in 0..self.days {
            let Ok(date) = self.start.checked_add(jiff::Span::new().days(i64::from(d))) else {
                continue;
            };
            let weekday = date.weekday().to_monday_zero_offset() as usize;
            let skipped: Vec<bool> = (0..self.workers)
                .map(|_| rng.random_bool(self.skip_day))
                .collect();
            for r in &self.recurring {
                for (w, sessions) in sessions
                    .iter_mut()
                    .enumerate()
                    .take(r.workers.1 + 1)
                    .skip(r.workers.0)
                {
                    // Draw every time, whether the day applies or not, so that adding a line
                    // for other days does not change this line's draws.
                    let happens = rng.random_bool(r.p);
                    let j1 = jitter(&mut rng, r.from.1);
                    let j2 = jitter(&mut rng, r.to.1);
                    if !r.days[weekday] || !happens || skipped[w] {
                        continue;
                    }
                    // Whether the session ends the next day is decided on the times as
                    // written: jitter must not turn `10:00~60m 11:00~30m` (an end drawn
                    // before the start) into a session until the next morning.
                    let from = i64::from(r.from.0) + j1;
                    let mut to = i64::from(r.to.0) + j2;
                    if r.to.0 <= r.from.0 {
                        to += 1440;
                    }
                    if to <= from {
                        continue;
                    }
                    if let (Some(a), Some(b)) = (self.instant(date, from), self.instant(date, to)) {
                        sessions.push((a, b.min(end), r.kind));
                    }
                }
            }
        }
        for o in &self.one_off {
            let to = if o.to <= o.from {
                i64::from(o.to) + 1440
            } else {
                i64::from(o.to)
            };
            if let (Some(a), Some(b)) = (
                self.instant(o.date, i64::from(o.from)),
                self.instant(o.date, to),
            ) {
                for s in sessions.iter_mut().take(o.workers.1 + 1).skip(o.workers.0) {
                    s.push((a, b.min(end), o.kind));
                }
            }
        }
        let mean = self.interaction.as_secs_f64();
        sessions
            .into_iter()
            .map(|s| timeline(&s, self.start(), mean, &mut rng))
            .collect()
    }
}

fn jitter(rng: &mut StdRng, minutes: u16) -> i64 {
    if minutes == 0 {
        return 0;
    }
    rng.random_range(-i64::from(minutes)..=i64::from(minutes))
}

/// Sweeps sessions into segments (strongest kind wins) and draws the user's actions.
fn timeline(
    sessions: &[(DateTime<Utc>, DateTime<Utc>, Kind)],
    start: DateTime<Utc>,
    mean_gap: f64,
    rng: &mut StdRng,
) -> Timeline {
    let mut cuts: Vec<DateTime<Utc>> = sessions
        .iter()
        .flat_map(|(a, b, _)| [*a, *b])
        .chain([start])
        .collect();
    cuts.sort();
    cuts.dedup();
    let mut segments: Vec<(DateTime<Utc>, State)> = Vec::new();
    for t in cuts {
        let kind = sessions
            .iter()
            .filter(|(a, b, _)| *a <= t && t < *b)
            .map(|(_, _, k)| *k)
            .max();
        let state = State { kind };
        if segments.last().map(|(_, s)| *s) != Some(state) {
            segments.push((t, state));
        }
    }
    let mut actions = Vec::new();
    for (i, (from, state)) in segments.iter().enumerate() {
        if !state.present() {
            continue;
        }
        let to = segments.get(i + 1).map_or(*from, |(t, _)| *t);
        actions.push(*from);
        let mut t = *from;
        loop {
            // Exponential gaps: a Poisson process of actions.
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            t += Duration::seconds((-u.ln() * mean_gap) as i64);
            if t >= to {
                break;
            }
            actions.push(t);
        }
    }
    Timeline { segments, actions }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const SAMPLE: &str = "\
# a small trace
name sample
start 2026-03-02   # a Monday
days 2
timezone Europe/Paris
workers 3
seed 7
on Mon-Fri 09:00 12:00 interactive
on Mon 12:00 13:00 running workers 2
at 2026-03-03 19:00 02:00 forgotten workers 3
";

    fn utc(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, d, h, m, 0).unwrap()
    }

    #[test]
    fn a_trace_should_expand_into_timelines_in_its_time_zone() {
        let t = Trace::parse("sample.trace", SAMPLE).unwrap();
        assert_eq!(t.name, "sample");
        assert_eq!(
            t.start(),
            utc(1, 23, 0),
            "Paris midnight is 23:00 UTC the day before"
        );
        assert_eq!(t.end(), utc(3, 23, 0));
        let tl = t.expand();
        assert_eq!(tl.len(), 3);
        // 09:00-12:00 Paris = 08:00-11:00 UTC.
        assert!(tl[0].state_at(utc(2, 8, 0)).in_use());
        assert_eq!(tl[0].state_at(utc(2, 8, 0)).kind, Some(Kind::Interactive));
        assert!(!tl[0].state_at(utc(2, 11, 0)).in_use());
        assert!(tl[1].state_at(utc(2, 11, 30)).in_use(), "worker 2's run");
        assert!(!tl[1].state_at(utc(2, 11, 30)).present());
        assert_eq!(tl[2].state_at(utc(3, 20, 0)).kind, Some(Kind::Forgotten));
        assert!(!tl[2].state_at(utc(3, 20, 0)).in_use());
        assert!(tl[2].state_at(utc(3, 20, 0)).nodes());
        assert_eq!(tl[2].state_at(utc(3, 22, 59)).kind, Some(Kind::Forgotten));
        assert_eq!(tl[0].next_use(utc(2, 11, 0)), Some(utc(3, 8, 0)));
        // Actions: one at each session start, then a Poisson process inside.
        assert_eq!(tl[0].actions.first(), Some(&utc(2, 8, 0)));
        assert!(tl[0].actions.iter().all(|a| tl[0].state_at(*a).present()));
        // The same seed gives the same timelines.
        assert_eq!(Trace::parse("x", SAMPLE).unwrap().expand(), tl);
    }

    #[test]
    fn jitter_should_never_carry_a_daytime_session_into_the_next_day() {
        // Ends drawn before their starts (10:40 → 10:35, say): no session, not one until the
        // next morning.
        let text = "name j\nstart 2026-03-02\ndays 1\ntimezone UTC\nworkers 200\nseed 5\n\
                    on Mon 10:00~60m 11:00~30m design\n";
        let t = Trace::parse("j.trace", text).unwrap();
        let tl = t.expand();
        assert!(tl.iter().all(|w| !w.state_at(utc(2, 13, 0)).in_use()));
        assert!(
            tl.iter().any(|w| w.state_at(utc(2, 10, 50)).in_use()),
            "most sessions still happen"
        );
    }

    #[test]
    fn bad_lines_should_be_reported_with_their_number_and_reason() {
        let cases = [
            (
                "start 2026-03-02\nworkers 2\nbogus 1",
                "x:3: unknown directive \"bogus\"",
            ),
            (
                "start 2026-13-02\nworkers 2",
                "x:1: \"2026-13-02\" is not a date",
            ),
            (
                "start 2026-03-02\nworkers 0",
                "x:2: \"0\": workers is 1 to 5000",
            ),
            ("workers 2", "x:0: no start date"),
            ("start 2026-03-02", "x:0: no fleet size"),
            (
                "start 2026-03-02\nworkers 2\n\non Mon-Fri 9:00 10:00 sleeping",
                "x:4: \"sleeping\" is not a kind",
            ),
            (
                "start 2026-03-02\nworkers 2\non Mon-Fry 09:00 10:00 design",
                "x:3: \"Fry\" is not a day",
            ),
            (
                "start 2026-03-02\nworkers 2\non Mon 09:00 25:00 design",
                "x:3: \"25:00\" is not a time",
            ),
            (
                "start 2026-03-02\nworkers 2\non Mon 09:00 10:00 design workers 1-3",
                "x:3: worker 3 is beyond the fleet",
            ),
            (
                "start 2026-03-02\nworkers 2\non Mon 09:00 10:00 design p 2",
                "x:3: \"2\" is not a probability",
            ),
            (
                "start 2026-03-02\nworkers 2\nat 2026-03-02 09:00 10:00 design p 0.5",
                "x:3: unknown option \"p\"",
            ),
            (
                "start 2026-03-02\nworkers 2\ntimezone Mars/Base",
                "x:3: \"Mars/Base\" is not a time zone",
            ),
            (
                "start 2026-03-02\nworkers 2\non Mon 09:00",
                "x:3: expected: on DAYS",
            ),
            (
                "start 2026-03-02\nworkers 2\ninteraction 10s",
                "x:3: interaction is at least 1m",
            ),
        ];
        for (text, want) in cases {
            let e = Trace::parse("x", text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_random_trace_should_be_reproducible_from_its_seed() {
        let a = Trace::random(42, 20, 7);
        let b = Trace::random(42, 20, 7);
        assert_eq!(a.expand(), b.expand());
        assert_ne!(a.expand(), Trace::random(43, 20, 7).expand());
        let used: usize = a
            .expand()
            .iter()
            .filter(|t| t.segments.iter().any(|(_, s)| s.in_use()))
            .count();
        assert!(used > 10, "most workers are used at some point: {used}");
    }

    #[test]
    fn the_workday_model_should_have_lunches_around_midday_and_evenings_off() {
        let a = Trace::random_workday(5, 60, 7);
        assert_eq!(a.expand(), Trace::random_workday(5, 60, 7).expand());
        assert_ne!(a.expand(), Trace::random_workday(6, 60, 7).expand());
        assert_eq!(a.name, "random-workday (seed 5)");
        let minute = |t: DateTime<Utc>| {
            use chrono::Timelike;
            t.hour() * 60 + t.minute()
        };
        let (mut lunches, mut short, mut other) = (0, 0, 0);
        for tl in a.expand() {
            // The stretches with someone there.
            let mut present: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
            for (i, (from, state)) in tl.segments.iter().enumerate() {
                let to = tl.segments.get(i + 1).map_or(a.end(), |(t, _)| *t);
                if !state.present() {
                    continue;
                }
                match present.last_mut() {
                    Some((_, e)) if *e == *from => *e = to,
                    _ => present.push((*from, to)),
                }
            }
            for (from, _) in &present {
                // Nobody starts before 07:30 (09:00 - 1 h at most).
                assert!(minute(*from) >= 7 * 60 + 30, "{from}");
            }
            for pair in present.windows(2) {
                let ((_, end), (back, _)) = (pair[0], pair[1]);
                if end.date_naive() != back.date_naive() || minute(end) >= 19 * 60 {
                    continue;
                }
                let gap = (back - end).num_minutes();
                if gap <= 40 {
                    short += 1;
                } else if (11 * 60 + 30..=13 * 60).contains(&minute(end)) && gap <= 105 {
                    lunches += 1;
                } else {
                    other += 1;
                }
            }
        }
        assert!(lunches > 50, "lunches: {lunches}");
        assert!(short > 100, "short breaks: {short}");
        // Lunches of up to 75 min that begin before 11:30 or after 13:00 (the ± 45 min), and
        // the evening look-ins' gaps are all there is besides.
        assert!(other < lunches, "other gaps: {other}, lunches {lunches}");
    }

    #[test]
    fn every_preset_should_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/traces");
        for name in super::super::PRESETS {
            let path = dir.join(format!("{name}.trace"));
            let text = std::fs::read_to_string(&path).unwrap();
            let t = Trace::parse(name, &text).unwrap();
            assert!(t.workers > 0 && !t.expand().is_empty(), "{name}");
        }
    }
}
