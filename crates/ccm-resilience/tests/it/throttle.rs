use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};

use ccm_resilience::{RefreshThrottle, ThrottleConfig, ThrottleError};

use crate::support::secs;

#[tokio::test(start_paused = true)]
async fn a_second_refresh_within_the_interval_should_be_throttled() {
    let t = RefreshThrottle::with_interval(secs(10));
    drop(t.try_acquire("w1").unwrap());
    tokio::time::advance(secs(4)).await;
    assert_eq!(
        t.try_acquire("w1").unwrap_err(),
        ThrottleError::Throttled { retry_in: secs(6) }
    );
    // Other workers are independent.
    assert!(t.try_acquire("w2").is_ok());
    tokio::time::advance(secs(6)).await;
    assert!(t.try_acquire("w1").is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_refresh_asked_for_while_one_runs_should_be_told_it_is_running() {
    let t = RefreshThrottle::with_interval(secs(10));
    let running = t.try_acquire(1u32).unwrap();
    assert!(t.is_running(&1));
    tokio::time::advance(secs(30)).await;
    assert_eq!(t.try_acquire(1).unwrap_err(), ThrottleError::AlreadyRunning);
    drop(running);
    assert!(!t.is_running(&1));
    // The interval counts from the start of the last refresh, 30 s ago.
    assert!(t.try_acquire(1).is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_refresh_should_not_count_towards_the_interval() {
    let t = RefreshThrottle::with_interval(secs(10));
    drop(t.try_acquire("w").unwrap());
    tokio::time::advance(secs(10)).await;
    t.try_acquire("w").unwrap().cancel();
    tokio::time::advance(secs(1)).await;
    // Measured from the refresh that happened (11 s ago), not the cancelled one.
    assert!(t.try_acquire("w").is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_disabled_throttle_should_never_refuse() {
    let t = RefreshThrottle::new(&ThrottleConfig {
        enabled: false,
        min_interval: secs(10),
    });
    let _a = t.try_acquire("w").unwrap();
    let _b = t.try_acquire("w").unwrap();
    assert!(t.is_empty());
}

#[test]
fn exactly_one_of_many_concurrent_requests_should_start_a_refresh() {
    const THREADS: usize = 8;
    let t = RefreshThrottle::with_interval(secs(10));
    let started = AtomicUsize::new(0);
    let guards = Mutex::new(Vec::new());
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                barrier.wait();
                for key in 0..500u32 {
                    if let Ok(g) = t.try_acquire(key) {
                        started.fetch_add(1, Ordering::Relaxed);
                        guards.lock().unwrap().push(g);
                    }
                }
            });
        }
    });
    assert_eq!(started.into_inner(), 500, "one refresh per key, never two");
    assert_eq!(t.len(), 500);
    drop(guards);
    t.remove(&0);
    assert_eq!(t.len(), 499);
}

mod gate {
    use ccm_resilience::{RefreshGate, ThrottleConfig, ThrottleError};
    use futures::future::join_all;

    use crate::support::{Counter, millis, secs};

    fn gate() -> RefreshGate<u32, u32> {
        RefreshGate::new(&ThrottleConfig::default())
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_refreshes_of_one_worker_should_join_one_run() {
        let g = gate();
        let runs = Counter::default();
        let tasks = (0..30).map(|_| {
            let (g, runs) = (g.clone(), runs.clone());
            tokio::spawn(async move {
                g.refresh(7, async {
                    tokio::time::sleep(millis(200)).await;
                    runs.hit()
                })
                .await
            })
        });
        let results: Vec<_> = join_all(tasks)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(runs.get(), 1);
        assert!(results.iter().all(|r| *r == Ok(1)), "{results:?}");
        // Finished 200 ms ago: throttled until 10 s after its start.
        assert_eq!(
            g.refresh(7, async { 0 }).await,
            Err(ThrottleError::Throttled {
                retry_in: secs(10) - millis(200)
            })
        );
        tokio::time::advance(secs(10)).await;
        assert_eq!(g.refresh(7, async { 2 }).await, Ok(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_refresh_should_let_its_joiners_start_another() {
        let g = gate();
        let leader = tokio::spawn({
            let g = g.clone();
            async move {
                g.refresh(1, async {
                    tokio::time::sleep(secs(3600)).await;
                    0
                })
                .await
            }
        });
        tokio::task::yield_now().await;
        let joiner = tokio::spawn({
            let g = g.clone();
            async move { g.refresh(1, async { 5 }).await }
        });
        tokio::task::yield_now().await;
        leader.abort();
        assert_eq!(joiner.await.unwrap(), Ok(5));
    }
}
