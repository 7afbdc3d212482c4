//! [`CloudError`]: the one error type of every provider, mapped from AWS error codes, each
//! variant saying what to do next where that is known.

use std::fmt::Write as _;
use std::time::Duration;

/// Longest provider message kept in an error (AWS messages can echo whole requests).
const MAX_MESSAGE_CHARS: usize = 400;

/// What went wrong with a cloud call.
///
/// Messages never contain credentials: provider messages pass through [`sanitize_message`],
/// which masks anything shaped like an access key id and shortens the text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CloudError {
    /// The credentials are missing, invalid or expired, or lack a permission.
    #[error(
        "cloud authentication failed ({code}): {message}; check the credentials ([aws] keys, environment, profile or instance role) and their IAM permissions"
    )]
    Auth {
        /// The provider's error code (`AuthFailure`, `UnauthorizedOperation`, …).
        code: String,
        /// The provider's message.
        message: String,
    },
    /// The instance does not exist: never did, or was terminated long enough ago to vanish.
    #[error(
        "instance not found ({code}): {message}; it may have been terminated: refresh the worker or delete its record"
    )]
    NotFound {
        /// The provider's error code (`InvalidInstanceID.NotFound`).
        code: String,
        /// The provider's message (names the missing ids).
        message: String,
    },
    /// An account limit or the region's capacity for the instance type is exhausted.
    #[error(
        "quota or capacity exceeded ({code}): {message}; request a limit increase, choose another instance type or subnet, or retry later"
    )]
    QuotaExceeded {
        /// The provider's error code (`InstanceLimitExceeded`, `InsufficientInstanceCapacity`, …).
        code: String,
        /// The provider's message.
        message: String,
    },
    /// The provider rejected a parameter: an unknown or malformed AMI, subnet, security group,
    /// key pair or instance type, or a bad combination. Retrying the same request cannot help.
    #[error(
        "invalid parameter ({code}): {message}; fix the request (AMI, subnet, security groups, key pair, instance type) before retrying"
    )]
    InvalidParameter {
        /// The provider's error code (`InvalidAMIID.NotFound`, `InvalidSubnetID.NotFound`, …).
        code: String,
        /// The provider's message.
        message: String,
    },
    /// The instance is in a state that does not allow the operation (starting a terminated
    /// instance, stopping a pending one).
    #[error(
        "incorrect instance state ({code}): {message}; refresh the worker and try again once it has settled"
    )]
    IncorrectState {
        /// The provider's error code (`IncorrectInstanceState`).
        code: String,
        /// The provider's message.
        message: String,
    },
    /// The provider throttled the call (`RequestLimitExceeded`), after its own retries.
    #[error(
        "cloud API throttled the call ({code}): {message}; ccm backs off by itself; if this persists, lower the poll rate or the region's rate limit"
    )]
    Throttled {
        /// The provider's error code (`RequestLimitExceeded`, `Throttling`).
        code: String,
        /// The provider's message.
        message: String,
        /// How long to wait before the next call, when known.
        retry_after: Option<Duration>,
    },
    /// The provider could not be reached, failed on its side (5xx), timed out, or ccm's own
    /// breaker, bulkhead or deadline refused or ended the call.
    #[error("cloud API unavailable: {message}{}", retry_hint(*retry_in))]
    Unavailable {
        /// What happened.
        message: String,
        /// When trying again makes sense (an open breaker knows), if known.
        retry_in: Option<Duration>,
    },
    /// The endpoint does not implement the operation (some AWS-compatible emulators).
    #[error(
        "{operation} is not supported by this endpoint: {message}; use real AWS or an endpoint that implements it"
    )]
    Unsupported {
        /// The operation (`MonitorInstances`).
        operation: String,
        /// The endpoint's message.
        message: String,
    },
    /// Any other error the provider returned.
    #[error("cloud API error ({code}): {message}")]
    Other {
        /// The provider's error code.
        code: String,
        /// The provider's message.
        message: String,
    },
}

fn retry_hint(retry_in: Option<Duration>) -> String {
    match retry_in {
        Some(d) => format!("; retry in {}", humanize(d)),
        None => "; retry later".to_owned(),
    }
}

/// `1.5s`, `2m 3s`: short enough for an error message.
fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m {}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

