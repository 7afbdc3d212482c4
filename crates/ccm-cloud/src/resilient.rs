//! [`ResilientCloud`]: any [`CloudProvider`] under `ccm-resilience`'s policy stack, per region.
//!
//! Every call runs under a circuit breaker keyed `aws:{region}:ec2` or
//! `aws:{region}:cloudwatch`, the `aws` bulkhead, the region's rate limit and one deadline.
//!
//! **Retries are off by default.** The AWS SDK already retries (adaptive mode, `max_attempts`),
//! with a client-side rate limiter that reacts to throttling; a policy retry on top would
//! multiply attempts (3 × 3 = 9 calls for one failure) and fight that limiter. The policy
//! stack therefore adds only what the SDK lacks: a breaker per region and service (a region
//! that keeps failing is left alone for a while instead of tying up the bulkhead), the
//! bulkhead, the rate limit and a deadline that includes the SDK's own retries. For a
//! provider without retries of its own (the simulator), [`ResilientCloudConfig::attempts`]
//! turns policy retries on.
//!
//! The per-attempt timeout of the shared `[resilience]` config is meant for CML calls (15 s)
//! and would cut an SDK call with its internal retries short, so a `ResilientCloud` owns a
//! [`Resilience`] derived from the shared config (same breaker, bulkhead and rate-limit
//! settings; timeouts and retries from [`ResilientCloudConfig`]). Its breakers are visible
//! through [`ResilientCloud::resilience`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ccm_domain::{InstanceId, Region};
use ccm_resilience::{
    Call, CallError, Classify, ErrorClass, Observer, Resilience, ResilienceConfig,
};
use tracing::Instrument as _;

use crate::error::CloudError;
use crate::provider::CloudProvider;
use crate::types::{
    Image, ImageQuery, Instance, InstanceMetrics, InstancePage, InstanceQuery, InstanceStatus,
    MetricsWindow, PageRequest, RunSpec, StateChange, Tags,
};

/// The bulkhead every cloud call runs in.
pub const BULKHEAD: ccm_resilience::BulkheadId = ccm_resilience::bulkhead::AWS;

// === impl Classify for CloudError ===

impl Classify for CloudError {
    /// Throttling and unavailability are transient (retryable, count for the region's
    /// breaker). Authentication failures and unknown errors are failures: every call to the
    /// region would fail alike, so the breaker should stop them. A caller's mistake (unknown
    /// instance, bad AMI or subnet, exhausted quota, wrong state) or an operation the endpoint
    /// does not implement says nothing about the region's health: benign, never counted.
    fn class(&self) -> ErrorClass {
        match self {
            Self::Throttled { .. } | Self::Unavailable { .. } => ErrorClass::Transient,
            Self::Auth { .. } | Self::Other { .. } => ErrorClass::Failure,
            Self::NotFound { .. }
            | Self::QuotaExceeded { .. }
            | Self::InvalidParameter { .. }
            | Self::IncorrectState { .. }
            | Self::Unsupported { .. } => ErrorClass::Benign,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { retry_after, .. } => *retry_after,
            Self::Unavailable { retry_in, .. } => *retry_in,
            _ => None,
        }
    }

    fn reason(&self) -> Option<String> {
        Some(match self.code() {
            Some(code) => format!("{} ({code})", self.kind()),
            None => self.kind().to_owned(),
        })
    }
}

/// Turns a policy-stack failure into the one error type callers see.
pub(crate) fn from_call_error(err: CallError<CloudError>) -> CloudError {
    match err {
        CallError::Inner(e) | CallError::BudgetExhausted { last: e } => e,
        CallError::CircuitOpen { key, retry_in } => CloudError::Unavailable {
            message: format!("circuit breaker {key} is open after repeated failures"),
            retry_in: Some(retry_in),
        },
        CallError::BulkheadFull { name } => CloudError::Unavailable {
            message: format!("too many cloud calls at once (bulkhead {name} is full)"),
            retry_in: None,
        },
        CallError::Timeout { after } => CloudError::Unavailable {
            message: format!("no answer within {after:?}"),
            retry_in: None,
        },
        CallError::DeadlineExceeded { after, last } => match last {
            // Still throttled when time ran out: say so, that is what to act on.
            Some(CloudError::Throttled {
                code,
                message,
                retry_after,
            }) => CloudError::Throttled {
                code,
                message: format!("{message} (deadline of {after:?} exceeded)"),
                retry_after,
            },
            Some(last) => CloudError::Unavailable {
                message: format!("deadline exceeded after {after:?}; last error: {last}"),
                retry_in: None,
            },
            None => CloudError::Unavailable {
                message: format!("deadline exceeded after {after:?}"),
                retry_in: None,
            },
        },
    }
}

