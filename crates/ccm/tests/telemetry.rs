//! OpenTelemetry export end to end: `ccm demo` with `[telemetry] otlp_endpoint` pointing at a
//! real OTLP/HTTP receiver started here (axum on loopback, decoding the protobuf with
//! `opentelemetry-proto`). One API call that triggers CML calls — refreshing a worker — must
//! arrive as one trace: the HTTP span (method, route, status, request id) → the engine's
//! `command` span (refresh, worker id) → `cml.call` spans (operation, endpoint) → their
//! `cml.attempt` spans (attempt number).
//!
//! Addresses 127.124.x are this file's. Every wait is bounded; the demo is killed on drop.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::Value;

mod common;
use common::{Api, Proc, free_port, wait_for};

const CCM: &str = env!("CARGO_BIN_EXE_ccm");
const TOKEN: &str = "otel-test-admin-token-0123456789abcdef";

type Spans = Arc<parking::Mutex<Vec<(String, Span)>>>;

mod parking {
    /// A std mutex that shrugs off poisoning (a failed assertion elsewhere must not hide the
    /// receiver's data).
    pub(crate) struct Mutex<T>(std::sync::Mutex<T>);
    impl<T> Mutex<T> {
        pub(crate) fn new(v: T) -> Self {
            Self(std::sync::Mutex::new(v))
        }
        pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}

/// The receiver: `POST /v1/traces` with an `ExportTraceServiceRequest` (protobuf).
async fn traces(
    State(spans): State<Spans>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> axum::http::StatusCode {
    assert_eq!(headers["content-type"], "application/x-protobuf");
    let req =
        ExportTraceServiceRequest::decode(body).expect("a protobuf ExportTraceServiceRequest");
    let mut out = spans.lock();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                out.push((service.clone(), span));
            }
        }
    }
    axum::http::StatusCode::OK
}

fn text(v: &Any) -> Option<String> {
    Some(match v {
        Any::StringValue(s) => s.clone(),
        Any::IntValue(i) => i.to_string(),
        Any::BoolValue(b) => b.to_string(),
        Any::DoubleValue(d) => d.to_string(),
        _ => return None,
    })
}

/// Whether `s` has `ancestor` among its exported ancestors.
fn descends(by_id: &HashMap<&[u8], &Span>, s: &Span, ancestor: &[u8]) -> bool {
    let mut parent = s.parent_span_id.as_slice();
    while !parent.is_empty() {
        if parent == ancestor {
            return true;
        }
        match by_id.get(parent) {
            Some(p) => parent = p.parent_span_id.as_slice(),
            None => return false,
        }
    }
    false
}

