//! The AWS implementation of the `ccm-cloud` provider trait, through the official AWS SDK for
//! Rust (EC2 and CloudWatch). Kept in its own crate because the SDK is slow to compile.
#![warn(missing_docs)]
