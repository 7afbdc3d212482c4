//! The Python seed-poller (`bench/seed-poller`, vendored unmodified) as the yardstick: its
//! virtualenv is created when missing, then it syncs the same simulated fleet and its JSON
//! lines (one per cycle) are collected.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::BenchError;
use super::report::{Statuses, Summary};

/// Where the seed-poller is looked for when no directory is given: relative to the working
/// directory, i.e. the repository's root.
pub const SEED_POLLER_DIR: &str = "bench/seed-poller";

/// The script in the seed-poller's directory.
const SCRIPT: &str = "seed_poller.py";

/// The seed-poller's directory: `explicit` when given, else [`SEED_POLLER_DIR`] under the
/// working directory; either must hold `seed_poller.py` and `requirements.txt`. Checked
/// before a benchmark starts, so a wrong path fails at once with a one-line error.
pub fn locate_seed_poller(explicit: Option<&Path>) -> Result<PathBuf, BenchError> {
    let dir = explicit.map_or_else(|| PathBuf::from(SEED_POLLER_DIR), Path::to_path_buf);
    let missing: Vec<&str> = [SCRIPT, "requirements.txt"]
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if missing.is_empty() {
        return Ok(dir);
    }
    let whence = if explicit.is_some() {
        ""
    } else {
        " (looked up under the working directory)"
    };
    Err(BenchError::Peer(format!(
        "no {} in {}{whence}",
        missing.join(" or "),
        dir.display()
    )))
}

/// The seed-poller run of a sync benchmark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedPoller {
    /// Its directory (see [`locate_seed_poller`]).
    pub dir: PathBuf,
    /// Its Python virtualenv (created when missing).
    pub venv: PathBuf,
    /// Workers it syncs at once (its own default is 10).
    pub concurrency: u32,
}

/// Longest time creating the virtualenv and installing its three packages may take.
const VENV_TIMEOUT: Duration = Duration::from_secs(600);
/// Written into the virtualenv once the requirements are installed: their exact text.
const MARKER: &str = ".ccm-requirements";

/// One line of the seed-poller's output.
#[derive(Debug, Deserialize)]
struct CycleLine {
    seconds: f64,
    ready: u64,
    degraded: u64,
    unavailable: u64,
    requests: u64,
}

/// The peer's figures, as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerReport {
    /// Which peer.
    pub name: &'static str,
    /// Workers it synced at once.
    pub concurrency: u32,
    /// Measured cycles.
    pub cycles: usize,
    /// Its first cycle (logins), not counted, like ccm's warm-up.
    pub warmup_seconds: f64,
    /// Measured cycle times.
    pub cycle_seconds: Summary,
    /// Each measured cycle's time, in order.
    pub per_cycle_seconds: Vec<f64>,
    /// HTTP requests it sent in the measured cycles (its own count: retries and logins
    /// included).
    pub requests: u64,
    /// Requests per second of measured cycle time.
    pub requests_per_second: f64,
    /// Statuses after its last cycle.
    pub statuses: Statuses,
}

async fn run_bounded(cmd: &mut Command, what: &str, limit: Duration) -> Result<(), BenchError> {
    cmd.kill_on_drop(true).stdin(Stdio::null());
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| BenchError::Peer(format!("{what} took longer than {limit:?}")))?
        .map_err(BenchError::io(format!("cannot run {what}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(BenchError::Peer(format!(
            "{what} failed ({}):\n{}",
            out.status,
            tail.join("\n")
        )));
    }
    Ok(())
}

/// The virtualenv's python, creating the virtualenv and installing the requirements when
/// missing or when the requirements changed.
async fn ensure_venv(venv: &Path, requirements: &Path) -> Result<PathBuf, BenchError> {
    let wanted = std::fs::read_to_string(requirements).map_err(BenchError::io(format!(
        "cannot read {}",
        requirements.display()
    )))?;
    let python = venv.join("bin").join("python");
    let marker = venv.join(MARKER);
    if python.exists() && std::fs::read_to_string(&marker).ok().as_deref() == Some(&wanted) {
        return Ok(python);
    }
    eprintln!(
        "ccm bench: creating the seed-poller virtualenv in {}",
        venv.display()
    );
    if !python.exists() {
        run_bounded(
            Command::new("python3").arg("-m").arg("venv").arg(venv),
            "python3 -m venv",
            VENV_TIMEOUT,
        )
        .await?;
    }
    run_bounded(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(requirements),
        "pip install",
        VENV_TIMEOUT,
    )
    .await?;
    std::fs::write(&marker, wanted)
        .map_err(BenchError::io(format!("cannot write {}", marker.display())))?;
    Ok(python)
}