impl CloudError {
    /// Maps an AWS error code (EC2 or CloudWatch), the message and the HTTP status to a
    /// variant. Unknown codes fall back on the status: 429 is throttling, 5xx unavailable.
    pub fn from_aws(code: Option<&str>, message: Option<&str>, http_status: Option<u16>) -> Self {
        let message = sanitize_message(message.unwrap_or("no message"));
        let code = code.unwrap_or("").to_owned();
        let c = code.as_str();
        let is = |list: &[&str]| list.contains(&c);
        if is(&[
            "AuthFailure",
            "UnauthorizedOperation",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "ExpiredTokenException",
            "RequestExpired",
            "OptInRequired",
            "Blocked",
            "PendingVerification",
            "MissingAuthenticationToken",
            "AccessDenied",
            "AccessDeniedException",
            "UnrecognizedClientException",
            "InvalidAccessKeyId",
            "IncompleteSignature",
            "InvalidSecurity",
            "NotAuthorized",
        ]) || (c.is_empty() && matches!(http_status, Some(401 | 403)))
        {
            return Self::Auth { code, message };
        }
        if is(&["InvalidInstanceID.NotFound", "InvalidInstanceID"]) {
            return Self::NotFound { code, message };
        }
        if is(&[
            "RequestLimitExceeded",
            "Throttling",
            "ThrottlingException",
            "ThrottledException",
            "TooManyRequestsException",
            "RequestThrottled",
            "RequestThrottledException",
            "EC2ThrottledException",
            "PriorRequestNotComplete",
            "SlowDown",
            "BandwidthLimitExceeded",
        ]) || (c.is_empty() && http_status == Some(429))
        {
            return Self::Throttled {
                code: if c.is_empty() {
                    "TooManyRequests".to_owned()
                } else {
                    code
                },
                message,
                retry_after: None,
            };
        }
        if is(&[
            "InstanceLimitExceeded",
            "InsufficientInstanceCapacity",
            "VcpuLimitExceeded",
            "InsufficientCapacity",
            "InsufficientHostCapacity",
            "InsufficientReservedInstanceCapacity",
            "InsufficientAddressCapacity",
            "InsufficientFreeAddressesInSubnet",
            "MaxSpotInstanceCountExceeded",
            "ResourceLimitExceeded",
            "AddressLimitExceeded",
            "TagLimitExceeded",
            "LimitExceeded",
            "LimitExceededException",
        ]) {
            return Self::QuotaExceeded { code, message };
        }
        if is(&["IncorrectInstanceState", "IncorrectState", "InvalidState"]) {
            return Self::IncorrectState { code, message };
        }
        if is(&[
            "ServiceUnavailable",
            "ServiceUnavailableException",
            "Unavailable",
            "InternalError",
            "InternalFailure",
            "InternalServiceError",
            "InternalServiceFault",
            "ServerInternal",
            "RequestTimeout",
            "RequestTimeoutException",
        ]) {
            return Self::Unavailable {
                message: format!("{code}: {message}"),
                retry_in: None,
            };
        }
        if is(&["NotImplemented"]) {
            return Self::Unsupported {
                operation: "this operation".to_owned(),
                message,
            };
        }
        if c.starts_with("Invalid")
            || is(&[
                "MissingParameter",
                "MissingRequiredParameterException",
                "Unsupported",
                "UnsupportedOperation",
                "ValidationError",
                "ValidationException",
                "DryRunOperation",
            ])
        {
            return Self::InvalidParameter { code, message };
        }
        match http_status {
            Some(s) if s >= 500 => Self::Unavailable {
                message: if c.is_empty() {
                    format!("HTTP {s}: {message}")
                } else {
                    format!("{code} (HTTP {s}): {message}")
                },
                retry_in: None,
            },
            _ => Self::Other {
                code: if c.is_empty() {
                    "Unknown".to_owned()
                } else {
                    code
                },
                message,
            },
        }
    }

    /// Whether calling again later may succeed without changing the request (throttling and
    /// unavailability). Everything else needs a change by someone first.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Throttled { .. } | Self::Unavailable { .. })
    }

    /// The provider's error code, when there is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Auth { code, .. }
            | Self::NotFound { code, .. }
            | Self::QuotaExceeded { code, .. }
            | Self::InvalidParameter { code, .. }
            | Self::IncorrectState { code, .. }
            | Self::Throttled { code, .. }
            | Self::Other { code, .. } => Some(code),
            Self::Unavailable { .. } | Self::Unsupported { .. } => None,
        }
    }

    /// A short, stable name of the variant for metrics labels and API reason codes.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Auth { .. } => "auth",
            Self::NotFound { .. } => "not_found",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::InvalidParameter { .. } => "invalid_parameter",
            Self::IncorrectState { .. } => "incorrect_state",
            Self::Throttled { .. } => "throttled",
            Self::Unavailable { .. } => "unavailable",
            Self::Unsupported { .. } => "unsupported",
            Self::Other { .. } => "other",
        }
    }

    /// An [`CloudError::Unavailable`] with a message.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: sanitize_message(&message.into()),
            retry_in: None,
        }
    }
}

/// Makes a provider message safe and short enough for errors and logs: masks anything shaped
/// like an AWS access key id (`AKIA…`, `ASIA…`), drops control characters and cuts it to
/// 400 characters.
pub fn sanitize_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE_CHARS + 4));
    let chars: Vec<char> = message.chars().collect();
    let mut i = 0;
    let mut kept = 0;
    while i < chars.len() && kept < MAX_MESSAGE_CHARS {
        if let Some(len) = access_key_at(&chars[i..]) {
            out.push_str("***");
            i += len;
            kept += 3;
            continue;
        }
        let c = chars[i];
        out.push(if c.is_control() { ' ' } else { c });
        i += 1;
        kept += 1;
    }
    if i < chars.len() {
        let _ = write!(out, "…");
    }
    out
}

