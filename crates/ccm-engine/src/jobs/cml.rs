//! CML sync of one worker: system_information, system_health, system_stats and licensing,
//! each tried on its own; partial results are kept, failed sources fall back to their last
//! good value (stale, with its age), and the service status follows from what answered.
//!
//! The order makes the calls share one connection wherever the transport allows it
//! (`CmlClient::sync_order`, [`SyncOrder`]):
//! - **HTTPS with HTTP/2** (`[cml] http2 = true`, offered by ALPN as CML's nginx does):
//!   `system_information` goes first, alone; the other three then overlap as HTTP/2 streams on
//!   its connection. Two round trips, one connection and one TLS handshake per sync:
//!   overlapping all four at once made four connections (four handshakes), since the client
//!   cannot know before the first handshake that the worker speaks HTTP/2 — on a TLS fleet
//!   that cost more than the round trip it saved. A worker that does not offer `h2` is spoken
//!   to in HTTP/1.1 in the same order.
//! - **HTTP/1.1 with a pool** (plain HTTP with `[cml] plain_pool_max_idle_per_host` ≥ 1, or
//!   HTTPS with `[cml] http2 = false`, the default, and `pool_max_idle_per_host` ≥ 1): the four
//!   calls one after another on one kept-alive connection, the last (`licensing`) closing it,
//!   so that nothing idles after the sync. Four round trips, but one connection instead of
//!   four (connection setup and teardown were ~30 % of ccm's CPU at 10,000 workers); the
//!   gates let twice as many such workers sync at once (`SyncOrder::gate_slots`).
//! - **No pool**: every overlapped call needs its own connection
//!   anyway, so a worker that was `ready` at its last sync gets all four calls at once (one
//!   round trip).
//!
//! Any worker that was not `ready` (unknown, degraded, unavailable) is probed first, with one
//! short `system_information` attempt (`cml.probe_timeout`, no retry: a dead worker holds a
//! poll slot for seconds, not for the full retry policy). Whenever `system_information` went
//! first and cannot even reach the host (connect error, timeout, open breaker), the three
//! authenticated calls are not attempted — they would only wait on the same dead host, and
//! add to its load. They are recorded as failed with the same reason, so the status is
//! `unavailable` either way. When it answers, the other three run at once.

use std::sync::Arc;

use ccm_cml::{CmlClient, CmlError, SyncOrder, Target};
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
    // Each order's calls are a future of their own, boxed: a poll task then holds only the
    // one it runs (an inline `match` would make every task as large as the largest order,
    // ~4 calls' futures, for every worker in flight).
    let order = cml.sync_order(target.base_url());
    let sync = match order {
        SyncOrder::AllAtOnce if last == ServiceStatus::Ready => {
            Box::pin(all_at_once(cml, &target)).await
        }
        SyncOrder::OneByOne => Box::pin(one_by_one(cml, &target, last)).await,
        SyncOrder::FirstThenStreams | SyncOrder::AllAtOnce => {
            Box::pin(first_then_streams(cml, &target, last)).await
        }
    };
    metrics::histogram!(crate::metrics::POLL_SECONDS, "job" => "cml_sync")
        .record(started.elapsed().as_secs_f64());
    record(ctx, grant, id, &target, sync).await
}

/// `system_information`, or its probe for a worker that was not `ready` at its last sync.
async fn first_call(
    cml: &CmlClient,
    target: &Target,
    last: ServiceStatus,
) -> CallResult<ccm_domain::cml::CmlInfo> {
    let info = if last == ServiceStatus::Ready {
        cml.system_information(target).await
    } else {
        cml.probe(target).await
    };
    result(info, CmlCall::SystemInformation, Into::into)
}

/// `system_health`, `system_stats` and `licensing` at once.
async fn three_at_once(
    cml: &CmlClient,
    target: &Target,
) -> (
    CallResult<ccm_domain::cml::CmlHealth>,
    CallResult<CmlStats>,
    CallResult<ccm_domain::Licence>,
) {
    tokio::join!(
        async {
            result(
                cml.system_health(target).await,
                CmlCall::SystemHealth,
                Into::into,
            )
        },
        async {
            result(
                cml.system_stats(target).await,
                CmlCall::SystemStats,
                Into::into,
            )
        },
        async { result(cml.licensing(target).await, CmlCall::Licensing, Into::into) },
    )
}

/// No connection to share ([`SyncOrder::AllAtOnce`], a worker `ready` at its last sync):
/// every overlapped call has its own connection anyway, so all four at once.
async fn all_at_once(cml: &CmlClient, target: &Target) -> CmlSync {
    let info = async {
        result(
            cml.system_information(target).await,
            CmlCall::SystemInformation,
            Into::into,
        )
    };
    let (info, (health, stats, licence)) = tokio::join!(info, three_at_once(cml, target));
    CmlSync {
        info: Some(info),
        health: Some(health),
        stats: Some(stats),
        licence: Some(licence),
    }
}

/// [`SyncOrder::FirstThenStreams`] (and a worker not `ready` without a pool): the first call
/// alone, then the other three at once (as HTTP/2 streams on its connection).
async fn first_then_streams(cml: &CmlClient, target: &Target, last: ServiceStatus) -> CmlSync {
    let info = first_call(cml, target, last).await;
    first_then_others(info, || three_at_once(cml, target)).await
}

/// [`SyncOrder::OneByOne`]: the four calls one after another on one kept-alive HTTP/1.1
/// connection, the last one closing it.
async fn one_by_one(cml: &CmlClient, target: &Target, last: ServiceStatus) -> CmlSync {
    let info = first_call(cml, target, last).await;
    first_then_others(info, || async {
        let health = result(
            cml.system_health(target).await,
            CmlCall::SystemHealth,
            Into::into,
        );
        let stats = result(
            cml.system_stats(target).await,
            CmlCall::SystemStats,
            Into::into,
        );
        let licence = result(
            cml.licensing_closing(target).await,
            CmlCall::Licensing,
            Into::into,
        );
        (health, stats, licence)
    })
    .await
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
