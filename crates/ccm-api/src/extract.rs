//! Extractors that validate input and fail as problem+json naming the field: JSON bodies
//! ([`JsonBody`]: media type, size limit, unknown fields refused), query strings ([`Query`]:
//! repeated keys or comma lists, unknown parameters refused) and path ids ([`WorkerPath`],
//! [`LabPath`], [`JobPath`]).

use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use bytes::Bytes;
use ccm_domain::{LabId, WorkerId};
use ccm_engine::JobKind;
use http::request::Parts;
use http::{HeaderMap, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest JSON body accepted (1 MiB).
pub const MAX_JSON_BODY: usize = 1024 * 1024;
/// Largest lab topology accepted (2 MiB).
pub const MAX_TOPOLOGY_BODY: usize = 2 * 1024 * 1024;

/// The media type of a request, lowercased, without parameters.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

fn is_json(media: &str) -> bool {
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// Whether `E` is anywhere in the error's chain of sources.
fn caused_by<E: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.is::<E>() {
            return true;
        }
        cur = c.source();
    }
    false
}

/// Reads the body up to `limit` bytes (413 beyond; 408 when it does not arrive within
/// `server.body_read_timeout`).
pub(crate) async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(ApiError::too_large(limit));
    }
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            let timed_out = caused_by::<crate::serve::BodyTimeout>(&e);
            if too_large {
                ApiError::too_large(limit)
            } else if timed_out {
                ApiError::new(
                    http::StatusCode::REQUEST_TIMEOUT,
                    "request-timeout",
                    "the request body did not arrive in time (server.body_read_timeout)",
                )
            } else {
                ApiError::bad_request(None, "the request body could not be read")
            }
        })
}

/// The field an unknown-field error names (`unknown field `foo`, expected …`).
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// The dotted path of an unknown field: serde_path_to_error's path already ends with it.
pub(crate) fn unknown_field_path(path: &str, field: &str) -> String {
    if path == "." || path.is_empty() {
        field.to_owned()
    } else if path == field || path.ends_with(&format!(".{field}")) {
        path.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// Parses JSON into `T`, naming the offending field: syntax errors are 400, wrong values and
/// unknown fields 422.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(None, "a JSON body is required"));
    }
    // Every body of this API is an object (serde would also take a struct as an array).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::invalid("body", "body: must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(&mut de) {
        Ok(v) => match de.end() {
            Ok(()) => Ok(v),
            Err(e) => Err(ApiError::bad_request(
                None,
                format!("the body is not valid JSON: {e}"),
            )),
        },
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let message = inner.to_string();
            match inner.classify() {
                serde_json::error::Category::Data => {
                    let field = match unknown_field(&message) {
                        Some(f) => unknown_field_path(&path, f),
                        None if path == "." => "body".to_owned(),
                        None => path,
                    };
                    let message = message.split(" at line ").next().unwrap_or(&message);
                    Err(ApiError::invalid(&field, format!("{field}: {message}")))
                }
                _ => Err(ApiError::bad_request(
                    None,
                    format!("the body is not valid JSON: {message}"),
                )),
            }
        }
    }
}

/// A JSON body (`application/json` or `application/*+json`, at most 1 MiB, unknown fields
/// refused by the target type).
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        match media_type(req.headers()) {
            Some(m) if is_json(&m) => {}
            Some(m) => {
                return Err(ApiError::unsupported_media(format!(
                    "expected Content-Type application/json, got {m}"
                )));
            }
            None => {
                return Err(ApiError::unsupported_media(
                    "expected Content-Type application/json",
                ));
            }
        }
        let bytes = read_body(req, MAX_JSON_BODY).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A query string parsed into `T` (repeated keys for lists; unknown parameters refused by
/// `deny_unknown_fields` on `T`).
#[derive(Debug, Clone)]
pub struct Query<T>(pub T);

/// Parses a query string, naming the offending parameter.
pub(crate) fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    if query.len() > 8192 {
        return Err(ApiError::bad_request(None, "the query string is too long"));
    }
    let de = serde_html_form::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let message = err.into_inner().to_string();
        let field = match unknown_field(&message) {
            Some(f) => f.to_owned(),
            None if path == "." => "query".to_owned(),
            None => path,
        };
        ApiError::bad_request(Some(&field), format!("query parameter {field}: {message}"))
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or("")).map(Query)
    }
}

