//! A typed client for the CML 2.9 REST API (`/api/v0`), shared by the whole fleet.
//!
//! Every call runs through the policies of `ccm-resilience`, keyed per worker. The client
//! never panics on what a CML instance sends: malformed data is a typed decode error.
#![warn(missing_docs)]
