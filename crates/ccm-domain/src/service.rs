//! Service status: what the CML sync of one worker says about its CML.
//!
//! - `ready`: the API answered and `system_information.ready` is true, and no call failed;
//! - `degraded`: something answered, but CML is not ready or some calls failed;
//! - `unavailable`: nothing answered;
//! - `unknown`: no sync yet (or the worker is not running).
//!
//! A 404 on an optional endpoint of an older CML counts as an answer ("not supported"), not as
//! a failure. Every status carries [`Reason`]s naming the calls that failed and why.
//!
//! EC2's status checks are a second source: an `impaired` system or instance check makes a
//! running worker `degraded` (reason `ec2_status_impaired`) even when CML still answers
//! ([`with_ec2_checks`], applied on top of [`derive_status`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ec2::StatusChecks;

/// The health of a worker's CML service, derived from the latest CML sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    /// CML answered and can start nodes.
    Ready,
    /// CML answered in part, or is not ready.
    Degraded,
    /// Nothing answered.
    Unavailable,
    /// Not synced yet.
    Unknown,
}

impl ServiceStatus {
    /// Every status.
    pub const ALL: [ServiceStatus; 4] = [
        Self::Ready,
        Self::Degraded,
        Self::Unavailable,
        Self::Unknown,
    ];

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Degraded => "degraded",
            Self::Unavailable => "unavailable",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ServiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ServiceStatus {
    type Err = crate::InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                crate::InvalidValue::new(
                    "service status",
                    s,
                    "ready, degraded, unavailable or unknown",
                )
            })
    }
}

/// The sources a sync reads: the CML calls (each tried on its own), and CloudWatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CmlCall {
    /// `GET /system_information` (no auth).
    SystemInformation,
    /// `GET /system_health`.
    SystemHealth,
    /// `GET /system_stats`.
    SystemStats,
    /// `GET /licensing`.
    Licensing,
    /// `GET /telemetry/events` (activity for idle detection).
    Telemetry,
    /// `GET /labs` and lab details.
    Labs,
    /// Not a CML call: CloudWatch metrics of the instance.
    CloudWatch,
    /// Not a CML call: EC2's status checks of the instance (DescribeInstanceStatus).
    Ec2Status,
}

impl CmlCall {
    /// The call's name as used in reason codes (`system_health`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SystemInformation => "system_information",
            Self::SystemHealth => "system_health",
            Self::SystemStats => "system_stats",
            Self::Licensing => "licensing",
            Self::Telemetry => "telemetry",
            Self::Labs => "labs",
            Self::CloudWatch => "cloudwatch",
            Self::Ec2Status => "ec2_status",
        }
    }
}

impl fmt::Display for CmlCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a call did not give a usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// `system_information.ready` is false: no compute can start nodes.
    NotReady,
    /// Could not connect.
    Connect,
    /// No answer in time.
    Timeout,
    /// TLS handshake or certificate failure.
    Tls,
    /// An HTTP error status (see `status`).
    HttpStatus,
    /// 401 even after logging in again.
    Unauthorized,
    /// 403: ccm's CML user lacks the rights (e.g. licensing needs an admin).
    Forbidden,
    /// The answer could not be decoded.
    Decode,
    /// Not attempted: the worker's circuit breaker is open.
    CircuitOpen,
    /// Not attempted: a bulkhead or the retry budget refused it.
    Rejected,
    /// Login failed (bad credentials).
    Credentials,
    /// EC2 reports an `impaired` system or instance status check (the detail says which).
    Ec2StatusImpaired,
    /// Anything else.
    Other,
}

