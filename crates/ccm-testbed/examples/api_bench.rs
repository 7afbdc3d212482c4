//! `ccm bench api` without the AWS SDK (a release build of this example takes a fraction of
//! the binary's time, memory and disk, and can be profiled with call graphs).
//!
//! `CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release -p ccm-testbed
//! --example api_bench`, then `api_bench [--workers N] [--clients N] [--subscribers N]
//! [--stream worker|fleet] [--cycles N] [--client-interval-ms N] [--list-query Q]
//! [--store sqlite|postgres] [--listen-base IP] [--server-threads N] [--engine-threads N]
//! [--engine-nice N] [--one-runtime] [--sim-nice N] [--view-prepare-max N]` (the defaults of `ccm bench api`).
//! JSON on stdout, progress on stderr. `api_bench sim …` is the simulator's command line
//! (`ccm sim`): the harness starts this executable again with it, as `ccm bench api` starts
//! `ccm sim`. Same allocator as the binary (mimalloc).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a measuring tool")]

use std::time::Duration;

use ccm_cml_sim::SimLauncher;
use ccm_testbed::bench::{self, ApiOptions, BenchStore, StreamKind};
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `api_bench sim …`: the simulator's flags, as `ccm sim` takes them.
#[derive(Parser)]
struct SimCommand {
    #[command(flatten)]
    args: ccm_cml_sim::cli::SimArgs,
}

fn main() {
    let exe = std::env::current_exe().expect("own executable");
    let launcher = SimLauncher::new(&exe).arg("sim");
    let mut argv = std::env::args().skip(1).peekable();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if argv.peek().map(String::as_str) == Some("sim") {
        let sim = SimCommand::parse_from(std::iter::once("sim".to_owned()).chain(argv.skip(1)));
        let outcome = runtime.block_on(ccm_cml_sim::cli::run(sim.args, &launcher));
        runtime.shutdown_timeout(Duration::from_secs(1));
        if let Err(e) = outcome {
            eprintln!("sim: {e}");
            std::process::exit(1);
        }
        return;
    }
    let mut o = ApiOptions::new(launcher);
    while let Some(a) = argv.next() {
        let mut value = || argv.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--workers" => o.workers = value().parse().expect("--workers N"),
            "--clients" => o.clients = value().parse().expect("--clients N"),
            "--subscribers" => o.subscribers = value().parse().expect("--subscribers N"),
            "--cycles" => o.cycles = value().parse().expect("--cycles N"),
            "--client-interval-ms" => {
                o.client_interval = Duration::from_millis(value().parse().expect("ms"));
            }
            "--list-query" => o.list_query = value(),
            "--listen-base" => o.listen_base = value().parse().expect("--listen-base IPv4"),
            "--server-threads" => o.server_threads = value().parse().expect("--server-threads N"),
            "--engine-threads" => {
                o.engine_runtime.threads = value().parse().expect("--engine-threads N");
            }
            "--engine-nice" => o.engine_runtime.nice = value().parse().expect("--engine-nice N"),
            "--one-runtime" => o.one_runtime = true,
            "--sim-nice" => o.sim_nice = value().parse().expect("--sim-nice N"),
            "--view-prepare-max" => {
                o.view_prepare_max = Some(value().parse().expect("--view-prepare-max N"));
            }
            "--stream" => {
                o.stream = match value().as_str() {
                    "worker" => StreamKind::Worker,
                    "fleet" => StreamKind::Fleet,
                    v => panic!("--stream worker|fleet, not {v}"),
                }
            }
            "--store" => {
                o.store = match value().as_str() {
                    "sqlite" => BenchStore::Sqlite,
                    "postgres" => BenchStore::Postgres,
                    v => panic!("--store sqlite|postgres, not {v}"),
                }
            }
            _ => panic!("unknown flag {a}"),
        }
    }
    let report = runtime.block_on(bench::api(o)).unwrap();
    runtime.shutdown_timeout(Duration::from_secs(5));
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
