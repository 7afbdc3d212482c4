//! [`CmlError`]: every way a CML call can fail, classified for the resilience layer and
//! mapped to the domain's [`Reason`] codes.
//!
//! Errors are `Clone` (the login single flight hands one result to every waiter) and never
//! hold a secret: no token, no password, and response snippets are cut short and scrubbed of
//! anything that looks like a token.

use std::time::Duration;

use ccm_domain::service::{CallOutcome, CmlCall, Reason, ReasonCode};
use ccm_resilience::{CallError, Classify, ErrorClass};

use crate::endpoint::Endpoint;
use crate::pin::CertFingerprint;

/// Longest snippet of a response body kept in a decode error.
const SNIPPET_CHARS: usize = 120;
/// Longest CML error description kept.
const DESCRIPTION_CHARS: usize = 200;

/// Why a CML call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmlError {
    /// The TCP connection could not be made (refused, reset, unreachable, connect timeout).
    #[error("{endpoint}: cannot connect: {detail}")]
    Connect {
        /// The operation.
        endpoint: Endpoint,
        /// What the network stack said.
        detail: String,
    },
    /// An attempt got no answer within its per-attempt timeout.
    #[error("{endpoint}: no answer within {}", humantime_serde::re::humantime::format_duration(*after))]
    Timeout {
        /// The operation.
        endpoint: Endpoint,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The TLS handshake failed (untrusted or invalid certificate, protocol error).
    #[error("{endpoint}: tls failure: {detail}")]
    Tls {
        /// The operation.
        endpoint: Endpoint,
        /// What rustls said.
        detail: String,
    },
    /// The server's certificate is not the pinned one (`cml.tls = { fingerprint = … }`): a
    /// different controller, or a man in the middle. Never retried.
    #[error(
        "{endpoint}: tls failure: the server's certificate is not the pinned one: expected {expected}, the server sent {seen}"
    )]
    CertificateMismatch {
        /// The operation.
        endpoint: Endpoint,
        /// The configured fingerprint.
        expected: CertFingerprint,
        /// The fingerprint of the certificate the server sent.
        seen: CertFingerprint,
    },
    /// The server answered with a redirect (3xx). Never followed — a redirected login would
    /// re-send the password to wherever it points — and never retried.
    #[error("{endpoint}: http {status} redirect to {} refused (redirects are never followed)", location.as_deref().unwrap_or("<no location>"))]
    Redirect {
        /// The operation.
        endpoint: Endpoint,
        /// The HTTP status (300–399).
        status: u16,
        /// The `Location` header, without user info, query or fragment, shortened and
        /// scrubbed; `None` when absent or unreadable.
        location: Option<String>,
    },
    /// CML answered with an error status not covered by a more specific variant.
    #[error("{endpoint}: http {status}{}", describe(*code, description.as_deref()))]
    Http {
        /// The operation.
        endpoint: Endpoint,
        /// The HTTP status.
        status: u16,
        /// `code` from CML's `{code, description}` body, if it sent one.
        code: Option<i64>,
        /// `description` from CML's error body, shortened.
        description: Option<String>,
        /// The server's `Retry-After`, in seconds form.
        retry_after: Option<Duration>,
    },
    /// 401 even after logging in again.
    #[error("{endpoint}: unauthorized after logging in again")]
    Unauthorized {
        /// The operation.
        endpoint: Endpoint,
    },
    /// 403: ccm's CML user may not do this (licensing needs an admin).
    #[error("{endpoint}: forbidden{}", describe(None, description.as_deref()))]
    Forbidden {
        /// The operation.
        endpoint: Endpoint,
        /// CML's description.
        description: Option<String>,
    },
    /// 404 on an operation every CML has: the object (a lab) does not exist.
    #[error("{endpoint}: not found{}", describe(None, description.as_deref()))]
    NotFound {
        /// The operation.
        endpoint: Endpoint,
        /// CML's description.
        description: Option<String>,
    },
    /// 404 on an optional operation: this CML release does not have it. Not a failure.
    #[error("{endpoint}: not supported by this cml")]
    NotSupported {
        /// The operation.
        endpoint: Endpoint,
    },
    /// The login was refused (403, or 401 on a login call): wrong user name or password.
    /// Never retried.
    #[error("{endpoint}: login refused, check the cml credentials{}", describe(None, description.as_deref()))]
    Credentials {
        /// The login operation.
        endpoint: Endpoint,
        /// CML's description.
        description: Option<String>,
    },
    /// The answer could not be decoded.
    #[error("{endpoint}: cannot decode the answer: {detail} (body starts {snippet:?})")]
    Decode {
        /// The operation.
        endpoint: Endpoint,
        /// What did not fit, with the JSON path.
        detail: String,
        /// The start of the body, shortened and scrubbed of token-like text.
        snippet: String,
    },
    /// The answer was larger than `cml.max_body_bytes`.
    #[error("{endpoint}: answer larger than {limit} bytes")]
    BodyTooLarge {
        /// The operation.
        endpoint: Endpoint,
        /// The configured limit.
        limit: usize,
    },
    /// The connection failed while sending the request or reading the answer (reset,
    /// closed early, garbled HTTP). Transient, like a connect error.
    #[error("{endpoint}: connection failed: {detail}")]
    Request {
        /// The operation.
        endpoint: Endpoint,
        /// What reqwest said.
        detail: String,
    },
    /// An argument cannot be sent to CML (a lab id or licence token of the wrong shape, a bad
    /// base URL).
    #[error("{endpoint}: invalid argument: {detail}")]
    InvalidArgument {
        /// The operation.
        endpoint: Endpoint,
        /// What is wrong.
        detail: String,
    },
    /// Not attempted: the worker's circuit breaker is open.
    #[error("{endpoint}: circuit breaker open (next probe in {})", humantime_serde::re::humantime::format_duration(*retry_in))]
    CircuitOpen {
        /// The operation.
        endpoint: Endpoint,
        /// Time until the breaker lets a probe through.
        retry_in: Duration,
    },
    /// Not attempted: the named bulkhead's queue is full.
    #[error("{endpoint}: bulkhead {name} is full")]
    BulkheadFull {
        /// The operation.
        endpoint: Endpoint,
        /// The bulkhead.
        name: String,
    },
    /// A retry was wanted but the fleet-wide retry budget is empty; `last` is the error that
    /// would have been retried.
    #[error("{endpoint}: retry budget exhausted")]
    BudgetExhausted {
        /// The operation.
        endpoint: Endpoint,
        /// The last attempt's error.
        #[source]
        last: Box<CmlError>,
    },
    /// The overall deadline of the operation passed (retries included).
    #[error("{endpoint}: deadline exceeded after {}", humantime_serde::re::humantime::format_duration(*after))]
    DeadlineExceeded {
        /// The operation.
        endpoint: Endpoint,
        /// Time spent.
        after: Duration,
        /// The last attempt's error, if an attempt returned one.
        #[source]
        last: Option<Box<CmlError>>,
    },
    /// The client could not be built from its configuration.
    #[error("cml client configuration: {0}")]
    Config(#[from] crate::config::CmlConfigError),
}

