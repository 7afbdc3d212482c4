//! Activity and the idle policy: reads the worker's telemetry, keeps the latest activity and
//! what it was (ccm's own logins excluded, by its CML user id), then evaluates the idle policy:
//! warns `warning_before` the pause (`ccm.worker.idle_warning`, once per coming pause) and
//! pauses the worker when it says so.

use std::sync::Arc;

use ccm_domain::activity::latest_activity_event;
use ccm_domain::idle::{FleetPicture, IdleAction, evaluate_with, fleet_picture_needed};
use ccm_domain::worker::ActivitySource;
use ccm_domain::{CmlCall, EventKind, PauseReason, WorkerId};

use crate::error::JobError;
use crate::jobs::cml::target_of;
use crate::jobs::context::JobContext;
use crate::ownership::Grant;

/// Reads the worker's telemetry and records its latest activity.
pub(crate) async fn read_activity(
    ctx: &JobContext,
    grant: &Grant,
    id: WorkerId,
) -> Result<(), JobError> {
    let Some(target) = target_of(ctx, id) else {
        return Ok(());
    };
    let cml = ctx.cml();
    let events = cml
        .telemetry_events(&target)
        .await
        .map_err(|source| JobError::Cml {
            call: CmlCall::Telemetry,
            source,
        })?;
    let own = cml.own_user_id(&target);
    let events = ccm_cml::models::telemetry_to_domain(events);
    let now = ctx.now();
    let latest = latest_activity_event(&events, own.as_deref(), now).map(|(at, e)| {
        let source = ActivitySource::Telemetry {
            category: e.category.clone(),
            user_id: e.user_id.clone(),
        };
        (at, source)
    });
    ctx.apply(
        grant,
        id,
        Arc::new(move |w| {
            if let Some(own) = &own {
                w.cml.own_user_id = Some(own.clone());
            }
            w.record_interaction(latest.clone(), now);
            Vec::new()
        }),
    )
    .await
    .map(|_| ())
}

/// Evaluates the idle policy for the worker: announces a changed decision, pauses when the
/// policy says so.
pub(crate) async fn evaluate_idle(
    ctx: &JobContext,
    grant: &Grant,
    id: WorkerId,
) -> Result<(), JobError> {
    let worker = ctx.worker(id).await?;
    let settings = ctx.settings().idle;
    let fleet = if fleet_picture_needed(&settings) {
        ctx.fleet_picture().await?
    } else {
        Arc::new(FleetPicture::default())
    };
    let decision = evaluate_with(&worker, &settings, &fleet, ctx.now());
    let label = decision.action.label();
    if let Some(at) = decision.pause_at.filter(|_| decision.warn)
        && decision.action != IdleAction::Pause
        && ctx.note_warning(id, at)
    {
        ctx.emit(
            grant,
            Some(id),
            vec![EventKind::WorkerIdleWarning {
                reason: PauseReason::IdleTimeout,
                at,
                idle_for_seconds: decision.idle_for.as_secs(),
            }],
        )
        .await;
    }
    if !decision.idle {
        ctx.clear_idle(id);
        return Ok(());
    }
    // One event per change of decision, not one per poll.
    if ctx.note_idle(id, &label) {
        let detail = match &decision.action {
            IdleAction::Keep { reason } => serde_json::to_string(reason).ok(),
            _ => None,
        };
        ctx.emit(
            grant,
            Some(id),
            vec![EventKind::WorkerIdleDetected {
                idle_for_seconds: decision.idle_for.as_secs(),
                action: label,
                detail,
                timeout_rule: Some(decision.timeout_rule),
            }],
        )
        .await;
    }
    if decision.action == IdleAction::Pause {
        tracing::info!(worker = %id, idle_for = ?decision.idle_for, "pausing an idle worker");
        ctx.pause_idle(grant, id).await?;
        ctx.clear_idle(id);
    }
    Ok(())
}
