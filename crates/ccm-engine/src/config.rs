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
    /// AMI id for new workers (wins over `ami_name_pattern`).
    pub ami_id: Option<String>,
    /// Name pattern (`*` wildcards) of the CML image; the newest match is used.
    pub ami_name_pattern: Option<String>,
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

impl Default for ProvisioningConfig {
    fn default() -> Self {
        Self {
            region: None,
            instance_type: "m5zn.metal".into(),
            ami_id: None,
            ami_name_pattern: Some("cml-controller-2.9*".into()),
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
    /// Instances launched from images whose name matches this pattern.
    pub ami_name_pattern: Option<String>,
    /// And/or instances carrying this tag (`key=value`).
    pub tag: Option<String>,
}

impl Default for ImportConfig {
    fn default() -> Self {
        Self {
            regions: Vec::new(),
            ami_name_pattern: Some("cml-controller-*".into()),
            tag: None,
        }
    }
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
    /// Worker writes are batched: at most this many per transaction…
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
            write_batch: 500,
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
        if let Some(a) = &p.ami_id {
            ccm_domain::AmiId::parse(a).map_err(|e| format!("provisioning.ami_id: {e}"))?;
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
