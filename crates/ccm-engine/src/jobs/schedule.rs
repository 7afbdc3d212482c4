//! Off-hours schedules (`schedules` in the runtime settings): once a minute, each owned worker
//! with a rule is checked against it ([`ccm_domain::schedule::decide`]) — stopped when its
//! off-hours begin (reason `schedule`), started again when they end if the schedule stopped
//! it, and warned `idle.warning_before` ahead of a stop (`ccm.worker.idle_warning`, reason
//! `schedule`).

use ccm_domain::ec2::Ec2State;
use ccm_domain::schedule::{ScheduleAction, ScheduleState, decide, rule_for};
use ccm_domain::{EventKind, PauseReason};

use crate::error::JobError;
use crate::jobs::context::JobContext;

/// Applies every schedule once.
pub(crate) async fn apply_schedules(ctx: &JobContext) -> Result<(), JobError> {
    let settings = ctx.settings();
    if settings.schedules.is_empty() {
        return Ok(());
    }
    let now = ctx.now();
    let warning = chrono::Duration::from_std(settings.idle.warning_before).unwrap_or_default();
    let mut failed = None;
    for w in ctx.owned_workers().await? {
        let Some(rule) = rule_for(&settings.schedules, &w) else {
            continue;
        };
        let Some(grant) = ctx.ownership().owns_worker(w.id) else {
            continue;
        };
        let state = rule.off_hours.state_at(now);
        let result = match decide(&w, state, now) {
            ScheduleAction::Stop => {
                tracing::info!(worker = %w.id, schedule = %rule.off_hours, "off-hours: stopping");
                ctx.pause_scheduled(&grant, w.id).await
            }
            ScheduleAction::Start => {
                tracing::info!(worker = %w.id, schedule = %rule.off_hours, "off-hours ended: starting");
                ctx.resume_scheduled(&grant, w.id).await
            }
            ScheduleAction::Keep { .. } => {
                if let ScheduleState::Working { next: Some(at) } = state
                    && w.ec2_state == Ec2State::Running
                    && !warning.is_zero()
                    && at - now <= warning
                    && w.snoozed_until(at).is_none()
                    && ctx.note_warning(w.id, at)
                {
                    ctx.emit(
                        &grant,
                        Some(w.id),
                        vec![EventKind::WorkerIdleWarning {
                            reason: PauseReason::Schedule,
                            at,
                            idle_for_seconds: 0,
                        }],
                    )
                    .await;
                }
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::warn!(worker = %w.id, error = %e, "schedule action failed");
            failed = Some(e);
        }
    }
    failed.map_or(Ok(()), Err)
}
