//! The per-worker schedule: each worker has its own due time, at a stable phase within the
//! interval, so polls spread evenly over the interval instead of arriving as a herd.
//!
//! Guarantees (each has a test): a worker is due once per interval; phases are spread
//! uniformly; a worker that fell behind is rescheduled to its next slot in the future, never
//! run twice to catch up; changing the interval re-phases everyone without a restart.
//! Overlap (a run still going when the next is due) is prevented by the job runner, which
//! skips a worker that is still in flight.

use std::collections::HashMap;
use std::time::Duration;

use ccm_domain::WorkerId;
use tokio::time::Instant;

/// Due times of a set of workers for one job.
#[derive(Debug)]
pub(crate) struct Spread {
    interval: Duration,
    due: HashMap<WorkerId, Instant>,
    /// Whether a first set of members was scheduled (later newcomers catch up quickly).
    seeded: bool,
}

/// Newcomers to a running schedule are polled within this long at least…
const MIN_CATCH_UP: Duration = Duration::from_secs(2);
/// …and at most this many per second (a takeover of 3,000 workers spreads over 15 s), never
/// later than their slot in the interval would be.
const CATCH_UP_PER_SECOND: u32 = 200;

/// How long `n` newcomers to a running schedule are spread over.
fn catch_up(n: usize, interval: Duration) -> Duration {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    (Duration::from_secs(1) * n / CATCH_UP_PER_SECOND)
        .max(MIN_CATCH_UP)
        .min(interval)
}

/// A stable offset of `id` within `interval`: the same worker always lands in the same slot.
pub(crate) fn phase(id: WorkerId, interval: Duration) -> Duration {
    let (hi, lo) = id.as_uuid().as_u64_pair();
    // Mix the bits (UUIDv7 ids share their timestamp prefix).
    let mut x = hi ^ lo.rotate_left(29);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    let nanos = interval.as_nanos().max(1);
    Duration::from_nanos((u128::from(x) % nanos) as u64)
}

