//! The store suite on a real PostgreSQL (`ccm_store::testkit::suite`, the same cases as on
//! SQLite), plus what only PostgreSQL has: the event notifications, connection errors, the
//! test server's own clean-up.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

ccm_store::store_suite!(ccm_store::testkit::PgBackend::start());

use std::time::Duration;

use ccm_domain::{Actor, Event, EventKind, WorkerId};
use ccm_store::testkit::TestPostgres;
use ccm_store::{EVENTS_CHANNEL, EventLog, PgStore, Store, StoreConfig, StoreError};
use chrono::Utc;
use sqlx::postgres::PgListener;

fn deleted() -> Event {
    Event::new(
        "/test",
        Some(WorkerId::new()),
        EventKind::WorkerDeleted {
            by: Actor::user("t"),
        },
        Utc::now(),
    )
}

async fn server_and_store() -> (TestPostgres, PgStore) {
    let pg = TestPostgres::start().unwrap_or_else(|e| panic!("{e}"));
    let url = pg.create_database().await.unwrap();
    let store = PgStore::connect(&url, &StoreConfig::default())
        .await
        .unwrap();
    (pg, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_should_notify_the_events_channel_with_the_last_position() {
    let (_pg, store) = server_and_store().await;
    let mut listener = PgListener::connect_with(store.pool()).await.unwrap();
    listener.listen(EVENTS_CHANNEL).await.unwrap();

    let seqs = store
        .append(&[deleted(), deleted(), deleted()])
        .await
        .unwrap();
    let last = seqs[2].unwrap();
    let note = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(note.channel(), EVENTS_CHANNEL);
    assert_eq!(
        note.payload(),
        last.to_string(),
        "one per append: the last position"
    );

    // A failed append (a duplicate event id) commits nothing and announces nothing.
    let dup = deleted();
    store.append(std::slice::from_ref(&dup)).await.unwrap();
    let after_dup = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        store.append(&[deleted(), dup]).await,
        Err(StoreError::Database(_))
    ));
    let next = store.append(&[deleted()]).await.unwrap()[0].unwrap();
    let note = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        note.payload(),
        next.to_string(),
        "nothing came between {} and {next}",
        after_dup.payload()
    );
    assert_eq!(store.last_seq().await.unwrap(), next);
}

#[tokio::test]
async fn an_unreachable_server_should_be_a_clear_error_within_the_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url =
        ccm_store::DatabaseUrl::parse(&format!("postgres://ccm:hunter2@127.0.0.1:{port}/ccm"))
            .unwrap();
    let config = StoreConfig {
        acquire_timeout: Duration::from_secs(2),
        ..StoreConfig::default()
    };
    let started = tokio::time::Instant::now();
    let err = PgStore::connect(&url, &config).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    assert!(
        text.starts_with(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port}/ccm: "
        )),
        "{text}"
    );
    assert!(text.to_lowercase().contains("refused"), "{text}");
    assert!(!text.contains("hunter2"));
}

#[tokio::test]
async fn a_wrong_password_should_be_refused_without_showing_it() {
    let pg = TestPostgres::start().unwrap_or_else(|e| panic!("{e}"));
    let url = ccm_store::DatabaseUrl::parse(&format!(
        "postgres://postgres:not-the-password@127.0.0.1:{}/postgres",
        pg.port()
    ))
    .unwrap();
    let err = PgStore::connect(&url, &StoreConfig::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
    assert!(!format!("{err:?}").contains("not-the-password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_should_all_find_the_schema_ready() {
    let pg = TestPostgres::start().unwrap_or_else(|e| panic!("{e}"));
    let url = pg.create_database().await.unwrap();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgStore::connect(&url, &StoreConfig::default()).await })
        })
        .collect();
    for s in starts {
        let store = s.await.unwrap().unwrap();
        store.ping().await.unwrap();
        assert_eq!(store.last_seq().await.unwrap(), 0);
    }
}

#[tokio::test]
async fn the_statement_timeout_should_stop_a_runaway_query() {
    let pg = TestPostgres::start().unwrap_or_else(|e| panic!("{e}"));
    let url = pg.create_database().await.unwrap();
    let config = StoreConfig {
        statement_timeout: Duration::from_secs(1),
        ..StoreConfig::default()
    };
    let store = PgStore::connect(&url, &config).await.unwrap();
    let err = sqlx::query("SELECT pg_sleep(30)")
        .execute(store.pool())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("statement timeout"), "{err}");
    store.ping().await.unwrap();
}

