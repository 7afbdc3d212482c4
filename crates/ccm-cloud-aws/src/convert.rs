//! From the SDK's response types to `ccm-cloud`'s. Anything unexpected (a malformed id, an
//! unknown state) makes that one item a [`SkippedInstance`], never a panic nor a failed call.

use std::net::IpAddr;

use aws_sdk_ec2::primitives::DateTime as AwsDateTime;
use aws_sdk_ec2::types as ec2;
use ccm_cloud::{CheckStatus, Image, Instance, InstanceStatus, SkippedInstance, StateChange, Tags};
use ccm_domain::{AmiId, Ec2State, InstanceId, InstanceType, Region};
use chrono::{DateTime, Utc};

fn skipped(raw_id: Option<&str>, reason: impl Into<String>) -> SkippedInstance {
    SkippedInstance {
        raw_id: ccm_cloud::sanitize_message(raw_id.unwrap_or("")),
        reason: reason.into(),
    }
}

pub(crate) fn from_aws_time(at: &AwsDateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.secs(), at.subsec_nanos())
}

pub(crate) fn to_aws_time(at: DateTime<Utc>) -> AwsDateTime {
    AwsDateTime::from_secs_and_nanos(at.timestamp(), at.timestamp_subsec_nanos())
}

fn parse_state(raw: Option<&ec2::InstanceState>) -> Result<Ec2State, String> {
    let name = raw
        .and_then(|s| s.name())
        .map(|n| n.as_str())
        .ok_or("no state")?;
    match name.parse::<Ec2State>() {
        Ok(state @ (Ec2State::Failed | Ec2State::Unknown)) => {
            Err(format!("state {state} is not an EC2 state"))
        }
        Ok(state) => Ok(state),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_ip(raw: Option<&str>, what: &str) -> Result<Option<IpAddr>, String> {
    raw.filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| format!("{what} {s:?} is not an IP address"))
        })
        .transpose()
}

pub(crate) fn convert_instance(
    region: &Region,
    raw: &ec2::Instance,
) -> Result<Instance, SkippedInstance> {
    let raw_id = raw.instance_id();
    let fail = |reason: String| skipped(raw_id, reason);
    let id = InstanceId::parse(raw_id.unwrap_or("")).map_err(|e| fail(e.to_string()))?;
    let state = parse_state(raw.state()).map_err(fail)?;
    let instance_type = raw
        .instance_type()
        .ok_or_else(|| fail("no instance type".into()))
        .and_then(|t| InstanceType::parse(t.as_str()).map_err(|e| fail(e.to_string())))?;
    let image_id = AmiId::parse(raw.image_id().unwrap_or("")).map_err(|e| fail(e.to_string()))?;
    let public_ip = parse_ip(raw.public_ip_address(), "public IP").map_err(fail)?;
    let private_ip = parse_ip(raw.private_ip_address(), "private IP").map_err(fail)?;
    let tags: Tags = raw
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or("").to_owned())))
        .collect();
    let detailed_monitoring = raw.monitoring().and_then(|m| m.state()).is_some_and(|s| {
        matches!(
            s,
            ec2::MonitoringState::Enabled | ec2::MonitoringState::Pending
        )
    });
    let state_reason = raw
        .state_reason()
        .and_then(|r| r.message())
        .or(raw.state_transition_reason())
        .filter(|s| !s.is_empty())
        .map(ccm_cloud::sanitize_message);
    Ok(Instance {
        id,
        region: region.clone(),
        state,
        instance_type,
        image_id,
        launch_time: raw.launch_time().and_then(from_aws_time),
        public_ip,
        private_ip,
        tags,
        detailed_monitoring,
        state_reason,
    })
}

pub(crate) fn convert_state_change(
    raw: &ec2::InstanceStateChange,
) -> Result<StateChange, SkippedInstance> {
    let raw_id = raw.instance_id();
    let fail = |reason: String| skipped(raw_id, reason);
    Ok(StateChange {
        id: InstanceId::parse(raw_id.unwrap_or("")).map_err(|e| fail(e.to_string()))?,
        previous: parse_state(raw.previous_state()).map_err(fail)?,
        current: parse_state(raw.current_state()).map_err(fail)?,
    })
}

