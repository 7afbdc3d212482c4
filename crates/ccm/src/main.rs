//! The `ccm` binary: parses the command line, loads the configuration, wires the crates
//! together and maps failures to exit codes. No business logic lives here.

mod cli;
mod cmd;
mod config;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

/// Turns transparent huge pages off for this process (and the `ccm sim` children it starts).
/// mimalloc's heap is a few large, aligned regions, in which every touched 2 MiB huge page
/// stays resident whole: at 10,000 workers that was ~25–35 MB of the peak RSS for no
/// measurable CPU gain (BENCHMARKS.md, issue 13 round 4). The `no_thp` feature of the
/// `mimalloc` crate stops it from asking for them (`MADV_HUGEPAGE`); this also covers hosts
/// where THP is on for everything (`enabled = always`). Applies to pages faulted in from now
/// on. A kernel without the call (not Linux) keeps its default: nothing to report.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
}

/// mimalloc instead of glibc's malloc: glibc keeps a heap per thread (arenas, up to 8 per core)
/// and returns little of it, so a 10,000-worker fleet's churn of small buffers left the RSS
/// far above the live heap (BENCHMARKS.md, "Memory"). No `unsafe` here: the attribute and a
/// static are all it takes. mimalloc 2 (the crate's `v2` feature), not 3: 3 returns freed
/// pages to the OS after 1 s, 2 after 10–100 ms, which at 10,000 workers synced back to back
/// is ~20–30 MB less at the peak for the same CPU (issue 13 round 4); the delay can only be
/// changed with an `unsafe` call or an environment variable.
///
/// The cargo feature `system-alloc` (off by default) builds with the system allocator instead,
/// so that heap profilers that hook `malloc` (heaptrack) can attribute the memory.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    no_transparent_huge_pages();
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
