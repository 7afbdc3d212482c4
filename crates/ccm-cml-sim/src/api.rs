//! The CML 2.9 REST API of one simulated controller, as one axum `Router` shared by every
//! worker: the worker a request belongs to travels in the request extensions (put there by
//! the connection that accepted it).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, RawQuery, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::{Value, json};

use crate::cml_error::CmlError;
use crate::state::User;
use crate::worker::Worker;

/// nginx in front of CML caps request bodies at 100 KB…
pub(crate) const BODY_LIMIT: usize = 100 * 1024;
/// …except `/import`, at 2 MB.
pub(crate) const IMPORT_LIMIT: usize = 2 * 1024 * 1024;

type ApiResult = Result<Response, CmlError>;

/// Builds the router. Build it once per fleet and clone it.
pub(crate) fn router() -> Router {
    Router::new()
        .route("/api/v0/authenticate", post(authenticate))
        .route("/api/v0/auth_extended", post(auth_extended))
        .route("/api/v0/authok", get(authok))
        .route("/api/v0/logout", delete(logout))
        .route("/api/v0/web_session_timeout", get(web_session_timeout))
        .route("/api/v0/system_information", get(system_information))
        .route("/api/v0/system/maintenance_mode", get(maintenance_mode))
        .route("/api/v0/system_health", get(system_health))
        .route("/api/v0/system_stats", get(system_stats))
        .route("/api/v0/system/compute_hosts", get(compute_hosts))
        .route("/api/v0/licensing", get(licensing))
        .route("/api/v0/licensing/registration", post(register))
        .route("/api/v0/licensing/deregistration", delete(deregister))
        .route(
            "/api/v0/licensing/registration/renew",
            put(renew_registration),
        )
        .route(
            "/api/v0/licensing/authorization/renew",
            put(renew_authorization),
        )
        .route("/api/v0/labs", get(labs))
        .route("/api/v0/labs/{lab_id}", get(lab).delete(delete_lab))
        .route("/api/v0/labs/{lab_id}/start", put(start_lab))
        .route("/api/v0/labs/{lab_id}/stop", put(stop_lab))
        .route("/api/v0/labs/{lab_id}/wipe", put(wipe_lab))
        .route("/api/v0/labs/{lab_id}/download", get(download))
        .route("/api/v0/labs/{lab_id}/events", get(lab_events))
        .route("/api/v0/labs/{lab_id}/nodes", get(lab_nodes))
        .route("/api/v0/labs/{lab_id}/state", get(lab_state))
        .route(
            "/api/v0/labs/{lab_id}/check_if_converged",
            get(lab_converged),
        )
        .route(
            "/api/v0/labs/{lab_id}/lab_element_state",
            get(lab_element_state),
        )
        .route(
            "/api/v0/import",
            post(import).layer(DefaultBodyLimit::max(IMPORT_LIMIT)),
        )
        .route("/api/v0/telemetry/events", get(telemetry_events))
        .route("/api/v0/telemetry", get(telemetry))
        .route("/api/v0/users", get(users))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

// === extractors ===

/// The worker that accepted the request.
struct W(Arc<Worker>);

impl<S: Send + Sync> FromRequestParts<S> for W {
    type Rejection = CmlError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, CmlError> {
        parts
            .extensions
            .get::<Arc<Worker>>()
            .cloned()
            .map(W)
            .ok_or_else(|| {
                CmlError::new(StatusCode::INTERNAL_SERVER_ERROR, "no worker for request")
            })
    }
}

/// An authenticated caller: the worker, the user and the token's sequence number.
struct Auth {
    worker: Arc<Worker>,
    user_id: uuid::Uuid,
    jti: u64,
}

impl Auth {
    fn user(&self) -> Result<&User, CmlError> {
        self.worker
            .shared
            .user(self.user_id)
            .ok_or_else(CmlError::unauthorized)
    }

    fn admin(&self) -> Result<&User, CmlError> {
        let u = self.user()?;
        if u.admin {
            Ok(u)
        } else {
            Err(CmlError::forbidden(
                "User does not have administrator rights",
            ))
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = CmlError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, CmlError> {
        let W(worker) = W::from_request_parts(parts, state).await?;
        let token = bearer(&parts.headers).ok_or_else(CmlError::unauthorized)?;
        let (user, jti) = worker.check_token(token)?;
        let user_id = user.id;
        Ok(Auth {
            worker,
            user_id,
            jti,
        })
    }
}

/// The `{lab_id}` path segment, with a bad one turned into a CML 400.
struct LabId(String);

impl<S: Send + Sync> FromRequestParts<S> for LabId {
    type Rejection = CmlError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, CmlError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| LabId(id))
            .map_err(|r| CmlError::bad_request(format!("Bad input: {}", r.body_text())))
    }
}

/// The request body, with axum's size-limit rejection turned into a CML error (413).
struct Body(Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = CmlError;

    async fn from_request(req: Request, state: &S) -> Result<Self, CmlError> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|r| {
                let status = r.status();
                let text = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "Request body is too large".to_owned()
                } else {
                    r.body_text()
                };
                CmlError::new(status, text)
            })
    }
}

