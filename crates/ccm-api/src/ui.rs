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
//!
//! **Editing the UI without relinking.** A debug build serves the files from the source folder
//! (`crates/ccm-api/ui/`, when it exists) instead of the embedded copies, read on every
//! request: edit, reload the page. `CCM_UI_DIR=<folder>` does the same in any build (an empty
//! value forces the embedded files). Only the names in [`ASSETS`] are served either way, with
//! the same content types, ETags and CSP; a file that cannot be read falls back to its
//! embedded copy.

use std::borrow::Cow;
use std::path::{Path as FsPath, PathBuf};
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
    asset!("view-create.js", "text/javascript; charset=utf-8"),
    asset!("view-import.js", "text/javascript; charset=utf-8"),
    asset!("forms.js", "text/javascript; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
];

/// The strong ETag of some bytes: the first half of their SHA-256.
fn etag_of(bytes: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(bytes);
    let tag = format!("\"{}\"", hex::encode(&digest[..16]));
    HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// The strong ETag of each embedded asset, in [`ASSETS`] order (computed once).
fn etags() -> &'static [HeaderValue] {
    static TAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    TAGS.get_or_init(|| ASSETS.iter().map(|a| etag_of(a.bytes)).collect())
}

/// Where the files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// The copies embedded at compile time (release builds).
    Embedded,
    /// A folder, read on every request (debug builds, `CCM_UI_DIR`).
    Dir(PathBuf),
}

/// The source of this process, chosen once: `CCM_UI_DIR` if set (empty: embedded), else the
/// source folder in a debug build, else the embedded files.
fn source() -> &'static Source {
    static SOURCE: OnceLock<Source> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let built_in =
            cfg!(debug_assertions).then(|| FsPath::new(env!("CARGO_MANIFEST_DIR")).join("ui"));
        let chosen = choose_source(std::env::var_os("CCM_UI_DIR").map(PathBuf::from), built_in);
        if let Source::Dir(dir) = &chosen {
            tracing::info!(dir = %dir.display(), "serving the web UI from disk");
        }
        chosen
    })
}

/// `CCM_UI_DIR` wins (empty: embedded); else the debug build's source folder if it exists.
fn choose_source(env: Option<PathBuf>, debug_folder: Option<PathBuf>) -> Source {
    match env {
        Some(dir) if dir.as_os_str().is_empty() => Source::Embedded,
        Some(dir) => Source::Dir(dir),
        None => match debug_folder {
            Some(dir) if dir.is_dir() => Source::Dir(dir),
            _ => Source::Embedded,
        },
    }
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
async fn serve(source: &Source, name: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return ApiError::not_found("no such file of the web UI").into_response();
    };
    let asset = &ASSETS[i];
    let (bytes, tag): (Cow<'static, [u8]>, HeaderValue) = match source {
        Source::Embedded => (Cow::Borrowed(asset.bytes), etags()[i].clone()),
        // The name is one of ASSETS (flat, no separators), so it stays inside the folder.
        Source::Dir(dir) => match tokio::fs::read(dir.join(asset.name)).await {
            Ok(bytes) => {
                let tag = etag_of(&bytes);
                (Cow::Owned(bytes), tag)
            }
            Err(e) => {
                tracing::warn!(file = asset.name, dir = %dir.display(), error = %e,
                    "cannot read a web UI file; serving the embedded copy");
                (Cow::Borrowed(asset.bytes), etags()[i].clone())
            }
        },
    };
    let mut res = if not_modified(headers, &tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut res = bytes.into_response();
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
    serve(source(), "index.html", &headers).await
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
    serve(source(), "index.html", &headers).await
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
        Ok(Path(name)) => serve(source(), &name, &headers).await,
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

    async fn serve(name: &str, headers: &HeaderMap) -> Response {
        super::serve(&Source::Embedded, name, headers).await
    }

    #[tokio::test]
    async fn assets_should_answer_304_to_their_etag_and_200_otherwise() {
        let mut h = HeaderMap::new();
        let first = serve("app.js", &h).await;
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(
            first.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(first.headers()[header::CACHE_CONTROL], "no-cache");
        let tag = first.headers()[header::ETAG].clone();
        h.insert(header::IF_NONE_MATCH, tag.clone());
        let again = serve("app.js", &h).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::ETAG], tag);
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(serve("app.js", &h).await.status(), StatusCode::OK);
        let page = serve("index.html", &HeaderMap::new()).await;
        assert!(
            page.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        assert_eq!(
            serve("../Cargo.toml", &HeaderMap::new()).await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            serve("nope.js", &HeaderMap::new()).await.status(),
            StatusCode::NOT_FOUND
        );
    }

    async fn body(res: Response) -> Vec<u8> {
        axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec()
    }

    #[tokio::test]
    async fn a_ui_folder_should_be_read_on_every_request_so_edits_need_no_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let source = Source::Dir(dir.path().to_owned());
        std::fs::write(dir.path().join("app.css"), "body { color: red }").unwrap();
        let first = super::serve(&source, "app.css", &HeaderMap::new()).await;
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(
            first.headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );
        let tag = first.headers()[header::ETAG].clone();
        assert_eq!(body(first).await, b"body { color: red }");

        // Edited on disk: the next request has the new bytes and a new ETag.
        std::fs::write(dir.path().join("app.css"), "body { color: blue }").unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, tag.clone());
        let second = super::serve(&source, "app.css", &h).await;
        assert_eq!(
            second.status(),
            StatusCode::OK,
            "the old ETag must not match"
        );
        assert_ne!(second.headers()[header::ETAG], tag);
        assert_eq!(body(second).await, b"body { color: blue }");

        // The shell keeps its CSP; a missing file falls back to the embedded copy; names
        // outside ASSETS are not served even if the folder has them.
        std::fs::write(dir.path().join("index.html"), "<p>edited</p>").unwrap();
        let page = super::serve(&source, "index.html", &HeaderMap::new()).await;
        assert!(page.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        let js = super::serve(&source, "app.js", &HeaderMap::new()).await;
        assert_eq!(
            body(js).await,
            ASSETS.iter().find(|a| a.name == "app.js").unwrap().bytes
        );
        std::fs::write(dir.path().join("secret.txt"), "no").unwrap();
        let other = super::serve(&source, "secret.txt", &HeaderMap::new()).await;
        assert_eq!(other.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn ccm_ui_dir_should_choose_the_source_and_debug_builds_should_default_to_the_folder() {
        let ui = ui_dir();
        assert_eq!(
            choose_source(None, Some(ui.clone())),
            Source::Dir(ui.clone())
        );
        assert_eq!(choose_source(None, None), Source::Embedded);
        assert_eq!(
            choose_source(None, Some(ui.join("missing"))),
            Source::Embedded,
            "a binary run away from its source tree embeds"
        );
        assert_eq!(
            choose_source(Some(PathBuf::from("/srv/ui")), Some(ui.clone())),
            Source::Dir(PathBuf::from("/srv/ui"))
        );
        assert_eq!(
            choose_source(Some(PathBuf::new()), Some(ui)),
            Source::Embedded
        );
    }
}
