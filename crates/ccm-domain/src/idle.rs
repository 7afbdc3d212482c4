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
//!
//! Which timeout applies ([`TimeoutRule`], in this order): `nobody_since_start_timeout` for a
//! worker ccm itself brought up (an automatic import, a schedule's start) that nobody has used
//! since ([`nobody_since_start`]); `return_timeout` (for a lunch — a
//! quiet stretch begun in the midday hours, or before them and reaching them where the fleet
//! shows a midday dip out of chance, [`ReturnProfile::midday`] — lengthened to the longest remembered
//! return, up to `return_timeout_max`) where the learned breaks near this time of day (as
//! known when the worker went quiet; later evidence may only lengthen) often ended in a
//! return; before there
//! is such evidence, `return_timeout_max` for a quiet stretch that reaches the middle of the
//! working day (`midday_hours`: lunch, [`reaches_midday`]), `run_end_timeout` after the end of
//! an unattended run (a lab stop after `run_end_after` without work, [`lab_stopped`]),
//! `break_timeout` while the fleet is busy; `no_return_timeout` after a session's end at an
//! hour when people (almost) never came back; `session_end_timeout` after a session's end;
//! else `timeout`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ec2::Ec2State;
use crate::ids::Actor;
use crate::worker::{ActivitySource, Worker};

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
    /// timeout (0: never; the plain timeout always applies). In use here means an
    /// interaction (telemetry) or a resume within the timeout: labs running with nobody
    /// interacting (overnight runs) do not make the fleet busy.
    pub busy_fleet_percent: u8,
    /// The timeout after a strong end-of-session signal: the latest activity stopped a lab or
    /// node (`stop_lab`, `stop_node` telemetry) and the latest CML sync found no running nodes.
    /// The user put their work away, so waiting the full `timeout` mostly pays for an empty
    /// worker. Applies only while the fleet is not busy (a break at a busy fleet keeps
    /// `break_timeout`); never longer than `timeout` (equal to it: the rule is off).
    #[serde(with = "humantime_serde")]
    pub session_end_timeout: Duration,
    /// A lab stop after at least this long without an interaction (nobody touched the worker
    /// while its nodes ran, e.g. overnight) ends an unattended run, not a session: its user
    /// was not there and did not leave; they often come to read the results. Such a stop gets
    /// `run_end_timeout` instead of `session_end_timeout`.
    #[serde(with = "humantime_serde")]
    pub run_end_after: Duration,
    /// The timeout after the end of an unattended run (see `run_end_after`), before there is
    /// evidence about returns at this time of day (the learned return rule decides once
    /// there is).
    #[serde(with = "humantime_serde")]
    pub run_end_timeout: Duration,
    /// After a session's end (a lab stop by someone who was there, no nodes left) at a time of
    /// day when people (almost) never came back — the learned return rule has its breaks, and
    /// at most `no_return_percent` of every remembered break begun near it (from 15 min, the
    /// short ones included) ended within `return_timeout` — the worker is idle after this
    /// instead of `session_end_timeout` (the end of the working day). Not shorter is off.
    #[serde(with = "humantime_serde")]
    pub no_return_timeout: Duration,
    /// See `no_return_timeout`.
    pub no_return_percent: u8,
    /// A worker ccm itself brought up — imported by ccm (`auto-import`), or started by ccm (a
    /// schedule's start) — that nobody has used since (no interaction, no activity, no running
    /// nodes since then, nor within `timeout` before it) is idle after this instead of any
    /// other timeout: nobody has work open on it, nobody went on a break from it. A worker a
    /// person brought up (a start or a provisioning through ccm, an import by a person, a
    /// start outside ccm) does not get it: the start is that person's activity. The grace after
    /// a resume (`snooze_after_resume`) still holds. Not shorter than `timeout`: off.
    #[serde(with = "humantime_serde")]
    pub nobody_since_start_timeout: Duration,
    /// The learned return rule: where users often came back after a long break at this time
    /// of day (lunch, a daily meeting), a quiet worker gets this timeout instead, so that the
    /// break is not paused just before they return. Longer than `timeout` to be on.
    #[serde(with = "humantime_serde")]
    pub return_timeout: Duration,
    /// For a quiet stretch begun in the midday hours (`midday_hours`, when `local_time_zone`
    /// is set), or before them and reaching them within `return_timeout` where the fleet's
    /// users are seen away at midday (a midday dip), the learned return rule's timeout
    /// grows to the longest break near this time of day that ended in a return within this
    /// long (plus `RETURN_MARGIN`), so that lunches longer than `return_timeout` are not paused
    /// just before their end; before there is evidence, such a stretch gets this long (see
    /// `midday_hours`). Not longer than `return_timeout`: the timeout stays `return_timeout`.
    #[serde(with = "humantime_serde")]
    pub return_timeout_max: Duration,
    /// The middle of the working day, local time (`HH:MM-HH:MM` in `local_time_zone`; empty:
    /// off): before there is evidence about returns at this time of day (the first days), a
    /// worker whose quiet stretch reaches these hours within `break_timeout` (gone quiet in
    /// them, or in the morning before them) is presumed at lunch and gets the longest lunch
    /// the learned rule allows (`return_timeout_max`, at least `break_timeout`), even after a
    /// lab stop and while the fleet is not busy.
    pub midday_hours: String,
    /// The IANA time zone of the fleet's working hours (`midday_hours`). Empty (the default):
    /// not known, and the midday prior is off — ccm cannot tell the middle of a day without it.
    pub local_time_zone: String,
    /// Breaks count for the current one when they began within this much of its time of day
    /// (UTC).
    #[serde(with = "humantime_serde")]
    pub return_window: Duration,
    /// Breaks older than this are forgotten.
    #[serde(with = "humantime_serde")]
    pub return_memory: Duration,
    /// The rule applies when at least this percentage of the remembered breaks near this
    /// time of day (those that lasted as long as the shortest timeout) ended within
    /// `return_timeout`…
    pub return_min_percent: u8,
    /// …and there are at least this many of them.
    pub return_min_breaks: u32,
    /// Whose breaks: the worker's own, or the whole fleet's (a team's rhythm; one worker
    /// alone has few breaks a week).
    pub return_scope: ReturnScope,
}

/// Whose breaks the learned return rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnScope {
    /// The worker's own breaks.
    Worker,
    /// Every worker's breaks (this process's fleet).
    Fleet,
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
            session_end_timeout: Duration::from_secs(30 * 60),
            run_end_after: Duration::from_secs(3 * 60 * 60),
            run_end_timeout: Duration::from_secs(2 * 60 * 60),
            no_return_timeout: Duration::from_secs(15 * 60),
            no_return_percent: 5,
            nobody_since_start_timeout: Duration::from_secs(30 * 60),
            return_timeout: Duration::from_secs(2 * 60 * 60),
            return_timeout_max: Duration::from_secs(3 * 60 * 60 + 30 * 60),
            midday_hours: "11:00-14:00".into(),
            local_time_zone: String::new(),
            return_window: Duration::from_secs(60 * 60),
            return_memory: Duration::from_secs(14 * 24 * 60 * 60),
            return_min_percent: 20,
            return_min_breaks: 5,
            return_scope: ReturnScope::Fleet,
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
    /// The timeout that applied (see `timeout_rule`).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Whether the fleet counted as busy.
    pub fleet_busy: bool,
    /// Which rule chose `timeout`.
    pub timeout_rule: TimeoutRule,
    /// The breaks the learned return rule looked at (none when the rule is off).
    pub returns: Option<ReturnStats>,
    /// The fleet's midday dip at the time of day the worker went quiet, with its counts (none
    /// when the learned return rule is off, or without `midday_hours` and `local_time_zone`):
    /// whether a morning stretch that reaches midday is a lunch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub midday: Option<MiddayDip>,
}

/// What the learned return rule saw: of `breaks` remembered breaks that began near this
/// time of day and lasted at least the shortest timeout, `returned` ended within
/// `return_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnStats {
    /// Breaks counted.
    pub breaks: u32,
    /// Of them, those that ended within `return_timeout`.
    pub returned: u32,
    /// Remembered breaks shorter than the shortest timeout begun near this time of day (not
    /// in `breaks`; the no-return rule counts them too).
    #[serde(default)]
    pub short_breaks: u32,
    /// Of them, those that ended within `return_timeout` (all, unless the timeout is shorter
    /// than a break can be).
    #[serde(default)]
    pub short_returned: u32,
    /// The longest of these breaks (long or short) that ended in a return within
    /// `return_timeout_max`, as known then (see `return_timeout_max`).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub longest_return: Option<Duration>,
    /// Whose breaks.
    pub scope: ReturnScope,
}

const SLOT_MINUTES: u32 = 10;
const SLOTS: usize = (24 * 60 / SLOT_MINUTES) as usize;

/// Breaks by the time of day they began (10-minute slots, UTC): those that lasted at least
/// the shortest timeout, each with whether it ended within `return_timeout` and when that was
/// known (its return, or `return_timeout` after it began when it lasted longer). A quiet
/// worker is judged on the evidence known when it went quiet, so that its timeout does not
/// change under it as other workers' breaks end during its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnProfile {
    slots: Vec<Vec<Remembered>>,
    /// How many remembered absences (stretches without an interaction of at least `timeout`,
    /// see `Monitoring::absences`) covered each slot, one count per day covered: whole days here,
    /// the rest as a difference array over the slots (`away_at`).
    away_days: u64,
    away_diff: Vec<i64>,
}

/// The midday dip's evidence (see [`ReturnProfile::midday`]): remembered absences covering
/// each time of day, one count per day covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MiddayDip {
    /// The middle stands out of both sides ([`stands_out`]): a lunch.
    pub dip: bool,
    /// Absences covering an hour before the midday hours.
    pub before: u64,
    /// Absences covering the middle of the midday hours.
    pub middle: u64,
    /// Absences covering an hour after them.
    pub after: u64,
}

/// Whether a count `middle` exceeds a count `side` by more than chance: by more than two
/// standard deviations of their difference, `(middle − side)² > 4 (middle + side)`. Without a
/// daily rhythm both counts have the same mean; given their sum `n`, `middle` is then
/// binomial (n, ½), and this is the normal approximation of the one-sided binomial test at
/// z = 2 (≈ 2.3 % per side, both sides required). An absence covering both times counts in
/// both and so only widens the allowance (McNemar's test would count the discordant ones
/// alone): the test errs towards no dip, the plain learned timeout.
pub fn stands_out(middle: u64, side: u64) -> bool {
    let d = u128::from(middle.saturating_sub(side));
    middle > side && d * d > 4 * (u128::from(middle) + u128::from(side))
}

/// One break in a [`ReturnProfile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Remembered {
    /// When its outcome was known.
    known: DateTime<Utc>,
    /// It ended within `return_timeout`.
    returned: bool,
    /// It lasted at least the shortest timeout.
    long: bool,
    /// When it ended and its length, when it ended in a return within `return_timeout_max`.
    back_after: Option<(DateTime<Utc>, chrono::Duration)>,
}

