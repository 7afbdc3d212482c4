//! Test fixtures: a moto server on loopback (killed on drop) and a small HTTP proxy that sits
//! between the SDK and moto, counts requests by action and injects AWS errors
//! (`RequestLimitExceeded` and others) that moto cannot produce itself.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code"
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use tokio::task::JoinHandle;

pub(crate) use ccm_cloud_aws::moto::Moto;

/// Starts a moto server for these tests; panics with the install lines when moto is missing.
pub(crate) async fn moto() -> Moto {
    Moto::start().await.unwrap_or_else(|e| panic!("{e}"))
}

/// What the proxy answers instead of forwarding.
#[derive(Clone, Debug)]
pub(crate) struct Fault {
    /// HTTP status (503 for throttling, as EC2 sends it).
    pub(crate) status: u16,
    /// The EC2 error code.
    pub(crate) code: &'static str,
}

impl Fault {
    /// EC2's throttling answer.
    pub(crate) const THROTTLE: Fault = Fault {
        status: 503,
        code: "RequestLimitExceeded",
    };
}

struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    fault: Mutex<Option<Fault>>,
    /// How many more requests get the fault; `u32::MAX` means every request.
    remaining: AtomicU32,
    /// Requests seen, by `Action`.
    counts: Mutex<HashMap<String, u32>>,
    /// Text replaced in forwarded response bodies (from, to).
    rewrites: Mutex<Vec<(String, String)>>,
}

/// A fault-injecting, request-counting HTTP proxy in front of moto, on 127.0.0.1.
pub(crate) struct FaultProxy {
    /// `http://127.0.0.1:PORT`: the SDK's `endpoint_url`.
    pub(crate) url: String,
    state: Arc<ProxyState>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream`.
    pub(crate) async fn start(upstream: &str) -> FaultProxy {
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            fault: Mutex::new(None),
            remaining: AtomicU32::new(0),
            counts: Mutex::new(HashMap::new()),
            rewrites: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FaultProxy { url, state, task }
    }

    /// The next `n` requests get `fault`.
    pub(crate) fn fail_next(&self, n: u32, fault: Fault) {
        *self.state.fault.lock() = Some(fault);
        self.state.remaining.store(n, Ordering::SeqCst);
    }

    /// Every request gets `fault` until [`FaultProxy::heal`].
    pub(crate) fn fail_always(&self, fault: Fault) {
        self.fail_next(u32::MAX, fault);
    }

    /// Stops injecting faults.
    pub(crate) fn heal(&self) {
        self.state.remaining.store(0, Ordering::SeqCst);
    }

    /// Requests seen for `action` (faulted ones included).
    pub(crate) fn count(&self, action: &str) -> u32 {
        self.state.counts.lock().get(action).copied().unwrap_or(0)
    }

    /// Replaces `from` with `to` in every forwarded response body (to make moto's answers
    /// malformed in a controlled way).
    pub(crate) fn rewrite(&self, from: &str, to: &str) {
        self.state
            .rewrites
            .lock()
            .push((from.to_owned(), to.to_owned()));
    }

    /// Forgets the counts.
    pub(crate) fn reset_counts(&self) {
        self.state.counts.lock().clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `Action=DescribeInstances&…` → `DescribeInstances`.
fn action_of(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
        .unwrap_or("unknown")
        .to_owned()
}

fn take_fault(state: &ProxyState) -> Option<Fault> {
    let fault = state.fault.lock().clone()?;
    let taken = state
        .remaining
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
            0 => None,
            u32::MAX => Some(u32::MAX),
            n => Some(n - 1),
        })
        .is_ok();
    taken.then_some(fault)
}

async fn forward(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, 16 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    let action = action_of(&body);
    *state.counts.lock().entry(action).or_default() += 1;
    if let Some(fault) = take_fault(&state) {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code>\
             <Message>Injected by the test proxy: {}.</Message></Error></Errors>\
             <RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>",
            fault.code, fault.code
        );
        return Response::builder()
            .status(fault.status)
            .header("content-type", "text/xml;charset=UTF-8")
            .body(Body::from(xml))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut upstream = state
        .client
        .request(parts.method.clone(), format!("{}{path}", state.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding"
        ) {
            upstream = upstream.header(name, value);
        }
    }
    match upstream.send().await {
        Ok(answer) => {
            let status = answer.status();
            let mut headers = HeaderMap::new();
            for (name, value) in answer.headers() {
                if !matches!(
                    name.as_str(),
                    "content-length" | "connection" | "transfer-encoding"
                ) {
                    headers.insert(name.clone(), value.clone());
                }
            }
            let mut bytes = answer.bytes().await.unwrap_or_default();
            let rewrites = state.rewrites.lock().clone();
            if !rewrites.is_empty() {
                let mut text = String::from_utf8_lossy(&bytes).into_owned();
                for (from, to) in rewrites {
                    text = text.replace(&from, &to);
                }
                bytes = Bytes::from(text);
            }
            (status, headers, bytes).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}
