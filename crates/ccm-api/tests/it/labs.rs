use std::time::Duration;

use axum::body::Body;
use ccm_domain::EventKind;
use http::{Method, Request, header};
use serde_json::json;

use crate::support::{LAB_OPERATOR, MANAGER, TestApi, VIEWER};

fn raw_import(id: &str, content_type: &str, body: Vec<u8>, query: &str) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("/api/v1/workers/{id}/labs{query}"))
        .header(header::AUTHORIZATION, format!("Bearer {MANAGER}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn labs_should_be_imported_listed_operated_downloaded_and_deleted() {
    let api = TestApi::start(31, 1).await;
    api.until_ready().await;
    let id = api.workers().await[0].id.to_string();
    let yaml = ccm_cml_sim::SAMPLE_LAB_YAML;

    // Import as raw YAML, with the title in the query.
    let res = api
        .send(raw_import(
            &id,
            "application/yaml",
            yaml.as_bytes().to_vec(),
            "?title=Demo%20one",
        ))
        .await;
    let created = res.ok(201);
    let lab = created["lab_id"].as_str().unwrap().to_owned();
    assert_eq!(
        res.headers[header::LOCATION].to_str().unwrap(),
        format!("/api/v1/workers/{id}/labs/{lab}/topology")
    );
    assert_eq!(created["lab"]["title"], "Demo one", "{created}");
    // And as JSON.
    let second = api
        .post(
            &format!("/api/v1/workers/{id}/labs"),
            MANAGER,
            Some(json!({"topology": yaml, "title": "Demo two"})),
        )
        .await
        .ok(201);
    let lab2 = second["lab_id"].as_str().unwrap().to_owned();

    let list = api
        .get(&format!("/api/v1/workers/{id}/labs"), VIEWER)
        .await
        .ok(200);
    let titles: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["title"].as_str().unwrap())
        .collect();
    assert!(
        titles.contains(&"Demo one") && titles.contains(&"Demo two"),
        "{list}"
    );

    let started = api
        .post(
            &format!("/api/v1/workers/{id}/labs/{lab}/start"),
            MANAGER,
            None,
        )
        .await
        .ok(200);
    assert_eq!(started["action"], "start");
    assert_eq!(started["lab"]["state"], "STARTED", "{started}");
    let stopped = api
        .post(
            &format!("/api/v1/workers/{id}/labs/{lab}/stop"),
            MANAGER,
            None,
        )
        .await
        .ok(200);
    assert_eq!(stopped["lab"]["state"], "STOPPED", "{stopped}");
    let wiped = api
        .post(
            &format!("/api/v1/workers/{id}/labs/{lab}/wipe"),
            MANAGER,
            None,
        )
        .await
        .ok(200);
    assert_eq!(wiped["lab"]["state"], "DEFINED_ON_CORE", "{wiped}");

    let dl = api
        .get(&format!("/api/v1/workers/{id}/labs/{lab}/topology"), VIEWER)
        .await;
    assert_eq!(dl.status, 200, "{}", dl.text());
    assert!(
        dl.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/yaml")
    );
    assert!(
        dl.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .contains(&format!("{lab}.yaml"))
    );
    assert!(dl.text().contains("nodes"), "{}", dl.text());

    let del = api
        .call(
            Method::DELETE,
            &format!("/api/v1/workers/{id}/labs/{lab2}"),
            Some(MANAGER),
            None,
        )
        .await;
    assert_eq!(del.status, 204, "{}", del.text());
    let list = api
        .get(&format!("/api/v1/workers/{id}/labs"), VIEWER)
        .await
        .ok(200);
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["lab_id"] != lab2.as_str())
    );
    api.fleet.shutdown().await;
}

