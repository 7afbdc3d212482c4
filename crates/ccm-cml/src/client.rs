//! [`CmlClient`]: the one CML client of the process, and every endpoint ccm uses.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ccm_domain::ids::LabId;
use ccm_domain::worker::EndpointPolicy;
use ccm_resilience::{Call, Resilience, SingleFlight};
use dashmap::DashMap;
use parking_lot::Mutex;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tracing::Instrument as _;

use crate::config::{CmlConfig, CmlConfigError};
use crate::endpoint::Endpoint;
use crate::error::{CmlError, description};
use crate::http::{HttpClients, read_body, transport_error};
use crate::models::{
    AuthExtendedResponse, AuthInfo, ImportResponse, Lab, LabElementState, LicensingStatus,
    SystemHealth, SystemInformation, SystemStats, TelemetryEvent, decode as decode_json,
    decode_download, jwt_subject,
};
use crate::secret::Secret;
use crate::target::{Credentials, InvalidBaseUrl, Target, TlsMode};

/// Largest error body read (CML's `{code, description}` is tiny).
const ERROR_BODY_LIMIT: usize = 64 << 10;
/// Base path of the CML API.
const API: &str = "/api/v0";

/// The typed CML 2.9 client for the whole fleet. Cheap to clone (`Arc` inside); build one per
/// process.
///
/// - One `reqwest::Client` per distinct TLS mode (keep-alive pool, small per host), never one
///   per request or per worker.
/// - One tiny session per worker (keyed by base URL): the cached token, ccm's own user id,
///   whether the worker lacks `/auth_extended`.
/// - Redirects are never followed: a 3xx is [`CmlError::Redirect`] (a redirected login would
///   re-send the password to wherever it points).
/// - Settings that expose the password (`tls = "insecure"`, plain `http`) are logged as one
///   warning each when the client is built ([`CmlConfig::warnings`]).
/// - Every call runs through [`Resilience::call`] keyed by the worker's base URL: per-attempt
///   timeout, retries of idempotent calls, budget, breaker, bulkhead.
/// - On 401 the attempt logs in again once and repeats the request once (not a retry in the
///   budget's sense). Logins go through a [`SingleFlight`], so concurrent callers of one worker
///   share one login.
///
/// # Timeouts
///
/// There is no `reqwest` request timeout: the resilience per-attempt timeout (and the
/// deadline) bound each attempt — login, request, re-login, repeated request and body read
/// together — and cancel it by dropping it. A second timeout in reqwest could only disagree
/// with it (e.g. cut an attempt the deadline had shortened, or fire during a re-login). Only
/// the TCP/TLS connect timeout (`cml.connect_timeout`) is set in reqwest.
#[derive(Clone)]
pub struct CmlClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpClients,
    resilience: Resilience,
    sessions: DashMap<Arc<str>, Arc<Session>>,
    logins: SingleFlight<Arc<str>, Result<LoggedIn, CmlError>>,
    credentials: Arc<Credentials>,
    default_tls: TlsMode,
    endpoint_policy: EndpointPolicy,
    max_body: usize,
    probe_timeout: Duration,
    /// What decides a sync's order ([`crate::sync_order`]); the scheme is the target's.
    order: crate::http::OrderSettings,
}

impl std::fmt::Debug for CmlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CmlClient")
            .field("sessions", &self.inner.sessions.len())
            .field("credentials", &self.inner.credentials)
            .field("tls", &self.inner.default_tls)
            .finish_non_exhaustive()
    }
}

/// A cached bearer token. Prints as `***`.
#[derive(Clone)]
struct Token(Arc<str>);

impl Token {
    fn same(&self, other: &Token) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// A successful login: the token and who we are.
#[derive(Debug, Clone)]
struct LoggedIn {
    token: Token,
    info: Arc<AuthInfo>,
}

/// Per-worker state. Kept small: 10,000 of these live at once.
#[derive(Debug, Default)]
struct Session {
    state: Mutex<SessionState>,
    /// `/auth_extended` answered 404 (older CML): log in with `/authenticate`.
    no_auth_extended: AtomicBool,
}

#[derive(Debug, Default)]
struct SessionState {
    token: Option<Token>,
    user_id: Option<Arc<str>>,
}

impl Session {
    fn token(&self) -> Option<Token> {
        self.state.lock().token.clone()
    }

