//! The AWS implementation of the `ccm-cloud` provider trait, through the official AWS SDK for
//! Rust (EC2 and CloudWatch). Kept in its own crate because the SDK is slow to compile
//! (aws-sdk-ec2 alone is ~6 minutes and ~9 GB of RAM in a debug build): nothing else has to
//! rebuild it.
//!
//! # Brief overview
//! - [`AwsCloud`]: implements [`ccm_cloud::CloudProvider`] with one EC2 and one CloudWatch
//!   client per configured region, all sharing the retry (adaptive by default, explicit max
//!   attempts) and timeout (connect, read, operation) settings of [`AwsConfig`].
//! - [`AwsConfig`]: the `[aws]` config section: regions, optional `endpoint_url` (moto,
//!   LocalStack), profile or static credentials (secrets in [`Secret`], printed as `***`).
//!
//! Not here: breakers, bulkheads and rate limits (wrap an `AwsCloud` in
//! [`ccm_cloud::ResilientCloud`]); retries beyond the SDK's own. Credentials never appear in
//! logs or errors: error messages pass through a redactor that removes configured secret values
//! and anything shaped like an access key id.
#![warn(missing_docs)]

mod config;
mod convert;
mod error;
#[cfg(feature = "moto")]
pub mod moto;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
use aws_sdk_ec2::config::Credentials;
use aws_sdk_ec2::types::{
    Filter, ResourceType, RunInstancesMonitoringEnabled, Tag, TagSpecification,
};
use ccm_cloud::{
    CPU_METRIC, CloudError, CloudProvider, Image, ImageQuery, Instance, InstanceMetrics,
    InstancePage, InstanceQuery, InstanceStatus, MAX_IDS_PER_ACTION,
    MAX_INSTANCES_PER_METRICS_CALL, MAX_PAGES, MEMORY_METRIC, MetricSample, MetricsWindow,
    PageRequest, RunSpec, StateChange, Tags,
};
use ccm_domain::{InstanceId, Region};

pub use config::{AwsConfig, ConfigError, RetryMode, Secret};

use crate::convert::{
    check_status, convert_image, convert_instance, convert_state_change, from_aws_time, to_aws_time,
};
use crate::error::{Redactor, map_sdk_error};

/// The EC2 and CloudWatch clients of one region.
#[derive(Clone)]
struct RegionClients {
    ec2: aws_sdk_ec2::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
}

/// The AWS provider: one EC2 and one CloudWatch client per configured region.
#[derive(Clone)]
pub struct AwsCloud {
    clients: Arc<HashMap<Region, RegionClients>>,
    regions: Vec<Region>,
    redactor: Redactor,
}

impl std::fmt::Debug for AwsCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCloud")
            .field("regions", &self.regions)
            .finish_non_exhaustive()
    }
}

impl AwsCloud {
    /// Validates `config` and builds the clients of every region. Credentials are resolved
    /// lazily, on the first call (so a missing role shows as [`CloudError::Auth`] then).
    pub async fn connect(config: &AwsConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut clients = HashMap::new();
        for region in &config.regions {
            let shared = load_sdk_config(config, region).await;
            clients.insert(
                region.clone(),
                RegionClients {
                    ec2: aws_sdk_ec2::Client::new(&shared),
                    cloudwatch: aws_sdk_cloudwatch::Client::new(&shared),
                },
            );
        }
        tracing::info!(
            regions = ?config.regions,
            endpoint = config.endpoint_url.as_ref().map(|u| u.as_str()),
            retry_mode = ?config.retry_mode,
            max_attempts = config.max_attempts,
            "aws provider ready"
        );
        let secrets = [
            config.secret_access_key.as_ref(),
            config.session_token.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|s| s.expose().to_owned());
        Ok(Self {
            clients: Arc::new(clients),
            regions: config.regions.clone(),
            redactor: Redactor::new(secrets),
        })
    }

