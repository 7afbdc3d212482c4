//! The simulator's error type.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::faults::FaultSpecError;

/// Everything that can go wrong when starting, running or driving the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is inconsistent (e.g. zero workers, addresses past 127.255.255.254).
    #[error("invalid simulator configuration: {0}")]
    Config(String),
    /// A fault spec could not be parsed.
    #[error("invalid fault spec: {0}")]
    FaultSpec(#[from] FaultSpecError),
    /// A worker's listening socket could not be bound.
    #[error("cannot listen on {addr} for worker {index}: {source}")]
    Bind {
        /// Fleet-wide worker index.
        index: usize,
        /// The address that was asked for.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The control API could not be bound.
    #[error("cannot listen on {addr} for the control api: {source}")]
    ControlBind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// TLS material could not be generated or used.
    #[error("tls setup failed: {0}")]
    Tls(String),
    /// An output file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A helper that acts as a CML user was refused (the text says why, as CML would).
    #[error("simulated cml refused the request: {status} {description}")]
    Refused {
        /// The HTTP status CML would have answered.
        status: u16,
        /// The error description CML would have answered.
        description: String,
    },
    /// A shard process failed to start, answer or stop.
    #[error("shard {index}: {message}")]
    Shard {
        /// Shard number.
        index: usize,
        /// What went wrong.
        message: String,
    },
    /// Another I/O failure (signals, child processes, standard streams).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
