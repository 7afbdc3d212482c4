//! Engine settings that come from the configuration file (runtime settings — intervals,
//! switches, idle policy — live in the database; see `ccm_domain::RuntimeSettings`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Defaults for provisioning new workers (`[provisioning]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvisioningConfig {
    /// Region for new workers when a request names none.
    pub region: Option<String>,
    /// Instance type for new workers.
    pub instance_type: String,
    /// The instance types a new worker may have; empty means `instance_type` only. Must
    /// include `instance_type`.
    pub allowed_instance_types: Vec<String>,
    /// AMI id for new workers (wins over `ami_name_pattern`).
    pub ami_id: Option<String>,
    /// Name pattern (`*` wildcards) of the CML image; the newest match of `ami_owners` is used.
    pub ami_name_pattern: Option<String>,
    /// Whose images new workers may be launched from: account ids, `self` (this account),
    /// `amazon`, `aws-marketplace`. Name lookups only search these owners, and an AMI id of
    /// another owner is refused: a public image anyone can publish under a matching name
    /// never receives the fleet's CML password. At least one.
    pub ami_owners: Vec<String>,
    /// Most workers that may exist at once (every worker not terminated or failed, imported
    /// ones included); a create beyond it is refused (409). Unset: no cap.
    pub max_workers: Option<u32>,
    /// Subnet.
    pub subnet_id: Option<String>,
    /// Security groups.
    pub security_group_ids: Vec<String>,
    /// EC2 key pair.
    pub key_name: Option<String>,
    /// Detailed (1-minute) monitoring from launch.
    pub detailed_monitoring: bool,
    /// Tags added to every new instance.
    pub tags: BTreeMap<String, String>,
}

impl ProvisioningConfig {
    /// Whether a new worker may have `instance_type` (`allowed_instance_types`, else
    /// `instance_type` only).
    pub fn allows_type(&self, instance_type: &str) -> bool {
        if self.allowed_instance_types.is_empty() {
            self.instance_type == instance_type
        } else {
            self.allowed_instance_types
                .iter()
                .any(|t| t == instance_type)
        }
    }

    /// The instance types a new worker may have.
    pub fn allowed_types(&self) -> Vec<String> {
        if self.allowed_instance_types.is_empty() {
            vec![self.instance_type.clone()]
        } else {
            self.allowed_instance_types.clone()
        }
    }
}

impl Default for ProvisioningConfig {
    fn default() -> Self {
        Self {
            region: None,
            instance_type: "m5zn.metal".into(),
            allowed_instance_types: Vec::new(),
            ami_id: None,
            ami_name_pattern: Some("cml-controller-2.9*".into()),
            ami_owners: vec!["self".into()],
            max_workers: None,
            subnet_id: None,
            security_group_ids: Vec::new(),
            key_name: None,
            detailed_monitoring: true,
            tags: BTreeMap::from([("ccm:managed".to_owned(), "true".to_owned())]),
        }
    }
}

/// What "import all matches" and the periodic auto-import look for (`[import]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportConfig {
    /// Regions to search (all configured regions when empty).
    pub regions: Vec<String>,
    /// Instances launched from images whose name matches this pattern (and whose owner is
    /// one of `ami_owners`).
    pub ami_name_pattern: Option<String>,
    /// Whose images `ami_name_pattern` (and an import by name pattern) finds: account ids,
    /// `self`, `amazon`, `aws-marketplace`. At least one.
    pub ami_owners: Vec<String>,
    /// And/or instances carrying this tag (`key=value`).
    pub tag: Option<String>,
}

impl Default for ImportConfig {
    fn default() -> Self {
        Self {
            regions: Vec::new(),
            ami_name_pattern: Some("cml-controller-*".into()),
            ami_owners: vec!["self".into()],
            tag: None,
        }
    }
}

/// Checks an owner list: at least one, each an AWS account id (12 digits), `self`, `amazon` or
/// `aws-marketplace`.
fn check_owners(key: &str, owners: &[String]) -> Result<(), String> {
    if owners.is_empty() {
        return Err(format!(
            "{key}: list at least one owner (an account id, self, amazon or aws-marketplace); \
             no owner would trust every public image"
        ));
    }
    for owner in owners {
        let account = owner.len() == 12 && owner.bytes().all(|b| b.is_ascii_digit());
        if !account && !matches!(owner.as_str(), "self" | "amazon" | "aws-marketplace") {
            return Err(format!(
                "{key}: {owner:?} is not an account id (12 digits), self, amazon or aws-marketplace"
            ));
        }
    }
    Ok(())
}

/// Licence registration (`[licence]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LicenceConfig {
    /// How often `/licensing` is polled while a registration is in progress.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// When a registration that has not settled counts as failed.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for LicenceConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(5),
            timeout: Duration::from_secs(300),
        }
    }
}

/// Hourly prices for the savings report (`[pricing]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PricingConfig {
    /// Currency of the prices.
    pub currency: String,
    /// On-demand price per hour by instance type, e.g. `"m5zn.metal" = 3.96`.
    pub hourly: BTreeMap<String, f64>,
}

impl Default for PricingConfig {
    fn default() -> Self {
        Self {
            currency: "USD".into(),
            hourly: BTreeMap::new(),
        }
    }
}

