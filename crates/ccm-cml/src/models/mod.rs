//! Wire models: CML 2.9 JSON as it arrives, kept apart from the domain types.
//!
//! Every model is lenient: nullable and optional fields are `Option`, unknown fields are
//! ignored (never `deny_unknown_fields`), unknown enum values are kept as `Other(String)`,
//! timestamps are parsed by [`crate::timestamp`] and an odd one becomes `None`, and counters
//! accept `null`. Each model converts into its domain summary (`From`, or `to_record` where
//! extra context is needed).
//!
//! Enums shared with the domain (`AdmissionState`, `LabState`, `RegistrationStatus`,
//! `AuthorizationStatus`) are the domain's open enums: they are CML's own vocabulary and
//! already keep unknown values.

mod auth;
mod labs;
mod licensing;
mod system;
mod telemetry;

pub(crate) use auth::jwt_subject;
pub use auth::{AuthExtendedResponse, AuthInfo};
pub use labs::{ImportResponse, Lab, LabElementState, NodeState};
pub use licensing::{
    LicensingAuthorization, LicensingFeature, LicensingStatus, LicensingTimeInfo, ProductLicense,
    Registration, Transport, TransportProxy, Udi, UdiInfo,
};
pub use system::{
    ByteStats, ComputeHealth, ComputeHostStats, ComputeStats, ControllerDiskStats,
    ControllerHealth, CpuStats, DiskStats, DomInfo, HostStats, MemoryStats, SystemHealth,
    SystemInformation, SystemStats,
};
pub use telemetry::{TelemetryCategory, TelemetryData, TelemetryEvent, telemetry_to_domain};

use serde::de::DeserializeOwned;

use crate::endpoint::Endpoint;
use crate::error::CmlError;

/// Decodes a JSON answer of `endpoint` the way the client does: a failure is
/// [`CmlError::Decode`] naming the JSON path of the first field that did not fit, with a short,
/// scrubbed snippet of the body (none for login answers). Never panics, whatever the bytes.
///
/// A good body is decoded by `serde_json` alone; only a failed one is decoded again through
/// `serde_path_to_error` for the path (tracking the path of every field cost ~4 % of ccm's CPU
/// in a 10,000-worker sync, BENCHMARKS.md issue 13 round 5).
pub fn decode<T: DeserializeOwned>(endpoint: Endpoint, body: &[u8]) -> Result<T, CmlError> {
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let detail = if path.is_empty() || path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        };
        CmlError::decode(endpoint, detail, body)
    })
}

/// Decodes a `/labs/{id}/download` answer: real CML sends raw YAML although the spec says a
/// JSON string, so a body starting with `"` is JSON-decoded and anything else is used as is
/// (it must be UTF-8).
pub fn decode_download(body: &[u8]) -> Result<String, CmlError> {
    let endpoint = Endpoint::LabDownload;
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    if start.is_some_and(|i| body[i] == b'"') {
        return decode::<String>(endpoint, body);
    }
    std::str::from_utf8(body)
        .map(str::to_owned)
        .map_err(|e| CmlError::decode(endpoint, e.to_string(), body))
}

/// Serde helper for a non-negative counter that may be `null`, missing, or sent as a float
/// (`5.0`). A negative or fractional value is a decode error.
pub(crate) fn opt_count<'de, D>(d: D) -> Result<Option<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(u) = n.as_u64() {
        return Ok(Some(u));
    }
    match n.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= 9.0e15 => Ok(Some(f as u64)),
        _ => Err(serde::de::Error::custom(format!(
            "expected a non-negative whole number, got {n}"
        ))),
    }
}
