//! Shared fixtures: an embedded fleet (CML simulator on 127.7x–127.9x addresses, simulated
//! cloud, real engine on in-memory SQLite, background polling off) with the API on top, one
//! token per role, and small request helpers (in-process through the router, or over real
//! HTTP when a test needs streaming, cookies or client addresses).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use ccm_api::{ApiConfig, ApiState, AuthConfig, Role};
use ccm_domain::ServiceStatus;
use ccm_engine::{JobKind, ManualClock};
use ccm_store::{SqliteStore, WorkerFilter};
use ccm_testbed::embedded::{Embedded, EmbeddedOptions};
use http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt as _;

/// The plain-text tokens of the test fleet.
pub(crate) const ADMIN: &str = "test-admin-token-0123456789";
pub(crate) const MANAGER: &str = "test-manager-token-0123456789";
pub(crate) const VIEWER: &str = "test-viewer-token-0123456789";
pub(crate) const LAB_OPERATOR: &str = "test-lab-operator-token-0123456789";

/// A distinct loopback base per test (`n` < 6000), inside 127.70–127.99.
pub(crate) fn base(n: u16) -> Ipv4Addr {
    Ipv4Addr::new(127, 70 + (n / 200) as u8, (n % 200) as u8 + 1, 1)
}

/// A running API over an embedded fleet.
pub(crate) struct TestApi {
    pub(crate) fleet: Embedded,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) state: ApiState,
    pub(crate) router: Router,
    /// The `[api]` and `[auth]` sections it was built with (for another state over the same
    /// fleet, e.g. with a `[server]` section).
    pub(crate) api_config: ApiConfig,
    pub(crate) auth_config: AuthConfig,
}

/// An answer.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Resp {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts a problem+json answer with this status; returns the document.
    pub(crate) fn problem(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "expected {status}, got {}: {}",
            self.status,
            self.text()
        );
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/problem+json",
            "{}",
            self.text()
        );
        let p = self.json();
        assert_eq!(p["status"], status);
        assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()), "{p}");
        assert!(
            p["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("urn:ccm:problem:"))
        );
        p
    }

    /// Asserts a success status; returns the JSON body.
    pub(crate) fn ok(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "expected {status}, got {}: {}",
            self.status,
            self.text()
        );
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }
}

impl TestApi {
    pub(crate) async fn start(n: u16, workers: usize) -> Self {
        Self::start_with(n, workers, |_, _, _| {}).await
    }

    pub(crate) async fn start_with(
        n: u16,
        workers: usize,
        tweak: impl FnOnce(&mut EmbeddedOptions, &mut ApiConfig, &mut AuthConfig),
    ) -> Self {
        let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
        let (mut opts, clock) = EmbeddedOptions::for_tests(workers, base(n), store);
        opts.sim.node_timing = ccm_cml_sim::NodeTiming {
            queue: Duration::from_millis(20),
            stagger: Duration::from_millis(5),
            boot: Duration::from_millis(50),
        };
        opts.sim.licence_delay = Duration::from_millis(100);
        opts.engine.licence.poll_interval = Duration::from_millis(50);
        opts.resilience.breaker.open_for = Duration::from_secs(30);
        let mut api = ApiConfig::default();
        let mut auth = AuthConfig::default()
            .with_token("admin", Role::Admin, ADMIN)
            .with_token("manager", Role::Manager, MANAGER)
            .with_token("viewer", Role::Viewer, VIEWER)
            .with_token("lab-operator", Role::LabOperator, LAB_OPERATOR);
        // Most tests send many bad credentials on purpose (all from one address); the tests
        // of the limit itself set their own.
        auth.sign_in_limit = ccm_api::SignInLimit {
            burst: 1_000_000,
            per_minute: 1_000_000,
        };
        tweak(&mut opts, &mut api, &mut auth);
        let fleet = Embedded::start(opts).await.unwrap();
        let state = ApiState::new(fleet.engine.clone(), api.clone(), auth.clone(), None).unwrap();
        let router = ccm_api::router(state.clone());
        Self {
            fleet,
            clock,
            state,
            router,
            api_config: api,
            auth_config: auth,
        }
    }

    /// Sends a request through the router (in process).
    pub(crate) async fn send(&self, req: Request<Body>) -> Resp {
        let res = tokio::time::timeout(Duration::from_secs(30), self.router.clone().oneshot(req))
            .await
            .expect("the request did not finish in 30 s")
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = tokio::time::timeout(
            Duration::from_secs(30),
            axum::body::to_bytes(res.into_body(), 64 * 1024 * 1024),
        )
        .await
        .expect("the body did not finish in 30 s")
        .unwrap();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// A request with an optional bearer token and JSON body.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&v).unwrap()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        self.send(req).await
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub(crate) async fn post(&self, path: &str, token: &str, body: Option<Value>) -> Resp {
        self.call(Method::POST, path, Some(token), body).await
    }

    /// The workers, sorted by endpoint (so index i is simulator worker i).
    pub(crate) async fn workers(&self) -> Vec<ccm_domain::Worker> {
        let mut all = self
            .fleet
            .engine
            .workers(&WorkerFilter::default())
            .await
            .unwrap()
            .items;
        all.sort_by_key(|w| w.public_ip.map(|ip| ip.to_string()).unwrap_or_default());
        all
    }

    /// Runs CML syncs until every running worker is ready.
    pub(crate) async fn until_ready(&self) {
        for _ in 0..100 {
            self.fleet.engine.trigger_job(JobKind::CmlSync).await.ok();
            let ws = self.workers().await;
            if ws.iter().all(|w| w.service.status == ServiceStatus::Ready) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("workers never became ready");
    }

    /// Serves the API on a loopback port (real HTTP).
    pub(crate) async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = self.state.clone();
        tokio::spawn(ccm_api::serve(listener, state, std::future::pending()));
        addr
    }
}

/// A reqwest client for real-HTTP tests.
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}