    fn store(&self, login: &LoggedIn) {
        let mut st = self.state.lock();
        st.token = Some(login.token.clone());
        if let Some(id) = &login.info.user_id {
            st.user_id = Some(Arc::from(id.as_str()));
        }
    }

    /// Drops the token if it is still `token` (a newer one is kept).
    fn clear_if(&self, token: &Token) {
        let mut st = self.state.lock();
        if st.token.as_ref().is_some_and(|t| t.same(token)) {
            st.token = None;
        }
    }
}

/// How a 401 is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On401 {
    /// Log in again once and repeat the request once.
    Relogin,
    /// Hand the 401 to the decoder (authok, logout).
    Answer,
}

/// One HTTP request, rebuildable for every attempt (the body is a cheap `Bytes` clone).
struct Req {
    method: Method,
    path: String,
    body: Option<Bytes>,
    on_401: On401,
    /// Send `Connection: close` (HTTP/1.1 only): the connection is not kept after the answer.
    close: bool,
}

impl Req {
    fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            body: None,
            on_401: On401::Relogin,
            close: false,
        }
    }

    fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    fn body(mut self, body: Bytes) -> Self {
        self.body = Some(body);
        self
    }

    fn answer_401(mut self) -> Self {
        self.on_401 = On401::Answer;
        self
    }
}

/// What a deregistration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deregistration {
    /// 204: deregistered from Smart Software Licensing.
    Deregistered,
    /// 202: deregistered locally, but the licensing service could not be reached.
    LocalOnly,
}

/// A decoded answer: the status and the body.
type Decode<T> = fn(Endpoint, StatusCode, Bytes) -> Result<T, CmlError>;

impl CmlClient {
    /// The client for the `[cml]` config, running every call through `resilience`. Validates
    /// the config and builds the HTTP client for its TLS mode (reading the CA file once; a bad
    /// file is an error naming the path).
    pub fn new(config: &CmlConfig, resilience: Resilience) -> Result<Self, CmlConfigError> {
        Self::with_user_agent(config, resilience, crate::http::user_agent(None))
    }

