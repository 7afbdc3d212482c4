//! `/api/v1/workers/{id}/labs` and `/licence`: the labs of a worker (list, start, stop, wipe,
//! delete, download, import) and its licence (register, deregister — asynchronous).

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ccm_domain::{LabAction, LabId, WorkerId};
use ccm_engine::Engine;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::dto::{
    LabActionView, LabImportRequest, LabImported, LabList, LabView, LicenceAccepted,
    LicenceRequest, WatchLinks,
};
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{
    LabPath, MAX_TOPOLOGY_BODY, Query, WorkerPath, media_type, parse_json, read_body,
};
use crate::state::ApiState;

/// The labs of a worker, as last read.
#[utoipa::path(
    get, path = "/api/v1/workers/{id}/labs", tag = "labs",
    params(("id" = uuid::Uuid, Path, description = "Worker id")),
    responses(
        (status = 200, body = LabList),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    WorkerPath(id): WorkerPath,
) -> ApiResult<Json<LabList>> {
    let labs = state.engine().labs(id).await?;
    Ok(Json(LabList {
        items: labs.iter().map(LabView::from).collect(),
    }))
}

async fn lab_view(engine: &Engine, id: WorkerId, lab: &LabId) -> Option<LabView> {
    engine
        .labs(id)
        .await
        .ok()?
        .iter()
        .find(|l| &l.lab_id == lab)
        .map(LabView::from)
}

async fn act(
    state: &ApiState,
    caller: &Caller,
    id: WorkerId,
    lab: LabId,
    action: LabAction,
) -> ApiResult<Json<LabActionView>> {
    let engine = state.engine();
    engine.lab_action(id, &lab, action, &caller.actor()).await?;
    Ok(Json(LabActionView {
        lab_id: lab.to_string(),
        action: serde_json::to_value(action)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        lab: lab_view(engine, id, &lab).await,
    }))
}

macro_rules! lab_action {
    ($name:ident, $path:literal, $doc:literal, $action:expr) => {
        #[doc = $doc]
        #[utoipa::path(
            post, path = $path, tag = "labs",
            params(
                ("id" = uuid::Uuid, Path, description = "Worker id"),
                ("lab_id" = String, Path, description = "CML lab id"),
            ),
            responses(
                (status = 200, body = LabActionView),
                (status = 404, description = "No such worker or lab", body = Problem, content_type = "application/problem+json"),
                (status = 409, description = "The worker is not running", body = Problem, content_type = "application/problem+json"),
                (status = 502, description = "CML failed", body = Problem, content_type = "application/problem+json"),
                (status = 503, description = "The worker's breaker is open", body = Problem, content_type = "application/problem+json"),
            )
        )]
        pub(crate) async fn $name(
            State(state): State<ApiState>,
            caller: Caller,
            LabPath(id, lab): LabPath,
        ) -> ApiResult<Json<LabActionView>> {
            act(&state, &caller, id, lab, $action).await
        }
    };
}

lab_action!(
    start,
    "/api/v1/workers/{id}/labs/{lab_id}/start",
    "Start a lab.",
    LabAction::Start
);
lab_action!(
    stop,
    "/api/v1/workers/{id}/labs/{lab_id}/stop",
    "Stop a lab.",
    LabAction::Stop
);
lab_action!(
    wipe,
    "/api/v1/workers/{id}/labs/{lab_id}/wipe",
    "Wipe a lab (back to DEFINED_ON_CORE).",
    LabAction::Wipe
);