#[test]
fn the_test_server_should_stop_and_vanish_when_its_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let pg = TestPostgres::start().unwrap_or_else(|e| panic!("{e}"));
        tx.send((pg.data_dir(), pg.port())).unwrap();
        assert!(pg.data_dir().join("PG_VERSION").is_file());
        panic!("a failing test");
    })
    .join();
    assert!(outcome.is_err(), "the thread panicked");
    let (data, port) = rx.recv().unwrap();
    assert!(!data.exists(), "{} is left behind", data.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server still listens on {port}"
    );
}

// === Replicas and leases (several `ccm serve` on one database) ===

mod cluster {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use ccm_domain::worker::{EndpointPolicy, InstanceObservation};
    use ccm_domain::{Actor, Ec2State, Event, EventKind, InstanceId, Region, Worker};
    use ccm_store::testkit::suite::lab;
    use ccm_store::{
        ClusterRepo, EventLog, EventQuery, Fence, LabRepo, ReplicaRecord, Store, StoreError,
        WorkerRepo, WorkerWrite, WriteOutcome,
    };
    use chrono::Utc;

    use super::server_and_store;

    const LONG: Duration = Duration::from_secs(600);

    fn keys(ks: &[&str]) -> Vec<String> {
        ks.iter().map(|k| (*k).to_owned()).collect()
    }

    fn worker(n: u32) -> Worker {
        let obs = InstanceObservation {
            instance_id: InstanceId::parse(&format!("i-{n:017x}")).unwrap(),
            state: Ec2State::Running,
            instance_type: None,
            ami_id: None,
            public_ip: None,
            private_ip: None,
            tags: BTreeMap::new(),
            launched_at: None,
            detailed_monitoring: false,
            state_reason: None,
        };
        Worker::import(
            &obs,
            Region::parse("eu-west-1").unwrap(),
            &EndpointPolicy::default(),
            Actor::user("t"),
            Utc::now(),
        )
        .0
    }

    fn renamed(w: &Worker, name: &str, fence: Fence) -> WorkerWrite {
        let mut w = w.clone();
        w.name = name.to_owned();
        WorkerWrite {
            events: vec![Event::new(
                "/test",
                Some(w.id),
                EventKind::WorkerDeleted {
                    by: Actor::user("t"),
                },
                Utc::now(),
            )],
            worker: w,
            fence: Some(fence),
        }
    }

