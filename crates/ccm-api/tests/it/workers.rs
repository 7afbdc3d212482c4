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

#[tokio::test]
async fn a_snooze_should_be_set_shown_with_who_set_it_and_ended() {
    let api = TestApi::start(129, 1).await;
    let id = api.workers().await[0].id.to_string();
    let path = format!("/api/v1/workers/{id}/snooze");
    let w = api
        .call(
            Method::PUT,
            &path,
            Some(MANAGER),
            Some(json!({"for": "4h"})),
        )
        .await
        .ok(200);
    let s = &w["monitoring"]["snooze"];
    assert_eq!(s["by"], "token:manager", "{w}");
    let until = chrono::DateTime::parse_from_rfc3339(s["until"].as_str().unwrap()).unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(s["at"].as_str().unwrap()).unwrap();
    assert_eq!((until - at).num_minutes(), 240);
    // The policy would act when the snooze ends, not before.
    let pause_at = w["monitoring"]["idle"]["pause_at"].as_str().unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(pause_at).unwrap(),
        until,
        "{w}"
    );
    // An explicit time works too; the latest snooze wins.
    let later = (at + chrono::Duration::hours(6)).to_rfc3339();
    let w = api
        .call(
            Method::PUT,
            &path,
            Some(MANAGER),
            Some(json!({"until": later})),
        )
        .await
        .ok(200);
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(w["monitoring"]["snooze"]["until"].as_str().unwrap())
            .unwrap(),
        at + chrono::Duration::hours(6)
    );
    // Bad input: named, never a 500.
    for (body, field) in [
        (json!({}), "until"),
        (json!({"for": "soon"}), "for"),
        (json!({"for": "1h", "until": later}), "until"),
        (json!({"until": "2001-01-01T00:00:00Z"}), "until"),
        (json!({"for": "30d"}), "until"),
        (json!({"until": "tomorrow"}), "until"),
    ] {
        let p = api
            .call(Method::PUT, &path, Some(MANAGER), Some(body.clone()))
            .await
            .problem(422);
        assert_eq!(p["field"], field, "{body}: {p}");
    }
    // A viewer may not.
    api.call(Method::PUT, &path, Some(VIEWER), Some(json!({"for": "1h"})))
        .await
        .problem(403);
    let w = api
        .call(Method::DELETE, &path, Some(MANAGER), None)
        .await
        .ok(200);
    assert!(w["monitoring"]["snooze"].is_null(), "{w}");
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn savings_should_come_as_json_groups_or_csv() {
    let api = TestApi::start(130, 1).await;
    let s = api
        .get("/api/v1/system/savings?tag=team", VIEWER)
        .await
        .ok(200);
    assert_eq!(s["group_tag"], "team");
    assert!(s["groups"].is_array(), "{s}");
    let res = api.get("/api/v1/system/savings?format=csv", VIEWER).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.headers["content-type"].to_str().unwrap(),
        "text/csv; charset=utf-8"
    );
    assert!(
        res.text()
            .starts_with("week,tag:tag,reason,workers,hours,saved,currency\r\n"),
        "{}",
        res.text()
    );
    let p = api
        .get("/api/v1/system/savings?format=xml", VIEWER)
        .await
        .problem(400);
    assert_eq!(p["field"], "format");
    let p = api
        .get("/api/v1/system/savings?colour=red", VIEWER)
        .await
        .problem(400);
    assert!(p["detail"].as_str().unwrap().contains("colour"), "{p}");
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn the_provisioning_options_should_offer_the_allowed_types_regions_and_filters() {
    let api = TestApi::start_with(171, 1, |o, _, _| {
        o.engine.provisioning.allowed_instance_types = vec!["c5.metal".into(), "m5zn.metal".into()];
    })
    .await;
    let p = api.get("/api/v1/system/provisioning", VIEWER).await.ok(200);
    assert_eq!(p["default_instance_type"], "m5zn.metal");
    assert_eq!(p["instance_types"], json!(["c5.metal", "m5zn.metal"]));
    assert!(!p["regions"].as_array().unwrap().is_empty(), "{p}");
    assert_eq!(p["default_region"], p["regions"][0]);
    assert_eq!(p["import"]["ami_name_pattern"], "cml-controller-*");
    // A type outside the list is refused, naming the field; one on it is taken.
    let refused = api
        .post(
            "/api/v1/workers",
            MANAGER,
            Some(json!({"name": "x", "instance_type": "t3.micro"})),
        )
        .await;
    assert_eq!(
        refused.json()["field"],
        "instance_type",
        "{}",
        refused.json()
    );
    let w = api
        .post(
            "/api/v1/workers",
            MANAGER,
            Some(json!({"name": "y", "instance_type": "c5.metal"})),
        )
        .await
        .ok(202);
    assert_eq!(w["instance_type"], "c5.metal");
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn the_image_preview_should_resolve_the_selector_as_a_create_would() {
    let api = TestApi::start(172, 1).await;
    let default = api.get("/api/v1/images", MANAGER).await.ok(200);
    assert!(
        default["selected"]["name"]
            .as_str()
            .unwrap()
            .starts_with("cml-controller-2.9"),
        "{default}"
    );
    assert_eq!(default["selected"]["owner_id"], "123456789012");
    assert!(
        default["selected"]["creation_date"].is_string(),
        "{default}"
    );
    let older = api
        .get(
            "/api/v1/images?ami_name_pattern=cml-controller-2.8*",
            MANAGER,
        )
        .await
        .ok(200);
    assert!(
        older["selected"]["name"]
            .as_str()
            .unwrap()
            .starts_with("cml-controller-2.8.1"),
        "{older}"
    );
    // A create with the same selector uses the previewed image.
    let w = api
        .post(
            "/api/v1/workers",
            MANAGER,
            Some(json!({"name": "z", "ami_name_pattern": "cml-controller-2.8*"})),
        )
        .await
        .ok(202);
    assert_eq!(w["ami"]["id"], older["selected"]["id"]);
    // No image matches: refused as a create would be, naming the field.
    let none = api
        .get("/api/v1/images?ami_name_pattern=nothing-*", MANAGER)
        .await
        .problem(422);
    assert_eq!(none["field"], "ami_name_pattern", "{none}");
    for (query, field) in [
        ("ami_id=ami-nope", "ami_id"),
        ("region=Mars", "region"),
        ("ami_id=ami-0123abcd&ami_name_pattern=x", "ami_id"),
        ("colour=red", "colour"),
    ] {
        let p = api.get(&format!("/api/v1/images?{query}"), MANAGER).await;
        let status = p.status.as_u16();
        assert!(status == 400 || status == 422, "{query}: {status}");
        let body = p.json();
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    api.get("/api/v1/images", VIEWER).await.problem(403);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn an_import_preview_should_list_the_matches_and_change_nothing() {
    let api = TestApi::start_with(173, 3, |o, _, _| o.import = false).await;
    // One instance imported; the preview of the configured filter shows it as existing.
    let all = api
        .post(
            "/api/v1/workers/import/preview",
            MANAGER,
            Some(json!({"configured": true})),
        )
        .await
        .ok(200);
    assert_eq!(all["candidates"].as_array().unwrap().len(), 3, "{all}");
    assert_eq!(
        (all["new"].clone(), all["existing"].clone()),
        (json!(3), json!(0))
    );
    assert_eq!(all["needs_all"], true);
    let first = all["candidates"][0]["instance_id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.post(
        "/api/v1/workers/import",
        MANAGER,
        Some(json!({"instance_ids": [first]})),
    )
    .await
    .ok(200);
    let again = api
        .post(
            "/api/v1/workers/import/preview",
            MANAGER,
            Some(json!({"configured": true})),
        )
        .await
        .ok(200);
    assert_eq!(
        (again["new"].clone(), again["existing"].clone()),
        (json!(2), json!(1))
    );
    let known = again["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["instance_id"] == json!(first))
        .unwrap();
    assert_eq!(
        known["worker_id"],
        json!(api.workers().await[0].id.to_string())
    );
    assert_eq!(api.workers().await.len(), 1, "a preview imports nothing");
    let by_id = api
        .post(
            "/api/v1/workers/import/preview",
            MANAGER,
            Some(json!({"instance_ids": [first, "i-0000000a"]})),
        )
        .await
        .ok(200);
    assert_eq!(by_id["needs_all"], false);
    assert_eq!(by_id["skipped"][0]["instance_id"], "i-0000000a");
    let p = api
        .post(
            "/api/v1/workers/import/preview",
            MANAGER,
            Some(json!({"instance_ids": ["i-xyz"]})),
        )
        .await
        .problem(422);
    assert_eq!(p["field"], "instance_ids[0]");
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn the_session_should_list_what_its_role_may_call_and_a_worker_why_actions_are_refused() {
    let api = TestApi::start(174, 1).await;
    let viewer = api.get("/api/v1/session", VIEWER).await.ok(200);
    let perms = |v: &serde_json::Value| -> Vec<String> {
        v["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect()
    };
    let v = perms(&viewer);
    assert!(v.contains(&"GET /api/v1/workers/{id}".to_owned()), "{v:?}");
    assert!(
        !v.contains(&"POST /api/v1/workers/{id}/stop".to_owned()),
        "{v:?}"
    );
    let m = perms(&api.get("/api/v1/session", MANAGER).await.ok(200));
    assert!(m.contains(&"POST /api/v1/workers/{id}/stop".to_owned()));
    assert!(!m.contains(&"POST /api/v1/workers/{id}/terminate".to_owned()));
    let a = perms(&api.get("/api/v1/session", ADMIN).await.ok(200));
    assert!(a.contains(&"POST /api/v1/workers/{id}/terminate".to_owned()));
    assert!(a.iter().all(|p| p.contains(" /api/v1/")), "{a:?}");

    let id = api.workers().await[0].id.to_string();
    let w = api
        .get(&format!("/api/v1/workers/{id}"), VIEWER)
        .await
        .ok(200);
    assert_eq!(w["ec2_state"], "running");
    assert!(
        w["action_reasons"]["start"]
            .as_str()
            .unwrap()
            .contains("already running"),
        "{}",
        w["action_reasons"]
    );
    assert!(w["action_reasons"].get("stop").is_none());
    api.post(&format!("/api/v1/workers/{id}/stop"), MANAGER, None)
        .await
        .ok(202);
    let w = until_state(&api, &id, "stopped").await;
    assert!(
        w["action_reasons"]["refresh"]
            .as_str()
            .unwrap()
            .contains("only a running worker"),
        "{}",
        w["action_reasons"]
    );
    assert!(w["cml_blocked"].as_str().unwrap().contains("running"));
    api.fleet.shutdown().await;
}
