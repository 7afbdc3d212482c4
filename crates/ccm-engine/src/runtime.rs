//! Where work runs: the tokio runtimes of a ccm process.
//!
//! Interactive work (the API's requests and event streams) and batch work (a cycle's
//! hundreds of poll tasks, the writer, the jobs) run on **separate runtimes**, each with its
//! own worker threads, so that a request never waits in a run queue behind a cycle's polls
//! (linkerd2-proxy runs its admin server apart for the same reason). The engine's threads
//! also run at a **lower OS priority** (`[engine] nice`, an increment of the process's nice
//! value, per thread): when both want a core, the kernel's scheduler prefers the API's
//! threads, and the engine still gets every core the API leaves idle.
//!
//! [`EngineRuntimeConfig`] is the `[engine]` section; [`build`] makes a runtime (the API's
//! with `nice = 0`). The [`crate::Engine`] keeps the runtime it was started on and spawns all
//! its background work there (polls, the writer, jobs, provisioning), whichever runtime calls
//! it: start it from a task on the engine's runtime.
//!
//! Threads that a niced thread starts inherit its nice value on Linux (e.g. the SQLite
//! connection threads that an engine task opens).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

/// Highest nice value on Linux (lowest priority).
pub const MAX_NICE: i32 = 19;

/// The `[engine]` section: the engine's own runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineRuntimeConfig {
    /// Worker threads of the engine's runtime (0: one per core).
    pub threads: usize,
    /// Added to the process's nice value for the engine's threads (0 to 19; 0: the same
    /// priority as the API). Higher is lower priority.
    pub nice: i32,
}

impl Default for EngineRuntimeConfig {
    /// One thread per core, nice +10 (a CFS weight of ~1/9 of the API's when both want a
    /// core).
    fn default() -> Self {
        Self {
            threads: 0,
            nice: 10,
        }
    }
}

impl EngineRuntimeConfig {
    /// Checks the values; each message starts with the dotted key.
    pub fn validate(&self) -> Result<(), String> {
        validate_threads("engine.threads", self.threads)?;
        if !(0..=MAX_NICE).contains(&self.nice) {
            return Err(format!(
                "engine.nice: {} is out of range (0 to {MAX_NICE}; an increment: the engine \
                 may only run at the API's priority or below)",
                self.nice
            ));
        }
        Ok(())
    }

    /// The engine's runtime (threads named `ccm-engine`).
    pub fn build(&self) -> std::io::Result<tokio::runtime::Runtime> {
        build("ccm-engine", self.threads, self.nice)
    }
}

/// Checks a worker-thread count (`key` names it in the message): 0 (one per core) to 1,024.
pub fn validate_threads(key: &str, threads: usize) -> Result<(), String> {
    if threads > 1024 {
        return Err(format!(
            "{key}: {threads} is out of range (0 for one per core, up to 1024)"
        ));
    }
    Ok(())
}

/// A multi-threaded runtime with `threads` worker threads (0: one per core) named `name`,
/// each (and each of its blocking threads) lowered by `nice` (0: left alone) when it starts.
/// A thread whose priority cannot be lowered (not Linux, or the call refused) runs at the
/// process's priority; that is logged once.
pub fn build(name: &str, threads: usize, nice: i32) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name(name);
    if threads > 0 {
        builder.worker_threads(threads);
    }
    if nice > 0 {
        let warned = Arc::new(AtomicBool::new(false));
        let name = name.to_owned();
        builder.on_thread_start(move || {
            if let Err(e) = lower_priority(nice)
                && !warned.swap(true, Ordering::Relaxed)
            {
                tracing::warn!(runtime = %name, nice, error = %e, "cannot lower the priority of the runtime's threads; they run at the process's");
            }
        });
    }
    builder.build()
}

/// Adds `increment` to the calling thread's nice value (capped at [`MAX_NICE`]); threads and
/// processes it starts afterwards inherit the new value. Without privileges it cannot be
/// undone.
#[cfg(target_os = "linux")]
pub fn lower_priority(increment: i32) -> std::io::Result<()> {
    // On Linux the nice value is per thread: PRIO_PROCESS with a thread id sets that thread's.
    let me = Some(rustix::thread::gettid());
    let now = rustix::process::getpriority_process(me)?;
    rustix::process::setpriority_process(me, now.saturating_add(increment).min(MAX_NICE))?;
    Ok(())
}

/// Lowering a thread's priority is only done on Linux: elsewhere an error.
#[cfg(not(target_os = "linux"))]
pub fn lower_priority(_increment: i32) -> std::io::Result<()> {
    Err(std::io::Error::other(
        "per-thread priorities are only set on Linux",
    ))
}

/// The calling thread's nice value (Linux), for tests and diagnostics.
#[cfg(target_os = "linux")]
pub fn thread_nice() -> std::io::Result<i32> {
    Ok(rustix::process::getpriority_process(Some(
        rustix::thread::gettid(),
    ))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_should_be_valid_and_lower_the_engine_by_ten() {
        let c = EngineRuntimeConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!((c.threads, c.nice), (0, 10));
    }

    #[test]
    fn a_nice_out_of_range_should_be_refused_naming_the_key() {
        for nice in [-1, 20] {
            let c = EngineRuntimeConfig {
                nice,
                ..Default::default()
            };
            let e = c.validate().unwrap_err();
            assert!(e.starts_with("engine.nice: "), "{e}");
        }
    }

    #[test]
    fn too_many_threads_should_be_refused_naming_the_key() {
        let c = EngineRuntimeConfig {
            threads: 5000,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().starts_with("engine.threads: "));
        assert_eq!(validate_threads("server.threads", 4), Ok(()));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_niced_runtime_should_run_its_tasks_and_blocking_work_on_lower_priority_threads() {
        let base = thread_nice().unwrap();
        let rt = build("ccm-test-niced", 2, 3).unwrap();
        let (nice, name, blocking) = rt.block_on(async {
            let task = tokio::spawn(async {
                (
                    thread_nice().unwrap(),
                    std::thread::current().name().map(str::to_owned),
                )
            })
            .await
            .unwrap();
            let blocking = tokio::task::spawn_blocking(|| thread_nice().unwrap())
                .await
                .unwrap();
            (task.0, task.1, blocking)
        });
        let expected = (base + 3).min(MAX_NICE);
        assert_eq!(nice, expected);
        assert_eq!(blocking, expected);
        assert_eq!(name.as_deref(), Some("ccm-test-niced"));
        // The thread that built it is left alone.
        assert_eq!(thread_nice().unwrap(), base);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_runtime_without_nice_should_keep_the_process_priority() {
        let base = thread_nice().unwrap();
        let rt = build("ccm-test-plain", 1, 0).unwrap();
        let nice = rt.block_on(async { tokio::spawn(async { thread_nice().unwrap() }).await });
        assert_eq!(nice.unwrap(), base);
    }
}
