//! EC2 sync: every worker's instance state, one batched describe per region; regions in
//! parallel so one sick region never holds up the others. Each region runs under its own
//! grant (`may_run(ec2_sync, region)`).

use std::collections::HashMap;
use std::sync::Arc;

use ccm_cloud::{Instance, InstanceQuery};
use ccm_domain::{Ec2State, EventKind, InstanceId, WorkerId};

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
            let instances = ctx
                .cloud()
                .describe_instances(&region, &InstanceQuery::ids(ids))
                .await
                .map_err(|source| JobError::Cloud { region, source })?;
            apply(ctx, &grant, workers, instances).await;
            Ok::<(), JobError>(())
        },
    );
    let errors = futures::future::join_all(tasks)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    JobError::regions(errors)
}

async fn apply(
    ctx: &JobContext,
    grant: &Grant,
    workers: Vec<(WorkerId, InstanceId)>,
    instances: Vec<Instance>,
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
                ctx.submit(
                    grant,
                    id,
                    Arc::new(move |w| match w.observe_ec2(&obs, &policy, now) {
                        Ok(events) => events,
                        Err(e) => {
                            tracing::warn!(worker = %w.id, from = %e.from, to = %e.to, "EC2 reported an invalid state change");
                            vec![EventKind::WorkerInvalidTransition { from: e.from, to: e.to }]
                        }
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