async fn path_params<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<HashMap<String, String>, ApiError> {
    Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map(|Path(p)| p)
        .map_err(|e| ApiError::bad_request(None, format!("bad path: {e}")))
}

fn worker_id(params: &HashMap<String, String>) -> Result<WorkerId, ApiError> {
    let raw = params.get("id").map(String::as_str).unwrap_or("");
    raw.parse::<WorkerId>()
        .map_err(|e| ApiError::bad_request(Some("id"), format!("path id: {e}")))
}

/// `{id}`: a worker id (a UUID).
#[derive(Debug, Clone, Copy)]
pub struct WorkerPath(pub WorkerId);

impl<S: Send + Sync> FromRequestParts<S> for WorkerPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let p = path_params(parts, state).await?;
        Ok(Self(worker_id(&p)?))
    }
}

/// `{id}` and `{lab_id}`: a worker and one of its labs.
#[derive(Debug, Clone)]
pub struct LabPath(pub WorkerId, pub LabId);

impl<S: Send + Sync> FromRequestParts<S> for LabPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let p = path_params(parts, state).await?;
        let id = worker_id(&p)?;
        let raw = p.get("lab_id").map(String::as_str).unwrap_or("");
        let lab = LabId::parse(raw)
            .map_err(|e| ApiError::bad_request(Some("lab_id"), format!("path lab_id: {e}")))?;
        Ok(Self(id, lab))
    }
}

/// `{job}`: a job name.
#[derive(Debug, Clone, Copy)]
pub struct JobPath(pub JobKind);

impl<S: Send + Sync> FromRequestParts<S> for JobPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let p = path_params(parts, state).await?;
        let raw = p.get("job").map(String::as_str).unwrap_or("");
        JobKind::parse(raw).map(Self).ok_or_else(|| {
            let names: Vec<_> = JobKind::ALL.iter().map(|j| j.as_str()).collect();
            ApiError::not_found(format!(
                "no job {:?}; jobs are {}",
                raw.chars().take(64).collect::<String>(),
                names.join(", ")
            ))
        })
    }
}

/// Splits list parameters given as repeated keys and/or comma lists.
pub(crate) fn split_list(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        #[serde(default)]
        tags: std::collections::BTreeMap<String, String>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    #[test]
    fn json_errors_should_name_the_field() {
        let e = parse_json::<Body>(br#"{"name": 5}"#).unwrap_err();
        assert_eq!((e.status().as_u16(), e.field()), (422, Some("name")));
        let e = parse_json::<Body>(br#"{"name": "a", "nmae": 1}"#).unwrap_err();
        assert_eq!(e.field(), Some("nmae"));
        let e = parse_json::<Body>(br#"{"name": "a", "inner": {"count": -1}}"#).unwrap_err();
        assert_eq!(e.field(), Some("inner.count"));
        let e = parse_json::<Body>(br#"{"name": "a", "inner": {"cuont": 1}}"#).unwrap_err();
        assert_eq!(e.field(), Some("inner.cuont"));
        let e = parse_json::<Body>(br#"{"tags": {}}"#).unwrap_err();
        assert!(e.detail().contains("name"), "{}", e.detail());
        let e = parse_json::<Body>(br#"{"name": "a""#).unwrap_err();
        assert_eq!(e.status().as_u16(), 400);
        let e = parse_json::<Body>(br#"{"name": "a"} trailing"#).unwrap_err();
        assert_eq!(e.status().as_u16(), 400);
        assert_eq!(parse_json::<Body>(b"").unwrap_err().status().as_u16(), 400);
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Q {
        #[serde(default)]
        state: Vec<String>,
        limit: Option<u32>,
    }

    #[test]
    fn query_strings_should_take_repeated_keys_and_name_bad_parameters() {
        let q: Q = parse_query("state=running&state=stopped,pending&limit=5").unwrap();
        assert_eq!(split_list(&q.state), ["running", "stopped", "pending"]);
        assert_eq!(q.limit, Some(5));
        let e = parse_query::<Q>("limit=abc").unwrap_err();
        assert_eq!((e.status().as_u16(), e.field()), (400, Some("limit")));
        let e = parse_query::<Q>("limt=1").unwrap_err();
        assert_eq!(e.field(), Some("limt"));
        assert!(parse_query::<Q>("").unwrap().state.is_empty());
    }
}
