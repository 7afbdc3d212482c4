//! `/api/v1/system` and `/api/v1/settings`: health, counts, breakers and budgets, jobs,
//! savings, runtime settings.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ccm_domain::RuntimeSettings;
use ccm_resilience::BreakerState;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::dto::{
    BreakerView, BudgetView, BulkheadView, ComponentView, CountsView, HealthView, JobList, JobView,
    ProvisioningView, ReplicaList, ReplicaView, ResilienceView, SavingsView, SettingsView,
};
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{JobPath, JsonBody, Query};
use crate::state::ApiState;

/// Health of the database, the scheduler and the cloud provider.
#[utoipa::path(
    get, path = "/api/v1/system/health", tag = "system",
    responses((status = 200, body = HealthView))
)]
pub(crate) async fn health(State(state): State<ApiState>) -> Json<HealthView> {
    let h = state.engine().health().await;
    Json(HealthView {
        healthy: h.healthy,
        database: (&h.database).into(),
        scheduler: (&h.scheduler).into(),
        providers: h.providers.iter().map(ComponentView::from).collect(),
        workers: h.workers,
    })
}

/// The replicas sharing the fleet: heartbeat ages (database clock), leases and workers held.
/// A single node (SQLite) answers `mode: single_node` and no items.
#[utoipa::path(
    get, path = "/api/v1/system/replicas", tag = "system",
    responses(
        (status = 200, body = ReplicaList),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn replicas(State(state): State<ApiState>) -> ApiResult<Json<ReplicaList>> {
    let Some(view) = state.engine().cluster_view().await else {
        return Ok(Json(ReplicaList {
            mode: "single_node".into(),
            lease_ttl_seconds: None,
            partitions: None,
            items: Vec::new(),
        }));
    };
    let view =
        view.map_err(|e| ApiError::unavailable(format!("cannot read the replicas: {e}"), None))?;
    let items = view
        .replicas
        .iter()
        .map(|r| {
            let held = view.leases.iter().filter(|l| l.holder == r.record.id);
            let (parts, jobs): (Vec<_>, Vec<_>) = held.partition(|l| l.key.starts_with("part:"));
            ReplicaView {
                id: r.record.id.clone(),
                address: r.record.address.clone(),
                version: r.record.version.clone(),
                started_at: r.record.started_at,
                heartbeat_age_seconds: r.heartbeat_age.as_secs_f64(),
                live: r.heartbeat_age < view.lease_ttl,
                this: r.record.id == view.me,
                partitions: u32::try_from(parts.len()).unwrap_or(u32::MAX),
                jobs: jobs.into_iter().map(|l| l.key.clone()).collect(),
                workers: view.workers.get(&r.record.id).copied().unwrap_or(0),
            }
        })
        .collect();
    Ok(Json(ReplicaList {
        mode: "cluster".into(),
        lease_ttl_seconds: Some(view.lease_ttl.as_secs_f64()),
        partitions: Some(view.partitions),
        items,
    }))
}

/// Worker counts by EC2 state and service status (for statistics).
#[utoipa::path(
    get, path = "/api/v1/system/counts", tag = "system",
    responses((status = 200, body = CountsView))
)]
pub(crate) async fn counts(State(state): State<ApiState>) -> Json<CountsView> {
    let c = state.engine().counts();
    Json(CountsView {
        total: c.total,
        by_state: c.by_state,
        by_service: c.by_service,
        sse_clients: state.sse_clients(),
    })
}

/// What a create or import form may offer: regions, instance types, image defaults, default
/// tags and the configured import filter.
#[utoipa::path(
    get, path = "/api/v1/system/provisioning", tag = "system",
    responses((status = 200, body = ProvisioningView))
)]
pub(crate) async fn provisioning(State(state): State<ApiState>) -> Json<ProvisioningView> {
    Json(state.engine().provisioning_options().into())
}

/// Circuit breakers, the retry budget and the bulkheads.
#[utoipa::path(
    get, path = "/api/v1/system/resilience", tag = "system",
    responses((status = 200, body = ResilienceView))
)]
pub(crate) async fn resilience(State(state): State<ApiState>) -> Json<ResilienceView> {
    let r = state.engine().resilience();
    let breakers = r.breakers().snapshot();
    let budget = r.budget().snapshot();
    Json(ResilienceView {
        open: breakers
            .iter()
            .filter(|b| b.state == BreakerState::Open)
            .count(),
        breakers: breakers.iter().map(BreakerView::from).collect(),
        budget: BudgetView {
            enabled: budget.enabled,
            calls: budget.calls,
            retries: budget.retries,
            available: budget.available,
            exhausted: budget.exhausted,
        },
        bulkheads: r
            .bulkheads()
            .into_iter()
            .map(|b| BulkheadView {
                name: b.name,
                in_flight: b.in_flight,
                queued: b.queued,
                max_concurrent: (b.max_concurrent != usize::MAX).then_some(b.max_concurrent),
                max_queue: b.max_queue,
            })
            .collect(),
    })
}

/// The background jobs.
#[utoipa::path(
    get, path = "/api/v1/system/jobs", tag = "system",
    responses((status = 200, body = JobList))
)]
pub(crate) async fn jobs(State(state): State<ApiState>) -> Json<JobList> {
    Json(JobList {
        items: state.engine().jobs().iter().map(JobView::from).collect(),
    })
}

