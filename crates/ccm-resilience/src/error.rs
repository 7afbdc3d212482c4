//! [`CallError`]: why [`Resilience::call`](crate::Resilience::call) gave up.

use std::time::Duration;

/// Why a call through the policy stack failed.
///
/// `E` is the operation's own error. Display and `std::error::Error` are implemented when `E`
/// implements them. `Inner` displays as the operation's error itself; `DeadlineExceeded` and
/// `BudgetExhausted` give the operation's last error as their `source()` (not in their own
/// message, so an error-chain printer shows it once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError<E> {
    /// The operation's own error (after retries, or not retryable).
    Inner(E),
    /// The breaker for `key` is open (or half-open with its probe in flight); the operation
    /// was not attempted. `retry_in` is the time until the breaker lets a probe through (zero
    /// while a probe is running).
    CircuitOpen {
        /// The breaker key.
        key: String,
        /// Time until a probe may be let through.
        retry_in: Duration,
    },
    /// The named bulkhead's queue is full; the operation was not attempted.
    BulkheadFull {
        /// The bulkhead's name.
        name: String,
    },
    /// One attempt exceeded its timeout and no retry was left (or allowed).
    Timeout {
        /// The per-attempt timeout that elapsed.
        after: Duration,
    },
    /// The overall deadline passed, or a wanted retry could not finish before it. `last` is the
    /// last error the operation returned, if any.
    DeadlineExceeded {
        /// Time spent on the call.
        after: Duration,
        /// The last error of the operation, if one attempt returned an error.
        last: Option<E>,
    },
    /// A retry was wanted but the fleet-wide retry budget is empty.
    BudgetExhausted {
        /// The error that would have been retried.
        last: E,
    },
}

impl<E> CallError<E> {
    /// True when the operation was not attempted at all: the breaker was open or the bulkhead
    /// full. (`DeadlineExceeded` is never counted as a rejection, even when the deadline passed
    /// while the call waited for its bulkhead or rate limit.)
    pub fn is_rejection(&self) -> bool {
        match self {
            Self::CircuitOpen { .. } | Self::BulkheadFull { .. } => true,
            Self::Inner(_)
            | Self::Timeout { .. }
            | Self::DeadlineExceeded { .. }
            | Self::BudgetExhausted { .. } => false,
        }
    }

    /// The operation's error, if the call ended with one.
    pub fn inner(&self) -> Option<&E> {
        match self {
            Self::Inner(e) | Self::BudgetExhausted { last: e } => Some(e),
            Self::DeadlineExceeded { last, .. } => last.as_ref(),
            Self::CircuitOpen { .. } | Self::BulkheadFull { .. } | Self::Timeout { .. } => None,
        }
    }

    /// Consumes the error and returns the operation's error, if the call ended with one.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) | Self::BudgetExhausted { last: e } => Some(e),
            Self::DeadlineExceeded { last, .. } => last,
            Self::CircuitOpen { .. } | Self::BulkheadFull { .. } | Self::Timeout { .. } => None,
        }
    }

    /// Converts the operation's error, keeping the variant.
    pub fn map_inner<F, E2>(self, f: F) -> CallError<E2>
    where
        F: FnOnce(E) -> E2,
    {
        match self {
            Self::Inner(e) => CallError::Inner(f(e)),
            Self::CircuitOpen { key, retry_in } => CallError::CircuitOpen { key, retry_in },
            Self::BulkheadFull { name } => CallError::BulkheadFull { name },
            Self::Timeout { after } => CallError::Timeout { after },
            Self::DeadlineExceeded { after, last } => CallError::DeadlineExceeded {
                after,
                last: last.map(f),
            },
            Self::BudgetExhausted { last } => CallError::BudgetExhausted { last: f(last) },
        }
    }
}

impl<E: std::fmt::Display> std::fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inner(e) => e.fmt(f),
            Self::CircuitOpen { key, retry_in } => write!(
                f,
                "circuit breaker for {key} is open (next probe in {})",
                humantime_serde::re::humantime::format_duration(*retry_in)
            ),
            Self::BulkheadFull { name } => write!(f, "bulkhead {name} is full"),
            Self::Timeout { after } => write!(
                f,
                "attempt timed out after {}",
                humantime_serde::re::humantime::format_duration(*after)
            ),
            Self::DeadlineExceeded { after, .. } => write!(
                f,
                "deadline exceeded after {}",
                humantime_serde::re::humantime::format_duration(*after)
            ),
            Self::BudgetExhausted { .. } => f.write_str("retry budget exhausted"),
        }
    }
}

impl<E> std::error::Error for CallError<E>
where
    E: std::error::Error + 'static,
{
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // `Inner` displays as the inner error itself, so it is transparent: its source is
            // the inner error's source.
            Self::Inner(e) => e.source(),
            Self::BudgetExhausted { last } => Some(last),
            Self::DeadlineExceeded { last: Some(e), .. } => Some(e),
            Self::DeadlineExceeded { last: None, .. }
            | Self::CircuitOpen { .. }
            | Self::BulkheadFull { .. }
            | Self::Timeout { .. } => None,
        }
    }
}
