//! The simulator's clock: `tokio::time` for every deadline, and wall-clock timestamps derived
//! from it, so that tests under paused time see tokens expire and nodes boot on schedule.

use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::Instant;

/// Wall time = the wall time at start + the tokio time elapsed since start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SimClock {
    base: Instant,
    base_wall: DateTime<Utc>,
}

impl SimClock {
    pub(crate) fn new() -> Self {
        SimClock {
            base: Instant::now(),
            base_wall: Utc::now(),
        }
    }

    /// The wall-clock time of a tokio instant.
    pub(crate) fn wall(&self, at: Instant) -> DateTime<Utc> {
        let since = at.saturating_duration_since(self.base);
        self.base_wall + TimeDelta::from_std(since).unwrap_or(TimeDelta::zero())
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
