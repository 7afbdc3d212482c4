//! Conversions between the cloud provider's types and the domain's.

use ccm_cloud::{Instance, InstanceMetrics};
use ccm_domain::worker::{CloudWatchMetrics, InstanceObservation};

/// What the domain needs of an EC2 instance.
pub(crate) fn observation(instance: &Instance) -> InstanceObservation {
    InstanceObservation {
        instance_id: instance.id.clone(),
        state: instance.state,
        instance_type: Some(instance.instance_type.clone()),
        ami_id: Some(instance.image_id.clone()),
        public_ip: instance.public_ip,
        private_ip: instance.private_ip,
        tags: instance.tags.clone(),
        launched_at: instance.launch_time,
        detailed_monitoring: instance.detailed_monitoring,
        state_reason: instance.state_reason.clone(),
    }
}

/// CloudWatch datapoints as the domain keeps them.
pub(crate) fn cloudwatch(m: &InstanceMetrics) -> CloudWatchMetrics {
    CloudWatchMetrics {
        cpu_percent: m.cpu_percent.map(|s| s.value),
        cpu_at: m.cpu_percent.map(|s| s.at),
        memory_percent: m.memory_used_percent.map(|s| s.value),
        memory_at: m.memory_used_percent.map(|s| s.at),
    }
}