/// Length of an access key id starting at `s[0]` (4-letter prefix + 16 upper-case letters or
/// digits, not followed by another such character), if there is one.
fn access_key_at(s: &[char]) -> Option<usize> {
    const PREFIXES: [&str; 4] = ["AKIA", "ASIA", "AROA", "AIDA"];
    if s.len() < 20 {
        return None;
    }
    let prefix: String = s[..4].iter().collect();
    if !PREFIXES.contains(&prefix.as_str()) {
        return None;
    }
    let key_char = |c: &char| c.is_ascii_uppercase() || c.is_ascii_digit();
    let run = s[4..].iter().take_while(|c| key_char(c)).count();
    (run >= 12).then_some(4 + run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(code: &str, status: u16) -> CloudError {
        CloudError::from_aws(Some(code), Some("msg"), Some(status))
    }

    #[test]
    fn aws_codes_should_map_to_the_documented_variants() {
        let cases: &[(&str, u16, &str)] = &[
            ("AuthFailure", 401, "auth"),
            ("UnauthorizedOperation", 403, "auth"),
            ("InvalidClientTokenId", 403, "auth"),
            ("InvalidInstanceID.NotFound", 400, "not_found"),
            ("InvalidInstanceID.Malformed", 400, "invalid_parameter"),
            ("InvalidAMIID.NotFound", 400, "invalid_parameter"),
            ("InvalidAMIID.Malformed", 400, "invalid_parameter"),
            ("InvalidSubnetID.NotFound", 400, "invalid_parameter"),
            ("InvalidGroup.NotFound", 400, "invalid_parameter"),
            ("InvalidKeyPair.NotFound", 400, "invalid_parameter"),
            ("InvalidParameterValue", 400, "invalid_parameter"),
            ("Unsupported", 400, "invalid_parameter"),
            ("InstanceLimitExceeded", 400, "quota_exceeded"),
            ("InsufficientInstanceCapacity", 500, "quota_exceeded"),
            ("VcpuLimitExceeded", 400, "quota_exceeded"),
            ("RequestLimitExceeded", 503, "throttled"),
            ("Throttling", 400, "throttled"),
            ("IncorrectInstanceState", 400, "incorrect_state"),
            ("InternalError", 500, "unavailable"),
            ("Unavailable", 503, "unavailable"),
            ("SomethingNew", 500, "unavailable"),
            ("SomethingNew", 400, "other"),
        ];
        for (code, status, kind) in cases {
            let err = map(code, *status);
            assert_eq!(err.kind(), *kind, "{code} / {status}: {err}");
        }
    }

    #[test]
    fn bare_http_statuses_should_map_when_there_is_no_code() {
        assert_eq!(
            CloudError::from_aws(None, None, Some(429)).kind(),
            "throttled"
        );
        assert_eq!(CloudError::from_aws(None, None, Some(403)).kind(), "auth");
        assert_eq!(
            CloudError::from_aws(None, None, Some(502)).kind(),
            "unavailable"
        );
        assert_eq!(CloudError::from_aws(None, None, Some(404)).kind(), "other");
    }

    #[test]
    fn only_throttling_and_unavailability_should_be_transient() {
        assert!(map("RequestLimitExceeded", 503).is_transient());
        assert!(map("InternalError", 500).is_transient());
        assert!(!map("InvalidAMIID.NotFound", 400).is_transient());
        assert!(!map("AuthFailure", 401).is_transient());
        assert!(!map("InstanceLimitExceeded", 400).is_transient());
    }

    #[test]
    fn messages_should_say_what_to_do_next() {
        let text = map("InvalidAMIID.NotFound", 400).to_string();
        assert!(text.contains("fix the request"), "{text}");
        let text = map("AuthFailure", 401).to_string();
        assert!(text.contains("check the credentials"), "{text}");
        let text = CloudError::Unavailable {
            message: "circuit open".into(),
            retry_in: Some(Duration::from_secs(42)),
        }
        .to_string();
        assert!(text.contains("retry in 42.0s"), "{text}");
    }

    #[test]
    fn access_key_ids_should_never_survive_into_messages() {
        let raw = "The key AKIAIOSFODNN7EXAMPLE is bad; ASIA1234567890ABCDEF too";
        let clean = sanitize_message(raw);
        assert!(!clean.contains("AKIAIOSFODNN7EXAMPLE"), "{clean}");
        assert!(!clean.contains("ASIA1234567890ABCDEF"), "{clean}");
        assert!(clean.contains("The key *** is bad"), "{clean}");
        let err = CloudError::from_aws(Some("AuthFailure"), Some(raw), Some(401));
        assert!(!err.to_string().contains("AKIA"));
    }

    #[test]
    fn long_messages_should_be_cut() {
        let clean = sanitize_message(&"x".repeat(5000));
        assert!(clean.chars().count() <= MAX_MESSAGE_CHARS + 1);
        assert!(clean.ends_with('…'));
        assert_eq!(sanitize_message("line\nbreak"), "line break");
    }
}