/// One reason behind a service status: which call, what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// The call concerned.
    pub call: CmlCall,
    /// What went wrong.
    pub code: ReasonCode,
    /// The HTTP status, for `http_status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// A short, secret-free detail for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Reason {
    /// A reason without details.
    pub fn new(call: CmlCall, code: ReasonCode) -> Self {
        Self {
            call,
            code,
            status: None,
            detail: None,
        }
    }

    /// An HTTP error status.
    pub fn http(call: CmlCall, status: u16) -> Self {
        Self {
            status: Some(status),
            ..Self::new(call, ReasonCode::HttpStatus)
        }
    }

    /// Adds a detail, cut to 200 characters.
    pub fn with_detail(mut self, detail: impl AsRef<str>) -> Self {
        self.detail = Some(detail.as_ref().chars().take(200).collect());
        self
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = serde_json::to_value(self.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        write!(f, "{}: {code}", self.call)?;
        if let Some(status) = self.status {
            write!(f, " {status}")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

/// The outcome of one call of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// CML answered with a usable body.
    Answered,
    /// 404 on an optional endpoint: this CML does not have it. An answer, not a failure.
    NotSupported,
    /// No usable answer.
    Failed(Reason),
}

/// The outcomes of one CML sync, the input to [`derive_status`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncOutcome {
    /// Each call made, with its outcome.
    pub calls: Vec<(CmlCall, CallOutcome)>,
    /// `system_information.ready`, when system_information answered.
    pub ready: Option<bool>,
}

/// A derived status with its reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    /// The status.
    pub status: ServiceStatus,
    /// Why it is not `ready` (empty when ready).
    pub reasons: Vec<Reason>,
}

/// Derives the service status from the outcomes of one sync.
pub fn derive_status(outcome: &SyncOutcome) -> Assessment {
    if outcome.calls.is_empty() {
        return Assessment {
            status: ServiceStatus::Unknown,
            reasons: Vec::new(),
        };
    }
    let mut reasons: Vec<Reason> = outcome
        .calls
        .iter()
        .filter_map(|(_, o)| match o {
            CallOutcome::Failed(reason) => Some(reason.clone()),
            _ => None,
        })
        .collect();
    let answered = outcome
        .calls
        .iter()
        .any(|(_, o)| matches!(o, CallOutcome::Answered | CallOutcome::NotSupported));
    if !answered {
        return Assessment {
            status: ServiceStatus::Unavailable,
            reasons,
        };
    }
    let info_answered = outcome
        .calls
        .iter()
        .any(|(c, o)| *c == CmlCall::SystemInformation && *o == CallOutcome::Answered);
    let ready = info_answered && outcome.ready == Some(true);
    if info_answered && !ready {
        reasons.insert(
            0,
            Reason::new(CmlCall::SystemInformation, ReasonCode::NotReady),
        );
    } else if !info_answered && !reasons.iter().any(|r| r.call == CmlCall::SystemInformation) {
        // system_information is never optional: "not supported" means we cannot tell.
        reasons.insert(
            0,
            Reason::new(CmlCall::SystemInformation, ReasonCode::Other).with_detail("not supported"),
        );
    }
    let status = if reasons.is_empty() {
        ServiceStatus::Ready
    } else {
        ServiceStatus::Degraded
    };
    Assessment { status, reasons }
}

/// Applies EC2's status checks to a status derived from CML: an impaired check adds the reason
/// `ec2_status: ec2_status_impaired` (after CML's own) and makes `ready` or `unknown` into
/// `degraded` — the instance is known to be unwell even if CML still answers, or has not been
/// asked yet. `unavailable` stays `unavailable` (nothing answered, which is worse); healthy or
/// absent checks change nothing.
pub fn with_ec2_checks(cml: Assessment, checks: Option<&StatusChecks>) -> Assessment {
    let Some(text) = checks.and_then(StatusChecks::impaired_text) else {
        return cml;
    };
    let Assessment {
        status,
        mut reasons,
    } = cml;
    reasons.push(Reason::new(CmlCall::Ec2Status, ReasonCode::Ec2StatusImpaired).with_detail(text));
    let status = match status {
        ServiceStatus::Unavailable => ServiceStatus::Unavailable,
        ServiceStatus::Ready | ServiceStatus::Degraded | ServiceStatus::Unknown => {
            ServiceStatus::Degraded
        }
    };
    Assessment { status, reasons }
}

#[cfg(test)]
mod tests {
    use super::CallOutcome::{Answered, Failed, NotSupported};
    use super::CmlCall::*;
    use super::*;

