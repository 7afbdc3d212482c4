//! `/api/v1/workers`: list, get, create, import, start, stop, pause, resume, terminate,
//! delete, tags, detailed monitoring, idle detection, refresh, metrics history, events.
//!
//! Long operations (create, start, stop, pause, resume, terminate) answer **202 Accepted**
//! with the worker as it is now: follow `GET /api/v1/events?worker=ID` (or poll the worker)
//! until it reaches the state you want.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ccm_domain::{
    AmiId, Ec2State, InstanceId, InstanceType, PauseReason, Region, ServiceStatus, Worker, WorkerId,
};
use ccm_engine::{AmiSelector, CreateWorker, ImportRequest, ImportSelector, RefreshOutcome};
use ccm_store::{WorkerFilter, WorkerSort};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::{Caller, Role};
use crate::dto::{
    CreateWorkerRequest, EventPage, EventRecord, IdleDetectionRequest, ImagePreviewView, ImageView,
    ImportPreviewView, ImportView, ImportWorkersRequest, MetricsHistory, MetricsPointView, Order,
    RefreshView, SnoozeRequest, SortKey, TagsRequest, ViewContext, WorkerListQuery, WorkerPage,
    WorkerView,
};
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{JsonBody, Query, WorkerPath, split_list};
use crate::state::ApiState;
use crate::view_cache::page_json;

fn filter_of(q: WorkerListQuery) -> ApiResult<WorkerFilter> {
    let regions = split_list(&q.region);
    for r in &regions {
        Region::parse(r)
            .map_err(|e| ApiError::bad_request(Some("region"), format!("region: {e}")))?;
    }
    let states = split_list(&q.state);
    for s in &states {
        if !Ec2State::ALL.iter().any(|x| x.as_str() == s) {
            return Err(ApiError::bad_request(
                Some("state"),
                format!("state: {s:?} is not an EC2 state"),
            ));
        }
    }
    let services = split_list(&q.service);
    for s in &services {
        s.parse::<ServiceStatus>()
            .map_err(|e| ApiError::bad_request(Some("service"), format!("service: {e}")))?;
    }
    let text = q.q.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    if text.as_ref().is_some_and(|t| t.chars().count() > 128) {
        return Err(ApiError::bad_request(
            Some("q"),
            "q: at most 128 characters",
        ));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            Some("limit"),
            "limit: must be between 1 and 1000",
        ));
    }
    let offset = q.offset.unwrap_or(0);
    if offset > 10_000_000 {
        return Err(ApiError::bad_request(Some("offset"), "offset: too large"));
    }
    Ok(WorkerFilter {
        regions,
        ec2_states: states,
        service_statuses: services,
        text,
        ids: None,
        sort: match q.sort.unwrap_or_default() {
            SortKey::Name => WorkerSort::Name,
            SortKey::Created => WorkerSort::Created,
            SortKey::Updated => WorkerSort::Updated,
            SortKey::State => WorkerSort::State,
            SortKey::Service => WorkerSort::Service,
            SortKey::Region => WorkerSort::Region,
        },
        descending: q.order == Some(Order::Desc),
        limit,
        offset,
    })
}

fn location(id: impl std::fmt::Display) -> HeaderValue {
    HeaderValue::from_str(&format!("/api/v1/workers/{id}"))
        .unwrap_or_else(|_| HeaderValue::from_static("/api/v1/workers"))
}

fn accepted(view: WorkerView) -> Response {
    let loc = location(view.id);
    (StatusCode::ACCEPTED, [(header::LOCATION, loc)], Json(view)).into_response()
}

