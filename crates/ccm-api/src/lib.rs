//! The HTTP API of ccm under `/api/v1` (axum), its live event stream (SSE), authentication
//! (static tokens, OIDC, browser sessions) and the OpenAPI document with its docs page.
//!
//! Newcomers start with [`ApiState`] (built from an [`ccm_engine::Engine`], an [`ApiConfig`]
//! and an [`AuthConfig`]) and [`router`] / [`serve`]. Every handler is a thin translation:
//! validate input, call one engine command or query, convert the result to the API's own
//! JSON ([`dto`]). Errors are RFC 9457 problem documents ([`ApiError`]).
//!
//! # Roles
//!
//! One table, [`routes::ROUTES`], gives every route its minimum role; the [`auth`] guard
//! enforces it before any handler runs, and the OpenAPI document shows it as `x-ccm-role`.
//!
//! | role | may |
//! |---|---|
//! | public | `/healthz`, `/readyz`, the sign-in (`/api/v1/session` POST/DELETE, `/session/methods`, `/session/oidc…`), the web UI's page shell and assets (`/`, `/login`, `/ui/{file}`) |
//! | viewer | every `GET`: workers, labs (incl. topology download), metrics history, events (SSE), system, settings, `/metrics`, the OpenAPI document and docs page |
//! | lab_operator | what a viewer may, plus lab actions (start, stop, wipe, import) and refreshing a worker |
//! | manager | operate workers (create, import, start, stop, pause, resume, refresh, tags, detailed monitoring, idle switch), labs (start, stop, wipe, delete, import) and licences |
//! | admin | everything, incl. terminate, delete a worker record, change settings, run jobs |
//!
//! # Status codes
//!
//! Long operations (create, start, stop, pause, resume, terminate) and licence operations
//! answer 202 with the resource as it is now and where to watch (`Location`; the event
//! stream filtered on the worker). Bad input is 400 (syntax, parameters, path ids) or 422
//! (values), naming the field; unknown ids 404; state conflicts 409; too large 413; wrong
//! media type 415; too many failed sign-ins 429; a sick cloud or CML 502/503/504 (503 with
//! `Retry-After` when known). Nothing a client sends yields 500.
//!
//! The web UI (module `ui`: HTML, CSS and JavaScript modules embedded at compile time) is served
//! at `/`, `/login` and `/ui/{file}`; its page shell is public and holds no data.
//!
//! Not here: business rules (`ccm-engine`, `ccm-domain`), storage (`ccm-store`).
#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod dto;
pub mod error;
pub mod event_schema;
pub mod extract;
mod handlers;
pub mod metrics;
pub mod routes;
pub mod serve;
pub mod sse;
pub mod sse_client;
mod state;
mod tls;
mod ui;
mod view_cache;

pub use auth::{AuthMethod, Principal, Role};
pub use config::{
    ApiConfig, AuthConfig, ConfigError, CookieSecure, OidcConfig, RoleMapping, ServerConfig,
    SignInLimit, TokenConfig, generate_token, hash_token,
};
pub use error::{ApiError, Problem};
pub use routes::{openapi, router};
pub use serve::{ClientAddr, serve};
pub use state::ApiState;
pub use view_cache::ViewCacheStats;
