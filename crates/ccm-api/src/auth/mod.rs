//! Authentication and roles.
//!
//! - **Bearer tokens** (`Authorization: Bearer …`): static API tokens from the configuration
//!   (compared as SHA-256 hashes, in constant time) or OIDC JWTs (RS256, keys from the
//!   provider's JWKS; see [`oidc`]).
//! - **Browser sessions**: `POST /api/v1/session` (or the OIDC sign-in) sets an opaque,
//!   HttpOnly, SameSite=Strict cookie; state-changing requests made with the cookie must echo
//!   the session's CSRF token in `X-CSRF-Token`. Bearer requests are exempt.
//! - **Roles** ([`Role`]): `viewer` < `lab_operator` < `manager` < `admin`; each route's minimum is in
//!   [`crate::routes::ROUTES`] and enforced by [`guard`] before any handler runs.
//! - **Failed sign-ins** are rate limited per client address ([`limit`]).

pub(crate) mod limit;
pub(crate) mod oidc;
pub(crate) mod session;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ccm_domain::Actor;
use http::request::Parts;
use http::{HeaderMap, Method, header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::config::{AuthConfig, ConfigError};
use crate::error::ApiError;
use crate::routes::{self, Access};
use crate::state::ApiState;

pub(crate) use session::SESSION_COOKIE;

/// What a caller may do. Ordered: `viewer` < `lab_operator` < `manager` < `admin`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Run lab actions (start, stop, wipe, import; download is a read) and refresh a worker —
    /// what people using the labs need, without operating the instances.
    LabOperator,
    /// Operate workers, labs and licences.
    Manager,
    /// Everything, including terminate, delete, settings and jobs.
    Admin,
}

impl Role {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::LabOperator => "lab_operator",
            Self::Manager => "manager",
            Self::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A static API token.
    Token,
    /// An OIDC JWT (or a sign-in through the OIDC provider).
    Oidc,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Their name as recorded on what they do (`token:ci-bot`, `alice`).
    pub name: String,
    /// Their role.
    pub role: Role,
    /// How they authenticated.
    pub method: AuthMethod,
}

impl Principal {
    /// The actor recorded on their commands.
    pub fn actor(&self) -> Actor {
        Actor::user(&self.name)
    }
}

/// The caller of a request that passed [`guard`]: a handler extractor.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// The session, when the request came with the session cookie (not a bearer token).
    pub session: Option<session::SessionInfo>,
}

impl Caller {
    /// The actor recorded on their commands.
    pub fn actor(&self) -> Actor {
        self.principal.actor()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("authentication required"))
    }
}

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    /// No credential at all.
    #[error("authentication required: send `Authorization: Bearer <token>` or sign in")]
    Missing,
    /// The credential is not valid (the reason never contains the credential).
    #[error("the token is not valid: {0}")]
    Invalid(String),
    /// Valid, but grants no ccm role.
    #[error("the token is valid but grants no ccm role")]
    NoRole,
    /// The identity provider could not be asked.
    #[error("the identity provider is unavailable: {0}")]
    Provider(String),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match &e {
            AuthError::Missing => ApiError::unauthorized(e.to_string()),
            AuthError::Invalid(_) => ApiError::invalid_token(e.to_string()),
            AuthError::NoRole => ApiError::forbidden(e.to_string()),
            AuthError::Provider(_) => ApiError::unavailable(e.to_string(), None),
        }
    }
}

/// A static token, by the hash of its text.
struct StaticToken {
    name: String,
    role: Role,
    hash: [u8; 32],
}

/// Checks credentials: static tokens, OIDC JWTs, sessions; and limits failed sign-ins.
pub(crate) struct Authenticator {
    tokens: Vec<StaticToken>,
    pub(crate) oidc: Option<oidc::Oidc>,
    pub(crate) sessions: session::SessionStore,
    pub(crate) limiter: limit::SignInLimiter,
    pub(crate) config: AuthConfig,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("tokens", &self.tokens.len())
            .field("oidc", &self.oidc.is_some())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds it from a validated configuration.
    pub(crate) fn new(
        config: AuthConfig,
        sessions: Option<std::sync::Arc<dyn ccm_store::SessionRepo>>,
    ) -> Result<Self, ConfigError> {
        let tokens = config
            .tokens
            .iter()
            .filter_map(|t| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&t.sha256, &mut hash).ok()?;
                Some(StaticToken {
                    name: t.name.clone(),
                    role: t.role,
                    hash,
                })
            })
            .collect();
        let oidc = match &config.oidc {
            Some(o) => Some(oidc::Oidc::new(o.clone()).map_err(|message| ConfigError {
                key: "auth.oidc".into(),
                message,
            })?),
            None => None,
        };
        Ok(Self {
            tokens,
            oidc,
            sessions: session::SessionStore::new(config.session_ttl, config.max_sessions, sessions),
            limiter: limit::SignInLimiter::new(config.sign_in_limit),
            config,
        })
    }

    /// The static token whose hash matches, compared in constant time against every one.
    fn static_token(&self, presented: &str) -> Option<Principal> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.hash.ct_eq(&hash)) {
                found = Some(Principal {
                    name: format!("token:{}", t.name),
                    role: t.role,
                    method: AuthMethod::Token,
                });
            }
        }
        found
    }

    /// Checks a bearer credential: a static token, else (when it looks like a JWT and OIDC
    /// is configured) an OIDC token.
    pub(crate) async fn bearer(&self, token: &str) -> Result<Principal, AuthError> {
        let token = token.trim();
        if token.is_empty() || token.len() > 16 * 1024 {
            return Err(AuthError::Invalid("empty or oversized".into()));
        }
        if let Some(p) = self.static_token(token) {
            return Ok(p);
        }
        match &self.oidc {
            Some(oidc) if token.split('.').count() == 3 => oidc.authenticate(token).await,
            _ => Err(AuthError::Invalid("unknown token".into())),
        }
    }
}