fn describe(code: Option<i64>, description: Option<&str>) -> String {
    match (code, description) {
        (_, Some(d)) => format!(": {d}"),
        (Some(c), None) => format!(" (code {c})"),
        (None, None) => String::new(),
    }
}

impl CmlError {
    /// The operation that failed (`None` for configuration errors).
    pub fn endpoint(&self) -> Option<Endpoint> {
        match self {
            Self::Connect { endpoint, .. }
            | Self::Timeout { endpoint, .. }
            | Self::Tls { endpoint, .. }
            | Self::CertificateMismatch { endpoint, .. }
            | Self::Redirect { endpoint, .. }
            | Self::Http { endpoint, .. }
            | Self::Unauthorized { endpoint }
            | Self::Forbidden { endpoint, .. }
            | Self::NotFound { endpoint, .. }
            | Self::NotSupported { endpoint }
            | Self::Credentials { endpoint, .. }
            | Self::Decode { endpoint, .. }
            | Self::BodyTooLarge { endpoint, .. }
            | Self::Request { endpoint, .. }
            | Self::InvalidArgument { endpoint, .. }
            | Self::CircuitOpen { endpoint, .. }
            | Self::BulkheadFull { endpoint, .. }
            | Self::BudgetExhausted { endpoint, .. }
            | Self::DeadlineExceeded { endpoint, .. } => Some(*endpoint),
            Self::Config(_) => None,
        }
    }

