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