/// The bearer token of a request, if it sent `Authorization`. A header that is not
/// `Bearer <token>` is an error.
fn bearer_of(headers: &HeaderMap) -> Option<Result<&str, AuthError>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let Ok(text) = value.to_str() else {
        return Some(Err(AuthError::Invalid(
            "malformed Authorization header".into(),
        )));
    };
    let mut parts = text.splitn(2, ' ');
    let scheme = parts.next().unwrap_or_default();
    let token = parts.next().unwrap_or_default().trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Some(Err(AuthError::Invalid(
            "the Authorization header must be `Bearer <token>`".into(),
        )));
    }
    Some(Ok(token))
}

/// Whether a method changes state (and so needs the CSRF token with a cookie session).
fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The client's address: the connection's peer, or the first `X-Forwarded-For` entry behind
/// a trusted proxy.
pub(crate) fn client_ip(
    parts_headers: &HeaderMap,
    extensions: &http::Extensions,
    trust_forwarded: bool,
) -> IpAddr {
    if trust_forwarded
        && let Some(ip) = parts_headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
    {
        return ip;
    }
    extensions
        .get::<axum::extract::ConnectInfo<crate::serve::ClientAddr>>()
        .map(|c| c.0.0.ip())
        .or_else(|| {
            extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The middleware on every route: looks up the route's access rule, authenticates the
/// caller (bearer first, then the session cookie with its CSRF check) and checks the role.
/// Routes without a rule are refused (fail closed).
pub(crate) async fn guard(
    State(state): State<ApiState>,
    matched: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = matched.as_ref().map(MatchedPath::as_str).unwrap_or("");
    let access = match routes::access(req.method(), path) {
        Some(a) => a,
        // Another method of a known path: let the router answer 405.
        None if routes::is_known_path(path) => return next.run(req).await,
        None => {
            tracing::error!(path, method = %req.method(), "route has no access rule; refused");
            return ApiError::forbidden("this route has no access rule").into_response();
        }
    };
    let Access::Role(required) = access else {
        return next.run(req).await;
    };
    match authenticate(&state, req.method(), req.headers()).await {
        Ok(caller) => {
            if caller.principal.role < required {
                return ApiError::forbidden(format!(
                    "this needs the {required} role; {} has {}",
                    caller.principal.name, caller.principal.role
                ))
                .into_response();
            }
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

async fn authenticate(
    state: &ApiState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let auth = state.auth();
    if let Some(bearer) = bearer_of(headers) {
        let token = bearer?;
        return match auth.bearer(token).await {
            Ok(principal) => Ok(Caller {
                principal,
                session: None,
            }),
            Err(e) => {
                metrics::counter!("ccm_auth_failures_total", "method" => "bearer").increment(1);
                tracing::debug!(reason = %e, "bearer token refused");
                Err(e.into())
            }
        };
    }
    if let Some(id) = session::cookie_of(headers) {
        let Some(info) = auth.sessions.get(id).await else {
            return Err(ApiError::unauthorized(
                "the session has expired or was signed out; sign in again",
            ));
        };
        if is_unsafe(method) {
            let sent = headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !bool::from(sent.as_bytes().ct_eq(info.csrf_token.as_bytes())) {
                metrics::counter!("ccm_auth_failures_total", "method" => "csrf").increment(1);
                return Err(ApiError::forbidden(
                    "a state-changing request with the session cookie needs the session's X-CSRF-Token header",
                ));
            }
        }
        return Ok(Caller {
            principal: info.principal.clone(),
            session: Some(info),
        });
    }
    Err(AuthError::Missing.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::hash_token;

    #[tokio::test]
    async fn static_tokens_should_match_by_hash_only() {
        let config = AuthConfig::default()
            .with_token("ci", Role::Manager, "tok-1")
            .with_token("ops", Role::Admin, "tok-2");
        let a = Authenticator::new(config, None).unwrap();
        let p = a.bearer("tok-2").await.unwrap();
        assert_eq!(p.name, "token:ops");
        assert_eq!(p.role, Role::Admin);
        assert_eq!(a.bearer("tok-1").await.unwrap().role, Role::Manager);
        assert!(matches!(
            a.bearer("tok-3").await,
            Err(AuthError::Invalid(_))
        ));
        // The hash itself is not a token.
        assert!(a.bearer(&hash_token("tok-1")).await.is_err());
    }

    #[test]
    fn roles_should_be_ordered() {
        assert!(Role::Viewer < Role::LabOperator);
        assert!(Role::LabOperator < Role::Manager && Role::Manager < Role::Admin);
    }

    #[test]
    fn roles_should_have_snake_case_names() {
        for (role, name) in [
            (Role::Viewer, "viewer"),
            (Role::LabOperator, "lab_operator"),
            (Role::Manager, "manager"),
            (Role::Admin, "admin"),
        ] {
            assert_eq!(role.as_str(), name);
            assert_eq!(serde_json::to_value(role).unwrap(), name);
            assert_eq!(serde_json::from_value::<Role>(name.into()).unwrap(), role);
        }
    }

    #[test]
    fn only_bearer_authorization_should_be_accepted() {
        let mut h = HeaderMap::new();
        assert!(bearer_of(&h).is_none());
        h.insert(header::AUTHORIZATION, "Basic YWJjOmRlZg==".parse().unwrap());
        assert!(matches!(bearer_of(&h), Some(Err(_))));
        h.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer_of(&h).unwrap().unwrap(), "abc");
    }
}