    /// [`CmlClient::new`] sending `user_agent` (see [`crate::user_agent`]) on every request:
    /// a replica names itself in it.
    pub fn with_user_agent(
        config: &CmlConfig,
        resilience: Resilience,
        user_agent: String,
    ) -> Result<Self, CmlConfigError> {
        config.validate()?;
        let http = HttpClients::new(config, user_agent)?;
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                resilience,
                sessions: DashMap::new(),
                logins: SingleFlight::new(),
                credentials: Arc::new(Credentials::new(
                    config.username.clone(),
                    config.password.clone(),
                )),
                default_tls: TlsMode::from(&config.tls),
                endpoint_policy: config.endpoint.clone(),
                max_body: config.max_body_bytes,
                probe_timeout: config.probe_timeout,
                order: crate::http::OrderSettings::of(config),
            }),
        })
    }

    /// The policy stack every call runs through (breaker states, budget, bulkheads).
    pub fn resilience(&self) -> &Resilience {
        &self.inner.resilience
    }

    /// How one sync's calls to the worker at `base_url` go out so that they share a
    /// connection where the transport allows it ([`crate::sync_order`]): over HTTPS with
    /// HTTP/2 the first call alone and the others as streams on its connection; over plain
    /// HTTP/1.1 one after another on one connection, closed by the last
    /// ([`CmlClient::licensing_closing`]).
    pub fn sync_order(&self, base_url: &str) -> crate::SyncOrder {
        self.inner.order.order(base_url)
    }

    /// A target at `base_url` with the config's credentials and TLS mode.
    pub fn target(&self, base_url: &str) -> Result<Target, InvalidBaseUrl> {
        Target::new(
            base_url,
            self.inner.credentials.clone(),
            self.inner.default_tls.clone(),
        )
    }

    /// The target for a worker with these addresses, built with `cml.endpoint` (scheme, port,
    /// public or private address); `None` when the worker has no address.
    pub fn target_for(&self, public: Option<IpAddr>, private: Option<IpAddr>) -> Option<Target> {
        let url = self.inner.endpoint_policy.endpoint(public, private)?;
        self.target(&url).ok()
    }

    /// ccm's own CML user id on this worker, learnt at login (from `/auth_extended`, or the
    /// token's subject on a CML without it). `None` before the first login.
    pub fn own_user_id(&self, target: &Target) -> Option<String> {
        let session = self.inner.sessions.get(target.base_url())?;
        session.state.lock().user_id.as_deref().map(str::to_owned)
    }

    /// Whether a token is cached for this worker.
    pub fn has_token(&self, target: &Target) -> bool {
        self.inner
            .sessions
            .get(target.base_url())
            .is_some_and(|s| s.token().is_some())
    }

    /// Forgets a worker's session (token, user id), e.g. when it is stopped or terminated.
    pub fn forget(&self, target: &Target) {
        self.inner.sessions.remove(target.base_url());
    }

    /// Number of workers with a session.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.len()
    }

    // === authentication ===

    /// `POST /auth_extended`: logs in now (replacing any cached token) and returns who ccm is
    /// on this worker. Falls back to `/authenticate` on a CML without `/auth_extended`.
    pub async fn auth_extended(&self, target: &Target) -> Result<AuthInfo, CmlError> {
        let session = self.session(target);
        let http = self.http(target, Endpoint::AuthExtended)?;
        let call = Call::new(target.base_url()).non_idempotent();
        let login = self
            .inner
            .resilience
            .call(&call, |_| self.login_now(target, &session, &http))
            .await
            .map_err(|e| CmlError::from_call(Endpoint::AuthExtended, e))?;
        Ok((*login.info).clone())
    }

    /// `POST /authenticate`: logs in now with the plain login call (replacing any cached
    /// token). ccm's user id is then read from the token's subject.
    pub async fn authenticate(&self, target: &Target) -> Result<(), CmlError> {
        let session = self.session(target);
        let http = self.http(target, Endpoint::Authenticate)?;
        let call = Call::new(target.base_url()).non_idempotent();
        self.inner
            .resilience
            .call(&call, |_| async {
                let login = self.login_authenticate(target, &http).await?;
                session.store(&login);
                Ok(())
            })
            .await
            .map_err(|e| CmlError::from_call(Endpoint::Authenticate, e))
    }

    /// `GET /authok`: whether the cached token is still valid (logging in first when there is
    /// none). Does not log in again on 401: that is the answer.
    pub async fn authok(&self, target: &Target) -> Result<bool, CmlError> {
        self.call(
            target,
            Endpoint::Authok,
            &Req::get("/authok").answer_401(),
            |_, status, _| Ok(status.is_success()),
        )
        .await
    }

    /// `DELETE /logout`: invalidates the cached token (all of the user's tokens with
    /// `clear_all_sessions`) and forgets it. Without a cached token nothing is sent.
    pub async fn logout(&self, target: &Target, clear_all_sessions: bool) -> Result<(), CmlError> {
        let Some(session) = self
            .inner
            .sessions
            .get(target.base_url())
            .map(|s| s.clone())
        else {
            return Ok(());
        };
        let Some(token) = session.token() else {
            return Ok(());
        };
        let path = format!("/logout?clear_all_sessions={clear_all_sessions}");
        let result = self
            .call(
                target,
                Endpoint::Logout,
                &Req::new(Method::DELETE, path).answer_401(),
                |_, _, _| Ok(()),
            )
            .await;
        session.clear_if(&token);
        result
    }

    // === system ===

    /// `GET /system_information` (no auth): version and readiness; the liveness probe.
    pub async fn system_information(&self, target: &Target) -> Result<SystemInformation, CmlError> {
        self.get_json(target, Endpoint::SystemInformation, "/system_information")
            .await
    }

    /// `GET /system_information` as a liveness probe: **one** attempt with the short
    /// `cml.probe_timeout` (or `resilience.timeout.per_attempt` when that is shorter), never
    /// retried. The engine probes a worker that was not `ready` at
    /// its last sync this way before its authenticated calls, so that a dead or blackholed
    /// worker costs one short timeout per poll (and, after `failure_threshold` polls, an
    /// open breaker), not the full retry policy.
    pub async fn probe(&self, target: &Target) -> Result<SystemInformation, CmlError> {
        // Never longer than the policy's own attempt timeout (a test or operator may set
        // that shorter still).
        let timeout = self
            .inner
            .probe_timeout
            .min(self.inner.resilience.config().timeout.per_attempt);
        self.call_with(
            target,
            Endpoint::SystemInformation,
            &Req::get("/system_information"),
            |e, _, body| decode_json(e, &body),
            |call| call.attempt_timeout(timeout).max_attempts(1),
        )
        .await
    }

    /// `GET /system_health`. 404 (older CML) is [`CmlError::NotSupported`].
    pub async fn system_health(&self, target: &Target) -> Result<SystemHealth, CmlError> {
        self.get_json(target, Endpoint::SystemHealth, "/system_health")
            .await
    }

    /// `GET /system_stats`. 404 (older CML) is [`CmlError::NotSupported`].
    pub async fn system_stats(&self, target: &Target) -> Result<SystemStats, CmlError> {
        self.get_json(target, Endpoint::SystemStats, "/system_stats")
            .await
    }

    // === licensing ===

    /// `GET /licensing` (admin only: 403 is [`CmlError::Forbidden`]; 404 is
    /// [`CmlError::NotSupported`]).
    pub async fn licensing(&self, target: &Target) -> Result<LicensingStatus, CmlError> {
        self.get_json(target, Endpoint::Licensing, "/licensing")
            .await
    }

    /// [`licensing`](Self::licensing) as the last call of a sync whose calls went one after
    /// another on one connection ([`SyncOrder::OneByOne`](crate::SyncOrder::OneByOne): over
    /// HTTP/1.1, plain or HTTPS without HTTP/2): it asks for the connection to be closed after
    /// the answer (`Connection: close`), so that it does not idle in the pool until the
    /// worker's next sync, a poll interval away. In any other order (HTTP/2 has no such
    /// header) it is [`licensing`](Self::licensing).
    pub async fn licensing_closing(&self, target: &Target) -> Result<LicensingStatus, CmlError> {
        let mut req = Req::get("/licensing");
        req.close = self.sync_order(target.base_url()) == crate::SyncOrder::OneByOne;
        self.call(target, Endpoint::Licensing, &req, |e, _, body| {
            decode_json(e, &body)
        })
        .await
    }

    /// `POST /licensing/registration`: asks CML to register with a Smart Licensing token.
    /// Asynchronous: poll [`licensing`](Self::licensing) until the registration status is
    /// settled. A token of the wrong shape is refused here, without a request.
    pub async fn register_licence(
        &self,
        target: &Target,
        token: &Secret,
        reregister: bool,
    ) -> Result<(), CmlError> {
        let endpoint = Endpoint::LicensingRegistration;
        let t = token.expose();
        let shape_ok = (1..=256).contains(&t.len())
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+/%=-".contains(c));
        if !shape_ok {
            return Err(CmlError::InvalidArgument {
                endpoint,
                detail: "the licence token must be 1 to 256 letters, digits or + / % = -"
                    .to_owned(),
            });
        }
        let body = serde_json::to_vec(&serde_json::json!({"token": t, "reregister": reregister}))
            .map_err(|e| CmlError::InvalidArgument {
            endpoint,
            detail: e.to_string(),
        })?;
        self.call(
            target,
            endpoint,
            &Req::new(Method::POST, "/licensing/registration").body(Bytes::from(body)),
            |_, _, _| Ok(()),
        )
        .await
    }

    /// `DELETE /licensing/deregistration`.
    pub async fn deregister_licence(&self, target: &Target) -> Result<Deregistration, CmlError> {
        self.call(
            target,
            Endpoint::LicensingDeregistration,
            &Req::new(Method::DELETE, "/licensing/deregistration"),
            |_, status, _| {
                Ok(if status == StatusCode::ACCEPTED {
                    Deregistration::LocalOnly
                } else {
                    Deregistration::Deregistered
                })
            },
        )
        .await
    }

    // === labs ===

    /// `GET /labs`: lab ids (`show_all`: also labs shared with ccm's user; an admin sees all).
    pub async fn labs(&self, target: &Target, show_all: bool) -> Result<Vec<String>, CmlError> {
        let path = format!("/labs?show_all={show_all}");
        self.get_json(target, Endpoint::Labs, &path).await
    }

    /// `GET /labs/{id}`. 404 is [`CmlError::NotFound`].
    pub async fn lab(&self, target: &Target, lab: &LabId) -> Result<Lab, CmlError> {
        self.get_json(target, Endpoint::Lab, &format!("/labs/{lab}"))
            .await
    }

    /// `GET /labs/{id}/lab_element_state`: node, link and interface states.
    pub async fn lab_element_state(
        &self,
        target: &Target,
        lab: &LabId,
    ) -> Result<LabElementState, CmlError> {
        self.get_json(
            target,
            Endpoint::LabElementState,
            &format!("/labs/{lab}/lab_element_state"),
        )
        .await
    }

    /// `PUT /labs/{id}/start` (asynchronous: nodes boot after it returns).
    pub async fn start_lab(&self, target: &Target, lab: &LabId) -> Result<(), CmlError> {
        self.no_content(
            target,
            Endpoint::LabStart,
            Method::PUT,
            format!("/labs/{lab}/start"),
        )
        .await
    }

    /// `PUT /labs/{id}/stop`.
    pub async fn stop_lab(&self, target: &Target, lab: &LabId) -> Result<(), CmlError> {
        self.no_content(
            target,
            Endpoint::LabStop,
            Method::PUT,
            format!("/labs/{lab}/stop"),
        )
        .await
    }

    /// `PUT /labs/{id}/wipe` (the lab must be stopped).
    pub async fn wipe_lab(&self, target: &Target, lab: &LabId) -> Result<(), CmlError> {
        self.no_content(
            target,
            Endpoint::LabWipe,
            Method::PUT,
            format!("/labs/{lab}/wipe"),
        )
        .await
    }

    /// `DELETE /labs/{id}` (the lab must be stopped and wiped).
    pub async fn delete_lab(&self, target: &Target, lab: &LabId) -> Result<(), CmlError> {
        self.no_content(
            target,
            Endpoint::LabDelete,
            Method::DELETE,
            format!("/labs/{lab}"),
        )
        .await
    }

    /// `GET /labs/{id}/download`: the topology YAML. Real CML sends raw YAML although the
    /// spec says JSON string; a body starting with `"` is JSON-decoded, anything else is used
    /// as is.
    pub async fn download_lab(&self, target: &Target, lab: &LabId) -> Result<String, CmlError> {
        self.call(
            target,
            Endpoint::LabDownload,
            &Req::get(format!("/labs/{lab}/download")),
            |_, _, body| decode_download(&body),
        )
        .await
    }

    /// `POST /import`: creates a lab from topology YAML (or JSON). `title` overrides the
    /// file's title (URL-encoded in the query, 1 to 64 characters).
    pub async fn import_lab(
        &self,
        target: &Target,
        topology: &str,
        title: Option<&str>,
    ) -> Result<ImportResponse, CmlError> {
        let endpoint = Endpoint::Import;
        let path = match title {
            None => "/import".to_owned(),
            Some(t) if (1..=64).contains(&t.chars().count()) => format!(
                "/import?title={}",
                url::form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>()
            ),
            Some(_) => {
                return Err(CmlError::InvalidArgument {
                    endpoint,
                    detail: "the lab title must be 1 to 64 characters".to_owned(),
                });
            }
        };
        let req = Req::new(Method::POST, path).body(Bytes::copy_from_slice(topology.as_bytes()));
        self.call(target, endpoint, &req, |e, _, body| decode_json(e, &body))
            .await
    }

    // === telemetry ===

    /// `GET /telemetry/events`: the whole event history (no paging in CML 2.9). 404 is
    /// [`CmlError::NotSupported`].
    pub async fn telemetry_events(&self, target: &Target) -> Result<Vec<TelemetryEvent>, CmlError> {
        self.get_json(target, Endpoint::TelemetryEvents, "/telemetry/events")
            .await
    }

    // === machinery ===

    fn session(&self, target: &Target) -> Arc<Session> {
        if let Some(s) = self.inner.sessions.get(target.base_url()) {
            return s.clone();
        }
        self.inner
            .sessions
            .entry(target.base_url_arc().clone())
            .or_default()
            .clone()
    }

    /// The HTTP client for the target's TLS mode. (Insecure TLS and plain http are warned
    /// about once, in [`CmlClient::new`], not per worker or request.)
    fn http(&self, target: &Target, endpoint: Endpoint) -> Result<reqwest::Client, CmlError> {
        self.inner
            .http
            .for_url(target.base_url(), target.tls())
            .map_err(|e| match e {
                CmlConfigError::CaFile { .. } | CmlConfigError::Client(_) => CmlError::Tls {
                    endpoint,
                    detail: e.to_string(),
                },
                other => CmlError::Config(other),
            })
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        target: &Target,
        endpoint: Endpoint,
        path: &str,
    ) -> Result<T, CmlError> {
        self.call(target, endpoint, &Req::get(path), |e, _, body| {
            decode_json(e, &body)
        })
        .await
    }

    async fn no_content(
        &self,
        target: &Target,
        endpoint: Endpoint,
        method: Method,
        path: String,
    ) -> Result<(), CmlError> {
        self.call(target, endpoint, &Req::new(method, path), |_, _, _| Ok(()))
            .await
    }

    /// Runs one operation through the resilience stack.
    async fn call<T>(
        &self,
        target: &Target,
        endpoint: Endpoint,
        req: &Req,
        decode: Decode<T>,
    ) -> Result<T, CmlError> {
        self.call_with(target, endpoint, req, decode, |call| call)
            .await
    }

    /// [`Self::call`] with the call's policy adjusted (e.g. a probe's single short attempt).
    async fn call_with<T>(
        &self,
        target: &Target,
        endpoint: Endpoint,
        req: &Req,
        decode: Decode<T>,
        adjust: impl for<'c> FnOnce(Call<'c>) -> Call<'c>,
    ) -> Result<T, CmlError> {
        let session = self.session(target);
        let http = self.http(target, endpoint)?;
        let mut call = Call::new(target.base_url()).idempotent(endpoint.is_idempotent());
        if let Some(bulkhead) = endpoint.bulkhead() {
            call = call.bulkhead(bulkhead);
        }
        let call = adjust(call);
        let operation = endpoint.name();
        let span = tracing::info_span!(
            "cml.call",
            "otel.kind" = "client",
            operation,
            endpoint = target.base_url(),
        );
        self.inner
            .resilience
            .call(&call, |attempt| {
                self.attempt(target, &session, &http, endpoint, req, decode)
                    .instrument(tracing::info_span!("cml.attempt", operation, attempt))
            })
            .instrument(span)
            .await
            .map_err(|e| CmlError::from_call(endpoint, e))
    }

    /// One attempt: (login if needed,) request, and on 401 one re-login and one repeat.
    async fn attempt<T>(
        &self,
        target: &Target,
        session: &Session,
        http: &reqwest::Client,
        endpoint: Endpoint,
        req: &Req,
        decode: Decode<T>,
    ) -> Result<T, CmlError> {
        if !endpoint.needs_auth() {
            let resp = self.send(http, target, endpoint, req, None).await?;
            return self.finish(resp, endpoint, req, decode).await;
        }
        let token = self.token(target, session, http, None).await?;
        let resp = self.send(http, target, endpoint, req, Some(&token)).await?;
        if resp.status() != StatusCode::UNAUTHORIZED || req.on_401 == On401::Answer {
            return self.finish(resp, endpoint, req, decode).await;
        }
        drop(resp);
        tracing::debug!(
            endpoint = target.base_url(),
            call = endpoint.name(),
            "token refused, logging in again"
        );
        let fresh = self.token(target, session, http, Some(&token)).await?;
        let resp = self.send(http, target, endpoint, req, Some(&fresh)).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            session.clear_if(&fresh);
            return Err(CmlError::Unauthorized { endpoint });
        }
        self.finish(resp, endpoint, req, decode).await
    }

    async fn send(
        &self,
        http: &reqwest::Client,
        target: &Target,
        endpoint: Endpoint,
        req: &Req,
        token: Option<&Token>,
    ) -> Result<reqwest::Response, CmlError> {
        let mut url = String::with_capacity(target.base_url().len() + API.len() + req.path.len());
        url.push_str(target.base_url());
        url.push_str(API);
        url.push_str(&req.path);
        let mut builder = http
            .request(req.method.clone(), url)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = token {
            builder = builder.bearer_auth(&*token.0);
        }
        if req.close {
            builder = builder.header(reqwest::header::CONNECTION, "close");
        }
        if let Some(body) = &req.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        builder
            .send()
            .await
            .map_err(|e| transport_error(endpoint, &e, self.inner.http.connect_timeout()))
    }

    /// Reads the answer: 2xx (and 401 when asked) goes to `decode`, anything else becomes a
    /// typed error.
    async fn finish<T>(
        &self,
        mut resp: reqwest::Response,
        endpoint: Endpoint,
        req: &Req,
        decode: Decode<T>,
    ) -> Result<T, CmlError> {
        let status = resp.status();
        let connect_timeout = self.inner.http.connect_timeout();
        if status.is_success()
            || (status == StatusCode::UNAUTHORIZED && req.on_401 == On401::Answer)
        {
            let body = read_body(&mut resp, endpoint, self.inner.max_body, connect_timeout).await?;
            return decode(endpoint, status, body);
        }
        if status.is_redirection() {
            // Never followed (the HTTP clients have no redirect policy) and never read on.
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(crate::error::location)
                .filter(|l| !l.is_empty());
            return Err(CmlError::Redirect {
                endpoint,
                status: status.as_u16(),
                location,
            });
        }
        let retry_after = retry_after(&resp);
        // The error body is informative only: if it cannot be read, the status still speaks.
        let body = read_body(&mut resp, endpoint, ERROR_BODY_LIMIT, connect_timeout)
            .await
            .unwrap_or_default();
        Err(status_error(endpoint, status, &body, retry_after))
    }

    /// A valid token for the worker: the cached one, unless it is `failed` (the one that just
    /// got a 401) or there is none; then one login shared by every concurrent caller.
    async fn token(
        &self,
        target: &Target,
        session: &Session,
        http: &reqwest::Client,
        failed: Option<&Token>,
    ) -> Result<Token, CmlError> {
        let usable = |t: &Token| failed.is_none_or(|f| !f.same(t));
        if let Some(t) = session.token().filter(usable) {
            return Ok(t);
        }
        let key = target.base_url_arc().clone();
        // Boxed: the login (rare) would otherwise make every call's future as large as
        // itself, for every call in flight.
        Box::pin(self.inner.logins.run(key, async {
            // Another flight may have finished between the check above and this one.
            if let Some(t) = session.token().filter(usable) {
                return Ok(LoggedIn {
                    token: t,
                    info: Arc::new(AuthInfo::default()),
                });
            }
            self.login_now(target, session, http).await
        }))
        .await
        .map(|login| login.token)
    }

    /// Logs in now with `/auth_extended` (or `/authenticate` on a CML without it) and caches
    /// the token and ccm's user id.
    async fn login_now(
        &self,
        target: &Target,
        session: &Session,
        http: &reqwest::Client,
    ) -> Result<LoggedIn, CmlError> {
        let login = if session.no_auth_extended.load(Ordering::Relaxed) {
            self.login_authenticate(target, http).await?
        } else {
            match self.login_extended(target, http).await {
                Err(CmlError::NotSupported { .. }) => {
                    session.no_auth_extended.store(true, Ordering::Relaxed);
                    self.login_authenticate(target, http).await?
                }
                other => other?,
            }
        };
        session.store(&login);
        tracing::debug!(endpoint = target.base_url(), "logged in to cml");
        Ok(login)
    }

    fn login_body(&self, target: &Target, endpoint: Endpoint) -> Result<Req, CmlError> {
        let c = target.credentials();
        let body = serde_json::to_vec(&serde_json::json!({
            "username": c.username,
            "password": c.password.expose(),
        }))
        .map_err(|e| CmlError::InvalidArgument {
            endpoint,
            detail: e.to_string(),
        })?;
        let path = match endpoint {
            Endpoint::AuthExtended => "/auth_extended",
            _ => "/authenticate",
        };
        Ok(Req::new(Method::POST, path).body(Bytes::from(body)))
    }

    async fn login_extended(
        &self,
        target: &Target,
        http: &reqwest::Client,
    ) -> Result<LoggedIn, CmlError> {
        let endpoint = Endpoint::AuthExtended;
        let req = self.login_body(target, endpoint)?;
        let resp = self.send(http, target, endpoint, &req, None).await?;
        let answer: AuthExtendedResponse = self
            .finish(resp, endpoint, &req, |e, _, body| decode_json(e, &body))
            .await?;
        let token = answer
            .token
            .as_ref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| CmlError::decode(endpoint, "the answer has no token", b""))?;
        let info = answer.info();
        if let Some(problem) = &info.error {
            tracing::warn!(endpoint = target.base_url(), problem = %problem, "cml reported a login problem");
        }
        Ok(LoggedIn {
            token: Token(Arc::from(token.expose())),
            info: Arc::new(info),
        })
    }

    async fn login_authenticate(
        &self,
        target: &Target,
        http: &reqwest::Client,
    ) -> Result<LoggedIn, CmlError> {
        let endpoint = Endpoint::Authenticate;
        let req = self.login_body(target, endpoint)?;
        let resp = self.send(http, target, endpoint, &req, None).await?;
        let token: Secret = self
            .finish(resp, endpoint, &req, |e, _, body| decode_json(e, &body))
            .await?;
        if token.is_empty() {
            return Err(CmlError::decode(endpoint, "the token is empty", b""));
        }
        let info = AuthInfo {
            username: Some(target.credentials().username.clone()),
            user_id: jwt_subject(token.expose()),
            admin: None,
            error: None,
        };
        Ok(LoggedIn {
            token: Token(Arc::from(token.expose())),
            info: Arc::new(info),
        })
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from CML and ignored).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let value = resp.headers().get(reqwest::header::RETRY_AFTER)?;
    let secs: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(3600)))
}

