//! `/api/v1/session`: the browser sign-in. With a token (`POST`), or through the OIDC
//! provider (`GET /session/oidc` → provider → `GET /session/oidc/callback`); both end with an
//! HttpOnly, SameSite=Strict session cookie and a CSRF token for state-changing requests.
//! Failed sign-ins are rate limited per client address (429 with `Retry-After`), and so are
//! starts of the OIDC sign-in; the OIDC `state` is bound to the browser that started it by a
//! short-lived HttpOnly cookie. Cookie names are `__Host-` prefixed when cookies are always
//! `Secure` (HTTPS on the listener, `cookie_secure = "always"`, or an https `public_url`).

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use utoipa::IntoParams;

use crate::auth::session::{self, SameSite, SessionInfo};
use crate::auth::{
    AuthError, Caller, Principal, SESSION_COOKIE, Verified, client_ip, forwarded_https, too_many,
};
use crate::dto::{SessionView, SignInMethods, SignInRequest};
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{MAX_JSON_BODY, Query, parse_json, read_body};
use crate::state::ApiState;

const CALLBACK_PATH: &str = "/api/v1/session/oidc/callback";
/// The base name of the cookie that binds an OIDC sign-in to its browser.
const OIDC_COOKIE: &str = "ccm_oidc";

/// Whether cookies set for this request must be `Secure`.
fn secure(state: &ApiState, headers: &HeaderMap, extensions: &http::Extensions) -> bool {
    state
        .cookies()
        .secure
        .unwrap_or_else(|| forwarded_https(state, headers, extensions))
}

fn header_value(cookie: &str) -> HeaderValue {
    HeaderValue::from_str(cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn view(principal: &Principal, session: Option<&SessionInfo>) -> SessionView {
    SessionView {
        user: principal.name.clone(),
        role: principal.role,
        method: principal.method,
        cookie: session.is_some(),
        csrf_token: session.map(|s| s.csrf_token.clone()),
        expires_at: session.map(|s| s.expires_at),
        permissions: crate::routes::permissions(principal.role),
    }
}

/// Starts a session for a verified credential: the response with its cookie.
async fn start_session(
    state: &ApiState,
    headers: &HeaderMap,
    extensions: &http::Extensions,
    verified: Verified,
) -> (HeaderValue, SessionView) {
    let sessions = &state.auth().sessions;
    let (id, info) = sessions
        .create(verified.principal, verified.credential, verified.expires_at)
        .await;
    tracing::info!(user = %info.principal.name, role = %info.principal.role, expires_at = %info.expires_at, "signed in");
    let lifetime = info
        .expires()
        .saturating_duration_since(tokio::time::Instant::now());
    let cookie = session::set_cookie(
        &state.cookies().name(SESSION_COOKIE),
        &id,
        lifetime,
        secure(state, headers, extensions),
        SameSite::Strict,
    );
    (header_value(&cookie), view(&info.principal, Some(&info)))
}

/// How a browser can sign in.
#[utoipa::path(
    get, path = "/api/v1/session/methods", tag = "session", security(()),
    responses((status = 200, body = SignInMethods))
)]
pub(crate) async fn methods(State(state): State<ApiState>) -> Json<SignInMethods> {
    Json(SignInMethods {
        token: true,
        oidc: state
            .auth()
            .oidc
            .as_ref()
            .map(|_| "/api/v1/session/oidc".to_owned()),
    })
}

