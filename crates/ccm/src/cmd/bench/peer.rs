//! The Python seed-poller (`bench/seed-poller`, vendored unmodified) as the yardstick: its
//! virtualenv is created when missing, then it syncs the same simulated fleet and its JSON
//! lines (one per cycle) are collected.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::sync::{Statuses, Summary};

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
#[derive(Debug, Serialize)]
pub(super) struct PeerReport {
    /// Which peer.
    pub(super) name: &'static str,
    /// Workers it synced at once.
    pub(super) concurrency: u32,
    /// Measured cycles.
    pub(super) cycles: usize,
    /// Its first cycle (logins), not counted, like ccm's warm-up.
    pub(super) warmup_seconds: f64,
    /// Measured cycle times.
    pub(super) cycle_seconds: Summary,
    /// Each measured cycle's time, in order.
    pub(super) per_cycle_seconds: Vec<f64>,
    /// HTTP requests it sent in the measured cycles (its own count: retries and logins
    /// included).
    pub(super) requests: u64,
    /// Requests per second of measured cycle time.
    pub(super) requests_per_second: f64,
    /// Statuses after its last cycle.
    pub(super) statuses: Statuses,
}

async fn run_bounded(cmd: &mut Command, what: &str, limit: Duration) -> anyhow::Result<()> {
    cmd.kill_on_drop(true).stdin(Stdio::null());
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .with_context(|| format!("{what} took longer than {limit:?}"))?
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{what} failed ({}):\n{}", out.status, tail.join("\n"));
    }
    Ok(())
}

/// The virtualenv's python, creating the virtualenv and installing the requirements when
/// missing or when the requirements changed.
pub(super) async fn ensure_venv(venv: &Path, requirements: &Path) -> anyhow::Result<PathBuf> {
    let wanted = std::fs::read_to_string(requirements)
        .with_context(|| format!("cannot read {}", requirements.display()))?;
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
        .with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(python)
}

/// Runs the seed-poller for `cycles` measured cycles (plus one warm-up) against the
/// endpoints in `endpoints_file`, within `limit`.
pub(super) async fn run_seed_poller(
    dir: &Path,
    venv: &Path,
    endpoints_file: &Path,
    concurrency: u32,
    cycles: u32,
    limit: Duration,
) -> anyhow::Result<PeerReport> {
    let script = dir.join("seed_poller.py");
    if !script.exists() {
        bail!("no seed-poller at {} (see --peer-dir)", script.display());
    }
    let python = ensure_venv(venv, &dir.join("requirements.txt")).await?;
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
        .context("cannot start the seed-poller")?;
    let stdout = child
        .stdout
        .take()
        .context("the seed-poller has no stdout pipe")?;
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
        anyhow::Ok(())
    };
    match tokio::time::timeout(limit, read).await {
        Ok(r) => r.context("cannot read the seed-poller's output")?,
        Err(_) => bail!("the seed-poller did not finish within {limit:?}"),
    }
    let status = child.wait().await?;
    if !status.success() || seen.len() != cycles as usize + 1 {
        bail!(
            "the seed-poller exited ({status}) after {} of {} cycles",
            seen.len(),
            cycles + 1
        );
    }
    let warmup = seen.remove(0);
    let times: Vec<f64> = seen.iter().map(|c| c.seconds).collect();
    let total: f64 = times.iter().sum();
    let requests: u64 = seen.iter().map(|c| c.requests).sum();
    let last = seen.last().context("the seed-poller reported no cycle")?;
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
