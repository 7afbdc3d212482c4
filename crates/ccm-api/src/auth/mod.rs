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
//! - **Failed sign-ins** are rate limited per client address ([`limit`]): failed sign-ins,
//!   failed OIDC callbacks and failed bearer tokens on any route count against one limit; an
//!   address over it is refused (429) whatever it sends. Starting OIDC sign-ins has a limit of
//!   its own. Behind a proxy the client address is the right-most `X-Forwarded-For` hop that
//!   is not a trusted proxy ([`forwarded_client`]).

pub(crate) mod limit;
pub(crate) mod oidc;
pub(crate) mod session;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ccm_domain::Actor;
use chrono::{DateTime, Utc};
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

pub(crate) use session::{Credential, SESSION_COOKIE};

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
    /// Every role, least privileged first.
    pub const ALL: [Role; 4] = [Self::Viewer, Self::LabOperator, Self::Manager, Self::Admin];

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
    /// When the bearer credential expires (an OIDC token's `exp`), if it does.
    pub(crate) bearer_expires: Option<DateTime<Utc>>,
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
    sha256: String,
}

/// A credential that checked out: who, from what, until when.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub(crate) principal: Principal,
    pub(crate) credential: Credential,
    /// The credential's own expiry (an OIDC token's `exp`), if any.
    pub(crate) expires_at: Option<DateTime<Utc>>,
}