/// List workers.
#[utoipa::path(
    get, path = "/api/v1/workers", tag = "workers",
    params(WorkerListQuery),
    responses(
        (status = 200, body = WorkerPage),
        (status = 400, description = "Bad parameter (named in `field`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    Query(q): Query<WorkerListQuery>,
) -> ApiResult<Response> {
    let filter = filter_of(q)?;
    let engine = state.engine();
    let ctx = ViewContext::new(engine);
    let views = state.views();
    // The page's ids and committed versions (no documents), then the rendered views kept
    // for exactly those versions; only the other workers' documents are read.
    let stamps = engine.worker_stamps(&filter).await?;
    let mut items: Vec<Option<Bytes>> = stamps.items.iter().map(|s| views.get(s, &ctx)).collect();
    let missing: Vec<WorkerId> = stamps
        .items
        .iter()
        .zip(&items)
        .filter(|(_, b)| b.is_none())
        .map(|(s, _)| s.id)
        .collect();
    let mut total = stamps.total;
    if !missing.is_empty() {
        let read = engine.workers_by_id(&missing).await?;
        let mut by_id: HashMap<WorkerId, &Worker> = read.iter().map(|w| (w.id, w)).collect();
        let mut changed = false;
        for (stamp, item) in stamps.items.iter().zip(items.iter_mut()) {
            if item.is_some() {
                continue;
            }
            match by_id.remove(&stamp.id) {
                Some(w) if w.version == stamp.version => *item = Some(views.view(w, &ctx)?),
                _ => changed = true,
            }
        }
        if changed {
            // A worker changed or went between the two reads: its new document may no longer
            // match the filter or the order. Answer this page from one read of the documents.
            let page = engine.workers(&filter).await?;
            total = page.total;
            items = page
                .items
                .iter()
                .map(|w| views.view(w, &ctx).map(Some))
                .collect::<ApiResult<_>>()?;
        }
    }
    let items: Vec<Bytes> = items.into_iter().flatten().collect();
    Ok(json_bytes(page_json(
        &items,
        total,
        filter.limit,
        filter.offset,
    )))
}

/// A `200 OK` with a JSON body already serialized.
fn json_bytes(body: impl Into<Bytes>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.into(),
    )
        .into_response()
}

/// One worker.
#[utoipa::path(
    get, path = "/api/v1/workers/{id}", tag = "workers",
    params(("id" = uuid::Uuid, Path, description = "Worker id")),
    responses(
        (status = 200, body = WorkerView),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such worker", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get(
    State(state): State<ApiState>,
    WorkerPath(id): WorkerPath,
) -> ApiResult<Response> {
    let engine = state.engine();
    let w = engine.worker(id).await?;
    let ctx = ViewContext::new(engine);
    Ok(json_bytes(state.views().view(&w, &ctx)?))
}

/// Provision a new worker (202: the record exists, RunInstances runs in the background).
///
/// The instance type must be one of `[provisioning] allowed_instance_types`, the image one of
/// `[provisioning] ami_owners` (a name pattern searches only those owners; an AMI id of
/// another owner is refused), and the fleet below `[provisioning] max_workers`.
#[utoipa::path(
    post, path = "/api/v1/workers", tag = "workers",
    request_body = CreateWorkerRequest,
    responses(
        (status = 202, description = "Provisioning started; `Location` is the worker", body = WorkerView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`[provisioning] max_workers` is reached (`rule` names it)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid value (named in `field`), or an instance type or image owner the configuration does not allow (`rule` names it)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The cloud is throttled or unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    JsonBody(req): JsonBody<CreateWorkerRequest>,
) -> ApiResult<Response> {
    let region = req
        .region
        .as_deref()
        .map(|r| Region::parse(r).map_err(|e| ApiError::invalid("region", format!("region: {e}"))))
        .transpose()?;
    let instance_type = req
        .instance_type
        .as_deref()
        .map(|t| {
            InstanceType::parse(t)
                .map_err(|e| ApiError::invalid("instance_type", format!("instance_type: {e}")))
        })
        .transpose()?;
    let ami = ami_selector(req.ami_id.as_deref(), req.ami_name_pattern.as_deref())?;
    check_tags(&req.tags)?;
    let w = state
        .engine()
        .create_worker(
            CreateWorker {
                name: req.name,
                region,
                instance_type,
                ami,
                tags: req.tags,
            },
            &caller.actor(),
        )
        .await?;
    Ok(accepted(WorkerView::new(&w, state.engine())))
}

/// The image selector of a request: an id, a name pattern, or neither (the configured one).
fn ami_selector(id: Option<&str>, pattern: Option<&str>) -> ApiResult<AmiSelector> {
    Ok(match (id, pattern) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "ami_id",
                "give ami_id or ami_name_pattern, not both",
            ));
        }
        (Some(id), None) => AmiSelector::Id(
            AmiId::parse(id).map_err(|e| ApiError::invalid("ami_id", format!("ami_id: {e}")))?,
        ),
        (None, Some(p)) => {
            if p.trim().is_empty() || p.len() > 128 {
                return Err(ApiError::invalid(
                    "ami_name_pattern",
                    "ami_name_pattern: 1 to 128 characters",
                ));
            }
            AmiSelector::NamePattern(p.to_owned())
        }
        (None, None) => AmiSelector::Default,
    })
}

