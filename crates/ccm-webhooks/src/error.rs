//! Errors: why one delivery attempt failed ([`DeliveryError`], classified for the breaker),
//! and why the webhooks could not start ([`StartError`]).

use std::time::Duration;

use ccm_resilience::{Classify, ErrorClass};

/// Why one attempt failed. Never holds the URL's path or query, nor the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The receiver answered, but not 2xx.
    #[error("HTTP {status}{}", detail_suffix(.detail))]
    Status {
        /// The status code.
        status: u16,
        /// The start of the answer's body, printable characters only.
        detail: String,
        /// The receiver's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused or reset, DNS, TLS, refused address.
    #[error("transport: {0}")]
    Transport(String),
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl DeliveryError {
    /// The HTTP status, when the receiver answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Transport(_) => None,
        }
    }

    /// A label for metrics: `http_5xx`, `http_4xx`, `http_3xx` or `transport`.
    pub(crate) fn outcome(&self) -> &'static str {
        match self.status() {
            Some(s) if s >= 500 => "http_5xx",
            Some(s) if s >= 400 => "http_4xx",
            Some(_) => "http_3xx",
            None => "transport",
        }
    }
}

impl Classify for DeliveryError {
    fn class(&self) -> ErrorClass {
        // Every failure counts against the receiver's breaker: a receiver that refuses events
        // (4xx) or redirects (3xx; never followed) is as unusable as one that is down.
        match self.status() {
            Some(408 | 425 | 429) | None => ErrorClass::Transient,
            Some(s) if s >= 500 => ErrorClass::Transient,
            Some(_) => ErrorClass::Failure,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            Self::Transport(_) => None,
        }
    }

    fn reason(&self) -> Option<String> {
        Some(match self.status() {
            Some(s) => format!("HTTP {s}"),
            None => "transport error".to_owned(),
        })
    }
}

/// Why the webhooks could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An entry is invalid.
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
    /// The HTTP client could not be built.
    #[error("webhook {name}: cannot build the HTTP client: {message}")]
    Client {
        /// The webhook.
        name: String,
        /// Why.
        message: String,
    },
}
