//! [`TestPostgres`]: a real, throwaway PostgreSQL server for tests — Debian's `postgresql`
//! package, no container, no mock.
//!
//! `start()` runs `initdb` into a new temporary directory and starts `postgres` on a free port
//! on 127.0.0.1 (its Unix socket inside that directory), with durability switched off for
//! speed. `initdb` refuses to run as root, so as root both run as the package's `postgres`
//! user (through `setpriv`), and the directory is handed to that user. Dropping the handle
//! stops the server and removes the directory — also when the test panics. If the test
//! process is killed outright, the kernel stops the server (parent-death signal), and the next
//! `start()` removes directories whose process is gone.
//!
//! Each test process starts its own server (nextest runs every test in its own process);
//! [`TestPostgres::create_database`] gives each store a fresh database on it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::DatabaseUrl;

/// Where Debian installs the server binaries (one directory per major version).
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";

/// The line the server logs once it accepts connections.
const READY_LINE: &str = "database system is ready to accept connections";

const TEMP_PREFIX: &str = "ccm-testpg-";

/// Why a test server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TestPgError {
    /// The package is missing.
    #[error(
        "PostgreSQL is not installed (no {DEBIAN_PG_ROOT}/*/bin/initdb and postgres): run \
         ./scripts/test, which installs Debian's postgresql package, or apt-get install postgresql"
    )]
    NotInstalled,
    /// Running as root, but there is no `postgres` user to run the server as.
    #[error("running as root, but there is no `postgres` user to run initdb and postgres as")]
    NoPostgresUser,
    /// A step failed.
    #[error("test PostgreSQL: {step}: {message}")]
    Failed {
        /// What was being done.
        step: &'static str,
        /// What went wrong (with the server's output, if any).
        message: String,
    },
}

fn failed(step: &'static str, message: impl ToString) -> TestPgError {
    TestPgError::Failed {
        step,
        message: message.to_string(),
    }
}

/// A running throwaway PostgreSQL server (see the module docs).
pub struct TestPostgres {
    dir: tempfile::TempDir,
    port: u16,
    password: String,
    stop: Option<mpsc::Sender<()>>,
    guardian: Option<JoinHandle<()>>,
    databases: AtomicU32,
}

impl std::fmt::Debug for TestPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPostgres")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// The server binaries: `CCM_PG_BIN` if set, else the newest `/usr/lib/postgresql/*/bin`.
fn find_bin_dir() -> Result<PathBuf, TestPgError> {
    if let Some(dir) = std::env::var_os("CCM_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
            Ok(dir)
        } else {
            Err(TestPgError::NotInstalled)
        };
    }
    let entries = std::fs::read_dir(DEBIAN_PG_ROOT).map_err(|_| TestPgError::NotInstalled)?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file()).then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, bin)| bin)
        .ok_or(TestPgError::NotInstalled)
}

/// Removes the directories of test servers whose process no longer exists.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// 32 hex characters from the standard library's randomly keyed hasher (no extra crate).
fn random_password() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// A port that was free a moment ago (the server may still lose a race for it: retried).
fn free_port() -> Result<u16, TestPgError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| failed("port", e))?;
    Ok(listener.local_addr().map_err(|e| failed("port", e))?.port())
}

/// `program args…`, as the `postgres` user when we are root; the server child also gets a
/// parent-death signal, so it cannot outlive the thread that started it.
fn command(run_as: Option<&nix::unistd::User>, program: &Path, pdeathsig: bool) -> Command {
    let mut cmd = match run_as {
        Some(user) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={}", user.uid))
                .arg(format!("--regid={}", user.gid))
                .arg("--clear-groups");
            if pdeathsig {
                c.arg("--pdeathsig=QUIT");
            }
            c.arg("--").arg(program);
            c
        }
        None if pdeathsig => {
            let mut c = Command::new("setpriv");
            c.arg("--pdeathsig=QUIT").arg("--").arg(program);
            c
        }
        None => Command::new(program),
    };
    cmd.env("LC_ALL", "C").env("LANG", "C").stdin(Stdio::null());
    cmd
}

enum Startup {
    Ready,
    Exited,
}

impl TestPostgres {
    /// Initialises and starts a server (about a second), with durability off (fsync,
    /// synchronous commit and full-page writes: nothing here must survive a power cut). See
    /// the module docs.
    pub fn start() -> Result<Self, TestPgError> {
        Self::start_with(false)
    }