fn region_of(region: Option<&str>) -> ApiResult<Option<Region>> {
    region
        .map(|r| Region::parse(r).map_err(|e| ApiError::invalid("region", format!("region: {e}"))))
        .transpose()
}

fn check_tags(tags: &BTreeMap<String, String>) -> ApiResult<()> {
    if tags.len() > 50 {
        return Err(ApiError::invalid("tags", "tags: at most 50"));
    }
    for (k, v) in tags {
        if k.is_empty() || k.len() > 128 || v.len() > 256 || k.starts_with("aws:") {
            return Err(ApiError::invalid(
                &format!("tags.{}", k.chars().take(64).collect::<String>()),
                "tags: keys 1-128 characters, values up to 256, no aws: prefix",
            ));
        }
    }
    Ok(())
}

/// An import request, validated (every error names its field). `restricted`: callers below
/// admin may import only instances that match the `[import]` filter.
fn import_request_of(req: ImportWorkersRequest, restricted: bool) -> ApiResult<ImportRequest> {
    let region = req
        .region
        .as_deref()
        .map(|r| Region::parse(r).map_err(|e| ApiError::invalid("region", format!("region: {e}"))))
        .transpose()?;
    let given = [
        req.instance_ids.is_some(),
        req.ami_id.is_some(),
        req.ami_name_pattern.is_some(),
        req.configured,
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if given != 1 {
        return Err(ApiError::invalid(
            "instance_ids",
            "give exactly one of instance_ids, ami_id, ami_name_pattern or configured: true",
        ));
    }
    let selector = if let Some(ids) = req.instance_ids {
        if ids.is_empty() || ids.len() > 1000 {
            return Err(ApiError::invalid(
                "instance_ids",
                "instance_ids: 1 to 1000 ids",
            ));
        }
        let parsed = ids
            .iter()
            .enumerate()
            .map(|(i, s)| {
                InstanceId::parse(s).map_err(|e| {
                    ApiError::invalid(
                        &format!("instance_ids[{i}]"),
                        format!("instance_ids[{i}]: {e}"),
                    )
                })
            })
            .collect::<ApiResult<Vec<_>>>()?;
        ImportSelector::InstanceIds(parsed)
    } else if let Some(id) = req.ami_id {
        ImportSelector::AmiId(
            AmiId::parse(&id).map_err(|e| ApiError::invalid("ami_id", format!("ami_id: {e}")))?,
        )
    } else if let Some(p) = req.ami_name_pattern {
        if p.trim().is_empty() || p.len() > 128 {
            return Err(ApiError::invalid(
                "ami_name_pattern",
                "ami_name_pattern: 1 to 128 characters",
            ));
        }
        ImportSelector::AmiNamePattern(p)
    } else {
        ImportSelector::Configured
    };
    Ok(ImportRequest {
        region,
        selector,
        all: req.all,
        restricted_to_filter: restricted,
    })
}

/// Import existing EC2 instances as workers (importing one twice returns the existing worker).
///
/// Below admin, every instance to import must match the `[import]` filter (tag and/or image
/// name and owner), since an imported worker receives the fleet's CML password; an admin may
/// import any instance.
#[utoipa::path(
    post, path = "/api/v1/workers/import", tag = "workers",
    request_body = ImportWorkersRequest,
    responses(
        (status = 200, body = ImportView),
        (status = 403, description = "Below admin: an instance to import does not match the `[import]` filter (`rule` is `import`); nothing was imported", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Several instances match and `all` is not set", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn import(
    State(state): State<ApiState>,
    caller: Caller,
    JsonBody(req): JsonBody<ImportWorkersRequest>,
) -> ApiResult<Json<ImportView>> {
    let request = import_request_of(req, caller.principal.role != Role::Admin)?;
    let report = state
        .engine()
        .import_workers(request, &caller.actor())
        .await?;
    Ok(Json(report.into()))
}

/// What an import with this body would do, without changing anything: every matching
/// instance, which of them already are workers, and whether `all` is needed.
#[utoipa::path(
    post, path = "/api/v1/workers/import/preview", tag = "workers",
    request_body = ImportWorkersRequest,
    responses(
        (status = 200, body = ImportPreviewView),
        (status = 422, description = "Invalid value (named in `field`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The cloud is throttled or unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn import_preview(
    State(state): State<ApiState>,
    caller: Caller,
    JsonBody(req): JsonBody<ImportWorkersRequest>,
) -> ApiResult<Json<ImportPreviewView>> {
    let request = import_request_of(req, caller.principal.role != Role::Admin)?;
    let preview = state.engine().preview_import(request).await?;
    Ok(Json(preview.into()))
}

/// Parameters of an image preview.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ImageQueryParams {
    /// Region (default: the configured one).
    #[serde(default)]
    pub region: Option<String>,
    /// An image id.
    #[serde(default)]
    pub ami_id: Option<String>,
    /// Or: a name pattern (`*` wildcards). Neither: the configured image.
    #[serde(default)]
    pub ami_name_pattern: Option<String>,
}

/// The image a new worker would use with this region and selector, resolved as a create
/// would resolve it (nothing is launched).
#[utoipa::path(
    get, path = "/api/v1/images", tag = "images",
    params(ImageQueryParams),
    responses(
        (status = 200, body = ImagePreviewView),
        (status = 400, description = "Bad parameter (named in `field`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid value (named in `field`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The cloud is throttled or unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn images(
    State(state): State<ApiState>,
    Query(q): Query<ImageQueryParams>,
) -> ApiResult<Json<ImagePreviewView>> {
    let region = region_of(q.region.as_deref().filter(|r| !r.is_empty()))?;
    let ami = ami_selector(
        q.ami_id.as_deref().filter(|x| !x.is_empty()),
        q.ami_name_pattern.as_deref().filter(|x| !x.is_empty()),
    )?;
    let engine = state.engine();
    let region = match region {
        Some(r) => r,
        None => engine
            .provisioning_options()
            .default_region
            .ok_or_else(|| ApiError::invalid("region", "region: none given and none configured"))?,
    };
    let i = engine.preview_image(Some(region.clone()), &ami).await?;
    let image = ImageView {
        id: i.id.to_string(),
        name: i.name,
        owner_id: i.owner_id,
        creation_date: i.creation_date,
        state: i.state,
        description: i.description,
    };
    Ok(Json(ImagePreviewView {
        region: region.to_string(),
        selected: Some(image.clone()),
        images: vec![image],
    }))
}

macro_rules! lifecycle {
    ($name:ident, $action:literal, $doc:literal, |$engine:ident, $id:ident, $by:ident| $call:expr) => {
        #[doc = $doc]
        #[utoipa::path(
            post, path = $action, tag = "workers",
            params(("id" = uuid::Uuid, Path, description = "Worker id")),
            responses(
                (status = 202, description = "Accepted; the worker as it is now", body = WorkerView),
                (status = 404, body = Problem, content_type = "application/problem+json"),
                (status = 409, description = "The worker's state does not allow it", body = Problem, content_type = "application/problem+json"),
                (status = 503, description = "The cloud is throttled or unavailable", body = Problem, content_type = "application/problem+json"),
            )
        )]
        pub(crate) async fn $name(
            State(state): State<ApiState>,
            caller: Caller,
            WorkerPath($id): WorkerPath,
        ) -> ApiResult<Response> {
            let $engine = state.engine();
            let $by = caller.actor();
            let w = $call.await?;
            Ok(accepted(WorkerView::new(&w, $engine)))
        }
    };
}

lifecycle!(
    start,
    "/api/v1/workers/{id}/start",
    "Start a stopped worker.",
    |engine, id, by| engine.start_worker(id, &by)
);
lifecycle!(
    stop,
    "/api/v1/workers/{id}/stop",
    "Stop a running worker (counted as a manual pause).",
    |engine, id, by| engine.stop_worker(id, &by)
);
lifecycle!(
    pause,
    "/api/v1/workers/{id}/pause",
    "Pause a running worker (stop, reason `manual`).",
    |engine, id, by| engine.pause_worker(id, PauseReason::Manual, &by)
);
lifecycle!(
    resume,
    "/api/v1/workers/{id}/resume",
    "Resume a paused worker.",
    |engine, id, by| engine.resume_worker(id, &by)
);
lifecycle!(
    terminate,
    "/api/v1/workers/{id}/terminate",
    "Terminate the worker's instance, for good (admin).",
    |engine, id, by| engine.terminate_worker(id, &by)
);

/// Delete the worker record (the instance is untouched; admin).
#[utoipa::path(
    delete, path = "/api/v1/workers/{id}", tag = "workers",
    params(("id" = uuid::Uuid, Path, description = "Worker id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn delete(
    State(state): State<ApiState>,
    caller: Caller,
    WorkerPath(id): WorkerPath,
) -> ApiResult<StatusCode> {
    state.engine().delete_worker(id, &caller.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set and remove tags (in EC2 and on the record).
#[utoipa::path(
    patch, path = "/api/v1/workers/{id}/tags", tag = "workers",
    params(("id" = uuid::Uuid, Path, description = "Worker id")),
    request_body = TagsRequest,
    responses(
        (status = 200, body = WorkerView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn tags(
    State(state): State<ApiState>,
    caller: Caller,
    WorkerPath(id): WorkerPath,
    JsonBody(req): JsonBody<TagsRequest>,
) -> ApiResult<Json<WorkerView>> {
    if req.set.is_empty() && req.remove.is_empty() {
        return Err(ApiError::invalid(
            "set",
            "give tags to set or keys to remove",
        ));
    }
    check_tags(&req.set)?;
    if req.remove.len() > 50 || req.remove.iter().any(|k| k.is_empty() || k.len() > 128) {
        return Err(ApiError::invalid(
            "remove",
            "remove: at most 50 keys of 1-128 characters",
        ));
    }
    let w = state
        .engine()
        .update_tags(id, req.set, req.remove, &caller.actor())
        .await?;
    Ok(Json(WorkerView::new(&w, state.engine())))
}

/// Turn on detailed (1-minute) CloudWatch monitoring.
#[utoipa::path(
    post, path = "/api/v1/workers/{id}/detailed-monitoring", tag = "workers",
    params(("id" = uuid::Uuid, Path, description = "Worker id")),
    responses(
        (status = 200, body = WorkerView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 501, description = "The cloud endpoint does not support it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn detailed_monitoring(
    State(state): State<ApiState>,
    caller: Caller,
    WorkerPath(id): WorkerPath,
) -> ApiResult<Json<WorkerView>> {
    let w = state
        .engine()
        .enable_detailed_monitoring(id, &caller.actor())
        .await?;
    Ok(Json(WorkerView::new(&w, state.engine())))
}

/// Switch idle detection (and auto-pause) for one worker.
#[utoipa::path(
    put, path = "/api/v1/workers/{id}/idle-detection", tag = "workers",
    params(("id" = uuid::Uuid, Path, description = "Worker id")),
    request_body = IdleDetectionRequest,
    responses(
        (status = 200, body = WorkerView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn idle_detection(
    State(state): State<ApiState>,
    caller: Caller,
    WorkerPath(id): WorkerPath,
    JsonBody(req): JsonBody<IdleDetectionRequest>,
) -> ApiResult<Json<WorkerView>> {
    let w = state
        .engine()
        .set_idle_detection(id, req.enabled, &caller.actor())
        .await?;
    Ok(Json(WorkerView::new(&w, state.engine())))
}

/// Keep a worker awake until a time (`until`) or for a while (`for`): no idle pause and no
/// schedule stop before then (at most 14 days; it ends by itself).
#[utoipa::path(
    put, path = "/api/v1/workers/{id}/snooze", tag = "workers",
    params(("id" = uuid::Uuid, Path, description = "Worker id")),
    request_body = SnoozeRequest,
    responses(
        (status = 200, body = WorkerView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn snooze(
    State(state): State<ApiState>,
    caller: Caller,
    WorkerPath(id): WorkerPath,
    JsonBody(req): JsonBody<SnoozeRequest>,
) -> ApiResult<Json<WorkerView>> {
    let now = state.engine().now();
    let until = match (req.until, req.for_.as_deref()) {
        (Some(until), None) => until,
        (None, Some(text)) => {
            let d = humantime::parse_duration(text.trim()).map_err(|_| {
                ApiError::invalid(
                    "for",
                    format!(
                        "{:?} is not a duration (e.g. 90m, 4h)",
                        text.chars().take(40).collect::<String>()
                    ),
                )
            })?;
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| ApiError::invalid("for", "the duration is too long"))?
        }
        _ => {
            return Err(ApiError::invalid(
                "until",
                "give either until (a time) or for (a duration)",
            ));
        }
    };
    let w = state
        .engine()
        .snooze_worker(id, until, &caller.actor())
        .await?;
    Ok(Json(WorkerView::new(&w, state.engine())))
}

/// End a worker's snooze now.
#[utoipa::path(
    delete, path = "/api/v1/workers/{id}/snooze", tag = "workers",
    params(("id" = uuid::Uuid, Path, description = "Worker id")),
    responses(
        (status = 200, body = WorkerView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn clear_snooze(
    State(state): State<ApiState>,
    caller: Caller,
    WorkerPath(id): WorkerPath,
) -> ApiResult<Json<WorkerView>> {
    let w = state.engine().clear_snooze(id, &caller.actor()).await?;
    Ok(Json(WorkerView::new(&w, state.engine())))
}

/// Refresh now (EC2 state, CML sync, labs). Throttled per worker; a refresh already running
/// is joined.
#[utoipa::path(
    post, path = "/api/v1/workers/{id}/refresh", tag = "workers",
    params(("id" = uuid::Uuid, Path, description = "Worker id")),
    responses(
        (status = 200, body = RefreshView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The refresh failed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn refresh(
    State(state): State<ApiState>,
    caller: Caller,
    WorkerPath(id): WorkerPath,
) -> ApiResult<Json<RefreshView>> {
    let engine = state.engine();
    let outcome = engine.refresh_worker(id, &caller.actor()).await?;
    let w = engine.worker(id).await?;
    let (outcome, reason, retry_in_seconds) = match outcome {
        RefreshOutcome::Refreshed => ("refreshed", None, None),
        RefreshOutcome::Joined => ("joined", None, None),
        RefreshOutcome::Skipped {
            reason,
            retry_in_seconds,
        } => (
            "skipped",
            serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned)),
            retry_in_seconds,
        ),
    };
    Ok(Json(RefreshView {
        outcome: outcome.to_owned(),
        reason,
        retry_in_seconds,
        worker: WorkerView::new(&w, engine),
    }))
}

/// Parameters of the metrics history.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct MetricsQuery {
    /// From when: an RFC 3339 time, or a duration back from now (`24h`, `7d`). Default 24h;
    /// at most 31 days back.
    #[serde(default)]
    pub since: Option<String>,
}

fn since_of(text: Option<&str>, now: DateTime<Utc>) -> ApiResult<DateTime<Utc>> {
    let max_back = Duration::from_secs(31 * 86_400);
    let back = match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Duration::from_secs(86_400),
        Some(t) => match DateTime::parse_from_rfc3339(t) {
            Ok(at) => return Ok(at.with_timezone(&Utc).max(now - chrono::Duration::days(31))),
            Err(_) => humantime::parse_duration(t).map_err(|_| {
                ApiError::bad_request(
                    Some("since"),
                    "since: an RFC 3339 time or a duration such as 24h",
                )
            })?,
        },
    };
    let back = chrono::Duration::from_std(back.min(max_back)).unwrap_or(chrono::Duration::days(1));
    Ok(now - back)
}

/// The worker's metrics history (downsampled).
#[utoipa::path(
    get, path = "/api/v1/workers/{id}/metrics", tag = "workers",
    params(("id" = uuid::Uuid, Path, description = "Worker id"), MetricsQuery),
    responses(
        (status = 200, body = MetricsHistory),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn metrics_history(
    State(state): State<ApiState>,
    WorkerPath(id): WorkerPath,
    Query(q): Query<MetricsQuery>,
) -> ApiResult<Json<MetricsHistory>> {
    let since = since_of(q.since.as_deref(), state.engine().now())?;
    let points = state.engine().metrics_history(id, since).await?;
    Ok(Json(MetricsHistory {
        worker_id: id.as_uuid(),
        since,
        points: points.iter().map(MetricsPointView::from).collect(),
    }))
}

/// Parameters of a worker's event list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventListQuery {
    /// Only events older than this id (paging backwards).
    #[serde(default)]
    pub before: Option<u64>,
    /// Page size, 1 to 500 (default 100).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// The worker's events from the log, newest first.
#[utoipa::path(
    get, path = "/api/v1/workers/{id}/events", tag = "workers",
    params(("id" = uuid::Uuid, Path, description = "Worker id"), EventListQuery),
    responses(
        (status = 200, body = EventPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn events(
    State(state): State<ApiState>,
    WorkerPath(id): WorkerPath,
    Query(q): Query<EventListQuery>,
) -> ApiResult<Json<EventPage>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            Some("limit"),
            "limit: must be between 1 and 500",
        ));
    }
    let events = state.engine().worker_events(id, q.before, limit).await?;
    let next_before = (events.len() as u32 == limit)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    Ok(Json(EventPage {
        items: events
            .iter()
            .map(|e| EventRecord {
                seq: e.seq,
                event: serde_json::to_value(&e.event).unwrap_or_default(),
            })
            .collect(),
        next_before,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parameters_should_be_validated_and_named() {
        let ok = filter_of(WorkerListQuery {
            state: vec!["running,stopped".into()],
            service: vec!["ready".into()],
            limit: Some(10),
            order: Some(Order::Desc),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ok.ec2_states, ["running", "stopped"]);
        assert!(ok.descending);
        for (q, field) in [
            (
                WorkerListQuery {
                    state: vec!["runing".into()],
                    ..Default::default()
                },
                "state",
            ),
            (
                WorkerListQuery {
                    service: vec!["fine".into()],
                    ..Default::default()
                },
                "service",
            ),
            (
                WorkerListQuery {
                    limit: Some(0),
                    ..Default::default()
                },
                "limit",
            ),
            (
                WorkerListQuery {
                    region: vec!["EU".into()],
                    ..Default::default()
                },
                "region",
            ),
        ] {
            assert_eq!(filter_of(q).unwrap_err().field(), Some(field));
        }
    }

    #[test]
    fn since_should_take_times_and_durations() {
        let now = Utc::now();
        assert_eq!(
            since_of(None, now).unwrap(),
            now - chrono::Duration::hours(24)
        );
        assert_eq!(
            since_of(Some("2h"), now).unwrap(),
            now - chrono::Duration::hours(2)
        );
        assert_eq!(
            since_of(Some("400d"), now).unwrap(),
            now - chrono::Duration::days(31)
        );
        assert!(since_of(Some("yesterday"), now).is_err());
    }
}
