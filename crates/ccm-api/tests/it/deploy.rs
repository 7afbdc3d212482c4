//! The deployment files cannot drift from the code: every metric name the alert rules
//! (`deploy/prometheus/alerts.yml`) and the Grafana dashboard (`deploy/grafana/*.json`) use is
//! exported by a running ccm. The test installs the Prometheus recorder as `ccm serve` does,
//! makes traffic that creates every series (polls, a worker answering 503 until the retry
//! budget refuses, a blackholed worker whose breaker opens, a task that panics and restarts, a
//! webhook that fails then delivers, API requests), scrapes `/metrics` and compares.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ccm_api::{ApiConfig, ApiState, AuthConfig, Role};
use ccm_cml_sim::faults::FaultSpec;
use ccm_engine::{Criticality, JobKind};
use tokio_util::sync::CancellationToken;

use crate::support::{TestApi, VIEWER};

fn deploy_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy"))
}

/// The `ccm_*` names in a PromQL expression.
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("ccm_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if boundary {
            out.insert(expr[start..end].to_owned());
        }
        i = end;
    }
}

/// Every expression of the alert rules and of the dashboard's panels.
fn deployed_expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(deploy_dir().join("prometheus/alerts.yml")).unwrap(),
    )
    .unwrap();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap().to_owned();
            out.push((
                format!("alert {name}"),
                rule["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy_dir().join("grafana/ccm-dashboard.json")).unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            out.push((
                format!("panel {}", panel["title"].as_str().unwrap()),
                target["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

/// The series names in a Prometheus text exposition.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn the_scan_should_find_metric_names_in_promql() {
    let mut names = BTreeSet::new();
    metric_names(
        r#"sum by (job) (rate(ccm_poll_seconds_sum[5m])) / x_ccm_not(ccm_workers{state="running"})"#,
        &mut names,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["ccm_poll_seconds_sum", "ccm_workers"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_alert_rules_and_the_dashboard_should_be_exported() {
    // Installed first, as `ccm serve` does, so that every record below reaches it.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();

    // Worker 1's system_stats answers 503 (retried until the budget of 1 a second refuses;
    // its other calls succeed, so its breaker stays closed), worker 2 never
    // answers (attempt timeouts; a retry no longer fits the deadline; an open breaker).
    let api = TestApi::start_with(101, 3, |opts, _, _| {
        opts.resilience.budget.ratio = 0.0;
        opts.resilience.budget.min_per_second = 1;
        opts.resilience.budget.window = Duration::from_secs(1);
        opts.resilience.timeout.deadline = Duration::from_millis(1200);
    })
    .await;
    let engine = api.fleet.engine.clone();
    engine.trigger_job(JobKind::Ec2Sync).await.unwrap();
    api.until_ready().await;
    api.fleet.sim.apply_faults(
        &FaultSpec::parse("1/system_stats:error=503; 2:blackhole").unwrap(),
        false,
    );
    // Cycles until the budget has refused a retry: how many that takes depends on how fast this
    // machine retries, not on the code, so the loop is bounded in count instead of fixed.
    for cycle in 0.. {
        engine.trigger_job(JobKind::CmlSync).await.unwrap();
        if cycle >= 3 && handle.render().contains("ccm_retry_budget_exhausted_total") {
            break;
        }
        assert!(
            cycle < 40,
            "40 sync cycles and the retry budget never refused a retry"
        );
    }
    engine.trigger_job(JobKind::Labs).await.unwrap();

    // A supervised task that panics once, then behaves.
    let panicked = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    let p = panicked.clone();
    engine.spawn_supervised(
        "metrics_test",
        Criticality::BestEffort,
        stop.clone(),
        move || {
            let p = p.clone();
            async move {
                if !p.swap(true, Ordering::SeqCst) {
                    panic!("a deliberate panic: the restart counter must exist");
                }
                std::future::pending::<()>().await;
            }
        },
    );

    // A webhook whose receiver fails once, then accepts.
    let fail_once = Arc::new(AtomicBool::new(true));
    let f = fail_once;
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let f = f.clone();
            async move {
                // Only the first request fails (more would open the URL's breaker for 30 s).
                if f.swap(false, Ordering::SeqCst) {
                    http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut hook = ccm_webhooks::WebhookConfig::new(
        "metrics-test",
        &format!("http://{addr}/hook"),
        ccm_cml::Secret::from("a-signing-secret-of-some-length"),
    );
    hook.retry_base = Duration::from_millis(20);
    hook.retry_max = Duration::from_millis(100);
    let hooks = ccm_webhooks::Webhooks::start(&engine, vec![hook]).unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let s = hooks.statuses().remove(0);
            if s.state == ccm_webhooks::DeliveryState::Idle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the webhook loop starts");
    engine
        .emit(None, vec![ccm_domain::EventKind::RetryBudgetRecovered {}])
        .await;
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let s = hooks.statuses().remove(0);
            if s.failed_attempts > 0 && s.delivered > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a failed attempt, then a delivery");
    tokio::time::timeout(Duration::from_secs(20), async {
        while !engine
            .tasks()
            .iter()
            .any(|t| t.name == "metrics_test" && t.restarts > 0)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the panicking task restarted");

    // The API with the recorder's handle, as `ccm serve` builds it; a few requests, a scrape.
    let state = ApiState::new(
        engine.clone(),
        ApiConfig::default(),
        AuthConfig::default().with_token("viewer", Role::Viewer, VIEWER),
        Some(handle),
    )
    .unwrap();
    let router = ccm_api::router(state);
    let get = |path: &'static str| {
        http::Request::builder()
            .uri(path)
            .header(http::header::AUTHORIZATION, format!("Bearer {VIEWER}"))
            .body(axum::body::Body::empty())
            .unwrap()
    };
    use tower::ServiceExt as _;
    for path in ["/api/v1/workers", "/api/v1/system/health", "/api/v1/nope"] {
        router.clone().oneshot(get(path)).await.unwrap();
    }
    let res = router.clone().oneshot(get("/metrics")).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = axum::body::to_bytes(res.into_body(), 16 << 20)
        .await
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let series = exported(&text);

    let mut missing = Vec::new();
    let mut used = BTreeSet::new();
    for (place, expr) in deployed_expressions() {
        let mut names = BTreeSet::new();
        metric_names(&expr, &mut names);
        for n in names {
            if !series.contains(&n) {
                missing.push(format!("{n} ({place})"));
            }
            used.insert(n);
        }
    }
    assert!(
        used.len() >= 20,
        "only {} names found: {used:?}",
        used.len()
    );
    assert!(
        missing.is_empty(),
        "used in deploy/ but not exported: {missing:?}\nexported: {series:?}"
    );

    stop.cancel();
    hooks.stop();
    server.abort();
    api.fleet.shutdown().await;
}
