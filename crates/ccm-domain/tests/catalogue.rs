//! Every type of the event catalogue is emitted somewhere in the product's code, or is
//! explicitly marked `reserved` in `catalogue!` — a promised event nobody emits is a bug.
//!
//! "Emitted" means constructed as `EventKind::Variant { … }` in a non-test source file of
//! one of the workspace's crates (patterns in `match`/`if let` do not count).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use ccm_domain::EventKind;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The product code of every crate: `crates/*/src/**/*.rs` up to the first `#[cfg(test)]`,
/// without the catalogue itself and without `tests.rs` modules.
fn product_code() -> Vec<(PathBuf, String)> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(crates).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            sources(&src, &mut files);
        }
    }
    files
        .into_iter()
        .filter(|p| !p.ends_with("ccm-domain/src/events.rs"))
        .filter(|p| p.file_name().is_some_and(|n| n != "tests.rs"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let code = match text.find("#[cfg(test)]") {
                Some(i) => text[..i].to_owned(),
                None => text,
            };
            (p, code)
        })
        .collect()
}

/// Whether `code` constructs `EventKind::{variant} { … }` (not a pattern).
fn constructs(code: &str, variant: &str) -> bool {
    let needle = format!("EventKind::{variant}");
    let mut from = 0;
    while let Some(at) = code[from..].find(&needle) {
        let start = from + at + needle.len();
        from = start;
        let rest = &code[start..];
        // The whole name, followed by a brace.
        let Some(body) = rest.trim_start().strip_prefix('{') else {
            continue;
        };
        if rest.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut depth = 1;
        let mut end = None;
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else { continue };
        let inner = &body[..end];
        let after = body[end + 1..].trim_start();
        let is_pattern = inner.contains("..")
            || after.starts_with("=>")
            || after.starts_with('|')
            || (after.starts_with('=') && !after.starts_with("=="));
        if !is_pattern {
            return true;
        }
    }
    false
}

#[test]
fn every_catalogue_type_should_be_emitted_somewhere_or_marked_reserved() {
    let code = product_code();
    assert!(code.len() > 50, "found only {} source files", code.len());
    let mut silent = Vec::new();
    let mut reserved_but_emitted = Vec::new();
    for t in EventKind::SHAPES {
        let emitted_in: Vec<_> = code
            .iter()
            .filter(|(_, text)| constructs(text, t.variant))
            .map(|(p, _)| p.display().to_string())
            .collect();
        match (t.reserved, emitted_in.is_empty()) {
            (false, true) => silent.push(t.type_name),
            (true, false) => reserved_but_emitted.push((t.type_name, emitted_in)),
            _ => {}
        }
    }
    assert!(
        silent.is_empty(),
        "event types that nothing emits: emit them or mark them `reserved` in catalogue!: {silent:?}"
    );
    assert!(
        reserved_but_emitted.is_empty(),
        "reserved event types that are emitted: drop the flag: {reserved_but_emitted:?}"
    );
}

#[test]
fn the_scan_should_tell_a_construction_from_a_pattern() {
    let v = "JobFailed";
    assert!(constructs(
        "emit(vec![EventKind::JobFailed { job, error }]);",
        v
    ));
    assert!(constructs(
        "let k = EventKind::JobFailed {\n job: j,\n error: e,\n};",
        v
    ));
    assert!(!constructs("EventKind::JobFailed { .. } => {}", v));
    assert!(!constructs(
        "if let EventKind::JobFailed { job, error } = k {",
        v
    ));
    assert!(!constructs("EventKind::JobFailed { job, error } => {}", v));
    assert!(!constructs("EventKind::JobFailedLater { job }", v));
    assert!(!constructs("// nothing here", v));
}
