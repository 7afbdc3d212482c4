//! The crate's module graph: built from the `crate::`, `super::` and `self::` paths in
//! `src/` (test modules excluded), it must have no cycle, and the jobs must not reach the
//! engine or its command modules (they get a `JobContext`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`jobs::cml`; `crate` for lib.rs) → its source without test modules.
fn sources() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read file");
                out.insert(module_of(&src, &path), without_tests(&text));
            }
        }
    }
    out
}

fn module_of(src: &Path, file: &Path) -> String {
    let rel: PathBuf = file.strip_prefix(src).expect("under src").to_path_buf();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    if parts.is_empty() {
        "crate".to_owned()
    } else {
        parts.join("::")
    }
}

/// Drops comments and everything from the first `#[cfg(test)] mod …` on (test modules sit at
/// the end of their files; inside them `super` means the file's own module).
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod "))
        {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        let code = match line.find("//") {
            // A `//` inside a string (a URL) is rare here; keep the line whole then.
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Every path named after `root::` in `text` (groups `{a, b::{c}}` expanded).
fn paths_after(text: &str, root: &str) -> Vec<Vec<String>> {
    let bytes = text.as_bytes();
    let needle = format!("{root}::");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find(&needle) {
        let at = from + pos;
        from = at + needle.len();
        // A whole word: `super::` must not match inside `xsuper::`.
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        tree(bytes, from, Vec::new(), &mut out);
    }
    out
}

fn tree(b: &[u8], mut i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    if i < b.len() && b[i] == b'{' {
        i += 1;
        loop {
            i = tree(b, i, prefix.clone(), out);
            while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
                i += 1;
            }
            if i >= b.len() || b[i] == b'}' {
                return i + 1;
            }
        }
    }
    let start = i;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'*') {
        i += 1;
    }
    let ident = String::from_utf8_lossy(&b[start..i]).into_owned();
    let mut path = prefix;
    if !ident.is_empty() && ident != "self" {
        path.push(ident);
    }
    if b[i..].starts_with(b"::") {
        return tree(b, i + 2, path, out);
    }
    // Skip an `as name` alias.
    out.push(path);
    i
}

/// Module → the modules it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let sources = sources();
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    let resolve = |path: &[String]| -> Option<String> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|m| modules.contains(m))
    };
    let mut edges = BTreeMap::new();
    for (module, text) in &sources {
        let mut to = BTreeSet::new();
        let own: Vec<String> = if module == "crate" {
            Vec::new()
        } else {
            module.split("::").map(str::to_owned).collect()
        };
        let parent: Vec<String> = own[..own.len().saturating_sub(1)].to_vec();
        for p in paths_after(text, "crate") {
            to.extend(resolve(&p));
        }
        for p in paths_after(text, "super") {
            to.extend(resolve(&[parent.clone(), p].concat()));
        }
        for p in paths_after(text, "self") {
            to.extend(resolve(&[own.clone(), p].concat()));
        }
        // `mod x;` / `pub use x::…` in a parent names its children; only a child naming its
        // parent back (or a sibling cycle) would be a cycle.
        for line in text.lines() {
            let t = line.trim_start();
            let t = t
                .strip_prefix("pub(crate) ")
                .or(t.strip_prefix("pub "))
                .unwrap_or(t);
            if let Some(rest) = t.strip_prefix("use ") {
                let first: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let child = [own.clone(), vec![first]].concat().join("::");
                if modules.contains(&child) {
                    to.insert(child);
                }
            }
        }
        to.remove(module);
        to.remove("crate");
        edges.insert(module.clone(), to);
    }
    edges
}

fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, edges, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|m| visit(m, edges, &mut done, &mut Vec::new()))
}

#[test]
fn the_parser_should_see_grouped_and_relative_paths() {
    let text = "use crate::{a::B, c::{d::E, self}};\nuse super::f::G;\nlet x = crate::h::i();";
    assert_eq!(
        paths_after(text, "crate"),
        vec![
            vec!["a".to_owned(), "B".to_owned()],
            vec!["c".to_owned(), "d".to_owned(), "E".to_owned()],
            vec!["c".to_owned()],
            vec!["h".to_owned(), "i".to_owned()],
        ]
    );
    assert_eq!(
        paths_after(text, "super"),
        vec![vec!["f".to_owned(), "G".to_owned()]]
    );
    let mut edges = BTreeMap::new();
    edges.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    edges.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert!(
        find_cycle(&edges).is_some(),
        "a two-module cycle must be found"
    );
}

#[test]
fn the_engine_crate_should_have_no_module_cycles() {
    let edges = graph();
    assert!(edges.contains_key("jobs::context"), "{:?}", edges.keys());
    assert!(
        edges["engine"].contains("jobs") && edges["jobs::cml"].contains("jobs::context"),
        "the graph misses known edges: {edges:#?}"
    );
    if let Some(cycle) = find_cycle(&edges) {
        panic!("module cycle: {}", cycle.join(" → "));
    }
}

#[test]
fn jobs_should_not_reach_the_engine_or_its_commands() {
    let forbidden = [
        "engine",
        "commands",
        "provisioning",
        "cml_commands",
        "licence",
    ];
    for (module, to) in graph() {
        if module == "jobs" || module.starts_with("jobs::") {
            for f in forbidden {
                assert!(
                    !to.contains(f),
                    "{module} depends on {f}: jobs get a JobContext, not the engine"
                );
            }
        }
    }
}