    fn clients(&self, region: &Region) -> Result<&RegionClients, CloudError> {
        self.clients
            .get(region)
            .ok_or_else(|| CloudError::InvalidParameter {
                code: "UnknownRegion".to_owned(),
                message: format!("region {region} is not in aws.regions"),
            })
    }

    fn fail<E>(
        &self,
        operation: &str,
        region: &Region,
        err: aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>,
    ) -> CloudError
    where
        E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mapped = map_sdk_error(operation, err, &self.redactor);
        tracing::debug!(operation, %region, kind = mapped.kind(), error = %mapped, "aws call failed");
        mapped
    }

    /// Start, stop or terminate in batches of [`MAX_IDS_PER_ACTION`].
    async fn change_state(
        &self,
        region: &Region,
        ids: &[InstanceId],
        action: StateAction,
    ) -> Result<Vec<StateChange>, CloudError> {
        let ec2 = &self.clients(region)?.ec2;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_IDS_PER_ACTION) {
            let ids: Vec<String> = chunk.iter().map(|id| id.as_str().to_owned()).collect();
            let changes = match action {
                StateAction::Start => ec2
                    .start_instances()
                    .set_instance_ids(Some(ids))
                    .send()
                    .await
                    .map_err(|e| self.fail("StartInstances", region, e))?
                    .starting_instances()
                    .to_vec(),
                StateAction::Stop => ec2
                    .stop_instances()
                    .set_instance_ids(Some(ids))
                    .send()
                    .await
                    .map_err(|e| self.fail("StopInstances", region, e))?
                    .stopping_instances()
                    .to_vec(),
                StateAction::Terminate => ec2
                    .terminate_instances()
                    .set_instance_ids(Some(ids))
                    .send()
                    .await
                    .map_err(|e| self.fail("TerminateInstances", region, e))?
                    .terminating_instances()
                    .to_vec(),
            };
            for change in &changes {
                match convert_state_change(change) {
                    Ok(change) => out.push(change),
                    Err(skipped) => tracing::warn!(
                        %region,
                        raw_id = %skipped.raw_id,
                        reason = %skipped.reason,
                        "skipping a state change aws described in an unexpected way"
                    ),
                }
            }
        }
        Ok(out)
    }
}

#[derive(Clone, Copy)]
enum StateAction {
    Start,
    Stop,
    Terminate,
}

/// The SDK configuration of one region: retry, timeouts, endpoint and credentials from
/// `config`, everything else from the standard chain.
async fn load_sdk_config(config: &AwsConfig, region: &Region) -> aws_config::SdkConfig {
    let retry = match config.retry_mode {
        RetryMode::Adaptive => RetryConfig::adaptive(),
        RetryMode::Standard => RetryConfig::standard(),
    }
    .with_max_attempts(config.max_attempts);
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(config.connect_timeout)
        .read_timeout(config.read_timeout)
        .operation_timeout(config.operation_timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(region.as_str().to_owned()))
        .retry_config(retry)
        .timeout_config(timeouts);
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url.as_str().trim_end_matches('/'));
    }
    if let Some(profile) = &config.profile {
        loader = loader.profile_name(profile);
    }
    if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
        loader = loader.credentials_provider(Credentials::new(
            id,
            secret.expose(),
            config.session_token.as_ref().map(|t| t.expose().to_owned()),
            None,
            "ccm-config",
        ));
    }
    loader.load().await
}

fn ec2_filter(name: &str, values: Vec<String>) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values))
        .build()
}

fn ids_as_strings(ids: &[InstanceId]) -> Vec<String> {
    ids.iter().map(|id| id.as_str().to_owned()).collect()
}

#[async_trait]
impl CloudProvider for AwsCloud {
    fn name(&self) -> &str {
        "aws"
    }

    fn regions(&self) -> Vec<Region> {
        self.regions.clone()
    }