/// Delete a lab.
#[utoipa::path(
    delete, path = "/api/v1/workers/{id}/labs/{lab_id}", tag = "labs",
    params(
        ("id" = uuid::Uuid, Path, description = "Worker id"),
        ("lab_id" = String, Path, description = "CML lab id"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn delete(
    State(state): State<ApiState>,
    caller: Caller,
    LabPath(id, lab): LabPath,
) -> ApiResult<StatusCode> {
    state
        .engine()
        .lab_action(id, &lab, LabAction::Delete, &caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Download a lab's topology (YAML). A lab unknown to ccm's records is 404 without asking
/// CML; a download is a read and records no event.
#[utoipa::path(
    get, path = "/api/v1/workers/{id}/labs/{lab_id}/topology", tag = "labs",
    params(
        ("id" = uuid::Uuid, Path, description = "Worker id"),
        ("lab_id" = String, Path, description = "CML lab id"),
    ),
    responses(
        (status = 200, description = "The topology", content_type = "application/yaml", body = String),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn download(
    State(state): State<ApiState>,
    caller: Caller,
    LabPath(id, lab): LabPath,
) -> ApiResult<Response> {
    // ccm's own lab records answer for a lab that does not exist: no CML call for it.
    let known = state.engine().labs(id).await?;
    if !known.iter().any(|l| l.lab_id == lab) {
        return Err(ApiError::not_found(format!(
            "lab {lab} is not known on worker {id} (as of its last lab refresh)"
        )));
    }
    let yaml = state
        .engine()
        .download_lab(id, &lab, &caller.actor())
        .await?;
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{lab}.yaml\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        yaml,
    )
        .into_response())
}

/// Parameters of a lab import with a raw YAML body.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LabImportQuery {
    /// Title for the new lab (with a raw YAML body).
    #[serde(default)]
    pub title: Option<String>,
}

/// Import a topology as a new lab: the raw YAML (`application/yaml`, `text/yaml`,
/// `text/plain`) with `?title=`, or JSON `{topology, title}`. At most 2 MiB.
#[utoipa::path(
    post, path = "/api/v1/workers/{id}/labs", tag = "labs",
    params(("id" = uuid::Uuid, Path, description = "Worker id"), LabImportQuery),
    request_body(content(
        (LabImportRequest = "application/json"),
        (String = "application/yaml"),
    )),
    responses(
        (status = 201, description = "Created; `Location` is the lab's topology", body = LabImported),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than 2 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn import(
    State(state): State<ApiState>,
    caller: Caller,
    WorkerPath(id): WorkerPath,
    Query(q): Query<LabImportQuery>,
    req: Request,
) -> ApiResult<Response> {
    let media = media_type(req.headers()).unwrap_or_default();
    let (topology, title) = match media.as_str() {
        "application/json" => {
            let body = read_body(req, MAX_TOPOLOGY_BODY).await?;
            let r: LabImportRequest = parse_json(&body)?;
            (r.topology, r.title.or(q.title))
        }
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" | "text/plain" => {
            let body = read_body(req, MAX_TOPOLOGY_BODY).await?;
            let text = String::from_utf8(body.to_vec())
                .map_err(|_| ApiError::invalid("topology", "topology: not UTF-8 text"))?;
            (text, q.title)
        }
        "" => {
            return Err(ApiError::unsupported_media(
                "send the topology as application/yaml, or JSON {topology, title}",
            ));
        }
        other => {
            return Err(ApiError::unsupported_media(format!(
                "{other} is not accepted: send application/yaml, or JSON {{topology, title}}"
            )));
        }
    };
    if let Some(t) = &title
        && (t.trim().is_empty() || t.chars().count() > 256)
    {
        return Err(ApiError::invalid("title", "title: 1 to 256 characters"));
    }
    if topology.trim().is_empty() {
        return Err(ApiError::invalid("topology", "topology: must not be empty"));
    }
    let engine = state.engine();
    let lab = engine
        .import_lab(id, &topology, title.as_deref(), &caller.actor())
        .await?;
    let location = HeaderValue::from_str(&format!("/api/v1/workers/{id}/labs/{lab}/topology"))
        .unwrap_or_else(|_| HeaderValue::from_static("/api/v1/workers"));
    let view = LabImported {
        lab_id: lab.to_string(),
        lab: lab_view(engine, id, &lab).await,
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view),
    )
        .into_response())
}

fn watch(id: WorkerId) -> WatchLinks {
    WatchLinks {
        events: format!("/api/v1/events?worker={id}&type=ccm.licence.*"),
        worker: format!("/api/v1/workers/{id}"),
    }
}

fn licence_accepted(id: WorkerId, operation: &str) -> Response {
    let links = watch(id);
    let location = HeaderValue::from_str(&links.events)
        .unwrap_or_else(|_| HeaderValue::from_static("/api/v1/events"));
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(LicenceAccepted {
            operation: operation.to_owned(),
            worker_id: id.as_uuid(),
            watch: links,
        }),
    )
        .into_response()
}

/// Register the worker's CML licence. Asynchronous: 202 once CML accepted the token; the
/// outcome arrives as `ccm.licence.registered` or `ccm.licence.registration_failed`.
#[utoipa::path(
    post, path = "/api/v1/workers/{id}/licence", tag = "licence",
    params(("id" = uuid::Uuid, Path, description = "Worker id")),
    request_body = LicenceRequest,
    responses(
        (status = 202, description = "Accepted; `Location` is the event stream to watch", body = LicenceAccepted),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The worker is not running", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Malformed token", body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn register(
    State(state): State<ApiState>,
    caller: Caller,
    WorkerPath(id): WorkerPath,
    crate::extract::JsonBody(req): crate::extract::JsonBody<LicenceRequest>,
) -> ApiResult<Response> {
    let token = req.token.expose().trim();
    if token.is_empty() || token.len() > 256 {
        return Err(ApiError::invalid("token", "token: 1 to 256 characters"));
    }
    state
        .engine()
        .register_licence(
            id,
            ccm_cml::Secret::new(token),
            req.reregister,
            &caller.actor(),
        )
        .await?;
    Ok(licence_accepted(id, "register"))
}

/// Deregister the worker's CML licence (202; the outcome arrives as
/// `ccm.licence.deregistered` or `ccm.licence.deregistration_failed`).
#[utoipa::path(
    delete, path = "/api/v1/workers/{id}/licence", tag = "licence",
    params(("id" = uuid::Uuid, Path, description = "Worker id")),
    responses(
        (status = 202, description = "Accepted", body = LicenceAccepted),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn deregister(
    State(state): State<ApiState>,
    caller: Caller,
    WorkerPath(id): WorkerPath,
) -> ApiResult<Response> {
    state
        .engine()
        .deregister_licence(id, &caller.actor())
        .await?;
    Ok(licence_accepted(id, "deregister"))
}