/// A client that reloads a worker's labs when a lab action's event arrives (the web UI does)
/// sees the action's outcome then, not at the next labs poll: the engine reads the labs again
/// before it announces the action.
#[tokio::test]
async fn a_lab_action_event_should_come_after_the_lab_record_shows_its_outcome() {
    let api = TestApi::start(143, 1).await;
    api.until_ready().await;
    let worker = api.workers().await[0].id;
    let id = worker.to_string();
    let created = api
        .post(
            &format!("/api/v1/workers/{id}/labs"),
            MANAGER,
            Some(json!({"topology": ccm_cml_sim::SAMPLE_LAB_YAML, "title": "Watched"})),
        )
        .await
        .ok(201);
    let lab = created["lab_id"].as_str().unwrap().to_owned();
    assert_eq!(created["lab"]["state"], "DEFINED_ON_CORE", "{created}");

    // A subscriber that, on the start's event, reads the labs as a client would.
    let mut rx = api.fleet.engine.subscribe();
    let engine = api.fleet.engine.clone();
    let lab_id = ccm_domain::LabId::parse(&lab).unwrap();
    let seen = tokio::spawn(async move {
        loop {
            let e = rx.recv().await.expect("the bus ended");
            if e.event.worker_id() == Some(worker)
                && matches!(
                    &e.event.kind,
                    EventKind::LabActionCompleted {
                        action: ccm_domain::LabAction::Start,
                        ..
                    }
                )
            {
                let labs = engine.labs(worker).await.unwrap();
                return labs
                    .iter()
                    .find(|l| l.lab_id == lab_id)
                    .map(|l| l.state.as_str().to_owned());
            }
        }
    });
    api.post(
        &format!("/api/v1/workers/{id}/labs/{lab}/start"),
        MANAGER,
        None,
    )
    .await
    .ok(200);
    let state = tokio::time::timeout(Duration::from_secs(20), seen)
        .await
        .expect("no start event")
        .unwrap();
    assert_eq!(state.as_deref(), Some("STARTED"));
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn lab_errors_should_be_404_409_413_415_and_422() {
    let api = TestApi::start(32, 1).await;
    api.until_ready().await;
    let id = api.workers().await[0].id.to_string();
    let missing = uuid::Uuid::new_v4();
    api.post(
        &format!("/api/v1/workers/{id}/labs/{missing}/start"),
        MANAGER,
        None,
    )
    .await
    .problem(404);
    api.get(
        &format!("/api/v1/workers/{id}/labs/{missing}/topology"),
        VIEWER,
    )
    .await
    .problem(404);
    api.send(raw_import(
        &id,
        "application/octet-stream",
        b"x".to_vec(),
        "",
    ))
    .await
    .problem(415);
    let p = api
        .send(raw_import(&id, "text/yaml", b"   ".to_vec(), ""))
        .await
        .problem(422);
    assert_eq!(p["field"], "topology");
    let p = api
        .send(raw_import(&id, "text/yaml", vec![0xff, 0xfe, 0x00], ""))
        .await
        .problem(422);
    assert_eq!(p["field"], "topology");
    let big = vec![b'#'; 2 * 1024 * 1024 + 1];
    api.send(raw_import(&id, "application/yaml", big, ""))
        .await
        .problem(413);
    // Just under the limit is read (and refused by CML as a topology, not as a size).
    let mut almost = b"# padding\n".repeat(200_000);
    almost.truncate(2 * 1024 * 1024 - 10);
    let res = api
        .send(raw_import(&id, "application/yaml", almost, ""))
        .await;
    assert_ne!(res.status, 413);
    assert!(
        res.status.as_u16() < 500 || res.status.as_u16() == 502,
        "{}",
        res.text()
    );

    // A stopped worker has no CML to ask.
    api.post(&format!("/api/v1/workers/{id}/stop"), MANAGER, None)
        .await
        .ok(202);
    let p = api
        .post(
            &format!("/api/v1/workers/{id}/labs/{missing}/start"),
            MANAGER,
            None,
        )
        .await
        .problem(409);
    assert!(p["detail"].as_str().unwrap().contains("not running"), "{p}");
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn licence_registration_should_answer_202_with_where_to_watch() {
    let api = TestApi::start(33, 2).await;
    api.until_ready().await;
    let ws = api.workers().await;
    let id = ws[0].id.to_string();
    let mut rx = api.fleet.engine.subscribe();
    let res = api
        .post(
            &format!("/api/v1/workers/{id}/licence"),
            MANAGER,
            Some(json!({"token": "GoodToken123"})),
        )
        .await;
    let body = res.ok(202);
    let watch = format!("/api/v1/events?worker={id}&type=ccm.licence.*");
    assert_eq!(res.headers[header::LOCATION].to_str().unwrap(), watch);
    assert_eq!(body["watch"]["events"], watch);
    assert_eq!(body["watch"]["worker"], format!("/api/v1/workers/{id}"));
    assert_eq!(body["operation"], "register");
    // The outcome arrives as an event.
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(e) = rx.recv().await
                && e.event.worker_id() == Some(ws[0].id)
                && matches!(
                    e.event.kind,
                    EventKind::LicenceRegistered { .. }
                        | EventKind::LicenceRegistrationFailed { .. }
                )
            {
                return e.event.type_name();
            }
        }
    })
    .await
    .expect("no licence outcome");
    assert_eq!(outcome, "ccm.licence.registered");

    let res = api
        .call(
            Method::DELETE,
            &format!("/api/v1/workers/{id}/licence"),
            Some(MANAGER),
            None,
        )
        .await;
    assert_eq!(res.ok(202)["operation"], "deregister");

    for (body, field) in [
        (json!({"token": ""}), "token"),
        (json!({"token": "x".repeat(300)}), "token"),
        (json!({"tokn": "abc"}), "tokn"),
        (json!({"token": "abc", "reregister": "yes"}), "reregister"),
    ] {
        let p = api
            .post(
                &format!("/api/v1/workers/{id}/licence"),
                MANAGER,
                Some(body.clone()),
            )
            .await
            .problem(422);
        assert_eq!(p["field"], field, "{body}: {p}");
    }
    // A token CML cannot take (bad characters) is refused before anything is sent.
    api.post(
        &format!("/api/v1/workers/{id}/licence"),
        MANAGER,
        Some(json!({"token": "bad token with spaces"})),
    )
    .await
    .problem(422);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn viewers_should_cause_no_writes_and_unknown_labs_should_be_404_without_a_cml_call() {
    let api = TestApi::start(34, 1).await;
    api.until_ready().await;
    let id = api.workers().await[0].id.to_string();
    let created = api
        .post(
            &format!("/api/v1/workers/{id}/labs"),
            MANAGER,
            Some(json!({"topology": ccm_cml_sim::SAMPLE_LAB_YAML, "title": "Read me"})),
        )
        .await
        .ok(201);
    let lab = created["lab_id"].as_str().unwrap().to_owned();
    let engine = &api.fleet.engine;
    engine.flush().await;
    let head = engine.store().last_seq().await.unwrap();

    // Topology downloads by a viewer: answered, nothing written.
    for _ in 0..3 {
        let dl = api
            .get(&format!("/api/v1/workers/{id}/labs/{lab}/topology"), VIEWER)
            .await;
        assert_eq!(dl.status, 200, "{}", dl.text());
    }
    engine.flush().await;
    assert_eq!(
        engine.store().last_seq().await.unwrap(),
        head,
        "no event persisted"
    );

    // A lab ccm does not know: 404 from ccm's own records, CML is not asked.
    let sim = api.fleet.sim.worker(0).unwrap();
    let before = sim.counters();
    let missing = uuid::Uuid::new_v4();
    let p = api
        .get(
            &format!("/api/v1/workers/{id}/labs/{missing}/topology"),
            VIEWER,
        )
        .await
        .problem(404);
    assert!(p["detail"].as_str().unwrap().contains("not known"), "{p}");
    assert_eq!(sim.counters().requests, before.requests, "no CML call");
    assert_eq!(
        sim.counters().get(ccm_cml_sim::Endpoint::LabDownload),
        before.get(ccm_cml_sim::Endpoint::LabDownload)
    );

    // A refresh runs and is recorded; throttled ones persist nothing.
    let first = api
        .post(&format!("/api/v1/workers/{id}/refresh"), MANAGER, None)
        .await
        .ok(200);
    assert_eq!(first["outcome"], "refreshed", "{first}");
    engine.flush().await;
    let head = engine.store().last_seq().await.unwrap();
    for _ in 0..5 {
        let again = api
            .post(&format!("/api/v1/workers/{id}/refresh"), MANAGER, None)
            .await
            .ok(200);
        assert_eq!(again["reason"], "throttled", "{again}");
    }
    engine.flush().await;
    assert_eq!(
        engine.store().last_seq().await.unwrap(),
        head,
        "throttled: nothing written"
    );
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn a_lab_operator_should_run_lab_actions_and_refresh_and_nothing_else() {
    let api = TestApi::start(36, 1).await;
    api.until_ready().await;
    let id = api.workers().await[0].id.to_string();
    let labs = format!("/api/v1/workers/{id}/labs");

    // Allowed: import, start, stop, wipe, download, refresh.
    let created = api
        .post(
            &labs,
            LAB_OPERATOR,
            Some(json!({"topology": ccm_cml_sim::SAMPLE_LAB_YAML, "title": "Operated"})),
        )
        .await
        .ok(201);
    let lab = created["lab_id"].as_str().unwrap().to_owned();
    for (action, state) in [
        ("start", "STARTED"),
        ("stop", "STOPPED"),
        ("wipe", "DEFINED_ON_CORE"),
    ] {
        let done = api
            .post(&format!("{labs}/{lab}/{action}"), LAB_OPERATOR, None)
            .await
            .ok(200);
        assert_eq!(done["lab"]["state"], state, "{action}: {done}");
    }
    let topology = api
        .get(&format!("{labs}/{lab}/topology"), LAB_OPERATOR)
        .await;
    assert_eq!(topology.status, 200, "{}", topology.text());
    let refreshed = api
        .post(&format!("/api/v1/workers/{id}/refresh"), LAB_OPERATOR, None)
        .await
        .ok(200);
    assert_eq!(refreshed["outcome"], "refreshed", "{refreshed}");
    // The actor on the lab's events is the operator's token.
    let events = api
        .get(&format!("/api/v1/workers/{id}/events"), VIEWER)
        .await
        .ok(200);
    assert!(
        events.to_string().contains("token:lab-operator"),
        "{events}"
    );

    // Refused: deleting the lab, operating the worker, licences, settings.
    let refused = [
        (Method::DELETE, format!("{labs}/{lab}"), None),
        (Method::POST, format!("/api/v1/workers/{id}/stop"), None),
        (Method::POST, format!("/api/v1/workers/{id}/pause"), None),
        (
            Method::POST,
            format!("/api/v1/workers/{id}/licence"),
            Some(json!({"token": "abc"})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/workers/{id}/licence"),
            None,
        ),
        (
            Method::POST,
            "/api/v1/workers/import".to_owned(),
            Some(json!({})),
        ),
        (
            Method::PATCH,
            "/api/v1/settings".to_owned(),
            Some(json!({})),
        ),
    ];
    for (method, path, body) in refused {
        let p = api
            .call(method.clone(), &path, Some(LAB_OPERATOR), body)
            .await
            .problem(403);
        assert!(
            p["detail"].as_str().unwrap().contains("has lab_operator"),
            "{method} {path}: {p}"
        );
    }
    // The lab is still there.
    let list = api.get(&labs, VIEWER).await.ok(200);
    assert!(list.to_string().contains(&lab), "{list}");
    api.fleet.shutdown().await;
}
