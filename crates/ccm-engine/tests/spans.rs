//! Logs say which job and which worker: every worker poll runs in a span with `job` and
//! `worker` (the worker id), so "poll failed" names the worker without the message saying so.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ccm_cml_sim::faults::FaultSpec;
use ccm_engine::JobKind;
use ccm_store::{SqliteStore, WorkerFilter};
use ccm_testbed::embedded::{Embedded, EmbeddedOptions};
use parking_lot::Mutex;

/// Log output kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }
}

// One thread: every task the engine spawns logs to the subscriber set for this test.
#[tokio::test(flavor = "current_thread")]
async fn a_failed_poll_should_be_logged_with_its_job_and_worker_id() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let (opts, _clock) = EmbeddedOptions::for_tests(2, Ipv4Addr::new(127, 58, 0, 1), store);
    let fleet = Embedded::start(opts).await.unwrap();
    let sick = fleet.sim.worker(1).unwrap();
    sick.apply_faults(&FaultSpec::parse("1:down").unwrap());
    let workers = fleet
        .engine
        .workers(&WorkerFilter::default())
        .await
        .unwrap()
        .items;
    let sick_id = workers
        .iter()
        .find(|w| w.endpoint.as_deref() == Some(sick.endpoint().as_str()))
        .expect("the sick worker was imported")
        .id;
    let well_id = workers.iter().find(|w| w.id != sick_id).unwrap().id;

    fleet.engine.trigger_job(JobKind::CmlSync).await.unwrap();
    fleet.shutdown().await;

    let text = logs.text();
    let failed: Vec<&str> = text.lines().filter(|l| l.contains("poll failed")).collect();
    assert_eq!(failed.len(), 1, "one poll failed:\n{text}");
    let line = failed[0];
    assert!(
        line.contains(&format!("worker={sick_id}")) && line.contains("job=\"cml_sync\""),
        "the failure names its job and worker id: {line}"
    );
    assert!(line.contains("nothing answered"), "{line}");
    assert!(!line.contains(&well_id.to_string()), "{line}");
}
