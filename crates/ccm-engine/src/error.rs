//! The engine's errors.
//!
//! - [`EngineError`]: what a command or query fails with, shaped for API status codes.
//! - [`UpstreamError`]: a failure of the cloud or of a CML controller, **classified once,
//!   here** ([`UpstreamKind`], a retry-after, the domain [`Reason`] where a worker's call
//!   failed). The API maps only [`EngineError`]; it never sees a `CmlError` or `CloudError`.
//! - [`JobError`]: why a background job's run or a worker's poll failed (the job board shows
//!   its text, causes included).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ccm_cloud::CloudError;
use ccm_cml::CmlError;
use ccm_domain::worker::CommandError;
use ccm_domain::{CmlCall, Reason, Region};
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
    /// A configured guardrail refused the request (HTTP 403, 409 or 422 by
    /// [`RefusalKind`]); the refusal names its rule.
    #[error("{}", .0.message)]
    Refused(PolicyRefusal),
    /// The cloud or a CML controller refused or failed, classified by [`UpstreamError::kind`].
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
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
            StoreError::AtCap { cap, live } => PolicyRefusal::new(
                RefusalKind::Limit,
                "provisioning.max_workers",
                format!(
                    "the fleet has {live} workers (not terminated or failed) and may have at \
                     most {cap} ([provisioning] max_workers); terminate one first"
                ),
            )
            .into(),
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

impl From<CloudError> for EngineError {
    fn from(err: CloudError) -> Self {
        Self::Upstream(UpstreamError::from_cloud(err))
    }
}

impl From<CmlError> for EngineError {
    fn from(err: CmlError) -> Self {
        Self::Upstream(UpstreamError::from_cml(err, None))
    }
}

impl From<JobError> for EngineError {
    fn from(err: JobError) -> Self {
        Self::Upstream(UpstreamError::from_job(Arc::new(err)))
    }
}

impl EngineError {
    /// An invalid field.
    pub fn invalid(field: &str, message: impl fmt::Display) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            message: message.to_string(),
        }
    }

    /// A CML error on a command about `what` `id` (a lab, a licence) made by `call`: CML's
    /// 404 means that object does not exist, its 400 (or an argument ccm could not send) that
    /// the request was invalid, its 409 a conflict; anything else is an upstream failure.
    pub(crate) fn from_cml_command(
        err: CmlError,
        call: CmlCall,
        what: &'static str,
        id: &str,
    ) -> Self {
        match &err {
            CmlError::NotFound { .. } => Self::NotFound {
                what,
                id: id.to_owned(),
            },
            CmlError::InvalidArgument { .. } | CmlError::Http { status: 400, .. } => {
                Self::invalid(what, err)
            }
            CmlError::Http { status: 409, .. } => Self::Conflict(err.to_string()),
            _ => Self::Upstream(UpstreamError::from_cml(err, Some(call))),
        }
    }
}

/// What a guardrail refusal is about; each kind has one HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// The caller's role does not allow it; a higher role may (403).
    Role,
    /// A configured limit is reached (409).
    Limit,
    /// The value asked for is not allowed by the configuration, for anyone (422).
    NotAllowed,
}

/// A request refused by a configured guardrail: which rule (named by its configuration key),
/// which request field, and a message for a person saying what would be allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRefusal {
    /// The kind (decides the HTTP status).
    pub kind: RefusalKind,
    /// The rule, as its configuration key (`provisioning.allowed_instance_types`).
    pub rule: &'static str,
    /// The request field concerned, when one is (`instance_type`, `ami_id`).
    pub field: Option<&'static str>,
    /// What was refused, by which rule, and what would be allowed.
    pub message: String,
}

impl PolicyRefusal {
    /// A refusal of `kind` by `rule`.
    pub fn new(kind: RefusalKind, rule: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            rule,
            field: None,
            message: message.into(),
        }
    }

    /// Names the request field concerned.
    pub fn field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }
}

impl From<PolicyRefusal> for EngineError {
    fn from(refusal: PolicyRefusal) -> Self {
        Self::Refused(refusal)
    }
}

/// What kind of upstream failure, decided once, in the engine. Each kind has one HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamKind {
    /// The object does not exist upstream (404).
    NotFound,
    /// Upstream rejected a parameter; retrying the same request cannot help (422).
    Invalid,
    /// Upstream refused because of its state (an instance's state, a quota) (409).
    Conflict,
    /// Upstream asked ccm to slow down (503 with a retry-after).
    Throttled,
    /// Upstream cannot be reached or ccm's own breaker, bulkhead or budget refused the call
    /// (503, with a retry-after when one is known).
    Unavailable,
    /// Upstream did not answer in time (504).
    Timeout,
    /// Upstream does not implement the operation (501).
    NotImplemented,
    /// Upstream failed in any other way (502).
    BadGateway,
}

