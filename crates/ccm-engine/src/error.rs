//! [`EngineError`]: what an engine command can fail with, shaped for API status codes.

use ccm_cloud::CloudError;
use ccm_domain::worker::CommandError;
use ccm_store::StoreError;

/// Why an engine command failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such worker, lab, … (HTTP 404).
    #[error("{what} {id} not found")]
    NotFound {
        /// `worker`, `lab`.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The request does not fit the current state (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed (HTTP 400/422).
    #[error("{field}: {message}")]
    Invalid {
        /// The offending field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A dependency refused or failed (HTTP 502/503): the cloud, a CML instance.
    #[error("{0}")]
    Upstream(String),
    /// The cloud provider failed.
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// The CML instance failed.
    #[error(transparent)]
    Cml(#[from] ccm_cml::CmlError),
    /// The database failed (HTTP 500/503).
    #[error(transparent)]
    Store(StoreError),
    /// The engine is shutting down.
    #[error("ccm is shutting down")]
    ShuttingDown,
}

impl From<StoreError> for EngineError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { what, id } => Self::NotFound { what, id },
            StoreError::Duplicate {
                instance_id,
                existing,
            } => Self::Conflict(format!(
                "instance {instance_id} is already worker {existing}"
            )),
            StoreError::SettingsConflict { .. } => Self::Conflict(err.to_string()),
            other => Self::Store(other),
        }
    }
}

impl From<ccm_domain::InvalidTransition> for EngineError {
    fn from(err: ccm_domain::InvalidTransition) -> Self {
        Self::Conflict(err.to_string())
    }
}

impl From<CommandError> for EngineError {
    fn from(err: CommandError) -> Self {
        Self::Conflict(err.to_string())
    }
}

impl<E: Into<EngineError>> From<ccm_store::UpdateError<E>> for EngineError {
    fn from(err: ccm_store::UpdateError<E>) -> Self {
        match err {
            ccm_store::UpdateError::Store(s) => s.into(),
            ccm_store::UpdateError::Rejected(e) => e.into(),
        }
    }
}

impl EngineError {
    /// An invalid field.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            message: message.to_string(),
        }
    }
}
