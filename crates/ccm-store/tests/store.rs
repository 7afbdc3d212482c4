//! Store behaviour against a real SQLite file: CRUD, filters, optimistic concurrency,
//! uniqueness under concurrency, labs, settings, the event log, metrics history, durability.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ccm_domain::lab::LabState;
use ccm_domain::worker::{EndpointPolicy, InstanceObservation};
use ccm_domain::{
    Actor, Ec2State, Event, EventKind, InstanceId, LabId, LabRecord, Region, RuntimeSettings,
    ServiceStatus, Worker, WorkerId,
};
use ccm_store::{
    CursorRepo, EventLog, EventQuery, LabRepo, MetricsRepo, MetricsSample, SessionRepo,
    SettingsRepo, SqliteStore, Store, StoreConfig, StoreError, WorkerFilter, WorkerRepo,
    WorkerSort, update_worker,
};
use chrono::{DateTime, TimeZone, Utc};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

async fn open(dir: &tempfile::TempDir) -> SqliteStore {
    let config = StoreConfig {
        path: dir.path().join("ccm.db"),
        ..StoreConfig::default()
    };
    SqliteStore::open(&config).await.unwrap()
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
        t(n as i64),
    )
    .0
}

#[tokio::test]
async fn workers_should_round_trip_and_list_with_filters_sort_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let specs = [
        (1, "alpha", "eu-west-1", Ec2State::Running),
        (2, "bravo", "eu-west-1", Ec2State::Stopped),
        (3, "charlie", "us-east-1", Ec2State::Running),
        (4, "delta_50%", "us-east-1", Ec2State::Terminated),
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

    let names =
        |p: ccm_store::Page<Worker>| p.items.into_iter().map(|w| w.name).collect::<Vec<_>>();
    let all = store.list(&WorkerFilter::default()).await.unwrap();
    assert_eq!(all.total, 4);
    assert_eq!(names(all), ["alpha", "bravo", "charlie", "delta_50%"]);

    let f = WorkerFilter {
        regions: vec!["us-east-1".into()],
        ..Default::default()
    };
    assert_eq!(
        names(store.list(&f).await.unwrap()),
        ["charlie", "delta_50%"]
    );
    let f = WorkerFilter {
        ec2_states: vec!["running".into()],
        descending: true,
        ..Default::default()
    };
    assert_eq!(names(store.list(&f).await.unwrap()), ["charlie", "alpha"]);
    let f = WorkerFilter {
        text: Some("RAV".into()),
        ..Default::default()
    };
    assert_eq!(names(store.list(&f).await.unwrap()), ["bravo"]);
    let f = WorkerFilter {
        text: Some("50%".into()),
        ..Default::default()
    };
    assert_eq!(
        names(store.list(&f).await.unwrap()),
        ["delta_50%"],
        "LIKE wildcards in the text are literal"
    );
    let f = WorkerFilter {
        text: Some(format!("{:x}", 3)),
        ..Default::default()
    };
    assert!(
        names(store.list(&f).await.unwrap()).contains(&"charlie".to_owned()),
        "instance ids match"
    );
    let f = WorkerFilter {
        service_statuses: vec![ServiceStatus::Unknown.as_str().into()],
        limit: 2,
        offset: 1,
        sort: WorkerSort::Created,
        ..Default::default()
    };
    let page = store.list(&f).await.unwrap();
    assert_eq!(page.total, 4);
    assert_eq!(names(page), ["bravo", "charlie"]);
    let f = WorkerFilter {
        ids: Some(vec![]),
        ..Default::default()
    };
    assert_eq!(store.list(&f).await.unwrap().total, 0);

    assert!(store.delete(w.id).await.unwrap());
    assert!(!store.delete(w.id).await.unwrap());
}

#[tokio::test]
async fn a_stale_update_should_conflict_and_the_helper_should_retry() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
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

    // 16 concurrent read-modify-write cycles through the helper: none is lost.
    let store = Arc::new(store);
    let w = store
        .insert(&worker(2, "counter", "eu-west-1", Ec2State::Running))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                update_worker::<_, _, _, std::convert::Infallible>(store.as_ref(), w.id, |w| {
                    let n: u32 = w.tags.get("n").and_then(|v| v.parse().ok()).unwrap_or(0);
                    w.tags.insert("n".into(), (n + 1).to_string());
                    w.tags.insert(format!("t{i}"), "x".into());
                    Ok(())
                })
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
    assert!(
        failures <= 2,
        "retries should absorb almost all conflicts, {failures} gave up"
    );
}

