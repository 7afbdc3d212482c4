//! The web UI: static files (HTML, CSS, JavaScript modules, an SVG icon) embedded in the
//! binary at compile time and served from it — no npm, no build step, nothing fetched from
//! anywhere at run time.
//!
//! - `GET /` and `GET /login`: the page shell (`index.html`). It is public and holds no data:
//!   the script asks `GET /api/v1/session` and shows the sign-in form when nobody is signed
//!   in; every datum comes from the authenticated API.
//! - `GET /ui/{file}`: the assets, flat (no sub-folders), each with its content type, an
//!   `ETag` (SHA-256 of its bytes) and `Cache-Control: no-cache` — the browser revalidates
//!   on every load and gets `304 Not Modified` while the binary is the same, so an upgrade
//!   is never masked by a stale cache.
//! - The shell carries a strict `Content-Security-Policy`: scripts, styles and connections
//!   only from this origin, no inline script, no framing. The scripts build every element
//!   with `textContent`/`setAttribute` (never `innerHTML` with API strings), so a worker
//!   name or tag holding markup is shown as text.
//!
//! Adding a file to `ui/` means adding one line to [`ASSETS`]; a test fails otherwise.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The policy of the page shell: everything from this origin only, no inline script.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    /// File name under `ui/` and `/ui/`.
    name: &'static str,
    /// `Content-Type` of the answer.
    content_type: &'static str,
    /// The bytes, embedded at compile time.
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../ui/", $name)),
        }
    };
}

/// Every file of the UI.
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("dom.js", "text/javascript; charset=utf-8"),
    asset!("live.js", "text/javascript; charset=utf-8"),
    asset!("dialog.js", "text/javascript; charset=utf-8"),
    asset!("chart.js", "text/javascript; charset=utf-8"),
    asset!("badges.js", "text/javascript; charset=utf-8"),
    asset!("view-signin.js", "text/javascript; charset=utf-8"),
    asset!("view-fleet.js", "text/javascript; charset=utf-8"),
    asset!("view-worker.js", "text/javascript; charset=utf-8"),
    asset!("view-system.js", "text/javascript; charset=utf-8"),
    asset!("view-settings.js", "text/javascript; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
];

/// The strong ETag of each asset, in [`ASSETS`] order (computed once).
fn etags() -> &'static [HeaderValue] {
    static TAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.bytes);
                let tag = format!("\"{}\"", hex::encode(&digest[..16]));
                HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
            })
            .collect()
    })
}

/// Whether `If-None-Match` names `tag` (or is `*`).
fn not_modified(headers: &HeaderMap, tag: &HeaderValue) -> bool {
    let Some(tag) = tag.to_str().ok() else {
        return false;
    };
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*")
}

/// The answer for one asset: 200 with the bytes, or 304 when the client has them.
fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return ApiError::not_found("no such file of the web UI").into_response();
    };
    let asset = &ASSETS[i];
    let tag = etags()[i].clone();
    let mut res = if not_modified(headers, &tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut res = asset.bytes.into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        res
    };
    let h = res.headers_mut();
    h.insert(header::ETAG, tag);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if asset.content_type.starts_with("text/html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    res
}

/// The web UI (public: the page shell holds no data; it shows the sign-in when needed).
#[utoipa::path(
    get, path = "/", tag = "ui", security(()),
    responses(
        (status = 200, description = "The web UI's page shell", content_type = "text/html", body = String),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
    )
)]
pub(crate) async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// The web UI's sign-in page (the same shell; public).
#[utoipa::path(
    get, path = "/login", tag = "ui", security(()),
    responses(
        (status = 200, description = "The web UI's page shell, showing the sign-in", content_type = "text/html", body = String),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
    )
)]
pub(crate) async fn login(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// A file of the web UI (script, style sheet, icon; public, embedded in the binary).
#[utoipa::path(
    get, path = "/ui/{file}", tag = "ui", security(()),
    params(("file" = String, Path, description = "A file of the web UI, e.g. `app.js`")),
    responses(
        (status = 200, description = "The file, with its content type and ETag", body = String),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag"),
        (status = 404, body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn asset(
    file: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    match file {
        Ok(Path(name)) => serve(&name, &headers),
        Err(_) => ApiError::not_found("no such file of the web UI").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn ui_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui")
    }

    #[test]
    fn every_file_in_the_ui_folder_should_be_embedded_and_no_other() {
        let on_disk: BTreeSet<String> = std::fs::read_dir(ui_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let embedded: BTreeSet<String> = ASSETS.iter().map(|a| a.name.to_owned()).collect();
        assert_eq!(on_disk, embedded, "update ASSETS in ui.rs");
    }

    #[test]
    fn every_module_the_scripts_import_should_be_embedded() {
        let names: BTreeSet<&str> = ASSETS.iter().map(|a| a.name).collect();
        let mut imports = 0;
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.bytes).unwrap();
            for (_, rest) in text
                .match_indices("} from '")
                .map(|(i, m)| text.split_at(i + m.len()))
            {
                let target = rest.split('\'').next().unwrap();
                let file = target.strip_prefix("./").unwrap_or_else(|| {
                    panic!("{}: imports must be relative (./x.js): {target}", a.name)
                });
                assert!(
                    names.contains(file),
                    "{} imports {file}, not embedded",
                    a.name
                );
                imports += 1;
            }
        }
        assert!(
            imports >= 10,
            "the import scan found only {imports} imports"
        );
    }

    #[test]
    fn the_scripts_should_never_assign_inner_html() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(a.bytes).unwrap();
            for bad in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!text.contains(bad), "{} uses {bad}", a.name);
            }
        }
    }

    #[test]
    fn the_live_view_should_listen_to_every_event_type_of_the_catalogue() {
        let live = ASSETS.iter().find(|a| a.name == "live.js").unwrap();
        let text = std::str::from_utf8(live.bytes).unwrap();
        for t in ccm_domain::EventKind::TYPES {
            assert!(
                text.contains(&format!("'{t}'")),
                "live.js does not know {t}"
            );
        }
    }

    #[test]
    fn the_shell_should_load_only_local_scripts_and_styles() {
        let html = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        assert!(html.contains("<script type=\"module\" src=\"/ui/app.js\"></script>"));
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(!html.contains("<script>"), "no inline script (CSP)");
        assert!(!html.contains("style=\""), "no inline style (CSP)");
    }

    #[test]
    fn assets_should_answer_304_to_their_etag_and_200_otherwise() {
        let mut h = HeaderMap::new();
        let first = serve("app.js", &h);
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(
            first.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(first.headers()[header::CACHE_CONTROL], "no-cache");
        let tag = first.headers()[header::ETAG].clone();
        h.insert(header::IF_NONE_MATCH, tag.clone());
        let again = serve("app.js", &h);
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::ETAG], tag);
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(serve("app.js", &h).status(), StatusCode::OK);
        let page = serve("index.html", &HeaderMap::new());
        assert!(
            page.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        assert_eq!(
            serve("../Cargo.toml", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            serve("nope.js", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
