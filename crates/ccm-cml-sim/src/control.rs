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
//! `reset_counters`, `set_ready` (`"ready": false`), `user_login`. Errors are
//! `{code, description}` with status 400 or 404. Worker indices are fleet-wide, also when
//! `ccm sim` runs shard processes (the parent forwards to them).

use std::net::SocketAddr;
use std::sync::Arc;

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
use crate::fleet::{Action, SimFleet, WorkerReport};
use crate::shard::ShardSet;
use crate::worker::CounterSnapshot;

/// Where control requests go: this process's fleet, or the shard processes.
#[derive(Clone)]
pub(crate) enum Backend {
    Local(SimFleet),
    Shards(Arc<ShardSet>),
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

impl Backend {
    async fn reports(&self, sel_text: Option<&str>) -> Result<Vec<WorkerReport>, CmlError> {
        let sel = selector(sel_text)?;
        match self {
            Backend::Local(f) => Ok(f.reports(&sel)),
            Backend::Shards(s) => s.reports(&sel.to_string()).await.map_err(upstream),
        }
    }

    async fn counters(&self) -> Result<CounterSnapshot, CmlError> {
        match self {
            Backend::Local(f) => Ok(f.counters()),
            Backend::Shards(s) => s.counters().await.map_err(upstream),
        }
    }

    fn endpoints(&self) -> Vec<String> {
        match self {
            Backend::Local(f) => f.endpoints(),
            Backend::Shards(s) => s.endpoints(),
        }
    }

    async fn apply(&self, req: &FaultsRequest) -> Result<usize, CmlError> {
        let spec = FaultSpec::parse(&req.spec)
            .map_err(|e| CmlError::bad_request(format!("bad fault spec: {e}")))?;
        match self {
            Backend::Local(f) => Ok(f.apply_faults(&spec, req.replace)),
            Backend::Shards(s) => s.apply(req).await.map_err(upstream),
        }
    }

    async fn clear(&self, sel_text: Option<&str>) -> Result<usize, CmlError> {
        let sel = selector(sel_text)?;
        match self {
            Backend::Local(f) => Ok(f.clear_faults(&sel)),
            Backend::Shards(s) => s.clear(&sel.to_string()).await.map_err(upstream),
        }
    }

    async fn act(&self, req: &ActionRequest) -> Result<usize, CmlError> {
        let sel = selector(req.workers.as_deref())?;
        match self {
            Backend::Local(f) => Ok(f.act(&sel, &req.action)),
            Backend::Shards(s) => s.act(req).await.map_err(upstream),
        }
    }
}

type R = Result<Response, CmlError>;

async fn list(State(b): State<Backend>, Query(q): Query<SelQuery>) -> R {
    let workers = b.reports(q.workers.as_deref()).await?;
    Ok(json(&WorkerList { workers }))
}

async fn one(State(b): State<Backend>, Path(index): Path<String>) -> R {
    let i: usize = index
        .parse()
        .map_err(|_| CmlError::bad_request(format!("bad worker index {index:?}")))?;
    let sel = WorkerSelector(vec![WorkerRange::Index(i)]).to_string();
    let mut reports = b.reports(Some(&sel)).await?;
    match reports.pop() {
        Some(r) => Ok(json(&r)),
        None => Err(CmlError::not_found(format!("no worker {i}"))),
    }
}

async fn counters(State(b): State<Backend>) -> R {
    Ok(json(&b.counters().await?))
}

async fn endpoints(State(b): State<Backend>) -> R {
    Ok(json(&b.endpoints()))
}

async fn set_faults(State(b): State<Backend>, body: Bytes) -> R {
    let req: FaultsRequest = body_json(&body)?;
    let matched = b.apply(&req).await?;
    Ok(json(&Matched { matched }))
}

async fn clear_faults(State(b): State<Backend>, Query(q): Query<SelQuery>) -> R {
    let matched = b.clear(q.workers.as_deref()).await?;
    Ok(json(&Matched { matched }))
}

async fn actions(State(b): State<Backend>, body: Bytes) -> R {
    let req: ActionRequest = body_json(&body)?;
    let matched = b.act(&req).await?;
    Ok(json(&Matched { matched }))
}

async fn not_found() -> CmlError {
    CmlError::not_found("no such control endpoint")
}

fn router(backend: Backend) -> Router {
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
    backend: Backend,
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
