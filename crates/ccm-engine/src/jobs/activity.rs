//! Activity and the idle policy: reads the worker's telemetry, keeps the latest activity
//! (ccm's own logins excluded, by its CML user id), then evaluates the idle policy and pauses
//! the worker when it says so.

use std::sync::Arc;

use ccm_domain::activity::latest_activity;
use ccm_domain::idle::{IdleAction, evaluate};
use ccm_domain::{Actor, EventKind, PauseReason, WorkerId};

use super::cml::target_of;
use crate::engine::Engine;

pub(crate) async fn read_activity(engine: &Engine, id: WorkerId) -> Result<(), String> {
    let Some(target) = target_of(engine, id) else {
        return Ok(());
    };
    let cml = &engine.inner.cml;
    let events = cml
        .telemetry_events(&target)
        .await
        .map_err(|e| e.to_string())?;
    let own = cml.own_user_id(&target);
    let events = ccm_cml::models::telemetry_to_domain(events);
    let now = engine.now();
    let latest = latest_activity(&events, own.as_deref(), now);
    let Some(writer) = engine.writer() else {
        return Ok(());
    };
    writer
        .apply(
            id,
            Arc::new(move |w| {
                if let Some(own) = &own {
                    w.cml.own_user_id = Some(own.clone());
                }
                w.record_activity_check(latest, now);
                Vec::new()
            }),
        )
        .await
        .map(|_| ())
}

pub(crate) async fn evaluate_idle(engine: &Engine, id: WorkerId) -> Result<(), String> {
    let worker = engine.worker(id).await.map_err(|e| e.to_string())?;
    let settings = engine.settings().value.idle;
    let decision = evaluate(&worker, &settings, engine.now());
    let label = decision.action.label();
    if !decision.idle {
        engine.inner.idle_marks.remove(&id);
        return Ok(());
    }
    // One event per change of decision, not one per poll.
    let changed =
        engine.inner.idle_marks.insert(id, label.clone()).as_deref() != Some(label.as_str());
    if changed {
        let detail = match &decision.action {
            IdleAction::Keep { reason } => serde_json::to_string(reason).ok(),
            _ => None,
        };
        engine
            .emit(
                Some(id),
                vec![EventKind::WorkerIdleDetected {
                    idle_for_seconds: decision.idle_for.as_secs(),
                    action: label,
                    detail,
                }],
            )
            .await;
    }
    if decision.action == IdleAction::Pause {
        tracing::info!(worker = %id, idle_for = ?decision.idle_for, "pausing an idle worker");
        engine
            .pause_worker(id, PauseReason::IdleTimeout, &Actor::system("idle"))
            .await
            .map_err(|e| e.to_string())?;
        engine.inner.idle_marks.remove(&id);
    }
    Ok(())
}
