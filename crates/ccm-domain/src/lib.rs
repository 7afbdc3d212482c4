//! The ccm domain model: workers and their EC2 state machine, service status derivation, lab
//! records, licences, observed values with their age (stale-data fallback), activity and the
//! idle policy, savings, runtime settings, the event catalogue, and [`Secret`] (the one type
//! for every password, key and token).
//!
//! Start with [`Worker`] (the aggregate: every change is a method that validates it and returns
//! the [`EventKind`]s it caused), [`Ec2State::transition`] (the one transition table),
//! [`service::derive_status`] and [`idle::evaluate`].
//!
//! **Invariant:** no I/O, no async, no clock. Every function that needs the time takes `now`.
//! Wire and database formats live elsewhere (`ccm-api`, `ccm-store`); this crate only derives
//! serde for its own JSON representation, which the event log and the store reuse.
#![warn(missing_docs)]

pub mod activity;
pub mod cml;
pub mod ec2;
pub mod events;
pub mod idle;
pub mod ids;
pub mod lab;
pub mod licence;
pub mod lifecycle;
pub mod observed;
pub mod savings;
pub mod schedule;
pub mod secret;
pub mod service;
pub mod settings;
pub mod worker;

pub use ec2::{CheckStatus, Ec2State, InvalidTransition, StatusChecks};
pub use events::{Event, EventKind, EventShape, FieldShape};
pub use ids::{Actor, AmiId, InstanceId, InstanceType, InvalidValue, LabId, Region, WorkerId};
pub use lab::{LabRecord, LabState};
pub use licence::Licence;
pub use lifecycle::{LabAction, PauseReason, RefreshSkip, ResumeReason, WorkerAction};
pub use observed::{Freshness, Observed, Sourced};
pub use secret::Secret;
pub use service::{CmlCall, Reason, ReasonCode, ServiceStatus};
pub use settings::RuntimeSettings;
pub use worker::{CommandError, EndpointPolicy, InstanceObservation, Worker};
