//! The store suite on SQLite files (`ccm_store::testkit::suite`, the same cases as on
//! PostgreSQL), plus what only SQLite has: durability across SIGKILL and the integrity check.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

ccm_store::store_suite!(ccm_store::testkit::SqliteBackend::new());

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use ccm_domain::worker::{EndpointPolicy, InstanceObservation};
use ccm_domain::{Actor, Ec2State, Event, EventKind, InstanceId, Region, Worker, WorkerId};
use ccm_store::{EventLog, EventQuery, SqliteStore, Store, StoreConfig, WorkerRepo};
use chrono::{DateTime, TimeZone, Utc};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
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
        path: Some(path.into()),
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
            path: Some(db.clone()),
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

/// Many writers at once on a file (the shape of `ccm demo --workers 5000` starting: an import
/// inserting while every poll writes) with a busy timeout far shorter than their wait: none
/// fails with `database is locked`, because writes queue for the one write connection instead
/// of racing for SQLite's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_should_queue_rather_than_fail_with_database_locked() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        path: Some(dir.path().join("busy.db")),
        busy_timeout: Duration::from_millis(1),
        ..StoreConfig::default()
    };
    let store = SqliteStore::open(&config).await.unwrap();
    const TASKS: u32 = 24;
    const WRITES: u32 = 40;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..WRITES {
                let n = task * WRITES + k;
                let w = store
                    .insert(&worker(n, &format!("w{n}"), "eu-west-1", Ec2State::Running))
                    .await?;
                let event = Event::new(
                    "/test",
                    Some(w.id),
                    EventKind::WorkerDeleted {
                        by: Actor::user("x"),
                    },
                    t(0),
                );
                store.append(&[event]).await?;
                let mut changed = w.clone();
                changed.name = format!("w{n}-renamed");
                store.update(&changed).await?;
            }
            Ok::<_, ccm_store::StoreError>(())
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("a write failed");
    }
    let all = store
        .list(&ccm_store::WorkerFilter::default())
        .await
        .unwrap();
    assert_eq!(all.total, u64::from(TASKS * WRITES));
    assert!(all.items.iter().all(|w| w.name.ends_with("-renamed")));
    assert_eq!(store.last_seq().await.unwrap(), u64::from(TASKS * WRITES));
    store.close().await;
}
