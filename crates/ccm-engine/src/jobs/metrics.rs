//! CloudWatch metrics of running workers: one batched read per region (each under its own
//! grant), into the worker (with stale-data fallback) and the metrics history.

use std::sync::Arc;
use std::time::Duration;

use ccm_cloud::MetricsWindow;
use ccm_domain::{CmlCall, Ec2State, Reason, ReasonCode};
use ccm_store::MetricsSample;

use crate::convert::cloudwatch;
use crate::error::JobError;
use crate::job_kind::JobKind;
use crate::jobs::context::{JobContext, RegionWork};

/// Reads every region this process may read.
pub(crate) async fn collect(ctx: &JobContext) -> Result<(), JobError> {
    let regions = ctx.regions(JobKind::Metrics, |s| s.state == Ec2State::Running);
    let now = ctx.now();
    let window =
        MetricsWindow::ending_at(now, Duration::from_secs(15 * 60), Duration::from_secs(60));
    let window = &window;
    let tasks = regions.into_iter().map(
        |RegionWork {
             region,
             grant,
             workers,
         }| async move {
            let ids: Vec<_> = workers.iter().map(|(_, i)| i.clone()).collect();
            match ctx.cloud().instance_metrics(&region, &ids, window).await {
                Ok(metrics) => {
                    for (id, instance) in workers {
                        let Some(m) = metrics.get(&instance) else {
                            continue;
                        };
                        let cw = cloudwatch(m);
                        let sample = MetricsSample {
                            cpu_percent: cw.cpu_percent,
                            memory_percent: cw.memory_percent,
                            ..Default::default()
                        };
                        ctx.submit_with_sample(
                            &grant,
                            id,
                            Arc::new(move |w| w.record_cloudwatch(Ok(cw.clone()), now)),
                            now,
                            sample,
                        )
                        .await;
                    }
                    Ok(())
                }
                Err(source) => {
                    let reason = Reason::new(CmlCall::CloudWatch, ReasonCode::Other)
                        .with_detail(source.to_string());
                    for (id, _) in workers {
                        let reason = reason.clone();
                        ctx.submit(
                            &grant,
                            id,
                            Arc::new(move |w| w.record_cloudwatch(Err(reason.clone()), now)),
                        )
                        .await;
                    }
                    Err(JobError::Cloud { region, source })
                }
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
