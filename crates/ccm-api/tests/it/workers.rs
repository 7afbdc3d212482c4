use std::time::Duration;

use axum::body::Body;
use ccm_engine::JobKind;
use http::{Method, Request, header};
use serde_json::json;

use crate::support::{ADMIN, MANAGER, TestApi, VIEWER};

/// Polls the worker (triggering the EC2 sync) until its state is `want`.
async fn until_state(api: &TestApi, id: &str, want: &str) -> serde_json::Value {
    for _ in 0..100 {
        api.fleet.engine.trigger_job(JobKind::Ec2Sync).await.ok();
        let w = api
            .get(&format!("/api/v1/workers/{id}"), VIEWER)
            .await
            .ok(200);
        if w["ec2_state"] == want {
            return w;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("worker {id} never became {want}");
}

#[tokio::test]
async fn listing_should_filter_sort_and_page() {
    let api = TestApi::start(1, 3).await;
    let ws = api.workers().await;
    let stopped = ws[0].id.to_string();
    api.post(&format!("/api/v1/workers/{stopped}/stop"), MANAGER, None)
        .await
        .ok(202);
    until_state(&api, &stopped, "stopped").await;

    let all = api.get("/api/v1/workers", VIEWER).await.ok(200);
    assert_eq!(all["total"], 3);
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    assert_eq!(
        (all["limit"].as_u64(), all["offset"].as_u64()),
        (Some(100), Some(0))
    );

    let running = api
        .get("/api/v1/workers?state=running", VIEWER)
        .await
        .ok(200);
    assert_eq!(running["total"], 2);
    assert!(
        running["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["ec2_state"] == "running")
    );
    let both = api
        .get("/api/v1/workers?state=running&state=stopped", VIEWER)
        .await
        .ok(200);
    assert_eq!(both["total"], 3);
    let comma = api
        .get(
            "/api/v1/workers?state=running,stopped&region=eu-west-1",
            VIEWER,
        )
        .await
        .ok(200);
    assert_eq!(comma["total"], 3);
    let elsewhere = api
        .get("/api/v1/workers?region=us-east-1", VIEWER)
        .await
        .ok(200);
    assert_eq!(elsewhere["total"], 0);

    let asc = api.get("/api/v1/workers?sort=name", VIEWER).await.ok(200);
    let desc = api
        .get("/api/v1/workers?sort=name&order=desc", VIEWER)
        .await
        .ok(200);
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut sorted = names(&asc);
    sorted.sort();
    assert_eq!(names(&asc), sorted);
    sorted.reverse();
    assert_eq!(names(&desc), sorted);

    let page = api
        .get("/api/v1/workers?sort=name&limit=1&offset=1", VIEWER)
        .await
        .ok(200);
    assert_eq!(page["total"], 3);
    assert_eq!(names(&page), [names(&asc)[1].clone()]);

    let one = &names(&asc)[2];
    let found = api
        .get(&format!("/api/v1/workers?q={}", one.to_uppercase()), VIEWER)
        .await
        .ok(200);
    assert_eq!(names(&found), std::slice::from_ref(one));

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("limit=abc", "limit"),
        ("sort=price", "sort"),
        ("order=up", "order"),
        ("state=runing", "state"),
        ("service=fine", "service"),
        ("colour=red", "colour"),
    ] {
        let p = api
            .get(&format!("/api/v1/workers?{query}"), VIEWER)
            .await
            .problem(400);
        assert_eq!(p["field"], field, "{query}: {p}");
    }
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn a_worker_should_show_each_source_with_its_freshness_and_its_breaker() {
    let api = TestApi::start(2, 2).await;
    api.until_ready().await;
    let id = api.workers().await[0].id.to_string();
    let w = api
        .get(&format!("/api/v1/workers/{id}"), VIEWER)
        .await
        .ok(200);
    assert_eq!(w["id"], id);
    assert_eq!(w["service"]["status"], "ready");
    let info = &w["sources"]["system_information"];
    assert_eq!(info["freshness"], "fresh", "{info}");
    assert!(info["value"]["version"].as_str().is_some(), "{info}");
    assert_eq!(info["age_seconds"], 0);
    assert!(info["observed_at"].as_str().is_some());
    assert!(info["error"].is_null());
    for source in ["health", "stats", "licence"] {
        assert_eq!(w["sources"][source]["freshness"], "fresh", "{source}: {w}");
    }
    assert_eq!(w["breaker"]["state"], "closed", "{w}");
    assert_eq!(w["monitoring"]["idle"]["action"], "keep", "{w}");

    // The CML goes down: the last good values are served stale, with their age and error.
    api.fleet.sim.worker(0).unwrap().power_off();
    api.clock.advance(Duration::from_secs(120));
    api.fleet
        .engine
        .trigger_job(JobKind::CmlSync)
        .await
        .unwrap();
    let w = api
        .get(&format!("/api/v1/workers/{id}"), VIEWER)
        .await
        .ok(200);
    let info = &w["sources"]["system_information"];
    assert_eq!(info["freshness"], "stale", "{info}");
    assert_eq!(info["age_seconds"], 120, "{info}");
    assert!(info["value"]["version"].as_str().is_some());
    assert!(info["error"]["code"].as_str().is_some(), "{info}");
    assert!(info["consecutive_failures"].as_u64().unwrap() >= 1);
    assert_ne!(w["service"]["status"], "ready");

    // Past the maximum age (10 min by default) the value is unknown.
    api.clock.advance(Duration::from_secs(600));
    let w = api
        .get(&format!("/api/v1/workers/{id}"), VIEWER)
        .await
        .ok(200);
    let info = &w["sources"]["system_information"];
    assert_eq!(info["freshness"], "unknown", "{info}");
    assert!(info["value"].is_null());
    assert_eq!(info["age_seconds"], 720);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn unknown_ids_should_be_404_and_malformed_ones_400_naming_the_field() {
    let api = TestApi::start(3, 1).await;
    let unknown = uuid::Uuid::now_v7();
    let p = api
        .get(&format!("/api/v1/workers/{unknown}"), VIEWER)
        .await
        .problem(404);
    assert!(p["detail"].as_str().unwrap().contains(&unknown.to_string()));
    api.post(&format!("/api/v1/workers/{unknown}/start"), MANAGER, None)
        .await
        .problem(404);
    let p = api
        .get("/api/v1/workers/not-a-uuid", VIEWER)
        .await
        .problem(400);
    assert_eq!(p["field"], "id");
    let id = api.workers().await[0].id;
    let p = api
        .get(
            &format!("/api/v1/workers/{id}/labs/bad!lab/topology"),
            VIEWER,
        )
        .await
        .problem(400);
    assert_eq!(p["field"], "lab_id");
    let p = api.get("/api/v1/nothing/here", VIEWER).await.problem(404);
    assert!(p["detail"].as_str().unwrap().starts_with("no route"));
    api.call(Method::PUT, "/api/v1/workers", Some(VIEWER), None)
        .await
        .problem(405);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn creating_a_worker_should_answer_202_and_provision_in_the_background() {
    let api = TestApi::start(4, 1).await;
    let res = api
        .post(
            "/api/v1/workers",
            MANAGER,
            Some(json!({"name": "lab-7", "ami_name_pattern": "cml-controller-*", "tags": {"team": "net"}})),
        )
        .await;
    let w = res.ok(202);
    let id = w["id"].as_str().unwrap().to_owned();
    assert_eq!(
        res.headers[header::LOCATION].to_str().unwrap(),
        format!("/api/v1/workers/{id}")
    );
    assert_eq!(w["ec2_state"], "pending");
    assert_eq!(w["created_by"], "token:manager");
    assert_eq!(w["tags"]["team"], "net");
    let w = until_state(&api, &id, "running").await;
    assert!(w["instance_id"].as_str().unwrap().starts_with("i-"));

    let bad = |body: serde_json::Value| api.post("/api/v1/workers", MANAGER, Some(body));
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "x", "region": "EU West"}), "region"),
        (
            json!({"name": "x", "instance_type": "big"}),
            "instance_type",
        ),
        (json!({"name": "x", "ami_id": "ami-nope"}), "ami_id"),
        (
            json!({"name": "x", "ami_id": "ami-0123abcd", "ami_name_pattern": "cml*"}),
            "ami_id",
        ),
        (
            json!({"name": "x", "tags": {"aws:owner": "me"}}),
            "tags.aws:owner",
        ),
        (json!({"nmae": "x"}), "nmae"),
        (json!({"name": 7}), "name"),
        (json!(["name"]), "body"),
    ] {
        let p = bad(body.clone()).await.problem(422);
        assert_eq!(p["field"], field, "{body}: {p}");
    }
    // No image (of the trusted owners) matches: the request's field is named.
    let p = bad(json!({"name": "x", "ami_name_pattern": "no-such-image-*"}))
        .await
        .problem(422);
    assert_eq!(p["field"], "ami_name_pattern");

    let raw = |content_type: &str, body: Vec<u8>| {
        Request::builder()
            .method(Method::POST)
            .uri("/api/v1/workers")
            .header(header::AUTHORIZATION, format!("Bearer {MANAGER}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap()
    };
    api.send(raw("application/json", b"{\"name\": ".to_vec()))
        .await
        .problem(400);
    api.send(raw("application/json", b"".to_vec()))
        .await
        .problem(400);
    api.send(raw("text/plain", b"{\"name\": \"x\"}".to_vec()))
        .await
        .problem(415);
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    api.send(raw("application/json", huge.into_bytes()))
        .await
        .problem(413);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn importing_an_instance_twice_should_return_the_existing_worker() {
    let api = TestApi::start_with(5, 2, |o, _, _| o.import = false).await;
    assert!(api.workers().await.is_empty());
    let r = api
        .post(
            "/api/v1/workers/import",
            MANAGER,
            Some(json!({"configured": true, "all": true})),
        )
        .await
        .ok(200);
    assert_eq!(r["matched"], 2);
    assert_eq!(r["imported"].as_array().unwrap().len(), 2);
    let again = api
        .post(
            "/api/v1/workers/import",
            MANAGER,
            Some(json!({"configured": true, "all": true})),
        )
        .await
        .ok(200);
    assert!(again["imported"].as_array().unwrap().is_empty());
    let mut a: Vec<_> = r["imported"].as_array().unwrap().clone();
    let mut b: Vec<_> = again["existing"].as_array().unwrap().clone();
    a.sort_by_key(|v| v.to_string());
    b.sort_by_key(|v| v.to_string());
    assert_eq!(a, b);

    let instance = api.workers().await[0].instance_id.clone().unwrap();
    let by_id = api
        .post(
            "/api/v1/workers/import",
            MANAGER,
            Some(json!({"instance_ids": [instance.to_string(), "i-0000000a"]})),
        )
        .await
        .ok(200);
    assert_eq!(by_id["existing"].as_array().unwrap().len(), 1);
    assert_eq!(by_id["skipped"][0]["instance_id"], "i-0000000a");

    for (body, field) in [
        (json!({"instance_ids": ["i-xyz"]}), "instance_ids[0]"),
        (json!({"instance_ids": []}), "instance_ids"),
        (
            json!({"configured": true, "ami_id": "ami-0123abcd"}),
            "instance_ids",
        ),
        (json!({}), "instance_ids"),
        (json!({"configured": true, "region": "Mars"}), "region"),
    ] {
        let p = api
            .post("/api/v1/workers/import", MANAGER, Some(body.clone()))
            .await
            .problem(422);
        assert_eq!(p["field"], field, "{body}: {p}");
    }
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn lifecycle_commands_should_answer_202_or_409_with_the_reason() {
    let api = TestApi::start(6, 1).await;
    let id = api.workers().await[0].id.to_string();
    let path = |action: &str| format!("/api/v1/workers/{id}/{action}");

    let p = api.post(&path("start"), MANAGER, None).await.problem(409);
    assert!(p["detail"].as_str().unwrap().contains("running"), "{p}");
    api.post(&path("resume"), MANAGER, None).await.problem(409);

    let res = api.post(&path("stop"), MANAGER, None).await;
    let w = res.ok(202);
    assert!(res.headers.contains_key(header::LOCATION));
    assert!(
        ["stopping", "stopped"].contains(&w["ec2_state"].as_str().unwrap()),
        "{w}"
    );
    let w = until_state(&api, &id, "stopped").await;
    assert_eq!(w["monitoring"]["pauses"]["manual"], 1, "{w}");
    assert_eq!(w["monitoring"]["pause_reason"], "manual");
    api.post(&path("stop"), MANAGER, None).await.problem(409);
    api.post(&path("pause"), MANAGER, None).await.problem(409);

    api.post(&path("start"), MANAGER, None).await.ok(202);
    until_state(&api, &id, "running").await;
    api.post(&path("pause"), MANAGER, None).await.ok(202);
    until_state(&api, &id, "stopped").await;
    api.post(&path("resume"), MANAGER, None).await.ok(202);
    let w = until_state(&api, &id, "running").await;
    assert_eq!(w["monitoring"]["resumes"]["manual"], 2, "{w}");

    api.post(&path("terminate"), MANAGER, None)
        .await
        .problem(403);
    let w = api.post(&path("terminate"), ADMIN, None).await.ok(202);
    assert!(
        ["shutting-down", "terminated"].contains(&w["ec2_state"].as_str().unwrap()),
        "{w}"
    );
    let w = until_state(&api, &id, "terminated").await;
    assert_eq!(w["terminated_by"], "token:admin");
    api.post(&path("start"), MANAGER, None).await.problem(409);

    let del = api
        .call(
            Method::DELETE,
            &format!("/api/v1/workers/{id}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(del.status, 204, "{}", del.text());
    api.get(&format!("/api/v1/workers/{id}"), VIEWER)
        .await
        .problem(404);
    api.call(
        Method::DELETE,
        &format!("/api/v1/workers/{id}"),
        Some(ADMIN),
        None,
    )
    .await
    .problem(404);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn tags_idle_detection_and_monitoring_should_change_the_worker() {
    let api = TestApi::start(7, 1).await;
    let id = api.workers().await[0].id.to_string();
    let tags = format!("/api/v1/workers/{id}/tags");
    let w = api
        .call(
            Method::PATCH,
            &tags,
            Some(MANAGER),
            Some(json!({"set": {"env": "lab", "owner": "ops"}})),
        )
        .await
        .ok(200);
    assert_eq!(
        (w["tags"]["env"].as_str(), w["tags"]["owner"].as_str()),
        (Some("lab"), Some("ops"))
    );
    let w = api
        .call(
            Method::PATCH,
            &tags,
            Some(MANAGER),
            Some(json!({"remove": ["owner"]})),
        )
        .await
        .ok(200);
    assert!(w["tags"].get("owner").is_none(), "{w}");
    for (body, field) in [
        (json!({}), "set"),
        (json!({"set": {"aws:x": "1"}}), "tags.aws:x"),
        (json!({"remove": [""]}), "remove"),
        (json!({"set": {"a": 1}}), "set.a"),
    ] {
        let p = api
            .call(Method::PATCH, &tags, Some(MANAGER), Some(body.clone()))
            .await
            .problem(422);
        assert_eq!(p["field"], field, "{body}: {p}");
    }

    let idle = format!("/api/v1/workers/{id}/idle-detection");
    let w = api
        .call(
            Method::PUT,
            &idle,
            Some(MANAGER),
            Some(json!({"enabled": false})),
        )
        .await
        .ok(200);
    assert_eq!(w["monitoring"]["idle_detection"], false);
    assert_eq!(w["monitoring"]["idle"]["action"], "keep");
    let p = api
        .call(
            Method::PUT,
            &idle,
            Some(MANAGER),
            Some(json!({"enabled": "no"})),
        )
        .await
        .problem(422);
    assert_eq!(p["field"], "enabled");
    let p = api
        .call(Method::PUT, &idle, Some(MANAGER), Some(json!({})))
        .await
        .problem(422);
    assert!(p["detail"].as_str().unwrap().contains("enabled"), "{p}");

    let res = api
        .post(
            &format!("/api/v1/workers/{id}/detailed-monitoring"),
            MANAGER,
            None,
        )
        .await;
    if res.status == 200 {
        assert_eq!(res.json()["monitoring"]["detailed_monitoring"], true);
    } else {
        // The simulated cloud may not implement it; then it must say so, not fail.
        res.problem(501);
    }
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn refresh_should_run_then_be_throttled() {
    let api = TestApi::start(8, 1).await;
    api.until_ready().await;
    let id = api.workers().await[0].id.to_string();
    let first = api
        .post(&format!("/api/v1/workers/{id}/refresh"), MANAGER, None)
        .await
        .ok(200);
    assert_eq!(first["outcome"], "refreshed", "{first}");
    assert_eq!(first["worker"]["service"]["status"], "ready");
    let second = api
        .post(&format!("/api/v1/workers/{id}/refresh"), MANAGER, None)
        .await
        .ok(200);
    assert_eq!(second["outcome"], "skipped", "{second}");
    assert_eq!(second["reason"], "throttled");
    assert!(second["retry_in_seconds"].as_u64().unwrap() >= 1);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn events_of_a_worker_should_page_backwards_and_metrics_history_should_answer() {
    let api = TestApi::start(9, 1).await;
    let id = api.workers().await[0].id.to_string();
    for enabled in [false, true, false, true] {
        api.call(
            Method::PUT,
            &format!("/api/v1/workers/{id}/idle-detection"),
            Some(MANAGER),
            Some(json!({"enabled": enabled})),
        )
        .await
        .ok(200);
    }
    let page = api
        .get(&format!("/api/v1/workers/{id}/events?limit=3"), VIEWER)
        .await
        .ok(200);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let seqs: Vec<u64> = items.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    assert_eq!(
        items[0]["event"]["type"],
        "ccm.worker.idle_detection_changed"
    );
    assert_eq!(items[0]["event"]["data"]["enabled"], true);
    assert_eq!(items[0]["event"]["specversion"], "1.0");
    let next = page["next_before"].as_u64().unwrap();
    assert_eq!(next, seqs[2]);
    let older = api
        .get(
            &format!("/api/v1/workers/{id}/events?before={next}&limit=500"),
            VIEWER,
        )
        .await
        .ok(200);
    let older_items = older["items"].as_array().unwrap();
    assert!(!older_items.is_empty());
    assert!(
        older_items
            .iter()
            .all(|e| e["seq"].as_u64().unwrap() < next)
    );
    assert!(older["next_before"].is_null());
    for q in ["limit=0", "limit=501", "before=-1", "after=3"] {
        api.get(&format!("/api/v1/workers/{id}/events?{q}"), VIEWER)
            .await
            .problem(400);
    }

    let h = api
        .get(&format!("/api/v1/workers/{id}/metrics?since=2h"), VIEWER)
        .await
        .ok(200);
    assert_eq!(h["worker_id"], id);
    assert!(h["points"].is_array());
    let p = api
        .get(
            &format!("/api/v1/workers/{id}/metrics?since=yesterday"),
            VIEWER,
        )
        .await
        .problem(400);
    assert_eq!(p["field"], "since");
    api.get(
        &format!("/api/v1/workers/{}/metrics", uuid::Uuid::now_v7()),
        VIEWER,
    )
    .await
    .problem(404);
    api.fleet.shutdown().await;
}
