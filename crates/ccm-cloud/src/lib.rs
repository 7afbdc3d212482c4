//! The cloud provider abstraction: what ccm needs from EC2 and CloudWatch, as one trait, plus a
//! simulated in-memory provider for `ccm demo` and engine tests. The AWS implementation lives
//! in `ccm-cloud-aws` so that nothing else rebuilds the (slow to compile) AWS SDK.
#![warn(missing_docs)]