#[tokio::test]
async fn concurrent_imports_of_one_instance_should_make_one_worker() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir).await);
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
    let mut ids = std::collections::BTreeSet::new();
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
}

fn lab(worker: WorkerId, id: &str, title: &str) -> LabRecord {
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

#[tokio::test]
async fn lab_refreshes_should_remove_orphans_and_never_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir).await);
    let w = store
        .insert(&worker(1, "a", "eu-west-1", Ec2State::Running))
        .await
        .unwrap();
    let (added, removed) = store
        .replace_labs(w.id, &[lab(w.id, "l1", "one"), lab(w.id, "l2", "two")])
        .await
        .unwrap();
    assert_eq!((added, removed), (2, 0));
    let (added, removed) = store
        .replace_labs(w.id, &[lab(w.id, "l2", "two v2"), lab(w.id, "l3", "three")])
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
            tokio::spawn(async move { store.replace_labs(w.id, &labs).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
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
    assert!(matches!(
        store.replace_labs(WorkerId::new(), &[]).await,
        Ok((0, 0))
    ));
    let ghost = WorkerId::new();
    assert!(matches!(
        store.upsert_lab(&lab(ghost, "x", "x")).await,
        Err(StoreError::NotFound { .. })
    ));
    store.delete(w.id).await.unwrap();
    assert!(
        store.list_labs(w.id).await.unwrap().is_empty(),
        "labs go with their worker"
    );
}

#[tokio::test]
async fn sessions_should_survive_a_reopen_until_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    store.put_session("k1", "{\"a\":1}", t(100)).await.unwrap();
    store.put_session("k2", "{\"b\":2}", t(50)).await.unwrap();
    // Replacing keeps one row.
    store.put_session("k1", "{\"a\":2}", t(200)).await.unwrap();
    drop(store);

    let store = open(&dir).await;
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

#[tokio::test]
async fn settings_should_be_versioned() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
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
    let v2 = store
        .put_runtime_settings(&RuntimeSettings::default(), 1, "bob")
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(store.runtime_settings().await.unwrap(), v2);
}

#[tokio::test]
async fn the_event_log_should_keep_order_skip_transient_events_and_filter() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let (a, b) = (WorkerId::new(), WorkerId::new());
    let ev = |w, kind| Event::new("/test", Some(w), kind, t(0));
    let events = vec![
        ev(
            a,
            EventKind::WorkerStateChanged {
                from: Ec2State::Running,
                to: Ec2State::Stopping,
            },
        ),
        ev(
            a,
            EventKind::WorkerMetricsUpdated {
                cpu_percent: Some(1.0),
                memory_percent: None,
            },
        ),
        ev(
            b,
            EventKind::WorkerDeleted {
                by: Actor::user("x"),
            },
        ),
        ev(
            a,
            EventKind::WorkerStateChanged {
                from: Ec2State::Stopping,
                to: Ec2State::Stopped,
            },
        ),
    ];
    let seqs = store.append(&events).await.unwrap();
    assert_eq!(seqs[1], None, "transient events are not stored");
    let stored: Vec<u64> = seqs.iter().flatten().copied().collect();
    assert_eq!(stored.len(), 3);
    assert!(stored.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(store.last_seq().await.unwrap(), stored[2]);

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
    assert_eq!(store.prune_events(t(1)).await.unwrap(), 3);
}