fn slot_of(at: DateTime<Utc>) -> usize {
    use chrono::Timelike;
    (at.num_seconds_from_midnight() / 60 / SLOT_MINUTES) as usize % SLOTS
}

impl ReturnProfile {
    fn empty() -> Self {
        Self {
            slots: vec![Vec::new(); SLOTS],
            away_days: 0,
            away_diff: vec![0; SLOTS + 1],
        }
    }

    /// Counts an absence from `from` lasting `length` in `away`: each slot once per day it
    /// covers.
    fn count_away(&mut self, from: DateTime<Utc>, length: chrono::Duration) {
        let slots = (length.num_minutes().max(0) as u64 / u64::from(SLOT_MINUTES)) as usize;
        let (days, rest) = ((slots / SLOTS) as u64, slots % SLOTS);
        let first = slot_of(from);
        self.away_days = self.away_days.saturating_add(days);
        let mut mark = |from: usize, to: usize| {
            self.away_diff[from] += 1;
            self.away_diff[to] -= 1;
        };
        if first + rest <= SLOTS {
            mark(first, first + rest);
        } else {
            mark(first, SLOTS);
            mark(0, first + rest - SLOTS);
        }
    }

    /// How many remembered absences covered `slot` (one count per day).
    fn away_at(&self, slot: usize) -> u64 {
        let part: i64 = self.away_diff[..=slot % SLOTS].iter().sum();
        self.away_days.saturating_add(part.max(0) as u64)
    }

    /// Whether the fleet shows a midday dip at the local time of day of `at`: see
    /// [`ReturnProfile::midday`].
    pub fn midday_dip(&self, at: DateTime<Utc>, settings: &IdleSettings) -> bool {
        self.midday(at, settings).is_some_and(|m| m.dip)
    }

    /// How many remembered absences (no interaction for at least `timeout`, whatever labs ran
    /// over it) covered the middle of the midday hours, an hour before them and an hour after
    /// them, by the local time of day of `at` (`local_time_zone`), and whether the middle
    /// stands out of both sides by more than chance ([`stands_out`]): the fleet's users
    /// are away at midday, a lunch. `None` without midday hours or a zone.
    pub fn midday(&self, at: DateTime<Utc>, settings: &IdleSettings) -> Option<MiddayDip> {
        use chrono::Timelike;
        let (Ok((start, end)), Some(local)) = (
            parse_midday_hours(&settings.midday_hours),
            local_minute(at, settings),
        ) else {
            return None;
        };
        let day = 24 * 60;
        let offset = (local + day - at.num_seconds_from_midnight() / 60 % day) % day;
        let away = |minute: i64| {
            let utc = (minute.rem_euclid(i64::from(day)) as u32 + day - offset) % day;
            self.away_at((utc / SLOT_MINUTES) as usize)
        };
        let (start, end) = (i64::from(start), i64::from(end));
        let (before, middle, after) = (away(start - 60), away((start + end) / 2), away(end + 60));
        Some(MiddayDip {
            dip: stands_out(middle, before) && stands_out(middle, after),
            before,
            middle,
            after,
        })
    }

    /// Adds `worker`'s remembered breaks within `return_memory`, and its current quiet
    /// stretch when it already outlasted `return_timeout` (a known non-return).
    pub fn add(&mut self, worker: &Worker, settings: &IdleSettings, now: DateTime<Utc>) {
        if worker.ec2_state.is_final() {
            return;
        }
        let chrono_of =
            |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        let oldest = now.checked_sub_signed(chrono_of(settings.return_memory));
        let shortest = chrono_of(settings.timeout.min(settings.session_end_timeout));
        let back = chrono_of(settings.return_timeout);
        let max = chrono_of(settings.return_timeout_max.max(settings.return_timeout));
        let mut count = |from: DateTime<Utc>, length: chrono::Duration, open: bool| {
            if oldest.is_some_and(|o| from < o) {
                return;
            }
            let returned = length <= back;
            let known = if returned {
                from.checked_add_signed(length)
            } else {
                from.checked_add_signed(back)
            };
            self.slots[slot_of(from)].push(Remembered {
                known: known.unwrap_or(DateTime::<Utc>::MAX_UTC),
                returned,
                long: length >= shortest,
                back_after: (!open && length <= max)
                    .then(|| from.checked_add_signed(length).map(|end| (end, length)))
                    .flatten(),
            });
        };
        for b in &worker.monitoring.breaks {
            count(b.from, b.to - b.from, false);
        }

        // A worker whose nodes run is not quiet, however long ago they were last counted.
        let nodes = worker.monitoring.running_nodes.is_some_and(|n| n > 0);
        if let Some(last) = worker.monitoring.last_activity
            && now - last > back
            && !nodes
        {
            count(last, now - last, true);
        }
        // Away: no interaction for at least the plain timeout (shorter gaps are the pauses
        // between a present user's actions).
        let away = chrono_of(settings.timeout);
        for a in &worker.monitoring.absences {
            if oldest.is_none_or(|o| a.from >= o) && a.to - a.from >= away {
                self.count_away(a.from, a.to - a.from);
            }
        }
    }

    /// The profile of `workers`' breaks.
    pub fn of<'a>(
        workers: impl IntoIterator<Item = &'a Worker>,
        settings: &IdleSettings,
        now: DateTime<Utc>,
    ) -> Self {
        let mut p = Self::empty();
        for w in workers {
            p.add(w, settings, now);
        }
        p
    }

    /// The breaks that began within `window` of the time of day of `at`, as known at `at`.
    pub fn around(&self, at: DateTime<Utc>, window: Duration, scope: ReturnScope) -> ReturnStats {
        self.around_known(at, at, window, scope)
    }

    /// The breaks that began within `window` of the time of day of `at`, as known at `known`.
    pub fn around_known(
        &self,
        at: DateTime<Utc>,
        known: DateTime<Utc>,
        window: Duration,
        scope: ReturnScope,
    ) -> ReturnStats {
        let reach =
            (window.as_secs() / 60 / u64::from(SLOT_MINUTES)).min(SLOTS as u64 / 2) as usize;
        let centre = slot_of(at);
        let (mut breaks, mut returned, mut short_breaks, mut short_returned) =
            (0u32, 0u32, 0u32, 0u32);
        let mut longest: Option<chrono::Duration> = None;
        let mut seen = [false; SLOTS];
        for d in 0..=reach {
            for slot in [(centre + d) % SLOTS, (centre + SLOTS - d) % SLOTS] {
                if !std::mem::replace(&mut seen[slot], true) {
                    for b in &self.slots[slot] {
                        // A return is known at its end (a return after `return_timeout` is
                        // known as such only then, after its non-return within it).
                        if let Some((end, len)) = b.back_after
                            && end <= known
                        {
                            longest = Some(longest.map_or(len, |l| l.max(len)));
                        }
                        if b.known > known {
                            continue;
                        }
                        let (n, r) = if b.long {
                            (&mut breaks, &mut returned)
                        } else {
                            (&mut short_breaks, &mut short_returned)
                        };
                        *n = n.saturating_add(1);
                        *r = r.saturating_add(u32::from(b.returned));
                    }
                }
            }
        }
        ReturnStats {
            breaks,
            returned,
            short_breaks,
            short_returned,
            longest_return: longest.and_then(|l| l.to_std().ok()),
            scope,
        }
    }
}

/// What the idle policy knows about the whole fleet: its busy share and the fleet's return
/// profile (each `None` when not computed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetPicture {
    /// The share of the fleet in use (see [`busy_share`]).
    pub busy_share: Option<f64>,
    /// The fleet's breaks by time of day (see [`ReturnProfile`]).
    pub returns: Option<ReturnProfile>,
}

impl FleetPicture {
    /// The picture of `workers` at `now`: what the settings' rules need of it.
    pub fn of(workers: &[Worker], settings: &IdleSettings, now: DateTime<Utc>) -> Self {
        let mut picture = Self::builder(settings, now);
        for w in workers {
            picture.add(w);
        }
        picture.finish()
    }

    /// A picture built one worker at a time: the fleet need not be in memory at once.
    pub fn builder(settings: &IdleSettings, now: DateTime<Utc>) -> FleetPictureBuilder<'_> {
        FleetPictureBuilder {
            settings,
            now,
            busy: (settings.busy_fleet_percent > 0).then(BusyCount::default),
            returns: (return_rule_on(settings) && settings.return_scope == ReturnScope::Fleet)
                .then(ReturnProfile::empty),
        }
    }
}

/// A [`FleetPicture`] being built (see [`FleetPicture::builder`]).
#[derive(Debug)]
pub struct FleetPictureBuilder<'a> {
    settings: &'a IdleSettings,
    now: DateTime<Utc>,
    busy: Option<BusyCount>,
    returns: Option<ReturnProfile>,
}

impl FleetPictureBuilder<'_> {
    /// Counts one worker of the fleet.
    pub fn add(&mut self, w: &Worker) {
        if let Some(busy) = &mut self.busy {
            busy.add(w, self.settings, self.now);
        }
        if let Some(returns) = &mut self.returns {
            returns.add(w, self.settings, self.now);
        }
    }

    /// The picture of the workers added.
    pub fn finish(self) -> FleetPicture {
        FleetPicture {
            busy_share: self.busy.map(BusyCount::share),
            returns: self.returns,
        }
    }
}

/// Workers counted for [`busy_share`]: those not terminated, and those of them in use.
#[derive(Debug, Default, Clone, Copy)]
struct BusyCount {
    total: u32,
    busy: u32,
}

impl BusyCount {
    fn add(&mut self, w: &Worker, settings: &IdleSettings, now: DateTime<Utc>) {
        if w.ec2_state.is_final() {
            return;
        }
        self.total += 1;
        if in_use(w, settings, now) {
            self.busy += 1;
        }
    }

    fn share(self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            f64::from(self.busy) / f64::from(self.total)
        }
    }
}

/// Whether the idle policy needs a [`FleetPicture`] (the break rule or the fleet-wide
/// learned return rule is on).
pub fn fleet_picture_needed(settings: &IdleSettings) -> bool {
    settings.busy_fleet_percent > 0
        || (return_rule_on(settings) && settings.return_scope == ReturnScope::Fleet)
}

/// Whether the learned return rule is on (`return_timeout` longer than `timeout`).
pub fn return_rule_on(settings: &IdleSettings) -> bool {
    settings.return_timeout > settings.timeout
}