    /// The HTTP status CML answered with, if the error came from one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. } | Self::Redirect { status, .. } => Some(*status),
            Self::Unauthorized { .. } => Some(401),
            Self::Forbidden { .. } => Some(403),
            Self::NotFound { .. } | Self::NotSupported { .. } => Some(404),
            Self::BudgetExhausted { last, .. } => last.status(),
            Self::DeadlineExceeded { last, .. } => last.as_ref().and_then(|l| l.status()),
            _ => None,
        }
    }

    /// True for a 404 on an optional operation: this CML does not have it.
    pub fn is_not_supported(&self) -> bool {
        matches!(self, Self::NotSupported { .. })
    }

    /// True when the resilience layer refused the call before it reached CML.
    pub fn is_rejection(&self) -> bool {
        matches!(self, Self::CircuitOpen { .. } | Self::BulkheadFull { .. })
    }

    /// The domain reason for this error on `call`: a [`ReasonCode`], the HTTP status where
    /// there is one, and a short, secret-free detail.
    pub fn reason(&self, call: CmlCall) -> Reason {
        let r = |code| Reason::new(call, code);
        match self {
            Self::Connect { detail, .. } => r(ReasonCode::Connect).with_detail(detail),
            Self::Timeout { .. } => r(ReasonCode::Timeout).with_detail(self.to_string()),
            Self::DeadlineExceeded { .. } => r(ReasonCode::Timeout).with_detail(self.to_string()),
            Self::Tls { detail, .. } => r(ReasonCode::Tls).with_detail(detail),
            // The detail holds 200 characters: the seen fingerprint (the expected one is in
            // the config).
            Self::CertificateMismatch { seen, .. } => r(ReasonCode::Tls).with_detail(format!(
                "not the pinned certificate; the server sent {seen}"
            )),
            Self::Redirect {
                status, location, ..
            } => Reason::http(call, *status).with_detail(format!(
                "redirect to {} refused",
                location.as_deref().unwrap_or("<no location>")
            )),
            Self::Http {
                status,
                description,
                ..
            } => {
                let reason = Reason::http(call, *status);
                match description {
                    Some(d) => reason.with_detail(d),
                    None => reason,
                }
            }
            Self::Unauthorized { .. } => Reason {
                status: Some(401),
                ..r(ReasonCode::Unauthorized)
            },
            Self::Forbidden { description, .. } => {
                let reason = Reason {
                    status: Some(403),
                    ..r(ReasonCode::Forbidden)
                };
                match description {
                    Some(d) => reason.with_detail(d),
                    None => reason,
                }
            }
            Self::NotFound { description, .. } => {
                let reason = Reason::http(call, 404);
                match description {
                    Some(d) => reason.with_detail(d),
                    None => reason,
                }
            }
            Self::NotSupported { .. } => Reason {
                status: Some(404),
                ..r(ReasonCode::Other)
            }
            .with_detail("not supported by this cml"),
            Self::Credentials { .. } => r(ReasonCode::Credentials).with_detail(self.to_string()),
            Self::Decode { detail, .. } => r(ReasonCode::Decode).with_detail(detail),
            Self::BodyTooLarge { .. } => r(ReasonCode::Decode).with_detail(self.to_string()),
            Self::Request { detail, .. } => r(ReasonCode::Connect).with_detail(detail),
            Self::InvalidArgument { detail, .. } => r(ReasonCode::Other).with_detail(detail),
            Self::CircuitOpen { .. } => r(ReasonCode::CircuitOpen).with_detail(self.to_string()),
            Self::BulkheadFull { .. } => r(ReasonCode::Rejected).with_detail(self.to_string()),
            Self::BudgetExhausted { last, .. } => {
                // The call did fail for `last`'s reason; the budget only stopped a retry.
                let inner = last.reason(call);
                let detail = match &inner.detail {
                    Some(d) => format!("{d} (retry budget exhausted)"),
                    None => "retry budget exhausted".to_owned(),
                };
                inner.with_detail(detail)
            }
            Self::Config(e) => r(ReasonCode::Other).with_detail(e.to_string()),
        }
    }

    /// Converts the resilience layer's error into a `CmlError` for `endpoint`.
    pub(crate) fn from_call(endpoint: Endpoint, error: CallError<CmlError>) -> Self {
        match error {
            CallError::Inner(e) => e,
            CallError::CircuitOpen { retry_in, .. } => Self::CircuitOpen { endpoint, retry_in },
            CallError::BulkheadFull { name } => Self::BulkheadFull { endpoint, name },
            CallError::Timeout { after } => Self::Timeout { endpoint, after },
            CallError::DeadlineExceeded { after, last } => Self::DeadlineExceeded {
                endpoint,
                after,
                last: last.map(Box::new),
            },
            CallError::BudgetExhausted { last } => Self::BudgetExhausted {
                endpoint,
                last: Box::new(last),
            },
        }
    }

    /// A decode error with a scrubbed snippet of `body` (none at all for login answers,
    /// whose body is the token).
    pub(crate) fn decode(endpoint: Endpoint, detail: impl Into<String>, body: &[u8]) -> Self {
        let snippet = if endpoint.is_login() {
            "<login answer withheld>".to_owned()
        } else {
            snippet(body)
        };
        Self::Decode {
            endpoint,
            detail: scrub(&detail.into()),
            snippet,
        }
    }
}

