use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ccm_resilience::{
    Bulkhead, BulkheadConfig, BulkheadFull, RecordingObserver, Resilience, ResilienceConfig,
    ResilienceEvent,
};
use futures::future::join_all;

use crate::support::millis;

fn bulkhead(max_concurrent: usize, max_queue: usize) -> (Bulkhead, Arc<RecordingObserver>) {
    let obs = RecordingObserver::new();
    let b = Bulkhead::new(
        "labs",
        &BulkheadConfig::new(max_concurrent, max_queue),
        obs.clone(),
    );
    (b, obs)
}

async fn settle(b: &Bulkhead, queued: usize) {
    for _ in 0..1_000 {
        if b.queued() == queued {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("queue never reached {queued} (is {})", b.queued());
}

#[tokio::test(start_paused = true)]
async fn bulkhead_should_never_exceed_max_concurrent_under_load() {
    let (b, _) = bulkhead(4, 1_000);
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let tasks = (0..200).map(|i| {
        let (b, running, peak) = (b.clone(), running.clone(), peak.clone());
        tokio::spawn(async move {
            let _slot = b.acquire().await.unwrap();
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(millis(5 + i % 7)).await;
            running.fetch_sub(1, Ordering::SeqCst);
        })
    });
    for t in join_all(tasks).await {
        t.unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 4);
    assert_eq!(b.in_flight(), 0);
    assert_eq!(b.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_should_reject_at_once_and_report_one_event() {
    let (b, obs) = bulkhead(2, 3);
    let held = [b.acquire().await.unwrap(), b.acquire().await.unwrap()];
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.acquire().await.map(drop) })
        })
        .collect();
    settle(&b, 3).await;
    assert_eq!(b.in_flight(), 2);

    for _ in 0..5 {
        assert_eq!(
            b.acquire().await.unwrap_err(),
            BulkheadFull {
                name: "labs".into()
            }
        );
    }
    assert_eq!(
        obs.events(),
        vec![ResilienceEvent::BulkheadRejected {
            name: "labs".into(),
            max_concurrent: 2,
            max_queue: 3
        }],
        "a run of rejections is one event"
    );

    drop(held);
    for w in join_all(waiters).await {
        assert_eq!(w.unwrap(), Ok(()));
    }
    let snap = b.snapshot();
    assert_eq!((snap.in_flight, snap.queued), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_should_leave_the_queue() {
    let (b, _) = bulkhead(1, 1);
    let held = b.acquire().await.unwrap();
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.acquire().await.map(drop) }
    });
    settle(&b, 1).await;
    assert!(b.acquire().await.is_err());
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(b.queued(), 0);
    // The freed queue place is usable again.
    let next = tokio::spawn({
        let b = b.clone();
        async move { b.acquire().await.map(drop) }
    });
    settle(&b, 1).await;
    drop(held);
    assert_eq!(next.await.unwrap(), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn a_zero_queue_should_reject_whenever_all_slots_are_taken() {
    let (b, _) = bulkhead(1, 0);
    let held = b.acquire().await.unwrap();
    assert!(b.try_acquire().is_err());
    assert!(b.acquire().await.is_err());
    drop(held);
    assert!(b.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn disabled_bulkheads_should_count_but_never_limit() {
    let r = Resilience::disabled();
    let b = r.bulkhead(ccm_resilience::bulkhead::AWS);
    let permits: Vec<_> = futures::future::join_all((0..10_000).map(|_| b.acquire()))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(b.in_flight(), 10_000);
    drop(permits);
    assert_eq!(b.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_stack_should_offer_the_three_configured_bulkheads() {
    let r = Resilience::new(&ResilienceConfig::default(), RecordingObserver::new());
    let mut names: Vec<_> = r
        .bulkheads()
        .into_iter()
        .map(|s| (s.name, s.max_concurrent, s.max_queue))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("aws".to_owned(), 16, 1_000),
            ("cml_poll".to_owned(), 512, 10_000),
            ("labs".to_owned(), 32, 1_000)
        ]
    );
    for id in ccm_resilience::BulkheadId::ALL {
        assert_eq!(r.bulkhead(id).name(), id.as_str(), "{id:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_caller_taking_several_slots_should_leave_only_the_rest_to_others() {
    let (b, _) = bulkhead(4, 10);
    // Three slots for one caller: one caller in flight, one slot left.
    let wide = b.acquire_many(3).await.unwrap();
    assert_eq!(b.in_flight(), 1);
    let narrow = b.acquire_many(1).await.unwrap();
    assert!(b.try_acquire().is_err(), "all four slots are taken");
    // A caller wanting more slots than exist is clamped to all of them, and waits for them.
    let b2 = b.clone();
    let all = tokio::spawn(async move { b2.acquire_many(100).await.map(drop) });
    settle(&b, 1).await;
    drop(wide);
    tokio::task::yield_now().await;
    assert_eq!(b.queued(), 1, "three slots free are not four");
    drop(narrow);
    all.await.unwrap().unwrap();
    assert_eq!((b.in_flight(), b.queued()), (0, 0));
}