impl Spread {
    /// An empty schedule.
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval: interval.max(Duration::from_millis(1)),
            due: HashMap::new(),
            seeded: false,
        }
    }

    /// The interval.
    #[cfg(test)]
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// Keeps exactly `members`, leavers are dropped. The first members get their slots
    /// spread over the interval (no herd at start); later newcomers — workers taken over from
    /// another replica, or imported — are spread over a few seconds ([`MIN_CATCH_UP`], at
    /// most [`CATCH_UP_PER_SECOND`]), since nobody may have polled them for a while.
    pub(crate) fn reconcile(&mut self, members: &[WorkerId], now: Instant) {
        let keep: std::collections::HashSet<&WorkerId> = members.iter().collect();
        self.due.retain(|id, _| keep.contains(id));
        let new = members
            .iter()
            .filter(|id| !self.due.contains_key(id))
            .count();
        let window = if self.seeded {
            catch_up(new, self.interval)
        } else {
            self.interval
        };
        for id in members {
            self.due
                .entry(*id)
                .or_insert_with(|| now + phase(*id, window));
        }
        self.seeded |= !members.is_empty();
    }

    /// Changes the interval; every worker gets its slot within the new interval from `now`.
    pub(crate) fn set_interval(&mut self, interval: Duration, now: Instant) {
        let interval = interval.max(Duration::from_millis(1));
        if interval == self.interval {
            return;
        }
        self.interval = interval;
        for (id, due) in &mut self.due {
            *due = now + phase(*id, interval);
        }
    }

    /// The workers due at `now`; each is rescheduled to its next slot after `now`.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<WorkerId> {
        let mut out = Vec::new();
        for (id, due) in &mut self.due {
            if *due <= now {
                out.push(*id);
                let behind = now.duration_since(*due).as_nanos();
                let steps = behind / self.interval.as_nanos() + 1;
                *due += self.interval * u32::try_from(steps).unwrap_or(u32::MAX);
            }
        }
        out
    }

    /// Every scheduled worker.
    #[cfg(test)]
    pub(crate) fn all(&self) -> Vec<WorkerId> {
        self.due.keys().copied().collect()
    }

    /// The earliest due time.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// How many workers are scheduled.
    pub(crate) fn len(&self) -> usize {
        self.due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<WorkerId> {
        (0..n).map(|_| WorkerId::new()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn polls_should_spread_evenly_over_the_interval() {
        let members = ids(3000);
        let mut s = Spread::new(Duration::from_secs(60));
        let start = Instant::now();
        s.reconcile(&members, start);
        let mut per_second = vec![0usize; 60];
        for second in 0..60u64 {
            let now = start + Duration::from_secs(second + 1);
            per_second[second as usize] = s.take_due(now).len();
        }
        assert_eq!(
            per_second.iter().sum::<usize>(),
            3000,
            "each worker due exactly once per interval"
        );
        let max = *per_second.iter().max().unwrap();
        let min = *per_second.iter().min().unwrap();
        // 50 per second on average; a herd would put them all in one second.
        assert!(
            max <= 90 && min >= 20,
            "uneven spread: min {min}, max {max}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_should_be_due_once_per_interval_and_never_twice_to_catch_up() {
        let members = ids(1);
        let mut s = Spread::new(Duration::from_secs(10));
        let start = Instant::now();
        s.reconcile(&members, start);
        assert_eq!(s.take_due(start + Duration::from_secs(10)).len(), 1);
        assert!(s.take_due(start + Duration::from_secs(10)).is_empty());
        // Fell behind by 5 intervals: runs once, next slot is in the future.
        assert_eq!(s.take_due(start + Duration::from_secs(65)).len(), 1);
        assert!(s.next_due().unwrap() > start + Duration::from_secs(65));
        assert!(s.next_due().unwrap() <= start + Duration::from_secs(75));
    }

    #[tokio::test(start_paused = true)]
    async fn phases_should_be_stable_and_within_the_interval() {
        let id = WorkerId::new();
        let i = Duration::from_secs(300);
        assert_eq!(phase(id, i), phase(id, i));
        assert!(phase(id, i) < i);
    }

    #[tokio::test(start_paused = true)]
    async fn changing_the_interval_should_reschedule_everyone() {
        let members = ids(100);
        let mut s = Spread::new(Duration::from_secs(600));
        let start = Instant::now();
        s.reconcile(&members, start);
        s.set_interval(Duration::from_secs(10), start);
        assert_eq!(s.interval(), Duration::from_secs(10));
        assert_eq!(s.take_due(start + Duration::from_secs(10)).len(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn workers_joining_a_running_schedule_should_be_polled_within_seconds() {
        let mut members = ids(100);
        let mut s = Spread::new(Duration::from_secs(60));
        let start = Instant::now();
        s.reconcile(&members, start);
        let first = s.take_due(start + Duration::from_secs(2)).len();
        assert!(
            first < 20,
            "the first members spread over the interval: {first}"
        );
        // A takeover: 50 workers join; all are due within MIN_CATCH_UP, not a minute later.
        let taken = ids(50);
        members.extend(&taken);
        let now = start + Duration::from_secs(3);
        s.reconcile(&members, now);
        let due = s.take_due(now + MIN_CATCH_UP);
        assert!(
            taken.iter().all(|id| due.contains(id)),
            "{} of 50",
            due.len()
        );
        // Many at once: at most CATCH_UP_PER_SECOND a second, still well within the interval.
        let many = ids(2000);
        members.extend(&many);
        let now = now + Duration::from_secs(3);
        s.reconcile(&members, now);
        let in_one_second = s.take_due(now + Duration::from_secs(1));
        let early = many.iter().filter(|id| in_one_second.contains(id)).count();
        assert!(early <= 300, "{early} in the first second");
        let due = s.take_due(now + Duration::from_secs(10));
        assert!(
            many.iter()
                .all(|id| in_one_second.contains(id) || due.contains(id)),
            "all 2000 within 10 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn leavers_should_be_dropped_and_newcomers_added() {
        let mut members = ids(10);
        let mut s = Spread::new(Duration::from_secs(60));
        let now = Instant::now();
        s.reconcile(&members, now);
        members.truncate(4);
        members.push(WorkerId::new());
        s.reconcile(&members, now);
        assert_eq!(s.len(), 5);
        let mut all = s.all();
        all.sort();
        members.sort();
        assert_eq!(all, members);
    }
}