fn attrs(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), text(kv.value.as_ref()?.value.as_ref()?)?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refresh_should_arrive_as_one_trace_from_the_http_span_down_to_each_cml_attempt() {
    let spans: Spans = Arc::new(parking::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(traces))
        .with_state(spans.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("ccm.toml");
    std::fs::write(
        &config,
        format!(
            "[telemetry]\notlp_endpoint = \"http://{collector}\"\nservice_name = \"ccm-under-test\"\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let mut demo = Proc::spawn(
        "ccm demo",
        Command::new(CCM)
            .args(["demo", "--workers", "2", "--port", &port.to_string()])
            .args(["--admin-token", TOKEN, "--listen-base", "127.124.0.1"])
            .args(["--faults", "none"])
            .arg("--config")
            .arg(&config)
            .arg("--db")
            .arg(tmp.path().join("otel.db"))
            .env_remove("CCM_CONFIG")
            // Export batches every 100 ms instead of 5 s.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .current_dir(tmp.path()),
        tmp.path(),
    );
    let api = Api::new(port, TOKEN);
    let worker: String = wait_for("a running worker", Duration::from_secs(120), || {
        demo.assert_alive();
        async {
            api.http
                .get(format!("{}/readyz", api.base))
                .send()
                .await
                .ok()?;
            let (s, v) = api
                .call(reqwest::Method::GET, "/api/v1/workers?state=running", None)
                .await;
            let items = v["items"].as_array()?;
            (s == 200 && !items.is_empty()).then(|| items[0]["id"].as_str().unwrap().to_owned())
        }
    })
    .await;

    // One refresh, with our request id.
    let res = api
        .http
        .post(format!("{}/api/v1/workers/{worker}/refresh", api.base))
        .bearer_auth(TOKEN)
        .header("x-request-id", "otel-test-refresh-1")
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    assert_eq!(res.headers()["x-request-id"], "otel-test-refresh-1");
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{body}");

    // Its HTTP span, then everything under it.
    let http = wait_for("the refresh's HTTP span", Duration::from_secs(30), || {
        demo.assert_alive();
        let found = spans
            .lock()
            .iter()
            .find(|(_, s)| {
                attrs(s).get("request_id").map(String::as_str) == Some("otel-test-refresh-1")
            })
            .cloned();
        async move { found }
    })
    .await;
    let (service, http) = http;
    assert_eq!(service, "ccm-under-test");
    assert_eq!(http.name, "POST /api/v1/workers/{id}/refresh");
    assert_eq!(http.kind, 2, "server");
    assert!(http.parent_span_id.is_empty(), "the HTTP span is the root");
    let a = attrs(&http);
    assert_eq!(a["http.request.method"], "POST");
    assert_eq!(a["http.route"], "/api/v1/workers/{id}/refresh");
    assert_eq!(a["http.response.status_code"], "200");

    // The command, its CML calls and their attempts, all in this trace (they are exported
    // as they end; wait for the attempts of the four sync calls).
    let trace = http.trace_id.clone();
    let in_trace = |name: &str| -> Vec<Span> {
        spans
            .lock()
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.trace_id == trace && s.name == name)
            .cloned()
            .collect()
    };
    wait_for("the CML attempts", Duration::from_secs(30), || {
        let n = in_trace("cml.attempt").len();
        async move { (n >= 4).then_some(()) }
    })
    .await;
    let commands = in_trace("command");
    assert_eq!(commands.len(), 1, "{commands:?}");
    let command = &commands[0];
    assert_eq!(
        command.parent_span_id, http.span_id,
        "command under the HTTP span"
    );
    let c = attrs(command);
    assert_eq!(c["command"], "refresh");
    assert_eq!(c["worker"], worker);

    let calls = in_trace("cml.call");
    let all: Vec<Span> = spans
        .lock()
        .iter()
        .map(|(_, s)| s.clone())
        .filter(|s| s.trace_id == trace)
        .collect();
    let by_id: HashMap<&[u8], &Span> = all.iter().map(|s| (s.span_id.as_slice(), s)).collect();
    // Each CML call descends from the command (through the sync's own spans, if any).
    let descends_from = |s: &Span, ancestor: &[u8]| descends(&by_id, s, ancestor);
    let operations: Vec<String> = calls
        .iter()
        .map(|s| attrs(s)["operation"].clone())
        .collect();
    assert!(
        operations.iter().any(|o| o == "system_information"),
        "{operations:?}"
    );
    for call in &calls {
        assert!(
            descends_from(call, &command.span_id),
            "{} not under the command",
            call.name
        );
        assert_eq!(call.kind, 3, "client");
        assert!(
            attrs(call)["endpoint"].starts_with("http://127.124.0."),
            "{:?}",
            attrs(call)
        );
    }
    for attempt in in_trace("cml.attempt") {
        let parent = by_id
            .get(attempt.parent_span_id.as_slice())
            .expect("an attempt's parent is exported");
        assert_eq!(parent.name, "cml.call");
        let a = attrs(&attempt);
        assert_eq!(a["operation"], attrs(parent)["operation"]);
        assert!(a["attempt"].parse::<u32>().unwrap() >= 1);
    }
    drop(demo);
    server.abort();
}