/// Checks credentials: static tokens, OIDC JWTs, sessions; and limits failed sign-ins.
pub(crate) struct Authenticator {
    tokens: Vec<StaticToken>,
    pub(crate) oidc: Option<oidc::Oidc>,
    pub(crate) sessions: session::SessionStore,
    pub(crate) limiter: limit::SignInLimiter,
    pub(crate) start_limiter: limit::StartLimiter,
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
                    sha256: t.sha256.clone(),
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
            sessions: session::SessionStore::new(
                config.session_ttl,
                config.max_sessions,
                sessions,
                session::Accepted::from_config(&config),
            ),
            limiter: limit::SignInLimiter::new(config.sign_in_limit),
            start_limiter: limit::StartLimiter::new(config.sign_in_start_limit),
        })
    }

    /// The static token whose hash matches, compared in constant time against every one.
    fn static_token(&self, presented: &str) -> Option<Verified> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.hash.ct_eq(&hash)) {
                found = Some(Verified {
                    principal: Principal {
                        name: format!("token:{}", t.name),
                        role: t.role,
                        method: AuthMethod::Token,
                    },
                    credential: Credential::Token {
                        name: t.name.clone(),
                        sha256: t.sha256.clone(),
                    },
                    expires_at: None,
                });
            }
        }
        found
    }

    /// Checks a bearer credential: a static token, else (when it looks like a JWT and OIDC
    /// is configured) an OIDC token.
    pub(crate) async fn bearer(&self, token: &str) -> Result<Verified, AuthError> {
        let token = token.trim();
        if token.is_empty() || token.len() > 16 * 1024 {
            return Err(AuthError::Invalid("empty or oversized".into()));
        }
        if let Some(v) = self.static_token(token) {
            return Ok(v);
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

/// The peer address of the connection (unspecified when the request came in process).
fn peer_of(extensions: &http::Extensions) -> IpAddr {
    extensions
        .get::<axum::extract::ConnectInfo<crate::serve::ClientAddr>>()
        .map(|c| c.0.0.ip())
        .or_else(|| {
            extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        .to_canonical()
}

fn trusted(ip: IpAddr, proxies: &[ipnet::IpNet]) -> bool {
    proxies.iter().any(|n| n.contains(&ip))
}

/// One `X-Forwarded-For` hop: an address, possibly with a port (`[v6]:p`, `v4:p`).
fn hop(text: &str) -> Option<IpAddr> {
    let t = text.trim();
    t.parse::<IpAddr>()
        .ok()
        .or_else(|| t.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

/// The client behind trusted proxies: walking `X-Forwarded-For` from the right (the hop the
/// nearest proxy appended), the first address that is not a trusted proxy. Hops further left
/// were written by the client and are never believed. A peer that is not itself a trusted
/// proxy is the client, whatever it sends; an unreadable hop stops the walk at the last
/// trusted address.
pub(crate) fn forwarded_client(
    peer: IpAddr,
    headers: &HeaderMap,
    proxies: &[ipnet::IpNet],
) -> IpAddr {
    if !trusted(peer, proxies) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for h in hops.iter().rev() {
        match hop(h) {
            Some(ip) if trusted(ip, proxies) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

/// The client's address: the connection's peer, or behind a trusted proxy (with
/// `api.trust_forwarded_headers`) the address [`forwarded_client`] finds.
pub(crate) fn client_ip(
    state: &ApiState,
    headers: &HeaderMap,
    extensions: &http::Extensions,
) -> IpAddr {
    let peer = peer_of(extensions);
    if state.config().trust_forwarded_headers {
        forwarded_client(peer, headers, state.proxies())
    } else {
        peer
    }
}

/// Whether a trusted proxy says the request came over HTTPS (`X-Forwarded-Proto`).
pub(crate) fn forwarded_https(
    state: &ApiState,
    headers: &HeaderMap,
    extensions: &http::Extensions,
) -> bool {
    state.config().trust_forwarded_headers
        && trusted(peer_of(extensions), state.proxies())
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next_back())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// 429: the address made too many failed attempts.
pub(crate) fn too_many(wait: Duration) -> ApiError {
    ApiError::too_many(
        "too many failed sign-ins from this address; wait and try again",
        wait,
    )
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
    match authenticate(&state, req.method(), req.headers(), req.extensions()).await {
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
    extensions: &http::Extensions,
) -> Result<Caller, ApiError> {
    let auth = state.auth();
    if let Some(bearer) = bearer_of(headers) {
        // Bearer tokens can be guessed on any route: the sign-in limit covers them too.
        let ip = client_ip(state, headers, extensions);
        auth.limiter.check(ip).map_err(too_many)?;
        let result = match bearer {
            Ok(token) => auth.bearer(token).await,
            Err(e) => Err(e),
        };
        return match result {
            Ok(v) => Ok(Caller {
                principal: v.principal,
                session: None,
                bearer_expires: v.expires_at,
            }),
            Err(e) => {
                metrics::counter!(crate::metrics::AUTH_FAILURES, "method" => "bearer").increment(1);
                tracing::debug!(client = %ip, reason = %e, "bearer token refused");
                if matches!(e, AuthError::Invalid(_)) {
                    auth.limiter.failed(ip).map_err(too_many)?;
                }
                Err(e.into())
            }
        };
    }
    let cookie = state.cookies().name(SESSION_COOKIE);
    if let Some(id) = session::cookie_of(headers, &cookie) {
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
                metrics::counter!(crate::metrics::AUTH_FAILURES, "method" => "csrf").increment(1);
                return Err(ApiError::forbidden(
                    "a state-changing request with the session cookie needs the session's X-CSRF-Token header",
                ));
            }
        }
        return Ok(Caller {
            principal: info.principal.clone(),
            session: Some(info),
            bearer_expires: None,
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
        let v = a.bearer("tok-2").await.unwrap();
        assert_eq!(v.principal.name, "token:ops");
        assert_eq!(v.principal.role, Role::Admin);
        assert_eq!(
            v.credential,
            Credential::Token {
                name: "ops".into(),
                sha256: hash_token("tok-2")
            }
        );
        assert_eq!(v.expires_at, None);
        assert_eq!(
            a.bearer("tok-1").await.unwrap().principal.role,
            Role::Manager
        );
        assert!(matches!(
            a.bearer("tok-3").await,
            Err(AuthError::Invalid(_))
        ));
        // The hash itself is not a token.
        assert!(a.bearer(&hash_token("tok-1")).await.is_err());
    }

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        let c = crate::config::ApiConfig {
            trusted_proxies: list.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        };
        c.proxies().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_client_should_be_the_right_most_untrusted_forwarded_hop() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let proxies = nets(&["127.0.0.0/8", "10.0.0.0/8", "::1"]);
        let local = ip("127.0.0.1");
        // The client wrote a fake left-most hop; the proxy appended the real address.
        let h = xff(&["6.6.6.6, 203.0.113.7"]);
        assert_eq!(forwarded_client(local, &h, &proxies), ip("203.0.113.7"));
        // Two proxies: the inner one is trusted too.
        let h = xff(&["6.6.6.6, 203.0.113.7, 10.1.2.3"]);
        assert_eq!(forwarded_client(local, &h, &proxies), ip("203.0.113.7"));
        // Several header lines count as one list, in order.
        let h = xff(&["6.6.6.6", "203.0.113.7", "10.1.2.3"]);
        assert_eq!(forwarded_client(local, &h, &proxies), ip("203.0.113.7"));
        // Ports and IPv4-mapped addresses.
        let h = xff(&["203.0.113.7:5555, [::ffff:10.0.0.1]:80"]);
        assert_eq!(forwarded_client(local, &h, &proxies), ip("203.0.113.7"));
        // An untrusted peer is the client, whatever it claims.
        let h = xff(&["1.1.1.1"]);
        assert_eq!(
            forwarded_client(ip("198.51.100.9"), &h, &proxies),
            ip("198.51.100.9")
        );
        // Garbage appended by a trusted hop stops the walk at the last trusted address.
        let h = xff(&["203.0.113.7, garbage, 10.9.9.9"]);
        assert_eq!(forwarded_client(local, &h, &proxies), ip("10.9.9.9"));
        // No header: the peer.
        assert_eq!(forwarded_client(local, &HeaderMap::new(), &proxies), local);
        // Only trusted hops: the left-most of them.
        let h = xff(&["10.0.0.5, 10.0.0.6"]);
        assert_eq!(forwarded_client(local, &h, &proxies), ip("10.0.0.5"));
    }

    #[test]
    fn trusted_proxies_should_be_addresses_or_blocks_naming_the_bad_one() {
        assert_eq!(nets(&["10.1.2.3"]).len(), 1);
        assert!(nets(&["10.1.2.3"])[0].contains(&"10.1.2.3".parse::<IpAddr>().unwrap()));
        assert!(nets(&["10.1.2.3/8"])[0].contains(&"10.200.0.1".parse::<IpAddr>().unwrap()));
        let c = crate::config::ApiConfig {
            trusted_proxies: vec!["10.0.0.0/8".into(), "nope".into()],
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "api.trusted_proxies[1]");
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
