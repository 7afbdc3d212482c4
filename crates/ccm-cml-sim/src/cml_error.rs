//! The `{code, description}` error that every non-2xx CML answer carries.

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

/// A CML error answer: the status and the description of the `{code, description}` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CmlError {
    pub(crate) status: StatusCode,
    pub(crate) description: Cow<'static, str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: u16,
    description: &'a str,
}

impl CmlError {
    pub(crate) fn new(status: StatusCode, description: impl Into<Cow<'static, str>>) -> Self {
        CmlError {
            status,
            description: description.into(),
        }
    }

    pub(crate) fn bad_request(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, d)
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "No proper authentication was provided.",
        )
    }

    pub(crate) fn forbidden(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, d)
    }

    pub(crate) fn not_found(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, d)
    }

    pub(crate) fn conflict(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, d)
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&ErrorBody {
            code: self.status.as_u16(),
            description: &self.description,
        })
        .unwrap_or_default()
    }
}

impl IntoResponse for CmlError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, self.body()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

impl From<CmlError> for crate::SimError {
    fn from(e: CmlError) -> Self {
        crate::SimError::Refused {
            status: e.status.as_u16(),
            description: e.description.into_owned(),
        }
    }
}