/// Which rule chose the timeout of an idle decision (the worker page says why).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutRule {
    /// `timeout`.
    Plain,
    /// `break_timeout`: the fleet is busy, a quiet worker is probably on a break.
    FleetBusy,
    /// `session_end_timeout`: the user stopped their lab and no nodes run.
    SessionEnded,
    /// `run_end_timeout`: an unattended run ended (its lab stopped after hours without an
    /// interaction); its user was not there to leave.
    RunEnded,
    /// `no_return_timeout`: the session ended at a time of day when people (almost) never
    /// came back.
    NoReturn,
    /// `return_timeout` (up to `return_timeout_max`): users often came back after breaks
    /// begun at this time of day.
    LearnedReturn,
    /// `return_timeout_max` (at least `break_timeout`): no evidence about this time of day when
    /// the worker went quiet, and its quiet stretch reaches the middle of the working day
    /// (`midday_hours`): probably lunch.
    Midday,
    /// `nobody_since_start_timeout`: ccm brought the worker up (an automatic import, a
    /// schedule's start) and nobody has used it since.
    NobodySinceStart,
}

impl TimeoutRule {
    /// Its name in the API (`plain`, `fleet_busy`, `session_ended`, `run_ended`,
    /// `no_return`, `learned_return`, `midday`, `nobody_since_start`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::FleetBusy => "fleet_busy",
            Self::SessionEnded => "session_ended",
            Self::RunEnded => "run_ended",
            Self::NoReturn => "no_return",
            Self::LearnedReturn => "learned_return",
            Self::Midday => "midday",
            Self::NobodySinceStart => "nobody_since_start",
        }
    }
}

/// Whether ccm itself brought `worker` up and nobody has used it since (see
/// `nobody_since_start_timeout`): its latest start — its latest resume, else its creation —
/// was ccm's (a resume by a `system:` actor, e.g. a schedule's start; an import by one, e.g.
/// `auto-import`), and no activity of any kind (interaction, running nodes) was seen since
/// then nor within `timeout` before it. A start by a person, a start outside ccm (no actor)
/// and a resume missing from the history are a person's: never.
pub fn nobody_since_start(worker: &Worker, settings: &IdleSettings) -> bool {
    let m = &worker.monitoring;
    let resume = m.last_resume.filter(|r| *r >= worker.created_at);
    let by_ccm = match resume {
        Some(at) => m
            .history
            .iter()
            .rev()
            .find(|h| h.kind == crate::worker::HistoryKind::Resumed && h.at == at)
            .and_then(|h| h.by.as_ref())
            .is_some_and(Actor::is_system),
        None => worker.created_by.is_system(),
    };
    let start = resume.unwrap_or(worker.created_at);
    let chrono_of = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    let quiet_from = start
        .checked_sub_signed(chrono_of(settings.timeout))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    by_ccm
        && [m.last_activity, m.last_interaction, m.last_running_nodes_at]
            .into_iter()
            .flatten()
            .all(|at| at < quiet_from)
}

/// Telemetry categories that end a session's lab work (see `session_end_timeout`).
pub const SESSION_END_CATEGORIES: &[&str] = &["stop_lab", "stop_node"];

/// Whether at most `no_return_percent` of every break in `r` (the short ones included) ended
/// in a return.
fn never_back(r: &ReturnStats, settings: &IdleSettings) -> bool {
    let all = u64::from(r.breaks) + u64::from(r.short_breaks);
    let back = u64::from(r.returned) + u64::from(r.short_returned);
    back * 100 <= u64::from(settings.no_return_percent) * all
}

/// How a worker's lab work ended (see [`lab_stopped`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabStop {
    /// Someone put their work away: the stop came soon after an interaction.
    Session,
    /// An unattended run ended: nobody interacted for `run_end_after` before the stop.
    UnattendedRun,
}

/// How the latest lab work on `worker` ended, when its latest activity stopped a lab or node
/// and the latest CML sync (after it) found no running nodes ([`session_ended`]): by someone
/// who was there (work — an interaction other than a stop — or a resume within
/// `run_end_after` before the stop), or as the end of an unattended run. A stop with no
/// earlier work or resume known is an unattended run's end too (nobody was seen there to
/// leave; the longer timeout is the safe side).
pub fn lab_stopped(worker: &Worker, settings: &IdleSettings) -> Option<LabStop> {
    if !session_ended(worker) {
        return None;
    }
    let m = &worker.monitoring;
    let stop = m.last_activity?;
    let before = [m.last_work, m.last_resume.filter(|r| *r <= stop)]
        .into_iter()
        .flatten()
        .max();
    let unattended = before.is_none_or(|b| since(stop, b) >= settings.run_end_after);
    Some(if unattended {
        LabStop::UnattendedRun
    } else {
        LabStop::Session
    })
}

/// Whether `worker` shows a strong end-of-session signal: its latest activity stopped a lab or
/// node, and the latest CML sync (after it) found no running nodes.
pub fn session_ended(worker: &Worker) -> bool {
    let m = &worker.monitoring;
    let stopped = matches!(
        &m.last_activity_source,
        Some(ActivitySource::Telemetry { category, .. })
            if SESSION_END_CATEGORIES.contains(&category.as_str())
    );
    let synced_after = match (&worker.cml.stats.last_good, m.last_activity) {
        (Some(read), Some(activity)) => read.observed_at >= activity,
        _ => false,
    };
    stopped && synced_after && m.running_nodes == Some(0)
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

/// What the learned return rule says of `r`: `None` without enough breaks, else whether
/// enough of them ended in a return.
fn learned_of(r: &ReturnStats, settings: &IdleSettings) -> Option<bool> {
    (r.breaks > 0 && r.breaks >= settings.return_min_breaks).then(|| {
        u64::from(r.returned) * 100 >= u64::from(settings.return_min_percent) * u64::from(r.breaks)
    })
}

/// Added to the longest remembered return when the learned return rule lengthens its
/// timeout (see `return_timeout_max`): the activity poll's period, so that the pause does not
/// fall between a return and its reading.
pub const RETURN_MARGIN: Duration = Duration::from_secs(10 * 60);

/// The learned return rule's timeout: `return_timeout`; for a worker gone quiet in the
/// midday hours, or before them and still quiet when they start (see [`reaches_midday`])
/// where the fleet has a midday dip (`dip`: [`ReturnProfile::midday_dip`]), lengthened to the
/// longest remembered return near this time of day plus [`RETURN_MARGIN`], up to
/// `return_timeout_max`: a lunch. Elsewhere the day has no such rhythm to learn, and a long
/// timeout would mostly pay for workers nobody comes back to — a morning stretch in a fleet
/// whose users are not away at midday more than around it is no lunch.
fn learned_timeout(
    r: Option<&ReturnStats>,
    quiet_since: DateTime<Utc>,
    dip: bool,
    settings: &IdleSettings,
) -> Duration {
    let base = settings.timeout.max(settings.return_timeout);
    let lunch =
        in_midday(quiet_since, settings) || (dip && reaches_midday(quiet_since, base, settings));
    if !lunch {
        return base;
    }
    let longest = r
        .and_then(|r| r.longest_return)
        .map_or(Duration::ZERO, |l| l.saturating_add(RETURN_MARGIN));
    base.max(longest.min(settings.return_timeout_max))
}

/// Parses `HH:MM-HH:MM` into minutes of the day (`from < to`).
pub fn parse_midday_hours(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?} is not a window of the day (HH:MM-HH:MM, start before end)");
    let minutes = |t: &str| -> Option<u16> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h <= 24 && m <= 59 && h * 60 + m <= 1440).then_some(h * 60 + m)
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
    if a >= b {
        return Err(bad());
    }
    Ok((a, b))
}

/// The minute of the day of `at` in `local_time_zone` (`None`: no zone, or one that cannot be
/// read).
fn local_minute(at: DateTime<Utc>, settings: &IdleSettings) -> Option<u32> {
    if settings.local_time_zone.is_empty() {
        return None;
    }
    let tz = jiff::tz::TimeZone::get(&settings.local_time_zone).ok()?;
    let z = jiff::Timestamp::from_second(at.timestamp())
        .ok()?
        .to_zoned(tz);
    Some(z.hour() as u32 * 60 + z.minute() as u32)
}

/// Whether `at` falls in `midday_hours` (local time in `local_time_zone`); an empty window or
/// zone, or one that cannot be read (the settings' validation refuses it), is never.
pub fn in_midday(at: DateTime<Utc>, settings: &IdleSettings) -> bool {
    reaches_midday(at, Duration::ZERO, settings)
}

/// Whether a quiet stretch from `from` that lasts `length` reaches the midday hours: it began
/// in them, or before them and is still on when they start (a morning's work done early, its
/// user back after lunch). Such a stretch is a lunch break for the midday prior and the
/// learned timeout's lengthening.
pub fn reaches_midday(from: DateTime<Utc>, length: Duration, settings: &IdleSettings) -> bool {
    if settings.midday_hours.trim().is_empty() {
        return false;
    }
    let (Ok((start, end)), Some(m)) = (
        parse_midday_hours(&settings.midday_hours),
        local_minute(from, settings),
    ) else {
        return false;
    };
    let (start, end) = (u32::from(start), u32::from(end));
    let reach = m + (length.as_secs() / 60).min(24 * 60) as u32;
    // Today's midday hours, or tomorrow's for a stretch begun in the evening.
    [0, 24 * 60]
        .into_iter()
        .any(|day| m < end + day && (m >= start + day || reach > start + day))
}

fn since(a: DateTime<Utc>, b: DateTime<Utc>) -> Duration {
    (a - b).to_std().unwrap_or_default()
}

/// Evaluates the idle policy for `worker` at `now`, not knowing how busy the fleet is (the
/// plain timeout applies).
pub fn evaluate(worker: &Worker, settings: &IdleSettings, now: DateTime<Utc>) -> IdleDecision {
    evaluate_in(worker, settings, None, now)
}

/// Whether `worker` counts as in use at `now` for the fleet's busy share: running, with an
/// interaction (telemetry) or a resume within the timeout, or with activity (running nodes,
/// as the settings count them) within the timeout and an interaction within the break
/// timeout — a lab left running over lunch. A lab running with nobody there for longer (an
/// overnight run) does not make the fleet busy.
pub fn in_use(worker: &Worker, settings: &IdleSettings, now: DateTime<Utc>) -> bool {
    let m = &worker.monitoring;
    let within = |at: Option<DateTime<Utc>>, d: Duration| at.is_some_and(|at| since(now, at) < d);
    let activity = if settings.running_nodes_count_as_use {
        m.last_activity
    } else {
        m.last_interaction
    };
    let interaction = [m.last_interaction, m.last_resume]
        .into_iter()
        .flatten()
        .max();
    worker.ec2_state == Ec2State::Running
        && (within(interaction, settings.timeout)
            || (within(activity, settings.timeout)
                && within(interaction, settings.timeout.max(settings.break_timeout))))
}

/// The share of `workers` in use at `now` (0 to 1; terminated workers are left out).
pub fn busy_share<'a>(
    workers: impl IntoIterator<Item = &'a Worker>,
    settings: &IdleSettings,
    now: DateTime<Utc>,
) -> f64 {
    let mut count = BusyCount::default();
    for w in workers {
        count.add(w, settings, now);
    }
    count.share()
}

