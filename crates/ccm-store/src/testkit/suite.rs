//! The behavioural suite of the store: every case takes a [`Backend`] and must pass on each
//! (instantiated per backend by [`crate::store_suite!`]). CRUD and filters, optimistic
//! concurrency under contention, uniqueness under concurrency, labs, sessions, settings
//! versions, the event log's order, metrics bucketing and pruning, schema versions and the
//! golden fixtures.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ccm_domain::lab::LabState;
use ccm_domain::worker::{EndpointPolicy, InstanceObservation};
use ccm_domain::{
    Actor, CheckStatus, Ec2State, Event, EventKind, InstanceId, LabId, LabRecord, Region,
    RuntimeSettings, ServiceStatus, Worker, WorkerId,
};
use chrono::{DateTime, TimeZone, Utc};

use super::{Backend, RawTable, TestStore};
use crate::{
    EventQuery, MetricsSample, Page, StoreConfig, StoreError, WorkerFilter, WorkerSort, WorkerStamp,
};

/// The golden fixtures: documents of the shapes stored before schema versions existed (so
/// version 1). They must load in every future version; never edit them.
pub const WORKER_FIXTURE: &str = include_str!("../../tests/fixtures/worker-v1.json");
/// A version-1 worker as stored since image owners and EC2 status checks are recorded (both
/// optional fields: no upgrade step). Never edit it either.
pub const WORKER_EC2_STATUS_FIXTURE: &str =
    include_str!("../../tests/fixtures/worker-v1-ec2-status.json");
/// A version-1 worker as stored since the idle economics are recorded (activity source,
/// interaction and running nodes, snooze, schedule pauses and resumes, stopped seconds by
/// week and reason: all defaulted when absent, so no upgrade step). Never edit it either.
pub const WORKER_ECONOMICS_FIXTURE: &str =
    include_str!("../../tests/fixtures/worker-v1-economics.json");
/// A version-2 worker: breaks and absences as `[from, length]` pairs (the version-1
/// economics worker with breaks, another id and instance). Never edit it either.
pub const WORKER_V2_BREAKS_FIXTURE: &str =
    include_str!("../../tests/fixtures/worker-v2-breaks.json");
/// See [`WORKER_FIXTURE`].
pub const SETTINGS_FIXTURE: &str = include_str!("../../tests/fixtures/settings-v1.json");
/// See [`WORKER_FIXTURE`].
pub const SESSION_FIXTURE: &str = include_str!("../../tests/fixtures/session-v1.json");

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

async fn open(backend: &dyn Backend) -> Arc<dyn TestStore> {
    backend.fresh(StoreConfig::default()).await.open().await
}

fn instance(n: u32) -> InstanceId {
    InstanceId::parse(&format!("i-{n:017x}")).unwrap()
}

fn worker(n: u32, name: &str, region: &str, state: Ec2State) -> Worker {
    let obs = InstanceObservation {
        instance_id: instance(n),
        state,
        instance_type: None,
        ami_id: None,
        public_ip: None,
        private_ip: None,
        tags: BTreeMap::from([("Name".to_owned(), name.to_owned())]),
        launched_at: None,
        detailed_monitoring: false,
        state_reason: None,
    };
    Worker::import(
        &obs,
        Region::parse(region).unwrap(),
        &EndpointPolicy::default(),
        Actor::user("t"),
        t(i64::from(n)),
    )
    .0
}

fn names(p: Page<Worker>) -> Vec<String> {
    p.items.into_iter().map(|w| w.name).collect()
}

/// `list`, checked against `list_stamps`: the same total, ids, order and versions.
async fn listed(store: &dyn TestStore, f: &WorkerFilter) -> Page<Worker> {
    let page = store.list(f).await.unwrap();
    let stamps = store.list_stamps(f).await.unwrap();
    assert_eq!(stamps.total, page.total, "{f:?}");
    let expected: Vec<WorkerStamp> = page
        .items
        .iter()
        .map(|w| WorkerStamp {
            id: w.id,
            version: w.version,
        })
        .collect();
    assert_eq!(stamps.items, expected, "{f:?}");
    page
}

/// Every combination of the indexed filters' totals, against the stored workers counted here.
async fn check_totals(store: &dyn TestStore, when: &str) {
    let all = store.list(&WorkerFilter::default()).await.unwrap().items;
    let regions: [&[&str]; 4] = [
        &[],
        &["eu-west-1"],
        &["us-east-1"],
        &["eu-west-1", "us-east-1"],
    ];
    let states: [&[&str]; 3] = [&[], &["running"], &["running", "stopped"]];
    let services: [&[&str]; 2] = [&[], &["unknown"]];
    for r in regions {
        for s in states {
            for v in services {
                let f = WorkerFilter {
                    regions: r.iter().map(|x| (*x).to_owned()).collect(),
                    ec2_states: s.iter().map(|x| (*x).to_owned()).collect(),
                    service_statuses: v.iter().map(|x| (*x).to_owned()).collect(),
                    limit: 1,
                    ..Default::default()
                };
                let expected = all
                    .iter()
                    .filter(|w| r.is_empty() || r.contains(&w.region.as_str()))
                    .filter(|w| s.is_empty() || s.contains(&w.ec2_state.as_str()))
                    .filter(|w| v.is_empty() || v.contains(&w.service.status.as_str()))
                    .count() as u64;
                assert_eq!(listed(store, &f).await.total, expected, "{when}: {f:?}");
            }
        }
    }
}

/// Saves `workers` as one batch without events (`save_changes`); every row must be saved.
async fn save_batch(store: &dyn TestStore, workers: Vec<Worker>) {
    let writes: Vec<crate::WorkerWrite> = workers
        .into_iter()
        .map(|worker| crate::WorkerWrite {
            worker,
            events: Vec::new(),
            fence: None,
        })
        .collect();
    for outcome in store.save_changes(&writes).await.unwrap() {
        assert!(
            matches!(outcome, crate::WriteOutcome::Saved { .. }),
            "{outcome:?}"
        );
    }
}

/// A page's total follows every write that moves a worker between filter values: inserts,
/// single and batched updates, imports that found their instance, deletes.
pub async fn list_totals_should_follow_every_write(backend: &dyn Backend) {
    let store = open(backend).await;
    let mut saved = Vec::new();
    for (n, region, state) in [
        (1, "eu-west-1", Ec2State::Running),
        (2, "eu-west-1", Ec2State::Stopped),
        (3, "us-east-1", Ec2State::Running),
        (4, "us-east-1", Ec2State::Running),
        (5, "us-east-1", Ec2State::Terminated),
    ] {
        saved.push(
            store
                .insert(&worker(n, &format!("w{n}"), region, state))
                .await
                .unwrap(),
        );
    }
    check_totals(&*store, "inserted").await;

    let (again, inserted) = store
        .insert_or_get(&worker(3, "w3", "us-east-1", Ec2State::Running))
        .await
        .unwrap();
    assert!(!inserted);
    assert_eq!(again.id, saved[2].id);
    check_totals(&*store, "an import of a known instance").await;

    let mut w = saved[0].clone();
    w.ec2_state = Ec2State::Stopped;
    saved[0] = store.update(&w).await.unwrap();
    check_totals(&*store, "one state change").await;

    let mut w = saved[1].clone();
    w.name = "renamed only".into();
    saved[1] = store.update(&w).await.unwrap();
    check_totals(&*store, "a change of no filter column").await;

    let moved = saved[2..]
        .iter()
        .map(|w| {
            let mut changed = w.clone();
            changed.ec2_state = Ec2State::Stopped;
            changed.service.status = ServiceStatus::Ready;
            changed
        })
        .collect();
    save_batch(&*store, moved).await;
    check_totals(&*store, "a batch").await;

    assert!(store.delete(saved[0].id).await.unwrap());
    check_totals(&*store, "a delete").await;
}

