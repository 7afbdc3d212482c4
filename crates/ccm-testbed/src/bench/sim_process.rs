//! The CML simulator as a child process (the caller's [`SimLauncher`], e.g. `ccm sim …`), and
//! its control API.
//!
//! The simulator runs in its own processes (it shards itself above `--shard-size` workers):
//! its sockets do not count against ccm's open-file limit and its memory and CPU are not
//! ccm's. It is stopped with SIGTERM (then SIGKILL) when the run ends, and killed when its
//! handle is dropped (errors, Ctrl-C); shard children stop when their parent's pipe closes.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ccm_cml_sim::{CounterSnapshot, SimLauncher, WorkerReport};
use serde::Deserialize;
use tokio::process::Child;

use super::BenchError;

/// How long a graceful stop may take before the simulator is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// What to start.
pub struct SimSpec {
    /// How to run the simulator's command line.
    pub launcher: SimLauncher,
    /// Simulated workers.
    pub workers: u32,
    /// Address of the first worker (the others count up).
    pub listen_base: Ipv4Addr,
    /// Port of every worker (0: each its own free port).
    pub port: u16,
    /// Latency added to every request.
    pub latency_ms: u64,
    /// A fault spec (`ccm sim --faults`).
    pub faults: Option<String>,
    /// Most workers per simulator process.
    pub shard_size: u32,
    /// Serve HTTPS and write the CA certificate to this file.
    pub tls_ca_out: Option<PathBuf>,
    /// With `tls_ca_out`: offer HTTP/2 by ALPN (`ccm sim --http2`), as CML's nginx does.
    pub http2: bool,
    /// Added to the simulator processes' nice value (0: this process's priority). The
    /// simulator stands for CML controllers that run elsewhere in a real deployment: lowered,
    /// it does not take cores from the ccm it serves.
    pub nice: i32,
}

/// A running simulator.
pub struct SimProcess {
    child: Child,
    control: SocketAddr,
    http: reqwest::Client,
    log: PathBuf,
    /// The file holding one base URL per line, as `ccm sim --endpoints-out` writes it.
    pub endpoints_file: PathBuf,
    /// Base URLs, in fleet order.
    pub endpoints: Vec<String>,
    /// The CA certificate the workers' HTTPS certificates chain to (`SimSpec::tls_ca_out`).
    pub(super) ca_file: Option<PathBuf>,
}

#[derive(Deserialize)]
struct WorkerList {
    workers: Vec<WorkerReport>,
}

/// A free TCP port on 127.0.0.1 (bound, read, released; the simulator binds it right after).
fn free_port() -> Result<u16, BenchError> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(BenchError::io("cannot find a free port"))?;
    Ok(l.local_addr()
        .map_err(BenchError::io("cannot find a free port"))?
        .port())
}

/// The last lines of the simulator's log, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Starts `cmd` at `nice` below this process's priority (0: as is): from a thread of its own
/// that lowers itself first, since a child (and its shard children) inherits the nice value of
/// the thread that forks it, and no thread here is lowered for good.
fn spawn_niced(mut cmd: tokio::process::Command, nice: i32) -> std::io::Result<Child> {
    if nice == 0 {
        return cmd.spawn();
    }
    let runtime = tokio::runtime::Handle::current();
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let _runtime = runtime.enter();
                ccm_engine::runtime::lower_priority(nice)?;
                cmd.spawn()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread panicked")))
    })
}

