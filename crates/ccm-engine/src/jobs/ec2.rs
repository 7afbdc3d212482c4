//! EC2 sync: every worker's instance state, one batched describe per region, and the region's
//! status checks (DescribeInstanceStatus of the whole region with stopped instances included:
//! one call per page of 1000, never per worker); regions in parallel so one sick region never
//! holds up the others. Each region runs under its own grant (`may_run(ec2_sync, region)`).
//! A worker's state and its checks are written in one mutation; when the status call fails,
//! the states are still applied and each worker's checks are marked failed (kept, stale).

use std::collections::HashMap;
use std::sync::Arc;

use ccm_cloud::{CloudError, Instance, InstanceQuery, InstanceStatus};
use ccm_domain::{
    CmlCall, Ec2State, EventKind, InstanceId, Reason, ReasonCode, StatusChecks, WorkerId,
};

use crate::convert::observation;
use crate::error::JobError;
use crate::job_kind::JobKind;
use crate::jobs::context::{JobContext, RegionWork};
use crate::ownership::Grant;

/// An instance missing from describe results is only declared gone after this long
/// (EC2 is eventually consistent right after a launch).
const GONE_AFTER: chrono::Duration = chrono::Duration::minutes(5);

/// Syncs every region this process may sync.
pub(crate) async fn sync_all(ctx: &JobContext) -> Result<(), JobError> {
    let regions = ctx.regions(JobKind::Ec2Sync, |s| s.state != Ec2State::Terminated);
    let tasks = regions.into_iter().map(
        |RegionWork {
             region,
             grant,
             workers,
         }| async move {
            let ids: Vec<InstanceId> = workers.iter().map(|(_, i)| i.clone()).collect();
            let cloud = ctx.cloud();
            // Before the call: a tag change a user makes while it runs is newer than its answer.
            let read_at = ctx.now();
            let (instances, statuses) = futures::future::join(
                cloud.describe_instances(&region, &InstanceQuery::ids(ids)),
                cloud.describe_instance_status(&region, &[]),
            )
            .await;
            let instances = instances.map_err(|source| JobError::Cloud {
                region: region.clone(),
                source,
            })?;
            let (checks, status_error) = match statuses {
                Ok(statuses) => (Ok(checks_by_instance(statuses)), None),
                Err(source) => (Err(status_failure(&source)), Some(source)),
            };
            apply(ctx, &grant, workers, instances, checks, read_at).await;
            match status_error {
                Some(source) => Err(JobError::Cloud { region, source }),
                None => Ok::<(), JobError>(()),
            }
        },
    );
    let errors = futures::future::join_all(tasks)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    JobError::regions(errors)
}

fn checks_by_instance(statuses: Vec<InstanceStatus>) -> HashMap<InstanceId, StatusChecks> {
    statuses
        .into_iter()
        .map(|s| (s.id.clone(), s.checks()))
        .collect()
}

/// What a worker's checks record when DescribeInstanceStatus failed.
fn status_failure(err: &CloudError) -> Reason {
    Reason::new(CmlCall::Ec2Status, ReasonCode::Other).with_detail(err.to_string())
}

async fn apply(
    ctx: &JobContext,
    grant: &Grant,
    workers: Vec<(WorkerId, InstanceId)>,
    instances: Vec<Instance>,
    checks: Result<HashMap<InstanceId, StatusChecks>, Reason>,
    read_at: chrono::DateTime<chrono::Utc>,
) {
    let found: HashMap<InstanceId, Instance> =
        instances.into_iter().map(|i| (i.id.clone(), i)).collect();
    let now = ctx.now();
    let policy = Arc::new(ctx.endpoint().clone());
    for (id, instance_id) in workers {
        match found.get(&instance_id) {
            Some(instance) => {
                let obs = observation(instance);
                let policy = policy.clone();
                // Absent from a successful status read (an instance EC2 no longer lists):
                // nothing to record.
                let status = match &checks {
                    Ok(found) => found.get(&instance_id).copied().map(Ok),
                    Err(reason) => Some(Err(reason.clone())),
                };
                ctx.submit(
                    grant,
                    id,
                    Arc::new(move |w| {
                        let mut events = match w.observe_ec2_read_at(&obs, &policy, read_at, now) {
                            Ok(events) => events,
                            Err(e) => {
                                tracing::warn!(worker = %w.id, from = %e.from, to = %e.to, "EC2 reported an invalid state change");
                                vec![EventKind::WorkerInvalidTransition { from: e.from, to: e.to }]
                            }
                        };
                        if let Some(status) = &status {
                            events.extend(w.record_ec2_status(status.clone(), now));
                        }
                        events
                    }),
                ).await;
            }
            None => {
                let Some(slot) = ctx.slot(id) else {
                    continue;
                };
                if now - slot.created_at >= GONE_AFTER {
                    ctx.submit(grant, id, Arc::new(move |w| w.observe_gone(now)))
                        .await;
                }
            }
        }
    }
}
