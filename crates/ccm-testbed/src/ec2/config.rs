//! [`Ec2SimConfig`]: what the simulated cloud contains and how fast it moves.

use std::net::Ipv4Addr;
use std::time::Duration;

use ccm_cloud::{CloudError, Image, Tags};
use ccm_domain::{AmiId, InstanceType, Region};
use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// The account the simulated caller is in by default (moto's default account too).
pub const DEFAULT_ACCOUNT: &str = "123456789012";

/// The account of the built-in squatting image (see [`Ec2SimConfig::default_images`]).
pub const SQUATTER_ACCOUNT: &str = "666666666666";

/// The simulated cloud's settings (a config section of `ccm demo`, or built in tests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ec2SimConfig {
    /// The regions it serves; seeded instances go to the first.
    pub regions: Vec<Region>,
    /// Seed of the random generator (instance ids, injected throttling): same seed, same ids.
    pub seed: u64,
    /// How long `pending` lasts (launch or start → running).
    #[serde(with = "humantime_serde")]
    pub pending_delay: Duration,
    /// How long `stopping` lasts.
    #[serde(with = "humantime_serde")]
    pub stopping_delay: Duration,
    /// How long `shutting-down` lasts.
    #[serde(with = "humantime_serde")]
    pub shutting_down_delay: Duration,
    /// How long a terminated instance stays visible (EC2: about an hour).
    #[serde(with = "humantime_serde")]
    pub terminated_retention: Duration,
    /// Public addresses, all on 127.0.0.0/8. Launch N binds address N (the lowest free one)
    /// for the instance's life, so it can match the CML simulator's worker N. Empty: no
    /// public IPs at all.
    pub ip_pool: Vec<Ipv4Addr>,
    /// Most live (not terminated) instances; more is `InstanceLimitExceeded`.
    pub max_instances: usize,
    /// The account the simulated caller is in: `self` in image owner filters, and the images
    /// it may launch beside public ones.
    pub account_id: String,
    /// The images every region holds. The caller sees (and may launch) those of its own
    /// account and the public ones; another account's private image is invisible, as in EC2.
    pub images: Vec<Image>,
    /// How many running instances exist from the start (for `import existing instances`).
    pub seed_instances: usize,
    /// The instance type of seeded instances.
    pub seed_instance_type: InstanceType,
    /// The tags of seeded instances (besides `Name` = `cml-worker-NNN`).
    pub seed_tags: Tags,
    /// Page size when the caller does not set one.
    pub default_page_size: u32,
}

impl Ec2SimConfig {
    /// `count` consecutive loopback addresses starting at `start` (wrapping within
    /// 127.0.0.0/8 is the caller's problem: [`Ec2SimConfig::validate`] rejects the result).
    pub fn loopback_pool(start: Ipv4Addr, count: u32) -> Vec<Ipv4Addr> {
        let base = u32::from(start);
        (0..count)
            .map(|n| Ipv4Addr::from(base.wrapping_add(n)))
            .collect()
    }

