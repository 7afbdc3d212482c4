//! `/healthz`, `/readyz`, `/metrics`, `/api/openapi.json` and the docs page `/api/docs/`.

use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use ccm_domain::{Ec2State, ServiceStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, Problem};
use crate::state::ApiState;

/// Liveness or readiness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Probe {
    /// `ok`, or `unavailable`.
    pub status: String,
    /// The store answers.
    pub database: Option<bool>,
    /// The scheduler runs.
    pub scheduler: Option<bool>,
    /// This replica holds a valid cluster membership (always true for a single node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<bool>,
}

/// Alive: the process answers HTTP.
#[utoipa::path(
    get, path = "/healthz", tag = "probes", security(()),
    responses((status = 200, body = Probe))
)]
pub(crate) async fn healthz() -> Json<Probe> {
    Json(Probe {
        status: "ok".into(),
        database: None,
        scheduler: None,
        membership: None,
    })
}

/// Ready: the store is reachable, the scheduler runs and (on several replicas) this replica's
/// cluster membership is valid (503 otherwise).
#[utoipa::path(
    get, path = "/readyz", tag = "probes", security(()),
    responses((status = 200, body = Probe), (status = 503, body = Probe))
)]
pub(crate) async fn readyz(State(state): State<ApiState>) -> Response {
    let engine = state.engine();
    let database = engine.store().ping().await.is_ok();
    let scheduler = engine.is_running();
    let membership = engine.readiness().is_ok();
    let ok = database && scheduler && membership;
    let probe = Probe {
        status: if ok { "ok" } else { "unavailable" }.into(),
        database: Some(database),
        scheduler: Some(scheduler),
        membership: Some(membership),
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(probe)).into_response()
}

/// Prometheus metrics (text format 0.0.4): worker counts by EC2 state and service status,
/// poll latencies, retries, budget, breakers, AWS calls, jobs, HTTP, SSE clients.
#[utoipa::path(
    get, path = "/metrics", tag = "probes",
    responses(
        (status = 200, content_type = "text/plain; version=0.0.4", body = String),
        (status = 503, description = "No metrics recorder is installed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn metrics(State(state): State<ApiState>) -> ApiResult<Response> {
    let handle = state
        .metrics_handle()
        .ok_or_else(|| ApiError::unavailable("metrics are not enabled in this process", None))?;
    let counts = state.engine().counts();
    for s in Ec2State::ALL {
        let n = counts.by_state.get(s.as_str()).copied().unwrap_or(0);
        metrics::gauge!(crate::metrics::WORKERS, "state" => s.as_str()).set(n as f64);
    }
    for s in ServiceStatus::ALL {
        let n = counts.by_service.get(s.as_str()).copied().unwrap_or(0);
        metrics::gauge!(crate::metrics::WORKERS_BY_SERVICE, "status" => s.as_str()).set(n as f64);
    }
    metrics::gauge!(crate::metrics::WORKERS_STALE).set(state.engine().stale_workers() as f64);
    metrics::gauge!(crate::metrics::SSE_CLIENTS).set(state.sse_clients() as f64);
    metrics::gauge!(crate::metrics::SESSIONS).set(state.sessions() as f64);
    // Breakers open: `ccm_breakers_open`, kept by ccm-resilience on every transition.
    let _ = state.engine().resilience().budget().snapshot(); // refreshes the budget gauge
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        handle.render(),
    )
        .into_response())
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get, path = "/api/openapi.json", tag = "docs",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object))
)]
pub(crate) async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        crate::routes::openapi_text().to_owned(),
    )
        .into_response()
}

fn swagger_config() -> Arc<utoipa_swagger_ui::Config<'static>> {
    static CONFIG: OnceLock<Arc<utoipa_swagger_ui::Config<'static>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            Arc::new(
                utoipa_swagger_ui::Config::from("/api/openapi.json")
                    // No call to the public validator service: the page works offline.
                    .validator_url("none")
                    .persist_authorization(true)
                    .try_it_out_enabled(true),
            )
        })
        .clone()
}

/// The interactive API page (Swagger UI, served from the binary).
#[utoipa::path(
    get, path = "/api/docs", tag = "docs",
    responses((status = 308, description = "To /api/docs/"))
)]
pub(crate) async fn docs_redirect() -> Redirect {
    Redirect::permanent("/api/docs/")
}

/// The interactive API page.
#[utoipa::path(
    get, path = "/api/docs/", tag = "docs",
    responses((status = 200, content_type = "text/html", body = String))
)]
pub(crate) async fn docs_index() -> ApiResult<Response> {
    docs_file("index.html")
}

/// A file of the interactive API page.
#[utoipa::path(
    get, path = "/api/docs/{file}", tag = "docs",
    params(("file" = String, Path, description = "A Swagger UI file")),
    responses(
        (status = 200, body = String),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn docs_asset(
    file: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult<Response> {
    let Path(file) =
        file.map_err(|e| ApiError::bad_request(Some("file"), format!("bad path: {e}")))?;
    docs_file(&file)
}

fn docs_file(name: &str) -> ApiResult<Response> {
    if name.contains("..") || name.contains('/') || name.len() > 128 {
        return Err(ApiError::not_found("no such file"));
    }
    match utoipa_swagger_ui::serve(name, swagger_config()) {
        Ok(Some(file)) => {
            let content_type = HeaderValue::from_str(&file.content_type)
                .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
            Ok((
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                ],
                file.bytes.into_owned(),
            )
                .into_response())
        }
        Ok(None) => Err(ApiError::not_found("no such file")),
        Err(e) => {
            tracing::warn!(error = %e, "cannot serve the docs page");
            Err(ApiError::unavailable("the docs page is unavailable", None))
        }
    }
}
