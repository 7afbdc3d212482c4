//! EC2 sync: every worker's instance state, one batched describe per region; regions in
//! parallel so one sick region never holds up the others.

use std::collections::HashMap;
use std::sync::Arc;

use ccm_cloud::{Instance, InstanceQuery};
use ccm_domain::{Ec2State, EventKind, InstanceId};

use crate::convert::observation;
use crate::engine::Engine;

/// An instance missing from describe results is only declared gone after this long
/// (EC2 is eventually consistent right after a launch).
const GONE_AFTER: chrono::Duration = chrono::Duration::minutes(5);

pub(super) async fn sync_all(engine: &Engine) -> Result<(), String> {
    let groups = engine.by_region(|s| s.state != Ec2State::Terminated);
    let tasks = groups.into_iter().map(|(region, workers)| {
        let engine = engine.clone();
        async move {
            let ids: Vec<InstanceId> = workers.iter().map(|(_, i)| i.clone()).collect();
            let instances = engine
                .inner
                .cloud
                .describe_instances(&region, &InstanceQuery::ids(ids))
                .await
                .map_err(|e| format!("{region}: {e}"))?;
            apply(&engine, workers, instances);
            Ok::<(), String>(())
        }
    });
    let errors: Vec<String> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

fn apply(
    engine: &Engine,
    workers: Vec<(ccm_domain::WorkerId, InstanceId)>,
    instances: Vec<Instance>,
) {
    let found: HashMap<InstanceId, Instance> =
        instances.into_iter().map(|i| (i.id.clone(), i)).collect();
    let now = engine.now();
    let policy = Arc::new(engine.inner.endpoint.clone());
    for (id, instance_id) in workers {
        match found.get(&instance_id) {
            Some(instance) => {
                let obs = observation(instance);
                let policy = policy.clone();
                engine.submit(
                    id,
                    Arc::new(move |w| match w.observe_ec2(&obs, &policy, now) {
                        Ok(events) => events,
                        Err(e) => {
                            tracing::warn!(worker = %w.id, from = %e.from, to = %e.to, "EC2 reported an invalid state change");
                            vec![EventKind::WorkerInvalidTransition { from: e.from, to: e.to }]
                        }
                    }),
                );
            }
            None => {
                let Some(slot) = engine.inner.fleet.get(&id).map(|s| s.clone()) else {
                    continue;
                };
                if now - slot.created_at >= GONE_AFTER {
                    engine.submit(id, Arc::new(move |w| w.observe_gone(now)));
                }
            }
        }
    }
}
