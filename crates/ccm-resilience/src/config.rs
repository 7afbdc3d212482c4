//! The `[resilience]` section of the config file: one struct per policy, each switchable off.
//!
//! Durations are humantime strings (`"15s"`, `"10m"`). Every struct has
//! `#[serde(default, deny_unknown_fields)]`, so an empty section yields the defaults and a typo
//! is an error. [`ResilienceConfig::validate`] checks the values and names the offending key.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole `[resilience]` section.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResilienceConfig {
    /// Per-attempt timeout and overall deadline.
    pub timeout: TimeoutConfig,
    /// Retries with exponential backoff and full jitter.
    pub retry: RetryConfig,
    /// The fleet-wide retry budget.
    pub budget: BudgetConfig,
    /// Circuit breakers per endpoint key.
    pub breaker: BreakerConfig,
    /// Named concurrency limits with bounded wait queues.
    pub bulkheads: BulkheadsConfig,
    /// Token-bucket rate limits per key (an AWS region).
    pub rate_limit: RateLimitConfig,
    /// Minimum interval between two refreshes of the same worker.
    pub refresh_throttle: ThrottleConfig,
}

/// `[resilience.timeout]`: how long one attempt and one whole operation may take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    /// Off: no per-attempt timeout and no deadline (unless a call sets its own deadline).
    pub enabled: bool,
    /// Longest time one attempt may take.
    #[serde(with = "humantime_serde")]
    pub per_attempt: Duration,
    /// Longest time one operation may take, retries and backoff included.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_attempt: Duration::from_secs(15),
            deadline: Duration::from_secs(60),
        }
    }
}

/// `[resilience.retry]`: exponential backoff with full jitter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Off: every call makes exactly one attempt.
    pub enabled: bool,
    /// Attempts in total, the first one included.
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry; doubles for each further retry.
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// Largest backoff ceiling (a `Retry-After` from the server may still be longer).
    #[serde(with = "humantime_serde")]
    pub cap: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_attempts: 3,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
        }
    }
}

/// `[resilience.budget]`: retries may add at most `ratio` of the calls of the last `window`,
/// plus `min_per_second × window` so that a quiet process can still retry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Off: retries are limited only by `retry.max_attempts`.
    pub enabled: bool,
    /// Retries allowed per call in the window (0.2 = 20 % extra traffic at most).
    pub ratio: f64,
    /// Retries allowed per second of the window regardless of traffic (the floor).
    pub min_per_second: u32,
    /// How far back calls and retries are counted.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// `[resilience.breaker]`: one circuit breaker per endpoint key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Off: no call is ever rejected by a breaker.
    pub enabled: bool,
    /// Consecutive failed attempts that open the breaker.
    pub failure_threshold: u32,
    /// How long an open breaker rejects calls before it lets one probe through.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_threshold: 5,
            open_for: Duration::from_secs(60),
        }
    }
}

/// `[resilience.bulkheads]`: the named concurrency limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkheadsConfig {
    /// Off: the bulkheads never wait nor reject (they still count calls in flight).
    pub enabled: bool,
    /// Polling CML workers (`bulkhead::CML_POLL`).
    pub cml_poll: BulkheadConfig,
    /// Lab work on CML workers: import, start, stop, wipe (`bulkhead::LABS`).
    pub labs: BulkheadConfig,
    /// Calls to AWS (`bulkhead::AWS`).
    pub aws: BulkheadConfig,
}

impl Default for BulkheadsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cml_poll: BulkheadConfig::new(512, 10_000),
            labs: BulkheadConfig::new(32, 1_000),
            aws: BulkheadConfig::new(16, 1_000),
        }
    }
}

/// One bulkhead: `max_concurrent` calls run, `max_queue` more wait, the rest are rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Calls that may run at once.
    pub max_concurrent: usize,
    /// Calls that may wait for a slot; one more is rejected at once.
    pub max_queue: usize,
}

impl BulkheadConfig {
    /// A bulkhead of `max_concurrent` slots and a queue of `max_queue`.
    pub const fn new(max_concurrent: usize, max_queue: usize) -> Self {
        Self {
            max_concurrent,
            max_queue,
        }
    }
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self::new(16, 1_000)
    }
}

