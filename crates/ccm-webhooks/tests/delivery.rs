//! Webhook delivery end to end: a real engine (embedded fleet, SQLite file) and a real HTTP
//! receiver (axum on a 127.x address) that fails for a while — 500s, then connection refused
//! — and recovers; then ccm restarts with events pending. Checked: every request's signature
//! and headers, per-worker (and per-webhook) order, no loss, resume from the stored cursor.
//! Network I/O runs in real time; every wait is bounded. Addresses 127.133.x are this file's.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use ccm_domain::Secret;
use ccm_domain::{Actor, EventKind, Region, WorkerId};
use ccm_engine::{FencingToken, Grant, GrantScope, JobKind, Ownership};
use ccm_store::SqliteStore;
use ccm_testbed::embedded::{Embedded, EmbeddedOptions};
use ccm_webhooks::{DeliveryState, WebhookConfig, WebhookStatus, Webhooks, signature};
use parking_lot::Mutex;
use serde_json::Value;

const SECRET: &str = "test-webhook-secret-0123456789";

/// One request the receiver accepted.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    worker: String,
    n: u64,
}

#[derive(Default)]
struct Inbox {
    failing: AtomicBool,
    /// Requests answered 500.
    refused: AtomicU32,
    /// Requests with a wrong signature, content type or headers (must stay 0).
    malformed: AtomicU32,
    accepted: Mutex<Vec<Received>>,
}

async fn receive(
    State(inbox): State<Arc<Inbox>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    // Every answer closes its connection, so that a stopped receiver refuses the next one.
    let close = [(header::CONNECTION, "close")];
    let sig = headers
        .get(signature::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ok_headers = signature::verify(SECRET, &body, sig)
        && headers[header::CONTENT_TYPE] == "application/cloudevents+json; charset=utf-8"
        && headers["x-ccm-webhook"] == "ops"
        && headers["x-ccm-delivery"]
            .to_str()
            .is_ok_and(|d| uuid::Uuid::parse_str(d).is_ok())
        && headers[header::USER_AGENT]
            .to_str()
            .is_ok_and(|u| u.starts_with("ccm/"));
    if !ok_headers {
        inbox.malformed.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::BAD_REQUEST, close, "bad signature or headers");
    }
    if inbox.failing.load(Ordering::SeqCst) {
        inbox.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::INTERNAL_SERVER_ERROR, close, "receiver is sick");
    }
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["type"], "ccm.worker.tags_updated");
    inbox.accepted.lock().push(Received {
        id: event["id"].as_str().unwrap().to_owned(),
        worker: event["subject"].as_str().unwrap().to_owned(),
        n: event["data"]["set"]["n"].as_str().unwrap().parse().unwrap(),
    });
    (StatusCode::NO_CONTENT, close, "")
}

