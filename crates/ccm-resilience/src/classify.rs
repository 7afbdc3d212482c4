//! How an operation's error is judged: retried or not, counted by the breaker or not.
//!
//! The protocol crates implement [`Classify`] for their error types; this crate only reads
//! the verdict.

use std::time::Duration;

/// The error classification the protocol crates implement for their error types.
pub trait Classify {
    /// What kind of failure this is.
    fn class(&self) -> ErrorClass;

    /// How long the server asked us to wait (`Retry-After`), if it did. A retry waits at least
    /// this long, never less.
    fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// A short description of the error for breaker events and logs (e.g. `"HTTP 503"`).
    /// Must not contain secrets. Defaults to the class name.
    fn reason(&self) -> Option<String> {
        None
    }
}

/// The verdict on one error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Transient (connect error, timeout, 429/502/503/504): retried if the call is idempotent,
    /// counts as a breaker failure.
    Transient,
    /// A real failure that retrying will not fix (500, decode error): counts for the breaker.
    Failure,
    /// Not a failure of the endpoint (404 "not supported", 403, 400, 409): never retried,
    /// never counted by the breaker (it resets the consecutive-failure count like a success).
    Benign,
}

impl ErrorClass {
    /// Whether the breaker counts this as a failure of the endpoint.
    pub const fn is_failure(self) -> bool {
        matches!(self, Self::Transient | Self::Failure)
    }

    /// Whether a retry may fix it (for idempotent calls).
    pub const fn is_retryable(self) -> bool {
        matches!(self, Self::Transient)
    }

    /// Lowercase name, used in logs and event reasons.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient error",
            Self::Failure => "failure",
            Self::Benign => "benign error",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