/// Evaluates the idle policy for `worker` at `now`, given the share of its fleet in use
/// (`None`: unknown, the plain timeout applies).
pub fn evaluate_in(
    worker: &Worker,
    settings: &IdleSettings,
    fleet_busy_share: Option<f64>,
    now: DateTime<Utc>,
) -> IdleDecision {
    let fleet = FleetPicture {
        busy_share: fleet_busy_share,
        returns: None,
    };
    evaluate_with(worker, settings, &fleet, now)
}

/// Evaluates the idle policy for `worker` at `now`, given what is known of its fleet (the
/// busy share; the return profile when `return_scope` is `fleet` — without it, the worker's
/// own breaks are used).
pub fn evaluate_with(
    worker: &Worker,
    settings: &IdleSettings,
    fleet: &FleetPicture,
    now: DateTime<Utc>,
) -> IdleDecision {
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
    let fleet_busy = settings.busy_fleet_percent > 0
        && fleet
            .busy_share
            .is_some_and(|s| s * 100.0 >= f64::from(settings.busy_fleet_percent));
    let judged = return_rule_on(settings).then(|| {
        let own;
        let profile = match (&fleet.returns, settings.return_scope) {
            (Some(p), ReturnScope::Fleet) => p,
            _ => {
                own = ReturnProfile::of([worker], settings, now);
                &own
            }
        };
        let scope = if fleet.returns.is_some() {
            settings.return_scope
        } else {
            ReturnScope::Worker
        };
        let dip = profile.midday(reference, settings);
        // Judged on the evidence known when the worker went quiet, so that other workers'
        // breaks ending during this one cannot shorten its timeout; evidence that came in
        // since may only lengthen it (people came back at this hour after all).
        let quiet = profile.around(reference, settings.return_window, scope);
        let when_quiet = learned_of(&quiet, settings);
        if when_quiet != Some(true) && now > reference {
            let known = profile.around_known(reference, now, settings.return_window, scope);
            if learned_of(&known, settings) == Some(true) {
                return (known, when_quiet, dip);
            }
        }
        (quiet, when_quiet, dip)
    });
    let returns = judged.map(|(r, _, _)| r);
    let midday = judged.and_then(|(_, _, m)| m);
    let dip = midday.is_some_and(|m| m.dip);
    // With enough remembered breaks at this time of day, they decide; before that, the
    // busy-fleet guess and the midday hours do.
    let learned = returns.and_then(|r| learned_of(&r, settings));
    let stop = lab_stopped(worker, settings);
    let session_end =
        settings.session_end_timeout < settings.timeout && stop == Some(LabStop::Session);
    // No evidence about this hour when the worker went quiet, and its quiet stretch reaches
    // the middle of the working day: presumed at lunch, for as long as the learned rule would
    // ever allow a lunch (later evidence may only lengthen it).
    let break_timeout = settings.timeout.max(settings.break_timeout);
    let lunch = judged.is_none_or(|(_, when_quiet, _)| when_quiet.is_none())
        && reaches_midday(reference, break_timeout, settings);
    let lunch_timeout = break_timeout.max(settings.return_timeout_max);
    let nobody = settings.nobody_since_start_timeout < settings.timeout
        && nobody_since_start(worker, settings);
    let (timeout, timeout_rule) = match learned {
        // Nobody has been on it since ccm brought it up: nobody to come back from a break.
        _ if nobody => (
            settings.nobody_since_start_timeout,
            TimeoutRule::NobodySinceStart,
        ),
        Some(true) => {
            let t = learned_timeout(returns.as_ref(), reference, dip, settings);
            if lunch && lunch_timeout > t {
                (lunch_timeout, TimeoutRule::Midday)
            } else {
                (t, TimeoutRule::LearnedReturn)
            }
        }
        None if lunch => (lunch_timeout, TimeoutRule::Midday),
        // The end of an unattended run is no user leaving; before there is evidence about
        // this hour, its user is given the time to come and read the results.
        None if stop == Some(LabStop::UnattendedRun) => {
            (settings.run_end_timeout, TimeoutRule::RunEnded)
        }
        None if fleet_busy => (break_timeout, TimeoutRule::FleetBusy),
        Some(false)
            if session_end
                && settings.no_return_timeout < settings.session_end_timeout
                && returns.is_some_and(|r| never_back(&r, settings)) =>
        {
            (settings.no_return_timeout, TimeoutRule::NoReturn)
        }
        _ if session_end => (settings.session_end_timeout, TimeoutRule::SessionEnded),
        _ => (settings.timeout, TimeoutRule::Plain),
    };
    let settings = &IdleSettings {
        timeout,
        ..settings.clone()
    };
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
        timeout_rule,
        returns,
        midday,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::cml::CmlStats;
    use crate::ids::{Actor, InstanceId, Region};
    use crate::worker::{CallResult, CmlSync, EndpointPolicy, InstanceObservation};

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
        // The share: running workers with an interaction within the timeout, of all not
        // terminated.
        let mut busy = worker();
        busy.monitoring.last_interaction = Some(t(80 * MIN));
        let mut stopped = worker();
        stopped.ec2_state = Ec2State::Stopped;
        let mut gone = worker();
        gone.ec2_state = Ec2State::Terminated;
        let share = busy_share([&w, &busy, &stopped, &gone], &s, t(90 * MIN));
        assert!((share - 1.0 / 3.0).abs() < 1e-9, "{share}");
    }

    #[test]
    fn labs_running_long_after_the_last_interaction_should_not_make_the_fleet_busy() {
        let s = IdleSettings::default();
        // An overnight run: nodes seen running a minute ago, the last interaction hours ago.
        let mut overnight = worker();
        overnight.record_sync(
            CmlSync {
                stats: Some(CallResult::Ok(CmlStats {
                    running_nodes: Some(4),
                    ..CmlStats::default()
                })),
                ..CmlSync::default()
            },
            t(599 * MIN),
        );
        overnight.monitoring.last_interaction = Some(t(300 * MIN));
        assert_eq!(overnight.monitoring.last_activity, Some(t(599 * MIN)));
        assert!(!in_use(&overnight, &s, t(600 * MIN)));
        // The same lab an hour and a half after its user's last action: a lunch break.
        let mut lunch = overnight.clone();
        lunch.monitoring.last_interaction = Some(t(510 * MIN));
        assert!(in_use(&lunch, &s, t(600 * MIN)));
        let mut working = worker();
        working.monitoring.last_interaction = Some(t(590 * MIN));
        assert!(in_use(&working, &s, t(600 * MIN)));
        let mut resumed = worker();
        resumed.monitoring.last_resume = Some(t(570 * MIN));
        assert!(in_use(&resumed, &s, t(600 * MIN)));
        let share = busy_share([&overnight, &working], &s, t(600 * MIN));
        assert!((share - 0.5).abs() < 1e-9, "{share}");
    }

    /// A worker whose user acted ten minutes before stopping their lab at `stop` (telemetry),
    /// with a CML sync at `sync` that found `nodes` running, and activity read at `checked`.
    fn after_lab_stop(stop: i64, sync: i64, nodes: u64, checked: i64) -> Worker {
        let mut w = worker();
        w.record_interaction(
            Some((
                t(stop - 10 * MIN),
                ActivitySource::Telemetry {
                    category: "user_activity".into(),
                    user_id: Some("alice".into()),
                },
            )),
            t(stop - 10 * MIN),
        );
        w.record_sync(
            CmlSync {
                stats: Some(CallResult::Ok(CmlStats {
                    running_nodes: Some(nodes),
                    ..CmlStats::default()
                })),
                ..CmlSync::default()
            },
            t(sync),
        );
        w.record_interaction(
            Some((
                t(stop),
                ActivitySource::Telemetry {
                    category: "stop_lab".into(),
                    user_id: Some("alice".into()),
                },
            )),
            t(checked),
        );
        w
    }

    #[test]
    fn a_stopped_lab_with_no_running_nodes_should_get_the_session_end_timeout() {
        let s = IdleSettings::default();
        let w = after_lab_stop(0, MIN, 0, 29 * MIN);
        assert!(session_ended(&w));
        let d = evaluate_in(&w, &s, Some(0.0), t(29 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::SessionEnded);
        assert_eq!(d.timeout, Duration::from_secs(30 * 60));
        assert_eq!(d.action.label(), "keep:not_idle");
        assert_eq!(d.pause_at, Some(t(30 * MIN)));
        assert!(
            d.warn,
            "the warning comes 10 minutes before the earlier pause"
        );
        let w = after_lab_stop(0, MIN, 0, 30 * MIN);
        assert_eq!(
            evaluate_in(&w, &s, Some(0.0), t(30 * MIN)).action,
            IdleAction::Pause
        );
        // A busy fleet keeps the break timeout: a lab stopped for lunch is not the day's end.
        let d = evaluate_in(&w, &s, Some(0.8), t(30 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::FleetBusy);
        assert_eq!(d.pause_at, Some(t(120 * MIN)));
        // Off when it is not shorter than the timeout.
        let off = IdleSettings {
            session_end_timeout: s.timeout,
            ..IdleSettings::default()
        };
        let d = evaluate_in(&w, &off, Some(0.0), t(30 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::Plain);
        assert_eq!(d.pause_at, Some(t(60 * MIN)));
    }

    const DAY: i64 = 24 * 60;

    /// `t(0)` is 08:00 UTC; a worker with one break a day for `days` days before the day of
    /// `t(0)`, each from `from` (minutes after `t(0)`'s time of day) lasting `minutes`.
    fn with_daily_breaks(days: i64, from: i64, minutes: i64) -> Worker {
        let mut w = worker();
        for d in (1..=days).rev() {
            w.monitoring.breaks.push_back(crate::worker::Break {
                from: t((from - d * DAY) * MIN),
                to: t((from - d * DAY + minutes) * MIN),
            });
        }
        w
    }

    /// Five workers, each on a break from 11:40 (`t(0)` is 08:00 UTC) back at 12:40.
    fn five_back_at_1240() -> Vec<Worker> {
        let mut b = worker();
        b.monitoring.breaks.push_back(crate::worker::Break {
            from: t(3 * 60 * MIN + 40 * MIN),
            to: t(4 * 60 * MIN + 40 * MIN),
        });
        vec![b; 5]
    }

    /// A worker with breaks from `from` (minutes after `t(0)`'s time of day) on the five days
    /// before, of 90, 100, 110, 150 and 170 minutes (three of five back within 2 h).
    fn with_long_lunches(from: i64) -> Worker {
        let mut w = worker();
        for (d, len) in [(5, 90), (4, 100), (3, 110), (2, 150), (1, 170)] {
            w.monitoring.breaks.push_back(crate::worker::Break {
                from: t((from - d * DAY) * MIN),
                to: t((from - d * DAY + len) * MIN),
            });
        }
        w
    }

    #[test]
    fn breaks_that_often_ended_in_a_return_at_this_hour_should_give_the_return_timeout() {
        let s = IdleSettings::default();
        // Five days of a 90-minute lunch from 12:00 (t(0) is 08:00 UTC).
        let mut w = with_daily_breaks(5, 4 * 60, 90);
        w.monitoring.last_activity = Some(t(4 * 60 * MIN + 10 * MIN));
        w.monitoring.activity_checked_at = Some(t(5 * 60 * MIN + 20 * MIN));
        let d = evaluate_in(&w, &s, Some(0.0), t(5 * 60 * MIN + 20 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::LearnedReturn);
        assert_eq!(d.timeout, Duration::from_secs(2 * 3600));
        assert_eq!(d.action.label(), "keep:not_idle");
        assert_eq!(d.pause_at, Some(t(6 * 60 * MIN + 10 * MIN)));
        assert_eq!(
            d.returns,
            Some(ReturnStats {
                breaks: 5,
                returned: 5,
                short_breaks: 0,
                short_returned: 0,
                longest_return: Some(Duration::from_secs(90 * 60)),
                scope: ReturnScope::Worker
            })
        );
        // The same worker going quiet at 16:00: no break near that hour; the plain timeout.
        w.monitoring.last_activity = Some(t(8 * 60 * MIN));
        w.monitoring.activity_checked_at = Some(t(9 * 60 * MIN));
        let d = evaluate_in(&w, &s, Some(0.0), t(9 * 60 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::Plain);
        assert_eq!(d.action, IdleAction::Pause);
        // Too few breaks (four, five needed) or the rule off: the plain timeout (the midday
        // prior is off without a local time zone).
        let mut few = with_daily_breaks(4, 4 * 60, 90);
        few.monitoring.last_activity = Some(t(4 * 60 * MIN));
        let d = evaluate_in(&few, &s, Some(0.0), t(5 * 60 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::Plain);
        let off = IdleSettings {
            return_timeout: s.timeout,
            ..IdleSettings::default()
        };
        let w2 = {
            let mut w = with_daily_breaks(5, 4 * 60, 90);
            w.monitoring.last_activity = Some(t(4 * 60 * MIN));
            w
        };
        let d = evaluate_in(&w2, &off, Some(0.0), t(5 * 60 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::Plain);
        assert_eq!(d.returns, None);
        // Breaks older than the memory are forgotten.
        let short = IdleSettings {
            return_memory: Duration::from_secs(3 * 24 * 3600),
            ..IdleSettings::default()
        };
        let d = evaluate_in(&w2, &short, Some(0.0), t(5 * 60 * MIN));
        assert_eq!(d.returns.map(|r| r.breaks), Some(2));
    }

    #[test]
    fn breaks_that_never_ended_in_a_return_at_this_hour_should_overrule_the_busy_fleet() {
        let s = IdleSettings::default();
        // Five days of leaving at 17:00 and coming back the next morning.
        let mut w = with_daily_breaks(5, 9 * 60, 16 * 60);
        w.monitoring.last_activity = Some(t(9 * 60 * MIN));
        w.monitoring.activity_checked_at = Some(t(10 * 60 * MIN));
        let d = evaluate_in(&w, &s, Some(0.9), t(10 * 60 * MIN));
        assert!(d.fleet_busy);
        assert_eq!(d.timeout_rule, TimeoutRule::Plain, "the evidence wins");
        assert_eq!(d.action, IdleAction::Pause);
        // One return in five is 20 %: enough.
        w.monitoring.breaks[2].to = w.monitoring.breaks[2].from + chrono::Duration::minutes(100);
        let d = evaluate_in(&w, &s, Some(0.9), t(10 * 60 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::LearnedReturn);
        assert_eq!(d.returns.map(|r| (r.breaks, r.returned)), Some((5, 1)));
    }

    #[test]
    fn the_fleet_profile_should_count_every_workers_breaks_and_long_open_stretches() {
        let s = IdleSettings::default();
        let a = with_daily_breaks(3, 4 * 60, 90);
        let b = with_daily_breaks(2, 4 * 60 + 30, 20 * 60);
        // Quiet since 12:00 yesterday, never back: a known non-return.
        let mut c = worker();
        c.monitoring.last_activity = Some(t((4 * 60 - DAY) * MIN));
        // Breaks shorter than the shortest timeout (30 min) are not counted.
        let d = with_daily_breaks(3, 4 * 60, 20);
        let mut gone = with_daily_breaks(3, 4 * 60, 90);
        gone.ec2_state = Ec2State::Terminated;
        let fleet = FleetPicture::of(&[a, b, c, d, gone], &s, t(5 * 60 * MIN));
        let p = fleet.returns.as_ref().unwrap();
        let r = p.around(t(4 * 60 * MIN), s.return_window, ReturnScope::Fleet);
        assert_eq!((r.breaks, r.returned), (6, 3));
        // The window: 13:10 is 70 minutes from 12:00 and 40 from 12:30.
        let r = p.around(
            t(5 * 60 * MIN + 10 * MIN),
            s.return_window,
            ReturnScope::Fleet,
        );
        assert_eq!((r.breaks, r.returned), (2, 0));
        // A worker evaluated with the fleet's picture uses it.
        let mut w = worker();
        w.monitoring.last_activity = Some(t(4 * 60 * MIN));
        w.monitoring.activity_checked_at = Some(t(5 * 60 * MIN));
        let dcs = evaluate_with(&w, &s, &fleet, t(5 * 60 * MIN));
        assert_eq!(dcs.timeout_rule, TimeoutRule::LearnedReturn);
        assert_eq!(dcs.returns.map(|r| r.scope), Some(ReturnScope::Fleet));
    }

    #[test]
    fn a_session_end_at_an_hour_people_never_came_back_should_get_the_no_return_timeout() {
        let s = IdleSettings::default();
        // The lab stopped at 08:00 (t(0)); five earlier days of leaving at 08:00 for the day.
        let with_days = |w: &mut Worker| {
            for d in (1..=5).rev() {
                w.monitoring.breaks.push_back(crate::worker::Break {
                    from: t(-d * DAY * MIN),
                    to: t((16 * 60 - d * DAY) * MIN),
                });
            }
        };
        let mut w = after_lab_stop(0, MIN, 0, 15 * MIN);
        with_days(&mut w);
        let d = evaluate_in(&w, &s, Some(0.0), t(15 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::NoReturn);
        assert_eq!(d.timeout, Duration::from_secs(15 * 60));
        assert_eq!(d.action, IdleAction::Pause);
        let d = evaluate_in(&w, &s, Some(0.0), t(14 * MIN));
        assert_eq!(d.pause_at, Some(t(15 * MIN)));
        // One short return (20 min, under the shortest timeout) near this hour: 1 of 6 came
        // back, more than 5 %: the session-end timeout.
        let mut back = w.clone();
        back.monitoring.breaks.push_back(crate::worker::Break {
            from: t(-DAY * MIN + 20 * MIN),
            to: t(-DAY * MIN + 40 * MIN),
        });
        let d = evaluate_in(&back, &s, Some(0.0), t(15 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::SessionEnded);
        assert_eq!(
            d.returns
                .map(|r| (r.breaks, r.returned, r.short_breaks, r.short_returned)),
            Some((5, 0, 1, 1))
        );
        assert_eq!(d.action.label(), "keep:not_idle");
        // No evidence yet, or the rule off: the session-end timeout.
        let fresh = after_lab_stop(0, MIN, 0, 15 * MIN);
        assert_eq!(
            evaluate_in(&fresh, &s, Some(0.0), t(15 * MIN)).timeout_rule,
            TimeoutRule::SessionEnded
        );
        let off = IdleSettings {
            no_return_timeout: s.session_end_timeout,
            ..IdleSettings::default()
        };
        assert_eq!(
            evaluate_in(&w, &off, Some(0.0), t(15 * MIN)).timeout_rule,
            TimeoutRule::SessionEnded
        );
        // Not a session's end (no lab stop): the plain timeout, however clear the evidence.
        let mut quiet = worker();
        quiet.monitoring.last_activity = Some(t(0));
        quiet.monitoring.activity_checked_at = Some(t(15 * MIN));
        with_days(&mut quiet);
        assert_eq!(
            evaluate_in(&quiet, &s, Some(0.0), t(15 * MIN)).timeout_rule,
            TimeoutRule::Plain
        );
    }

    #[test]
    fn evidence_that_came_in_during_a_break_should_not_change_its_timeout() {
        let s = IdleSettings::default();
        // Five lunches from 12:00 on earlier days, all back within 90 minutes.
        let a = with_daily_breaks(5, 4 * 60, 90);
        // 21 workers that went quiet today at 11:30 and are not back by 13:40: known
        // non-returns from 13:30 on, after the worker below went quiet (counted, they would
        // make 5 returns of 26 breaks: under 20 %).
        let mut gone = Vec::new();
        for _ in 0..21 {
            let mut g = worker();
            g.monitoring.last_activity = Some(t(3 * 60 * MIN + 30 * MIN));
            gone.push(g);
        }
        let mut w = worker();
        w.monitoring.last_activity = Some(t(4 * 60 * MIN));
        w.monitoring.activity_checked_at = Some(t(5 * 60 * MIN + 40 * MIN));
        let mut fleet = vec![a];
        fleet.extend(gone);
        let now = t(5 * 60 * MIN + 40 * MIN);
        let picture = FleetPicture::of(&fleet, &s, now);
        let p = picture.returns.as_ref().unwrap();
        let at_noon = p.around(t(4 * 60 * MIN), s.return_window, ReturnScope::Fleet);
        assert_eq!((at_noon.breaks, at_noon.returned), (5, 5));
        let d = evaluate_with(&w, &s, &picture, now);
        assert_eq!(d.timeout_rule, TimeoutRule::LearnedReturn);
        assert_eq!(d.returns.map(|r| (r.breaks, r.returned)), Some((5, 5)));
        assert_eq!(d.pause_at, Some(t(6 * 60 * MIN)));
        // The next day, 11:30's non-returns are known before the worker goes quiet at noon.
        let mut w2 = worker();
        w2.monitoring.last_activity = Some(t((DAY + 4 * 60) * MIN));
        let d = evaluate_with(&w2, &s, &picture, t((DAY + 4 * 60 + 30) * MIN));
        assert_eq!(d.returns.map(|r| (r.breaks, r.returned)), Some((26, 5)));
        assert_eq!(d.timeout_rule, TimeoutRule::Plain);
    }

    #[test]
    fn returns_that_came_in_during_a_break_should_lengthen_its_timeout_but_never_shorten_it() {
        // The midday prior off, to see the learned rule alone.
        let s = IdleSettings {
            midday_hours: String::new(),
            ..IdleSettings::default()
        };
        // Five workers on a break from 11:40 (t(0) is 08:00 UTC), all back at 12:40.
        let fleet = five_back_at_1240();
        // This worker went quiet at 12:00, before any of those returns was known.
        let mut w = worker();
        w.monitoring.last_activity = Some(t(4 * 60 * MIN));
        w.monitoring.activity_checked_at = Some(t(4 * 60 * MIN + 30 * MIN));
        let before = FleetPicture::of(&fleet, &s, t(4 * 60 * MIN + 30 * MIN));
        let d = evaluate_with(&w, &s, &before, t(4 * 60 * MIN + 30 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::Plain, "no evidence yet");
        assert_eq!(d.pause_at, Some(t(5 * 60 * MIN)));
        // At 12:50 the five returns are known: people come back at this hour after all.
        let now = t(4 * 60 * MIN + 50 * MIN);
        w.monitoring.activity_checked_at = Some(now);
        let after = FleetPicture::of(&fleet, &s, now);
        let d = evaluate_with(&w, &s, &after, now);
        assert_eq!(d.timeout_rule, TimeoutRule::LearnedReturn);
        assert_eq!(d.returns.map(|r| (r.breaks, r.returned)), Some((5, 5)));
        assert_eq!(d.pause_at, Some(t(6 * 60 * MIN)));
        assert_eq!(d.action.label(), "keep:not_idle");
    }

    #[test]
    fn the_learned_timeout_should_grow_to_the_longest_return_at_midday_up_to_the_maximum() {
        let s = IdleSettings {
            local_time_zone: "UTC".into(),
            ..IdleSettings::default()
        };
        // Lunches from 12:00 on five earlier days: 90, 100, 110, 150 and 170 minutes (three of
        // five back within return_timeout: the rule applies).
        let mut w = with_long_lunches(4 * 60);
        w.monitoring.last_activity = Some(t(4 * 60 * MIN));
        w.monitoring.activity_checked_at = Some(t(6 * 60 * MIN + 30 * MIN));
        let d = evaluate_in(&w, &s, Some(0.0), t(6 * 60 * MIN + 30 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::LearnedReturn);
        assert_eq!(
            d.returns.and_then(|r| r.longest_return),
            Some(Duration::from_secs(170 * 60))
        );
        assert_eq!(d.timeout, Duration::from_secs(180 * 60), "170 min + margin");
        assert_eq!(d.action.label(), "keep:not_idle");
        assert_eq!(d.pause_at, Some(t(7 * 60 * MIN)));
        // Without a local time zone there are no midday hours: return_timeout.
        let d = evaluate_in(
            &w,
            &IdleSettings::default(),
            Some(0.0),
            t(6 * 60 * MIN + 30 * MIN),
        );
        assert_eq!(d.timeout, Duration::from_secs(2 * 3600));
        // Nor outside them (12:00 UTC is 07:00 in New York).
        let ny = IdleSettings {
            local_time_zone: "America/New_York".into(),
            ..IdleSettings::default()
        };
        let d = evaluate_in(&w, &ny, Some(0.0), t(6 * 60 * MIN + 30 * MIN));
        assert_eq!(d.timeout, Duration::from_secs(2 * 3600));
        // A 300-minute lunch is no return within return_timeout_max: not counted.
        let mut long = w.clone();
        long.monitoring.breaks.push_back(crate::worker::Break {
            from: t((4 * 60 - 6 * DAY) * MIN),
            to: t((4 * 60 - 6 * DAY + 300) * MIN),
        });
        let d = evaluate_in(&long, &s, Some(0.0), t(6 * 60 * MIN + 30 * MIN));
        assert_eq!(d.timeout, Duration::from_secs(180 * 60));
        // A 205-minute one is: the timeout stops at return_timeout_max (3 h 30).
        let mut longer = w.clone();
        longer.monitoring.breaks.push_back(crate::worker::Break {
            from: t((4 * 60 - 6 * DAY) * MIN),
            to: t((4 * 60 - 6 * DAY + 205) * MIN),
        });
        let d = evaluate_in(&longer, &s, Some(0.0), t(6 * 60 * MIN + 30 * MIN));
        assert_eq!(d.timeout, Duration::from_secs(210 * 60));
        // return_timeout_max at return_timeout: the lengthening is off.
        let off = IdleSettings {
            return_timeout_max: s.return_timeout,
            ..s.clone()
        };
        let d = evaluate_in(&w, &off, Some(0.0), t(6 * 60 * MIN + 30 * MIN));
        assert_eq!(d.timeout, Duration::from_secs(2 * 3600));
    }

    #[test]
    fn a_lab_stopped_at_midday_without_evidence_should_get_the_lunch_timeout_in_local_time() {
        // The lab stopped at 12:00 UTC, the fleet not busy, no breaks remembered.
        let w = after_lab_stop(4 * 60 * MIN, 4 * 60 * MIN + MIN, 0, 4 * 60 * MIN + 35 * MIN);
        let now = t(4 * 60 * MIN + 35 * MIN);
        // No local time zone (the default): no midday either.
        let d = evaluate_in(&w, &IdleSettings::default(), Some(0.0), now);
        assert_eq!(d.timeout_rule, TimeoutRule::SessionEnded);
        let s = IdleSettings {
            local_time_zone: "UTC".into(),
            ..IdleSettings::default()
        };
        let d = evaluate_in(&w, &s, Some(0.0), now);
        assert_eq!(d.timeout_rule, TimeoutRule::Midday);
        assert_eq!(
            d.timeout, s.return_timeout_max,
            "the longest lunch the rule allows"
        );
        assert_eq!(d.action.label(), "keep:not_idle");
        // A busy fleet changes nothing: lunch is lunch.
        let d = evaluate_in(&w, &s, Some(1.0), now);
        assert_eq!(d.timeout_rule, TimeoutRule::Midday);
        assert_eq!(d.timeout, s.return_timeout_max);
        assert_eq!(TimeoutRule::Midday.name(), "midday");
        // 12:00 UTC is 07:00 in New York: not midday there; the session end applies.
        let ny = IdleSettings {
            local_time_zone: "America/New_York".into(),
            ..IdleSettings::default()
        };
        let d = evaluate_in(&w, &ny, Some(0.0), now);
        assert_eq!(d.timeout_rule, TimeoutRule::SessionEnded);
        assert_eq!(d.action, IdleAction::Pause);
        // The same stop at 17:00 UTC is 12:00 there.
        let w = after_lab_stop(9 * 60 * MIN, 9 * 60 * MIN + MIN, 0, 9 * 60 * MIN + 35 * MIN);
        let d = evaluate_in(&w, &ny, Some(0.0), t(9 * 60 * MIN + 35 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::Midday);
        // Off, or evidence about the hour: the prior does not apply.
        let off = IdleSettings {
            midday_hours: String::new(),
            ..s.clone()
        };
        let w = after_lab_stop(4 * 60 * MIN, 4 * 60 * MIN + MIN, 0, 4 * 60 * MIN + 35 * MIN);
        assert_eq!(
            evaluate_in(&w, &off, Some(0.0), now).timeout_rule,
            TimeoutRule::SessionEnded
        );
        let mut known = w.clone();
        for d in (1..=5).rev() {
            known.monitoring.breaks.push_back(crate::worker::Break {
                from: t((4 * 60 - d * DAY) * MIN),
                to: t((4 * 60 - d * DAY + 20 * 60) * MIN),
            });
        }
        assert_ne!(
            evaluate_in(&known, &s, Some(0.0), now).timeout_rule,
            TimeoutRule::Midday,
            "five non-returns at this hour are evidence"
        );
    }

    #[test]
    fn a_quiet_stretch_should_reach_midday_when_it_begins_in_it_or_runs_into_it() {
        let s = IdleSettings {
            local_time_zone: "UTC".into(),
            ..IdleSettings::default()
        };
        let at = |h: i64, m: i64| t(((h - 8) * 60 + m) * MIN);
        let two_h = Duration::from_secs(2 * 3600);
        assert!(reaches_midday(at(10, 9), two_h, &s), "10:09 + 2 h is 12:09");
        assert!(
            !reaches_midday(at(9, 0), two_h, &s),
            "09:00 + 2 h ends as midday starts"
        );
        assert!(reaches_midday(at(9, 1), two_h, &s));
        assert!(reaches_midday(at(13, 59), Duration::ZERO, &s));
        assert!(!reaches_midday(at(14, 0), two_h, &s), "after midday");
        assert!(in_midday(at(11, 0), &s) && !in_midday(at(10, 59), &s));
        assert!(
            reaches_midday(at(22, 0), Duration::from_secs(14 * 3600), &s),
            "into tomorrow's midday"
        );
        assert!(!reaches_midday(
            at(22, 0),
            Duration::from_secs(12 * 3600),
            &s
        ));
        // No zone or no window: never.
        assert!(!reaches_midday(at(12, 0), two_h, &IdleSettings::default()));
        let off = IdleSettings {
            midday_hours: String::new(),
            ..s.clone()
        };
        assert!(!reaches_midday(at(12, 0), two_h, &off));
    }

    #[test]
    fn a_morning_session_ended_before_midday_should_be_a_lunch_break_without_evidence() {
        let s = IdleSettings {
            local_time_zone: "UTC".into(),
            ..IdleSettings::default()
        };
        // Quiet since 10:09 UTC (t(0) is 08:00), nothing remembered, the fleet not busy.
        let mut w = worker();
        w.monitoring.last_activity = Some(t(2 * 60 * MIN + 9 * MIN));
        let now = t(4 * 60 * MIN + 20 * MIN);
        w.monitoring.activity_checked_at = Some(now);
        let d = evaluate_in(&w, &s, Some(0.0), now);
        assert_eq!(d.timeout_rule, TimeoutRule::Midday);
        assert_eq!(d.timeout, s.return_timeout_max);
        assert_eq!(d.pause_at, Some(t(5 * 60 * MIN + 39 * MIN)));
        assert_eq!(d.action.label(), "keep:not_idle");
        // Quiet since 08:30: done by 10:30, before lunch; the plain timeout.
        let mut early = worker();
        early.monitoring.last_activity = Some(t(30 * MIN));
        early.monitoring.activity_checked_at = Some(t(90 * MIN));
        let d = evaluate_in(&early, &s, Some(0.0), t(90 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::Plain);
        assert_eq!(d.action, IdleAction::Pause);
    }

    #[test]
    fn returns_known_during_a_lunch_without_evidence_should_not_shorten_its_timeout() {
        let s = IdleSettings {
            local_time_zone: "UTC".into(),
            ..IdleSettings::default()
        };
        // Five workers on a break from 11:40 (t(0) is 08:00 UTC), all back at 12:40.
        let fleet = five_back_at_1240();
        // This worker went quiet at 12:00 with nothing known: the lunch prior.
        let mut w = worker();
        w.monitoring.last_activity = Some(t(4 * 60 * MIN));
        let now = t(6 * 60 * MIN + 10 * MIN);
        w.monitoring.activity_checked_at = Some(now);
        let picture = FleetPicture::of(&fleet, &s, now);
        let d = evaluate_with(&w, &s, &picture, now);
        // The returns known since say 60 min + margin; the prior (3 h 30) stays.
        assert_eq!(d.returns.map(|r| (r.breaks, r.returned)), Some((5, 5)));
        assert_eq!(d.timeout_rule, TimeoutRule::Midday);
        assert_eq!(d.pause_at, Some(t(7 * 60 * MIN + 30 * MIN)));
        assert_eq!(d.action.label(), "keep:not_idle");
        // The next day the evidence is there when the worker goes quiet: learned, 2 h.
        let mut w2 = worker();
        w2.monitoring.last_activity = Some(t((DAY + 4 * 60) * MIN));
        let d = evaluate_with(&w2, &s, &picture, t((DAY + 4 * 60 + 30) * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::LearnedReturn);
        assert_eq!(d.timeout, Duration::from_secs(2 * 3600));
    }

    /// Adds `w`'s users' absences (no interaction, whatever ran) from `from` for `minutes` on
    /// the five days before `t(0)`'s.
    fn away_daily(mut w: Worker, from: i64, minutes: i64) -> Worker {
        for d in (1..=5).rev() {
            w.monitoring.absences.push_back(crate::worker::Break {
                from: t((from - d * DAY) * MIN),
                to: t((from - d * DAY + minutes) * MIN),
            });
        }
        w
    }

    #[test]
    fn a_morning_break_that_reaches_midday_should_get_the_longest_remembered_return() {
        let s = IdleSettings {
            local_time_zone: "UTC".into(),
            ..IdleSettings::default()
        };
        // Breaks from 10:00 on five earlier days: 90, 100, 110, 150 and 170 minutes; the users
        // were away 12:00-13:00 on each (t(0) is 08:00 UTC): a midday dip.
        let mut w = away_daily(with_long_lunches(2 * 60), 4 * 60, 60);
        w.monitoring.last_activity = Some(t(2 * 60 * MIN));
        let now = t(4 * 60 * MIN + 30 * MIN);
        w.monitoring.activity_checked_at = Some(now);
        let d = evaluate_in(&w, &s, Some(0.0), now);
        assert_eq!(d.timeout_rule, TimeoutRule::LearnedReturn);
        assert_eq!(d.timeout, Duration::from_secs(180 * 60), "170 min + margin");
        // Without the dip (away all afternoon too: no lunch rhythm), return_timeout.
        let mut f = away_daily(with_long_lunches(2 * 60), 4 * 60, 6 * 60);
        f.monitoring.last_activity = Some(t(2 * 60 * MIN));
        f.monitoring.activity_checked_at = Some(now);
        let d = evaluate_in(&f, &s, Some(0.0), now);
        assert_eq!(d.timeout_rule, TimeoutRule::LearnedReturn);
        assert_eq!(d.timeout, Duration::from_secs(2 * 3600), "no dip: no lunch");
        // A stretch begun in the midday hours is a lunch, dip or not.
        let mut n = away_daily(with_long_lunches(3 * 60 + 30), 4 * 60, 6 * 60);
        n.monitoring.last_activity = Some(t((3 * 60 + 30) * MIN));
        n.monitoring.activity_checked_at = Some(now);
        let d = evaluate_in(&n, &s, Some(0.0), now);
        assert_eq!(
            d.timeout,
            Duration::from_secs(180 * 60),
            "gone quiet at 11:30"
        );
        // The same breaks from 08:30: a stretch over by 10:30 is no lunch; return_timeout.
        let mut m = with_long_lunches(30);
        m.monitoring.last_activity = Some(t(30 * MIN));
        m.monitoring.activity_checked_at = Some(now);
        let d = evaluate_in(&m, &s, Some(0.0), t(60 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::LearnedReturn);
        assert_eq!(d.timeout, Duration::from_secs(2 * 3600));
    }

    #[test]
    fn a_midday_dip_should_be_more_users_away_at_its_middle_than_an_hour_before_and_after() {
        let utc = IdleSettings {
            local_time_zone: "UTC".into(),
            ..IdleSettings::default()
        };
        let now = t(0);
        let dip = |w: &Worker, s: &IdleSettings| ReturnProfile::of([w], s, now).midday_dip(now, s);
        // t(0) is 08:00 UTC: away 12:00-13:00 every day (lunch, labs left running or not).
        let lunch = away_daily(worker(), 4 * 60, 60);
        assert!(dip(&lunch, &utc));
        // Away from 12:00 into the evening: the middle is no emptier than 15:00.
        assert!(!dip(&away_daily(worker(), 4 * 60, 6 * 60), &utc));
        // Away from 09:30 to 13:00: no emptier than 10:00.
        assert!(!dip(&away_daily(worker(), 90, 210), &utc));
        assert!(!dip(&worker(), &utc), "no absences, no dip");
        assert!(
            !dip(&away_daily(worker(), 4 * 60 + 15, 30), &utc),
            "30 min between actions is shorter than the timeout: no absence"
        );
        // Local time: 11:00-12:00 UTC is 12:00-13:00 in Paris (UTC+1 in March).
        let early = away_daily(worker(), 3 * 60, 60);
        assert!(!dip(&early, &utc));
        let paris = IdleSettings {
            local_time_zone: "Europe/Paris".into(),
            ..IdleSettings::default()
        };
        assert!(dip(&early, &paris));
        let no_zone = IdleSettings::default();
        assert!(!dip(&lunch, &no_zone), "no time zone, no midday");
        // Absences older than the memory are forgotten.
        let short = IdleSettings {
            return_memory: Duration::from_secs(3600),
            ..utc
        };
        assert!(!dip(&lunch, &short));
    }

    #[test]
    fn a_midday_dip_should_stand_out_of_chance() {
        // Two standard deviations of the difference: (m - s)² > 4 (m + s).
        assert!(stands_out(5, 0), "25 > 20");
        assert!(!stands_out(4, 0), "16 = 16: not more");
        assert!(!stands_out(3, 5) && !stands_out(5, 5));
        // Round 8's counts after six days (10:00 / 12:30 / 15:00): uniform random seed 1
        // (507 / 620 / 603) has no dip, its middle within chance of 15:00 (17 < 70); the
        // rhythm fleets have one.
        assert!(stands_out(620, 507) && !stands_out(620, 603));
        assert!(stands_out(578, 391) && stands_out(578, 413), "dev");
        assert!(
            stands_out(531, 258) && stands_out(531, 273),
            "random-workday"
        );
        assert!(!stands_out(213, 232), "weekend");
        assert!(
            !stands_out(u64::MAX, u64::MAX) && stands_out(u64::MAX, 0),
            "no overflow"
        );

        // A fleet whose users are away at 12:30 a little more often than at 15:00 has no dip;
        // the decision shows the counts either way. t(0) is 08:00 UTC.
        let s = IdleSettings {
            local_time_zone: "UTC".into(),
            ..IdleSettings::default()
        };
        let now = t(0);
        let mut fleet: Vec<Worker> = (0..10)
            .map(|_| away_daily(away_daily(worker(), 4 * 60, 60), 7 * 60, 60))
            .collect();
        let w = fleet[0].clone();
        let picture = |fleet: &[Worker]| FleetPicture {
            busy_share: None,
            returns: Some(ReturnProfile::of(fleet, &s, now)),
        };
        let d = evaluate_with(&w, &s, &picture(&fleet), now);
        assert_eq!(
            d.midday,
            Some(MiddayDip {
                dip: false,
                before: 0,
                middle: 50,
                after: 50
            })
        );
        fleet.extend((0..3).map(|_| away_daily(worker(), 4 * 60, 60)));
        let d = evaluate_with(&w, &s, &picture(&fleet), now);
        assert_eq!(
            d.midday.map(|m| (m.dip, m.middle, m.after)),
            Some((false, 65, 50))
        );
        fleet.extend((0..7).map(|_| away_daily(worker(), 4 * 60, 60)));
        // 100 against 50: 2500 > 600.
        let d = evaluate_with(&w, &s, &picture(&fleet), now);
        assert_eq!(
            d.midday.map(|m| (m.dip, m.middle, m.after)),
            Some((true, 100, 50))
        );
        let json = serde_json::to_value(&d).unwrap_or_default();
        assert_eq!(json["midday"]["dip"], serde_json::json!(true));
        let no_zone = IdleSettings::default();
        assert_eq!(
            evaluate_with(&w, &no_zone, &picture(&fleet), now).midday,
            None
        );
    }

    #[test]
    fn an_absence_should_be_a_stretch_without_interaction_whatever_runs() {
        let mut w = worker();
        let touch = |w: &mut Worker, m: i64| {
            let source = ActivitySource::Telemetry {
                category: "ui".into(),
                user_id: None,
            };
            w.record_interaction(Some((t(m * MIN), source)), t(m * MIN));
        };
        touch(&mut w, 0);
        touch(&mut w, 10);
        touch(&mut w, 50);
        assert!(w.monitoring.absences.is_empty(), "40 min is no absence");
        // Running nodes are no interaction (they never move `last_interaction`): a lab left
        // up over lunch does not hide the absence.
        touch(&mut w, 110);
        assert_eq!(
            w.monitoring.absences.iter().copied().collect::<Vec<_>>(),
            vec![crate::worker::Break {
                from: t(50 * MIN),
                to: t(110 * MIN)
            }]
        );
    }

    #[test]
    fn midday_hours_should_be_a_window_of_the_day() {
        assert_eq!(parse_midday_hours("11:00-14:00"), Ok((660, 840)));
        assert_eq!(parse_midday_hours(" 11:30 - 13:00 "), Ok((690, 780)));
        for bad in [
            "14:00-11:00",
            "11:00",
            "11-14",
            "25:00-26:00",
            "11:00-11:00",
            "x",
        ] {
            assert!(parse_midday_hours(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_session_end_signal_should_need_a_lab_stop_and_no_nodes_seen_after_it() {
        let s = IdleSettings::default();
        // Nodes still run (another lab): the plain timeout.
        let w = after_lab_stop(0, MIN, 2, 40 * MIN);
        assert!(!session_ended(&w));
        assert_eq!(
            evaluate_in(&w, &s, Some(0.0), t(40 * MIN)).timeout_rule,
            TimeoutRule::Plain
        );
        // No sync since the stop: the node count is older than the stop.
        let w = after_lab_stop(10 * MIN, 5 * MIN, 0, 40 * MIN);
        assert!(!session_ended(&w));
        // The latest activity was not a stop (someone designing without nodes).
        let mut w = after_lab_stop(0, MIN, 0, 40 * MIN);
        w.record_interaction(
            Some((
                t(2 * MIN),
                ActivitySource::Telemetry {
                    category: "user_activity".into(),
                    user_id: Some("alice".into()),
                },
            )),
            t(40 * MIN),
        );
        assert!(!session_ended(&w));
        let d = evaluate_in(&w, &s, Some(0.0), t(40 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::Plain);
        assert_eq!(d.action.label(), "keep:not_idle");
    }

    /// A worker whose lab ran from `started` (a `start_lab`, its user's last interaction
    /// before the stop unless `touched` names a later one) until `stop` (a `stop_lab`), with a
    /// CML sync a minute after the stop finding no nodes, and activity read at `checked`.
    fn lab_ran(started: i64, touched: Option<i64>, stop: i64, checked: i64) -> Worker {
        let mut w = worker();
        let telemetry = |category: &str| ActivitySource::Telemetry {
            category: category.into(),
            user_id: Some("alice".into()),
        };
        w.record_interaction(Some((t(started), telemetry("start_lab"))), t(started));
        w.record_sync(
            CmlSync {
                stats: Some(CallResult::Ok(CmlStats {
                    running_nodes: Some(4),
                    ..CmlStats::default()
                })),
                ..CmlSync::default()
            },
            t(started + MIN),
        );
        if let Some(at) = touched {
            w.record_interaction(Some((t(at), telemetry("user_activity"))), t(at));
        }
        w.record_interaction(Some((t(stop), telemetry("stop_lab"))), t(stop));
        w.record_sync(
            CmlSync {
                stats: Some(CallResult::Ok(CmlStats {
                    running_nodes: Some(0),
                    ..CmlStats::default()
                })),
                ..CmlSync::default()
            },
            t(stop + MIN),
        );
        w.monitoring.activity_checked_at = Some(t(checked));
        w
    }

    #[test]
    fn a_lab_stop_after_hours_untouched_should_end_an_unattended_run_not_a_session() {
        let s = IdleSettings::default();
        // Started at 16:30 (t(0) is 08:00), left running overnight, stopped at 08:30.
        let (start, stop) = (8 * 60 * MIN + 30 * MIN, DAY * MIN + 30 * MIN);
        let mut w = lab_ran(start, None, stop, stop + 40 * MIN);
        assert_eq!(w.monitoring.last_work, Some(t(start)));
        assert_eq!(lab_stopped(&w, &s), Some(LabStop::UnattendedRun));
        // The stop's own node events a minute later are no work.
        let mut nodes = w.clone();
        nodes.record_interaction(
            Some((
                t(stop + MIN),
                ActivitySource::Telemetry {
                    category: "stop_node".into(),
                    user_id: Some("alice".into()),
                },
            )),
            t(stop + 2 * MIN),
        );
        assert_eq!(nodes.monitoring.last_interaction, Some(t(stop + MIN)));
        assert_eq!(nodes.monitoring.last_work, Some(t(start)));
        assert_eq!(lab_stopped(&nodes, &s), Some(LabStop::UnattendedRun));
        w.monitoring.activity_checked_at = Some(t(stop + 40 * MIN));
        let d = evaluate_in(&w, &s, Some(0.0), t(stop + 40 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::RunEnded);
        assert_eq!(d.timeout, Duration::from_secs(2 * 3600));
        assert_eq!(d.action.label(), "keep:not_idle");
        assert_eq!(d.pause_at, Some(t(stop + 120 * MIN)));
        let w = lab_ran(start, None, stop, stop + 120 * MIN);
        assert_eq!(
            evaluate_in(&w, &s, Some(0.0), t(stop + 120 * MIN)).action,
            IdleAction::Pause
        );
        // Its user touched it twenty minutes before the stop: they put their work away.
        let w = lab_ran(start, Some(stop - 20 * MIN), stop, stop + 30 * MIN);
        assert_eq!(lab_stopped(&w, &s), Some(LabStop::Session));
        let d = evaluate_in(&w, &s, Some(0.0), t(stop + 30 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::SessionEnded);
        assert_eq!(d.action, IdleAction::Pause);
        // A resume counts as someone being there.
        let mut w = lab_ran(start, None, stop, stop + 30 * MIN);
        w.monitoring.last_resume = Some(t(stop - 2 * 60 * MIN));
        w.monitoring.history.clear();
        assert_eq!(lab_stopped(&w, &s), Some(LabStop::Session));
        // Just under `run_end_after` untouched: still a session (a lab left up over lunch).
        let w = lab_ran(stop - 3 * 60 * MIN + MIN, None, stop, stop + 30 * MIN);
        assert_eq!(lab_stopped(&w, &s), Some(LabStop::Session));
        let w = lab_ran(stop - 3 * 60 * MIN, None, stop, stop + 30 * MIN);
        assert_eq!(lab_stopped(&w, &s), Some(LabStop::UnattendedRun));
        // No interaction known before the stop: nobody was seen there to leave.
        let mut w = lab_ran(start, None, stop, stop + 30 * MIN);
        w.monitoring.last_work = None;
        assert_eq!(lab_stopped(&w, &s), Some(LabStop::UnattendedRun));
        // Nodes still running: no stop at all.
        let mut w = lab_ran(start, None, stop, stop + 30 * MIN);
        w.monitoring.running_nodes = Some(2);
        assert_eq!(lab_stopped(&w, &s), None);
    }

    #[test]
    fn evidence_about_this_hour_should_overrule_the_run_end_guess() {
        let s = IdleSettings::default();
        let (start, stop) = (8 * 60 * MIN + 30 * MIN, DAY * MIN + 30 * MIN);
        // Five earlier mornings of overnight runs ending at 08:30 and users back at 09:00.
        let mut w = lab_ran(start, None, stop, stop + 70 * MIN);
        for d in (1..=5).rev() {
            w.monitoring.breaks.push_front(crate::worker::Break {
                from: t((30 + DAY - d * DAY) * MIN),
                to: t((60 + DAY - d * DAY) * MIN),
            });
        }
        let d = evaluate_in(&w, &s, Some(0.0), t(stop + 70 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::LearnedReturn);
        assert_eq!(d.pause_at, Some(t(stop + 120 * MIN)));
        // Five mornings where nobody came after the run: the plain timeout, not the guess.
        for b in &mut w.monitoring.breaks {
            b.to = b.from + chrono::Duration::hours(20);
        }
        let d = evaluate_in(&w, &s, Some(0.0), t(stop + 70 * MIN));
        assert_eq!(d.timeout_rule, TimeoutRule::Plain);
        assert_eq!(d.action, IdleAction::Pause);
        // The rule off (run_end_timeout = timeout): the plain timeout's length.
        let off = IdleSettings {
            run_end_timeout: s.timeout,
            ..IdleSettings::default()
        };
        let w = lab_ran(start, None, stop, stop + 60 * MIN);
        let d = evaluate_in(&w, &off, Some(0.0), t(stop + 60 * MIN));
        assert_eq!(d.timeout, s.timeout);
        assert_eq!(d.action, IdleAction::Pause);
    }

    #[test]
    fn a_worker_ccm_brought_up_that_nobody_used_since_should_get_the_shorter_timeout() {
        use crate::worker::{HistoryEntry, HistoryKind};
        let s = IdleSettings::default();
        let at = |w: &Worker, m: i64| {
            let mut w = w.clone();
            w.monitoring.activity_checked_at = Some(t(m * MIN));
            evaluate(&w, &s, t(m * MIN))
        };
        // Imported by ccm at t(0), running, nothing seen since.
        let mut auto = worker();
        auto.created_by = Actor::system("auto-import");
        let d = at(&auto, 31);
        assert_eq!(d.timeout_rule, TimeoutRule::NobodySinceStart);
        assert_eq!(d.timeout, Duration::from_secs(30 * 60));
        assert_eq!(d.action, IdleAction::Pause);
        assert_eq!(at(&auto, 29).action.label(), "keep:not_idle");
        // Imported by a person: the plain timeout.
        let d = at(&worker(), 31);
        assert_eq!(
            (d.timeout_rule, d.action.label().as_str()),
            (TimeoutRule::Plain, "keep:not_idle")
        );
        // Someone was on it within the timeout before the import, or since: not nobody.
        let mut before = auto.clone();
        before.monitoring.last_interaction = Some(t(-10 * MIN));
        before.monitoring.last_activity = Some(t(-10 * MIN));
        assert_eq!(at(&before, 31).timeout_rule, TimeoutRule::Plain);
        let mut long_before = auto.clone();
        long_before.monitoring.last_activity = Some(t(-61 * MIN));
        assert_eq!(
            at(&long_before, 31).timeout_rule,
            TimeoutRule::NobodySinceStart
        );
        let mut nodes = auto.clone();
        nodes.monitoring.last_running_nodes_at = Some(t(5 * MIN));
        assert_eq!(at(&nodes, 31).timeout_rule, TimeoutRule::Plain);
        let mut used = auto.clone();
        used.monitoring.last_activity = Some(t(5 * MIN));
        used.monitoring.last_interaction = Some(t(5 * MIN));
        let d = at(&used, 40);
        assert_eq!(
            (d.timeout_rule, d.action.label().as_str()),
            (TimeoutRule::Plain, "keep:not_idle")
        );

        // Resumed at 2 h, after a day's use that ended at 10 min: by whom decides.
        let resumed = |by: Option<Actor>, reason: &str| {
            let mut w = used.clone();
            w.monitoring.last_resume = Some(t(120 * MIN));
            w.monitoring.history.push_back(HistoryEntry {
                at: t(120 * MIN),
                kind: HistoryKind::Resumed,
                reason: reason.into(),
                by,
            });
            w
        };
        // A schedule's start: nobody since; the grace after a resume still holds (60 min).
        let schedule = resumed(Some(Actor::system("schedule")), "schedule");
        let d = at(&schedule, 151);
        assert_eq!(d.timeout_rule, TimeoutRule::NobodySinceStart);
        assert_eq!(d.action.label(), "keep:snoozed");
        assert_eq!(d.pause_at, Some(t(180 * MIN)));
        assert_eq!(at(&schedule, 180).action, IdleAction::Pause);
        // A start by a person through ccm is their activity: the plain timeout, whoever
        // imported it; a start outside ccm (no actor) counts as a person's.
        for w in [
            resumed(Some(Actor::user("b")), "manual"),
            resumed(None, "external"),
        ] {
            let d = at(&w, 151);
            assert_eq!(d.timeout_rule, TimeoutRule::Plain);
            assert_eq!(d.pause_at, Some(t(180 * MIN)));
        }
        // A resume missing from the history is a person's (the safe side).
        let mut unknown = used.clone();
        unknown.monitoring.last_resume = Some(t(120 * MIN));
        assert_eq!(at(&unknown, 151).timeout_rule, TimeoutRule::Plain);
        // Off: not shorter than the timeout.
        let off = IdleSettings {
            nobody_since_start_timeout: s.timeout,
            ..s.clone()
        };
        let mut w = auto.clone();
        w.monitoring.activity_checked_at = Some(t(31 * MIN));
        assert_eq!(
            evaluate(&w, &off, t(31 * MIN)).timeout_rule,
            TimeoutRule::Plain
        );
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
