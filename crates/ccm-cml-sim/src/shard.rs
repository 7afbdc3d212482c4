//! Sharding a big fleet over child processes.
//!
//! The open-file limit (20,000 here, hard) cannot hold 10,000 listeners plus 10,000 keep-alive
//! connections in one process, so `ccm sim` above `--shard-size` workers starts itself again
//! (the caller's [`SimLauncher`] plus `--shard-child`) once per block of workers. The parent writes one JSON
//! line to the child's stdin (its configuration and the shared CA); the child starts a
//! [`SimFleet`], serves a control API on 127.0.0.1:0 and answers with one JSON line on
//! stdout (control address and endpoints). The child stops when its stdin closes (the parent
//! stopped or died) or on SIGINT/SIGTERM. The parent forwards control requests to every
//! child and merges the answers; worker indices are fleet-wide throughout.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::SimError;
use crate::config::CmlSimConfig;
use crate::control::{ActionRequest, Backend, FaultsRequest, Matched, WorkerList, WorkerReport};
use crate::faults::{FaultSpec, WorkerSelector};
use crate::fleet::SimFleet;
use crate::launcher::SimLauncher;
use crate::tls::CaMaterial;
use crate::worker::CounterSnapshot;

/// The hidden flag of [`crate::cli::SimArgs`] that makes the simulator a shard child.
pub(crate) const SHARD_FLAG: &str = "--shard-child";

/// How long a child may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a child may take to stop after its stdin closed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// What the parent sends to a child.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ShardSpec {
    pub(crate) config: CmlSimConfig,
    pub(crate) ca: Option<CaMaterial>,
}

/// What a child answers when it serves.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ShardHello {
    pub(crate) control: SocketAddr,
    pub(crate) endpoints: Vec<String>,
}

struct Shard {
    index: usize,
    control: SocketAddr,
    endpoints: Vec<String>,
    child: Mutex<Option<Child>>,
    stdin: Mutex<Option<ChildStdin>>,
    _stdout: BufReader<ChildStdout>,
}

/// The running shard processes of one fleet.
pub(crate) struct ShardSet {
    shards: Vec<Shard>,
}

fn shard_err(index: usize, message: impl Into<String>) -> SimError {
    SimError::Shard {
        index,
        message: message.into(),
    }
}

impl ShardSet {
    /// Starts `ceil(workers / shard_size)` children with `launcher` and waits until each one
    /// serves.
    pub(crate) async fn spawn(
        launcher: &SimLauncher,
        config: &CmlSimConfig,
        shard_size: usize,
        ca: Option<CaMaterial>,
    ) -> Result<ShardSet, SimError> {
        let shard_size = shard_size.max(1);
        let count = config.workers.div_ceil(shard_size);
        let mut starting = Vec::with_capacity(count);
        for s in 0..count {
            let offset = s * shard_size;
            let mut cfg = config.clone();
            cfg.workers = shard_size.min(config.workers - offset);
            cfg.index_offset = config.index_offset + offset;
            cfg.ca_out = None;
            let mut child = launcher
                .command()
                .arg(SHARD_FLAG)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| {
                    shard_err(
                        s,
                        format!("cannot start {}: {e}", launcher.program().display()),
                    )
                })?;
            let mut stdin = child
                .stdin
                .take()
                .ok_or_else(|| shard_err(s, "no stdin pipe"))?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| shard_err(s, "no stdout pipe"))?;
            let spec = ShardSpec {
                config: cfg,
                ca: ca.clone(),
            };
            let mut line = serde_json::to_vec(&spec).map_err(|e| shard_err(s, e.to_string()))?;
            line.push(b'\n');
            // A child that exits at once (a wrong launcher) closes its pipe: say so below.
            let _ = stdin.write_all(&line).await;
            let _ = stdin.flush().await;
            starting.push((s, child, stdin, BufReader::new(stdout)));
        }
        let hellos = futures::future::join_all(starting.into_iter().map(
            |(s, child, stdin, mut stdout)| async move {
                let mut line = String::new();
                let read = tokio::time::timeout(START_TIMEOUT, stdout.read_line(&mut line)).await;
                match read {
                    Ok(Ok(n)) if n > 0 => {}
                    Ok(Ok(_)) => return Err(shard_err(s, "exited before serving")),
                    Ok(Err(e)) => return Err(shard_err(s, format!("cannot read: {e}"))),
                    Err(_) => return Err(shard_err(s, "did not start in time")),
                }
                let hello: ShardHello = serde_json::from_str(line.trim())
                    .map_err(|e| shard_err(s, format!("bad hello: {e}")))?;
                Ok(Shard {
                    index: s,
                    control: hello.control,
                    endpoints: hello.endpoints,
                    child: Mutex::new(Some(child)),
                    stdin: Mutex::new(Some(stdin)),
                    _stdout: stdout,
                })
            },
        ))
        .await;
        let mut shards = Vec::with_capacity(count);
        for h in hellos {
            shards.push(h?);
        }
        tracing::info!(
            shards = shards.len(),
            workers = config.workers,
            "shards serving"
        );
        Ok(ShardSet { shards })
    }

    /// Every worker's base URL, in fleet order.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.shards
            .iter()
            .flat_map(|s| s.endpoints.iter().cloned())
            .collect()
    }

    /// Child process ids (for memory measurements).
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.shards
            .iter()
            .filter_map(|s| s.child.lock().as_ref().and_then(Child::id))
            .collect()
    }

    async fn call_all<T: for<'de> Deserialize<'de>>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<T>, SimError> {
        let calls = self.shards.iter().map(|s| {
            let method = method.clone();
            let body = body.clone();
            async move {
                let (status, bytes) = request(s.control, method, path, body)
                    .await
                    .map_err(|e| shard_err(s.index, e.to_string()))?;
                if !status.is_success() {
                    return Err(shard_err(
                        s.index,
                        format!("{status}: {}", String::from_utf8_lossy(&bytes)),
                    ));
                }
                serde_json::from_slice::<T>(&bytes)
                    .map_err(|e| shard_err(s.index, format!("bad answer: {e}")))
            }
        });
        futures::future::join_all(calls).await.into_iter().collect()
    }

    pub(crate) async fn reports(&self, sel: &str) -> Result<Vec<WorkerReport>, SimError> {
        let path = format!("/workers?workers={}", encode(sel));
        let lists: Vec<WorkerList> = self.call_all(Method::GET, &path, None).await?;
        Ok(lists.into_iter().flat_map(|l| l.workers).collect())
    }

    pub(crate) async fn counters(&self) -> Result<CounterSnapshot, SimError> {
        let all: Vec<CounterSnapshot> = self.call_all(Method::GET, "/counters", None).await?;
        let mut total = CounterSnapshot::default();
        for c in &all {
            total.add(c);
        }
        Ok(total)
    }

    fn sum(m: Vec<Matched>) -> usize {
        m.iter().map(|m| m.matched).sum()
    }

    pub(crate) async fn apply(&self, req: &FaultsRequest) -> Result<usize, SimError> {
        let body = serde_json::to_vec(req).map_err(|e| shard_err(0, e.to_string()))?;
        Ok(Self::sum(
            self.call_all(Method::POST, "/faults", Some(body)).await?,
        ))
    }

    pub(crate) async fn clear(&self, sel: &str) -> Result<usize, SimError> {
        let path = format!("/faults?workers={}", encode(sel));
        Ok(Self::sum(self.call_all(Method::DELETE, &path, None).await?))
    }

    pub(crate) async fn act(&self, req: &ActionRequest) -> Result<usize, SimError> {
        let body = serde_json::to_vec(req).map_err(|e| shard_err(0, e.to_string()))?;
        Ok(Self::sum(
            self.call_all(Method::POST, "/actions", Some(body)).await?,
        ))
    }

    /// Closes every child's stdin and waits for them to exit (killing stragglers).
    pub(crate) async fn shutdown(&self) {
        for s in &self.shards {
            drop(s.stdin.lock().take());
        }
        for s in &self.shards {
            let child = s.child.lock().take();
            let Some(mut child) = child else { continue };
            match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => tracing::warn!(shard = s.index, %status, "shard exited badly"),
                Ok(Err(e)) => tracing::warn!(shard = s.index, error = %e, "cannot wait for shard"),
                Err(_) => {
                    tracing::warn!(shard = s.index, "shard did not stop; killing it");
                    let _ = child.kill().await;
                }
            }
        }
    }
}

