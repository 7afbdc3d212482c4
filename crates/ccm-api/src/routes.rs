//! Every route: the role table ([`ROUTES`], the one place that says who may call what), the
//! router (built from the `#[utoipa::path]` handlers, so the router and the OpenAPI document
//! cannot diverge) and the document itself.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use axum::Router;
use axum::extract::Request;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, header};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument as _;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, Role};
use crate::error::ApiError;
use crate::handlers::{labs, meta, session, system, webhooks, workers};
use crate::sse;
use crate::state::ApiState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without credentials (probes, the sign-in).
    Public,
    /// Callers with at least this role.
    Role(Role),
}

/// One route and its access rule.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// HTTP method (`HEAD` follows `GET`).
    pub method: Method,
    /// The path as routed (`/api/v1/workers/{id}`).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
}

const PUBLIC: Access = Access::Public;
const VIEWER: Access = Access::Role(Role::Viewer);
const LAB_OPERATOR: Access = Access::Role(Role::LabOperator);
const MANAGER: Access = Access::Role(Role::Manager);
const ADMIN: Access = Access::Role(Role::Admin);

const fn r(method: Method, path: &'static str, access: Access) -> RouteSpec {
    RouteSpec {
        method,
        path,
        access,
    }
}

/// The role table: every route of the API with its minimum role.
///
/// - public: the probes, the sign-in, and the web UI's page shell and assets (no data);
/// - viewer: every read (lists, details, labs' topology download, events, metrics, docs);
/// - lab_operator: lab actions (start, stop, wipe, import) and refreshing a worker;
/// - manager: operating workers (create, import, start, stop, pause, resume, tags, detailed
///   monitoring, idle switch), deleting labs, and licences;
/// - admin: terminate, delete a worker record, change settings, run jobs.
pub static ROUTES: &[RouteSpec] = &[
    r(Method::GET, "/healthz", PUBLIC),
    r(Method::GET, "/readyz", PUBLIC),
    r(Method::GET, "/metrics", VIEWER),
    r(Method::GET, "/api/openapi.json", VIEWER),
    r(Method::GET, "/api/docs", VIEWER),
    r(Method::GET, "/api/docs/", VIEWER),
    r(Method::GET, "/api/docs/{file}", VIEWER),
    r(Method::GET, "/api/v1/session/methods", PUBLIC),
    r(Method::POST, "/api/v1/session", PUBLIC),
    r(Method::GET, "/api/v1/session", VIEWER),
    r(Method::DELETE, "/api/v1/session", PUBLIC),
    r(Method::GET, "/api/v1/session/oidc", PUBLIC),
    r(Method::GET, "/api/v1/session/oidc/callback", PUBLIC),
    r(Method::GET, "/api/v1/events", VIEWER),
    r(Method::GET, "/api/v1/workers", VIEWER),
    r(Method::POST, "/api/v1/workers", MANAGER),
    r(Method::POST, "/api/v1/workers/import", MANAGER),
    // A preview asks the cloud (DescribeInstances, DescribeImages) on the caller's behalf:
    // only for those who may import or create.
    r(Method::POST, "/api/v1/workers/import/preview", MANAGER),
    r(Method::GET, "/api/v1/images", MANAGER),
    r(Method::GET, "/api/v1/workers/{id}", VIEWER),
    r(Method::DELETE, "/api/v1/workers/{id}", ADMIN),
    r(Method::POST, "/api/v1/workers/{id}/start", MANAGER),
    r(Method::POST, "/api/v1/workers/{id}/stop", MANAGER),
    r(Method::POST, "/api/v1/workers/{id}/pause", MANAGER),
    r(Method::POST, "/api/v1/workers/{id}/resume", MANAGER),
    r(Method::POST, "/api/v1/workers/{id}/terminate", ADMIN),
    r(Method::POST, "/api/v1/workers/{id}/refresh", LAB_OPERATOR),
    r(Method::PATCH, "/api/v1/workers/{id}/tags", MANAGER),
    r(
        Method::POST,
        "/api/v1/workers/{id}/detailed-monitoring",
        MANAGER,
    ),
    r(Method::PUT, "/api/v1/workers/{id}/idle-detection", MANAGER),
    r(Method::PUT, "/api/v1/workers/{id}/snooze", MANAGER),
    r(Method::DELETE, "/api/v1/workers/{id}/snooze", MANAGER),
    r(Method::GET, "/api/v1/workers/{id}/metrics", VIEWER),
    r(Method::GET, "/api/v1/workers/{id}/events", VIEWER),
    r(Method::GET, "/api/v1/workers/{id}/labs", VIEWER),
    r(Method::POST, "/api/v1/workers/{id}/labs", LAB_OPERATOR),
    r(
        Method::DELETE,
        "/api/v1/workers/{id}/labs/{lab_id}",
        MANAGER,
    ),
    r(
        Method::POST,
        "/api/v1/workers/{id}/labs/{lab_id}/start",
        LAB_OPERATOR,
    ),
    r(
        Method::POST,
        "/api/v1/workers/{id}/labs/{lab_id}/stop",
        LAB_OPERATOR,
    ),
    r(
        Method::POST,
        "/api/v1/workers/{id}/labs/{lab_id}/wipe",
        LAB_OPERATOR,
    ),
    r(
        Method::GET,
        "/api/v1/workers/{id}/labs/{lab_id}/topology",
        VIEWER,
    ),
    r(Method::POST, "/api/v1/workers/{id}/licence", MANAGER),
    r(Method::DELETE, "/api/v1/workers/{id}/licence", MANAGER),
    r(Method::GET, "/api/v1/system/health", VIEWER),
    r(Method::GET, "/api/v1/system/counts", VIEWER),
    r(Method::GET, "/api/v1/system/replicas", VIEWER),
    r(Method::GET, "/api/v1/system/resilience", VIEWER),
    r(Method::GET, "/api/v1/system/jobs", VIEWER),
    r(Method::POST, "/api/v1/system/jobs/{job}/run", ADMIN),
    r(Method::GET, "/api/v1/system/savings", VIEWER),
    r(Method::GET, "/api/v1/system/webhooks", VIEWER),
    r(Method::GET, "/api/v1/system/provisioning", VIEWER),
    r(Method::GET, "/api/v1/settings", VIEWER),
    r(Method::PATCH, "/api/v1/settings", ADMIN),
    // The web UI: page shell and assets hold no data (it all comes from the API above).
    r(Method::GET, "/", PUBLIC),
    r(Method::GET, "/login", PUBLIC),
    r(Method::GET, "/ui/{file}", PUBLIC),
];

