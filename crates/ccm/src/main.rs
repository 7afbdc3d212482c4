//! The `ccm` binary: parses the command line, loads the configuration, wires the crates
//! together and maps failures to exit codes. No business logic lives here.

mod cli;
mod cmd;
mod config;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: glibc keeps a heap per thread (arenas, up to 8 per core)
/// and returns little of it, so a 10,000-worker fleet's churn of small buffers left the RSS
/// far above the live heap (BENCHMARKS.md, "Memory"). No `unsafe` here: the attribute and a
/// static are all it takes.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of standard output went away (`ccm workers list | head -1`): like other
        // Unix tools, stop quietly.
        Err(err) if err.downcast_ref::<cmd::output::StdoutClosed>().is_some() => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ccm: {err:#}");
            ExitCode::from(cmd::exit_code(&err))
        }
    }
}
