//! The simulator's clock: `tokio::time` for every deadline, and wall-clock timestamps derived
//! from it, so that tests under paused time see tokens expire and nodes boot on schedule.
//! A harness that steps its own wall clock (`ccm bench idle`: a simulated week) moves the
//! simulator's wall time with it ([`SimClock::set_wall`], the control action `set_clock`).

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::Instant;

/// Wall time = the wall time at start + the tokio time elapsed since start + a skew that
/// [`SimClock::set_wall`] sets.
#[derive(Debug)]
pub(crate) struct SimClock {
    base: Instant,
    base_wall: DateTime<Utc>,
    skew_ms: AtomicI64,
}

impl SimClock {
    pub(crate) fn new() -> Self {
        SimClock {
            base: Instant::now(),
            base_wall: Utc::now(),
            skew_ms: AtomicI64::new(0),
        }
    }

    /// The wall-clock time of a tokio instant.
    pub(crate) fn wall(&self, at: Instant) -> DateTime<Utc> {
        let since = at.saturating_duration_since(self.base);
        self.base_wall
            + TimeDelta::from_std(since).unwrap_or(TimeDelta::zero())
            + TimeDelta::milliseconds(self.skew_ms.load(Ordering::Relaxed))
    }

    /// Makes the wall clock read `now` at this instant (it runs on from there).
    pub(crate) fn set_wall(&self, now: DateTime<Utc>) {
        let since = Instant::now().saturating_duration_since(self.base);
        let unskewed = self.base_wall + TimeDelta::from_std(since).unwrap_or(TimeDelta::zero());
        self.skew_ms
            .store((now - unskewed).num_milliseconds(), Ordering::Relaxed);
    }

    /// The wall-clock time now.
    pub(crate) fn wall_now(&self) -> DateTime<Utc> {
        self.wall(Instant::now())
    }

    /// Seconds since the Unix epoch, now (JWT `iat`/`exp` use these).
    pub(crate) fn unix_now(&self) -> i64 {
        self.wall_now().timestamp()
    }

    /// Whether a worker flapping with this period is in its down half at `at`.
    pub(crate) fn in_flap_down(&self, period: std::time::Duration, at: Instant) -> bool {
        let period = period.as_millis().max(2);
        let phase = at.saturating_duration_since(self.base).as_millis() % period;
        phase >= period / 2
    }
}