/// Four writers move their workers between states and services at once, in opposite orders,
/// batched and row by row: no deadlock, and every total is exact afterwards.
pub async fn concurrent_moves_between_states_should_keep_the_totals_exact(backend: &dyn Backend) {
    let store = open(backend).await;
    let mut ids = Vec::new();
    for n in 0..24 {
        let region = if n % 2 == 0 { "eu-west-1" } else { "us-east-1" };
        let w = worker(n, &format!("w{n}"), region, Ec2State::Running);
        ids.push(store.insert(&w).await.unwrap().id);
    }
    let writers: Vec<_> = ids
        .chunks(6)
        .enumerate()
        .map(|(writer, own)| {
            let store = store.clone();
            let own = own.to_vec();
            tokio::spawn(async move {
                for round in 0..10 {
                    let mut batch = store.get_many(&own).await.unwrap();
                    if (writer + round) % 2 == 1 {
                        batch.reverse();
                    }
                    for (i, w) in batch.iter_mut().enumerate() {
                        w.ec2_state = if (round + i) % 3 == 0 {
                            Ec2State::Stopped
                        } else {
                            Ec2State::Running
                        };
                        w.service.status = if (round + writer) % 2 == 0 {
                            ServiceStatus::Ready
                        } else {
                            ServiceStatus::Unknown
                        };
                    }
                    if round % 2 == 0 {
                        save_batch(&*store, batch).await;
                    } else {
                        for r in store.update_many(&batch).await.unwrap() {
                            r.unwrap();
                        }
                    }
                }
            })
        })
        .collect();
    for w in writers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("moves deadlocked")
            .unwrap();
    }
    check_totals(&*store, "after concurrent moves").await;
}

/// Stores a golden worker fixture as it is (through the raw path) and reads it back through
/// the store: the fixture as JSON and the worker.
async fn load_fixture(store: &dyn TestStore, fixture: &str) -> (serde_json::Value, Worker) {
    let raw: serde_json::Value = serde_json::from_str(fixture).unwrap();
    store.put_raw_worker(fixture).await.unwrap();
    let id: WorkerId = raw["id"].as_str().unwrap().parse().unwrap();
    let worker = store.get(id).await.unwrap().expect("the fixture worker");
    (raw, worker)
}

/// Get, get_many, get_by_instance, list (and `list_stamps`) with every filter, sort and paging, delete.
pub async fn workers_should_round_trip_and_list_with_filters_sort_and_pages(backend: &dyn Backend) {
    let store = open(backend).await;
    let specs = [
        (1, "alpha", "eu-west-1", Ec2State::Running),
        (2, "bravo", "eu-west-1", Ec2State::Stopped),
        (3, "charlie", "us-east-1", Ec2State::Running),
        (4, "delta_50%", "us-east-1", Ec2State::Terminated),
        (5, "Echo", "us-east-1", Ec2State::Stopped),
    ];
    for (n, name, region, state) in specs {
        let saved = store.insert(&worker(n, name, region, state)).await.unwrap();
        assert_eq!(saved.version, 1);
    }
    let w = store.get_by_instance(&instance(3)).await.unwrap().unwrap();
    assert_eq!(w.name, "charlie");
    assert_eq!(store.get(w.id).await.unwrap().unwrap(), w);
    assert!(store.get(WorkerId::new()).await.unwrap().is_none());
    let some = store.get_many(&[w.id, WorkerId::new()]).await.unwrap();
    assert_eq!(some, vec![w.clone()]);
    assert!(store.get_many(&[]).await.unwrap().is_empty());

    let all = listed(&*store, &WorkerFilter::default()).await;
    assert_eq!(all.total, 5);
    assert_eq!(
        names(all),
        ["Echo", "alpha", "bravo", "charlie", "delta_50%"],
        "names sort bytewise on every backend"
    );

    let f = WorkerFilter {
        regions: vec!["us-east-1".into()],
        ..Default::default()
    };
    assert_eq!(
        names(listed(&*store, &f).await),
        ["Echo", "charlie", "delta_50%"]
    );
    let f = WorkerFilter {
        ec2_states: vec!["running".into()],
        descending: true,
        ..Default::default()
    };
    assert_eq!(names(listed(&*store, &f).await), ["charlie", "alpha"]);
    let f = WorkerFilter {
        text: Some("RAV".into()),
        ..Default::default()
    };
    assert_eq!(names(listed(&*store, &f).await), ["bravo"]);
    let f = WorkerFilter {
        text: Some("echo".into()),
        ..Default::default()
    };
    assert_eq!(
        names(listed(&*store, &f).await),
        ["Echo"],
        "text matches ignore case"
    );
    let f = WorkerFilter {
        text: Some("50%".into()),
        ..Default::default()
    };
    assert_eq!(
        names(listed(&*store, &f).await),
        ["delta_50%"],
        "LIKE wildcards in the text are literal"
    );
    let f = WorkerFilter {
        text: Some("a_5".into()),
        ..Default::default()
    };
    assert_eq!(names(listed(&*store, &f).await), ["delta_50%"]);
    let f = WorkerFilter {
        text: Some(format!("{:x}", 3)),
        ..Default::default()
    };
    assert!(
        names(listed(&*store, &f).await).contains(&"charlie".to_owned()),
        "instance ids match"
    );
    let f = WorkerFilter {
        service_statuses: vec![ServiceStatus::Unknown.as_str().into()],
        limit: 2,
        offset: 1,
        sort: WorkerSort::Created,
        ..Default::default()
    };
    let page = listed(&*store, &f).await;
    assert_eq!(page.total, 5);
    assert_eq!(names(page), ["bravo", "charlie"]);
    let f = WorkerFilter {
        offset: 3,
        sort: WorkerSort::Created,
        ..Default::default()
    };
    assert_eq!(
        names(listed(&*store, &f).await),
        ["delta_50%", "Echo"],
        "an offset without a limit skips rows"
    );
    let f = WorkerFilter {
        ids: Some(vec![]),
        ..Default::default()
    };
    assert_eq!(listed(&*store, &f).await.total, 0);
    let f = WorkerFilter {
        ids: Some(vec![w.id]),
        ..Default::default()
    };
    assert_eq!(names(listed(&*store, &f).await), ["charlie"]);
    let updated = store.update(&w).await.unwrap();
    let stamps = store.list_stamps(&f).await.unwrap();
    assert_eq!(
        stamps.items,
        [WorkerStamp {
            id: w.id,
            version: updated.version
        }],
        "a stamp carries the committed version"
    );
    assert_eq!(updated.version, 2);

    assert!(store.delete(w.id).await.unwrap());
    assert!(!store.delete(w.id).await.unwrap());
}

/// A stale write is a conflict naming both versions; a write to a deleted worker too.
pub async fn a_stale_update_should_conflict_and_the_helper_should_retry(backend: &dyn Backend) {
    let store = open(backend).await;
    let w = store
        .insert(&worker(1, "a", "eu-west-1", Ec2State::Running))
        .await
        .unwrap();
    let mut first = w.clone();
    let mut second = w.clone();
    first.name = "first".into();
    second.name = "second".into();
    let saved = store.update(&first).await.unwrap();
    assert_eq!(saved.version, 2);
    assert_eq!(store.get(w.id).await.unwrap().unwrap(), saved);
    match store.update(&second).await {
        Err(StoreError::Conflict {
            id,
            expected: 1,
            found: Some(2),
        }) => assert_eq!(id, w.id),
        other => panic!("expected a conflict, got {other:?}"),
    }
    store.delete(w.id).await.unwrap();
    assert!(matches!(
        store.update(&saved).await,
        Err(StoreError::Conflict { found: None, .. })
    ));
}