/// The rules by (method, path), and the set of routed paths.
type Table = (
    HashMap<(Method, &'static str), Access>,
    HashSet<&'static str>,
);

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let rules = ROUTES
            .iter()
            .map(|r| ((r.method.clone(), r.path), r.access))
            .collect();
        let paths = ROUTES.iter().map(|r| r.path).collect();
        (rules, paths)
    })
}

/// The access rule of a routed path (`HEAD` as `GET`).
pub fn access(method: &Method, path: &str) -> Option<Access> {
    let method = if method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    let (rules, paths) = table();
    let path = paths.get(path)?;
    rules.get(&(method, *path)).copied()
}

/// The route template a request path matches (`/api/v1/workers/{id}`), found by `matchit` — the
/// matcher axum routes with — over the paths of [`ROUTES`]. The request's span is named after
/// it when the span opens, before axum has routed the request.
pub fn route_of(path: &str) -> Option<&'static str> {
    static MATCHER: OnceLock<matchit::Router<&'static str>> = OnceLock::new();
    let matcher = MATCHER.get_or_init(|| {
        let mut m = matchit::Router::new();
        for p in table().1.iter() {
            if let Err(e) = m.insert(*p, *p) {
                tracing::error!(path = p, error = %e, "route template not matchable");
            }
        }
        m
    });
    matcher.at(path).ok().map(|m| *m.value)
}

impl Access {
    /// Whether a caller with `role` may call a route with this rule.
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Public => true,
            Access::Role(required) => role >= required,
        }
    }
}

/// The API routes (`/api/v1/…`) a role may call, as `METHOD /path/{template}`: what the web
/// UI reads to show only the buttons a caller may use (the role table stays the one rule).
pub fn permissions(role: Role) -> Vec<String> {
    ROUTES
        .iter()
        .filter(|r| r.path.starts_with("/api/v1/") && r.access.allows(role))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// Whether any method of this routed path has a rule.
pub(crate) fn is_known_path(path: &str) -> bool {
    table().1.contains(path)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ccm",
        description = "Control plane for fleets of Cisco Modeling Labs instances on AWS EC2.\n\n\
Authenticate with `Authorization: Bearer <token>` (a static API token or an OIDC access token), \
or sign in (`POST /api/v1/session`) for a session cookie; with the cookie, state-changing requests \
need the `X-CSRF-Token` header. Each operation's minimum role is in `x-ccm-role` \
(`public`, `viewer`, `lab_operator`, `manager`, `admin`). Errors are RFC 9457 `application/problem+json`.",
    ),
    tags(
        (name = "workers", description = "CML workers on EC2"),
        (name = "labs", description = "Labs of a worker"),
        (name = "images", description = "Machine images (AMIs) a new worker could use"),
        (name = "licence", description = "The CML licence of a worker"),
        (name = "events", description = "Live events (SSE)"),
        (name = "system", description = "Health, jobs, breakers, savings, webhooks"),
        (name = "settings", description = "Runtime settings"),
        (name = "session", description = "Browser sign-in"),
        (name = "probes", description = "Liveness, readiness, metrics"),
        (name = "docs", description = "This document"),
        (name = "ui", description = "The web UI: page shell and assets (public; all data comes from the API)"),
    )
)]
struct ApiDoc;

