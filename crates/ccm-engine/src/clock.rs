//! Wall-clock time for the domain (`now`), derived from `tokio::time` so that tests under
//! paused time see the wall clock advance with virtual time.

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Where the engine gets `now`.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// Wall time anchored at creation and advanced by `tokio::time::Instant`: real time in
/// production, virtual time under `tokio::time::pause()`.
#[derive(Debug, Clone)]
pub struct TokioClock {
    wall: DateTime<Utc>,
    instant: Instant,
}

impl TokioClock {
    /// Anchors at the real current time.
    pub fn new() -> Self {
        Self::starting_at(Utc::now())
    }

    /// Anchors at `wall` (tests use a fixed date).
    pub fn starting_at(wall: DateTime<Utc>) -> Self {
        Self {
            wall,
            instant: Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = Instant::now().saturating_duration_since(self.instant);
        self.wall + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
}

/// A clock that only moves when told to: for tests that step wall time (idle timeouts,
/// snoozes) while real network I/O runs in real time.
#[derive(Debug)]
pub struct ManualClock {
    now: parking_lot::Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// Starts at `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            now: parking_lot::Mutex::new(now),
        }
    }

    /// Moves time forward.
    pub fn advance(&self, by: std::time::Duration) {
        let mut now = self.now.lock();
        *now += chrono::Duration::from_std(by).unwrap_or_default();
    }

    /// Sets the time.
    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock() = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_clock_should_follow_paused_time() {
        let start = Utc::now();
        let clock = TokioClock::starting_at(start);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.now() - start, chrono::Duration::seconds(3600));
    }
}