/// The outcome of one sync call for [`ccm_domain::service::derive_status`]: answered, not
/// supported (404 on an optional endpoint), or failed with its reason.
pub fn call_outcome<T>(result: &Result<T, CmlError>, call: CmlCall) -> CallOutcome {
    match result {
        Ok(_) => CallOutcome::Answered,
        Err(e) if e.is_not_supported() => CallOutcome::NotSupported,
        Err(e) => CallOutcome::Failed(e.reason(call)),
    }
}

impl Classify for CmlError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Connect { .. }
            | Self::Request { .. }
            | Self::Timeout { .. }
            | Self::DeadlineExceeded { .. } => ErrorClass::Transient,
            Self::Http { status, .. } => match status {
                429 | 502 | 503 | 504 => ErrorClass::Transient,
                500..=599 => ErrorClass::Failure,
                _ => ErrorClass::Benign,
            },
            Self::Tls { .. }
            | Self::CertificateMismatch { .. }
            | Self::Redirect { .. }
            | Self::Unauthorized { .. }
            | Self::Decode { .. }
            | Self::BodyTooLarge { .. } => ErrorClass::Failure,
            Self::BudgetExhausted { last, .. } => last.class(),
            Self::Forbidden { .. }
            | Self::NotFound { .. }
            | Self::NotSupported { .. }
            | Self::Credentials { .. }
            | Self::InvalidArgument { .. }
            | Self::CircuitOpen { .. }
            | Self::BulkheadFull { .. }
            | Self::Config(_) => ErrorClass::Benign,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn reason(&self) -> Option<String> {
        Some(match self {
            Self::Connect { .. } => "connect error".to_owned(),
            Self::Timeout { .. } => "timeout".to_owned(),
            Self::Tls { .. } => "tls failure".to_owned(),
            Self::CertificateMismatch { .. } => "pinned certificate mismatch".to_owned(),
            Self::Redirect { status, .. } => format!("HTTP {status} redirect"),
            Self::Http { status, .. } => format!("HTTP {status}"),
            Self::Unauthorized { .. } => "HTTP 401 after re-login".to_owned(),
            Self::Decode { .. } => "decode error".to_owned(),
            Self::BodyTooLarge { .. } => "body too large".to_owned(),
            Self::Request { .. } => "connection failed".to_owned(),
            other => return other.status().map(|s| format!("HTTP {s}")),
        })
    }
}

/// How much of a body is scrubbed before the snippet is cut (generous, so that a token is
/// seen whole before the cut).
const SCRUB_WINDOW_BYTES: usize = 2048;

/// The start of a body: lossily decoded, scrubbed, then cut to [`SNIPPET_CHARS`].
pub(crate) fn snippet(body: &[u8]) -> String {
    let head = &body[..body.len().min(SCRUB_WINDOW_BYTES)];
    let text: String = String::from_utf8_lossy(head)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    scrub(&text).chars().take(SNIPPET_CHARS).collect()
}

/// Longest `Location` kept in a redirect error.
const LOCATION_CHARS: usize = 120;