/// The router and the OpenAPI document, before state and middleware.
fn parts() -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(meta::healthz))
        .routes(routes!(meta::readyz))
        .routes(routes!(meta::metrics))
        .routes(routes!(meta::openapi_json))
        .routes(routes!(meta::docs_redirect))
        .routes(routes!(meta::docs_index))
        .routes(routes!(meta::docs_asset))
        .routes(routes!(session::methods))
        .routes(routes!(
            session::sign_in,
            session::current,
            session::sign_out
        ))
        .routes(routes!(session::oidc_begin))
        .routes(routes!(session::oidc_callback))
        .routes(routes!(sse::events))
        .routes(routes!(workers::list, workers::create))
        .routes(routes!(workers::import))
        .routes(routes!(workers::import_preview))
        .routes(routes!(workers::images))
        .routes(routes!(workers::get, workers::delete))
        .routes(routes!(workers::start))
        .routes(routes!(workers::stop))
        .routes(routes!(workers::pause))
        .routes(routes!(workers::resume))
        .routes(routes!(workers::terminate))
        .routes(routes!(workers::refresh))
        .routes(routes!(workers::tags))
        .routes(routes!(workers::detailed_monitoring))
        .routes(routes!(workers::idle_detection))
        .routes(routes!(workers::snooze, workers::clear_snooze))
        .routes(routes!(workers::metrics_history))
        .routes(routes!(workers::events))
        .routes(routes!(labs::list, labs::import))
        .routes(routes!(labs::delete))
        .routes(routes!(labs::start))
        .routes(routes!(labs::stop))
        .routes(routes!(labs::wipe))
        .routes(routes!(labs::download))
        .routes(routes!(labs::register, labs::deregister))
        .routes(routes!(system::health))
        .routes(routes!(system::counts))
        .routes(routes!(system::replicas))
        .routes(routes!(system::resilience))
        .routes(routes!(system::jobs))
        .routes(routes!(system::run_job))
        .routes(routes!(system::savings))
        .routes(routes!(webhooks::list))
        .routes(routes!(system::provisioning))
        .routes(routes!(system::get_settings, system::patch_settings))
        .routes(routes!(crate::ui::index))
        .routes(routes!(crate::ui::login))
        .routes(routes!(crate::ui::asset))
        .split_for_parts()
}

/// Adds the security schemes, the event schemas (`event_schema`), and each operation's role from [`ROUTES`] as `x-ccm-role`.
fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("A static API token or an OIDC access token (JWT)"))
                .build(),
        ),
    );
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            auth::SESSION_COOKIE,
            "The browser session (state-changing requests also need X-CSRF-Token)",
        ))),
    );
    doc.security = Some(vec![
        utoipa::openapi::security::SecurityRequirement::new("bearer", Vec::<String>::new()),
        utoipa::openapi::security::SecurityRequirement::new("session", Vec::<String>::new()),
    ]);
    crate::event_schema::add_components(components);
    crate::dto::fix_source_view_schemas(components);
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    if let Some(op) = doc
        .paths
        .paths
        .get_mut("/api/v1/events")
        .and_then(|item| item.get.as_mut())
    {
        op.description = Some(event_catalogue_text());
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            (Method::GET, item.get.as_mut()),
            (Method::POST, item.post.as_mut()),
            (Method::PUT, item.put.as_mut()),
            (Method::PATCH, item.patch.as_mut()),
            (Method::DELETE, item.delete.as_mut()),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            let role = match access(&method, path) {
                Some(Access::Public) => "public",
                Some(Access::Role(r)) => r.as_str(),
                None => "none",
            };
            let ext = op.extensions.get_or_insert_with(Default::default);
            ext.merge(
                utoipa::openapi::extensions::ExtensionsBuilder::new()
                    .add("x-ccm-role", role)
                    .build(),
            );
        }
    }
    doc
}

/// The event catalogue as documentation: every CloudEvents type, which ones are transient
/// (live streams only, not in the log, never delivered to webhooks), and which are reserved
/// (in the catalogue, not emitted by this version).
pub fn event_catalogue_text() -> String {
    use ccm_domain::EventKind;
    let list = |f: fn(&ccm_domain::EventShape) -> bool| {
        let names: Vec<String> = EventKind::SHAPES
            .iter()
            .filter(|t| f(t))
            .map(|t| format!("`{}`", t.type_name))
            .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    format!(
        "The live event stream (CloudEvents 1.0, JSON). Event types: {}.\n\n\
Transient (sent live, not kept in the event log, not replayed, not delivered to webhooks): {}.\n\n\
Reserved (in the catalogue for compatibility, not emitted by this version): {}.",
        list(|_| true),
        list(|t| t.transient),
        list(|t| t.reserved),
    )
}

/// The OpenAPI 3.1 document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    finish(parts().1)
}

