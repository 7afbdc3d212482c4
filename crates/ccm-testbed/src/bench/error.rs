//! [`BenchError`]: why a benchmark could not run or finish.

use std::time::Duration;

/// Why a benchmark could not run or finish. One line each, naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file, directory or child process could not be used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A part of ccm under test could not be set up (store, engine, client, configuration).
    #[error("{what}: {message}")]
    Setup {
        /// The part.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// The CML simulator did not start, or its control API did not answer.
    #[error("simulator: {0}")]
    Simulator(String),
    /// The Python seed-poller could not be found, installed or run.
    #[error("seed-poller: {0}")]
    Peer(String),
    /// The run did not behave as a valid measurement needs (e.g. a cycle missed workers).
    #[error("{0}")]
    Invalid(String),
    /// The run took longer than allowed.
    #[error("the benchmark did not finish within {0:?}")]
    Timeout(Duration),
}

impl BenchError {
    /// An I/O failure while doing `what`.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    /// A set-up failure of `what`.
    pub(crate) fn setup<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Self {
        move |e| Self::Setup {
            what,
            message: e.to_string(),
        }
    }
}
