//! CML sync of one worker: system_information, system_health, system_stats and licensing,
//! each tried on its own; partial results are kept, failed sources fall back to their last
//! good value (stale, with its age), and the service status follows from what answered.
//!
//! The order depends on whether the calls can share a connection
//! (`CmlClient::shares_connection`: HTTPS with `[cml] http2`, offered by ALPN as CML's nginx
//! does):
//! - **HTTPS with HTTP/2**: `system_information` goes first, alone; the other three then
//!   overlap as HTTP/2 streams on its connection. Two round trips, one connection and one TLS
//!   handshake per sync: overlapping all four at once made four connections (four handshakes),
//!   since the client cannot know before the first handshake that the worker speaks HTTP/2 —
//!   on a TLS fleet that cost more than the round trip it saved. A worker that does not offer
//!   `h2` is spoken to in HTTP/1.1 in the same order.
//! - **Plain HTTP/1.1** (or no pool): every overlapped call needs its own connection anyway,
//!   so a worker that was `ready` at its last sync gets all four calls at once (one round
//!   trip).
//!
//! Any worker that was not `ready` (unknown, degraded, unavailable) is probed first, with one
//! short `system_information` attempt (`cml.probe_timeout`, no retry: a dead worker holds a
//! poll slot for seconds, not for the full retry policy). Whenever `system_information` went
//! first and cannot even reach the host (connect error, timeout, open breaker), the three
//! authenticated calls are not attempted — they would only wait on the same dead host, and
//! add to its load. They are recorded as failed with the same reason, so the status is
//! `unavailable` either way. When it answers, the other three run at once.

use std::sync::Arc;

use ccm_cml::{CmlError, Target};
use ccm_domain::cml::CmlStats;
use ccm_domain::service::ReasonCode;
use ccm_domain::worker::{CallResult, CmlSync};
use ccm_domain::{CmlCall, ServiceStatus, WorkerId};
use ccm_store::MetricsSample;

use crate::error::JobError;
use crate::jobs::context::JobContext;
use crate::ownership::Grant;

fn result<W, D>(r: Result<W, CmlError>, call: CmlCall, f: impl FnOnce(W) -> D) -> CallResult<D> {
    match r {
        Ok(v) => CallResult::Ok(f(v)),
        Err(e) if e.is_not_supported() => CallResult::NotSupported,
        Err(e) => CallResult::Failed(e.reason(call)),
    }
}

fn unreachable(r: &CallResult<ccm_domain::cml::CmlInfo>) -> Option<ccm_domain::Reason> {
    match r {
        CallResult::Failed(reason)
            if matches!(
                reason.code,
                ReasonCode::Connect | ReasonCode::Timeout | ReasonCode::CircuitOpen
            ) =>
        {
            Some(reason.clone())
        }
        _ => None,
    }
}

/// The CML target of a worker that is running with an endpoint.
pub(crate) fn target_of(ctx: &JobContext, id: WorkerId) -> Option<Target> {
    target_and_status(ctx, id).map(|(t, _)| t)
}

/// The CML target of a running worker with an endpoint, and its service status as last
/// synced.
fn target_and_status(ctx: &JobContext, id: WorkerId) -> Option<(Target, ServiceStatus)> {
    let slot = ctx.slot(id)?;
    let endpoint = slot.reachable()?;
    Some((ctx.cml().target(endpoint).ok()?, slot.service))
}

