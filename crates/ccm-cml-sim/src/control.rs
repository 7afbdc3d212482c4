//! The control API (`--control ADDR`): JSON over HTTP to inspect and drive a running fleet.
//!
//! | method and path | body / query | answer |
//! |---|---|---|
//! | `GET /workers` | `?workers=SEL` (default `*`) | `{"workers": [WorkerReport]}` |
//! | `GET /workers/{index}` | | `WorkerReport`, or 404 |
//! | `GET /counters` | | counters summed over the fleet |
//! | `GET /endpoints` | | `["http://127.1.0.1:9443", …]` |
//! | `POST /faults` | `{"spec": "SPEC", "replace": false}` | `{"matched": N}` |
//! | `DELETE /faults` | `?workers=SEL` (default `*`) | `{"matched": N}` |
//! | `POST /actions` | `{"workers": "SEL", "action": "...", …}` | `{"matched": N}` |
//!
//! `SPEC` and `SEL` use the fault-spec grammar of [`crate::faults`]. Actions:
//! `power_off`, `power_on` (`"boot": "30s"`), `expire_tokens`, `fail401` (`"n": 3`),
//! `reset_counters` (also the user-agent counts and double polls), `set_ready`
//! (`"ready": false`), `user_login`, `double_poll_window` (`"window": "1500ms"`: a worker
//! called by two user agents less than this apart counts a double poll, see
//! [`CounterSnapshot::double_polls`]; fleet-wide whatever the selector), `user_start_lab`
//! (imports a two-node lab as the non-admin user if it has none, and starts it), `user_stop_lab`,
//! `set_clock` (`"now": RFC 3339`: the simulator's wall clock, fleet-wide, for harnesses that
//! play a usage trace in simulated time; telemetry is stamped with it). Errors are
//! `{code, description}` with status 400 or 404. Worker indices are fleet-wide, also when
//! `ccm sim` runs shard processes (the parent forwards to them).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::SimError;
use crate::cml_error::CmlError;
use crate::faults::{FaultSpec, WorkerRange, WorkerSelector};
use crate::worker::CounterSnapshot;

/// What the control API reports about one worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Fleet-wide index.
    pub index: usize,
    /// Base URL.
    pub endpoint: String,
    /// Accepting connections.
    pub up: bool,
    /// What `system_information.ready` says now.
    pub ready: bool,
    /// The faults, in fault-spec notation (empty when healthy).
    pub faults: String,
    /// Request counters.
    pub counters: CounterSnapshot,
}

/// A control action on workers (see [`crate::SimFleet::act`] and the control API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Refuse connections, reset open ones.
    PowerOff,
    /// Come back; not ready for `boot`.
    PowerOn {
        /// Boot time before `ready` turns true.
        #[serde(with = "humantime_serde", default)]
        boot: Duration,
    },
    /// Invalidate every issued token.
    ExpireTokens,
    /// The next `n` bearer requests get 401.
    Fail401 {
        /// How many.
        n: u32,
    },
    /// Zero the counters.
    ResetCounters,
    /// Set `system_information.ready`.
    SetReady {
        /// The new value.
        ready: bool,
    },
    /// The non-admin user logs in (user_activity telemetry).
    UserLogin,
    /// The non-admin user starts a lab (imported first if the user has none).
    UserStartLab,
    /// The non-admin user stops their lab.
    UserStopLab,
    /// Sets the simulator's wall clock (fleet-wide).
    SetClock {
        /// The time it reads now.
        now: chrono::DateTime<chrono::Utc>,
    },
    /// Sets the double-poll window of the whole fleet (see
    /// [`CounterSnapshot::double_polls`]); `"0s"` switches detection off.
    DoublePollWindow {
        /// The new window, e.g. `"1500ms"`.
        #[serde(with = "humantime_serde")]
        window: Duration,
    },
}

/// Where control requests go: this process's fleet ([`crate::SimFleet`]) or the shard
/// processes of a bigger one. Both answer with fleet-wide worker indices. Defined here and
/// implemented by each backend, so that the control API depends on neither.
#[async_trait::async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// Reports of the selected workers.
    async fn reports(&self, sel: &WorkerSelector) -> Result<Vec<WorkerReport>, SimError>;
    /// Counters summed over the fleet.
    async fn counters(&self) -> Result<CounterSnapshot, SimError>;
    /// Every worker's base URL, in fleet order.
    fn endpoints(&self) -> Vec<String>;
    /// Applies a fault spec (already parsed; `req` is what the client sent); returns how
    /// many workers it selected.
    async fn apply(&self, spec: &FaultSpec, req: &FaultsRequest) -> Result<usize, SimError>;
    /// Removes the faults of the selected workers; returns how many.
    async fn clear(&self, sel: &WorkerSelector) -> Result<usize, SimError>;
    /// Runs an action on the selected workers (`req` is what the client sent); returns how
    /// many.
    async fn act(&self, sel: &WorkerSelector, req: &ActionRequest) -> Result<usize, SimError>;
}