/// The control API of a sharded fleet: every request goes to every child, answers merged.
#[async_trait::async_trait]
impl Backend for ShardSet {
    async fn reports(&self, sel: &WorkerSelector) -> Result<Vec<WorkerReport>, SimError> {
        ShardSet::reports(self, &sel.to_string()).await
    }

    async fn counters(&self) -> Result<CounterSnapshot, SimError> {
        ShardSet::counters(self).await
    }

    fn endpoints(&self) -> Vec<String> {
        ShardSet::endpoints(self)
    }

    async fn apply(&self, _spec: &FaultSpec, req: &FaultsRequest) -> Result<usize, SimError> {
        ShardSet::apply(self, req).await
    }

    async fn clear(&self, sel: &WorkerSelector) -> Result<usize, SimError> {
        ShardSet::clear(self, &sel.to_string()).await
    }

    async fn act(&self, _sel: &WorkerSelector, req: &ActionRequest) -> Result<usize, SimError> {
        ShardSet::act(self, req).await
    }
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// One HTTP/1.1 request to a child's control API.
async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(StatusCode, Bytes), SimError> {
    let io_err = |e: hyper::Error| SimError::Io(std::io::Error::other(e));
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io_err)?;
    let driver = tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| SimError::Io(std::io::Error::other(e)))?;
    let resp = sender.send_request(req).await.map_err(io_err)?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.map_err(io_err)?.to_bytes();
    drop(sender);
    let _ = driver.await;
    Ok((status, bytes))
}

/// The child side: read the spec from stdin, serve, answer, stop on stdin EOF or a signal.
pub(crate) async fn run_child() -> Result<(), SimError> {
    let stop = crate::signal::terminate_signal()?;
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    if stdin.read_line(&mut line).await? == 0 {
        return Err(shard_err(0, "no shard spec on stdin"));
    }
    let spec: ShardSpec = serde_json::from_str(line.trim())
        .map_err(|e| SimError::Config(format!("bad shard spec: {e}")))?;
    let fleet = SimFleet::start_with_ca(spec.config, spec.ca).await?;
    let control = fleet
        .serve_control(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await?;
    let hello = ShardHello {
        control,
        endpoints: fleet.endpoints(),
    };
    let mut out = serde_json::to_vec(&hello).map_err(|e| SimError::Config(e.to_string()))?;
    out.push(b'\n');
    let mut stdout = tokio::io::stdout();
    stdout.write_all(&out).await?;
    stdout.flush().await?;

    let eof = async move {
        let mut buf = String::new();
        loop {
            buf.clear();
            match stdin.read_line(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        () = eof => {}
        r = stop => r?,
    }
    fleet.shutdown().await;
    Ok(())
}
