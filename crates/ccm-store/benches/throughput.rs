//! Store throughput, SQLite vs PostgreSQL, both durable (SQLite `synchronous = full`;
//! PostgreSQL with fsync and synchronous commit on, on loopback):
//!
//! - `update_many/1000`: one batch of 1,000 worker updates (the engine's writer path);
//! - `append/1x1000`: one append of 1,000 events;
//! - `append/1000x1`: 1,000 appends of one event each (one commit each).
//!
//! `cargo bench -p ccm-store --bench throughput` (PostgreSQL from Debian's package, as in the
//! tests). Each iteration's time is the whole batch.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark may panic

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ccm_domain::worker::{EndpointPolicy, InstanceObservation};
use ccm_domain::{Actor, Ec2State, Event, EventKind, InstanceId, Region, Worker, WorkerId};
use ccm_store::testkit::TestPostgres;
use ccm_store::{PgStore, SqliteStore, Store, StoreConfig};
use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use tokio::time::Instant;

const N: u32 = 1000;

fn worker(n: u32) -> Worker {
    let obs = InstanceObservation {
        instance_id: InstanceId::parse(&format!("i-{n:017x}")).unwrap(),
        state: Ec2State::Running,
        instance_type: None,
        ami_id: None,
        public_ip: None,
        private_ip: None,
        tags: BTreeMap::from([("Name".to_owned(), format!("w{n}"))]),
        launched_at: None,
        detailed_monitoring: false,
        state_reason: None,
    };
    Worker::import(
        &obs,
        Region::parse("eu-west-1").unwrap(),
        &EndpointPolicy::default(),
        Actor::user("bench"),
        Utc::now(),
    )
    .0
}

fn event(w: WorkerId) -> Event {
    Event::new(
        "/bench",
        Some(w),
        EventKind::WorkerStateChanged {
            from: Ec2State::Running,
            to: Ec2State::Stopping,
        },
        Utc::now(),
    )
}

fn bench_store(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, store: Arc<dyn Store>) {
    let mut workers: Vec<Worker> = rt.block_on(async {
        let mut out = Vec::new();
        for n in 0..N {
            out.push(store.insert(&worker(n)).await.unwrap());
        }
        out
    });
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("update_many/1000", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    for w in &mut workers {
                        w.tags.insert("i".into(), i.to_string());
                    }
                    let start = Instant::now();
                    let saved = store.update_many(&workers).await.unwrap();
                    total += start.elapsed();
                    workers = saved.into_iter().map(Result::unwrap).collect();
                }
                total
            })
        });
    });
    let ids: Vec<WorkerId> = workers.iter().map(|w| w.id).collect();
    group.bench_function("append/1x1000", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let events: Vec<Event> = ids.iter().map(|id| event(*id)).collect();
                    let start = Instant::now();
                    store.append(&events).await.unwrap();
                    total += start.elapsed();
                }
                total
            })
        });
    });
    group.bench_function("append/1000x1", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let events: Vec<Event> = ids.iter().map(|id| event(*id)).collect();
                    let start = Instant::now();
                    for e in events {
                        store.append(&[e]).await.unwrap();
                    }
                    total += start.elapsed();
                }
                total
            })
        });
    });
    group.finish();
}

fn throughput(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = rt
        .block_on(SqliteStore::open(&StoreConfig {
            path: Some(dir.path().join("bench.db")),
            ..StoreConfig::default()
        }))
        .unwrap();
    bench_store(c, &rt, "sqlite", Arc::new(sqlite));

    let pg = TestPostgres::start_durable().unwrap_or_else(|e| panic!("{e}"));
    let store = rt
        .block_on(async {
            let url = pg.create_database().await.unwrap();
            PgStore::connect(&url, &StoreConfig::default()).await
        })
        .unwrap();
    bench_store(c, &rt, "postgres", Arc::new(store));
}

criterion_group!(benches, throughput);
criterion_main!(benches);