/// Sign in with a token: sets the session cookie and returns the CSRF token.
#[utoipa::path(
    post, path = "/api/v1/session", tag = "session", security(()),
    request_body = SignInRequest,
    responses(
        (status = 200, description = "Signed in; `Set-Cookie` holds the session", body = SessionView),
        (status = 401, description = "Wrong token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The token grants no role", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed sign-ins from this address", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn sign_in(State(state): State<ApiState>, req: Request) -> ApiResult<Response> {
    let ip = client_ip(&state, req.headers(), req.extensions());
    let limiter = &state.auth().limiter;
    limiter.check(ip).map_err(too_many)?;
    let headers = req.headers().clone();
    let extensions = req.extensions().clone();
    match crate::extract::media_type(&headers).as_deref() {
        Some("application/json") => {}
        _ => {
            return Err(ApiError::unsupported_media(
                "expected Content-Type application/json",
            ));
        }
    }
    let body = read_body(req, MAX_JSON_BODY).await?;
    let SignInRequest { token } = parse_json(&body)?;
    match state.auth().bearer(token.expose()).await {
        Ok(verified) => {
            let (cookie, view) = start_session(&state, &headers, &extensions, verified).await;
            Ok(([(header::SET_COOKIE, cookie)], Json(view)).into_response())
        }
        Err(AuthError::Provider(e)) => Err(AuthError::Provider(e).into()),
        Err(e) => {
            metrics::counter!(crate::metrics::AUTH_FAILURES, "method" => "sign_in").increment(1);
            tracing::info!(client = %ip, reason = %e, "sign-in refused");
            limiter.failed(ip).map_err(too_many)?;
            Err(e.into())
        }
    }
}

/// The signed-in caller (also works with a bearer token); with the cookie it returns the
/// CSRF token again.
#[utoipa::path(
    get, path = "/api/v1/session", tag = "session",
    responses(
        (status = 200, body = SessionView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn current(caller: Caller) -> Json<SessionView> {
    Json(view(&caller.principal, caller.session.as_ref()))
}

/// Sign out: ends the session and clears the cookie (needs `X-CSRF-Token` when a session is
/// live). Event streams opened with the session end too. If the session cannot be deleted
/// from the database it stays valid and the answer is 503: try again.
#[utoipa::path(
    delete, path = "/api/v1/session", tag = "session", security(()),
    responses(
        (status = 204, description = "Signed out"),
        (status = 403, description = "Missing or wrong X-CSRF-Token", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The session could not be ended (database); it is still valid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn sign_out(State(state): State<ApiState>, req: Request) -> ApiResult<Response> {
    let headers = req.headers();
    let name = state.cookies().name(SESSION_COOKIE);
    if let Some(id) = session::cookie_of(headers, &name)
        && let Some(info) = state.auth().sessions.get(id).await
    {
        let sent = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !bool::from(sent.as_bytes().ct_eq(info.csrf_token.as_bytes())) {
            return Err(ApiError::forbidden(
                "signing out needs the session's X-CSRF-Token header",
            ));
        }
        if let Err(e) = state.auth().sessions.remove(id).await {
            tracing::error!(user = %info.principal.name, error = %e, "sign-out failed: the session could not be deleted from the database and stays valid");
            return Err(ApiError::unavailable(
                "the session could not be ended (the database failed); it is still valid: try again",
                Some(std::time::Duration::from_secs(5)),
            ));
        }
        tracing::info!(user = %info.principal.name, "signed out");
    }
    let secure = secure(&state, headers, req.extensions());
    let cookie = session::clear_cookie(&name, secure, SameSite::Strict);
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, header_value(&cookie))],
    )
        .into_response())
}

/// Parameters of the OIDC sign-in.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct OidcBeginQuery {
    /// Where to send the browser after signing in (a path on this site; default `/`).
    #[serde(default)]
    pub return_to: Option<String>,
}

/// A safe local path to return to (never another site).
fn local_path(p: Option<&str>) -> String {
    match p {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && p.len() <= 512
                && p.chars().all(|c| !c.is_control()) =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// The callback URL the provider sends the browser back to.
fn redirect_uri(
    state: &ApiState,
    headers: &HeaderMap,
    extensions: &http::Extensions,
) -> ApiResult<String> {
    if let Some(base) = &state.config().public_url {
        return Ok(format!("{}{CALLBACK_PATH}", base.trim_end_matches('/')));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .ok_or_else(|| {
            ApiError::bad_request(
                Some("Host"),
                "cannot build the sign-in callback URL: set api.public_url",
            )
        })?;
    let scheme = if state.tls().is_some() || secure(state, headers, extensions) {
        "https"
    } else {
        "http"
    };
    Ok(format!("{scheme}://{host}{CALLBACK_PATH}"))
}

fn oidc_of(state: &ApiState) -> ApiResult<&crate::auth::oidc::Oidc> {
    state
        .auth()
        .oidc
        .as_ref()
        .ok_or_else(|| ApiError::not_found("sign-in through an OIDC provider is not configured"))
}

/// Sign in through the OIDC provider: redirects the browser there (authorization code flow
/// with PKCE), with a short-lived HttpOnly cookie that binds the sign-in to this browser.
/// Starts are limited per client address.
#[utoipa::path(
    get, path = "/api/v1/session/oidc", tag = "session", security(()),
    params(OidcBeginQuery),
    responses(
        (status = 303, description = "To the provider's sign-in page"),
        (status = 404, description = "OIDC is not configured", body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The provider is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn oidc_begin(
    State(state): State<ApiState>,
    Query(q): Query<OidcBeginQuery>,
    req: Request,
) -> ApiResult<Response> {
    let oidc = oidc_of(&state)?;
    let ip = client_ip(&state, req.headers(), req.extensions());
    state.auth().limiter.check(ip).map_err(too_many)?;
    state.auth().start_limiter.start(ip).map_err(|wait| {
        tracing::info!(client = %ip, "too many OIDC sign-ins started from one address");
        ApiError::too_many(
            "too many sign-ins started from this address; wait and try again",
            wait,
        )
    })?;
    let redirect = redirect_uri(&state, req.headers(), req.extensions())?;
    let (url, binding) = oidc
        .begin(&redirect, &local_path(q.return_to.as_deref()))
        .await
        .map_err(ApiError::from)?;
    let location = HeaderValue::from_str(&url)
        .map_err(|_| ApiError::unavailable("the provider's sign-in URL is not usable", None))?;
    let cookie = session::set_cookie(
        &state.cookies().name(OIDC_COOKIE),
        &binding,
        crate::auth::oidc::SIGN_IN_TTL,
        secure(&state, req.headers(), req.extensions()),
        SameSite::Lax,
    );
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location),
            (header::SET_COOKIE, header_value(&cookie)),
        ],
    )
        .into_response())
}

/// Parameters the provider sends back.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct OidcCallbackQuery {
    /// The authorization code.
    #[serde(default)]
    pub code: Option<String>,
    /// The state ccm sent.
    #[serde(default)]
    pub state: Option<String>,
    /// The provider's error, if the sign-in failed there.
    #[serde(default)]
    pub error: Option<String>,
    /// Its description.
    #[serde(default)]
    pub error_description: Option<String>,
}