/// 16 concurrent read-modify-write cycles through `update_worker`: none is lost.
pub async fn concurrent_read_modify_writes_should_lose_no_update(backend: &dyn Backend) {
    let store = open(backend).await;
    let w = store
        .insert(&worker(2, "counter", "eu-west-1", Ec2State::Running))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                crate::update_worker::<_, _, _, std::convert::Infallible>(
                    store.as_ref(),
                    w.id,
                    |w| {
                        let n: u32 = w.tags.get("n").and_then(|v| v.parse().ok()).unwrap_or(0);
                        w.tags.insert("n".into(), (n + 1).to_string());
                        w.tags.insert(format!("t{i}"), "x".into());
                        Ok(())
                    },
                )
                .await
            })
        })
        .collect();
    let mut failures = 0;
    for task in tasks {
        if task.await.unwrap().is_err() {
            failures += 1;
        }
    }
    let w = store.get(w.id).await.unwrap().unwrap();
    let n: u32 = w.tags["n"].parse().unwrap();
    assert_eq!(
        n + failures,
        16,
        "every successful update is counted exactly once"
    );
    assert_eq!(w.version, 1 + u64::from(n));
    assert_eq!(
        w.tags.keys().filter(|k| k.starts_with('t')).count() as u32,
        n,
        "the tags of exactly the successful updates are there"
    );
    // A writer conflicts only because another one saved in between, so one that gave up
    // after every attempt saw at least that many others succeed.
    assert!(
        failures == 0 || n >= crate::UPDATE_ATTEMPTS,
        "{failures} gave up, but only {n} updates were saved"
    );
}