/// A `Location` header made safe for errors and logs: user info, query and fragment dropped
/// (they may carry credentials or tokens), control characters removed, scrubbed and
/// shortened. A relative location keeps its path only.
pub(crate) fn location(raw: &str) -> String {
    let raw: String = raw
        .chars()
        .take(SCRUB_WINDOW_BYTES)
        .filter(|c| !c.is_control())
        .collect();
    let raw = raw.trim();
    let text = match url::Url::parse(raw) {
        Ok(mut url) if url.has_host() => {
            // Both setters only fail for URLs that cannot have user info, i.e. no host.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Ok(url) => url.scheme().to_owned() + ":",
        Err(_) => {
            // Relative (`/login?next=…`) or unreadable: the path before any query.
            let path = raw.split(['?', '#']).next().unwrap_or_default();
            // `//user:pw@host/x` is a scheme-relative URL: drop its user info too.
            match path.strip_prefix("//") {
                Some(rest) => {
                    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                    let host = authority.rsplit('@').next().unwrap_or_default();
                    format!("//{host}{tail}")
                }
                None => path.to_owned(),
            }
        }
    };
    scrub(&text).chars().take(LOCATION_CHARS).collect()
}

/// A CML error description, scrubbed and shortened.
pub(crate) fn description(text: &str) -> String {
    let head: String = text.chars().take(SCRUB_WINDOW_BYTES).collect();
    scrub(head.trim()).chars().take(DESCRIPTION_CHARS).collect()
}

/// Removes what may be a secret from text meant for errors and logs:
/// - single-quoted values (CML quotes a rejected licence token as `'<token>'`); an unclosed
///   quote hides everything after it;
/// - JWT-like runs (base64url and dots starting with `eyJ`, 20+ characters, even when cut)
///   and any base64url/dot run of 40+ characters (opaque tokens).
pub(crate) fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('\'') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('\'') {
            Some(close) => {
                out.push_str("'***'");
                rest = &after[close + 1..];
            }
            None => {
                out.push_str("'***");
                rest = "";
            }
        }
    }
    out.push_str(rest);
    scrub_tokens(&out)
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

