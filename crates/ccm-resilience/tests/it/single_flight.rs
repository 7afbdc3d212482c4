use std::time::Duration;

use ccm_resilience::SingleFlight;
use futures::future::join_all;

use crate::support::{Counter, millis};

#[tokio::test(start_paused = true)]
async fn concurrent_callers_with_the_same_key_should_share_one_run() {
    let sf: SingleFlight<&str, u32> = SingleFlight::new();
    let runs = Counter::default();
    let callers = (0..50).map(|_| {
        let (sf, runs) = (sf.clone(), runs.clone());
        tokio::spawn(async move {
            sf.run("login", async {
                let n = runs.hit();
                tokio::time::sleep(millis(100)).await;
                n * 10
            })
            .await
        })
    });
    let results: Vec<_> = join_all(callers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(runs.get(), 1, "50 concurrent 401s cause one login");
    assert!(results.iter().all(|&v| v == 10));
    assert_eq!(sf.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn different_keys_should_run_separately() {
    let sf: SingleFlight<u32, u32> = SingleFlight::new();
    let runs = Counter::default();
    let callers = (0..20u32).map(|i| {
        let (sf, runs) = (sf.clone(), runs.clone());
        tokio::spawn(async move {
            sf.run(i % 4, async move {
                runs.hit();
                tokio::time::sleep(millis(10)).await;
                i % 4
            })
            .await
        })
    });
    let results: Vec<_> = join_all(callers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(runs.get(), 4);
    for (i, v) in results.into_iter().enumerate() {
        assert_eq!(v, i as u32 % 4);
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_after_the_run_finished_should_start_a_new_run() {
    let sf: SingleFlight<&str, u32> = SingleFlight::new();
    let runs = Counter::default();
    let a = sf.run("k", async { runs.hit() }).await;
    let b = sf.run("k", async { runs.hit() }).await;
    assert_eq!((a, b), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_leader_should_hand_the_run_to_a_waiter() {
    let sf: SingleFlight<&str, &str> = SingleFlight::new();
    let leader = tokio::spawn({
        let sf = sf.clone();
        async move {
            sf.run("k", async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "leader"
            })
            .await
        }
    });
    tokio::task::yield_now().await;
    assert!(sf.is_running(&"k"));
    let followers: Vec<_> = (0..5)
        .map(|_| {
            let sf = sf.clone();
            tokio::spawn(async move {
                sf.run("k", async {
                    tokio::time::sleep(millis(10)).await;
                    "follower"
                })
                .await
            })
        })
        .collect();
    tokio::task::yield_now().await;
    leader.abort();
    let results: Vec<_> = join_all(followers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(results, vec!["follower"; 5], "waiters never hang");
    assert!(!sf.is_running(&"k"));
}