/// Which service a call goes to (part of the breaker key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// EC2: images and instances.
    Ec2,
    /// CloudWatch: metrics.
    CloudWatch,
}

impl Service {
    /// The lowercase name used in breaker keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ec2 => "ec2",
            Self::CloudWatch => "cloudwatch",
        }
    }

    /// The breaker key of this service in `region`: `aws:{region}:{ec2|cloudwatch}`.
    pub fn breaker_key(self, region: &Region) -> String {
        format!("aws:{region}:{}", self.as_str())
    }
}

/// How [`ResilientCloud`] wraps its provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResilientCloudConfig {
    /// Deadline of one cloud operation, the provider's own retries included. For AWS, set it a
    /// little above `aws.operation_timeout` so the SDK's timeout speaks first.
    pub deadline: Duration,
    /// Attempts per call made by the policy stack. 1 (the default) leaves retrying to the AWS
    /// SDK; more is for providers that do not retry themselves.
    pub attempts: u32,
    /// Timeout of one attempt. `None`: the whole deadline with one attempt, else
    /// `deadline / (attempts + 1)`, so that a retry still fits in the deadline (the policy
    /// stack starts a retry only if its backoff plus a full attempt fit).
    pub attempt_timeout: Option<Duration>,
}

impl Default for ResilientCloudConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(100),
            attempts: 1,
            attempt_timeout: None,
        }
    }
}

impl ResilientCloudConfig {
    /// The policy configuration for cloud calls: breaker, bulkheads, rate limit and budget from
    /// `shared`; deadline [`Self::deadline`]; per-attempt timeout as
    /// [`Self::attempt_timeout`] says (with one attempt, the provider's call, its own retries
    /// included, is that attempt); retries as [`Self::attempts`] says.
    pub fn derive(&self, shared: &ResilienceConfig) -> ResilienceConfig {
        let attempts = self.attempts.max(1);
        let per_attempt = match self.attempt_timeout {
            Some(timeout) => timeout.min(self.deadline),
            None if attempts == 1 => self.deadline,
            None => self.deadline / (attempts + 1),
        };
        let mut config = shared.clone();
        config.timeout.enabled = true;
        config.timeout.per_attempt = per_attempt;
        config.timeout.deadline = self.deadline;
        config.retry.enabled = self.attempts > 1;
        config.retry.max_attempts = attempts;
        config
    }
}

/// A [`CloudProvider`] that runs every call of another provider under breaker, bulkhead, rate
/// limit and deadline, per region.
#[derive(Clone)]
pub struct ResilientCloud {
    inner: Arc<dyn CloudProvider>,
    resilience: Resilience,
    /// Per-call overrides (deadline, attempt timeout, attempts) when sharing a policy stack
    /// configured for other calls.
    overrides: Option<ResilientCloudConfig>,
}

impl ResilientCloud {
    /// Wraps `inner` with a policy stack derived from the shared `[resilience]` config (see
    /// [`ResilientCloudConfig::derive`]); state changes go to `observer`.
    pub fn new(
        inner: Arc<dyn CloudProvider>,
        shared: &ResilienceConfig,
        config: &ResilientCloudConfig,
        observer: Arc<dyn Observer>,
    ) -> Self {
        Self::with_resilience(inner, Resilience::new(&config.derive(shared), observer))
    }

    /// Wraps `inner` with a ready-made policy stack, used as configured (tests).
    pub fn with_resilience(inner: Arc<dyn CloudProvider>, resilience: Resilience) -> Self {
        Self {
            inner,
            resilience,
            overrides: None,
        }
    }

    /// Wraps `inner` with the process's shared policy stack (so cloud breakers sit in the same
    /// registry as the CML ones, visible in the API), overriding per call the deadline,
    /// attempt timeout and attempts that the shared `[resilience]` settings mean for CML.
    pub fn sharing(
        inner: Arc<dyn CloudProvider>,
        resilience: Resilience,
        config: &ResilientCloudConfig,
    ) -> Self {
        Self {
            inner,
            resilience,
            overrides: Some(config.clone()),
        }
    }