/// `save_changes` stores each worker with its events in one transaction: saved rows get their
/// events (with positions, transient ones unstored), a stale or duplicate row fails alone and
/// leaves no event behind.
pub async fn saved_changes_should_carry_their_events_and_fail_row_by_row(backend: &dyn Backend) {
    let store = open(backend).await;
    let a = store
        .insert(&worker(1, "a", "eu-west-1", Ec2State::Running))
        .await
        .unwrap();
    let b = store
        .insert(&worker(2, "b", "eu-west-1", Ec2State::Running))
        .await
        .unwrap();
    let c = store
        .insert(&worker(3, "c", "eu-west-1", Ec2State::Running))
        .await
        .unwrap();
    let before = store.last_seq().await.unwrap();
    let event = |w: &Worker| {
        Event::new(
            "/test",
            Some(w.id),
            EventKind::WorkerDeleted {
                by: Actor::user("t"),
            },
            t(10),
        )
    };
    let mut a2 = a.clone();
    a2.name = "a2".into();
    let stale = {
        let mut b1 = b.clone();
        b1.version = 0; // never current
        b1
    };
    let mut dup = c.clone();
    dup.instance_id = Some(instance(1)); // a's instance: a uniqueness rule
    let writes = [
        crate::WorkerWrite {
            worker: a2,
            events: vec![event(&a), event(&a)],
            fence: None,
        },
        crate::WorkerWrite {
            worker: stale,
            events: vec![event(&b)],
            fence: None,
        },
        crate::WorkerWrite {
            worker: dup,
            events: vec![event(&c)],
            fence: None,
        },
    ];
    let out = store.save_changes(&writes).await.unwrap();
    assert_eq!(out.len(), 3);
    match &out[0] {
        crate::WriteOutcome::Saved { worker, seqs } => {
            assert_eq!(worker.version, 2);
            assert_eq!(seqs.len(), 2);
            assert!(seqs.iter().all(|s| s.is_some_and(|s| s > before)));
        }
        other => panic!("the clean row should be saved: {other:?}"),
    }
    assert!(
        matches!(
            &out[1],
            crate::WriteOutcome::Failed(StoreError::Conflict { .. })
        ),
        "{:?}",
        out[1]
    );
    assert!(
        matches!(
            &out[2],
            crate::WriteOutcome::Failed(StoreError::Duplicate { .. })
        ),
        "{:?}",
        out[2]
    );
    let logged = store
        .read(&EventQuery {
            after: Some(before),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        logged.len(),
        2,
        "only the saved row's events are in the log"
    );
    assert!(
        logged
            .iter()
            .all(|e| e.event.subject.as_deref() == Some(a.id.to_string().as_str()))
    );
    assert_eq!(store.get(a.id).await.unwrap().unwrap().name, "a2");
    assert_eq!(store.get(c.id).await.unwrap().unwrap().version, 1);
    assert!(store.save_changes(&[]).await.unwrap().is_empty());
}

/// A save larger than one statement carries (the SQLite writer batches up to 500 rows): every
/// row is saved, and the events get positions in the order of the writes and of each write's
/// events, as the log then reads them.
pub async fn a_large_save_should_keep_every_row_and_its_events_in_order(backend: &dyn Backend) {
    let store = open(backend).await;
    let mut workers = Vec::new();
    for n in 0..1_200 {
        let w = worker(n, &format!("w{n:04}"), "eu-west-1", Ec2State::Running);
        workers.push(store.insert(&w).await.unwrap());
    }
    let before = store.last_seq().await.unwrap();
    let writes: Vec<crate::WorkerWrite> = workers
        .iter()
        .map(|w| {
            let mut changed = w.clone();
            changed.name = format!("{}-2", w.name);
            let event = |minute| {
                Event::new(
                    "/test",
                    Some(w.id),
                    EventKind::WorkerDeleted {
                        by: Actor::user("t"),
                    },
                    t(minute),
                )
            };
            crate::WorkerWrite {
                worker: changed,
                events: vec![event(1), event(2)],
                fence: None,
            }
        })
        .collect();
    let out = store.save_changes(&writes).await.unwrap();
    let mut seqs = Vec::new();
    for (write, outcome) in writes.iter().zip(&out) {
        match outcome {
            crate::WriteOutcome::Saved { worker, seqs: s } => {
                assert_eq!(worker.version, 2);
                assert_eq!(worker.name, write.worker.name);
                seqs.extend(s.iter().map(|s| s.expect("a stored event has a position")));
            }
            other => panic!("every row should be saved: {other:?}"),
        }
    }
    assert_eq!(seqs.len(), 2_400);
    assert!(
        seqs.windows(2).all(|p| p[0] < p[1]) && seqs[0] > before,
        "positions follow the writes' order"
    );
    let logged = store
        .read(&EventQuery {
            after: Some(before),
            limit: 5_000,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    let logged: Vec<(u64, String)> = logged
        .iter()
        .map(|e| (e.seq, e.event.id.to_string()))
        .collect();
    let written: Vec<(u64, String)> = seqs
        .iter()
        .zip(writes.iter().flat_map(|w| &w.events))
        .map(|(s, e)| (*s, e.id.to_string()))
        .collect();
    assert_eq!(logged, written, "the log holds each event at its position");
    for w in [&workers[0], &workers[699], &workers[1_199]] {
        let stored = store.get(w.id).await.unwrap().unwrap();
        assert_eq!((stored.version, stored.name), (2, format!("{}-2", w.name)));
    }
}

/// Every write returns the worker exactly as stored (its new version, the caller's fields),
/// on every path: insert, capped insert, insert-or-get, update, `update_many` (batch and row
/// by row), `save_changes` (batch and row by row after a uniqueness failure).
pub async fn every_write_should_return_the_worker_as_stored(backend: &dyn Backend) {
    let store = open(backend).await;
    let stored = |w: &Worker| {
        let store = store.clone();
        let id = w.id;
        async move { store.get(id).await.unwrap().unwrap() }
    };
    let a = store
        .insert(&worker(1, "a", "eu-west-1", Ec2State::Running))
        .await
        .unwrap();
    assert_eq!((a.version, &a), (1, &stored(&a).await));
    let b = store
        .insert_capped(&worker(2, "b", "eu-west-1", Ec2State::Running), 10)
        .await
        .unwrap();
    assert_eq!((b.version, &b), (1, &stored(&b).await));
    let (c, created) = store
        .insert_or_get(&worker(3, "c", "eu-west-1", Ec2State::Running))
        .await
        .unwrap();
    assert!(created);
    assert_eq!((c.version, &c), (1, &stored(&c).await));

    let mut a2 = a.clone();
    a2.name = "a2".into();
    let a2 = store.update(&a2).await.unwrap();
    assert_eq!((a2.version, a2.name.as_str()), (2, "a2"));
    assert_eq!(a2, stored(&a2).await);

    // update_many: a clean batch, then one with a duplicate instance (row by row).
    let (mut a3, mut b2) = (a2.clone(), b.clone());
    a3.name = "a3".into();
    b2.name = "b2".into();
    let out = store.update_many(&[a3, b2]).await.unwrap();
    for saved in out {
        let saved = saved.unwrap();
        assert_eq!(saved, stored(&saved).await);
    }
    let b2 = stored(&b).await;
    assert_eq!(b2.version, 2);
    let mut dup = c.clone();
    dup.instance_id = Some(instance(1));
    let mut b3 = b2.clone();
    b3.name = "b3".into();
    let out = store.update_many(&[dup, b3]).await.unwrap();
    assert!(
        matches!(out[0], Err(StoreError::Duplicate { .. })),
        "{:?}",
        out[0]
    );
    let b3 = out[1].as_ref().unwrap();
    assert_eq!((b3.version, b3.name.as_str()), (3, "b3"));
    assert_eq!(b3, &stored(b3).await);

    // save_changes: a clean batch, then one with a duplicate instance (row by row).
    let write = |w: Worker| crate::WorkerWrite {
        worker: w,
        events: Vec::new(),
        fence: None,
    };
    let mut b4 = b3.clone();
    b4.name = "b4".into();
    let mut c2 = c.clone();
    c2.name = "c2".into();
    let mut first = Some(vec![write(b4), write(c2)]);
    for _ in 0..2 {
        let pass = match first.take() {
            Some(pass) => pass,
            None => {
                let mut dup = stored(&b).await;
                dup.instance_id = Some(instance(3));
                let mut c3 = stored(&c).await;
                c3.name = "c3".into();
                vec![write(dup), write(c3)]
            }
        };
        let out = store.save_changes(&pass).await.unwrap();
        for (write, outcome) in pass.iter().zip(out) {
            match outcome {
                crate::WriteOutcome::Saved { worker, .. } => {
                    assert_eq!(worker.version, write.worker.version + 1);
                    assert_eq!(worker.name, write.worker.name);
                    assert_eq!(worker, stored(&worker).await);
                }
                crate::WriteOutcome::Failed(StoreError::Duplicate { .. }) => {
                    assert_eq!(write.worker.id, b.id, "only the duplicate fails");
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(stored(&c).await.name, "c3");
}

/// In one batch: a good row is saved, a stale one conflicts, one that takes another's
/// instance is a duplicate, the same worker twice saves once — each on its own.
pub async fn update_many_should_save_or_refuse_each_row_on_its_own(backend: &dyn Backend) {
    let store = open(backend).await;
    let mut ws = Vec::new();
    for n in 1..=4 {
        ws.push(
            store
                .insert(&worker(n, &format!("w{n}"), "eu-west-1", Ec2State::Running))
                .await
                .unwrap(),
        );
    }
    // A clean batch (the fast path where there is one).
    let batch: Vec<Worker> = ws
        .iter()
        .map(|w| {
            let mut w = w.clone();
            w.name = format!("{}-b1", w.name);
            w
        })
        .collect();
    let saved: Vec<Worker> = store
        .update_many(&batch)
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(saved.iter().all(|w| w.version == 2));
    assert_eq!(store.get(ws[0].id).await.unwrap().unwrap().name, "w1-b1");
    assert!(store.update_many(&[]).await.unwrap().is_empty());

    let mut good = saved[0].clone();
    good.name = "good".into();
    let stale = ws[1].clone(); // version 1, the store has 2
    let mut dup = saved[2].clone();
    dup.instance_id = Some(instance(4));
    let mut twice = saved[3].clone();
    twice.name = "twice".into();
    let results = store
        .update_many(&[good.clone(), stale, dup, twice.clone(), twice])
        .await
        .unwrap();
    assert_eq!(results.len(), 5);
    assert_eq!(results[0].as_ref().unwrap().version, 3);
    assert!(
        matches!(
            results[1],
            Err(StoreError::Conflict {
                expected: 1,
                found: Some(2),
                ..
            })
        ),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(&results[2], Err(StoreError::Duplicate { existing, .. }) if *existing == ws[3].id),
        "{:?}",
        results[2]
    );
    assert_eq!(results[3].as_ref().unwrap().version, 3);
    assert!(
        matches!(results[4], Err(StoreError::Conflict { .. })),
        "{:?}",
        results[4]
    );
    assert_eq!(store.get(ws[0].id).await.unwrap().unwrap().name, "good");
    assert_eq!(
        store.get(ws[2].id).await.unwrap().unwrap().instance_id,
        Some(instance(3)),
        "the refused row was not written"
    );
    assert_eq!(store.get(ws[3].id).await.unwrap().unwrap().version, 3);

    // A batch where every row breaks a rule writes nothing and reports each.
    let mut a = store.get(ws[0].id).await.unwrap().unwrap();
    a.instance_id = Some(instance(2));
    let results = store.update_many(&[a]).await.unwrap();
    assert!(matches!(results[0], Err(StoreError::Duplicate { .. })));
}

/// Several writers push overlapping batches (in different orders) at once: no deadlock, and
/// every saved update counts exactly once.
pub async fn overlapping_batches_should_neither_deadlock_nor_lose_updates(backend: &dyn Backend) {
    let store = open(backend).await;
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(
            store
                .insert(&worker(n, &format!("w{n}"), "eu-west-1", Ec2State::Running))
                .await
                .unwrap()
                .id,
        );
    }
    let ids = Arc::new(ids);
    let writers: Vec<_> = (0..6)
        .map(|writer| {
            let store = store.clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                let mut saved = 0u64;
                for round in 0..10 {
                    let mut batch = store.get_many(&ids).await.unwrap();
                    if (writer + round) % 2 == 1 {
                        batch.reverse();
                    }
                    for w in &mut batch {
                        w.tags.insert(format!("w{writer}r{round}"), "x".into());
                    }
                    for r in store.update_many(&batch).await.unwrap() {
                        match r {
                            Ok(_) => saved += 1,
                            Err(StoreError::Conflict { .. }) => {}
                            Err(e) => panic!("unexpected {e}"),
                        }
                    }
                }
                saved
            })
        })
        .collect();
    let mut saved = 0;
    for w in writers {
        saved += tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("batches deadlocked")
            .unwrap();
    }
    let now = store.get_many(&ids).await.unwrap();
    let versions: u64 = now.iter().map(|w| w.version - 1).sum();
    let tags: usize = now.iter().map(|w| w.tags.len() - 1).sum();
    assert_eq!(versions, saved, "each saved update bumped one version");
    assert!(
        tags as u64 <= saved && tags > 0,
        "{tags} tags for {saved} saves"
    );
    assert!(saved >= 20, "at least one round per worker went through");
}

/// 24 concurrent imports of one instance make one worker; inserting or moving onto a taken
/// instance is a duplicate naming the holder.
pub async fn concurrent_imports_of_one_instance_should_make_one_worker(backend: &dyn Backend) {
    let store = open(backend).await;
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .insert_or_get(&worker(7, "seven", "eu-west-1", Ec2State::Running))
                    .await
            })
        })
        .collect();
    let mut created = 0;
    let mut ids = BTreeSet::new();
    for task in tasks {
        let (w, was_created) = task.await.unwrap().unwrap();
        created += u32::from(was_created);
        ids.insert(w.id);
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1, "everyone got the same worker");
    assert_eq!(store.list(&WorkerFilter::default()).await.unwrap().total, 1);

    let existing = *ids.iter().next().unwrap();
    match store
        .insert(&worker(7, "again", "eu-west-1", Ec2State::Running))
        .await
    {
        Err(StoreError::Duplicate {
            existing: e,
            instance_id,
        }) => {
            assert_eq!(e, existing);
            assert_eq!(instance_id, instance(7).to_string());
        }
        other => panic!("expected a duplicate, got {other:?}"),
    }
    // Changing another worker's instance id to a taken one is refused too.
    let mut other = store
        .insert(&worker(8, "eight", "eu-west-1", Ec2State::Running))
        .await
        .unwrap();
    other.instance_id = Some(instance(7));
    assert!(matches!(
        store.update(&other).await,
        Err(StoreError::Duplicate { .. })
    ));
    // Workers without an instance (provisioning) do not collide.
    let mut a = worker(9, "nine", "eu-west-1", Ec2State::Pending);
    a.instance_id = None;
    let mut b = worker(10, "ten", "eu-west-1", Ec2State::Pending);
    b.instance_id = None;
    store.insert(&a).await.unwrap();
    store.insert(&b).await.unwrap();
}

