use http::{Method, header};
use serde_json::json;

use crate::support::{ADMIN, TestApi, VIEWER};

#[tokio::test]
async fn health_counts_resilience_jobs_and_savings_should_answer() {
    let api = TestApi::start(46, 2).await;
    api.until_ready().await;
    let h = api.get("/api/v1/system/health", VIEWER).await.ok(200);
    assert_eq!(h["healthy"], true, "{h}");
    assert_eq!(h["database"]["ok"], true);
    assert_eq!(h["scheduler"]["ok"], true);
    assert_eq!(h["workers"], 2);
    assert!(!h["providers"].as_array().unwrap().is_empty());

    let c = api.get("/api/v1/system/counts", VIEWER).await.ok(200);
    assert_eq!(c["total"], 2);
    assert_eq!(c["by_state"]["running"], 2);
    assert_eq!(c["by_service"]["ready"], 2);

    let r = api.get("/api/v1/system/resilience", VIEWER).await.ok(200);
    assert!(r["breakers"].as_array().unwrap().len() >= 2, "{r}");
    assert_eq!(r["open"], 0);
    assert!(r["budget"]["available"].is_u64());
    assert!(
        r["bulkheads"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["name"] == "cml_poll")
    );

    let jobs = api.get("/api/v1/system/jobs", VIEWER).await.ok(200);
    let names: Vec<&str> = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"cml_sync") && names.contains(&"ec2_sync"),
        "{jobs}"
    );
    let job = api
        .post("/api/v1/system/jobs/ec2_sync/run", ADMIN, None)
        .await
        .ok(200);
    assert_eq!(job["job"], "ec2_sync");
    assert!(job["runs"].as_u64().unwrap() >= 1, "{job}");
    assert!(job["last_finished"].is_string());
    let p = api
        .post("/api/v1/system/jobs/make_coffee/run", ADMIN, None)
        .await
        .problem(404);
    assert!(p["detail"].as_str().unwrap().contains("cml_sync"));

    let s = api.get("/api/v1/system/savings", VIEWER).await.ok(200);
    assert!(s["total_hours"].is_number());
    assert!(s["workers"].is_array());
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn settings_should_be_read_patched_validated_and_versioned() {
    let api = TestApi::start(47, 1).await;
    let res = api.get("/api/v1/settings", VIEWER).await;
    let s = res.ok(200);
    let v0 = s["version"].as_u64().unwrap();
    assert_eq!(
        res.headers[header::ETAG].to_str().unwrap(),
        format!("\"{v0}\"")
    );
    assert_eq!(s["settings"]["idle"]["timeout"], "1h");

    let patch = |body: serde_json::Value, if_match: Option<String>| {
        let mut b = http::Request::builder()
            .method(Method::PATCH)
            .uri("/api/v1/settings")
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .header(header::CONTENT_TYPE, "application/merge-patch+json");
        if let Some(m) = if_match {
            b = b.header(header::IF_MATCH, m);
        }
        api.send(
            b.body(axum::body::Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        )
    };
    let updated = patch(json!({"idle": {"timeout": "45m", "dry_run": true}}), None)
        .await
        .ok(200);
    let v1 = updated["version"].as_u64().unwrap();
    assert!(v1 > v0);
    assert_eq!(updated["settings"]["idle"]["timeout"], "45m");
    assert_eq!(updated["settings"]["idle"]["dry_run"], true);
    // Untouched keys keep their values; it is applied at once.
    assert_eq!(updated["settings"]["polling"]["cml_enabled"], false);
    assert_eq!(
        api.fleet.engine.settings().value.idle.timeout,
        std::time::Duration::from_secs(45 * 60)
    );

    let p = patch(json!({"polling": {"cml_interval": "0s"}}), None)
        .await
        .problem(422);
    assert_eq!(p["field"], "polling.cml_interval");
    let p = patch(json!({"idle": {"timeuot": "1h"}}), None)
        .await
        .problem(422);
    assert_eq!(p["field"], "idle.timeuot");
    let p = patch(json!({"idle": {"timeout": "soon"}}), None)
        .await
        .problem(422);
    assert_eq!(p["field"], "idle.timeout");
    patch(json!(["idle"]), None).await.problem(422);

    // Stale If-Match: someone changed them since.
    patch(
        json!({"idle": {"dry_run": false}}),
        Some(format!("\"{v0}\"")),
    )
    .await
    .problem(409);
    let ok = patch(
        json!({"idle": {"dry_run": false}}),
        Some(format!("\"{v1}\"")),
    )
    .await
    .ok(200);
    assert_eq!(ok["settings"]["idle"]["dry_run"], false);
    let p = patch(json!({}), Some("not-a-version".into()))
        .await
        .problem(400);
    assert_eq!(p["field"], "If-Match");
    // null resets a key to its default.
    let reset = patch(json!({"idle": {"timeout": null}}), None)
        .await
        .ok(200);
    assert_eq!(reset["settings"]["idle"]["timeout"], "1h");
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn probes_should_be_public_and_metrics_should_need_a_token() {
    let handle = ccm_api::metrics::install().unwrap();
    let api = TestApi::start_with(48, 2, |_, _, _| {}).await;
    let state = ccm_api::ApiState::new(
        api.fleet.engine.clone(),
        Default::default(),
        ccm_api::AuthConfig::default().with_token("viewer", ccm_api::Role::Viewer, VIEWER),
        Some(handle),
    )
    .unwrap();
    let router = ccm_api::router(state);
    let send = |path: &str, token: Option<&str>| {
        let mut b = http::Request::builder().uri(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = b.body(axum::body::Body::empty()).unwrap();
        let router = router.clone();
        async move {
            use tower::ServiceExt as _;
            let res = router.oneshot(req).await.unwrap();
            let status = res.status();
            let body = axum::body::to_bytes(res.into_body(), 1 << 24)
                .await
                .unwrap();
            (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, body) = send("/healthz", None).await;
    assert_eq!((status, body.contains("ok")), (200, true));
    let (status, body) = send("/readyz", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"database\":true"), "{body}");
    assert_eq!(send("/metrics", None).await.0, 401);

    api.until_ready().await;
    let _ = send("/api/v1/workers", Some(VIEWER)).await;
    let _ = send("/api/v1/system/resilience", Some(VIEWER)).await;
    assert_eq!(send("/api/v1/workers", Some("wrong-token")).await.0, 401);
    let (status, text) = send("/metrics", Some(VIEWER)).await;
    assert_eq!(status, 200);
    assert_every_series_is_described(&text);
    // Real histograms with buckets, not summaries; one series per fact.
    assert!(text.contains("ccm_http_request_seconds_bucket{"), "{text}");
    assert!(text.contains("ccm_poll_seconds_bucket{"), "{text}");
    assert!(!text.contains("ccm_breakers_open_now"), "{text}");
    assert!(
        text.contains("ccm_auth_failures_total{method=\"bearer\"} 1"),
        "{text}"
    );
    for needle in [
        "ccm_workers{state=\"running\"} 2",
        "ccm_workers{state=\"stopped\"} 0",
        "ccm_workers_by_service{status=\"ready\"} 2",
        "ccm_sse_clients 0",
        "ccm_http_requests_total{method=\"GET\",route=\"/api/v1/workers\",status=\"200\"}",
        "ccm_poll_seconds",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }

    // Not ready once the scheduler stops.
    api.fleet.engine.shutdown().await;
    let (status, body) = send("/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"scheduler\":false"), "{body}");
}

/// Asks `/readyz` until it answers `status` (bounded: the supervisor notices a failed task
/// within milliseconds).
async fn readyz_until(api: &TestApi, status: u16) -> String {
    for _ in 0..500 {
        let r = api.get("/readyz", VIEWER).await;
        if r.status.as_u16() == status {
            return r.text();
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("/readyz never answered {status}");
}

#[tokio::test]
async fn a_critical_task_down_should_make_readyz_false_until_it_is_stopped() {
    let api = TestApi::start(50, 1).await;
    readyz_until(&api, 200).await;
    let stop = tokio_util::sync::CancellationToken::new();
    api.fleet.engine.spawn_supervised(
        "test_crash",
        ccm_engine::Criticality::Critical,
        stop.clone(),
        || async { panic!("a background task with a bug") },
    );
    let body = readyz_until(&api, 503).await;
    assert!(body.contains("\"scheduler\":false"), "{body}");
    let h = api.get("/api/v1/system/health", VIEWER).await.ok(200);
    assert_eq!(h["healthy"], false, "{h}");
    assert!(
        h["scheduler"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("test_crash")),
        "{h}"
    );
    // Stopped on purpose: no longer down, no longer restarted.
    stop.cancel();
    readyz_until(&api, 200).await;
    api.fleet.shutdown().await;
}

/// Every `ccm_*` series on `/metrics` has `# HELP` and `# TYPE`, and its name follows the
/// Prometheus conventions for its type.
fn assert_every_series_is_described(text: &str) {
    use std::collections::{BTreeMap, BTreeSet};
    let mut help = BTreeSet::new();
    let mut types = BTreeMap::new();
    let mut series = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("#"), Some("HELP"), Some(name)) => {
                help.insert(name.to_owned());
            }
            (Some("#"), Some("TYPE"), Some(name)) => {
                types.insert(name.to_owned(), words.next().unwrap_or_default().to_owned());
            }
            (Some(sample), _, _) if !sample.starts_with('#') => {
                let name = sample.split('{').next().unwrap().to_owned();
                series.insert(name);
            }
            _ => {}
        }
    }
    let ccm: Vec<&String> = series.iter().filter(|n| n.starts_with("ccm_")).collect();
    assert!(ccm.len() >= 8, "too little traffic to check: {ccm:?}");
    for name in ccm {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(help.contains(family), "{family} has no # HELP:\n{text}");
        let kind = types
            .get(family)
            .unwrap_or_else(|| panic!("{family} has no # TYPE"));
        match kind.as_str() {
            "counter" => assert!(family.ends_with("_total"), "{family}"),
            "histogram" => assert!(family.ends_with("_seconds"), "{family}"),
            "gauge" => assert!(!family.ends_with("_total"), "{family}"),
            other => panic!("{family} is a {other} (summaries are not wanted)"),
        }
    }
}

#[tokio::test]
async fn metrics_without_a_recorder_should_say_so() {
    let api = TestApi::start(49, 1).await;
    let p = api.get("/metrics", VIEWER).await.problem(503);
    assert!(p["detail"].as_str().unwrap().contains("metrics"));
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn webhook_states_should_be_shown_to_viewers_without_secret_or_path() {
    use ccm_webhooks::{WebhookConfig, Webhooks};
    let api = TestApi::start(102, 1).await;
    // Nothing configured: an empty list.
    let empty = api.get("/api/v1/system/webhooks", VIEWER).await.ok(200);
    assert_eq!(empty["items"], serde_json::json!([]));
    // A receiver that is not there: the webhook's state is still shown.
    let mut hook = WebhookConfig::new(
        "chat",
        "http://127.0.0.1:9/services/T000/B000/capability-token?x=1",
        ccm_cml::Secret::from("a-very-secret-signing-key"),
    );
    hook.events = vec!["ccm.worker.*".into()];
    let hooks = Webhooks::start(api.state.engine(), vec![hook]).unwrap();
    api.state.attach_webhooks(hooks.clone());
    let list = api.get("/api/v1/system/webhooks", VIEWER).await;
    let text = list.text();
    let body = list.ok(200);
    let w = &body["items"][0];
    assert_eq!(w["name"], "chat");
    assert_eq!(w["url"], "http://127.0.0.1:9");
    assert_eq!(w["events"], serde_json::json!(["ccm.worker.*"]));
    assert!(w["state"].is_string() && w["breaker"].is_string(), "{w}");
    for secret in [
        "capability-token",
        "services",
        "a-very-secret-signing-key",
        "x=1",
    ] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
    hooks.stop();
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn every_answer_should_carry_a_request_id() {
    let api = TestApi::start(99, 1).await;
    let with = |id: Option<&'static str>, path: &str, token: Option<&str>| {
        let mut b = http::Request::builder().uri(path);
        if let Some(id) = id {
            b = b.header("x-request-id", id);
        }
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b.body(axum::body::Body::empty()).unwrap()
    };
    // Made here when absent: a UUID.
    let r = api.send(with(None, "/api/v1/workers", Some(VIEWER))).await;
    assert_eq!(r.status, 200);
    let made = r.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(made).is_ok(), "{made}");
    // A sane one is kept, also on errors.
    for (path, token, status) in [
        ("/api/v1/workers", Some(VIEWER), 200),
        ("/api/v1/nope", Some(VIEWER), 404),
        ("/api/v1/workers", None, 401),
        ("/healthz", None, 200),
    ] {
        let r = api.send(with(Some("req-42.a:b_c"), path, token)).await;
        assert_eq!(r.status.as_u16(), status, "{path}");
        assert_eq!(r.headers["x-request-id"], "req-42.a:b_c", "{path}");
    }
    // Junk is replaced.
    let r = api
        .send(with(Some("<script>alert(1)</script>"), "/healthz", None))
        .await;
    let replaced = r.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(replaced).is_ok(), "{replaced}");
    api.fleet.shutdown().await;
}

/// `GET /api/v1/system/replicas` on SQLite: one node that says so (no TTL, no partitions, no
/// replica rows — the web UI's System page shows "the only replica"); a viewer may read it,
/// an anonymous caller may not.
#[tokio::test]
async fn replicas_should_show_a_single_node_to_a_viewer_and_nothing_to_an_anonymous_caller() {
    let api = TestApi::start(144, 1).await;
    let r = api.get("/api/v1/system/replicas", VIEWER).await.ok(200);
    assert_eq!(
        r,
        json!({"mode": "single_node", "lease_ttl_seconds": null, "partitions": null, "items": []})
    );
    let admin = api.get("/api/v1/system/replicas", ADMIN).await.ok(200);
    assert_eq!(admin, r);
    let anonymous = api
        .call(Method::GET, "/api/v1/system/replicas", None, None)
        .await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    assert!(
        !anonymous.text().contains("single_node"),
        "{}",
        anonymous.text()
    );
    api.fleet.shutdown().await;
}
