//! Integration tests of the simulator through real HTTP on loopback.

// Test helpers outside #[test] functions panic on purpose when a fixture breaks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod cli;
mod conformance;
mod control;
mod faults;
mod labs;
mod licensing;
mod support;
mod system;
mod tls;