/// Everything the engine takes from the configuration file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EngineConfig {
    /// Provisioning defaults.
    pub provisioning: ProvisioningConfig,
    /// Import filter.
    pub import: ImportConfig,
    /// Licence registration.
    pub licence: LicenceConfig,
    /// Prices.
    pub pricing: PricingConfig,
    /// Worker writes are batched: at most this many per transaction (default 100: a batch's
    /// events are published when it commits, so its size bounds how long they wait; 500 made
    /// event delivery's p50 5× and its p99 2× slower under load — BENCHMARKS.md, "API under
    /// load", round 5)…
    pub write_batch: usize,
    /// …and flushed at least this often.
    pub write_interval: Duration,
    /// Mutations the writer's queue holds; submitting waits while it is full (back-pressure).
    pub write_queue: usize,
    /// How long shutdown waits for in-flight work.
    pub shutdown_grace: Duration,
    /// CloudEvents `source` of engine events.
    pub event_source: String,
    /// How long events stay in the log.
    pub event_retention: Duration,
}

impl EngineConfig {
    /// Sane defaults for the internal knobs (batching, grace), with the given sections.
    pub fn new(
        provisioning: ProvisioningConfig,
        import: ImportConfig,
        licence: LicenceConfig,
        pricing: PricingConfig,
    ) -> Self {
        Self {
            provisioning,
            import,
            licence,
            pricing,
            write_batch: 100,
            write_interval: Duration::from_millis(100),
            write_queue: 20_000,
            shutdown_grace: Duration::from_secs(30),
            event_source: "/ccm/engine".into(),
            event_retention: Duration::from_secs(30 * 24 * 3600),
        }
    }

    /// Checks the values; each message starts with the dotted key.
    pub fn validate(&self) -> Result<(), String> {
        let p = &self.provisioning;
        ccm_domain::InstanceType::parse(&p.instance_type)
            .map_err(|e| format!("provisioning.instance_type: {e}"))?;
        if let Some(r) = &p.region {
            ccm_domain::Region::parse(r).map_err(|e| format!("provisioning.region: {e}"))?;
        }
        for t in &p.allowed_instance_types {
            ccm_domain::InstanceType::parse(t)
                .map_err(|e| format!("provisioning.allowed_instance_types: {e}"))?;
        }
        if !p.allows_type(&p.instance_type) {
            return Err(format!(
                "provisioning.allowed_instance_types: must include provisioning.instance_type ({})",
                p.instance_type
            ));
        }
        if let Some(a) = &p.ami_id {
            ccm_domain::AmiId::parse(a).map_err(|e| format!("provisioning.ami_id: {e}"))?;
        }
        check_owners("provisioning.ami_owners", &p.ami_owners)?;
        check_owners("import.ami_owners", &self.import.ami_owners)?;
        if p.max_workers == Some(0) {
            return Err(
                "provisioning.max_workers: must be at least 1 (leave it out for no cap)".into(),
            );
        }
        for r in &self.import.regions {
            ccm_domain::Region::parse(r).map_err(|e| format!("import.regions: {e}"))?;
        }
        if let Some(tag) = &self.import.tag
            && !tag.contains('=')
        {
            return Err(format!("import.tag: {tag:?} must be key=value"));
        }
        if self.licence.poll_interval.is_zero() || self.licence.timeout < self.licence.poll_interval
        {
            return Err(
                "licence.timeout: must be at least one poll_interval, and poll_interval above 0"
                    .into(),
            );
        }
        for (ty, price) in &self.pricing.hourly {
            if !price.is_finite() || *price < 0.0 {
                return Err(format!(
                    "pricing.hourly.{ty}: must be a non-negative number"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EngineConfig {
        EngineConfig::new(
            ProvisioningConfig::default(),
            ImportConfig::default(),
            LicenceConfig::default(),
            PricingConfig::default(),
        )
    }

    #[test]
    fn the_defaults_should_trust_only_this_accounts_images_and_the_configured_type() {
        let c = config();
        c.validate().unwrap();
        assert_eq!(c.provisioning.ami_owners, ["self"]);
        assert_eq!(c.import.ami_owners, ["self"]);
        assert!(c.provisioning.allows_type("m5zn.metal"));
        assert!(!c.provisioning.allows_type("p5.48xlarge"));
        assert_eq!(c.provisioning.allowed_types(), ["m5zn.metal"]);
        assert_eq!(c.provisioning.max_workers, None);
    }

    /// A change to the configuration and the start of the error it must cause.
    type Case = (Box<dyn Fn(&mut EngineConfig)>, &'static str);

    #[test]
    fn guardrail_keys_should_be_validated_naming_the_key() {
        let cases: Vec<Case> = vec![
            (
                Box::new(|c| c.provisioning.ami_owners.clear()),
                "provisioning.ami_owners: list at least one owner",
            ),
            (
                Box::new(|c| c.import.ami_owners = vec!["anyone".into()]),
                "import.ami_owners: \"anyone\" is not an account id",
            ),
            (
                Box::new(|c| c.provisioning.ami_owners = vec!["12345".into()]),
                "provisioning.ami_owners",
            ),
            (
                Box::new(|c| c.provisioning.allowed_instance_types = vec!["c5.metal".into()]),
                "provisioning.allowed_instance_types: must include provisioning.instance_type",
            ),
            (
                Box::new(|c| c.provisioning.allowed_instance_types = vec!["not a type".into()]),
                "provisioning.allowed_instance_types:",
            ),
            (
                Box::new(|c| c.provisioning.max_workers = Some(0)),
                "provisioning.max_workers",
            ),
        ];
        for (change, wanted) in cases {
            let mut c = config();
            change(&mut c);
            let err = c.validate().unwrap_err();
            assert!(
                err.starts_with(wanted),
                "{err} does not start with {wanted}"
            );
        }
        let mut c = config();
        c.provisioning.ami_owners = vec![
            "self".into(),
            "amazon".into(),
            "aws-marketplace".into(),
            "123456789012".into(),
        ];
        c.provisioning.allowed_instance_types = vec!["m5zn.metal".into(), "c5.metal".into()];
        c.provisioning.max_workers = Some(10);
        c.validate().unwrap();
        assert!(c.provisioning.allows_type("c5.metal"));
    }
}
