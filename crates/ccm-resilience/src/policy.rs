//! [`Resilience`]: the whole policy stack around one async operation.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::breaker::BreakerRegistry;
use crate::budget::RetryBudget;
use crate::bulkhead::{Bulkhead, BulkheadId, BulkheadSnapshot};
use crate::classify::Classify;
use crate::config::ResilienceConfig;
use crate::error::CallError;
use crate::event::{NoopObserver, Observer};
use crate::metrics as metric;
use crate::rate_limit::RateLimiters;
use crate::telemetry::Notifier;

/// What one call asks for. Build it with a literal or with [`Call::new`] and the setters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call<'a> {
    /// Breaker key (a worker's base URL; `"aws:eu-west-1:ec2"`).
    pub key: &'a str,
    /// Whether the operation may be repeated safely. Only idempotent calls are retried.
    pub idempotent: bool,
    /// Acquire this bulkhead around the whole call ([`CML_POLL`](crate::bulkhead::CML_POLL) etc.).
    pub bulkhead: Option<BulkheadId>,
    /// Take a token from this key's rate limiter before each attempt.
    pub rate_limit: Option<&'a str>,
    /// Override of the configured overall deadline (applies even when timeouts are off).
    pub deadline: Option<Duration>,
    /// Override of the configured per-attempt timeout (e.g. AWS SDK calls, which retry
    /// inside one attempt and need longer than a CML call).
    pub attempt_timeout: Option<Duration>,
    /// Override of the configured attempt limit (1 = never retry; e.g. when the client
    /// library retries by itself).
    pub max_attempts: Option<u32>,
}

impl<'a> Call<'a> {
    /// An idempotent call against `key`, with no bulkhead, no rate limit and the configured
    /// deadline.
    pub const fn new(key: &'a str) -> Self {
        Self {
            key,
            idempotent: true,
            bulkhead: None,
            rate_limit: None,
            deadline: None,
            attempt_timeout: None,
            max_attempts: None,
        }
    }

    /// Marks the call as not safe to repeat (it is then never retried).
    #[must_use]
    pub const fn non_idempotent(mut self) -> Self {
        self.idempotent = false;
        self
    }

    /// Sets whether the call is safe to repeat.
    #[must_use]
    pub const fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// Runs the call inside this bulkhead.
    #[must_use]
    pub const fn bulkhead(mut self, id: BulkheadId) -> Self {
        self.bulkhead = Some(id);
        self
    }

    /// Takes a token from this key's rate limiter before each attempt.
    #[must_use]
    pub const fn rate_limit(mut self, key: &'a str) -> Self {
        self.rate_limit = Some(key);
        self
    }

    /// Overrides the overall deadline.
    #[must_use]
    pub const fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Overrides the per-attempt timeout.
    #[must_use]
    pub const fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Overrides the attempt limit (at least 1).
    #[must_use]
    pub const fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }
}

/// The whole policy stack, shared by the whole process. Cheap to clone (Arc inside).
#[derive(Debug, Clone)]
pub struct Resilience {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ResilienceConfig,
    per_attempt: Option<Duration>,
    deadline: Option<Duration>,
    max_attempts: u32,
    backoff: Backoff,
    budget: RetryBudget,
    breakers: BreakerRegistry,
    rate_limits: RateLimiters,
    /// One per [`BulkheadId`], indexed by it (`id as usize`).
    bulkheads: [Bulkhead; 3],
}

impl Inner {
    fn bulkhead(&self, id: BulkheadId) -> &Bulkhead {
        &self.bulkheads[id as usize]
    }
}

/// Builds a [`Resilience`] with an observer and, for tests, a seeded jitter generator.
#[derive(Clone)]
#[must_use = "call build()"]
pub struct ResilienceBuilder {
    config: ResilienceConfig,
    observer: Arc<dyn Observer>,
    seed: Option<u64>,
}

impl std::fmt::Debug for ResilienceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilienceBuilder")
            .field("config", &self.config)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl ResilienceBuilder {
    /// Sends every state change to `observer`.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// Draws backoff jitter from a generator seeded with `seed` (reproducible delays).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The policy stack.
    pub fn build(self) -> Resilience {
        let cfg = self.config;
        let notifier = Notifier::new(self.observer);
        let mut backoff = Backoff::from_config(&cfg.retry);
        if let Some(seed) = self.seed {
            backoff = backoff.with_seed(seed);
        }
        let bulkheads = BulkheadId::ALL.map(|id| {
            let c = match id {
                BulkheadId::CmlPoll => &cfg.bulkheads.cml_poll,
                BulkheadId::Labs => &cfg.bulkheads.labs,
                BulkheadId::Aws => &cfg.bulkheads.aws,
            };
            Bulkhead::build(
                id.as_str(),
                cfg.bulkheads.enabled.then_some(c),
                notifier.clone(),
            )
        });
        Resilience {
            inner: Arc::new(Inner {
                per_attempt: cfg.timeout.enabled.then_some(cfg.timeout.per_attempt),
                deadline: cfg.timeout.enabled.then_some(cfg.timeout.deadline),
                max_attempts: if cfg.retry.enabled {
                    cfg.retry.max_attempts.max(1)
                } else {
                    1
                },
                backoff,
                budget: RetryBudget::with_notifier(&cfg.budget, notifier.clone()),
                breakers: BreakerRegistry::with_notifier(&cfg.breaker, notifier),
                rate_limits: RateLimiters::new(&cfg.rate_limit),
                bulkheads,
                config: cfg,
            }),
        }
    }
}

