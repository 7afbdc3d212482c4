use std::net::SocketAddr;
use std::time::Duration;

use ccm_api::sse_client::{SseItem, SseMessage, SseReader};
use ccm_domain::{EventKind, ServiceStatus};
use ccm_store::EventQuery;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{MANAGER, TestApi, VIEWER};

async fn connect(addr: SocketAddr, query: &str, last_event_id: Option<u64>) -> SseReader {
    let mut req = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/events{query}"))
        .bearer_auth(VIEWER);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    SseReader::new(res)
}

async fn next_message(r: &mut SseReader) -> SseMessage {
    tokio::time::timeout(Duration::from_secs(15), r.next_message())
        .await
        .expect("no message within 15 s")
        .expect("the stream ended")
        .expect("the stream failed")
}

fn data(m: &SseMessage) -> Value {
    serde_json::from_str(&m.data).unwrap()
}

async fn toggle_idle(api: &TestApi, id: &str, enabled: bool) {
    api.call(
        http::Method::PUT,
        &format!("/api/v1/workers/{id}/idle-detection"),
        Some(MANAGER),
        Some(json!({"enabled": enabled})),
    )
    .await
    .ok(200);
}

#[tokio::test]
async fn the_stream_should_start_with_a_snapshot_then_live_cloudevents() {
    let api = TestApi::start(91, 2).await;
    let addr = api.serve().await;
    let ids: Vec<String> = api
        .workers()
        .await
        .iter()
        .map(|w| w.id.to_string())
        .collect();
    let mut r = connect(addr, "", None).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let m = next_message(&mut r).await;
        assert_eq!(m.event_type(), "ccm.worker.snapshot");
        assert!(m.id.is_none(), "snapshots are not in the log");
        let e = data(&m);
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["type"], "ccm.worker.snapshot");
        assert_eq!(e["subject"], e["data"]["worker"]["id"]);
        assert!(e["data"]["worker"]["sources"]["system_information"]["freshness"].is_string());
        seen.push(e["subject"].as_str().unwrap().to_owned());
    }
    seen.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(seen, want);
    // Snapshots go to this client only, never on the bus or into the log.
    let logged = api
        .fleet
        .engine
        .store()
        .read(&EventQuery {
            types: vec!["ccm.worker.snapshot".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(logged.is_empty());

    toggle_idle(&api, &ids[0], false).await;
    // Job runs of the background loops (`ccm.job.*`, live only) may come first.
    let m = loop {
        let m = next_message(&mut r).await;
        if !m.event_type().starts_with("ccm.job.") {
            break m;
        }
    };
    assert_eq!(m.event_type(), "ccm.worker.idle_detection_changed");
    let seq: u64 = m.id.as_deref().unwrap().parse().unwrap();
    let e = data(&m);
    assert_eq!(e["subject"], ids[0]);
    assert_eq!(e["data"]["enabled"], false);
    assert_eq!(e["data"]["by"], "token:manager");
    let stored = api
        .fleet
        .engine
        .store()
        .read(&EventQuery {
            after: Some(seq - 1),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stored[0].seq, seq);
    assert_eq!(stored[0].event.id.to_string(), e["id"].as_str().unwrap());
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn filters_should_select_workers_and_types() {
    let api = TestApi::start(92, 2).await;
    let addr = api.serve().await;
    let ids: Vec<String> = api
        .workers()
        .await
        .iter()
        .map(|w| w.id.to_string())
        .collect();
    let mut only = connect(
        addr,
        &format!("?worker={}&type=ccm.worker.idle_detection_changed", ids[0]),
        None,
    )
    .await;
    let mut prefix = connect(addr, &format!("?worker={}&type=ccm.worker.*", ids[0]), None).await;
    let m = next_message(&mut prefix).await;
    assert_eq!(m.event_type(), "ccm.worker.snapshot");
    assert_eq!(data(&m)["subject"], ids[0]);

    toggle_idle(&api, &ids[1], false).await;
    api.fleet
        .engine
        .emit(None, vec![EventKind::RetryBudgetExhausted {}])
        .await;
    toggle_idle(&api, &ids[0], false).await;
    for r in [&mut only, &mut prefix] {
        let m = next_message(r).await;
        assert_eq!(m.event_type(), "ccm.worker.idle_detection_changed");
        assert_eq!(
            data(&m)["subject"],
            ids[0],
            "other workers and fleet events are filtered out"
        );
    }

    let client = crate::support::http();
    for (query, status, field) in [
        ("?type=ccm.nope", 422, "type"),
        ("?type=ccm.wor*", 422, "type"),
        ("?worker=nope", 422, "worker"),
        ("?last_event_id=x", 400, "last_event_id"),
        ("?colour=red", 400, "colour"),
    ] {
        let res = client
            .get(format!("http://{addr}/api/v1/events{query}"))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{query}");
        let p: Value = res.json().await.unwrap();
        assert_eq!(p["field"], field, "{query}");
    }
    let res = client
        .get(format!("http://{addr}/api/v1/events"))
        .bearer_auth(VIEWER)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn heartbeats_should_keep_an_idle_stream_alive() {
    let api = TestApi::start_with(93, 1, |_, cfg, _| {
        cfg.sse_heartbeat = Duration::from_millis(200)
    })
    .await;
    let addr = api.serve().await;
    // Worker events only: the housekeeping job's runs are announced (`ccm.job.*`).
    let mut r = connect(addr, "?snapshot=false&type=ccm.worker.*", None).await;
    let mut beats = 0;
    let started = tokio::time::Instant::now();
    while beats < 3 {
        let item = tokio::time::timeout(Duration::from_secs(5), r.next())
            .await
            .expect("no heartbeat within 5 s")
            .unwrap()
            .unwrap();
        match item {
            SseItem::Comment(c) if c == "heartbeat" => beats += 1,
            SseItem::Comment(c) => assert_eq!(c, "connected"),
            SseItem::Message(m) => panic!("unexpected message {m:?}"),
        }
    }
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "heartbeats are spaced"
    );
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn last_event_id_should_resume_without_gaps_or_duplicates() {
    let api = TestApi::start(94, 1).await;
    let addr = api.serve().await;
    let id = api.workers().await[0].id.to_string();
    let mut first = connect(
        addr,
        "?snapshot=false&type=ccm.worker.idle_detection_changed",
        None,
    )
    .await;
    for i in 0..10 {
        toggle_idle(&api, &id, i % 2 == 0).await;
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(
            next_message(&mut first)
                .await
                .id
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
    }
    drop(first); // disconnected after 5 of 10
    let last = *got.last().unwrap();

    // More events while disconnected, and more while reconnecting.
    for i in 0..5 {
        toggle_idle(&api, &id, i % 2 == 0).await;
    }
    let publisher = {
        let engine = api.fleet.engine.clone();
        let worker = api.workers().await[0].id;
        tokio::spawn(async move {
            for i in 0..200 {
                engine
                    .set_idle_detection(worker, i % 2 == 0, &ccm_domain::Actor::user("bg"))
                    .await
                    .unwrap();
            }
        })
    };
    let mut second = connect(
        addr,
        "?snapshot=false&type=ccm.worker.idle_detection_changed",
        Some(last),
    )
    .await;
    publisher.await.unwrap();
    let total = api
        .fleet
        .engine
        .store()
        .read(&EventQuery {
            types: vec!["ccm.worker.idle_detection_changed".into()],
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let expected: Vec<u64> = total.iter().map(|e| e.seq).filter(|s| *s > last).collect();
    // (Setting the value it already has emits nothing, so count from the log.)
    assert!(expected.len() > 200, "{}", expected.len());
    let mut resumed = Vec::new();
    while resumed.len() < expected.len() {
        resumed.push(
            next_message(&mut second)
                .await
                .id
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
    }
    assert_eq!(
        resumed, expected,
        "every event after Last-Event-ID, once, in order"
    );
    // The query form works too.
    let mut third = connect(
        addr,
        &format!(
            "?snapshot=false&type=ccm.worker.*&last_event_id={}",
            expected[expected.len() - 2]
        ),
        None,
    )
    .await;
    assert_eq!(
        next_message(&mut third)
            .await
            .id
            .unwrap()
            .parse::<u64>()
            .unwrap(),
        expected[expected.len() - 1]
    );
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn a_last_event_id_above_the_log_head_should_replay_from_the_start_and_say_so() {
    let api = TestApi::start(98, 1).await;
    let addr = api.serve().await;
    let id = api.workers().await[0].id.to_string();
    for i in 0..4 {
        toggle_idle(&api, &id, i % 2 == 1).await;
    }
    let store = api.fleet.engine.store();
    let kept: Vec<u64> = store
        .read(&EventQuery {
            types: vec!["ccm.worker.idle_detection_changed".into()],
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert!(kept.len() >= 3, "{kept:?}");
    let head = store.last_seq().await.unwrap();
    // As after a restored backup: the client saw ids the log no longer reaches.
    let ahead = head + 1000;
    let mut r = connect(
        addr,
        "?snapshot=false&type=ccm.worker.idle_detection_changed",
        Some(ahead),
    )
    .await;
    let reset = next_message(&mut r).await;
    assert_eq!(reset.event_type(), "ccm.stream.reset");
    assert_eq!(reset.id, None, "not a log position");
    let d = data(&reset);
    assert_eq!(d["data"]["reason"], "last_event_id_ahead", "{d}");
    assert_eq!(d["data"]["last_event_id"], ahead);
    assert_eq!(d["data"]["newest_event_id"], head);
    let mut replayed = Vec::new();
    while replayed.len() < kept.len() {
        let m = next_message(&mut r).await;
        replayed.push(m.id.unwrap().parse::<u64>().unwrap());
    }
    assert_eq!(replayed, kept, "everything kept, from the start, in order");
    // Then live, as usual.
    toggle_idle(&api, &id, false).await;
    toggle_idle(&api, &id, true).await;
    let live = next_message(&mut r).await;
    assert!(live.id.unwrap().parse::<u64>().unwrap() > head);
    // A Last-Event-ID at the head is an ordinary resume: no reset.
    let mut at_head = connect(
        addr,
        "?snapshot=false&type=ccm.worker.idle_detection_changed",
        Some(store.last_seq().await.unwrap()),
    )
    .await;
    toggle_idle(&api, &id, false).await;
    let m = next_message(&mut at_head).await;
    assert_eq!(m.event_type(), "ccm.worker.idle_detection_changed");
    api.fleet.shutdown().await;
}

/// A client that sends its request and then never reads.
async fn stalled_client(addr: SocketAddr) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /api/v1/events?snapshot=false HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {VIEWER}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// Publishes `batches` × 50 padded transient events, each batch only once the fast client
/// has received the previous one (so the fast client never lags).
async fn publish_paced(api: &TestApi, fast: &mut SseReader, batches: usize, pad: usize) -> usize {
    let padding = "x".repeat(pad);
    let mut received = 0;
    for b in 0..batches {
        let kinds = (0..50)
            .map(|i| EventKind::WorkerSynced {
                service: ServiceStatus::Ready,
                version: Some(format!("{b}-{i}-{padding}")),
                cpu_percent: None,
                memory_percent: None,
                running_nodes: None,
            })
            .collect();
        api.fleet.engine.emit(None, kinds).await;
        loop {
            let m = next_message(fast).await;
            assert_ne!(
                m.event_type(),
                "reset",
                "the fast client must never be dropped"
            );
            if m.event_type() == "ccm.worker.synced" {
                received += 1;
                if data(&m)["data"]["version"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{b}-49-"))
                {
                    break;
                }
            }
        }
    }
    received
}

async fn wait_clients(api: &TestApi, n: usize) {
    for _ in 0..300 {
        if api.state.sse_clients() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "still {} SSE clients, expected {n}",
        api.state.sse_clients()
    );
}

#[tokio::test]
async fn a_slow_client_should_get_a_reset_and_be_dropped_while_a_fast_one_keeps_up() {
    let api = TestApi::start_with(95, 1, |_, cfg, _| {
        cfg.sse_buffer = 64;
        cfg.write_stall_timeout = Duration::from_secs(120);
    })
    .await;
    let addr = api.serve().await;
    let mut fast = connect(addr, "?snapshot=false&type=ccm.worker.synced", None).await;
    let mut slow = stalled_client(addr).await;
    wait_clients(&api, 2).await;
    // ~30 MB: far more than the socket buffers of the stalled client hold.
    let got = tokio::time::timeout(
        Duration::from_secs(120),
        publish_paced(&api, &mut fast, 160, 4000),
    )
    .await
    .expect("publishing took too long: the fast client was slowed down");
    assert_eq!(got, 160 * 50);

    // The slow client finally reads: what was buffered, then the reset, then the end.
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), slow.read_to_end(&mut all))
        .await
        .expect("the slow client was never disconnected")
        .unwrap();
    let text = String::from_utf8_lossy(&all);
    let tail = &text[text.len().saturating_sub(300)..];
    assert!(tail.contains("event: reset"), "no reset at the end: {tail}");
    assert!(tail.contains("\"reason\":\"lagged\""), "{tail}");
    wait_clients(&api, 1).await;
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_should_be_cut_off_by_the_write_stall_timeout() {
    let api = TestApi::start_with(96, 1, |_, cfg, _| {
        cfg.sse_buffer = 100_000;
        cfg.write_stall_timeout = Duration::from_millis(500);
    })
    .await;
    let addr = api.serve().await;
    let mut fast = connect(addr, "?snapshot=false&type=ccm.worker.synced", None).await;
    let _stuck = stalled_client(addr).await;
    wait_clients(&api, 2).await;
    publish_paced(&api, &mut fast, 100, 4000).await;
    // The stuck client is gone; the fast one is still there and still served.
    wait_clients(&api, 1).await;
    publish_paced(&api, &mut fast, 1, 10).await;
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn too_many_clients_should_be_refused_with_503() {
    let api = TestApi::start_with(97, 1, |_, cfg, _| cfg.sse_max_clients = 2).await;
    let addr = api.serve().await;
    let _a = connect(addr, "", None).await;
    let _b = connect(addr, "", None).await;
    let res = crate::support::http()
        .get(format!("http://{addr}/api/v1/events"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    drop(_a);
    wait_clients(&api, 1).await;
    let _c = connect(addr, "", None).await;
    api.fleet.shutdown().await;
}