/// A fleet cap holds under concurrency: of 12 creates racing for 2 free places, 2 are
/// stored and 10 refused with the count; terminated and failed workers do not count, and a
/// place freed by a termination can be taken again.
pub async fn capped_inserts_racing_at_the_cap_should_store_only_up_to_it(backend: &dyn Backend) {
    let store = open(backend).await;
    for (n, state) in [
        (1, Ec2State::Running),
        (2, Ec2State::Terminated),
        (3, Ec2State::Failed),
    ] {
        store
            .insert(&worker(n, "old", "eu-west-1", state))
            .await
            .unwrap();
    }
    let pending = |n: u32| {
        let mut w = worker(n, &format!("new-{n}"), "eu-west-1", Ec2State::Pending);
        w.instance_id = None;
        w
    };
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let store = store.clone();
            let w = pending(100 + i);
            tokio::spawn(async move { store.insert_capped(&w, 3).await })
        })
        .collect();
    let (mut stored, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(w) => {
                assert_eq!(w.version, 1);
                stored += 1;
            }
            Err(StoreError::AtCap { cap, live }) => {
                assert_eq!((cap, live), (3, 3));
                refused += 1;
            }
            Err(other) => panic!("expected stored or at the cap, got {other:?}"),
        }
    }
    assert_eq!((stored, refused), (2, 10));
    assert_eq!(store.list(&WorkerFilter::default()).await.unwrap().total, 5);

    let mut running = store.get_by_instance(&instance(1)).await.unwrap().unwrap();
    running.ec2_state = Ec2State::Terminated;
    store.update(&running).await.unwrap();
    store.insert_capped(&pending(200), 3).await.unwrap();
    assert!(matches!(
        store.insert_capped(&pending(201), 3).await,
        Err(StoreError::AtCap { cap: 3, live: 3 })
    ));
}

/// A stopped lab record of `worker` (for store tests outside the suite too).
pub fn lab(worker: WorkerId, id: &str, title: &str) -> LabRecord {
    LabRecord {
        worker_id: worker,
        lab_id: LabId::parse(id).unwrap(),
        title: title.into(),
        description: None,
        state: LabState::Stopped,
        owner: None,
        owner_username: None,
        node_count: 2,
        link_count: 1,
        created: None,
        modified: None,
        observed_at: t(0),
    }
}

/// Replacing labs adds, updates and removes; concurrent refreshes leave one record per lab;
/// labs need their worker and go with it.
pub async fn lab_refreshes_should_remove_orphans_and_never_duplicate(backend: &dyn Backend) {
    let store = open(backend).await;
    let w = store
        .insert(&worker(1, "a", "eu-west-1", Ec2State::Running))
        .await
        .unwrap();
    let (added, removed) = store
        .replace_labs(
            w.id,
            &[lab(w.id, "l1", "one"), lab(w.id, "l2", "two")],
            None,
        )
        .await
        .unwrap();
    assert_eq!((added, removed), (2, 0));
    let (added, removed) = store
        .replace_labs(
            w.id,
            &[lab(w.id, "l2", "two v2"), lab(w.id, "l3", "three")],
            None,
        )
        .await
        .unwrap();
    assert_eq!((added, removed), (1, 1));
    let titles: Vec<_> = store
        .list_labs(w.id)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.title)
        .collect();
    assert_eq!(titles, ["three", "two v2"]);

    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let store = store.clone();
            let labs: Vec<_> = (0..20)
                .map(|j| lab(w.id, &format!("lab-{j}"), &format!("t{i}")))
                .collect();
            tokio::spawn(async move { store.replace_labs(w.id, &labs, None).await })
        })
        .collect();
    let mut added_total = 0;
    for task in tasks {
        added_total += task.await.unwrap().unwrap().0;
    }
    assert_eq!(added_total, 20, "each lab was new to exactly one refresh");
    let labs = store.list_labs(w.id).await.unwrap();
    assert_eq!(
        labs.len(),
        20,
        "one record per (worker, lab) after concurrent refreshes"
    );

    assert!(
        store
            .delete_lab(w.id, &LabId::parse("lab-3").unwrap())
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_lab(w.id, &LabId::parse("lab-3").unwrap())
            .await
            .unwrap()
    );
    assert!(matches!(
        store.replace_labs(WorkerId::new(), &[], None).await,
        Ok((0, 0))
    ));
    let ghost = WorkerId::new();
    assert!(matches!(
        store.upsert_labs(&[lab(ghost, "x", "x")], None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store
            .replace_labs(ghost, &[lab(ghost, "x", "x")], None)
            .await,
        Err(StoreError::NotFound { .. })
    ));
    store.delete(w.id).await.unwrap();
    assert!(
        store.list_labs(w.id).await.unwrap().is_empty(),
        "labs go with their worker"
    );
}

/// Sessions are kept across a reopen until they expire; purge and delete work.
pub async fn sessions_should_survive_a_reopen_until_they_expire(backend: &dyn Backend) {
    let db = backend.fresh(StoreConfig::default()).await;
    let store = db.open().await;
    store.put_session("k1", "{\"a\":1}", t(100)).await.unwrap();
    store.put_session("k2", "{\"b\":2}", t(50)).await.unwrap();
    // Replacing keeps one row.
    store.put_session("k1", "{\"a\":2}", t(200)).await.unwrap();
    drop(store);

    let store = db.open().await;
    assert_eq!(
        store.session("k1", t(10)).await.unwrap().as_deref(),
        Some("{\"a\":2}")
    );
    assert_eq!(
        store.session("k2", t(49)).await.unwrap().as_deref(),
        Some("{\"b\":2}")
    );
    assert_eq!(store.session("k2", t(50)).await.unwrap(), None, "expired");
    assert_eq!(store.session("nope", t(10)).await.unwrap(), None);
    assert_eq!(store.purge_sessions(t(60)).await.unwrap(), 1);
    assert!(store.delete_session("k1").await.unwrap());
    assert!(!store.delete_session("k1").await.unwrap());
    assert_eq!(store.session("k1", t(10)).await.unwrap(), None);
}

/// A session document comes back as the same JSON; the store accepts only JSON objects.
pub async fn sessions_should_come_back_as_written_and_refuse_non_objects(backend: &dyn Backend) {
    let store = open(backend).await;
    let doc = r#"{"name":"alice","role":"admin","nested":{"x":[1,2]},"schema":"no"}"#;
    store.put_session("k", doc, t(100)).await.unwrap();
    let back: serde_json::Value =
        serde_json::from_str(&store.session("k", t(0)).await.unwrap().unwrap()).unwrap();
    assert_eq!(
        back,
        serde_json::from_str::<serde_json::Value>(doc).unwrap()
    );
    for bad in ["[1]", "\"x\"", "not json", ""] {
        assert!(
            matches!(
                store.put_session("bad", bad, t(100)).await,
                Err(StoreError::Corrupt { .. })
            ),
            "{bad:?}"
        );
    }
    assert_eq!(store.session("bad", t(0)).await.unwrap(), None);
}