    fn fail(call: CmlCall, code: ReasonCode) -> CallOutcome {
        Failed(Reason::new(call, code))
    }

    fn codes(a: &Assessment) -> Vec<String> {
        a.reasons
            .iter()
            .map(|r| format!("{}:{:?}", r.call, r.code))
            .collect()
    }

    #[test]
    fn every_status_derivation_case_should_hold() {
        struct Case {
            name: &'static str,
            calls: Vec<(CmlCall, CallOutcome)>,
            ready: Option<bool>,
            status: ServiceStatus,
            reasons: &'static [&'static str],
        }
        let all_ok = |ready| Case {
            name: "",
            calls: vec![
                (SystemInformation, Answered),
                (SystemHealth, Answered),
                (SystemStats, Answered),
                (Licensing, Answered),
            ],
            ready,
            status: ServiceStatus::Ready,
            reasons: &[],
        };
        let cases = vec![
            Case {
                name: "no sync yet",
                calls: vec![],
                ready: None,
                status: ServiceStatus::Unknown,
                reasons: &[],
            },
            Case {
                name: "everything answered, ready",
                ..all_ok(Some(true))
            },
            Case {
                name: "everything answered, not ready",
                status: ServiceStatus::Degraded,
                reasons: &["system_information:NotReady"],
                ..all_ok(Some(false))
            },
            Case {
                name: "licensing not supported (older CML) is still ready",
                calls: vec![
                    (SystemInformation, Answered),
                    (SystemHealth, Answered),
                    (SystemStats, Answered),
                    (Licensing, NotSupported),
                ],
                ready: Some(true),
                status: ServiceStatus::Ready,
                reasons: &[],
            },
            Case {
                name: "one authenticated call failed",
                calls: vec![
                    (SystemInformation, Answered),
                    (SystemHealth, fail(SystemHealth, ReasonCode::Timeout)),
                    (SystemStats, Answered),
                    (Licensing, Answered),
                ],
                ready: Some(true),
                status: ServiceStatus::Degraded,
                reasons: &["system_health:Timeout"],
            },
            Case {
                name: "not ready and a call failed",
                calls: vec![
                    (SystemInformation, Answered),
                    (SystemHealth, Answered),
                    (SystemStats, Answered),
                    (Licensing, fail(Licensing, ReasonCode::Forbidden)),
                ],
                ready: Some(false),
                status: ServiceStatus::Degraded,
                reasons: &["system_information:NotReady", "licensing:Forbidden"],
            },
            Case {
                name: "system_information failed but others answered",
                calls: vec![
                    (
                        SystemInformation,
                        fail(SystemInformation, ReasonCode::HttpStatus),
                    ),
                    (SystemHealth, Answered),
                    (SystemStats, Answered),
                    (Licensing, Answered),
                ],
                ready: None,
                status: ServiceStatus::Degraded,
                reasons: &["system_information:HttpStatus"],
            },
            Case {
                name: "system_information not supported cannot be ready",
                calls: vec![(SystemInformation, NotSupported), (SystemHealth, Answered)],
                ready: None,
                status: ServiceStatus::Degraded,
                reasons: &["system_information:Other"],
            },
            Case {
                name: "nothing answered",
                calls: vec![
                    (
                        SystemInformation,
                        fail(SystemInformation, ReasonCode::Connect),
                    ),
                    (SystemHealth, fail(SystemHealth, ReasonCode::Connect)),
                    (SystemStats, fail(SystemStats, ReasonCode::Connect)),
                    (Licensing, fail(Licensing, ReasonCode::Connect)),
                ],
                ready: None,
                status: ServiceStatus::Unavailable,
                reasons: &[
                    "system_information:Connect",
                    "system_health:Connect",
                    "system_stats:Connect",
                    "licensing:Connect",
                ],
            },
            Case {
                name: "breaker open on everything",
                calls: vec![(
                    SystemInformation,
                    fail(SystemInformation, ReasonCode::CircuitOpen),
                )],
                ready: None,
                status: ServiceStatus::Unavailable,
                reasons: &["system_information:CircuitOpen"],
            },
            Case {
                name: "only system_information answered",
                calls: vec![
                    (SystemInformation, Answered),
                    (SystemHealth, fail(SystemHealth, ReasonCode::Decode)),
                    (SystemStats, fail(SystemStats, ReasonCode::Unauthorized)),
                    (Licensing, fail(Licensing, ReasonCode::Timeout)),
                ],
                ready: Some(true),
                status: ServiceStatus::Degraded,
                reasons: &[
                    "system_health:Decode",
                    "system_stats:Unauthorized",
                    "licensing:Timeout",
                ],
            },
        ];
        for case in cases {
            let a = derive_status(&SyncOutcome {
                calls: case.calls,
                ready: case.ready,
            });
            assert_eq!(a.status, case.status, "{}", case.name);
            assert_eq!(codes(&a), case.reasons, "{}", case.name);
        }
    }

    #[test]
    fn reasons_should_render_for_operators_and_serialise_as_codes() {
        let r = Reason::http(SystemHealth, 503).with_detail("Service Unavailable");
        assert_eq!(
            r.to_string(),
            "system_health: http_status 503 (Service Unavailable)"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["call"], "system_health");
        assert_eq!(json["code"], "http_status");
        assert_eq!(json["status"], 503);
    }

    #[test]
    fn details_should_be_bounded() {
        let r = Reason::new(SystemStats, ReasonCode::Decode).with_detail("x".repeat(5000));
        assert_eq!(r.detail.unwrap().len(), 200);
    }

    #[test]
    fn an_impaired_ec2_check_should_degrade_a_worker_whose_cml_still_answers() {
        use crate::ec2::CheckStatus as C;
        let checks = |system, instance| StatusChecks { system, instance };
        let ready = || Assessment {
            status: ServiceStatus::Ready,
            reasons: Vec::new(),
        };
        // Healthy, absent or not-yet-known checks change nothing.
        for healthy in [
            Some(checks(C::Ok, C::Ok)),
            Some(checks(C::Initializing, C::InsufficientData)),
            Some(checks(C::NotApplicable, C::Unknown)),
            None,
        ] {
            assert_eq!(with_ec2_checks(ready(), healthy.as_ref()), ready());
        }
        let a = with_ec2_checks(ready(), Some(&checks(C::Ok, C::Impaired)));
        assert_eq!(a.status, ServiceStatus::Degraded);
        assert_eq!(codes(&a), ["ec2_status:Ec2StatusImpaired"]);
        assert_eq!(
            a.reasons[0].detail.as_deref(),
            Some("instance status check impaired")
        );
        let json = serde_json::to_value(&a.reasons[0]).unwrap();
        assert_eq!(json["call"], "ec2_status");
        assert_eq!(json["code"], "ec2_status_impaired");

        // CML's own reasons come first; a worker not synced yet is degraded too.
        let cml = Assessment {
            status: ServiceStatus::Degraded,
            reasons: vec![Reason::new(SystemHealth, ReasonCode::Timeout)],
        };
        let a = with_ec2_checks(cml, Some(&checks(C::Impaired, C::Impaired)));
        assert_eq!(a.status, ServiceStatus::Degraded);
        assert_eq!(
            codes(&a),
            ["system_health:Timeout", "ec2_status:Ec2StatusImpaired"]
        );
        assert_eq!(
            a.reasons[1].detail.as_deref(),
            Some("system and instance status checks impaired")
        );
        let unknown = Assessment {
            status: ServiceStatus::Unknown,
            reasons: Vec::new(),
        };
        let a = with_ec2_checks(unknown, Some(&checks(C::Impaired, C::Ok)));
        assert_eq!(a.status, ServiceStatus::Degraded);
        // Nothing answering stays the worse status.
        let down = Assessment {
            status: ServiceStatus::Unavailable,
            reasons: vec![Reason::new(SystemInformation, ReasonCode::Connect)],
        };
        let a = with_ec2_checks(down, Some(&checks(C::Impaired, C::Ok)));
        assert_eq!(a.status, ServiceStatus::Unavailable);
        assert_eq!(a.reasons.len(), 2);
    }
}