/// A failure of the cloud or of a CML controller, classified. Displays as the original error.
#[derive(Debug)]
pub struct UpstreamError(Box<Repr>);

#[derive(Debug)]
struct Repr {
    kind: UpstreamKind,
    retry_after: Option<Duration>,
    reason: Option<Reason>,
    cause: Cause,
}

#[derive(Debug, thiserror::Error)]
enum Cause {
    #[error(transparent)]
    Cml(CmlError),
    #[error(transparent)]
    Cloud(CloudError),
    #[error(transparent)]
    Job(Arc<JobError>),
    #[error("{0}")]
    Message(String),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.cause.fmt(f)
    }
}

impl std::error::Error for UpstreamError {
    // Transparent: the original error's text is this error's text, its cause this one's.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0.cause)
    }
}

impl UpstreamError {
    /// A failure of `kind` described by `message` (for failures that have no typed cause).
    pub fn new(kind: UpstreamKind, message: impl Into<String>) -> Self {
        Self(Box::new(Repr {
            kind,
            retry_after: None,
            reason: None,
            cause: Cause::Message(message.into()),
        }))
    }

    /// An upstream failure of no more specific kind (502).
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(UpstreamKind::BadGateway, message)
    }

    /// With a retry-after.
    #[must_use]
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.0.retry_after = Some(after);
        self
    }

    /// Classifies a cloud provider error.
    pub fn from_cloud(err: CloudError) -> Self {
        let (kind, retry_after) = match &err {
            CloudError::Throttled { retry_after, .. } => (
                UpstreamKind::Throttled,
                Some(retry_after.unwrap_or(Duration::from_secs(5))),
            ),
            CloudError::Unavailable { retry_in, .. } => (UpstreamKind::Unavailable, *retry_in),
            CloudError::NotFound { .. }
            | CloudError::IncorrectState { .. }
            | CloudError::QuotaExceeded { .. } => (UpstreamKind::Conflict, None),
            CloudError::InvalidParameter { .. } => (UpstreamKind::Invalid, None),
            CloudError::Unsupported { .. } => (UpstreamKind::NotImplemented, None),
            CloudError::Auth { .. } | CloudError::Other { .. } => (UpstreamKind::BadGateway, None),
        };
        Self(Box::new(Repr {
            kind,
            retry_after,
            reason: None,
            cause: Cause::Cloud(err),
        }))
    }

    /// Classifies a CML error; `call` (when the call is one the worker's status tracks)
    /// gives the domain reason.
    pub fn from_cml(err: CmlError, call: Option<CmlCall>) -> Self {
        let (kind, retry_after) = match &err {
            CmlError::CircuitOpen { retry_in, .. } => (
                UpstreamKind::Unavailable,
                Some((*retry_in).max(Duration::from_secs(1))),
            ),
            CmlError::BulkheadFull { .. } | CmlError::BudgetExhausted { .. } => {
                (UpstreamKind::Unavailable, Some(Duration::from_secs(5)))
            }
            CmlError::Http {
                status: 429,
                retry_after,
                ..
            } => (UpstreamKind::Throttled, *retry_after),
            CmlError::Http {
                status: 503,
                retry_after,
                ..
            } => (UpstreamKind::Unavailable, *retry_after),
            CmlError::Timeout { .. } | CmlError::DeadlineExceeded { .. } => {
                (UpstreamKind::Timeout, None)
            }
            CmlError::NotFound { .. } => (UpstreamKind::NotFound, None),
            CmlError::InvalidArgument { .. } => (UpstreamKind::Invalid, None),
            _ => (UpstreamKind::BadGateway, None),
        };
        Self(Box::new(Repr {
            kind,
            retry_after,
            reason: call.map(|c| err.reason(c)),
            cause: Cause::Cml(err),
        }))
    }

    /// A job that failed while a command waited for it (a triggered run, a refresh): 502.
    pub(crate) fn from_job(err: Arc<JobError>) -> Self {
        Self(Box::new(Repr {
            kind: UpstreamKind::BadGateway,
            retry_after: None,
            reason: None,
            cause: Cause::Job(err),
        }))
    }

    /// What kind of failure.
    pub fn kind(&self) -> UpstreamKind {
        self.0.kind
    }

    /// When trying again makes sense, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.0.retry_after
    }

    /// The domain reason, when a call the worker's status tracks failed.
    pub fn reason(&self) -> Option<&Reason> {
        self.0.reason.as_ref()
    }
}