/// Query parameters, parsed by hand so that bad values give CML's 400.
struct QueryArgs(Vec<(String, String)>);

impl QueryArgs {
    fn from_raw(raw: Option<String>) -> Self {
        QueryArgs(
            url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> Result<bool, CmlError> {
        match self.get(key) {
            None => Ok(false),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(CmlError::bad_request(format!(
                    "Bad input: query parameter {key}={v:?} is not a boolean"
                ))),
            },
        }
    }
}

// === responses ===

fn json_response<T: Serialize + ?Sized>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut resp = body.into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => CmlError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

// === auth ===

fn credentials(body: &[u8]) -> Result<(String, String), CmlError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| CmlError::bad_request(format!("Bad input: body is not JSON: {e}")))?;
    let field = |k: &str| {
        value
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| CmlError::bad_request(format!("Bad input: field '{k}' is required")))
    };
    let username = field("username")?;
    let password = field("password")?;
    if username.is_empty() || username.chars().count() > 32 {
        return Err(CmlError::bad_request(
            "Bad input: username must be 1 to 32 characters",
        ));
    }
    Ok((username, password))
}

async fn authenticate(W(w): W, Body(body): Body) -> ApiResult {
    let (username, password) = credentials(&body)?;
    let (token, _) = w.login(&username, &password)?;
    Ok(json_response(&token))
}

async fn auth_extended(W(w): W, Body(body): Body) -> ApiResult {
    let (username, password) = credentials(&body)?;
    let (token, user) = w.login(&username, &password)?;
    Ok(json_response(&json!({
        "username": user.username, "id": user.id, "token": token,
        "admin": user.admin, "error": null,
    })))
}

async fn authok(_auth: Auth) -> ApiResult {
    Ok(json_response("OK"))
}

async fn logout(auth: Auth, RawQuery(q): RawQuery) -> ApiResult {
    let all = QueryArgs::from_raw(q).flag("clear_all_sessions")?;
    let user = auth.user()?.id;
    let jti = auth.jti;
    auth.worker.with_state(|st, _| {
        if all {
            st.tokens.revoke_user(user);
        } else {
            st.tokens.revoke(jti);
        }
    });
    Ok(json_response(&true))
}

async fn web_session_timeout(auth: Auth) -> ApiResult {
    Ok(json_response(
        &auth.worker.shared.config.token_ttl.as_secs(),
    ))
}

// === system ===

#[derive(Serialize)]
struct SystemInformation<'a> {
    version: &'a str,
    ready: bool,
    allow_ssh_pubkey_auth: bool,
    oui: &'a str,
}

async fn system_information(W(w): W) -> ApiResult {
    Ok(json_response(&SystemInformation {
        version: &w.shared.config.version,
        ready: w.is_ready(),
        allow_ssh_pubkey_auth: false,
        oui: "52:54:00:00:00:00",
    }))
}

async fn maintenance_mode(W(_w): W) -> ApiResult {
    Ok(json_response(&json!({
        "maintenance_mode": false, "notice": null, "resolved_notice": null,
    })))
}

async fn system_health(auth: Auth) -> ApiResult {
    let admin = auth.user()?.admin;
    let value = auth
        .worker
        .with_state(|st, ctx| st.system_health(ctx, admin));
    Ok(json_response(&value))
}

async fn system_stats(auth: Auth) -> ApiResult {
    let value = auth.worker.with_state(|st, ctx| st.system_stats(ctx));
    Ok(json_response(&value))
}

async fn compute_hosts(auth: Auth) -> ApiResult {
    auth.admin()?;
    let value = auth.worker.with_state(|st, ctx| st.compute_hosts(ctx));
    Ok(json_response(&value))
}

// === licensing ===

async fn licensing(auth: Auth) -> ApiResult {
    auth.admin()?;
    let value = auth.worker.with_state(|st, ctx| st.licensing_view(ctx));
    Ok(json_response(&value))
}

fn registration_body(body: &[u8]) -> Result<(String, bool), CmlError> {
    let bad = |why: &str| CmlError::bad_request(format!("Bad input: {why}"));
    let value: Value = serde_json::from_slice(body).map_err(|_| bad("body is not JSON"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("body is not an object"))?;
    if let Some(k) = obj.keys().find(|k| *k != "token" && *k != "reregister") {
        return Err(bad(&format!("unexpected field '{k}'")));
    }
    let token = obj
        .get("token")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("field 'token' is required"))?;
    let token_ok = !token.is_empty()
        && token.len() <= 256
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/%=-".contains(c));
    if !token_ok {
        return Err(bad("token does not match ^[a-zA-Z\\d+/%=-]{1,256}$"));
    }
    let reregister = match obj.get("reregister") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("field 'reregister' must be a boolean")),
    };
    Ok((token.to_owned(), reregister))
}

async fn register(auth: Auth, Body(body): Body) -> ApiResult {
    auth.admin()?;
    let (token, reregister) = registration_body(&body)?;
    auth.worker
        .with_state(|st, ctx| st.register(ctx, &token, reregister))?;
    Ok(no_content())
}