fn scrub_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let jwt_like = word.len() >= 20 && word.starts_with("eyJ");
        if jwt_like || word.len() >= 40 {
            out.push_str("***");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if is_token_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIwMDAwIn0.c2lnbmF0dXJl";

    #[test]
    fn scrub_should_hide_tokens_and_quoted_values() {
        let text = format!("\"{JWT}\" and registration 'ABCDEF123token' is not valid");
        let s = scrub(&text);
        assert!(!s.contains("eyJ"), "{s}");
        assert!(!s.contains("ABCDEF123token"), "{s}");
        assert!(s.contains("is not valid"), "{s}");
        assert_eq!(scrub("2.9.0+build.3 is fine"), "2.9.0+build.3 is fine");
        assert_eq!(
            scrub("regid.2019-10.com.cisco.CML_ENT_BASE is kept"),
            "regid.2019-10.com.cisco.CML_ENT_BASE is kept"
        );
        assert_eq!(scrub("token 'SECRETcut-off"), "token '***");
        // A JWT cut anywhere after its header is still recognised.
        assert_eq!(scrub(&format!("x {}", &JWT[..30])), "x ***");
    }

    #[test]
    fn redirect_locations_should_lose_credentials_queries_and_fragments() {
        for (raw, want) in [
            (
                "https://u:pw@evil.example:8443/api/v0/authenticate?t=1#f",
                "https://evil.example:8443/api/v0/authenticate",
            ),
            ("//u:pw@evil.example/login?next=/x", "//evil.example/login"),
            ("/login?session=abc", "/login"),
            ("mailto:someone@example.com", "mailto:"),
            ("http://h/\u{7}bell", "http://h/bell"),
        ] {
            assert_eq!(location(raw), want, "{raw}");
        }
        let jwt_in_path = format!("http://h/{JWT}");
        assert_eq!(location(&jwt_in_path), "http://h/***");
    }

    #[test]
    fn snippets_should_be_scrubbed_before_they_are_cut() {
        let body = format!("{{\"version\": \"{}\"", "A".repeat(200));
        let s = snippet(body.as_bytes());
        assert!(!s.contains("AAAA"), "{s}");
        assert!(s.chars().count() <= SNIPPET_CHARS);
        let quoted = format!("{}'x'", "y ".repeat(59));
        assert!(snippet(quoted.as_bytes()).chars().count() <= SNIPPET_CHARS);
    }

    #[test]
    fn login_decode_errors_should_never_carry_the_body() {
        let e = CmlError::decode(Endpoint::Authenticate, "expected a string", JWT.as_bytes());
        assert!(!e.to_string().contains("eyJ"), "{e}");
        let e = CmlError::decode(Endpoint::SystemStats, "bad", b"{\"all\": 1");
        assert!(e.to_string().contains("{\\\"all\\\": 1"), "{e}");
    }

    #[test]
    fn classification_should_follow_the_resilience_contract() {
        let http = |status| CmlError::Http {
            endpoint: Endpoint::SystemHealth,
            status,
            code: None,
            description: None,
            retry_after: None,
        };
        for s in [429, 502, 503, 504] {
            assert_eq!(http(s).class(), ErrorClass::Transient, "{s}");
        }
        for s in [500, 501, 505] {
            assert_eq!(http(s).class(), ErrorClass::Failure, "{s}");
        }
        for s in [400, 409, 413] {
            assert_eq!(http(s).class(), ErrorClass::Benign, "{s}");
        }
        let e = Endpoint::Lab;
        let connect = CmlError::Connect {
            endpoint: e,
            detail: "refused".into(),
        };
        assert_eq!(connect.class(), ErrorClass::Transient);
        assert_eq!(
            CmlError::Unauthorized { endpoint: e }.class(),
            ErrorClass::Failure
        );
        assert_eq!(CmlError::decode(e, "x", b"").class(), ErrorClass::Failure);
        for benign in [
            CmlError::Forbidden {
                endpoint: e,
                description: None,
            },
            CmlError::NotFound {
                endpoint: e,
                description: None,
            },
            CmlError::NotSupported { endpoint: e },
            CmlError::Credentials {
                endpoint: Endpoint::AuthExtended,
                description: None,
            },
        ] {
            assert_eq!(benign.class(), ErrorClass::Benign, "{benign}");
        }
    }

    #[test]
    fn resilience_errors_should_map_to_typed_variants() {
        let e = Endpoint::SystemHealth;
        let inner = CmlError::Connect {
            endpoint: e,
            detail: "refused".into(),
        };
        assert_eq!(
            CmlError::from_call(e, CallError::Inner(inner.clone())),
            inner
        );
        assert!(matches!(
            CmlError::from_call(e, CallError::CircuitOpen { key: "k".into(), retry_in: Duration::from_secs(1) }),
            CmlError::CircuitOpen { retry_in, .. } if retry_in == Duration::from_secs(1)
        ));
        assert!(matches!(
            CmlError::from_call(e, CallError::BulkheadFull { name: "cml_poll".into() }),
            CmlError::BulkheadFull { name, .. } if name == "cml_poll"
        ));
        assert!(matches!(
            CmlError::from_call(e, CallError::Timeout { after: Duration::from_secs(15) }),
            CmlError::Timeout { after, .. } if after == Duration::from_secs(15)
        ));
        let deadline = CmlError::from_call(
            e,
            CallError::DeadlineExceeded {
                after: Duration::from_secs(60),
                last: Some(inner.clone()),
            },
        );
        assert_eq!(
            deadline.reason(CmlCall::SystemHealth).code,
            ReasonCode::Timeout
        );
        assert_eq!(deadline.class(), ErrorClass::Transient);
        let budget = CmlError::from_call(e, CallError::BudgetExhausted { last: inner });
        assert!(!budget.is_rejection() && budget.class() == ErrorClass::Transient);
        assert!(std::error::Error::source(&budget).is_some());
    }

    #[test]
    fn reasons_should_carry_code_status_and_detail() {
        let e = CmlError::Http {
            endpoint: Endpoint::SystemStats,
            status: 503,
            code: Some(503),
            description: Some("Service Unavailable".into()),
            retry_after: None,
        };
        let r = e.reason(CmlCall::SystemStats);
        assert_eq!(r.code, ReasonCode::HttpStatus);
        assert_eq!(r.status, Some(503));
        assert_eq!(r.detail.as_deref(), Some("Service Unavailable"));

        let budget = CmlError::BudgetExhausted {
            endpoint: Endpoint::SystemStats,
            last: Box::new(CmlError::Connect {
                endpoint: Endpoint::SystemStats,
                detail: "connection refused".into(),
            }),
        };
        let r = budget.reason(CmlCall::SystemStats);
        assert_eq!(r.code, ReasonCode::Connect);
        assert!(r.detail.unwrap().contains("budget"));

        let open = CmlError::CircuitOpen {
            endpoint: Endpoint::Licensing,
            retry_in: Duration::from_secs(3),
        };
        assert_eq!(
            open.reason(CmlCall::Licensing).code,
            ReasonCode::CircuitOpen
        );
        assert_eq!(
            call_outcome::<()>(
                &Err(CmlError::NotSupported {
                    endpoint: Endpoint::Licensing
                }),
                CmlCall::Licensing
            ),
            CallOutcome::NotSupported
        );
        assert_eq!(
            call_outcome(&Ok(1), CmlCall::Licensing),
            CallOutcome::Answered
        );
    }
}