/// The receiver's accept loop (stopping it makes the address refuse connections).
struct Receiver {
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(addr: SocketAddr, inbox: Arc<Inbox>) -> (Self, SocketAddr) {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let bound = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/hooks/ccm", axum::routing::post(receive))
            .with_state(inbox);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (Self { task }, bound)
    }

    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn start_engine(db: &std::path::Path, base: [u8; 4]) -> Embedded {
    let store = Arc::new(
        SqliteStore::open(&ccm_store::StoreConfig {
            path: Some(db.to_owned()),
            ..ccm_store::StoreConfig::default()
        })
        .await
        .unwrap(),
    );
    let (opts, _clock) = EmbeddedOptions::for_tests(1, Ipv4Addr::from(base), store);
    Embedded::start(opts).await.unwrap()
}

fn hook(url: &str) -> WebhookConfig {
    let mut h = WebhookConfig::new("ops", url, Secret::from(SECRET));
    h.events = vec!["ccm.worker.tags_updated".into()];
    h.timeout = Duration::from_secs(2);
    h.retry_base = Duration::from_millis(20);
    h.retry_max = Duration::from_millis(200);
    h
}

/// Emits `ns` as tag updates, round robin over the workers; returns the event ids.
async fn emit(fleet: &Embedded, workers: &[WorkerId], ns: std::ops::Range<u64>) {
    for n in ns {
        let w = workers[(n % workers.len() as u64) as usize];
        fleet
            .engine
            .emit(
                Some(w),
                vec![EventKind::WorkerTagsUpdated {
                    set: BTreeMap::from([("n".to_owned(), n.to_string())]),
                    removed: vec![],
                    by: Actor::system("test"),
                }],
            )
            .await;
    }
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

fn distinct(inbox: &Inbox) -> usize {
    let all = inbox.accepted.lock();
    all.iter()
        .map(|r| r.id.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len()
}

fn status(hooks: &Webhooks) -> WebhookStatus {
    hooks.statuses().remove(0)
}

#[tokio::test]
async fn deliveries_should_survive_a_failing_receiver_and_a_restart_in_order_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ccm.db");
    let inbox = Arc::new(Inbox::default());
    let (receiver, addr) = Receiver::start("127.133.9.1:0".parse().unwrap(), inbox.clone()).await;
    let url = format!("http://{addr}/hooks/ccm");
    let workers = [WorkerId::new(), WorkerId::new(), WorkerId::new()];

    let fleet = start_engine(&db, [127, 133, 0, 1]).await;
    let hooks = Webhooks::start(&fleet.engine, vec![hook(&url)]).unwrap();
    until("the loop to start", || {
        status(&hooks).state == DeliveryState::Idle
    })
    .await;

    // 1. A healthy receiver gets everything.
    emit(&fleet, &workers, 0..9).await;
    until("9 deliveries", || distinct(&inbox) == 9).await;

    // 2. It answers 500 for a while: nothing is skipped, later events wait.
    inbox.failing.store(true, Ordering::SeqCst);
    emit(&fleet, &workers, 9..18).await;
    until("three refused attempts", || {
        inbox.refused.load(Ordering::SeqCst) >= 3
    })
    .await;
    let s = status(&hooks);
    assert_eq!(s.state, DeliveryState::Failing, "{s:?}");
    assert!(
        s.last_error.as_deref().unwrap().contains("HTTP 500"),
        "{s:?}"
    );
    assert!(
        s.last_error
            .as_deref()
            .unwrap()
            .contains("receiver is sick"),
        "{s:?}"
    );
    assert!(s.blocked_on.is_some(), "{s:?}");
    assert_eq!(distinct(&inbox), 9, "nothing passes a failing event");

    // 3. Then it is gone (connection refused), and more events arrive meanwhile.
    receiver.stop().await;
    let before = status(&hooks).failed_attempts;
    until("a refused connection", || {
        let s = status(&hooks);
        s.failed_attempts > before + 1
            && s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("transport"))
    })
    .await;
    emit(&fleet, &workers, 18..21).await;

    // 4. It comes back: everything arrives.
    inbox.failing.store(false, Ordering::SeqCst);
    let (receiver, _) = Receiver::start(addr, inbox.clone()).await;
    until("21 deliveries", || distinct(&inbox) == 21).await;
    until("the webhook to be idle", || {
        status(&hooks).state == DeliveryState::Idle
    })
    .await;
    let s = status(&hooks);
    assert_eq!(s.consecutive_failures, 0, "{s:?}");
    assert!(s.blocked_on.is_none(), "{s:?}");
    assert_eq!(s.lag, 0, "{s:?}");
    assert_eq!(s.url, format!("http://{addr}"), "the origin only");

    // 5. Failing again, with events pending, ccm restarts.
    inbox.failing.store(true, Ordering::SeqCst);
    emit(&fleet, &workers, 21..27).await;
    let refused = inbox.refused.load(Ordering::SeqCst);
    until("a refusal after the restart point", || {
        inbox.refused.load(Ordering::SeqCst) > refused
    })
    .await;
    let sent_before_restart = inbox.accepted.lock().len();
    hooks.stop();
    fleet.shutdown().await;

    inbox.failing.store(false, Ordering::SeqCst);
    // (A fresh simulator address: the old simulator may still be winding down.)
    let fleet = start_engine(&db, [127, 133, 2, 1]).await;
    let hooks = Webhooks::start(&fleet.engine, vec![hook(&url)]).unwrap();
    until("27 deliveries", || distinct(&inbox) == 27).await;
    until("the webhook to be idle again", || {
        status(&hooks).state == DeliveryState::Idle
    })
    .await;

    // Signatures and headers were right on every request.
    assert_eq!(inbox.malformed.load(Ordering::SeqCst), 0);
    let all = inbox.accepted.lock().clone();
    // Resumed from the stored cursor: what was acknowledged before is not sent again.
    assert_eq!(
        all.len(),
        27,
        "{} sent before the restart",
        sent_before_restart
    );
    // No loss, in order: every n once, in emission (= log) order, so per worker too.
    let ns: Vec<u64> = all.iter().map(|r| r.n).collect();
    assert_eq!(ns, (0..27).collect::<Vec<_>>());
    let mut per_worker: HashMap<&str, Vec<u64>> = HashMap::new();
    for r in &all {
        per_worker.entry(r.worker.as_str()).or_default().push(r.n);
    }
    assert_eq!(per_worker.len(), 3);
    for (w, ns) in per_worker {
        assert!(ns.windows(2).all(|p| p[0] < p[1]), "{w}: {ns:?}");
    }
    hooks.stop();
    fleet.shutdown().await;
    receiver.stop().await;
}

/// Grants the webhook job only while switched on; each grant has a new token.
#[derive(Debug, Default)]
struct Lease {
    held: AtomicBool,
    epoch: AtomicU64,
}

impl Ownership for Lease {
    fn owns_worker(&self, id: WorkerId) -> Option<Grant> {
        Some(Grant::new(GrantScope::Worker(id), FencingToken::new(1)))
    }

