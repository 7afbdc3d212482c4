//! The licence of a worker's CML, as a value object.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

crate::open_enum!(
    /// Smart Licensing registration status. Not an enum in the CML spec: unknown values are kept.
    RegistrationStatus {
        /// Not registered.
        NotRegistered = "NOT_REGISTERED",
        /// A registration is under way.
        InProgress = "IN_PROGRESS",
        /// Registered.
        Completed = "COMPLETED",
        /// Registration failed.
        Failed = "FAILED",
        /// CML is retrying a failed registration.
        RetryInProgress = "RETRY_IN_PROGRESS",
    }
);

crate::open_enum!(
    /// Smart Licensing authorisation status.
    AuthorizationStatus {
        /// Evaluation mode.
        Eval = "EVAL",
        /// Initialising.
        Init = "INIT",
        /// Authorised.
        InCompliance = "IN_COMPLIANCE",
        /// Over the licensed usage.
        OutOfCompliance = "OUT_OF_COMPLIANCE",
        /// Evaluation period over.
        EvalExpired = "EVAL_EXPIRED",
        /// Authorisation expired.
        AuthorizationExpired = "AUTHORIZATION_EXPIRED",
    }
);

impl RegistrationStatus {
    /// Whether an asynchronous registration has ended (either way).
    pub fn is_settled(&self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::NotRegistered)
    }
}

/// A worker's licence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Licence {
    /// Registration status.
    pub registration: RegistrationStatus,
    /// Authorisation status.
    pub authorization: Option<AuthorizationStatus>,
    /// Smart account name.
    pub smart_account: Option<String>,
    /// Virtual account name.
    pub virtual_account: Option<String>,
    /// When the registration expires.
    pub expires: Option<DateTime<Utc>>,
    /// The active product licence (e.g. `CML_Enterprise`).
    pub product: Option<String>,
    /// Enterprise edition.
    pub is_enterprise: Option<bool>,
    /// Why the last registration attempt failed, as CML says it (tokens are never kept).
    pub last_failure: Option<String>,
    /// Licensed features in use.
    pub features: Vec<LicenceFeature>,
}

/// One licensed feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenceFeature {
    /// Feature id.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// Units in use.
    pub in_use: Option<i64>,
    /// Feature status.
    pub status: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_statuses_should_keep_unknown_values() {
        assert_eq!(
            RegistrationStatus::from("COMPLETED"),
            RegistrationStatus::Completed
        );
        assert_eq!(RegistrationStatus::from("PENDING_X").as_str(), "PENDING_X");
        assert!(RegistrationStatus::Failed.is_settled());
        assert!(!RegistrationStatus::InProgress.is_settled());
        assert!(!RegistrationStatus::from("RETRY_IN_PROGRESS").is_settled());
    }
}