    async fn find_images(
        &self,
        region: &Region,
        query: &ImageQuery,
    ) -> Result<Vec<Image>, CloudError> {
        let ec2 = &self.clients(region)?.ec2;
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut request = ec2.describe_images().set_next_token(token.take());
            match query {
                ImageQuery::Ids(ids) => {
                    request = request
                        .set_image_ids(Some(ids.iter().map(|i| i.as_str().to_owned()).collect()));
                }
                ImageQuery::OwnedIds { ids, owners } => {
                    // A filter, not ImageIds: an id of another owner (or an unknown one) is
                    // then absent instead of an error.
                    request = request.filters(ec2_filter(
                        "image-id",
                        ids.iter().map(|i| i.as_str().to_owned()).collect(),
                    ));
                    if !owners.is_empty() {
                        request = request.set_owners(Some(owners.clone()));
                    }
                }
                ImageQuery::Name { pattern, owners } => {
                    request = request.filters(ec2_filter("name", vec![pattern.clone()]));
                    if !owners.is_empty() {
                        request = request.set_owners(Some(owners.clone()));
                    }
                }
            }
            let output = request
                .send()
                .await
                .map_err(|e| self.fail("DescribeImages", region, e))?;
            for raw in output.images() {
                match convert_image(raw) {
                    Ok(image) => found.push(image),
                    Err(skipped) => tracing::warn!(
                        %region,
                        raw_id = %skipped.raw_id,
                        reason = %skipped.reason,
                        "skipping an image aws described in an unexpected way"
                    ),
                }
            }
            token = output.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        found.sort_by_key(|image| std::cmp::Reverse(image.creation_date));
        Ok(found)
    }

    async fn run_instance(&self, region: &Region, spec: &RunSpec) -> Result<Instance, CloudError> {
        spec.validate()?;
        let ec2 = &self.clients(region)?.ec2;
        let tags: Vec<Tag> = spec
            .all_tags()
            .into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let output = ec2
            .run_instances()
            .image_id(spec.image_id.as_str())
            .instance_type(aws_sdk_ec2::types::InstanceType::from(
                spec.instance_type.as_str(),
            ))
            .min_count(1)
            .max_count(1)
            .set_subnet_id(spec.subnet_id.clone())
            .set_security_group_ids(
                (!spec.security_group_ids.is_empty()).then(|| spec.security_group_ids.clone()),
            )
            .set_key_name(spec.key_name.clone())
            .client_token(&spec.client_token)
            .monitoring(
                RunInstancesMonitoringEnabled::builder()
                    .enabled(spec.detailed_monitoring)
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.fail("RunInstances", region, e))?;
        let raw = output
            .instances()
            .first()
            .ok_or_else(|| CloudError::Other {
                code: "EmptyResponse".to_owned(),
                message: "RunInstances answered without an instance".to_owned(),
            })?;
        let instance = convert_instance(region, raw).map_err(|skipped| CloudError::Other {
            code: "UnexpectedResponse".to_owned(),
            message: format!(
                "RunInstances returned instance {:?} that ccm cannot read: {}",
                skipped.raw_id, skipped.reason
            ),
        })?;
        tracing::info!(id = %instance.id, %region, image = %spec.image_id, "instance launched");
        Ok(instance)
    }

    async fn describe_instances_page(
        &self,
        region: &Region,
        query: &InstanceQuery,
        page: &PageRequest,
    ) -> Result<InstancePage, CloudError> {
        if query.ids.len() > ccm_cloud::MAX_IDS_PER_DESCRIBE {
            return Err(CloudError::InvalidParameter {
                code: "FilterLimitExceeded".to_owned(),
                message: format!(
                    "at most {} ids per describe call",
                    ccm_cloud::MAX_IDS_PER_DESCRIBE
                ),
            });
        }
        let ec2 = &self.clients(region)?.ec2;
        // Ids go in the `instance-id` filter, not InstanceIds: unknown ids are then simply
        // absent instead of failing the whole batch, and MaxResults stays allowed.
        let mut filters: Vec<Filter> = query
            .filters
            .iter()
            .map(|f| {
                let (name, values) = f.to_ec2();
                ec2_filter(&name, values)
            })
            .collect();
        if !query.ids.is_empty() {
            filters.push(ec2_filter("instance-id", ids_as_strings(&query.ids)));
        }
        let output = ec2
            .describe_instances()
            .set_filters((!filters.is_empty()).then_some(filters))
            .set_max_results(page.clamped_size().map(|s| s as i32))
            .set_next_token(page.token.clone())
            .send()
            .await
            .map_err(|e| self.fail("DescribeInstances", region, e))?;
        let mut result = InstancePage {
            next_token: output
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            ..InstancePage::default()
        };
        for reservation in output.reservations() {
            for raw in reservation.instances() {
                match convert_instance(region, raw) {
                    Ok(instance) => result.instances.push(instance),
                    Err(skipped) => result.skipped.push(skipped),
                }
            }
        }
        Ok(result)
    }

