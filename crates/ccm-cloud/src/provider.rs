//! [`CloudProvider`]: everything ccm asks of EC2 and CloudWatch, as one object-safe trait.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use ccm_domain::{InstanceId, Region};

use crate::error::CloudError;
use crate::types::{
    Image, ImageQuery, Instance, InstanceMetrics, InstancePage, InstanceQuery, InstanceStatus,
    MAX_IDS_PER_DESCRIBE, MetricsWindow, PageRequest, RunSpec, StateChange, Tags,
};

/// Most pages [`CloudProvider::describe_instances`] follows before it gives up (a guard
/// against a provider that hands out tokens forever; 1000 pages of 1000 instances).
pub const MAX_PAGES: usize = 1000;

/// What ccm needs from a cloud: EC2 instances and images, and CloudWatch metrics, in any of
/// several regions. Implemented by `ccm_cloud_aws::AwsCloud` (real AWS or an AWS-compatible
/// endpoint), `ccm_testbed::ec2::SimulatedCloud` (in memory) and [`crate::ResilientCloud`]
/// (a wrapper adding breakers, bulkheads and rate limits). Used as `Arc<dyn CloudProvider>`.
///
/// Batch operations take many ids; implementations split them into calls of the sizes AWS
/// accepts. Every error is a [`CloudError`].
#[async_trait]
pub trait CloudProvider: Send + Sync {
    /// A short name for logs and metrics (`aws`, `simulated`).
    fn name(&self) -> &str;

    /// The regions this provider is configured for.
    fn regions(&self) -> Vec<Region>;

    /// Finds images by ids or by name pattern, newest first.
    async fn find_images(
        &self,
        region: &Region,
        query: &ImageQuery,
    ) -> Result<Vec<Image>, CloudError>;

    /// Launches one instance as `spec` says (tags including `Name` applied at launch) and
    /// returns it as EC2 reports it right after the launch (usually `pending`). Sends the
    /// spec's client token, so a repeated call with the same token returns the same instance.
    async fn run_instance(&self, region: &Region, spec: &RunSpec) -> Result<Instance, CloudError>;

    /// One page of the instances matching `query`. With ids in the query the ids are sent as a
    /// filter, so unknown ids are absent rather than an error; at most
    /// [`MAX_IDS_PER_DESCRIBE`] ids per call.
    async fn describe_instances_page(
        &self,
        region: &Region,
        query: &InstanceQuery,
        page: &PageRequest,
    ) -> Result<InstancePage, CloudError>;

    /// State and status checks of these instances (all of the region's when `ids` is empty),
    /// including instances that are not running. An unknown id is [`CloudError::NotFound`].
    async fn describe_instance_status(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<Vec<InstanceStatus>, CloudError>;

    /// Starts stopped instances. Starting a running one changes nothing.
    async fn start_instances(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError>;

    /// Stops running instances. Stopping a stopped one changes nothing.
    async fn stop_instances(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError>;

    /// Terminates instances, for good. Terminating a terminated one changes nothing.
    async fn terminate_instances(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError>;

    /// Adds or overwrites tags on instances.
    async fn create_tags(
        &self,
        region: &Region,
        ids: &[InstanceId],
        tags: &Tags,
    ) -> Result<(), CloudError>;

    /// Removes tags (by key, whatever their value) from instances.
    async fn delete_tags(
        &self,
        region: &Region,
        ids: &[InstanceId],
        keys: &[String],
    ) -> Result<(), CloudError>;

    /// Turns on detailed (1-minute) monitoring for instances.
    async fn enable_detailed_monitoring(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<(), CloudError>;

    /// The latest CPU and memory datapoints of many instances in `window`, in as few calls as
    /// possible (one CloudWatch GetMetricData call serves up to 250 instances). Every asked id
    /// is in the result; metrics without a datapoint are `None`.
    async fn instance_metrics(
        &self,
        region: &Region,
        ids: &[InstanceId],
        window: &MetricsWindow,
    ) -> Result<HashMap<InstanceId, InstanceMetrics>, CloudError>;

    /// Every instance matching `query`: splits the ids into batches of
    /// [`MAX_IDS_PER_DESCRIBE`] and follows page tokens (at most [`MAX_PAGES`] pages per
    /// batch). Skipped instances are logged at warn and left out. Duplicate ids are asked once.
    async fn describe_instances(
        &self,
        region: &Region,
        query: &InstanceQuery,
    ) -> Result<Vec<Instance>, CloudError> {
        let batches: Vec<InstanceQuery> = if query.ids.is_empty() {
            vec![query.clone()]
        } else {
            let unique: BTreeSet<InstanceId> = query.ids.iter().cloned().collect();
            let unique: Vec<InstanceId> = unique.into_iter().collect();
            unique
                .chunks(MAX_IDS_PER_DESCRIBE)
                .map(|chunk| InstanceQuery {
                    ids: chunk.to_vec(),
                    filters: query.filters.clone(),
                })
                .collect()
        };
        let mut out = Vec::new();
        for batch in &batches {
            let mut page = PageRequest::default();
            for pages in 1.. {
                let result = self.describe_instances_page(region, batch, &page).await?;
                for skipped in &result.skipped {
                    tracing::warn!(
                        provider = self.name(),
                        %region,
                        raw_id = %skipped.raw_id,
                        reason = %skipped.reason,
                        "skipping an instance the provider described in an unexpected way"
                    );
                }
                out.extend(result.instances);
                match result.next_token {
                    Some(token) if pages < MAX_PAGES => page.token = Some(token),
                    Some(_) => {
                        return Err(CloudError::Other {
                            code: "TooManyPages".to_owned(),
                            message: format!(
                                "describe instances returned more than {MAX_PAGES} pages"
                            ),
                        });
                    }
                    None => break,
                }
            }
        }
        Ok(out)
    }
}
