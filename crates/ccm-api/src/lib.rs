//! The HTTP API under `/api/v1`, the SSE event stream, authentication (static tokens and
//! OIDC), and the embedded web UI.
#![warn(missing_docs)]