/// Syncs one worker's CML (see the module docs); `Err` when nothing answered.
pub(crate) async fn sync_worker(
    ctx: &JobContext,
    grant: &Grant,
    id: WorkerId,
) -> Result<(), JobError> {
    let Some((target, last)) = target_and_status(ctx, id) else {
        return Ok(());
    };
    let cml = ctx.cml();
    let started = tokio::time::Instant::now();
    let others = || async {
        tokio::join!(
            async {
                result(
                    cml.system_health(&target).await,
                    CmlCall::SystemHealth,
                    Into::into,
                )
            },
            async {
                result(
                    cml.system_stats(&target).await,
                    CmlCall::SystemStats,
                    Into::into,
                )
            },
            async { result(cml.licensing(&target).await, CmlCall::Licensing, Into::into,) },
        )
    };
    let sync = if last == ServiceStatus::Ready && !cml.shares_connection(&target) {
        // Plain HTTP/1.1 (or no pool): every overlapped call has its own connection anyway.
        let info = async {
            result(
                cml.system_information(&target).await,
                CmlCall::SystemInformation,
                Into::into,
            )
        };
        let (info, (health, stats, licence)) = tokio::join!(info, others());
        CmlSync {
            info: Some(info),
            health: Some(health),
            stats: Some(stats),
            licence: Some(licence),
        }
    } else {
        let info = if last == ServiceStatus::Ready {
            cml.system_information(&target).await
        } else {
            cml.probe(&target).await
        };
        let info = result(info, CmlCall::SystemInformation, Into::into);
        first_then_others(info, others).await
    };
    metrics::histogram!(crate::metrics::POLL_SECONDS, "job" => "cml_sync")
        .record(started.elapsed().as_secs_f64());
    record(ctx, grant, id, &target, sync).await
}

/// `system_information` answered (or not): the other calls, unless the host is unreachable.
async fn first_then_others<F, Fut>(info: CallResult<ccm_domain::cml::CmlInfo>, others: F) -> CmlSync
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<
            Output = (
                CallResult<ccm_domain::cml::CmlHealth>,
                CallResult<CmlStats>,
                CallResult<ccm_domain::Licence>,
            ),
        >,
{
    match unreachable(&info) {
        Some(reason) => {
            let skip = |call| {
                let mut r = reason.clone();
                r.call = call;
                r.detail =
                    Some("not attempted: system_information could not reach the worker".into());
                r
            };
            let skip_health = CallResult::Failed(skip(CmlCall::SystemHealth));
            let skip_stats = CallResult::Failed(skip(CmlCall::SystemStats));
            let skip_licence = CallResult::Failed(skip(CmlCall::Licensing));
            CmlSync {
                info: Some(info),
                health: Some(skip_health),
                stats: Some(skip_stats),
                licence: Some(skip_licence),
            }
        }
        None => {
            let (health, stats, licence) = others().await;
            CmlSync {
                info: Some(info),
                health: Some(health),
                stats: Some(stats),
                licence: Some(licence),
            }
        }
    }
}

/// Queues the sync's result for the batched writer; `Err` when nothing answered.
async fn record(
    ctx: &JobContext,
    grant: &Grant,
    id: WorkerId,
    target: &Target,
    sync: CmlSync,
) -> Result<(), JobError> {
    let own = ctx.cml().own_user_id(target);
    let now = ctx.now();
    let answered = answered(&sync.info)
        || answered(&sync.health)
        || answered(&sync.stats)
        || answered(&sync.licence);
    let sample = match &sync.stats {
        Some(CallResult::Ok(s)) => Some(sample_of(s)),
        _ => None,
    };
    let mutation: crate::writer::Mutation = Arc::new(move |w| {
        if let Some(own) = &own {
            w.cml.own_user_id = Some(own.clone());
        }
        w.record_sync(sync.clone(), now)
    });
    match sample {
        Some(s) => ctx.submit_with_sample(grant, id, mutation, now, s).await,
        None => ctx.submit(grant, id, mutation).await,
    }
    if answered {
        Ok(())
    } else {
        Err(JobError::Unanswered)
    }
}

fn sample_of(s: &CmlStats) -> MetricsSample {
    MetricsSample {
        cml_cpu_percent: Some(s.cpu_percent),
        cml_memory_percent: s.memory_percent(),
        running_nodes: s.running_nodes,
        ..Default::default()
    }
}

fn answered<T>(r: &Option<CallResult<T>>) -> bool {
    matches!(r, Some(CallResult::Ok(_) | CallResult::NotSupported))
}
