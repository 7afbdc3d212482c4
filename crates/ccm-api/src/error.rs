//! [`ApiError`]: every failure the API reports, as one RFC 9457 `application/problem+json`
//! shape, and the mapping from [`EngineError`] to status codes.
//!
//! Nothing a client sends yields 500: bad input is 400/413/415/422 naming the field, unknown
//! ids 404, state conflicts 409, sick dependencies 502/503/504. 500 is left for bugs (a
//! handler that panics is caught and answered with a problem, never a dropped connection).

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use ccm_engine::{EngineError, PolicyRefusal, RefusalKind, UpstreamError, UpstreamKind};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One RFC 9457 problem document, as sent to clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:ccm:problem:not-found`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP reason phrase (`Not Found`).
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for a person; names the field when input was bad.
    pub detail: String,
    /// The offending input field (`name`, `tags.env`, query `limit`, path `id`), when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// When to try again (also the `Retry-After` header), for 429 and 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    /// The configured guardrail that refused the request, by its configuration key
    /// (`provisioning.allowed_instance_types`, `provisioning.ami_owners`,
    /// `provisioning.max_workers`, `import`), for `urn:ccm:problem:policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// An error answer. Build with the constructors; convert from [`EngineError`].
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    field: Option<String>,
    retry_after: Option<u64>,
    rule: Option<&'static str>,
    www_authenticate: Option<&'static str>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.kind, self.detail)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// A problem with a status, a short kind (`not-found`) and a detail.
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
            field: None,
            retry_after: None,
            rule: None,
            www_authenticate: None,
        }
    }

    /// 400: malformed input (syntax, unknown parameter, wrong shape of a path id).
    pub fn bad_request(field: Option<&str>, detail: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "bad-request", detail);
        e.field = field.map(str::to_owned);
        e
    }

    /// 422: well-formed input with an invalid value.
    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail);
        e.field = Some(field.to_owned());
        e
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    /// 409.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    /// 401 with a `WWW-Authenticate: Bearer` challenge.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail);
        e.www_authenticate = Some("Bearer realm=\"ccm\"");
        e
    }

    /// 401 for a token that was presented but is not valid.
    pub fn invalid_token(detail: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail);
        e.www_authenticate = Some("Bearer realm=\"ccm\", error=\"invalid_token\"");
        e
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// A guardrail's refusal: 403 (the caller's role), 409 (a limit reached) or 422 (a value
    /// the configuration does not allow), kind `policy`, naming the rule and the field.
    pub fn refused(refusal: PolicyRefusal) -> Self {
        let status = match refusal.kind {
            RefusalKind::Role => StatusCode::FORBIDDEN,
            RefusalKind::Limit => StatusCode::CONFLICT,
            RefusalKind::NotAllowed => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let mut e = Self::new(status, "policy", refusal.message);
        e.field = refusal.field.map(str::to_owned);
        e.rule = Some(refusal.rule);
        e
    }

    /// 429 with `Retry-After`.
    pub fn too_many(detail: impl Into<String>, retry_after: Duration) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "too-many-requests", detail);
        e.retry_after = Some(retry_after.as_secs().max(1));
        e
    }

    /// 503, with `Retry-After` when known.
    pub fn unavailable(detail: impl Into<String>, retry_after: Option<Duration>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail);
        e.retry_after = retry_after.map(|d| d.as_secs().max(1));
        e
    }

    /// 502: a dependency (the cloud, a CML instance) failed.
    pub fn bad_gateway(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream-failed", detail)
    }

    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// 415.
    pub fn unsupported_media(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            detail,
        )
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The detail text.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The field named, if any.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("urn:ccm:problem:{}", self.kind),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            field: self.field.clone(),
            retry_after_seconds: self.retry_after,
            rule: self.rule.map(str::to_owned),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), kind = self.kind, detail = %self.detail, "request failed");
        } else {
            tracing::debug!(status = self.status.as_u16(), kind = self.kind, detail = %self.detail, "request refused");
        }
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut res = (self.status, body).into_response();
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(challenge) = self.www_authenticate {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        res
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::NotFound { .. } => Self::not_found(err.to_string()),
            EngineError::Conflict(message) => Self::conflict(message),
            EngineError::Invalid { field, message } => Self::invalid(&field, message),
            EngineError::Refused(refusal) => Self::refused(refusal),
            EngineError::Upstream(e) => from_upstream(&e),
            EngineError::Store(e) => {
                tracing::error!(error = %e, "database failure");
                Self::unavailable("the database is unavailable; try again shortly", None)
            }
            EngineError::ShuttingDown => {
                Self::unavailable("ccm is shutting down", Some(Duration::from_secs(5)))
            }
        }
    }
}