/// `POST /faults` body.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct FaultsRequest {
    pub(crate) spec: String,
    #[serde(default)]
    pub(crate) replace: bool,
}

/// `POST /actions` body.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ActionRequest {
    #[serde(default)]
    pub(crate) workers: Option<String>,
    #[serde(flatten)]
    pub(crate) action: Action,
}

/// `{"matched": N}`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Matched {
    pub(crate) matched: usize,
}

/// `{"workers": [...]}`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct WorkerList {
    pub(crate) workers: Vec<WorkerReport>,
}

#[derive(Debug, Deserialize)]
struct SelQuery {
    workers: Option<String>,
}

fn selector(text: Option<&str>) -> Result<WorkerSelector, CmlError> {
    match text {
        None => Ok(WorkerSelector::all()),
        Some(t) => t
            .parse()
            .map_err(|e| CmlError::bad_request(format!("bad worker selector: {e}"))),
    }
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut r = body.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => CmlError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn body_json<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, CmlError> {
    serde_json::from_slice(body).map_err(|e| CmlError::bad_request(format!("bad body: {e}")))
}

fn upstream(e: SimError) -> CmlError {
    CmlError::new(StatusCode::BAD_GATEWAY, e.to_string())
}

/// The shared handle the routes hold.
type Shared = Arc<dyn Backend>;

type R = Result<Response, CmlError>;

async fn list(State(b): State<Shared>, Query(q): Query<SelQuery>) -> R {
    let sel = selector(q.workers.as_deref())?;
    let workers = b.reports(&sel).await.map_err(upstream)?;
    Ok(json(&WorkerList { workers }))
}

async fn one(State(b): State<Shared>, Path(index): Path<String>) -> R {
    let i: usize = index
        .parse()
        .map_err(|_| CmlError::bad_request(format!("bad worker index {index:?}")))?;
    let sel = WorkerSelector(vec![WorkerRange::Index(i)]);
    let mut reports = b.reports(&sel).await.map_err(upstream)?;
    match reports.pop() {
        Some(r) => Ok(json(&r)),
        None => Err(CmlError::not_found(format!("no worker {i}"))),
    }
}

async fn counters(State(b): State<Shared>) -> R {
    Ok(json(&b.counters().await.map_err(upstream)?))
}

async fn endpoints(State(b): State<Shared>) -> R {
    Ok(json(&b.endpoints()))
}

async fn set_faults(State(b): State<Shared>, body: Bytes) -> R {
    let req: FaultsRequest = body_json(&body)?;
    let spec = FaultSpec::parse(&req.spec)
        .map_err(|e| CmlError::bad_request(format!("bad fault spec: {e}")))?;
    let matched = b.apply(&spec, &req).await.map_err(upstream)?;
    Ok(json(&Matched { matched }))
}

async fn clear_faults(State(b): State<Shared>, Query(q): Query<SelQuery>) -> R {
    let sel = selector(q.workers.as_deref())?;
    let matched = b.clear(&sel).await.map_err(upstream)?;
    Ok(json(&Matched { matched }))
}

async fn actions(State(b): State<Shared>, body: Bytes) -> R {
    let req: ActionRequest = body_json(&body)?;
    let sel = selector(req.workers.as_deref())?;
    let matched = b.act(&sel, &req).await.map_err(upstream)?;
    Ok(json(&Matched { matched }))
}

async fn not_found() -> CmlError {
    CmlError::not_found("no such control endpoint")
}

fn router(backend: Shared) -> Router {
    Router::new()
        .route("/workers", get(list))
        .route("/workers/{index}", get(one))
        .route("/counters", get(counters))
        .route("/endpoints", get(endpoints))
        .route(
            "/faults",
            axum::routing::post(set_faults).delete(clear_faults),
        )
        .route("/actions", axum::routing::post(actions))
        .fallback(not_found)
        .with_state(backend)
}

/// Binds the control API and serves it until `shutdown`; returns the bound address.
pub(crate) async fn serve(
    backend: Arc<dyn Backend>,
    addr: SocketAddr,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Result<SocketAddr, SimError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SimError::ControlBind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| SimError::ControlBind { addr, source })?;
    let app = router(backend);
    tracker.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "control api stopped");
        }
    });
    tracing::info!(%local, "control api listening");
    Ok(local)
}