    fn may_run(&self, job: JobKind, region: Option<&Region>) -> Option<Grant> {
        if job != JobKind::Webhooks {
            return Some(Grant::new(
                GrantScope::Job(job, region.cloned()),
                FencingToken::new(1),
            ));
        }
        self.held.load(Ordering::SeqCst).then(|| {
            Grant::new(
                GrantScope::Job(job, None),
                FencingToken::new(self.epoch.load(Ordering::SeqCst)),
            )
        })
    }

    fn holds(&self, grant: &Grant) -> bool {
        self.held.load(Ordering::SeqCst) && grant.token().get() == self.epoch.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_replica_without_the_delivery_lease_should_stand_by_until_it_gets_it() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = Arc::new(Inbox::default());
    let (receiver, addr) = Receiver::start("127.133.9.2:0".parse().unwrap(), inbox.clone()).await;
    let fleet = start_engine(&dir.path().join("ccm.db"), [127, 133, 1, 1]).await;
    let lease = Arc::new(Lease::default());
    let hooks = Webhooks::start_with_ownership(
        &fleet.engine,
        vec![hook(&format!("http://{addr}/hooks/ccm"))],
        lease.clone(),
    )
    .unwrap();
    until("standby", || status(&hooks).state == DeliveryState::Standby).await;
    let workers = [WorkerId::new()];
    emit(&fleet, &workers, 0..3).await;
    // Woken by the events, it still stands by (another replica delivers).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(distinct(&inbox), 0);
    assert_eq!(status(&hooks).state, DeliveryState::Standby);

    // Granted now: it starts at the log's end as a new webhook would (the holder before it
    // had stored no cursor), so only events from now on arrive.
    lease.epoch.store(2, Ordering::SeqCst);
    lease.held.store(true, Ordering::SeqCst);
    until("idle under the lease", || {
        status(&hooks).state == DeliveryState::Idle
    })
    .await;
    emit(&fleet, &workers, 3..6).await;
    until("3 deliveries", || distinct(&inbox) == 3).await;
    let ns: Vec<u64> = inbox.accepted.lock().iter().map(|r| r.n).collect();
    assert_eq!(ns, [3, 4, 5]);

    // The lease moves away: it stands by again and delivers nothing more.
    lease.held.store(false, Ordering::SeqCst);
    emit(&fleet, &workers, 6..8).await;
    until("standby again", || {
        status(&hooks).state == DeliveryState::Standby
    })
    .await;
    assert!(distinct(&inbox) <= 5, "at most what was in flight");
    hooks.stop();
    fleet.shutdown().await;
    receiver.stop().await;
}