/// What the idle economics keep — a worker's snooze, the source of its latest activity, its
/// stopped seconds per week and reason, pauses by schedule — and the off-hours schedules in
/// the runtime settings come back exactly as written, also after a reopen.
pub async fn idle_economics_should_round_trip(backend: &dyn Backend) {
    use ccm_domain::PauseReason;
    use ccm_domain::worker::ActivitySource;

    let db = backend.fresh(StoreConfig::default()).await;
    let store = db.open().await;
    let mut w = worker(1, "econ", "eu-west-1", Ec2State::Running);
    w.snooze(t(90_000), &Actor::user("alice"), t(1000)).unwrap();
    w.record_interaction(
        Some((
            t(900),
            ActivitySource::Telemetry {
                category: "user_activity".into(),
                user_id: Some("u-7".into()),
            },
        )),
        t(1000),
    );
    w.request(
        ccm_domain::WorkerAction::Pause,
        Some(PauseReason::Schedule),
        &Actor::system("schedule"),
        t(2000),
    )
    .unwrap();
    w.monitoring.stopped_by_week.insert(
        "2026-W10".into(),
        BTreeMap::from([("schedule".into(), 3600)]),
    );
    w.monitoring.resumes.schedule = 1;
    let w = store.insert(&w).await.unwrap();
    assert_eq!(store.get(w.id).await.unwrap().as_ref(), Some(&w));

    let mut s = RuntimeSettings {
        schedules: serde_json::from_value(serde_json::json!([
            {"selector": "tag:team=training", "off_hours": "Mon-Fri 19:00-07:00 Europe/Paris"},
            {"selector": format!("worker:{}", w.id), "off_hours": "Fri 19:00-Mon 07:00 UTC"},
        ]))
        .unwrap(),
        ..RuntimeSettings::default()
    };
    s.idle.running_nodes_count_as_use = false;
    s.idle.warning_before = Duration::from_secs(300);
    store.put_runtime_settings(&s, 0, "alice").await.unwrap();
    drop(store);
    let store = db.open().await;
    assert_eq!(store.runtime_settings().await.unwrap().value, s);
    assert_eq!(store.get(w.id).await.unwrap(), Some(w));
}

/// Settings start at version 0 (defaults); each write needs the current version.
pub async fn settings_should_be_versioned(backend: &dyn Backend) {
    let db = backend.fresh(StoreConfig::default()).await;
    let store = db.open().await;
    let v0 = store.runtime_settings().await.unwrap();
    assert_eq!(
        (v0.version, v0.value.clone()),
        (0, RuntimeSettings::default())
    );
    let mut s = v0.value.clone();
    s.idle.dry_run = true;
    let v1 = store.put_runtime_settings(&s, 0, "alice").await.unwrap();
    assert_eq!(v1.version, 1);
    assert!(matches!(
        store.put_runtime_settings(&s, 0, "bob").await,
        Err(StoreError::SettingsConflict {
            expected: 0,
            found: 1
        })
    ));
    assert!(matches!(
        store.put_runtime_settings(&s, 5, "bob").await,
        Err(StoreError::SettingsConflict {
            expected: 5,
            found: 1
        })
    ));
    let v2 = store
        .put_runtime_settings(&RuntimeSettings::default(), 1, "bob")
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(store.runtime_settings().await.unwrap(), v2);
    drop(store);
    assert_eq!(db.open().await.runtime_settings().await.unwrap(), v2);
}

/// Ten writers race from the same version: exactly one wins, the rest conflict.
pub async fn concurrent_settings_writers_should_have_exactly_one_winner(backend: &dyn Backend) {
    let store = open(backend).await;
    for start in [0u64, 1] {
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut s = RuntimeSettings::default();
                    s.idle.dry_run = i % 2 == 0;
                    store
                        .put_runtime_settings(&s, start, &format!("w{i}"))
                        .await
                })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(v) => {
                    assert_eq!(v.version, start + 1);
                    wins += 1;
                }
                Err(StoreError::SettingsConflict { .. }) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(wins, 1, "from version {start}");
    }
}

fn state_event(w: WorkerId, from: Ec2State, to: Ec2State) -> Event {
    Event::new(
        "/test",
        Some(w),
        EventKind::WorkerStateChanged { from, to },
        t(0),
    )
}

