//! A fleet of simulated CML 2.9 controllers, each on its own loopback address, with fault
//! injection per worker and per endpoint. Used by `ccm sim`, `ccm demo`, the tests and the
//! benchmarks.
#![warn(missing_docs)]