/// Why a job run or a worker's poll failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No call of a CML sync got an answer: the worker is unreachable (its status says why).
    #[error("nothing answered")]
    Unanswered,
    /// A CML call failed.
    #[error("cml {call} failed")]
    Cml {
        /// The call.
        call: CmlCall,
        /// What the CML client said.
        #[source]
        source: CmlError,
    },
    /// Some labs could not be read; the others were stored and no record was removed.
    #[error("{unread} of {listed} labs could not be read")]
    LabsIncomplete {
        /// Labs whose details failed.
        unread: usize,
        /// Labs listed.
        listed: usize,
    },
    /// The cloud provider failed for one region.
    #[error("{region}")]
    Cloud {
        /// The region.
        region: Region,
        /// What the provider said.
        #[source]
        source: CloudError,
    },
    /// Several regions failed (each with its own cause, in the text).
    #[error("{}", join(.0))]
    Regions(Vec<JobError>),
    /// The database failed.
    #[error("database")]
    Store(#[source] StoreError),
    /// The batched writer could not save the result.
    #[error("could not save the result: {0}")]
    Write(String),
    /// This process no longer holds the grant the job ran under (another replica took over);
    /// the result was dropped.
    #[error("the grant for this work is no longer held")]
    NotHeld,
    /// A command the job runs (the idle pause, the auto-import) failed.
    #[error("{action}")]
    Command {
        /// `idle pause`, `auto-import`, `read worker`.
        action: &'static str,
        /// Why.
        #[source]
        source: Box<EngineError>,
    },
}

impl JobError {
    /// A store failure; a write refused by its fencing token (the lease moved to another
    /// replica) is [`Self::NotHeld`] and counted in `ccm_fencing_refusals_total`.
    pub(crate) fn from_store(err: StoreError) -> Self {
        match err {
            StoreError::Fenced { .. } => {
                metrics::counter!(crate::metrics::FENCING_REFUSALS).increment(1);
                Self::NotHeld
            }
            other => Self::Store(other),
        }
    }

    /// A command failure.
    pub(crate) fn command(action: &'static str, err: EngineError) -> Self {
        Self::Command {
            action,
            source: Box::new(err),
        }
    }

    /// Joins per-region failures: `Ok` when there are none, the one error when there is one.
    pub(crate) fn regions(mut errors: Vec<JobError>) -> Result<(), JobError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Self::Regions(errors)),
        }
    }
}

/// The error and its causes on one line (`a: b: c`), as the job board shows it.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let more = s.to_string();
        // Transparent wrappers repeat their cause's text; say it once.
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

fn join(errors: &[JobError]) -> String {
    errors
        .iter()
        .map(|e| chain(e))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloud(err: CloudError) -> UpstreamError {
        UpstreamError::from_cloud(err)
    }

    #[test]
    fn cloud_errors_should_be_classified_once_with_their_retry_hints() {
        let throttled = cloud(CloudError::Throttled {
            code: "RequestLimitExceeded".into(),
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(7)),
        });
        assert_eq!(throttled.kind(), UpstreamKind::Throttled);
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(7)));
        let unhinted = cloud(CloudError::Throttled {
            code: "Throttling".into(),
            message: "m".into(),
            retry_after: None,
        });
        assert_eq!(unhinted.retry_after(), Some(Duration::from_secs(5)));
        let state = cloud(CloudError::IncorrectState {
            code: "IncorrectInstanceState".into(),
            message: "m".into(),
        });
        assert_eq!(state.kind(), UpstreamKind::Conflict);
        let invalid = cloud(CloudError::InvalidParameter {
            code: "InvalidAMIID.NotFound".into(),
            message: "m".into(),
        });
        assert_eq!(invalid.kind(), UpstreamKind::Invalid);
        let auth = cloud(CloudError::Auth {
            code: "AuthFailure".into(),
            message: "m".into(),
        });
        assert_eq!(auth.kind(), UpstreamKind::BadGateway);
    }

    #[test]
    fn an_upstream_error_should_read_as_the_original() {
        let original = CloudError::Unavailable {
            message: "connection refused".into(),
            retry_in: Some(Duration::from_secs(3)),
        };
        let text = original.to_string();
        let err = EngineError::from(original);
        assert_eq!(err.to_string(), text);
        let EngineError::Upstream(u) = err else {
            panic!("not classified as upstream: {err:?}");
        };
        assert_eq!(u.kind(), UpstreamKind::Unavailable);
        assert_eq!(u.retry_after(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn job_errors_should_show_their_causes_on_the_board() {
        let region = Region::parse("eu-west-1").expect("region");
        let err = JobError::Cloud {
            region: region.clone(),
            source: CloudError::Unavailable {
                message: "timed out".into(),
                retry_in: None,
            },
        };
        let text = chain(&err);
        assert!(
            text.starts_with("eu-west-1: cloud API unavailable: timed out"),
            "{text}"
        );
        let two = JobError::regions(vec![
            err,
            JobError::Cloud {
                region,
                source: CloudError::Other {
                    code: "X".into(),
                    message: "m".into(),
                },
            },
        ])
        .expect_err("two failures");
        assert_eq!(
            chain(&two).matches("eu-west-1: ").count(),
            2,
            "{}",
            chain(&two)
        );
    }
}