/// Runs the seed-poller for `cycles` measured cycles (plus one warm-up) against the
/// endpoints in `endpoints_file`, within `limit`.
pub(super) async fn run_seed_poller(
    peer: &SeedPoller,
    endpoints_file: &Path,
    cycles: u32,
    limit: Duration,
) -> Result<PeerReport, BenchError> {
    let dir = locate_seed_poller(Some(&peer.dir))?;
    let script = dir.join(SCRIPT);
    let concurrency = peer.concurrency;
    let python = ensure_venv(&peer.venv, &dir.join("requirements.txt")).await?;
    let mut child = Command::new(python)
        .arg(&script)
        .arg("--endpoints")
        .arg(endpoints_file)
        .arg("--concurrency")
        .arg(concurrency.to_string())
        .arg("--cycles")
        .arg((cycles + 1).to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(BenchError::io("cannot start the seed-poller"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Peer("no stdout pipe".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut seen: Vec<CycleLine> = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await? {
            let Ok(cycle) = serde_json::from_str::<CycleLine>(line.trim()) else {
                continue;
            };
            let label = if seen.is_empty() {
                "warm-up".to_owned()
            } else {
                format!("cycle {}", seen.len())
            };
            eprintln!(
                "ccm bench: seed-poller {label}: {:.3} s, {} requests",
                cycle.seconds, cycle.requests
            );
            seen.push(cycle);
        }
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(limit, read).await {
        Ok(r) => r.map_err(BenchError::io("cannot read the seed-poller's output"))?,
        Err(_) => {
            return Err(BenchError::Peer(format!("did not finish within {limit:?}")));
        }
    }
    let status = child
        .wait()
        .await
        .map_err(BenchError::io("cannot wait for the seed-poller"))?;
    if !status.success() || seen.len() != cycles as usize + 1 {
        return Err(BenchError::Peer(format!(
            "exited ({status}) after {} of {} cycles",
            seen.len(),
            cycles + 1
        )));
    }
    let warmup = seen.remove(0);
    let times: Vec<f64> = seen.iter().map(|c| c.seconds).collect();
    let total: f64 = times.iter().sum();
    let requests: u64 = seen.iter().map(|c| c.requests).sum();
    let last = seen
        .last()
        .ok_or_else(|| BenchError::Peer("reported no cycle".into()))?;
    Ok(PeerReport {
        name: "seed-poller",
        concurrency,
        cycles: seen.len(),
        warmup_seconds: warmup.seconds,
        cycle_seconds: Summary::of(&times),
        per_cycle_seconds: times.clone(),
        requests,
        requests_per_second: if total > 0.0 {
            requests as f64 / total
        } else {
            0.0
        },
        statuses: Statuses {
            ready: last.ready,
            degraded: last.degraded,
            unavailable: last.unavailable,
            unknown: 0,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_poller_should_be_found_where_it_is_said_to_be_or_named_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = locate_seed_poller(Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("seed_poller.py or requirements.txt")
                && err.contains(&dir.path().display().to_string()),
            "{err}"
        );
        assert!(!err.contains('\n'), "one line: {err}");
        std::fs::write(dir.path().join(SCRIPT), "").unwrap();
        std::fs::write(dir.path().join("requirements.txt"), "").unwrap();
        assert_eq!(locate_seed_poller(Some(dir.path())).unwrap(), dir.path());
    }

    #[test]
    fn the_default_seed_poller_should_be_looked_for_under_the_working_directory() {
        // The tests run in the crate's directory, which has no bench/seed-poller.
        let err = locate_seed_poller(None).unwrap_err().to_string();
        assert!(err.contains(SEED_POLLER_DIR), "{err}");
        assert!(err.contains("working directory"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}
