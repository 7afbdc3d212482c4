//! Rate limits per client address (governor's keyed GCRA limiters).
//!
//! - [`SignInLimiter`]: failed sign-ins, failed OIDC callbacks and failed bearer tokens.
//!   After `burst` failures an address is refused with 429 and `Retry-After` until the
//!   limiter lets it try again. Successes cost nothing.
//! - [`StartLimiter`]: starts of the OIDC browser sign-in, successful or not (each holds
//!   pending state until it completes or expires).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use crate::config::SignInLimit;

/// Counts failed sign-ins per address and refuses addresses over the limit.
pub(crate) struct SignInLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    blocked: DashMap<IpAddr, Instant>,
    failures: AtomicU64,
}

impl std::fmt::Debug for SignInLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInLimiter")
            .field("blocked", &self.blocked.len())
            .finish_non_exhaustive()
    }
}

impl SignInLimiter {
    pub(crate) fn new(cfg: SignInLimit) -> Self {
        let one = NonZeroU32::MIN;
        let quota = Quota::per_minute(NonZeroU32::new(cfg.per_minute).unwrap_or(one))
            .allow_burst(NonZeroU32::new(cfg.burst).unwrap_or(one));
        Self {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            blocked: DashMap::new(),
            failures: AtomicU64::new(0),
        }
    }

    /// Before a sign-in: `Err(wait)` while the address is refused.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        match self.blocked.get(&ip).map(|u| *u) {
            Some(until) if until > now => Err(until - now),
            Some(_) => {
                self.blocked.remove(&ip);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// After a failed sign-in: `Err(wait)` when this failure was one too many.
    pub(crate) fn failed(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.failures.fetch_add(1, Ordering::Relaxed) % 256 == 255 {
            self.limiter.retain_recent();
            let now = Instant::now();
            self.blocked.retain(|_, until| *until > now);
        }
        match self.limiter.check_key(&ip) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until
                    .wait_time_from(self.clock.now())
                    .max(Duration::from_secs(1));
                self.blocked.insert(ip, Instant::now() + wait);
                tracing::warn!(client = %ip, wait_seconds = wait.as_secs(), "too many failed sign-ins; address refused for a while");
                Err(wait)
            }
        }
    }
}

/// Limits how often an address may start an OIDC browser sign-in.
pub(crate) struct StartLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    starts: AtomicU64,
}

impl std::fmt::Debug for StartLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartLimiter").finish_non_exhaustive()
    }
}

impl StartLimiter {
    pub(crate) fn new(cfg: SignInLimit) -> Self {
        let one = NonZeroU32::MIN;
        let quota = Quota::per_minute(NonZeroU32::new(cfg.per_minute).unwrap_or(one))
            .allow_burst(NonZeroU32::new(cfg.burst).unwrap_or(one));
        Self {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            starts: AtomicU64::new(0),
        }
    }

    /// Counts one start: `Err(wait)` when the address is over its limit.
    pub(crate) fn start(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.starts.fetch_add(1, Ordering::Relaxed) % 256 == 255 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&ip).map_err(|not_until| {
            not_until
                .wait_time_from(self.clock.now())
                .max(Duration::from_secs(1))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_should_be_refused_after_its_burst_of_failures() {
        let l = SignInLimiter::new(SignInLimit {
            burst: 3,
            per_minute: 1,
        });
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let other: IpAddr = "127.0.0.10".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check(ip).is_ok());
            assert!(l.failed(ip).is_ok());
        }
        let wait = l.failed(ip).unwrap_err();
        assert!(
            wait >= Duration::from_secs(1) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert!(l.check(ip).is_err());
        assert!(l.check(other).is_ok(), "other addresses are not affected");
    }

    #[test]
    fn every_start_should_count_against_its_address() {
        let l = StartLimiter::new(SignInLimit {
            burst: 2,
            per_minute: 1,
        });
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        assert!(l.start(ip).is_ok() && l.start(ip).is_ok());
        let wait = l.start(ip).unwrap_err();
        assert!(wait >= Duration::from_secs(1), "{wait:?}");
        assert!(l.start("127.0.0.10".parse().unwrap()).is_ok());
    }
}
