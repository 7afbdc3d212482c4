//! [`SingleFlight`]: concurrent callers with the same key share one run of an operation.
//!
//! The first caller (the leader) runs its future; callers that arrive while it runs wait for
//! its result and never poll their own future. Once the run finishes, the next caller starts a
//! new run. If the leader is cancelled, one waiting caller takes over and runs its own future,
//! so waiters never hang. The CML client uses it so that 50 concurrent 401s cause one login.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::metrics as metric;

/// Shares one run per key among concurrent callers. Cheap to clone (shared state).
pub struct SingleFlight<K, V> {
    inner: Arc<Inner<K, V>>,
}

struct Inner<K, V> {
    flights: Mutex<HashMap<K, Flight<V>>>,
    next_id: AtomicU64,
}

struct Flight<V> {
    id: u64,
    result: watch::Receiver<Option<V>>,
}

impl<K, V> Clone for SingleFlight<K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                flights: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
            }),
        }
    }
}

impl<K, V> std::fmt::Debug for SingleFlight<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleFlight")
            .field("in_flight", &self.inner.flights.lock().len())
            .finish()
    }
}

/// Removes the leader's flight when the leader finishes or is cancelled.
struct LeaderGuard<'a, K: Eq + Hash, V> {
    inner: &'a Inner<K, V>,
    key: Option<K>,
    id: u64,
}

impl<K: Eq + Hash, V> Drop for LeaderGuard<'_, K, V> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut flights = self.inner.flights.lock();
            if flights.get(&key).is_some_and(|f| f.id == self.id) {
                flights.remove(&key);
            }
        }
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Eq + Hash + Clone,
    V: Clone,
{
    /// An empty group.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `fut` for `key`, or, if a run for `key` is in progress, waits for that run and
    /// returns a clone of its result (`fut` is then dropped unpolled).
    pub async fn run<F>(&self, key: K, fut: F) -> V
    where
        F: Future<Output = V>,
    {
        let inner = &*self.inner;
        let (sender, guard) = loop {
            let waiting = {
                let mut flights = inner.flights.lock();
                match flights.get(&key) {
                    Some(flight) => flight.result.clone(),
                    None => {
                        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
                        let (sender, result) = watch::channel(None);
                        flights.insert(key.clone(), Flight { id, result });
                        break (
                            sender,
                            LeaderGuard {
                                inner,
                                key: Some(key.clone()),
                                id,
                            },
                        );
                    }
                }
            };
            metrics::counter!(metric::SINGLE_FLIGHT_JOINED).increment(1);
            let mut waiting = waiting;
            if let Ok(value) = waiting.wait_for(Option::is_some).await
                && let Some(value) = value.as_ref()
            {
                return value.clone();
            }
            // The leader was cancelled before it finished: try to lead.
        };
        let value = fut.await;
        sender.send_replace(Some(value.clone()));
        drop(guard);
        value
    }

    /// Waits for the run in progress for `key` and returns a clone of its result; `None` at
    /// once if there is none, or if its leader is cancelled before finishing.
    pub async fn join(&self, key: &K) -> Option<V> {
        let mut waiting = {
            let flights = self.inner.flights.lock();
            flights.get(key)?.result.clone()
        };
        metrics::counter!(metric::SINGLE_FLIGHT_JOINED).increment(1);
        let value = waiting.wait_for(Option::is_some).await.ok()?;
        value.as_ref().cloned()
    }

    /// Keys with a run in progress.
    pub fn in_flight(&self) -> usize {
        self.inner.flights.lock().len()
    }

    /// Whether a run for `key` is in progress.
    pub fn is_running(&self, key: &K) -> bool {
        self.inner.flights.lock().contains_key(key)
    }
}
