//! SQLite's connection threads and OS priorities (ARCHITECTURE.md, "Runtimes"): every
//! connection runs on a thread of its own, which takes the nice value of the thread that
//! opened it. The store opens them all when it opens, so reads asked for later by a lowered
//! (niced) thread — the engine's runtime — never open a connection at the engine's priority
//! that the API's reads would then share.
//!
//! One test in this file: it counts the process's SQLite threads.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic
#![cfg(target_os = "linux")]

use ccm_domain::WorkerId;
use ccm_store::{SqliteStore, StoreConfig, WorkerRepo};

/// The nice value of each of this process's SQLite connection threads (`/proc/self/task`).
fn sqlite_thread_nices() -> Vec<i32> {
    let mut nices = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        // `comm` is cut at 15 bytes: "sqlx-sqlite-wor".
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if !comm.starts_with("sqlx-sqlite") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // After the `(comm)` field: state is field 3, nice field 19.
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        let nice = rest.split_whitespace().nth(16).unwrap().parse().unwrap();
        nices.push(nice);
    }
    nices
}

fn thread_nice() -> i32 {
    rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
}

#[test]
fn every_connection_should_be_opened_with_the_store_at_the_openers_priority() {
    let base = thread_nice();
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        path: Some(dir.path().join("ccm.db")),
        max_connections: 4,
        ..StoreConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt.block_on(SqliteStore::open(&config)).unwrap();
    // Four readers and the writer, opened by this thread.
    assert_eq!(sqlite_thread_nices(), vec![base; 5]);

    // Now this thread runs lowered, as the engine's do, and asks for many reads at once: a
    // pool that opened connections on demand would open them here, at the lowered priority.
    let me = Some(rustix::thread::gettid());
    rustix::process::setpriority_process(me, (base + 5).min(19)).unwrap();
    rt.block_on(async {
        let mut reads = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let store = store.clone();
            reads.spawn(async move { store.get(WorkerId::new()).await });
        }
        while let Some(read) = reads.join_next().await {
            assert!(read.unwrap().unwrap().is_none());
        }
    });
    assert_eq!(sqlite_thread_nices(), vec![base; 5]);
    rt.block_on(store.close());
}