async fn deregister(auth: Auth) -> ApiResult {
    auth.admin()?;
    let reached = auth.worker.with_state(|st, ctx| st.deregister(ctx))?;
    Ok(if reached {
        no_content()
    } else {
        StatusCode::ACCEPTED.into_response()
    })
}

async fn renew_registration(auth: Auth) -> ApiResult {
    auth.admin()?;
    auth.worker
        .with_state(|st, ctx| st.renew_registration(ctx))?;
    Ok(no_content())
}

async fn renew_authorization(auth: Auth) -> ApiResult {
    auth.admin()?;
    auth.worker
        .with_state(|st, ctx| st.renew_authorization(ctx))?;
    Ok(no_content())
}

// === labs ===

async fn labs(auth: Auth, RawQuery(q): RawQuery) -> ApiResult {
    let show_all = QueryArgs::from_raw(q).flag("show_all")?;
    let user = auth.user()?;
    let ids = auth.worker.with_state(|st, _| st.lab_ids(user, show_all));
    Ok(json_response(&ids))
}

async fn lab(auth: Auth, LabId(id): LabId) -> ApiResult {
    let user = auth.user()?;
    let value = auth.worker.with_state(|st, _| st.lab_view(&id, user))?;
    Ok(json_response(&value))
}

async fn delete_lab(auth: Auth, LabId(id): LabId) -> ApiResult {
    let user = auth.user()?;
    auth.worker.with_state(|st, _| st.delete_lab(&id, user))?;
    Ok(no_content())
}

async fn start_lab(auth: Auth, LabId(id): LabId) -> ApiResult {
    let user = auth.user()?;
    auth.worker
        .with_state(|st, ctx| st.start_lab(ctx, &id, user))?;
    Ok(no_content())
}

async fn stop_lab(auth: Auth, LabId(id): LabId) -> ApiResult {
    let user = auth.user()?;
    auth.worker
        .with_state(|st, ctx| st.stop_lab(ctx, &id, user))?;
    Ok(no_content())
}

async fn wipe_lab(auth: Auth, LabId(id): LabId) -> ApiResult {
    let user = auth.user()?;
    auth.worker
        .with_state(|st, ctx| st.wipe_lab(ctx, &id, user))?;
    Ok(no_content())
}

async fn download(auth: Auth, LabId(id): LabId) -> ApiResult {
    let user = auth.user()?;
    let yaml = auth
        .worker
        .with_state(|st, ctx| st.download(ctx, &id, user))?;
    // Real controllers send the raw YAML although the spec says application/json.
    let mut resp = yaml.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

async fn lab_events(auth: Auth, LabId(id): LabId) -> ApiResult {
    let user = auth.user()?;
    let value = auth.worker.with_state(|st, _| st.lab_events(&id, user))?;
    Ok(json_response(&value))
}

async fn lab_nodes(auth: Auth, LabId(id): LabId, RawQuery(q): RawQuery) -> ApiResult {
    let data = QueryArgs::from_raw(q).flag("data")?;
    let user = auth.user()?;
    let value = auth
        .worker
        .with_state(|st, ctx| st.lab_nodes(ctx, &id, user, data))?;
    Ok(json_response(&value))
}

async fn lab_state(auth: Auth, LabId(id): LabId) -> ApiResult {
    let user = auth.user()?;
    let state = auth.worker.with_state(|st, _| st.lab_state(&id, user))?;
    Ok(json_response(state))
}

async fn lab_converged(auth: Auth, LabId(id): LabId) -> ApiResult {
    let user = auth.user()?;
    let done = auth
        .worker
        .with_state(|st, _| st.lab_converged(&id, user))?;
    Ok(json_response(&done))
}

async fn lab_element_state(auth: Auth, LabId(id): LabId) -> ApiResult {
    let user = auth.user()?;
    let value = auth
        .worker
        .with_state(|st, ctx| st.lab_element_state(ctx, &id, user))?;
    Ok(json_response(&value))
}

async fn import(auth: Auth, RawQuery(q): RawQuery, Body(body): Body) -> ApiResult {
    let args = QueryArgs::from_raw(q);
    let title = args.get("title");
    let user = auth.user()?;
    let id = auth
        .worker
        .with_state(|st, ctx| st.import(ctx, user, &body, title))?;
    Ok(json_response(&json!({"id": id, "warnings": []})))
}

// === telemetry and users ===

async fn telemetry_events(auth: Auth) -> ApiResult {
    let body = auth
        .worker
        .with_state(|st, _| serde_json::to_vec(st.telemetry_events()))
        .map_err(|e| CmlError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

async fn telemetry(auth: Auth) -> ApiResult {
    auth.admin()?;
    Ok(json_response(&json!({"opt_in": true, "show_modal": false})))
}

async fn users(auth: Auth) -> ApiResult {
    let user = auth.user()?;
    let users = &auth.worker.shared.users;
    let value = auth.worker.with_state(|st, _| st.users_view(users, user));
    Ok(json_response(&value))
}

// === fallbacks ===

async fn not_found() -> CmlError {
    CmlError::not_found("Not found")
}

async fn method_not_allowed() -> CmlError {
    CmlError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}