    /// The built-in images, the same as the test moto's (`ccm_cloud_aws::moto::AMIS_JSON`):
    /// two CML controller releases of the caller's own account ([`DEFAULT_ACCOUNT`]), a public
    /// Ubuntu image of Canonical's, and a **squatter**: a public image of another account
    /// ([`SQUATTER_ACCOUNT`]) whose name matches `cml-controller-2.9*` and which is newer than
    /// the real one — what a name lookup without an owner filter would launch.
    pub fn default_images() -> Vec<Image> {
        let image = |id: &str,
                     name: &str,
                     description: &str,
                     owner: &str,
                     public: bool,
                     (y, m, d): (i32, u32, u32)| {
            AmiId::parse(id).ok().map(|id| Image {
                id,
                name: name.to_owned(),
                owner_id: Some(owner.to_owned()),
                owner_alias: None,
                public: Some(public),
                creation_date: Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).single(),
                state: "available".to_owned(),
                description: Some(description.to_owned()),
            })
        };
        [
            image(
                "ami-0c31c0de00290000a",
                "cml-controller-2.9.0-1234-x86_64-2025-06-30",
                "Cisco Modeling Labs 2.9.0 controller",
                DEFAULT_ACCOUNT,
                false,
                (2025, 6, 30),
            ),
            image(
                "ami-0c31c0de00281000b",
                "cml-controller-2.8.1-14-x86_64-2025-01-15",
                "Cisco Modeling Labs 2.8.1 controller",
                DEFAULT_ACCOUNT,
                false,
                (2025, 1, 15),
            ),
            image(
                "ami-0ab1ce0000000000c",
                "ubuntu/images/hvm-ssd/ubuntu-noble-24.04-amd64-server-20250601",
                "Canonical, Ubuntu, 24.04 LTS, amd64 noble image",
                "099720109477",
                true,
                (2025, 6, 1),
            ),
            image(
                "ami-0bad5a0a70000000d",
                "cml-controller-2.9.9-0000-x86_64-2025-12-01",
                "Not Cisco: a public image named like the controller",
                SQUATTER_ACCOUNT,
                true,
                (2025, 12, 1),
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Checks the settings; the error names the key.
    pub fn validate(&self) -> Result<(), CloudError> {
        let bad = |key: &str, what: String| {
            Err(CloudError::InvalidParameter {
                code: "InvalidSimConfig".to_owned(),
                message: format!("simulated cloud: {key}: {what}"),
            })
        };
        if self.regions.is_empty() {
            return bad("regions", "at least one region is needed".into());
        }
        if let Some(ip) = self.ip_pool.iter().find(|ip| !ip.is_loopback()) {
            return bad("ip_pool", format!("{ip} is not on 127.0.0.0/8"));
        }
        let mut sorted = self.ip_pool.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != self.ip_pool.len() {
            return bad("ip_pool", "addresses must be distinct".into());
        }
        if self.seed_instances > self.max_instances {
            return bad(
                "seed_instances",
                format!("{} is more than max_instances", self.seed_instances),
            );
        }
        if !self.ip_pool.is_empty() && self.seed_instances > self.ip_pool.len() {
            return bad(
                "seed_instances",
                format!("{} is more than the ip_pool has", self.seed_instances),
            );
        }
        if self.seed_instances > 0 && self.images.is_empty() {
            return bad("images", "seeded instances need at least one image".into());
        }
        if self.account_id.len() != 12 || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return bad("account_id", "must be 12 digits".into());
        }
        if self.default_page_size == 0 {
            return bad("default_page_size", "must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for Ec2SimConfig {
    fn default() -> Self {
        let mut seed_tags = Tags::new();
        seed_tags.insert("ccm:cml".to_owned(), "true".to_owned());
        Self {
            regions: Region::parse("eu-west-1").into_iter().collect(),
            seed: 1,
            pending_delay: Duration::from_secs(20),
            stopping_delay: Duration::from_secs(10),
            shutting_down_delay: Duration::from_secs(10),
            terminated_retention: Duration::from_secs(3600),
            ip_pool: Self::loopback_pool(Ipv4Addr::new(127, 100, 0, 1), 1024),
            max_instances: 20_000,
            account_id: DEFAULT_ACCOUNT.to_owned(),
            images: Self::default_images(),
            seed_instances: 0,
            seed_instance_type: literal_type("m5zn.metal"),
            seed_tags,
            default_page_size: 1000,
        }
    }
}

/// An instance type from a literal in this file.
#[allow(
    clippy::expect_used,
    reason = "only called with literals that satisfy the rule"
)]
fn literal_type(text: &str) -> InstanceType {
    InstanceType::parse(text).expect("a valid instance type literal")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_should_be_valid_and_offer_a_cml_image() {
        let config = Ec2SimConfig::default();
        config.validate().unwrap();
        assert!(
            config
                .images
                .iter()
                .any(|i| ccm_cloud::glob_match("cml-controller-2.9*", &i.name))
        );
        assert_eq!(config.images.len(), 4);
        let newest_match = config
            .images
            .iter()
            .filter(|i| ccm_cloud::glob_match("cml-controller-2.9*", &i.name))
            .max_by_key(|i| i.creation_date)
            .unwrap();
        assert_eq!(
            newest_match.owner_id.as_deref(),
            Some(SQUATTER_ACCOUNT),
            "the newest match is the squatter"
        );
    }

    #[test]
    fn pools_off_loopback_should_be_rejected_naming_the_key() {
        let config = Ec2SimConfig {
            ip_pool: vec![Ipv4Addr::new(10, 0, 0, 1)],
            ..Ec2SimConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("ip_pool"), "{err}");
        let config = Ec2SimConfig {
            ip_pool: Ec2SimConfig::loopback_pool(Ipv4Addr::new(127, 0, 0, 1), 2),
            seed_instances: 3,
            ..Ec2SimConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("seed_instances"), "{err}");
    }

    #[test]
    fn config_should_parse_humantime_durations_and_reject_unknown_keys() {
        let config: Ec2SimConfig = serde_json::from_str(
            r#"{"regions":["us-east-1"],"pending_delay":"3s","seed_instances":2}"#,
        )
        .unwrap();
        assert_eq!(config.pending_delay, Duration::from_secs(3));
        assert_eq!(config.seed_instances, 2);
        assert!(serde_json::from_str::<Ec2SimConfig>(r#"{"nope":1}"#).is_err());
    }
}
