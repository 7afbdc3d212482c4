//! Labs refresh of one worker: the lab list, each lab's details, orphan records removed.
//! Concurrent refreshes of one worker cannot duplicate records: (worker, lab) is unique in
//! the store and the replacement runs in one transaction.

use std::sync::Arc;

use ccm_domain::{CmlCall, EventKind, LabId, WorkerId};

use crate::error::JobError;
use crate::jobs::cml::target_of;
use crate::jobs::context::JobContext;
use crate::ownership::Grant;

/// Refreshes one worker's labs; `Err` when the list failed or some labs could not be read.
pub(crate) async fn refresh_labs(
    ctx: &JobContext,
    grant: &Grant,
    id: WorkerId,
) -> Result<(), JobError> {
    let Some(target) = target_of(ctx, id) else {
        return Ok(());
    };
    let cml = ctx.cml();
    let started = tokio::time::Instant::now();
    let ids = match cml.labs(&target, true).await {
        Ok(ids) => ids,
        Err(err) => {
            let reason = err.reason(CmlCall::Labs);
            let now = ctx.now();
            ctx.submit(
                grant,
                id,
                Arc::new(move |w| {
                    w.record_labs_count(Err(reason.clone()), now);
                    Vec::new()
                }),
            )
            .await;
            return Err(JobError::Cml {
                call: CmlCall::Labs,
                source: err,
            });
        }
    };
    let mut records = Vec::with_capacity(ids.len());
    let mut unread = 0;
    for raw in &ids {
        let Ok(lab_id) = LabId::parse(raw) else {
            tracing::warn!(worker = %id, lab = %raw.chars().take(64).collect::<String>(), "skipping a lab with a malformed id");
            continue;
        };
        match cml.lab(&target, &lab_id).await {
            Ok(lab) => match lab.to_record(id, &lab_id, ctx.now()) {
                Ok(record) => records.push(record),
                Err(e) => tracing::warn!(worker = %id, error = %e, "skipping a malformed lab"),
            },
            // Deleted between the list and the read.
            Err(ccm_cml::CmlError::NotFound { .. }) => {}
            Err(err) => {
                unread += 1;
                tracing::debug!(worker = %id, lab = %lab_id, error = %err, "could not read a lab");
            }
        }
    }
    metrics::histogram!(crate::metrics::POLL_SECONDS, "job" => "labs")
        .record(started.elapsed().as_secs_f64());
    let (added, removed) = if unread == 0 {
        ctx.replace_labs(grant, id, &records).await?
    } else {
        // Without every lab's details, removing "orphans" could drop labs that exist.
        ctx.upsert_labs(grant, &records).await?;
        (0, 0)
    };
    let count = records.len() as u32;
    let now = ctx.now();
    ctx.submit(
        grant,
        id,
        Arc::new(move |w| {
            let before = w.labs_count.last_good.as_ref().map(|o| o.value);
            w.record_labs_count(Ok(count), now);
            if added > 0 || removed > 0 || before != Some(count) {
                vec![EventKind::LabsRefreshed {
                    count,
                    added,
                    removed,
                }]
            } else {
                Vec::new()
            }
        }),
    )
    .await;
    if unread == 0 {
        Ok(())
    } else {
        Err(JobError::LabsIncomplete {
            unread,
            listed: ids.len(),
        })
    }
}
