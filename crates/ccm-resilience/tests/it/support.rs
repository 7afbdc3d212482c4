use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ccm_resilience::{Classify, ErrorClass, ResilienceConfig};

/// An operation error with a chosen class and optional Retry-After.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TestError {
    pub(crate) class: ErrorClass,
    pub(crate) retry_after: Option<Duration>,
}

impl TestError {
    pub(crate) fn transient() -> Self {
        Self {
            class: ErrorClass::Transient,
            retry_after: None,
        }
    }

    pub(crate) fn failure() -> Self {
        Self {
            class: ErrorClass::Failure,
            retry_after: None,
        }
    }

    pub(crate) fn benign() -> Self {
        Self {
            class: ErrorClass::Benign,
            retry_after: None,
        }
    }

    pub(crate) fn retry_after(after: Duration) -> Self {
        Self {
            class: ErrorClass::Transient,
            retry_after: Some(after),
        }
    }
}

impl std::fmt::Display for TestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "test error ({})", self.class)
    }
}

impl std::error::Error for TestError {}

impl Classify for TestError {
    fn class(&self) -> ErrorClass {
        self.class
    }

    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    fn reason(&self) -> Option<String> {
        Some(format!("test {}", self.class))
    }
}

/// Counts calls of an operation.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counter(Arc<AtomicU32>);

impl Counter {
    pub(crate) fn hit(&self) -> u32 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub(crate) fn get(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Defaults with only the timeout and retry policies on (no breaker, budget, limits), so a
/// test sees one policy at a time.
pub(crate) fn retry_only() -> ResilienceConfig {
    let mut cfg = ResilienceConfig::disabled();
    cfg.timeout.enabled = true;
    cfg.retry.enabled = true;
    cfg
}

pub(crate) const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub(crate) const fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