/// Events keep their order, transient ones are not stored, filters and paging work, and
/// pruning removes by age.
pub async fn the_event_log_should_keep_order_skip_transient_events_and_filter(
    backend: &dyn Backend,
) {
    let store = open(backend).await;
    assert_eq!(store.last_seq().await.unwrap(), 0);
    let (a, b) = (WorkerId::new(), WorkerId::new());
    let events = vec![
        state_event(a, Ec2State::Running, Ec2State::Stopping),
        Event::new(
            "/test",
            Some(a),
            EventKind::WorkerMetricsUpdated {
                cpu_percent: Some(1.0),
                memory_percent: None,
            },
            t(0),
        ),
        Event::new(
            "/test",
            Some(b),
            EventKind::WorkerDeleted {
                by: Actor::user("x"),
            },
            t(5),
        ),
        state_event(a, Ec2State::Stopping, Ec2State::Stopped),
    ];
    let seqs = store.append(&events).await.unwrap();
    assert_eq!(seqs[1], None, "transient events are not stored");
    let stored: Vec<u64> = seqs.iter().flatten().copied().collect();
    assert_eq!(stored.len(), 3);
    assert!(stored.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(store.last_seq().await.unwrap(), stored[2]);
    assert_eq!(
        store.append(&events[1..2]).await.unwrap(),
        vec![None],
        "only transient: nothing stored"
    );

    let all = store.read(&EventQuery::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        vec![events[0].clone(), events[2].clone(), events[3].clone()]
    );
    let after = store
        .read(&EventQuery {
            after: Some(stored[0]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(after.len(), 2);
    let before = store
        .read(&EventQuery {
            before: Some(stored[2]),
            newest_first: true,
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        before.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [stored[1]]
    );
    let of_a = store
        .read(&EventQuery {
            subjects: vec![a.to_string()],
            newest_first: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        of_a.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [stored[2], stored[0]]
    );
    let typed = store
        .read(&EventQuery {
            types: vec!["ccm.worker.deleted".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(typed.len(), 1);
    assert_eq!(
        store.prune_events(t(1)).await.unwrap(),
        2,
        "older than t(1)"
    );
    assert_eq!(store.prune_events(t(10)).await.unwrap(), 1);
    assert_eq!(store.read(&EventQuery::default()).await.unwrap().len(), 0);
}

/// The SSE resume rule: a reader that fetches "everything after the last position it saw"
/// while several writers append must see every event. If a position could commit after a
/// higher one (a bare auto-increment on a server database), the reader would already be past
/// it and skip it forever; the final full read would then show an event it never saw.
pub async fn event_appends_should_commit_in_sequence_order(backend: &dyn Backend) {
    let store = open(backend).await;
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let store = store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            let mut last = 0u64;
            let mut reads = 0u32;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let batch = store
                    .read(&EventQuery {
                        after: Some(last),
                        limit: 10_000,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                reads += 1;
                for e in batch {
                    assert!(e.seq > last, "read after {last} returned {}", e.seq);
                    last = e.seq;
                    seen.insert(e.seq);
                }
                if finished {
                    return (seen, reads);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let writers: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut positions = Vec::new();
                for i in 0..40 {
                    let w = WorkerId::new();
                    let batch: Vec<Event> = (0..1 + i % 3)
                        .map(|_| state_event(w, Ec2State::Running, Ec2State::Stopping))
                        .collect();
                    let seqs = store.append(&batch).await.unwrap();
                    assert!(
                        seqs.windows(2).all(|p| p[0] < p[1]),
                        "a batch keeps its order"
                    );
                    positions.extend(seqs.into_iter().flatten());
                }
                positions
            })
        })
        .collect();
    let mut appended = BTreeSet::new();
    for w in writers {
        appended.extend(w.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let (seen, reads) = reader.await.unwrap();
    let all: BTreeSet<u64> = store
        .read(&EventQuery {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(all, appended, "the log holds exactly what was appended");
    let missed: Vec<_> = all.difference(&seen).collect();
    assert!(
        missed.is_empty(),
        "the reader skipped {missed:?}: they committed after a higher position ({reads} reads)"
    );
    assert_eq!(store.last_seq().await.unwrap(), *all.last().unwrap());
}

/// Samples average per bucket (NaN ignored, nodes are a maximum); old buckets are dropped.
pub async fn metrics_history_should_average_buckets_and_stay_bounded(backend: &dyn Backend) {
    let config = StoreConfig {
        metrics_bucket: Duration::from_secs(300),
        metrics_retention: Duration::from_secs(3600),
        ..StoreConfig::default()
    };
    let store = backend.fresh(config).await.open().await;
    let w = store
        .insert(&worker(1, "a", "eu-west-1", Ec2State::Running))
        .await
        .unwrap();
    let at = |s: i64| Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap(); // a multiple of 300 s
    let sample = |cpu, nodes| MetricsSample {
        cpu_percent: Some(cpu),
        running_nodes: Some(nodes),
        ..Default::default()
    };
    store
        .record_metrics(w.id, at(0), sample(10.0, 1))
        .await
        .unwrap();
    store
        .record_metrics(w.id, at(100), sample(20.0, 5))
        .await
        .unwrap();
    store
        .record_metrics(
            w.id,
            at(200),
            MetricsSample {
                cpu_percent: Some(f64::NAN),
                memory_percent: Some(50.0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    store
        .record_metrics(w.id, at(400), sample(40.0, 2))
        .await
        .unwrap();
    let points = store.metrics_history(w.id, at(0)).await.unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[0].at, at(0));
    assert_eq!(points[0].samples, 3);
    assert_eq!(points[0].cpu_percent, Some(15.0), "NaN samples are ignored");
    assert_eq!(points[0].memory_percent, Some(50.0));
    assert_eq!(points[0].running_nodes, Some(5));
    assert_eq!(points[0].cml_cpu_percent, None);
    assert_eq!(points[1].at, at(300));
    assert_eq!(
        store.metrics_history(w.id, at(301)).await.unwrap().len(),
        1,
        "since rounds down to its bucket"
    );

    // Thirteen buckets later the first ones are past the one-hour retention.
    let batch: Vec<_> = (0..13)
        .map(|i| (w.id, at(600 + i * 300), sample(1.0, 0)))
        .collect();
    store.record_metrics_many(&batch).await.unwrap();
    let points = store.metrics_history(w.id, at(0)).await.unwrap();
    assert!(points.len() <= 13, "{} points kept", points.len());
    assert!(points.iter().all(|p| p.at >= at(600)));
    assert!(matches!(
        store
            .record_metrics(WorkerId::new(), at(4200), sample(1.0, 1))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    store.record_metrics_many(&[]).await.unwrap();
    store.delete(w.id).await.unwrap();
    assert!(
        store.metrics_history(w.id, at(0)).await.unwrap().is_empty(),
        "metrics go with their worker"
    );
}

/// One batch with several samples of the same bucket (and of several workers) sums them.
pub async fn metrics_batches_should_merge_samples_of_one_bucket(backend: &dyn Backend) {
    let config = StoreConfig {
        metrics_bucket: Duration::from_secs(60),
        ..StoreConfig::default()
    };
    let store = backend.fresh(config).await.open().await;
    let a = store
        .insert(&worker(1, "a", "eu-west-1", Ec2State::Running))
        .await
        .unwrap();
    let b = store
        .insert(&worker(2, "b", "eu-west-1", Ec2State::Running))
        .await
        .unwrap();
    let s = |cpu: f64, cml: Option<f64>, nodes: Option<u64>| MetricsSample {
        cpu_percent: Some(cpu),
        cml_memory_percent: cml,
        running_nodes: nodes,
        ..Default::default()
    };
    store
        .record_metrics(a.id, t(0), s(90.0, None, Some(9)))
        .await
        .unwrap();
    store
        .record_metrics_many(&[
            (a.id, t(1), s(10.0, Some(40.0), Some(3))),
            (b.id, t(2), s(50.0, None, None)),
            (a.id, t(3), s(20.0, None, None)),
            (a.id, t(61), s(70.0, Some(10.0), Some(1))),
        ])
        .await
        .unwrap();
    let pa = store.metrics_history(a.id, t(0)).await.unwrap();
    assert_eq!(pa.len(), 2);
    assert_eq!(pa[0].samples, 3);
    assert_eq!(pa[0].cpu_percent, Some(40.0));
    assert_eq!(pa[0].cml_memory_percent, Some(40.0));
    assert_eq!(pa[0].running_nodes, Some(9), "the maximum, not the last");
    assert_eq!(pa[1].samples, 1);
    let pb = store.metrics_history(b.id, t(0)).await.unwrap();
    assert_eq!(pb.len(), 1);
    assert_eq!(pb[0].running_nodes, None);
}

/// What this build writes carries its schema version, and reads back the same.
pub async fn documents_should_be_stored_with_their_schema_version(backend: &dyn Backend) {
    let store = open(backend).await;
    let w = store
        .insert(&worker(1, "a", "eu-west-1", Ec2State::Running))
        .await
        .unwrap();
    store
        .put_runtime_settings(&RuntimeSettings::default(), 0, "t")
        .await
        .unwrap();
    store.put_session("k", r#"{"a":1}"#, t(100)).await.unwrap();
    for (table, key, schema) in [
        (RawTable::Worker, w.id.to_string(), crate::schema::WORKER),
        (RawTable::Settings, String::new(), crate::schema::SETTINGS),
        (RawTable::Session, "k".into(), crate::schema::SESSION),
    ] {
        let raw = store.raw_document(table, &key).await.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(
            v["schema_version"].as_u64(),
            Some(schema.current()),
            "{table:?}: {raw}"
        );
    }
    assert_eq!(store.get(w.id).await.unwrap().unwrap(), w);
    let mut changed = w.clone();
    changed.name = "b".into();
    store.update(&changed).await.unwrap();
    let raw = store
        .raw_document(RawTable::Worker, &w.id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert!(raw.contains("\"schema_version\":"), "{raw}");
}

/// The golden fixtures (today's shapes, no `schema_version`) load through the real read
/// paths: the worker by id, by instance, in a listing and in a batch; the settings; the
/// session. And a loaded fixture can be written back.
pub async fn golden_fixtures_should_load_through_the_store(backend: &dyn Backend) {
    let store = open(backend).await;
    let raw: serde_json::Value = serde_json::from_str(WORKER_FIXTURE).unwrap();
    assert!(
        raw.get("schema_version").is_none(),
        "the fixture is a pre-version document"
    );
    store.put_raw_worker(WORKER_FIXTURE).await.unwrap();
    let id: WorkerId = raw["id"].as_str().unwrap().parse().unwrap();
    let w = store.get(id).await.unwrap().expect("the fixture worker");
    assert_eq!(w.name, raw["name"].as_str().unwrap());
    assert_eq!(w.version, raw["version"].as_u64().unwrap());
    assert_eq!(
        w.instance_id.as_ref().map(ToString::to_string).as_deref(),
        raw["instance_id"].as_str()
    );
    assert_eq!(w.ec2_state.as_str(), raw["ec2_state"].as_str().unwrap());
    assert_eq!(
        w.service.status.as_str(),
        raw["service"]["status"].as_str().unwrap()
    );
    assert_eq!(
        w.tags.len(),
        raw["tags"].as_object().unwrap().len(),
        "the tags came through"
    );
    let by_instance = store
        .get_by_instance(w.instance_id.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(by_instance.as_ref(), Some(&w));
    assert_eq!(
        store.list(&WorkerFilter::default()).await.unwrap().items,
        vec![w.clone()]
    );
    assert_eq!(store.get_many(&[id]).await.unwrap(), vec![w.clone()]);
    // Stored before owners and status checks were recorded: none of either.
    assert_eq!(w.ami.as_ref().map(|a| a.owner.clone()), Some(None));
    assert!(w.ec2_status.last_good.is_none());
    let saved = store.update(&w).await.unwrap();
    assert_eq!(saved.version, w.version + 1);
    assert_eq!(store.get(id).await.unwrap().unwrap(), saved);

    // With both, the document loads them, and this build writes the same document again.
    let (_, checked) = load_fixture(&*store, WORKER_EC2_STATUS_FIXTURE).await;
    assert_eq!(
        checked.ami.as_ref().and_then(|a| a.owner.as_deref()),
        Some("123456789012")
    );
    let checks = checked.ec2_status.last_good.as_ref().expect("checks").value;
    assert_eq!(
        (checks.system, checks.instance),
        (CheckStatus::Ok, CheckStatus::Impaired)
    );
    // Stored before the idle economics were recorded: none of them.
    assert!(checked.monitoring.snooze.is_none());
    assert!(checked.monitoring.stopped_by_week.is_empty());
    assert_eq!(checked.monitoring.pauses.schedule, 0);

    // With them, the document loads them, and this build writes the same document again.
    let (raw_econ, econ) = load_fixture(&*store, WORKER_ECONOMICS_FIXTURE).await;
    let m = &econ.monitoring;
    assert_eq!(
        m.snooze.as_ref().map(|s| s.by.to_string()).as_deref(),
        Some("user:alice")
    );
    assert_eq!(m.running_nodes, Some(4));
    assert!(matches!(
        m.last_activity_source,
        Some(ccm_domain::worker::ActivitySource::Telemetry { ref category, .. })
            if category == "start_lab"
    ));
    assert_eq!((m.pauses.schedule, m.resumes.schedule), (3, 3));
    assert_eq!(m.stopped_by_week["2026-W49"]["schedule"], 54_000);
    let mut rewritten = serde_json::to_value(&econ).unwrap();
    // Version 2 changed only how breaks are written; the fixture has none: the same shape.
    rewritten["schema_version"] = raw_econ["schema_version"].clone();
    assert_eq!(rewritten, raw_econ, "this build writes the fixture's shape");

    // Version 2: compact breaks load, and this build writes the same document again.
    let (raw_v2, v2) = load_fixture(&*store, WORKER_V2_BREAKS_FIXTURE).await;
    let spans: Vec<(i64, i64)> = v2
        .monitoring
        .breaks
        .iter()
        .map(|b| (b.from.timestamp(), (b.to - b.from).num_seconds()))
        .collect();
    assert_eq!(spans, [(1_796_549_400, 3_600), (1_796_567_400, 5_400)]);
    assert_eq!(v2.monitoring.absences.len(), 1);
    let mut rewritten = serde_json::to_value(&v2).unwrap();
    rewritten["schema_version"] = serde_json::json!(crate::schema::WORKER.current());
    assert_eq!(
        rewritten, raw_v2,
        "this build writes the version-2 fixture's shape"
    );

    let raw_settings: serde_json::Value = serde_json::from_str(SETTINGS_FIXTURE).unwrap();
    store.put_raw_settings(SETTINGS_FIXTURE, 3).await.unwrap();
    let settings = store.runtime_settings().await.unwrap();
    assert_eq!(settings.version, 3);
    assert_eq!(
        Some(settings.value.idle.dry_run),
        raw_settings["idle"]["dry_run"].as_bool()
    );
    assert_ne!(
        settings.value,
        RuntimeSettings::default(),
        "the fixture is not just the defaults"
    );
    store
        .put_runtime_settings(&settings.value, 3, "t")
        .await
        .unwrap();

    store
        .put_raw_session("fixture", SESSION_FIXTURE, t(1000))
        .await
        .unwrap();
    let doc = store.session("fixture", t(0)).await.unwrap().unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&doc).unwrap(),
        serde_json::from_str::<serde_json::Value>(SESSION_FIXTURE).unwrap()
    );
}

/// A document with a schema version above what this build knows is refused with an error
/// that says so — not misread, not silently defaulted.
pub async fn documents_from_a_newer_ccm_should_be_refused_clearly(backend: &dyn Backend) {
    let store = open(backend).await;
    let mut raw: serde_json::Value = serde_json::from_str(WORKER_FIXTURE).unwrap();
    let future = crate::schema::WORKER.current() + 1;
    raw["schema_version"] = future.into();
    store.put_raw_worker(&raw.to_string()).await.unwrap();
    let id: WorkerId = raw["id"].as_str().unwrap().parse().unwrap();
    match store.get(id).await {
        Err(e @ StoreError::UnsupportedSchema { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&format!("schema version {future}")), "{text}");
            assert!(text.contains("newer ccm"), "{text}");
        }
        other => panic!("expected UnsupportedSchema, got {other:?}"),
    }
    let mut settings: serde_json::Value = serde_json::from_str(SETTINGS_FIXTURE).unwrap();
    settings["schema_version"] = (crate::schema::SETTINGS.current() + 1).into();
    store
        .put_raw_settings(&settings.to_string(), 1)
        .await
        .unwrap();
    assert!(matches!(
        store.runtime_settings().await,
        Err(StoreError::UnsupportedSchema { .. })
    ));
    store
        .put_raw_session("s", r#"{"schema_version":99,"a":1}"#, t(10))
        .await
        .unwrap();
    assert!(matches!(
        store.session("s", t(0)).await,
        Err(StoreError::UnsupportedSchema { .. })
    ));
}

/// A fresh store answers its health check.
pub async fn ping_should_answer(backend: &dyn Backend) {
    let store = open(backend).await;
    store.ping().await.unwrap();
    assert!(!backend.name().is_empty());
}

/// Consumer positions survive a reopen, are kept per name, and never move backwards (a stale
/// writer's lower position keeps the higher one).
pub async fn cursors_should_survive_a_reopen_and_never_move_backwards(backend: &dyn Backend) {
    let db = backend.fresh(StoreConfig::default()).await;
    let store = db.open().await;
    assert_eq!(store.cursor("webhook:ops").await.unwrap(), None);
    assert_eq!(
        store.advance_cursor("webhook:ops", 7, t(1)).await.unwrap(),
        7
    );
    assert_eq!(
        store.advance_cursor("webhook:ops", 12, t(2)).await.unwrap(),
        12
    );
    assert_eq!(
        store.advance_cursor("webhook:ops", 9, t(3)).await.unwrap(),
        12,
        "a lower position keeps the higher one"
    );
    assert_eq!(
        store
            .advance_cursor("webhook:other", 3, t(3))
            .await
            .unwrap(),
        3
    );
    assert!(
        store
            .advance_cursor("webhook:ops", u64::MAX, t(4))
            .await
            .is_err(),
        "a position beyond the database's integers is refused"
    );
    drop(store);

    let store = db.open().await;
    assert_eq!(store.cursor("webhook:ops").await.unwrap(), Some(12));
    assert_eq!(store.cursor("webhook:other").await.unwrap(), Some(3));
}

/// Writers advancing one cursor at once (two replicas around a lease hand-over) leave the
/// highest position any of them wrote, and each is told a position at least its own.
pub async fn concurrent_cursor_advances_should_keep_the_highest(backend: &dyn Backend) {
    let store = open(backend).await;
    let mut tasks = Vec::new();
    for writer in 0..8u64 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for step in 0..20u64 {
                let seq = step * 8 + writer;
                let stored = store
                    .advance_cursor("webhook:race", seq, t(1))
                    .await
                    .unwrap();
                assert!(stored >= seq, "{stored} < {seq}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        store.cursor("webhook:race").await.unwrap(),
        Some(19 * 8 + 7)
    );
}
