//! `ccm bench idle` without the AWS SDK (a release build of this example takes a fraction of
//! the binary's time, memory and disk): every preset and the random trace by default.
//!
//! `cargo run --release -p ccm-testbed --example idle_bench -- [TRACE…] [--svg FILE]
//! [--seed N] [--random-workers N] [--every-tick] [--listen-base IP] [--policy NAME]…
//! [--sweep] [--sweep-original]`
//!
//! `--from-json FILE` (repeatable) runs nothing: it reads the JSON of earlier runs (one
//! array of reports per file, e.g. one run per preset), prints them merged and draws `--svg`.
//! `--sweep` adds the fair comparison: `cpu-threshold` and `fixed-schedule` with their knob
//! swept (cheap: no engine); `--sweep-original` sweeps `original`'s timeout too (an engine run
//! per value).
//! `--policy` (repeatable) runs only the named policies (`ccm`, `ccm-nodes-ignored`,
//! `original`, `cpu-threshold`, `fixed-schedule`) instead of the preset's defaults.
//! TRACE is a preset name, `random` or `random-workday` (the two random models; seed 1, 200
//! workers, 7 days, as `ccm bench idle`'s defaults) or a path; run from the repository root (presets are read from `bench/traces/`).
//! JSON on stdout, tables on stderr.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a measuring tool")]

use std::path::{Path, PathBuf};

use ccm_testbed::bench::idle::{self, PRESETS, Trace};

#[tokio::main]
async fn main() {
    let mut names = Vec::new();
    let mut svg: Option<PathBuf> = None;
    let (mut seed, mut random_workers) = (1u64, 200usize);
    let mut every_tick = false;
    let (mut sweep, mut sweep_original) = (false, false);
    let mut listen_base: Option<std::net::Ipv4Addr> = None;
    let mut only: Vec<idle::PolicyKind> = Vec::new();
    let mut from_json: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--listen-base" {
            listen_base = Some(
                args.next()
                    .and_then(|v| v.parse().ok())
                    .expect("--listen-base IPv4"),
            );
        } else if a == "--from-json" {
            from_json.push(args.next().map(PathBuf::from).expect("--from-json FILE"));
        } else if a == "--policy" {
            only.push(
                args.next()
                    .and_then(|v| idle::PolicyKind::parse(&v))
                    .expect("--policy NAME"),
            );
        } else if a == "--sweep" {
            sweep = true;
        } else if a == "--sweep-original" {
            sweep = true;
            sweep_original = true;
        } else if a == "--every-tick" {
            every_tick = true;
        } else if a == "--svg" {
            svg = args.next().map(PathBuf::from);
        } else if a == "--seed" {
            seed = args.next().and_then(|v| v.parse().ok()).expect("--seed N");
        } else if a == "--random-workers" {
            random_workers = args
                .next()
                .and_then(|v| v.parse().ok())
                .expect("--random-workers N");
        } else {
            names.push(a);
        }
    }
    if !from_json.is_empty() {
        let mut reports: Vec<idle::IdleReport> = Vec::new();
        for path in &from_json {
            let text = std::fs::read_to_string(path).unwrap();
            reports.extend(serde_json::from_str::<Vec<idle::IdleReport>>(&text).unwrap());
        }
        for r in &reports {
            eprint!("{}", idle::table(r));
        }
        if let Some(path) = svg {
            std::fs::write(&path, idle::chart(&reports)).unwrap();
        }
        println!("{}", serde_json::to_string_pretty(&reports).unwrap());
        return;
    }
    if names.is_empty() {
        names = PRESETS.iter().map(|p| (*p).to_owned()).collect();
        names.push("random".into());
    }
    let mut reports = Vec::new();
    for name in names {
        let trace = if name == "random" {
            Trace::random(seed, random_workers, 7)
        } else if name == "random-workday" {
            Trace::random_workday(seed, random_workers, 7)
        } else {
            idle::load_trace(&name, Path::new("bench/traces")).unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(64)
            })
        };
        let mut opts = idle::default_options(trace);
        if !only.is_empty() {
            opts.policies.clone_from(&only);
        }
        opts.skip_quiet = !every_tick;
        opts.sweep = sweep;
        opts.sweep_original = sweep_original;
        if let Some(ip) = listen_base {
            opts.listen_base = ip;
        }
        let report = idle::idle(opts).await.unwrap();
        eprint!("{}", idle::table(&report));
        reports.push(report);
    }
    if let Some(path) = svg {
        std::fs::write(&path, idle::chart(&reports)).unwrap();
    }
    println!("{}", serde_json::to_string_pretty(&reports).unwrap());
}
