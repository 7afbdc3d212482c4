//! `GET /licensing` (CML_API.md §3).

use ccm_domain::licence::{AuthorizationStatus, Licence, LicenceFeature, RegistrationStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::timestamp;

/// `GET /licensing`: the whole Smart Licensing state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LicensingStatus {
    /// The device identity: an object in 2.9, a string in older releases.
    #[serde(default)]
    pub udi: Option<Udi>,
    /// Registration.
    #[serde(default)]
    pub registration: Option<Registration>,
    /// Authorisation.
    #[serde(default)]
    pub authorization: Option<LicensingAuthorization>,
    /// Reservation mode.
    #[serde(default)]
    pub reservation_mode: Option<bool>,
    /// Licensed features.
    #[serde(default)]
    pub features: Option<Vec<LicensingFeature>>,
    /// The active product licence.
    #[serde(default)]
    pub product_license: Option<ProductLicense>,
    /// How CML reaches the licensing service.
    #[serde(default)]
    pub transport: Option<Transport>,
}

/// `licensing.udi`: an object in CML 2.9, a plain string in older releases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Udi {
    /// CML 2.9: host name and product UUID.
    Info(UdiInfo),
    /// Older CML: one string.
    Text(String),
}

/// `licensing.udi` in CML 2.9.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UdiInfo {
    /// Host name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Product UUID.
    #[serde(default)]
    pub product_uuid: Option<String>,
}

/// `licensing.registration`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Registration {
    /// Status (not an enum in the spec; unknown values kept).
    #[serde(default)]
    pub status: Option<RegistrationStatus>,
    /// Smart account.
    #[serde(default)]
    pub smart_account: Option<String>,
    /// Virtual account.
    #[serde(default)]
    pub virtual_account: Option<String>,
    /// The last registration attempt.
    #[serde(default)]
    pub register_time: Option<LicensingTimeInfo>,
    /// The next renewal.
    #[serde(default)]
    pub renew_time: Option<LicensingTimeInfo>,
    /// When the registration expires.
    #[serde(default, deserialize_with = "timestamp::lenient")]
    pub expires: Option<DateTime<Utc>>,
}

/// `licensing.authorization`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LicensingAuthorization {
    /// Status (not an enum in the spec; unknown values kept).
    #[serde(default)]
    pub status: Option<AuthorizationStatus>,
    /// The last or next renewal.
    #[serde(default)]
    pub renew_time: Option<LicensingTimeInfo>,
    /// When the authorisation expires.
    #[serde(default, deserialize_with = "timestamp::lenient")]
    pub expires: Option<DateTime<Utc>>,
}

/// `LicensingTimeInfo`: one scheduled or attempted licensing operation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LicensingTimeInfo {
    /// When it succeeded.
    #[serde(default, deserialize_with = "timestamp::lenient")]
    pub succeeded: Option<DateTime<Utc>>,
    /// When it was attempted.
    #[serde(default, deserialize_with = "timestamp::lenient")]
    pub attempted: Option<DateTime<Utc>>,
    /// When it is scheduled.
    #[serde(default, deserialize_with = "timestamp::lenient")]
    pub scheduled: Option<DateTime<Utc>>,
    /// Status text, e.g. `SUCCEEDED`.
    #[serde(default)]
    pub status: Option<String>,
    /// Failure text. May quote the rejected licence token: scrub it before showing it
    /// (the conversion to [`Licence`] does).
    #[serde(default)]
    pub failure: Option<String>,
    /// `SUCCESS` or `FAILED`.
    #[serde(default)]
    pub success: Option<String>,
}

/// One licensed feature.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LicensingFeature {
    /// Feature id (`regid.2019-10.com.cisco.CML_NODE_COUNT,1.0_<uuid>`).
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Version.
    #[serde(default)]
    pub version: Option<String>,
    /// Units in use.
    #[serde(default)]
    pub in_use: Option<i64>,
    /// Status.
    #[serde(default)]
    pub status: Option<String>,
    /// Minimum units.
    #[serde(default)]
    pub min: Option<i64>,
    /// Maximum units.
    #[serde(default)]
    pub max: Option<i64>,
    /// Earliest end date.
    #[serde(
        default,
        rename = "minEndDate",
        deserialize_with = "timestamp::lenient"
    )]
    pub min_end_date: Option<DateTime<Utc>>,
    /// Latest end date.
    #[serde(
        default,
        rename = "maxEndDate",
        deserialize_with = "timestamp::lenient"
    )]
    pub max_end_date: Option<DateTime<Utc>>,
}

/// `licensing.product_license`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProductLicense {
    /// The active product licence (`CML_Enterprise`, `CML_Personal`, …).
    #[serde(default)]
    pub active: Option<String>,
    /// Enterprise edition.
    #[serde(default)]
    pub is_enterprise: Option<bool>,
}

/// `licensing.transport`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Transport {
    /// The proxy.
    #[serde(default)]
    pub proxy: Option<TransportProxy>,
    /// The Smart Software Manager satellite URL.
    #[serde(default)]
    pub ssms: Option<String>,
    /// The default SSMS URL.
    #[serde(default)]
    pub default_ssms: Option<String>,
}

/// `licensing.transport.proxy`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TransportProxy {
    /// Proxy host.
    #[serde(default)]
    pub server: Option<String>,
    /// Proxy port.
    #[serde(default)]
    pub port: Option<u16>,
}

impl LicensingStatus {
    /// The registration status, if CML sent one.
    pub fn registration_status(&self) -> Option<&RegistrationStatus> {
        self.registration.as_ref()?.status.as_ref()
    }

    /// The authorisation status, if CML sent one.
    pub fn authorization_status(&self) -> Option<&AuthorizationStatus> {
        self.authorization.as_ref()?.status.as_ref()
    }
}

impl From<LicensingStatus> for Licence {
    /// A missing registration status becomes `Other("UNKNOWN")` (the domain needs a value);
    /// the failure text is scrubbed of the quoted licence token.
    fn from(l: LicensingStatus) -> Self {
        let registration = l.registration.unwrap_or_default();
        let product = l.product_license.unwrap_or_default();
        let last_failure = registration
            .register_time
            .as_ref()
            .and_then(|t| t.failure.as_deref())
            .map(crate::error::description);
        Self {
            registration: registration
                .status
                .unwrap_or_else(|| RegistrationStatus::Other("UNKNOWN".to_owned())),
            authorization: l.authorization.and_then(|a| a.status),
            smart_account: registration.smart_account,
            virtual_account: registration.virtual_account,
            expires: registration.expires,
            product: product.active,
            is_enterprise: product.is_enterprise,
            last_failure,
            features: l
                .features
                .unwrap_or_default()
                .into_iter()
                .map(|f| LicenceFeature {
                    id: f.id,
                    name: f.name,
                    in_use: f.in_use,
                    status: f.status,
                })
                .collect(),
        }
    }
}
