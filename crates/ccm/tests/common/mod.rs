//! What the binary's end-to-end tests share: a free port, child processes that are always
//! stopped, bounded waiting, and a small client of ccm's API.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test uses part; tests may panic

use std::fs::File;
use std::future::Future;
use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A client of a running ccm's API with one bearer token.
pub(crate) struct Api {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    token: String,
}

impl Api {
    /// A client of `http://127.0.0.1:{port}` (requests time out after 20 s).
    pub(crate) fn new(port: u16, token: &str) -> Self {
        Self::with_timeout(port, token, Duration::from_secs(20))
    }

    /// As [`Api::new`], with another request timeout (a call that does much work on a
    /// loaded machine, e.g. importing hundreds of workers).
    pub(crate) fn with_timeout(port: u16, token: &str, timeout: Duration) -> Self {
        Self {
            // Idle connections are dropped after 2 s, below the server's 5 s keep-alive: a
            // request on a connection the server is closing fails (`IncompleteMessage`).
            http: reqwest::Client::builder()
                .timeout(timeout)
                .pool_idle_timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            token: token.to_owned(),
        }
    }

    /// One request; the status and the body as JSON (a body that is not JSON as a string).
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// A free TCP port on loopback (the OS picks it; the listener is closed at once).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A child process in its own process group, ended (with everything it started) on drop;
/// its output goes to a log file that is printed when the test fails.
pub(crate) struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub(crate) fn spawn(name: &'static str, cmd: &mut Command, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { name, child, log }
    }

    pub(crate) fn tail(&self, lines: usize) -> String {
        let Ok(f) = File::open(&self.log) else {
            return String::new();
        };
        let all: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills the process (and its group) with SIGKILL, as a crash would, and reaps it.
    pub(crate) fn kill9(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }

    pub(crate) fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.tail(60));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of {} ({}) ---\n{}",
                self.name,
                self.log.display(),
                self.tail(40)
            );
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

/// Polls `probe` every 100 ms until it yields a value; fails after `timeout`.
pub(crate) async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
