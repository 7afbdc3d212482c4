//! [`RateLimiters`]: a token bucket per key (an AWS region), from `governor`.
//!
//! governor's GCRA limiter runs on a [`GovernorClock`], so limits follow tokio's (pausable)
//! clock, and waiting is a `tokio::time::sleep` (governor's own `until_ready` sleeps on a real
//! timer that paused-time tests cannot drive).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use crate::config::RateLimitConfig;
use crate::metrics as metric;
use crate::telemetry;

/// governor's clock reading tokio's clock (nanoseconds since the clock was made). Not the
/// engine's wall clock (`ccm_engine::TokioClock`): this one only measures intervals.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GovernorClock {
    origin: Instant,
}

impl GovernorClock {
    /// A clock starting now.
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for GovernorClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for GovernorClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(Instant::now().saturating_duration_since(self.origin))
    }
}

type Gcra = RateLimiter<NotKeyed, InMemoryState, GovernorClock, NoOpMiddleware<Nanos>>;

/// One key's limiter, with the key kept for metric labels.
#[derive(Debug)]
struct Limiter {
    wait_metric: metrics::Key,
    gcra: Gcra,
}

/// Per-key rate limiters sharing one quota, created on first use. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RateLimiters {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    enabled: bool,
    quota: Quota,
    clock: GovernorClock,
    limiters: DashMap<Arc<str>, Arc<Limiter>>,
}

/// No token could be had before the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit leaves no token before the deadline")]
pub struct RateLimited {
    /// How long the caller would have had to wait.
    pub wait: Duration,
}

impl RateLimiters {
    /// Limiters as configured.
    pub fn new(config: &RateLimitConfig) -> Self {
        let per_second = NonZeroU32::new(config.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
        Self {
            inner: Arc::new(Inner {
                enabled: config.enabled,
                quota: Quota::per_second(per_second).allow_burst(burst),
                clock: GovernorClock::new(),
                limiters: DashMap::new(),
            }),
        }
    }

    /// Whether the limiters limit anything.
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled
    }

    fn limiter(&self, key: &str) -> Arc<Limiter> {
        if let Some(l) = self.inner.limiters.get(key) {
            return Arc::clone(l.value());
        }
        let key: Arc<str> = Arc::from(key);
        let entry = self
            .inner
            .limiters
            .entry(Arc::clone(&key))
            .or_insert_with(|| {
                Arc::new(Limiter {
                    wait_metric: telemetry::labelled(metric::RATE_LIMITED_WAIT, "key", &key),
                    gcra: RateLimiter::direct_with_clock(self.inner.quota, self.inner.clock),
                })
            });
        Arc::clone(entry.value())
    }

    /// Takes a token for `key` if one is there now; otherwise says how long until one is.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if !self.inner.enabled {
            return Ok(());
        }
        let limiter = self.limiter(key);
        limiter
            .gcra
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.inner.clock.now()))
    }

    /// Waits for a token for `key`.
    pub async fn until_ready(&self, key: &str) {
        // Without a deadline the wait cannot fail.
        let _ = self.until_ready_by(key, None).await;
    }

    /// Waits for a token for `key`, but not past `deadline`: fails at once (without waiting)
    /// when the next token comes too late. Returns how long it waited.
    pub async fn until_ready_by(
        &self,
        key: &str,
        deadline: Option<Instant>,
    ) -> Result<Duration, RateLimited> {
        if !self.inner.enabled {
            return Ok(Duration::ZERO);
        }
        let limiter = self.limiter(key);
        if limiter.gcra.check().is_ok() {
            return Ok(Duration::ZERO);
        }
        let start = Instant::now();
        loop {
            let wait = match limiter.gcra.check() {
                Ok(()) => break,
                Err(not_until) => not_until.wait_time_from(self.inner.clock.now()),
            };
            let until = Instant::now() + wait;
            if deadline.is_some_and(|d| until > d) {
                return Err(RateLimited { wait });
            }
            tokio::time::sleep_until(until).await;
        }
        let waited = start.elapsed();
        if !waited.is_zero() {
            telemetry::histogram(&limiter.wait_metric).record(waited.as_secs_f64());
        }
        Ok(waited)
    }
}
