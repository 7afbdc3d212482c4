//! CloudWatch metrics of running workers: one batched read per region, into the worker
//! (with stale-data fallback) and the metrics history.

use std::sync::Arc;
use std::time::Duration;

use ccm_cloud::MetricsWindow;
use ccm_domain::{CmlCall, Ec2State, Reason, ReasonCode};
use ccm_store::MetricsSample;

use crate::convert::cloudwatch;
use crate::engine::Engine;

pub(super) async fn collect(engine: &Engine) -> Result<(), String> {
    let groups = engine.by_region(|s| s.state == Ec2State::Running);
    let now = engine.now();
    let window =
        MetricsWindow::ending_at(now, Duration::from_secs(15 * 60), Duration::from_secs(60));
    let tasks = groups.into_iter().map(|(region, workers)| {
        let engine = engine.clone();
        async move {
            let ids: Vec<_> = workers.iter().map(|(_, i)| i.clone()).collect();
            let Some(writer) = engine.writer() else {
                return Ok(());
            };
            match engine
                .inner
                .cloud
                .instance_metrics(&region, &ids, &window)
                .await
            {
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
                        writer.submit_with_sample(
                            id,
                            Arc::new(move |w| w.record_cloudwatch(Ok(cw.clone()), now)),
                            now,
                            sample,
                        );
                    }
                    Ok(())
                }
                Err(err) => {
                    let reason = Reason::new(CmlCall::CloudWatch, ReasonCode::Other)
                        .with_detail(err.to_string());
                    for (id, _) in workers {
                        let reason = reason.clone();
                        writer.submit(
                            id,
                            Arc::new(move |w| w.record_cloudwatch(Err(reason.clone()), now)),
                        );
                    }
                    Err(format!("{region}: {err}"))
                }
            }
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