/// Run a job now (a full cycle for per-worker jobs); answers when it is done (admin).
#[utoipa::path(
    post, path = "/api/v1/system/jobs/{job}/run", tag = "system",
    params(("job" = String, Path, description = "`ec2_sync`, `cml_sync`, `metrics`, `labs`, `activity`, `auto_import` or `event_retention`")),
    responses(
        (status = 200, description = "The job after its run", body = JobView),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn run_job(
    State(state): State<ApiState>,
    caller: Caller,
    JobPath(job): JobPath,
) -> ApiResult<Json<JobView>> {
    tracing::info!(job = job.as_str(), by = %caller.principal.name, "job triggered");
    state.engine().trigger_job(job).await?;
    let view = state
        .engine()
        .jobs()
        .iter()
        .find(|j| j.job == job)
        .map(JobView::from)
        .ok_or_else(|| ApiError::not_found(format!("job {} not found", job.as_str())))?;
    Ok(Json(view))
}

/// Parameters of the savings report.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SavingsQuery {
    /// `json` (the default) or `csv` (the groups: week, tag, reason, workers, hours, saved).
    #[serde(default)]
    pub format: Option<String>,
    /// A tag key: the groups are also split by its value (e.g. `team`).
    #[serde(default)]
    pub tag: Option<String>,
}

/// The savings report: instance-hours (and money) ccm saved by stopping workers, in total,
/// per worker, and by ISO week, tag value and reason (idle, schedule, manual); `?format=csv`
/// gives the groups as CSV.
#[utoipa::path(
    get, path = "/api/v1/system/savings", tag = "system",
    params(SavingsQuery),
    responses(
        (status = 200, body = SavingsView, content_type = "application/json"),
        (status = 200, description = "`?format=csv`", body = String, content_type = "text/csv"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn savings(
    State(state): State<ApiState>,
    Query(q): Query<SavingsQuery>,
) -> ApiResult<Response> {
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                Some("format"),
                "format must be json or csv",
            ));
        }
    };
    if let Some(tag) = &q.tag
        && (tag.is_empty() || tag.len() > 128)
    {
        return Err(ApiError::bad_request(
            Some("tag"),
            "a tag key has 1 to 128 characters",
        ));
    }
    let report = state.engine().savings(q.tag.as_deref()).await?;
    if csv {
        let body = ccm_domain::savings::groups_csv(&report);
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"ccm-savings.csv\"",
                ),
            ],
            body,
        )
            .into_response());
    }
    Ok(Json(SavingsView::from(report)).into_response())
}

fn settings_response(v: ccm_store::Versioned<RuntimeSettings>) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", v.version))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    let view = SettingsView {
        version: v.version,
        settings: serde_json::to_value(&v.value).unwrap_or_default(),
    };
    ([(header::ETAG, etag)], Json(view)).into_response()
}

/// The runtime settings in force (`ETag` is their version).
#[utoipa::path(
    get, path = "/api/v1/settings", tag = "settings",
    responses((status = 200, body = SettingsView))
)]
pub(crate) async fn get_settings(State(state): State<ApiState>) -> Response {
    settings_response(state.engine().settings())
}

/// RFC 7396 merge: objects merge key by key, `null` removes (back to the default), anything
/// else replaces.
fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Change runtime settings (admin): a JSON merge patch (RFC 7396) of the settings object,
/// validated and applied at once, without a restart. Send `If-Match: "<version>"` to refuse
/// the change (409) when someone changed them since you read them.
#[utoipa::path(
    patch, path = "/api/v1/settings", tag = "settings",
    params(("If-Match" = Option<String>, Header, description = "The version you read (ETag)")),
    request_body(content = Object, content_type = "application/merge-patch+json",
        description = "e.g. {\"idle\": {\"timeout\": \"45m\"}, \"polling\": {\"cml_interval\": \"30s\"}}"),
    responses(
        (status = 200, body = SettingsView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Changed since the If-Match version", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid value (the dotted key is in `field`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn patch_settings(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(patch): JsonBody<serde_json::Value>,
) -> ApiResult<Response> {
    // (Arrays are refused by the extractor already.)
    if !patch.is_object() {
        return Err(ApiError::invalid(
            "body",
            "the body must be a JSON object (a merge patch of the settings)",
        ));
    }
    let expected = match headers.get(header::IF_MATCH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .map(|s| s.trim().trim_start_matches("W/").trim_matches('"'))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        Some("If-Match"),
                        "If-Match must be the settings version, e.g. \"3\"",
                    )
                })?,
        ),
    };
    let engine = state.engine();
    let current = engine.settings();
    let mut value = serde_json::to_value(&current.value).unwrap_or_default();
    merge(&mut value, &patch);
    let new: RuntimeSettings = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let field = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
            .map(|f| crate::extract::unknown_field_path(&path, f))
            .unwrap_or_else(|| {
                if path == "." {
                    "settings".to_owned()
                } else {
                    path
                }
            });
        ApiError::invalid(&field, format!("{field}: {message}"))
    })?;
    let saved = engine
        .update_settings(new, expected, &caller.actor())
        .await?;
    Ok(settings_response(saved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_patch_should_merge_objects_and_replace_values() {
        let mut t = serde_json::json!({"idle": {"timeout": "1h", "dry_run": false}, "x": 1});
        merge(
            &mut t,
            &serde_json::json!({"idle": {"dry_run": true}, "x": null}),
        );
        assert_eq!(
            t,
            serde_json::json!({"idle": {"timeout": "1h", "dry_run": true}})
        );
    }
}