pub(crate) fn check_status(raw: &ec2::InstanceStatus) -> Result<InstanceStatus, SkippedInstance> {
    let raw_id = raw.instance_id();
    let fail = |reason: String| skipped(raw_id, reason);
    let summary = |s: Option<&ec2::InstanceStatusSummary>| {
        s.and_then(|s| s.status())
            .map_or(CheckStatus::Unknown, |s| CheckStatus::from_ec2(s.as_str()))
    };
    Ok(InstanceStatus {
        id: InstanceId::parse(raw_id.unwrap_or("")).map_err(|e| fail(e.to_string()))?,
        state: parse_state(raw.instance_state()).map_err(fail)?,
        system_status: summary(raw.system_status()),
        instance_status: summary(raw.instance_status()),
    })
}

pub(crate) fn convert_image(raw: &ec2::Image) -> Result<Image, SkippedInstance> {
    let raw_id = raw.image_id();
    let id = AmiId::parse(raw_id.unwrap_or("")).map_err(|e| skipped(raw_id, e.to_string()))?;
    Ok(Image {
        id,
        name: raw.name().unwrap_or("").to_owned(),
        owner_id: raw.owner_id().map(str::to_owned),
        owner_alias: raw.image_owner_alias().map(str::to_owned),
        public: raw.public(),
        creation_date: raw
            .creation_date()
            .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
            .map(|d| d.with_timezone(&Utc)),
        state: raw.state().map_or("unknown", |s| s.as_str()).to_owned(),
        description: raw.description().map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> Region {
        Region::parse("eu-west-1").unwrap()
    }

    fn raw(id: &str, state: ec2::InstanceStateName) -> ec2::Instance {
        ec2::Instance::builder()
            .instance_id(id)
            .state(ec2::InstanceState::builder().name(state).build())
            .instance_type(ec2::InstanceType::M5Large)
            .image_id("ami-0123abcd")
            .public_ip_address("127.0.0.9")
            .tags(ec2::Tag::builder().key("Name").value("w1").build())
            .monitoring(
                ec2::Monitoring::builder()
                    .state(ec2::MonitoringState::Enabled)
                    .build(),
            )
            .launch_time(AwsDateTime::from_secs(1_750_000_000))
            .build()
    }

    #[test]
    fn a_well_formed_instance_should_convert() {
        let i = convert_instance(
            &region(),
            &raw("i-0123456789abcdef0", ec2::InstanceStateName::Running),
        )
        .unwrap();
        assert_eq!(i.state, Ec2State::Running);
        assert_eq!(i.name(), Some("w1"));
        assert_eq!(i.public_ip, Some("127.0.0.9".parse().unwrap()));
        assert!(i.detailed_monitoring);
        assert_eq!(i.launch_time.unwrap().timestamp(), 1_750_000_000);
        assert_eq!(i.instance_type.as_str(), "m5.large");
    }

    #[test]
    fn malformed_ids_and_unknown_states_should_skip_only_that_instance() {
        let bad_id = convert_instance(&region(), &raw("i-XYZ", ec2::InstanceStateName::Running))
            .unwrap_err();
        assert_eq!(bad_id.raw_id, "i-XYZ");
        assert!(bad_id.reason.contains("instance id"), "{}", bad_id.reason);
        let odd = convert_instance(
            &region(),
            &raw("i-0123abcd", ec2::InstanceStateName::from("hibernating")),
        )
        .unwrap_err();
        assert!(odd.reason.contains("hibernating"), "{}", odd.reason);
        let no_state = ec2::Instance::builder().instance_id("i-0123abcd").build();
        assert!(convert_instance(&region(), &no_state).is_err());
    }

    #[test]
    fn times_should_round_trip_between_chrono_and_the_sdk() {
        let now = DateTime::from_timestamp(1_750_000_123, 456_000_000).unwrap();
        assert_eq!(from_aws_time(&to_aws_time(now)), Some(now));
    }
}
