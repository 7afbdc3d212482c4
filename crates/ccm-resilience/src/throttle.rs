//! [`RefreshThrottle`]: at most one refresh per worker per `min_interval`, never two at once.
//!
//! The interval is measured between the starts of two refreshes. A refresh asked for while one
//! is running gets [`ThrottleError::AlreadyRunning`]; the engine then joins the running one
//! through a [`SingleFlight`](crate::SingleFlight).

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

use crate::config::ThrottleConfig;
use crate::metrics as metric;

/// Why a refresh may not start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ThrottleError {
    /// The last refresh of this key started less than `min_interval` ago.
    #[error("refreshed too recently, next refresh allowed in {retry_in:?}")]
    Throttled {
        /// Time until a refresh is allowed.
        retry_in: Duration,
    },
    /// A refresh of this key is running now.
    #[error("a refresh is already running")]
    AlreadyRunning,
}

/// The per-key refresh throttle. Cheap to clone (shared state).
#[derive(Debug)]
pub struct RefreshThrottle<K: Eq + Hash> {
    inner: Arc<Inner<K>>,
}

impl<K: Eq + Hash> Clone for RefreshThrottle<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

#[derive(Debug)]
struct Inner<K: Eq + Hash> {
    enabled: bool,
    min_interval: Duration,
    entries: DashMap<K, Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    last_start: Option<Instant>,
    running: bool,
}

/// A running refresh; the key counts as running until this is dropped.
#[derive(Debug)]
#[must_use = "the refresh counts as running until the guard is dropped"]
pub struct ThrottleGuard<K: Eq + Hash + Clone> {
    slot: Option<(Arc<Inner<K>>, K, Option<Instant>)>,
}

impl<K: Eq + Hash + Clone> RefreshThrottle<K> {
    /// A throttle as configured.
    pub fn new(config: &ThrottleConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                enabled: config.enabled,
                min_interval: config.min_interval,
                entries: DashMap::new(),
            }),
        }
    }

    /// A throttle with this interval.
    pub fn with_interval(min_interval: Duration) -> Self {
        Self::new(&ThrottleConfig {
            enabled: true,
            min_interval,
        })
    }

    /// Starts a refresh of `key` if allowed; the guard marks it running until dropped.
    pub fn try_acquire(&self, key: K) -> Result<ThrottleGuard<K>, ThrottleError> {
        let inner = &self.inner;
        if !inner.enabled {
            return Ok(ThrottleGuard { slot: None });
        }
        let now = Instant::now();
        let mut entry = inner.entries.entry(key.clone()).or_insert(Entry {
            last_start: None,
            running: false,
        });
        if entry.running {
            drop(entry);
            metrics::counter!(metric::REFRESH_THROTTLED, "reason" => "running").increment(1);
            return Err(ThrottleError::AlreadyRunning);
        }
        if let Some(last) = entry.last_start {
            let next = last + inner.min_interval;
            if now < next {
                drop(entry);
                metrics::counter!(metric::REFRESH_THROTTLED, "reason" => "interval").increment(1);
                return Err(ThrottleError::Throttled {
                    retry_in: next - now,
                });
            }
        }
        let previous = entry.last_start;
        entry.running = true;
        entry.last_start = Some(now);
        drop(entry);
        Ok(ThrottleGuard {
            slot: Some((Arc::clone(inner), key, previous)),
        })
    }

    /// Whether a refresh of `key` is running now.
    pub fn is_running(&self, key: &K) -> bool {
        self.inner.entries.get(key).is_some_and(|e| e.running)
    }

    /// Forgets `key` (a deleted worker).
    pub fn remove(&self, key: &K) {
        self.inner.entries.remove(key);
    }

    /// Keys known to the throttle.
    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    /// Whether no key is known.
    pub fn is_empty(&self) -> bool {
        self.inner.entries.is_empty()
    }
}

impl<K: Eq + Hash + Clone> ThrottleGuard<K> {
    /// The refresh did not happen after all (e.g. rejected before any call): ends it without
    /// counting it towards the interval.
    pub fn cancel(mut self) {
        if let Some((inner, key, previous)) = self.slot.take()
            && let Some(mut e) = inner.entries.get_mut(&key)
        {
            e.running = false;
            e.last_start = previous;
        }
    }
}

impl<K: Eq + Hash + Clone> Drop for ThrottleGuard<K> {
    fn drop(&mut self) {
        if let Some((inner, key, _)) = self.slot.take()
            && let Some(mut e) = inner.entries.get_mut(&key)
        {
            e.running = false;
        }
    }
}

/// A refresh throttle and a single flight together: the engine's "refresh worker" gate.
///
/// [`refresh`](RefreshGate::refresh) runs the refresh if the throttle allows it, joins the
/// refresh already running for the same key (returning its result), and refuses with
/// [`ThrottleError::Throttled`] if the last refresh started less than `min_interval` ago.
#[derive(Debug)]
pub struct RefreshGate<K: Eq + Hash, V> {
    throttle: RefreshThrottle<K>,
    flights: crate::SingleFlight<K, V>,
}

impl<K: Eq + Hash, V> Clone for RefreshGate<K, V> {
    fn clone(&self) -> Self {
        Self {
            throttle: self.throttle.clone(),
            flights: self.flights.clone(),
        }
    }
}

impl<K, V> RefreshGate<K, V>
where
    K: Eq + Hash + Clone,
    V: Clone,
{
    /// A gate as configured.
    pub fn new(config: &ThrottleConfig) -> Self {
        Self {
            throttle: RefreshThrottle::new(config),
            flights: crate::SingleFlight::new(),
        }
    }

    /// The throttle inside, e.g. to [`remove`](RefreshThrottle::remove) a deleted worker.
    pub fn throttle(&self) -> &RefreshThrottle<K> {
        &self.throttle
    }

    /// Runs `refresh` for `key`, joins the one running, or refuses with
    /// [`ThrottleError::Throttled`] (never with `AlreadyRunning`).
    pub async fn refresh<F>(&self, key: K, refresh: F) -> Result<V, ThrottleError>
    where
        F: std::future::Future<Output = V>,
    {
        // Bounded: each turn either runs, joins, refuses, or saw a run end in between (the
        // next turn then meets the interval of that run).
        for _ in 0..4 {
            match self.throttle.try_acquire(key.clone()) {
                Ok(guard) => {
                    let value = self
                        .flights
                        .run(key, async move {
                            // If this run is cancelled, it does not count towards the interval,
                            // so the callers that joined it can start another at once.
                            let mut unfinished = Unfinished(Some(guard));
                            let value = refresh.await;
                            drop(unfinished.0.take());
                            value
                        })
                        .await;
                    return Ok(value);
                }
                Err(ThrottleError::AlreadyRunning) => {
                    if let Some(value) = self.flights.join(&key).await {
                        return Ok(value);
                    }
                }
                Err(throttled @ ThrottleError::Throttled { .. }) => return Err(throttled),
            }
            tokio::task::yield_now().await;
        }
        // A leader was cancelled again and again: refuse rather than spin.
        Err(ThrottleError::Throttled {
            retry_in: Duration::ZERO,
        })
    }
}

/// Cancels the throttle guard of a refresh dropped before it finished.
struct Unfinished<K: Eq + Hash + Clone>(Option<ThrottleGuard<K>>);

impl<K: Eq + Hash + Clone> Drop for Unfinished<K> {
    fn drop(&mut self) {
        if let Some(guard) = self.0.take() {
            guard.cancel();
        }
    }
}