#[tokio::test]
async fn metrics_history_should_average_buckets_and_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        path: dir.path().join("m.db"),
        metrics_bucket: Duration::from_secs(300),
        metrics_retention: Duration::from_secs(3600),
        ..StoreConfig::default()
    };
    let store = SqliteStore::open(&config).await.unwrap();
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
    assert_eq!(points[0].samples, 3);
    assert_eq!(points[0].cpu_percent, Some(15.0), "NaN samples are ignored");
    assert_eq!(points[0].memory_percent, Some(50.0));
    assert_eq!(points[0].running_nodes, Some(5));
    assert_eq!(points[0].cml_cpu_percent, None);
    assert_eq!(points[1].at, at(300));

    // Thirteen buckets later the first ones are past the one-hour retention.
    let batch: Vec<_> = (0..13)
        .map(|i| (w.id, at(600 + i * 300), sample(1.0, 0)))
        .collect();
    store.record_metrics_many(&batch).await.unwrap();
    let points = store.metrics_history(w.id, at(0)).await.unwrap();
    assert!(points.len() <= 13, "{} points kept", points.len());
    assert!(points.iter().all(|p| p.at >= at(600)));
}

#[tokio::test]
async fn ping_and_integrity_check_should_pass_on_a_fresh_database() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    store.ping().await.unwrap();
    assert_eq!(store.integrity_check().await.unwrap(), "ok");
}

const CHILD_ENV: &str = "CCM_STORE_DURABILITY_CHILD_DB";

/// Not a test on its own: the body of the child process of
/// `committed_writes_should_survive_sigkill`. Without the environment variable it returns.
#[tokio::test]
async fn durability_child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let config = StoreConfig {
        path: path.into(),
        ..StoreConfig::default()
    };
    let store = SqliteStore::open(&config).await.unwrap();
    for n in 0..100_000u32 {
        let w = store
            .insert(&worker(n, &format!("w{n}"), "eu-west-1", Ec2State::Running))
            .await
            .unwrap();
        let event = Event::new(
            "/test",
            Some(w.id),
            EventKind::WorkerDeleted {
                by: Actor::user("x"),
            },
            t(0),
        );
        let seq = store.append(&[event]).await.unwrap()[0].unwrap();
        println!("COMMITTED {} {seq}", w.id);
    }
}

#[test]
fn committed_writes_should_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("durable.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "durability_child_writer",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("COMMITTED ") {
                let mut parts = rest.split(' ');
                let id: WorkerId = parts.next().unwrap().parse().unwrap();
                let seq: u64 = parts.next().unwrap().parse().unwrap();
                if tx.send((id, seq)).is_err() {
                    break;
                }
            }
        }
    });
    let mut committed = Vec::new();
    while committed.len() < 300 {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(c) => committed.push(c),
            Err(e) => panic!(
                "the child stopped reporting commits after {}: {e}",
                committed.len()
            ),
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    // Commits reported between our last read and the kill count too.
    while let Ok(c) = rx.try_recv() {
        committed.push(c);
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(&StoreConfig {
            path: db.clone(),
            ..StoreConfig::default()
        })
        .await
        .unwrap();
        assert_eq!(store.integrity_check().await.unwrap(), "ok");
        for (id, _) in &committed {
            assert!(
                store.get(*id).await.unwrap().is_some(),
                "committed worker {id} lost"
            );
        }
        let seqs: std::collections::HashSet<u64> = store
            .read(&EventQuery {
                limit: 10_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.seq)
            .collect();
        for (_, seq) in &committed {
            assert!(seqs.contains(seq), "committed event {seq} lost");
        }
    });
}

#[tokio::test]
async fn cursors_should_survive_a_reopen_and_never_move_backwards() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir).await;
        assert_eq!(store.cursor("webhook:ops").await.unwrap(), None);
        assert_eq!(
            store.advance_cursor("webhook:ops", 7, t(1)).await.unwrap(),
            7
        );
        assert_eq!(
            store.advance_cursor("webhook:ops", 12, t(2)).await.unwrap(),
            12
        );
        // A stale writer's lower position keeps the higher one.
        assert_eq!(
            store.advance_cursor("webhook:ops", 9, t(3)).await.unwrap(),
            12
        );
        assert_eq!(
            store
                .advance_cursor("webhook:other", 3, t(3))
                .await
                .unwrap(),
            3
        );
    }
    let store = open(&dir).await;
    assert_eq!(store.cursor("webhook:ops").await.unwrap(), Some(12));
    assert_eq!(store.cursor("webhook:other").await.unwrap(), Some(3));
}