    /// As [`start`](Self::start), but durable like a production server (fsync and
    /// synchronous commit on): for benchmarks that compare with a durable SQLite.
    pub fn start_durable() -> Result<Self, TestPgError> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Result<Self, TestPgError> {
        sweep_stale();
        let bin = find_bin_dir()?;
        let run_as = if nix::unistd::geteuid().is_root() {
            Some(
                nix::unistd::User::from_name("postgres")
                    .map_err(|e| failed("look up the postgres user", e))?
                    .ok_or(TestPgError::NoPostgresUser)?,
            )
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
            .tempdir()
            .map_err(|e| failed("temporary directory", e))?;
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(dir.path(), Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .map_err(|e| failed("hand the directory to postgres", e))?;
        }
        let password = random_password();
        let pwfile = dir.path().join("pwfile");
        {
            let mut f = std::fs::File::create(&pwfile).map_err(|e| failed("password file", e))?;
            writeln!(f, "{password}").map_err(|e| failed("password file", e))?;
        }
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(&pwfile, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .map_err(|e| failed("password file", e))?;
        }
        let data = dir.path().join("data");
        let out = command(run_as.as_ref(), &bin.join("initdb"), false)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .map_err(|e| failed("run initdb", e))?;
        let _ = std::fs::remove_file(&pwfile);
        if !out.status.success() {
            return Err(failed(
                "initdb",
                format!(
                    "{}: {}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ));
        }
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            match Self::launch(&bin, run_as.as_ref(), dir.path(), port, durable)? {
                Ok((stop, guardian)) => {
                    return Ok(Self {
                        dir,
                        port,
                        password,
                        stop: Some(stop),
                        guardian: Some(guardian),
                        databases: AtomicU32::new(0),
                    });
                }
                Err(log) if log.contains("could not bind") || log.contains("in use") => {
                    last = log; // lost the port to someone else: try another
                }
                Err(log) => return Err(failed("postgres did not start", log)),
            }
        }
        Err(failed("postgres did not start", last))
    }

    /// Starts `postgres` from a guardian thread that lives until the server is stopped (the
    /// parent-death signal follows the thread that spawned the child). `Ok(Err(log))`: the
    /// server exited during start-up.
    #[allow(clippy::type_complexity)]
    fn launch(
        bin: &Path,
        run_as: Option<&nix::unistd::User>,
        dir: &Path,
        port: u16,
        durable: bool,
    ) -> Result<Result<(mpsc::Sender<()>, JoinHandle<()>), String>, TestPgError> {
        let socket_dir = dir.join("socket");
        std::fs::create_dir_all(&socket_dir).map_err(|e| failed("socket directory", e))?;
        if let Some(user) = run_as {
            std::os::unix::fs::chown(
                &socket_dir,
                Some(user.uid.as_raw()),
                Some(user.gid.as_raw()),
            )
            .map_err(|e| failed("socket directory", e))?;
        }
        let log_path = dir.join("postgres.log");
        let mut cmd = command(run_as, &bin.join("postgres"), true);
        cmd.arg("-D")
            .arg(dir.join("data"))
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&socket_dir)
            .args(["-h", "127.0.0.1"])
            .args(["-c", "max_connections=200"])
            .args(["-c", "log_min_messages=warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if !durable {
            cmd.args(["-c", "fsync=off"])
                .args(["-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"]);
        }

        let (status_tx, status_rx) = mpsc::channel::<Result<Startup, String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let guardian = std::thread::Builder::new()
            .name(format!("test-postgres-{port}"))
            .spawn(move || {
                let mut child = match cmd.spawn() {
                    Ok(child) => child,
                    Err(e) => {
                        let _ = status_tx.send(Err(format!("cannot run postgres: {e}")));
                        return;
                    }
                };
                if let Some(stderr) = child.stderr.take() {
                    let status_tx = status_tx.clone();
                    std::thread::spawn(move || {
                        let mut log = std::fs::File::create(&log_path).ok();
                        let mut ready = false;
                        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                            if let Some(f) = log.as_mut() {
                                let _ = writeln!(f, "{line}");
                            }
                            if !ready && line.contains(READY_LINE) {
                                ready = true;
                                let _ = status_tx.send(Ok(Startup::Ready));
                            }
                        }
                        let _ = status_tx.send(Ok(Startup::Exited));
                    });
                }
                drop(status_tx);
                // Until told to stop (or the handle is gone): then an immediate shutdown.
                let _ = stop_rx.recv();
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGQUIT,
                    );
                }
                let _ = child.wait();
            })
            .map_err(|e| failed("guardian thread", e))?;

        let outcome = status_rx.recv_timeout(Duration::from_secs(60));
        let read_log = || std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
        match outcome {
            Ok(Ok(Startup::Ready)) => Ok(Ok((stop_tx, guardian))),
            Ok(Ok(Startup::Exited)) => {
                drop(stop_tx);
                let _ = guardian.join();
                Ok(Err(read_log()))
            }
            Ok(Err(e)) => {
                drop(stop_tx);
                let _ = guardian.join();
                Err(failed("postgres", e))
            }
            Err(_) => {
                drop(stop_tx);
                let _ = guardian.join();
                Err(failed(
                    "postgres",
                    format!("not ready within 60 s: {}", read_log()),
                ))
            }
        }
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The password of the `postgres` superuser (TCP connections need it).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log so far (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// The URL of `database` as the superuser, password included.
    pub fn url(&self, database: &str) -> DatabaseUrl {
        let text = format!(
            "postgres://postgres:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        );
        match DatabaseUrl::parse(&text) {
            Ok(url) => url,
            Err(e) => unreachable!("a test database URL is always valid: {e}"),
        }
    }

    /// Creates a new, empty database and returns its URL.
    pub async fn create_database(&self) -> Result<DatabaseUrl, TestPgError> {
        use sqlx::Connection as _;
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("ccm_test_{n}");
        let admin = self.url("postgres");
        let mut conn = sqlx::PgConnection::connect(admin.expose())
            .await
            .map_err(|e| failed("connect", e))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .map_err(|e| failed("create database", e))?;
        let _ = conn.close().await;
        Ok(self.url(&name))
    }

    /// Runs `sql` (one or more statements) as the superuser in the `postgres` database. Tests
    /// use it to act as an operator or a network would: create a role per `ccm serve` replica,
    /// then cut one off (`ALTER ROLE … NOLOGIN` and `pg_terminate_backend` of its connections)
    /// and let it back in.
    pub async fn execute(&self, sql: &str) -> Result<(), TestPgError> {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(self.url("postgres").expose())
            .await
            .map_err(|e| failed("connect", e))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .map_err(|e| failed("execute", e))?;
        let _ = conn.close().await;
        Ok(())
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(guardian) = self.guardian.take() {
            let _ = guardian.join();
        }
        // `dir` (a TempDir) is removed after this, with the data inside.
    }
}