/// Where the provider sends the browser back: checks the browser's binding cookie,
/// exchanges the code, starts the session (lasting no longer than the provider's tokens) and
/// redirects to `return_to`.
#[utoipa::path(
    get, path = "/api/v1/session/oidc/callback", tag = "session", security(()),
    params(OidcCallbackQuery),
    responses(
        (status = 303, description = "Signed in; `Set-Cookie` holds the session"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The account has no ccm role", body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn oidc_callback(
    State(state): State<ApiState>,
    Query(q): Query<OidcCallbackQuery>,
    req: Request,
) -> ApiResult<Response> {
    let oidc = oidc_of(&state)?;
    let headers = req.headers().clone();
    let extensions = req.extensions().clone();
    let ip = client_ip(&state, &headers, &extensions);
    let limiter = &state.auth().limiter;
    limiter.check(ip).map_err(too_many)?;
    let fail = |e: AuthError| -> ApiError {
        if !matches!(e, AuthError::Provider(_)) {
            metrics::counter!(crate::metrics::AUTH_FAILURES, "method" => "oidc").increment(1);
            tracing::info!(client = %ip, reason = %e, "OIDC sign-in refused");
            if let Err(wait) = limiter.failed(ip) {
                return too_many(wait);
            }
        }
        e.into()
    };
    if let Some(error) = &q.error {
        let clean =
            |t: &str| -> String { t.chars().take(120).filter(|c| !c.is_control()).collect() };
        let mut text = clean(error);
        if let Some(d) = &q.error_description {
            text = format!("{text} ({})", clean(d));
        }
        return Err(fail(AuthError::Invalid(format!(
            "the provider refused the sign-in: {text}"
        ))));
    }
    let (Some(code), Some(st)) = (q.code.as_deref(), q.state.as_deref()) else {
        return Err(ApiError::bad_request(
            Some("code"),
            "the callback needs code and state",
        ));
    };
    if code.len() > 4096 || st.len() > 512 {
        return Err(ApiError::bad_request(
            Some("code"),
            "code or state too long",
        ));
    }
    let binding_name = state.cookies().name(OIDC_COOKIE);
    let binding = session::cookie_of(&headers, &binding_name);
    let (verified, return_to) = oidc.complete(code, st, binding).await.map_err(fail)?;
    let (cookie, _) = start_session(&state, &headers, &extensions, verified).await;
    let location = HeaderValue::from_str(&local_path(Some(&return_to)))
        .unwrap_or_else(|_| HeaderValue::from_static("/"));
    let clear = session::clear_cookie(
        &binding_name,
        secure(&state, &headers, &extensions),
        SameSite::Lax,
    );
    let mut res = (
        StatusCode::SEE_OTHER,
        [(header::SET_COOKIE, cookie), (header::LOCATION, location)],
    )
        .into_response();
    res.headers_mut()
        .append(header::SET_COOKIE, header_value(&clear));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_paths_should_stay_on_this_site() {
        assert_eq!(local_path(Some("/workers?x=1")), "/workers?x=1");
        for bad in ["//evil.example", "https://evil.example", "/\\evil", "x"] {
            assert_eq!(local_path(Some(bad)), "/", "{bad}");
        }
        assert_eq!(local_path(None), "/");
    }
}