/// The document as JSON text (built once).
pub(crate) fn openapi_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| openapi().to_json().unwrap_or_else(|_| "{}".to_owned()))
}

async fn not_found(req: Request) -> Response {
    ApiError::not_found(format!(
        "no route for {}",
        req.uri().path().chars().take(200).collect::<String>()
    ))
    .into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    ApiError::new(
        http::StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("{} is not allowed here", req.method()),
    )
    .into_response()
}

async fn security_headers(req: Request, next: middleware::Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// The header carrying a request's id, in both directions.
pub const REQUEST_ID: &str = "x-request-id";

/// A request's id (from a sane `X-Request-Id`, or made here), in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The client's `X-Request-Id` when it is sane (1 to 128 of letters, digits, `.`, `_`, `:`,
/// `-`): anything else is replaced, so a log or trace never carries a client's junk.
fn incoming_request_id(headers: &http::HeaderMap) -> Option<String> {
    let v = headers.get(REQUEST_ID)?.to_str().ok()?.trim();
    let sane = (1..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    sane.then(|| v.to_owned())
}

/// The outermost layer: every request runs inside an `info_span!("http")` named
/// `"{method} {route template}"` ([`route_of`]; the method alone for unknown paths), with the
/// method, the route, the status and its request id, which the answer carries back in
/// `X-Request-Id` (errors and panics included). Never the raw path or query.
async fn trace_request(mut req: Request, next: middleware::Next) -> Response {
    let id = incoming_request_id(req.headers()).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let method = req.method().clone();
    let route = route_of(req.uri().path());
    let name = match route {
        Some(r) => format!("{method} {r}"),
        None => method.to_string(),
    };
    let span = tracing::info_span!(
        "http",
        "otel.kind" = "server",
        "otel.name" = name,
        "http.request.method" = %method,
        "http.route" = route,
        "http.response.status_code" = tracing::field::Empty,
        request_id = %id,
    );
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", res.status().as_u16());
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    res
}

/// Records `ccm_http_requests_total` and `ccm_http_request_seconds` by route (never the raw
/// path or the query: they may hold ids and sign-in codes), and logs each request.
async fn observe(req: Request, next: middleware::Next) -> Response {
    let started = tokio::time::Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let res = next.run(req).await;
    let took = started.elapsed();
    let status = res.status().as_u16();
    metrics::counter!(crate::metrics::HTTP_REQUESTS, "method" => method.to_string(), "route" => route.clone(), "status" => status.to_string()).increment(1);
    metrics::histogram!(crate::metrics::HTTP_REQUEST_SECONDS, "route" => route.clone())
        .record(took.as_secs_f64());
    tracing::debug!(%method, route = %route, status, ms = took.as_millis() as u64, "http");
    res
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error; it has been logged",
    )
    .into_response()
}

/// The whole API: routes, role checks, problem+json for every error, metrics, CORS when
/// configured.
pub fn router(state: ApiState) -> Router {
    let (routes, _) = parts();
    let cors = (!state.config().cors_origins.is_empty()).then(|| {
        let origins: Vec<HeaderValue> = state
            .config()
            .cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                http::HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([
                header::LOCATION,
                header::ETAG,
                header::RETRY_AFTER,
                http::HeaderName::from_static(REQUEST_ID),
            ])
    });
    let app = routes
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::guard))
        .route_layer(middleware::from_fn(observe))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(middleware::from_fn(security_headers))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(trace_request));
    match cors {
        Some(cors) => app.layer(cors),
        None => app,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_should_map_to_their_route_templates() {
        for (path, route) in [
            ("/api/v1/workers", Some("/api/v1/workers")),
            ("/api/v1/workers/import", Some("/api/v1/workers/import")),
            ("/api/v1/workers/0193abcd", Some("/api/v1/workers/{id}")),
            (
                "/api/v1/workers/w1/labs/l1/start",
                Some("/api/v1/workers/{id}/labs/{lab_id}/start"),
            ),
            ("/api/docs/", Some("/api/docs/")),
            ("/", Some("/")),
            ("/api/v1/nope", None),
        ] {
            assert_eq!(route_of(path), route, "{path}");
        }
        // Every template maps to itself.
        for r in ROUTES {
            assert_eq!(route_of(r.path), Some(r.path));
        }
    }
}