impl SimProcess {
    /// Starts the simulator and waits (bounded) until it serves every worker and its control
    /// API answers.
    pub async fn start(spec: &SimSpec, dir: &Path) -> Result<Self, BenchError> {
        let endpoints_file = dir.join("endpoints.txt");
        let log = dir.join("sim.log");
        let control = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut cmd = spec.launcher.command();
        cmd.arg("--workers")
            .arg(spec.workers.to_string())
            .arg("--listen-base")
            .arg(spec.listen_base.to_string())
            .arg("--port")
            .arg(spec.port.to_string())
            .arg("--latency-ms")
            .arg(spec.latency_ms.to_string())
            .arg("--shard-size")
            .arg(spec.shard_size.to_string())
            .arg("--endpoints-out")
            .arg(&endpoints_file)
            .arg("--control")
            .arg(control.to_string());
        if let Some(f) = &spec.faults {
            cmd.arg("--faults").arg(f);
        }
        if let Some(ca) = &spec.tls_ca_out {
            cmd.arg("--tls").arg("--ca-out").arg(ca);
            if spec.http2 {
                cmd.arg("--http2");
            }
        }
        let log_err = BenchError::io(format!("cannot create {}", log.display()));
        let log_file = std::fs::File::create(&log).map_err(log_err)?;
        let log_out = log_file
            .try_clone()
            .map_err(BenchError::io("cannot share the simulator log"))?;
        cmd.stdin(Stdio::null())
            .stdout(log_out)
            .stderr(log_file)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
        let program = spec.launcher.program().display().to_string();
        let child = spawn_niced(cmd, spec.nice).map_err(BenchError::io(format!(
            "cannot start the simulator ({program})"
        )))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(BenchError::setup("http client"))?;
        let mut sim = SimProcess {
            child,
            control,
            http,
            log,
            endpoints_file: endpoints_file.clone(),
            endpoints: Vec::new(),
            ca_file: spec.tls_ca_out.clone(),
        };
        // Roughly 1 s per 1,000 workers on this kind of machine; allow plenty.
        let wait = Duration::from_secs(60) + Duration::from_millis(u64::from(spec.workers) * 20);
        let started = tokio::time::Instant::now();
        loop {
            let exited = sim
                .child
                .try_wait()
                .map_err(BenchError::io("cannot watch the simulator"))?;
            if let Some(status) = exited {
                return Err(BenchError::Simulator(format!(
                    "exited ({status}) before serving:\n{}",
                    log_tail(&sim.log)
                )));
            }
            if let Ok(text) = std::fs::read_to_string(&endpoints_file) {
                let endpoints: Vec<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect();
                if endpoints.len() == spec.workers as usize && sim.counters().await.is_ok() {
                    sim.endpoints = endpoints;
                    return Ok(sim);
                }
            }
            if started.elapsed() > wait {
                return Err(BenchError::Simulator(format!(
                    "did not serve within {wait:?}:\n{}",
                    log_tail(&sim.log)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET path` on the control API, decoded.
    pub async fn get<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, BenchError> {
        let url = format!("http://{}{path}", self.control);
        let fail = |e: reqwest::Error| BenchError::Simulator(format!("control api {path}: {e}"));
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(fail)?;
        resp.json().await.map_err(fail)
    }

    /// `POST /actions` on the control API (e.g. `{"action": "reset_counters"}`).
    pub async fn act(&self, action: &serde_json::Value) -> Result<(), BenchError> {
        let url = format!("http://{}/actions", self.control);
        self.http
            .post(&url)
            .json(action)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map(drop)
            .map_err(|e| BenchError::Simulator(format!("control api /actions: {e}")))
    }

    /// Request counters summed over the whole fleet (every shard).
    pub(super) async fn counters(&self) -> Result<CounterSnapshot, BenchError> {
        self.get("/counters").await
    }

    /// Requests received so far by the workers `selector` picks (fault-spec selector syntax).
    pub(super) async fn requests_of(&self, selector: &str) -> Result<u64, BenchError> {
        let sel = selector.replace('%', "%25").replace('+', "%2B");
        let list: WorkerList = self.get(&format!("/workers?workers={sel}")).await?;
        Ok(list.workers.iter().map(|w| w.counters.requests).sum())
    }

    /// CPU time the simulator's processes (parent and shards) used so far, in seconds.
    pub(super) fn cpu_seconds(&self) -> f64 {
        self.child
            .id()
            .map_or(0.0, super::procstat::tree_cpu_seconds)
    }

    /// Stops the simulator: SIGTERM, then SIGKILL after a grace period.
    pub(super) async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(STOP_GRACE, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!("the simulator did not stop in time; killing it");
            let _ = self.child.kill().await;
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
#[allow(clippy::expect_used)] // tests may panic
mod tests {
    use super::*;

    /// The nice value field of a `/proc/<pid>/stat` line.
    fn nice_of(stat: &str) -> i32 {
        let rest = &stat[stat.rfind(')').expect("comm") + 1..];
        rest.split_whitespace()
            .nth(16)
            .expect("field 19")
            .parse()
            .expect("a number")
    }

    #[tokio::test]
    async fn a_niced_child_should_run_lowered_and_leave_the_caller_alone() {
        let base = ccm_engine::runtime::thread_nice().expect("nice");
        let mut cmd = tokio::process::Command::new("cat");
        cmd.arg("/proc/self/stat").stdout(Stdio::piped());
        let out = spawn_niced(cmd, 3)
            .expect("spawn")
            .wait_with_output()
            .await
            .expect("output");
        let stat = String::from_utf8(out.stdout).expect("utf-8");
        assert_eq!(
            nice_of(&stat),
            (base + 3).min(ccm_engine::runtime::MAX_NICE)
        );
        assert_eq!(ccm_engine::runtime::thread_nice().expect("nice"), base);
    }
}