    async fn describe_instance_status(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<Vec<InstanceStatus>, CloudError> {
        let ec2 = &self.clients(region)?.ec2;
        let batches: Vec<Option<Vec<String>>> = if ids.is_empty() {
            vec![None]
        } else {
            ids.chunks(MAX_IDS_PER_ACTION)
                .map(|c| Some(ids_as_strings(c)))
                .collect()
        };
        let mut out = Vec::new();
        for batch in batches {
            let mut token: Option<String> = None;
            for _ in 0..MAX_PAGES {
                // MaxResults may not go with InstanceIds; for a whole region, the largest page.
                let page_size = batch.is_none().then_some(ccm_cloud::MAX_PAGE_SIZE as i32);
                let output = ec2
                    .describe_instance_status()
                    .include_all_instances(true)
                    .set_instance_ids(batch.clone())
                    .set_max_results(page_size)
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| self.fail("DescribeInstanceStatus", region, e))?;
                for raw in output.instance_statuses() {
                    match check_status(raw) {
                        Ok(status) => out.push(status),
                        Err(skipped) => tracing::warn!(
                            %region,
                            raw_id = %skipped.raw_id,
                            reason = %skipped.reason,
                            "skipping an instance status aws described in an unexpected way"
                        ),
                    }
                }
                token = output
                    .next_token()
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned);
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn start_instances(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        self.change_state(region, ids, StateAction::Start).await
    }

    async fn stop_instances(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        self.change_state(region, ids, StateAction::Stop).await
    }

    async fn terminate_instances(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        self.change_state(region, ids, StateAction::Terminate).await
    }

    async fn create_tags(
        &self,
        region: &Region,
        ids: &[InstanceId],
        tags: &Tags,
    ) -> Result<(), CloudError> {
        let ec2 = &self.clients(region)?.ec2;
        let tags: Vec<Tag> = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        for chunk in ids.chunks(MAX_IDS_PER_ACTION) {
            ec2.create_tags()
                .set_resources(Some(ids_as_strings(chunk)))
                .set_tags(Some(tags.clone()))
                .send()
                .await
                .map_err(|e| self.fail("CreateTags", region, e))?;
        }
        Ok(())
    }

    async fn delete_tags(
        &self,
        region: &Region,
        ids: &[InstanceId],
        keys: &[String],
    ) -> Result<(), CloudError> {
        if keys.is_empty() {
            // EC2 reads an empty tag list as "delete every tag": never send that.
            return Ok(());
        }
        let ec2 = &self.clients(region)?.ec2;
        let tags: Vec<Tag> = keys.iter().map(|k| Tag::builder().key(k).build()).collect();
        for chunk in ids.chunks(MAX_IDS_PER_ACTION) {
            ec2.delete_tags()
                .set_resources(Some(ids_as_strings(chunk)))
                .set_tags(Some(tags.clone()))
                .send()
                .await
                .map_err(|e| self.fail("DeleteTags", region, e))?;
        }
        Ok(())
    }

    async fn enable_detailed_monitoring(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<(), CloudError> {
        let ec2 = &self.clients(region)?.ec2;
        for chunk in ids.chunks(MAX_IDS_PER_ACTION) {
            ec2.monitor_instances()
                .set_instance_ids(Some(ids_as_strings(chunk)))
                .send()
                .await
                .map_err(|e| self.fail("MonitorInstances", region, e))?;
        }
        Ok(())
    }

    async fn instance_metrics(
        &self,
        region: &Region,
        ids: &[InstanceId],
        window: &MetricsWindow,
    ) -> Result<HashMap<InstanceId, InstanceMetrics>, CloudError> {
        window.validate()?;
        let cloudwatch = &self.clients(region)?.cloudwatch;
        let period = i32::try_from(window.period.as_secs()).unwrap_or(i32::MAX);
        let mut out: HashMap<InstanceId, InstanceMetrics> = ids
            .iter()
            .map(|id| (id.clone(), InstanceMetrics::default()))
            .collect();
        for chunk in ids.chunks(MAX_INSTANCES_PER_METRICS_CALL) {
            let mut queries = Vec::with_capacity(chunk.len() * 2);
            for (n, id) in chunk.iter().enumerate() {
                for (prefix, (namespace, name)) in [("cpu", CPU_METRIC), ("mem", MEMORY_METRIC)] {
                    queries.push(
                        MetricDataQuery::builder()
                            .id(format!("{prefix}{n}"))
                            .metric_stat(
                                MetricStat::builder()
                                    .metric(
                                        Metric::builder()
                                            .namespace(namespace)
                                            .metric_name(name)
                                            .dimensions(
                                                Dimension::builder()
                                                    .name("InstanceId")
                                                    .value(id.as_str())
                                                    .build(),
                                            )
                                            .build(),
                                    )
                                    .period(period)
                                    .stat("Average")
                                    .build(),
                            )
                            .return_data(true)
                            .build(),
                    );
                }
            }
            let mut token: Option<String> = None;
            for _ in 0..MAX_PAGES {
                let output = cloudwatch
                    .get_metric_data()
                    .set_metric_data_queries(Some(queries.clone()))
                    .start_time(to_aws_time(window.start()))
                    .end_time(to_aws_time(window.end))
                    .scan_by(ScanBy::TimestampDescending)
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(|e| {
                        let mapped = map_sdk_error("GetMetricData", e, &self.redactor);
                        tracing::debug!(%region, error = %mapped, "aws call failed");
                        mapped
                    })?;
                for result in output.metric_data_results() {
                    let Some((is_cpu, n)) = result.id().and_then(parse_query_id) else {
                        continue;
                    };
                    let Some(id) = chunk.get(n) else { continue };
                    // The latest datapoint (order is not trusted across pages).
                    let latest = result
                        .timestamps()
                        .iter()
                        .zip(result.values())
                        .filter_map(|(at, value)| from_aws_time(at).map(|at| (at, *value)))
                        .max_by_key(|(at, _)| *at);
                    let Some((at, value)) = latest else { continue };
                    let entry = out.entry(id.clone()).or_default();
                    let slot = if is_cpu {
                        &mut entry.cpu_percent
                    } else {
                        &mut entry.memory_used_percent
                    };
                    if slot.is_none_or(|old| old.at < at) {
                        *slot = Some(MetricSample { value, at });
                    }
                }
                token = output
                    .next_token()
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned);
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// `cpu12` → (true, 12); `mem3` → (false, 3).
fn parse_query_id(id: &str) -> Option<(bool, usize)> {
    if let Some(n) = id.strip_prefix("cpu") {
        n.parse().ok().map(|n| (true, n))
    } else if let Some(n) = id.strip_prefix("mem") {
        n.parse().ok().map(|n| (false, n))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_ids_should_round_trip() {
        assert_eq!(parse_query_id("cpu0"), Some((true, 0)));
        assert_eq!(parse_query_id("mem249"), Some((false, 249)));
        assert_eq!(parse_query_id("disk1"), None);
        assert_eq!(parse_query_id("cpux"), None);
    }
}
