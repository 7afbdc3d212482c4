//! The fleet monitor: a scheduler that keeps every worker's picture current (EC2, CloudWatch,
//! CML, labs), the idle auto-pause, imports, provisioning, licences and lab actions.
#![warn(missing_docs)]
