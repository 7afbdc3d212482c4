//! The testbed: everything simulated or benchmark-only that ccm's product crates must not
//! carry. Used by the `ccm` binary's `demo`, `sim` and `bench` commands and by the tests.
//!
//! # Brief overview
//! - [`ec2::SimulatedCloud`]: an in-memory EC2 and CloudWatch behind `ccm-cloud`'s
//!   `CloudProvider` trait, with timed state transitions on `tokio::time`, loopback public
//!   IPs bound to the CML simulator's workers, a [`ec2::PowerHook`], injectable throttling and
//!   latency, and generated metrics ([`ec2::Ec2SimConfig`]).
//! - [`embedded::Embedded`]: a simulated CML fleet (`ccm-cml-sim`) and the simulated EC2
//!   wired to a real engine, so that starting an instance powers its CML worker on — the
//!   whole product on one machine (`ccm demo`, the engine's and API's tests).
//! - [`bench`](mod@bench): the benchmark harnesses behind `ccm bench` ([`bench::sync()`],
//!   [`bench::sse()`]), which return reports; the binary parses the flags and prints them.
//!
//! **Boundary:** no product crate (domain, resilience, cml, cloud, cloud-aws, store, engine,
//! api) depends on this crate or on `ccm-cml-sim` except for its tests (`scripts/check-deps`
//! enforces it), and `ccm serve` uses nothing from here.
#![warn(missing_docs)]

pub mod bench;
pub mod ec2;
pub mod embedded;
mod error;

pub use error::TestbedError;