/// `[resilience.rate_limit]`: a token bucket per key (an AWS region).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Off: attempts never wait for a token.
    pub enabled: bool,
    /// Sustained attempts per second per key.
    pub per_second: u32,
    /// Attempts that may be made at once after a quiet period.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_second: 20,
            burst: 40,
        }
    }
}

/// `[resilience.refresh_throttle]`: the least time between two refreshes of one worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Off: refreshes are never refused.
    pub enabled: bool,
    /// Least time between the starts of two refreshes of the same worker.
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_interval: Duration::from_secs(10),
        }
    }
}

/// A value in `[resilience]` that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The key holds a value outside its allowed range.
    #[error("invalid value for {key}: {reason}")]
    Invalid {
        /// The full key, e.g. `resilience.retry.max_attempts`.
        key: &'static str,
        /// What the value must be.
        reason: &'static str,
    },
}

fn check(ok: bool, key: &'static str, reason: &'static str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid { key, reason })
    }
}

/// Largest accepted duration: far beyond any sensible setting, small enough that instant
/// arithmetic can never overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

impl ResilienceConfig {
    /// Checks every value, disabled policies included (so switching one on later cannot fail
    /// at run time). The error names the first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.timeout;
        check(
            !t.per_attempt.is_zero() && t.per_attempt <= MAX_DURATION,
            "resilience.timeout.per_attempt",
            "must be more than 0 and at most a year",
        )?;
        check(
            t.deadline >= t.per_attempt && t.deadline <= MAX_DURATION,
            "resilience.timeout.deadline",
            "must be at least resilience.timeout.per_attempt and at most a year",
        )?;

        let r = &self.retry;
        check(
            (1..=100).contains(&r.max_attempts),
            "resilience.retry.max_attempts",
            "must be between 1 and 100",
        )?;
        check(
            !r.base.is_zero() && r.base <= MAX_DURATION,
            "resilience.retry.base",
            "must be more than 0 and at most a year",
        )?;
        check(
            r.cap >= r.base && r.cap <= MAX_DURATION,
            "resilience.retry.cap",
            "must be at least resilience.retry.base and at most a year",
        )?;

        let b = &self.budget;
        check(
            b.ratio.is_finite() && (0.0..=100.0).contains(&b.ratio),
            "resilience.budget.ratio",
            "must be a number between 0 and 100",
        )?;
        check(
            b.window >= Duration::from_secs(1) && b.window <= Duration::from_secs(3600),
            "resilience.budget.window",
            "must be between 1s and 1h",
        )?;
        check(
            b.min_per_second <= 1_000_000,
            "resilience.budget.min_per_second",
            "must be at most 1000000",
        )?;

        let c = &self.breaker;
        check(
            c.failure_threshold >= 1,
            "resilience.breaker.failure_threshold",
            "must be at least 1",
        )?;
        check(
            !c.open_for.is_zero() && c.open_for <= MAX_DURATION,
            "resilience.breaker.open_for",
            "must be more than 0 and at most a year",
        )?;

        let h = &self.bulkheads;
        for (slot, cfg) in [
            ("resilience.bulkheads.cml_poll.max_concurrent", &h.cml_poll),
            ("resilience.bulkheads.labs.max_concurrent", &h.labs),
            ("resilience.bulkheads.aws.max_concurrent", &h.aws),
        ] {
            check(
                (1..=crate::bulkhead::MAX_CONCURRENT).contains(&cfg.max_concurrent),
                slot,
                "must be between 1 and 1000000",
            )?;
        }

        let l = &self.rate_limit;
        check(
            l.per_second >= 1,
            "resilience.rate_limit.per_second",
            "must be at least 1",
        )?;
        check(
            l.burst >= 1,
            "resilience.rate_limit.burst",
            "must be at least 1",
        )?;

        check(
            self.refresh_throttle.min_interval <= MAX_DURATION,
            "resilience.refresh_throttle.min_interval",
            "must be at most a year",
        )?;
        Ok(())
    }

    /// Everything switched off: one attempt, no timeout, no breaker, no limits.
    pub fn disabled() -> Self {
        let mut cfg = Self::default();
        cfg.timeout.enabled = false;
        cfg.retry.enabled = false;
        cfg.budget.enabled = false;
        cfg.breaker.enabled = false;
        cfg.bulkheads.enabled = false;
        cfg.rate_limit.enabled = false;
        cfg.refresh_throttle.enabled = false;
        cfg
    }
}
