//! [`Backoff`]: exponential backoff with full jitter.
//!
//! The delay before retry `n` (0 for the first retry) is drawn uniformly from
//! `[0, min(cap, base × 2^n)]` ("full jitter", as in the AWS architecture blog). Full jitter
//! spreads the retries of many clients that failed together over the whole interval, which is
//! what keeps a fleet-wide outage from turning into synchronised retry waves.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::RetryConfig;

/// Full-jitter delays. Cheap to clone; clones of a seeded backoff share one generator.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    rng: JitterRng,
}

#[derive(Debug, Clone)]
enum JitterRng {
    /// The thread-local generator of `rand` (production).
    Thread,
    /// One seeded generator shared by all clones (deterministic tests).
    Seeded(Arc<Mutex<StdRng>>),
}

impl Backoff {
    /// Delays growing from `base`, doubling per retry, never above `cap`, drawn with the
    /// thread-local generator.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            rng: JitterRng::Thread,
        }
    }

    /// The backoff of `[resilience.retry]`.
    pub fn from_config(config: &RetryConfig) -> Self {
        Self::new(config.base, config.cap)
    }

    /// The same backoff drawing from a generator seeded with `seed`: the sequence of delays is
    /// then reproducible.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = JitterRng::Seeded(Arc::new(Mutex::new(StdRng::seed_from_u64(seed))));
        self
    }

    /// The base delay.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest ceiling.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The upper bound of the delay before retry `retry` (0 for the first retry):
    /// `min(cap, base × 2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        if retry >= 32 {
            return self.cap;
        }
        self.base
            .checked_mul(1u32 << retry)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// A delay before retry `retry` (0 for the first retry), uniform in `[0, ceiling(retry)]`.
    pub fn delay(&self, retry: u32) -> Duration {
        match &self.rng {
            JitterRng::Thread => self.delay_with(retry, &mut rand::rng()),
            JitterRng::Seeded(rng) => self.delay_with(retry, &mut *rng.lock()),
        }
    }

    /// A delay before retry `retry`, drawn from `rng`.
    pub fn delay_with<R: Rng + ?Sized>(&self, retry: u32, rng: &mut R) -> Duration {
        let ceiling = self.ceiling(retry);
        // Ceilings are below a year (validated config), so nanoseconds fit in a u64.
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=nanos))
    }
}

impl Default for Backoff {
    /// 1 s base, 10 s cap.
    fn default() -> Self {
        Self::from_config(&RetryConfig::default())
    }
}