/// CML's `{code, description}` error body, read leniently.
#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    description: Option<serde_json::Value>,
}

/// The typed error for a non-success status.
fn status_error(
    endpoint: Endpoint,
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> CmlError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|b| b.code.as_ref())
        .and_then(serde_json::Value::as_i64);
    let text = parsed
        .as_ref()
        .and_then(|b| b.description.as_ref())
        .map(|d| match d {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .map(|d| description(&d))
        .filter(|d| !d.is_empty());
    match status.as_u16() {
        401 | 403 if endpoint.is_login() => CmlError::Credentials {
            endpoint,
            description: text,
        },
        401 => CmlError::Unauthorized { endpoint },
        403 => CmlError::Forbidden {
            endpoint,
            description: text,
        },
        404 if endpoint.is_optional() => CmlError::NotSupported { endpoint },
        404 => CmlError::NotFound {
            endpoint,
            description: text,
        },
        s => CmlError::Http {
            endpoint,
            status: s,
            code,
            description: text,
            retry_after,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_should_map_to_typed_errors() {
        // The error example of CML_API.md §0.
        let body = include_bytes!("../tests/data/error.json");
        assert!(matches!(
            status_error(Endpoint::Lab, StatusCode::NOT_FOUND, body, None),
            CmlError::NotFound { description: Some(d), .. }
                if d == "Lab not found: 4e6a1b2c-7d8e-4f90-a1b2-c3d4e5f60718"
        ));
        assert!(matches!(
            status_error(Endpoint::Licensing, StatusCode::NOT_FOUND, body, None),
            CmlError::NotSupported { .. }
        ));
        assert!(matches!(
            status_error(Endpoint::AuthExtended, StatusCode::FORBIDDEN, b"", None),
            CmlError::Credentials { .. }
        ));
        assert!(matches!(
            status_error(Endpoint::Licensing, StatusCode::FORBIDDEN, b"", None),
            CmlError::Forbidden { .. }
        ));
        let e = status_error(
            Endpoint::SystemStats,
            StatusCode::SERVICE_UNAVAILABLE,
            b"<html>busy</html>",
            Some(Duration::from_secs(2)),
        );
        assert!(matches!(
            e,
            CmlError::Http {
                status: 503,
                code: None,
                description: None,
                retry_after: Some(d),
                ..
            } if d == Duration::from_secs(2)
        ));
    }

    #[test]
    fn decode_errors_should_name_the_json_path() {
        let err = decode_json::<SystemStats>(
            Endpoint::SystemStats,
            br#"{"all":{"cpu":{"count":"many"}}}"#,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("all.cpu.count"), "{text}");
    }
}