/// The one answer for each kind of upstream failure (the engine classified it).
fn from_upstream(e: &UpstreamError) -> ApiError {
    let detail = e.to_string();
    match e.kind() {
        UpstreamKind::NotFound => ApiError::not_found(detail),
        UpstreamKind::Invalid => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail),
        UpstreamKind::Conflict => ApiError::conflict(detail),
        UpstreamKind::Throttled | UpstreamKind::Unavailable => {
            ApiError::unavailable(detail, e.retry_after())
        }
        UpstreamKind::Timeout => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "upstream-timeout", detail)
        }
        UpstreamKind::NotImplemented => {
            ApiError::new(StatusCode::NOT_IMPLEMENTED, "not-implemented", detail)
        }
        UpstreamKind::BadGateway => ApiError::bad_gateway(detail),
    }
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(kind: UpstreamKind) -> EngineError {
        EngineError::Upstream(UpstreamError::new(kind, "upstream said no"))
    }

    #[test]
    fn engine_errors_should_map_to_their_statuses() {
        let cases: Vec<(EngineError, u16, &str)> = vec![
            (
                EngineError::NotFound {
                    what: "worker",
                    id: "x".into(),
                },
                404,
                "not-found",
            ),
            (EngineError::Conflict("busy".into()), 409, "conflict"),
            (EngineError::invalid("name", "empty"), 422, "invalid"),
            (EngineError::ShuttingDown, 503, "unavailable"),
            (upstream(UpstreamKind::NotFound), 404, "not-found"),
            (upstream(UpstreamKind::Invalid), 422, "invalid"),
            (upstream(UpstreamKind::Conflict), 409, "conflict"),
            (upstream(UpstreamKind::Throttled), 503, "unavailable"),
            (upstream(UpstreamKind::Unavailable), 503, "unavailable"),
            (upstream(UpstreamKind::Timeout), 504, "upstream-timeout"),
            (
                upstream(UpstreamKind::NotImplemented),
                501,
                "not-implemented",
            ),
            (upstream(UpstreamKind::BadGateway), 502, "upstream-failed"),
        ];
        for (err, status, kind) in cases {
            let text = err.to_string();
            let p = ApiError::from(err).problem();
            assert_eq!(p.status, status, "{text}");
            assert_eq!(p.kind, format!("urn:ccm:problem:{kind}"), "{text}");
        }
    }

    #[test]
    fn a_throttled_upstream_should_say_when_to_retry() {
        let api = ApiError::from(EngineError::Upstream(
            UpstreamError::new(UpstreamKind::Throttled, "slow down")
                .with_retry_after(Duration::from_secs(7)),
        ));
        assert_eq!(api.detail(), "slow down");
        let res = api.into_response();
        assert_eq!(res.headers()[header::RETRY_AFTER], "7");
        assert_eq!(res.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[test]
    fn an_invalid_upstream_parameter_should_name_no_field() {
        let p = ApiError::from(upstream(UpstreamKind::Invalid)).problem();
        assert_eq!(p.field, None);
    }

    #[test]
    fn guardrail_refusals_should_name_their_rule_with_the_status_of_their_kind() {
        for (kind, status) in [
            (RefusalKind::Role, 403),
            (RefusalKind::Limit, 409),
            (RefusalKind::NotAllowed, 422),
        ] {
            let refusal = PolicyRefusal::new(kind, "provisioning.max_workers", "at the cap")
                .field("instance_type");
            let p = ApiError::from(EngineError::Refused(refusal)).problem();
            assert_eq!(p.status, status);
            assert_eq!(p.kind, "urn:ccm:problem:policy");
            assert_eq!(p.rule.as_deref(), Some("provisioning.max_workers"));
            assert_eq!(p.field.as_deref(), Some("instance_type"));
            assert_eq!(p.detail, "at the cap");
        }
    }

    #[test]
    fn invalid_input_should_name_the_field() {
        let p = ApiError::from(EngineError::invalid("tags", "too long")).problem();
        assert_eq!(p.status, 422);
        assert_eq!(p.field.as_deref(), Some("tags"));
        assert_eq!(p.kind, "urn:ccm:problem:invalid");
        assert_eq!(p.title, "Unprocessable Entity");
    }
}