    /// The policy stack, for its breakers' and bulkhead's state.
    pub fn resilience(&self) -> &Resilience {
        &self.resilience
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &Arc<dyn CloudProvider> {
        &self.inner
    }

    /// Runs one provider operation through the policies, inside an `info_span!("cloud.call",
    /// operation, region)` with one `cloud.attempt` child span per attempt (`attempt`).
    async fn run<T, F, Fut>(
        &self,
        operation: &'static str,
        region: &Region,
        service: Service,
        idempotent: bool,
        mut op: F,
    ) -> Result<T, CloudError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, CloudError>>,
    {
        let span = tracing::info_span!(
            "cloud.call",
            "otel.kind" = "client",
            provider = self.inner.name(),
            operation,
            region = region.as_str(),
        );
        let op = move |attempt: u32| {
            op(attempt).instrument(tracing::info_span!("cloud.attempt", operation, attempt))
        };
        self.run_policies(region, service, idempotent, op)
            .instrument(span)
            .await
    }

    async fn run_policies<T, F, Fut>(
        &self,
        region: &Region,
        service: Service,
        idempotent: bool,
        op: F,
    ) -> Result<T, CloudError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, CloudError>>,
    {
        let key = service.breaker_key(region);
        let mut call = Call::new(&key)
            .idempotent(idempotent)
            .bulkhead(BULKHEAD)
            .rate_limit(region.as_str());
        if let Some(o) = &self.overrides {
            let attempts = o.attempts.max(1);
            let per_attempt = match o.attempt_timeout {
                Some(timeout) => timeout.min(o.deadline),
                None if attempts == 1 => o.deadline,
                None => o.deadline / (attempts + 1),
            };
            call = call
                .deadline(o.deadline)
                .attempt_timeout(per_attempt)
                .max_attempts(attempts);
        }
        self.resilience.call(&call, op).await.map_err(|err| {
            let mapped = from_call_error(err);
            tracing::debug!(key, kind = mapped.kind(), error = %mapped, "cloud call failed");
            mapped
        })
    }
}

#[async_trait]
impl CloudProvider for ResilientCloud {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn regions(&self) -> Vec<Region> {
        self.inner.regions()
    }

    async fn find_images(
        &self,
        region: &Region,
        query: &ImageQuery,
    ) -> Result<Vec<Image>, CloudError> {
        self.run("find_images", region, Service::Ec2, true, |_| {
            self.inner.find_images(region, query)
        })
        .await
    }

    async fn run_instance(&self, region: &Region, spec: &RunSpec) -> Result<Instance, CloudError> {
        // Safe to repeat only with a client token: EC2 then returns the first launch.
        let idempotent = !spec.client_token.is_empty();
        self.run("run_instance", region, Service::Ec2, idempotent, |_| {
            self.inner.run_instance(region, spec)
        })
        .await
    }

    async fn describe_instances_page(
        &self,
        region: &Region,
        query: &InstanceQuery,
        page: &PageRequest,
    ) -> Result<InstancePage, CloudError> {
        self.run(
            "describe_instances_page",
            region,
            Service::Ec2,
            true,
            |_| self.inner.describe_instances_page(region, query, page),
        )
        .await
    }

    async fn describe_instance_status(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<Vec<InstanceStatus>, CloudError> {
        self.run(
            "describe_instance_status",
            region,
            Service::Ec2,
            true,
            |_| self.inner.describe_instance_status(region, ids),
        )
        .await
    }

    async fn start_instances(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        self.run("start_instances", region, Service::Ec2, true, |_| {
            self.inner.start_instances(region, ids)
        })
        .await
    }

    async fn stop_instances(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        self.run("stop_instances", region, Service::Ec2, true, |_| {
            self.inner.stop_instances(region, ids)
        })
        .await
    }

    async fn terminate_instances(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        self.run("terminate_instances", region, Service::Ec2, true, |_| {
            self.inner.terminate_instances(region, ids)
        })
        .await
    }

    async fn create_tags(
        &self,
        region: &Region,
        ids: &[InstanceId],
        tags: &Tags,
    ) -> Result<(), CloudError> {
        self.run("create_tags", region, Service::Ec2, true, |_| {
            self.inner.create_tags(region, ids, tags)
        })
        .await
    }

    async fn delete_tags(
        &self,
        region: &Region,
        ids: &[InstanceId],
        keys: &[String],
    ) -> Result<(), CloudError> {
        self.run("delete_tags", region, Service::Ec2, true, |_| {
            self.inner.delete_tags(region, ids, keys)
        })
        .await
    }

    async fn enable_detailed_monitoring(
        &self,
        region: &Region,
        ids: &[InstanceId],
    ) -> Result<(), CloudError> {
        self.run(
            "enable_detailed_monitoring",
            region,
            Service::Ec2,
            true,
            |_| self.inner.enable_detailed_monitoring(region, ids),
        )
        .await
    }

    async fn instance_metrics(
        &self,
        region: &Region,
        ids: &[InstanceId],
        window: &MetricsWindow,
    ) -> Result<HashMap<InstanceId, InstanceMetrics>, CloudError> {
        self.run(
            "instance_metrics",
            region,
            Service::CloudWatch,
            true,
            |_| self.inner.instance_metrics(region, ids, window),
        )
        .await
    }
}

#[cfg(test)]
mod tests;