impl Resilience {
    /// The policy stack as configured; state changes go to `observer`. Call
    /// [`ResilienceConfig::validate`] first: out-of-range values are clamped here, not
    /// reported.
    pub fn new(config: &ResilienceConfig, observer: Arc<dyn Observer>) -> Self {
        Self::builder(config).observer(observer).build()
    }

    /// A builder starting from `config`, with no observer.
    pub fn builder(config: &ResilienceConfig) -> ResilienceBuilder {
        ResilienceBuilder {
            config: config.clone(),
            observer: Arc::new(NoopObserver),
            seed: None,
        }
    }

    /// Everything off: one attempt, no timeout, no breaker, no limits (tests, raw-speed
    /// benchmarks).
    pub fn disabled() -> Self {
        Self::new(&ResilienceConfig::disabled(), Arc::new(NoopObserver))
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &ResilienceConfig {
        &self.inner.config
    }

    /// The circuit breakers, for their states.
    pub fn breakers(&self) -> &BreakerRegistry {
        &self.inner.breakers
    }

    /// The fleet-wide retry budget.
    pub fn budget(&self) -> &RetryBudget {
        &self.inner.budget
    }

    /// The per-key rate limiters.
    pub fn rate_limits(&self) -> &RateLimiters {
        &self.inner.rate_limits
    }

    /// The bulkhead `id`, for work run outside [`call`](Self::call). When bulkheads are
    /// switched off it never waits nor rejects.
    pub fn bulkhead(&self, id: BulkheadId) -> Bulkhead {
        self.inner.bulkhead(id).clone()
    }

    /// All bulkheads' numbers.
    pub fn bulkheads(&self) -> Vec<BulkheadSnapshot> {
        self.inner
            .bulkheads
            .iter()
            .map(Bulkhead::snapshot)
            .collect()
    }

    /// Runs `op` (called once per attempt, with the attempt number from 1) under: bulkhead →
    /// breaker → rate limit → per-attempt timeout → retry with full-jitter backoff, budget and
    /// Retry-After, all inside the overall deadline.
    ///
    /// - The bulkhead slot is held for the whole call, backoff included; waiting for it counts
    ///   against the deadline.
    /// - The breaker is asked before every attempt and told every attempt's outcome
    ///   ([`ErrorClass`](crate::ErrorClass); a timeout is a failure). If it rejects the first
    ///   attempt the call fails with [`CallError::CircuitOpen`]; if it rejects a retry, the call
    ///   ends with the error it has.
    /// - A retry happens only for a [`Transient`](crate::ErrorClass::Transient) error or a
    ///   timeout of an idempotent call, while attempts remain. Its delay is the full-jitter
    ///   backoff, or the server's `Retry-After` if longer. It starts only if its delay plus a
    ///   full per-attempt timeout ends before the deadline (otherwise
    ///   [`CallError::DeadlineExceeded`] with the last error), and only if the retry budget
    ///   has a token (otherwise [`CallError::BudgetExhausted`]).
    /// - An attempt never runs past the deadline: its timeout is the per-attempt timeout or the
    ///   time left, whichever is shorter. An attempt cut short by the deadline gives the breaker
    ///   no verdict.
    pub async fn call<T, E, F, Fut>(&self, call: &Call<'_>, mut op: F) -> Result<T, CallError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify,
    {
        let inner = &*self.inner;
        let start = Instant::now();
        let deadline = call
            .deadline
            .or(inner.deadline)
            .and_then(|d| start.checked_add(d));
        let per_attempt = call.attempt_timeout.or(inner.per_attempt);
        let max_attempts = call.max_attempts.map_or(inner.max_attempts, |m| m.max(1));

        // Bulkhead around the whole call.
        let _slot = match call.bulkhead {
            None => None,
            Some(id) => {
                let bulkhead = inner.bulkhead(id);
                let acquired = match (bulkhead.try_admit(), deadline) {
                    // A free slot needs no timer.
                    (Some(permit), _) => Ok(permit),
                    (None, None) => bulkhead.acquire().await,
                    (None, Some(at)) => {
                        match tokio::time::timeout_at(at, bulkhead.acquire()).await {
                            Ok(acquired) => acquired,
                            Err(_) => return Err(deadline_exceeded(start, None)),
                        }
                    }
                };
                match acquired {
                    Ok(permit) => Some(permit),
                    Err(full) => return Err(CallError::BulkheadFull { name: full.name }),
                }
            }
        };

        let mut last_error: Option<E> = None;
        let mut last_timeout: Option<Duration> = None;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;

            let permit = match inner.breakers.acquire(call.key) {
                Ok(permit) => permit,
                Err(open) => {
                    if attempt == 1 {
                        return Err(CallError::CircuitOpen {
                            key: call.key.to_owned(),
                            retry_in: open.retry_in,
                        });
                    }
                    return Err(give_up(last_timeout, last_error, false));
                }
            };

            if let Some(key) = call.rate_limit
                && inner
                    .rate_limits
                    .until_ready_by(key, deadline)
                    .await
                    .is_err()
            {
                drop(permit);
                return Err(deadline_exceeded(start, last_error));
            }

            if attempt == 1 {
                inner.budget.deposit();
            } else {
                metrics::counter!(metric::RETRIES).increment(1);
            }

            let remaining = deadline.map(|at| at.saturating_duration_since(Instant::now()));
            let (limit, cut_by_deadline) = match (per_attempt, remaining) {
                (Some(p), Some(r)) if r < p => (Some(r), true),
                (Some(p), _) => (Some(p), false),
                (None, Some(r)) => (Some(r), true),
                (None, None) => (None, false),
            };
            if limit.is_some_and(|l| l.is_zero()) {
                drop(permit);
                return Err(deadline_exceeded(start, last_error));
            }

            let outcome = match limit {
                Some(limit) => tokio::time::timeout(limit, op(attempt)).await.ok(),
                None => Some(op(attempt).await),
            };

            let (timed_out, retry_after) = match outcome {
                Some(Ok(value)) => {
                    permit.success();
                    return Ok(value);
                }
                Some(Err(error)) => {
                    let class = error.class();
                    permit.record(class.into(), || {
                        error.reason().unwrap_or_else(|| class.as_str().to_owned())
                    });
                    if !(class.is_retryable() && call.idempotent) {
                        return Err(CallError::Inner(error));
                    }
                    let retry_after = error.retry_after();
                    last_error = Some(error);
                    (None, retry_after)
                }
                None => {
                    let limit = limit.unwrap_or_default();
                    if cut_by_deadline {
                        drop(permit);
                        return Err(deadline_exceeded(start, last_error));
                    }
                    metrics::counter!(metric::ATTEMPT_TIMEOUTS).increment(1);
                    permit.failure(|| {
                        format!(
                            "attempt timed out after {}",
                            humantime_serde::re::humantime::format_duration(limit)
                        )
                    });
                    if !call.idempotent {
                        return Err(CallError::Timeout { after: limit });
                    }
                    (Some(limit), None)
                }
            };

            last_timeout = timed_out;

            if attempt >= max_attempts {
                return Err(give_up(last_timeout, last_error, false));
            }

            let backoff = inner.backoff.delay(attempt - 1);
            let delay = retry_after.map_or(backoff, |ra| ra.max(backoff));
            if let Some(at) = deadline {
                let fits = match Instant::now()
                    .checked_add(delay)
                    .and_then(|t| t.checked_add(per_attempt.unwrap_or_default()))
                {
                    // A full attempt must fit; without per-attempt timeouts, the retry must at
                    // least start before the deadline.
                    Some(end) if per_attempt.is_some() => end <= at,
                    Some(end) => end < at,
                    None => false,
                };
                if !fits {
                    return Err(deadline_exceeded(start, last_error));
                }
            }

            if !inner.budget.try_withdraw() {
                return Err(give_up(last_timeout, last_error, true));
            }

            tracing::debug!(
                key = call.key,
                attempt,
                delay_ms = delay.as_millis() as u64,
                "retrying"
            );
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The error of a call that stops retrying: the last attempt's timeout or error.
fn give_up<E>(last_timeout: Option<Duration>, last_error: Option<E>, budget: bool) -> CallError<E> {
    match (last_timeout, last_error) {
        (Some(after), _) => CallError::Timeout { after },
        (None, Some(e)) if budget => CallError::BudgetExhausted { last: e },
        (None, Some(e)) => CallError::Inner(e),
        // Unreachable: an attempt that failed left either a timeout or an error.
        (None, None) => CallError::Timeout {
            after: Duration::ZERO,
        },
    }
}

fn deadline_exceeded<E>(start: Instant, last: Option<E>) -> CallError<E> {
    metrics::counter!(metric::DEADLINE_EXCEEDED).increment(1);
    CallError::DeadlineExceeded {
        after: start.elapsed(),
        last,
    }
}
