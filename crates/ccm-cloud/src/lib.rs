//! The cloud provider abstraction: what ccm needs from EC2 and CloudWatch, as one trait.
//!
//! # Brief overview
//! - [`CloudProvider`]: find images, run, describe (batched, paginated), start, stop,
//!   terminate, tag, enable monitoring, read CPU and memory metrics of many instances at once.
//!   Object safe; used as `Arc<dyn CloudProvider>`.
//! - [`CloudError`]: one error type, mapped from AWS error codes, saying what to do next.
//!   Throttling and unavailability are transient; a bad AMI never counts against a region.
//! - [`ResilientCloud`]: wraps any provider with `ccm-resilience`'s breaker (per region and
//!   service), bulkhead (`aws`), rate limit (per region) and deadline.
//! - `testkit` (feature `testkit`): the behavioural suite every provider's tests run, so the
//!   simulated and the AWS provider cannot drift apart.
//!
//! Not here: the AWS SDK. `ccm-cloud-aws` implements the trait, so that nothing else has to
//! build the (slow to compile) SDK. Nor the simulated EC2 (`ccm-testbed`), which implements
//! the trait for `ccm demo`, the benchmarks and the tests. Providers never retry on their own account beyond what the
//! AWS SDK does; policies are added by [`ResilientCloud`].
#![warn(missing_docs)]

mod error;
mod provider;
mod resilient;
mod types;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{CloudError, sanitize_message};
pub use provider::{CloudProvider, MAX_PAGES};
pub use resilient::{BULKHEAD, ResilientCloud, ResilientCloudConfig, Service};
pub use types::{
    CPU_METRIC, CheckStatus, Image, ImageQuery, Instance, InstanceFilter, InstanceMetrics,
    InstancePage, InstanceQuery, InstanceStatus, MAX_IDS_PER_ACTION, MAX_IDS_PER_DESCRIBE,
    MAX_INSTANCES_PER_METRICS_CALL, MAX_PAGE_SIZE, MEMORY_METRIC, MIN_PAGE_SIZE, MetricKind,
    MetricSample, MetricsWindow, NAME_TAG, PageRequest, RunSpec, SkippedInstance, StateChange,
    Tags, glob_match, owned_by,
};