    /// The fencing test: A holds the lease, B takes it over (A's lease expired by the
    /// database's clock — TTL zero, no waiting), then A's write under its old token is refused
    /// in the write's own transaction — nothing saved, no event logged — while B's write under
    /// the new token is saved. The refusal comes from the token, not from timing: A's write is
    /// attempted after B's acquisition, and would otherwise succeed (the worker's version is
    /// current).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_holders_write_should_be_refused_by_its_fencing_token() {
        let (_pg, store) = server_and_store().await;
        let w = store.insert(&worker(1)).await.unwrap();
        let key = "part:0001".to_owned();
        let a = store
            .acquire("replica-a", std::slice::from_ref(&key), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(a.len(), 1);
        let a_fence = a[0].fence;
        let b = store
            .acquire("replica-b", std::slice::from_ref(&key), LONG)
            .await
            .unwrap();
        assert_eq!(b.len(), 1, "an expired lease is free to take");
        assert_eq!(
            b[0].fence,
            a_fence + 1,
            "every acquisition raises the fence"
        );
        assert_eq!(
            b[0].previous_holder, "replica-a",
            "a takeover names the old holder"
        );
        let before = store.last_seq().await.unwrap();

        let stale = store
            .save_changes(&[renamed(
                &w,
                "from-a",
                Fence {
                    key: key.clone(),
                    token: a_fence,
                },
            )])
            .await
            .unwrap();
        assert!(matches!(stale[0], WriteOutcome::Fenced), "{:?}", stale[0]);
        assert_eq!(store.get(w.id).await.unwrap().unwrap().name, w.name);
        assert_eq!(
            store.last_seq().await.unwrap(),
            before,
            "no event of a refused write"
        );
        assert!(
            store
                .renew("replica-a", &[(key.clone(), a_fence)], LONG)
                .await
                .unwrap()
                .is_empty(),
            "the old holder cannot renew what it lost"
        );

        let fresh = store
            .save_changes(&[renamed(
                &w,
                "from-b",
                Fence {
                    key: key.clone(),
                    token: b[0].fence,
                },
            )])
            .await
            .unwrap();
        assert!(
            matches!(fresh[0], WriteOutcome::Saved { .. }),
            "{:?}",
            fresh[0]
        );
        assert_eq!(store.get(w.id).await.unwrap().unwrap().name, "from-b");
        let logged = store
            .read(&EventQuery {
                after: Some(before),
                ..EventQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(
            logged.len(),
            1,
            "the saved write's event, in the same transaction"
        );
    }

    /// A lease that expired without anyone taking it is not held either: a write under it is
    /// refused (the database's clock decides, not the writer's).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_under_an_expired_lease_should_be_refused() {
        let (_pg, store) = server_and_store().await;
        let w = store.insert(&worker(2)).await.unwrap();
        let got = store
            .acquire("replica-a", &keys(&["part:0002"]), Duration::ZERO)
            .await
            .unwrap();
        let out = store
            .save_changes(&[renamed(
                &w,
                "late",
                Fence {
                    key: "part:0002".into(),
                    token: got[0].fence,
                },
            )])
            .await
            .unwrap();
        assert!(matches!(out[0], WriteOutcome::Fenced), "{:?}", out[0]);
        // A fence naming a lease that never existed is refused too.
        let out = store
            .save_changes(&[renamed(
                &w,
                "nobody",
                Fence {
                    key: "part:9999".into(),
                    token: 1,
                },
            )])
            .await
            .unwrap();
        assert!(matches!(out[0], WriteOutcome::Fenced), "{:?}", out[0]);
    }

    /// Lab writes are fenced like worker writes: after B took the partition over, A's lab
    /// refresh under its old token writes nothing (neither a replace nor an upsert), and B's
    /// under the new token is saved. Without a fence (a command), the write goes through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_holders_lab_write_should_be_refused_by_its_fencing_token() {
        let (_pg, store) = server_and_store().await;
        let w = store.insert(&worker(3)).await.unwrap();
        let key = "part:0003".to_owned();
        let a = store
            .acquire("replica-a", std::slice::from_ref(&key), Duration::ZERO)
            .await
            .unwrap();
        let b = store
            .acquire("replica-b", std::slice::from_ref(&key), LONG)
            .await
            .unwrap();
        let stale = Fence {
            key: key.clone(),
            token: a[0].fence,
        };
        let current = Fence {
            key: key.clone(),
            token: b[0].fence,
        };
        let refused = store
            .replace_labs(w.id, &[lab(w.id, "l1", "from a")], Some(&stale))
            .await;
        assert!(
            matches!(refused, Err(StoreError::Fenced { ref key, token }) if *key == stale.key && token == stale.token),
            "{refused:?}"
        );
        let refused = store
            .upsert_labs(&[lab(w.id, "l2", "from a")], Some(&stale))
            .await;
        assert!(
            matches!(refused, Err(StoreError::Fenced { .. })),
            "{refused:?}"
        );
        assert!(
            store.list_labs(w.id).await.unwrap().is_empty(),
            "A wrote nothing"
        );

        let (added, removed) = store
            .replace_labs(w.id, &[lab(w.id, "l1", "from b")], Some(&current))
            .await
            .unwrap();
        assert_eq!((added, removed), (1, 0));
        store
            .upsert_labs(&[lab(w.id, "l2", "from b")], Some(&current))
            .await
            .unwrap();
        store
            .upsert_labs(&[lab(w.id, "l3", "a command")], None)
            .await
            .unwrap();
        let titles: Vec<String> = store
            .list_labs(w.id)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.title)
            .collect();
        assert_eq!(titles, ["a command", "from b", "from b"]);
    }

    /// Replicas renew, release and acquire overlapping sets of keys at the same moment, each
    /// listing them in its own order (a replica's held leases are a hash map). Every statement
    /// locks the lease rows in key order, so none of them ever waits on another that waits on
    /// it: PostgreSQL would otherwise abort one with "deadlock detected", a whole lease round
    /// lost (and a second's stall each time).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overlapping_lease_rounds_should_never_deadlock() {
        let (_pg, store) = server_and_store().await;
        let ks: Vec<String> = (0..64).map(|p| format!("part:{p:04}")).collect();
        let mut held: Vec<(String, u64)> = store
            .acquire("a", &ks, LONG)
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.key, l.fence))
            .collect();
        assert_eq!(held.len(), ks.len());
        held.reverse();
        let rounds = 150;
        let renewer = {
            let store = store.clone();
            let held = held.clone();
            tokio::spawn(async move {
                for _ in 0..rounds {
                    let renewed = store.renew("a", &held, LONG).await?;
                    assert_eq!(renewed.len(), held.len(), "a keeps every lease");
                }
                Ok::<_, StoreError>(())
            })
        };
        let taker = {
            let store = store.clone();
            let ks = ks.clone();
            tokio::spawn(async move {
                for _ in 0..rounds {
                    let got = store.acquire("b", &ks, LONG).await?;
                    assert!(got.is_empty(), "held leases are not taken: {got:?}");
                }
                Ok::<_, StoreError>(())
            })
        };
        renewer.await.unwrap().unwrap();
        taker.await.unwrap().unwrap();

        // Then a releases them (its order again reversed) while b keeps trying: b ends up with
        // every key, each once.
        let taker = {
            let store = store.clone();
            let ks = ks.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..rounds {
                    got.extend(
                        store
                            .acquire("b", &ks, LONG)
                            .await?
                            .into_iter()
                            .map(|l| l.key),
                    );
                    if got.len() == ks.len() {
                        break;
                    }
                }
                Ok::<_, StoreError>(got)
            })
        };
        assert_eq!(store.release("a", &held).await.unwrap(), 64);
        let mut got = taker.await.unwrap().unwrap();
        if got.len() < ks.len() {
            got.extend(
                store
                    .acquire("b", &ks, LONG)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|l| l.key),
            );
        }
        got.sort();
        assert_eq!(got, ks);
    }

    /// Acquire takes only free or expired keys; renew extends only what the holder still has
    /// under its token; release frees at once (no takeover: the holder is cleared) and the
    /// fence keeps growing across holders.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leases_should_be_acquired_when_free_renewed_by_their_holder_and_released() {
        let (_pg, store) = server_and_store().await;
        let ks = keys(&["job:ec2_sync:eu-west-1", "part:0000", "part:0001"]);
        let a = store.acquire("a", &ks, LONG).await.unwrap();
        assert_eq!(a.len(), 3);
        assert!(
            a.iter()
                .all(|l| l.fence == 1 && l.previous_holder.is_empty())
        );
        assert!(
            store.acquire("b", &ks, LONG).await.unwrap().is_empty(),
            "held leases are not taken"
        );
        let held: Vec<(String, u64)> = a.iter().map(|l| (l.key.clone(), l.fence)).collect();
        let mut renewed = store.renew("a", &held, LONG).await.unwrap();
        renewed.sort();
        assert_eq!(renewed, ks);
        assert!(
            store.renew("b", &held, LONG).await.unwrap().is_empty(),
            "only the holder renews"
        );
        assert_eq!(store.release("a", &held[..1]).await.unwrap(), 1);
        let b = store.acquire("b", &ks, LONG).await.unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].key, ks[0]);
        assert_eq!(b[0].fence, 2);
        assert!(
            b[0].previous_holder.is_empty(),
            "a handover, not a takeover"
        );
        let listed = store.leases().await.unwrap();
        assert_eq!(listed.len(), 3);
        assert_eq!(listed[0].holder, "b");
        assert!(
            listed
                .iter()
                .all(|l| l.remaining > Duration::from_secs(500))
        );
    }

    /// Heartbeats are stamped by the database; a replica's row goes away when it leaves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_should_register_beat_and_leave() {
        let (_pg, store) = server_and_store().await;
        let me = ReplicaRecord {
            id: "r1".into(),
            address: "127.0.0.1:8080".into(),
            version: "0.1.0".into(),
            started_at: Utc::now(),
        };
        store.heartbeat(&me).await.unwrap();
        store
            .heartbeat(&ReplicaRecord {
                id: "r2".into(),
                ..me.clone()
            })
            .await
            .unwrap();
        let rows = store.replicas().await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].record.id, "r1");
        assert!(rows[0].heartbeat_age < Duration::from_secs(5));
        store.forget("r1", LONG).await.unwrap();
        let rows = store.replicas().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].record.id, "r2");
        assert!(store.cluster().is_some(), "PostgreSQL supports replicas");
    }
}
