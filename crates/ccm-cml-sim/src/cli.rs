//! `ccm sim`: the command-line front of the simulator.
//!
//! The host binary flattens [`SimArgs`] into its own command line and calls [`run`] with a
//! [`SimLauncher`] that starts the same command again (shards above `--shard-size` workers).

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::SimError;
use crate::config::{ActivityConfig, CmlSimConfig, NodeTiming, Password};
use crate::control;
use crate::faults::FaultSpec;
use crate::fleet::SimFleet;
use crate::launcher::SimLauncher;
use crate::shard::{self, ShardSet};
use crate::signal::terminate_signal;
use crate::tls::CaMaterial;

/// The hidden flag that makes the simulator a shard child of a bigger `ccm sim` (its
/// [`SimLauncher`] is run with this flag appended).
pub const SHARD_CHILD_FLAG: &str = shard::SHARD_FLAG;

const FAULTS_HELP: &str = "\
Fault specs (--faults, and POST /faults on the control API):
  SPEC  := ITEM (';' ITEM)*          ITEM := demo | none | WORKERS[/ENDPOINTS]:FAULT(,FAULT)*
  WORKERS: '*', 3, 10-20 (inclusive), 30% or 10-15% (percentage buckets), joined with '+'
  ENDPOINTS: endpoint names (system_stats, licensing, lab_start, ...) or groups
             (auth, system, licensing, labs, telemetry, users), joined with '+'
  FAULT: latency=DUR[~JITTER] | error=STATUS[@RATE] | reset[@RATE] | blackhole[@RATE]
       | malformed[@RATE] | close[@RATE] | slow=DUR | redirect=STATUS:URL | older | down | flap=PERIOD | not-ready
       | disconnected | ssms-unreachable | expire-tokens | fail-401=N
  RATE: 0.25 or 25% (default 1). DUR: 150ms, 2s, 1m.
  Examples: '*:latency=20ms~10ms'  '3:down'  '10-20/system_stats:error=503@0.5'  'demo'

Control API (--control ADDR), JSON over HTTP:
  GET /workers[?workers=SEL]  GET /workers/{i}  GET /counters  GET /endpoints
  POST /faults {\"spec\": SPEC, \"replace\": false}   DELETE /faults?workers=SEL
  POST /actions {\"workers\": SEL, \"action\": power_off | power_on (\"boot\": \"30s\") |
                 expire_tokens | fail401 (\"n\": 3) | reset_counters |
                 set_ready (\"ready\": false) | user_login}

Users: the admin (--username/--password, id 00000000-0000-4000-a000-000000000000) and a
non-admin 'student' (password 'student').";

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_password(s: &str) -> Result<Password, String> {
    Ok(Password::from(s))
}

fn parse_faults(s: &str) -> Result<FaultSpec, String> {
    FaultSpec::parse(s).map_err(|e| e.to_string())
}

/// Flags of `ccm sim`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = FAULTS_HELP)]
pub struct SimArgs {
    /// Number of simulated CML controllers, each on its own loopback address.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Address of the first worker; the next ones count up (127.1.0.1, 127.1.0.2, ...).
    #[arg(long, default_value = "127.1.0.1")]
    pub listen_base: Ipv4Addr,
    /// Port of every worker (0: a free port per worker).
    #[arg(long, default_value_t = 9443)]
    pub port: u16,
    /// Serve HTTPS with certificates from a generated CA (see --ca-out).
    #[arg(long)]
    pub tls: bool,
    /// With --tls: offer HTTP/2 by ALPN (h2, then http/1.1), as CML's nginx does.
    #[arg(long, requires = "tls")]
    pub http2: bool,
    /// Where to write the CA certificate (PEM) with --tls [default: a file in the temp dir,
    /// removed when the simulator stops; a file given here is kept].
    #[arg(long, value_name = "FILE")]
    pub ca_out: Option<PathBuf>,
    /// Latency added to every request, in milliseconds.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub latency_ms: u64,
    /// Random extra latency, up to this many milliseconds.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub jitter_ms: u64,
    /// Faults at start, e.g. 'demo' or '10-20/system_stats:error=503@0.5' (grammar below).
    #[arg(long, value_name = "SPEC", value_parser = parse_faults)]
    pub faults: Option<FaultSpec>,
    /// Write one base URL per line (http://127.1.0.1:9443) to this file.
    #[arg(long, value_name = "FILE")]
    pub endpoints_out: Option<PathBuf>,
    /// Serve the control API on this address (e.g. 127.0.0.1:9400).
    #[arg(long, value_name = "ADDR")]
    pub control: Option<SocketAddr>,
    /// Admin user name.
    #[arg(long, default_value = "admin")]
    pub username: String,
    /// Admin password.
    #[arg(long, default_value = "admin", value_parser = parse_password, env = "CCM_SIM_PASSWORD", hide_env_values = true)]
    pub password: Password,
    /// Token lifetime.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub token_ttl: Duration,
    /// What system_information.version reports.
    #[arg(long, default_value = "2.9.0+build.3")]
    pub cml_version: String,
    /// Time from QUEUED to STARTED for a lab's first node.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub node_queue: Duration,
    /// Time from STARTED to BOOTED.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub node_boot: Duration,
    /// How long a licence registration stays IN_PROGRESS.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub licence_delay: Duration,
    /// Share of workers (0..1) whose simulated user logs in and runs labs now and then.
    #[arg(long, value_name = "FRACTION")]
    pub activity: Option<f64>,
    /// How often each active simulated user acts.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub activity_interval: Duration,
    /// Most workers per process; bigger fleets run in child processes (open-file limit).
    #[arg(long, default_value_t = 4000)]
    pub shard_size: usize,
    /// Internal: run as a shard child of a bigger `ccm sim` ([`SHARD_CHILD_FLAG`]).
    #[arg(long, hide = true)]
    pub shard_child: bool,
}

impl SimArgs {
    /// The fleet configuration these flags describe.
    pub fn to_config(&self) -> Result<CmlSimConfig, SimError> {
        if let Some(a) = self.activity
            && !(0.0..=1.0).contains(&a)
        {
            return Err(SimError::Config(format!(
                "--activity {a} is not between 0 and 1"
            )));
        }
        Ok(CmlSimConfig {
            workers: self.workers,
            listen_base: self.listen_base,
            port: self.port,
            tls: self.tls,
            http2: self.http2,
            ca_out: self.ca_out.clone(),
            latency: Duration::from_millis(self.latency_ms),
            jitter: Duration::from_millis(self.jitter_ms),
            faults: self.faults.clone().unwrap_or_default(),
            username: self.username.clone(),
            password: self.password.clone(),
            token_ttl: self.token_ttl,
            version: self.cml_version.clone(),
            node_timing: NodeTiming {
                queue: self.node_queue,
                boot: self.node_boot,
                ..NodeTiming::default()
            },
            licence_delay: self.licence_delay,
            activity: self.activity.map(|fraction| ActivityConfig {
                fraction,
                interval: self.activity_interval,
            }),
            ..CmlSimConfig::default()
        })
    }
}

/// Runs `ccm sim` until Ctrl-C or SIGTERM, then shuts down cleanly. `launcher` starts shard
/// processes when the fleet is bigger than `--shard-size`.
pub async fn run(args: SimArgs, launcher: &SimLauncher) -> Result<(), SimError> {
    let stop = terminate_signal()?;
    run_until(args, launcher, stop).await
}

/// Runs `ccm sim` until `stop` resolves (tests pass their own signal).
pub async fn run_until<F>(args: SimArgs, launcher: &SimLauncher, stop: F) -> Result<(), SimError>
where
    F: Future<Output = io::Result<()>>,
{
    if args.shard_child {
        return shard::run_child().await;
    }
    let config = args.to_config()?;
    if config.workers > args.shard_size {
        run_sharded(&args, launcher, config, stop).await
    } else {
        run_local(&args, config, stop).await
    }
}

async fn run_local<F>(args: &SimArgs, config: CmlSimConfig, stop: F) -> Result<(), SimError>
where
    F: Future<Output = io::Result<()>>,
{
    let fleet = SimFleet::start(config).await?;
    let endpoints = fleet.endpoints();
    if let Some(path) = &args.endpoints_out {
        write_endpoints(path, &endpoints)?;
    }
    let control = match args.control {
        Some(addr) => Some(fleet.serve_control(addr).await?),
        None => None,
    };
    banner(&endpoints, control, fleet.ca_path().as_deref(), &[]);
    let stopped = stop.await;
    fleet.shutdown().await;
    stopped?;
    Ok(())
}

async fn run_sharded<F>(
    args: &SimArgs,
    launcher: &SimLauncher,
    config: CmlSimConfig,
    stop: F,
) -> Result<(), SimError>
where
    F: Future<Output = io::Result<()>>,
{
    let mut ca_path = None;
    let ca = if config.tls {
        let ca = CaMaterial::generate()?;
        let path = config
            .ca_out
            .clone()
            .unwrap_or_else(crate::fleet::default_ca_path);
        std::fs::write(&path, &ca.cert_pem).map_err(|source| SimError::Write {
            path: path.clone(),
            source,
        })?;
        ca_path = Some(path);
        Some(ca)
    } else {
        None
    };
    let shards = Arc::new(ShardSet::spawn(launcher, &config, args.shard_size, ca).await?);
    let endpoints = shards.endpoints();
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let outcome = async {
        if let Some(path) = &args.endpoints_out {
            write_endpoints(path, &endpoints)?;
        }
        let control = match args.control {
            Some(addr) => {
                Some(control::serve(shards.clone(), addr, token.clone(), &tracker).await?)
            }
            None => None,
        };
        banner(&endpoints, control, ca_path.as_deref(), &shards.pids());
        stop.await?;
        Ok::<(), SimError>(())
    }
    .await;
    token.cancel();
    tracker.close();
    tracker.wait().await;
    shards.shutdown().await;
    if config.ca_out.is_none()
        && let Some(path) = &ca_path
    {
        // The default CA file is this run's own; one asked for with --ca-out is kept.
        let _ = std::fs::remove_file(path);
    }
    outcome
}

/// Writes the endpoints file atomically (readers never see half of it).
fn write_endpoints(path: &Path, endpoints: &[String]) -> Result<(), SimError> {
    let mut text = endpoints.join("\n");
    text.push('\n');
    let tmp = path.with_extension("tmp-ccm-sim");
    let werr = |source| SimError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, text).map_err(werr)?;
    std::fs::rename(&tmp, path).map_err(werr)
}

fn banner(endpoints: &[String], control: Option<SocketAddr>, ca: Option<&Path>, pids: &[u32]) {
    let first = endpoints.first().map(String::as_str).unwrap_or("-");
    let last = endpoints.last().map(String::as_str).unwrap_or("-");
    eprintln!(
        "ccm sim: {} simulated CML 2.9 workers, {first} .. {last}",
        endpoints.len()
    );
    if let Some(c) = control {
        eprintln!("ccm sim: control api on http://{c}");
    }
    if let Some(ca) = ca {
        eprintln!("ccm sim: CA certificate in {}", ca.display());
    }
    if !pids.is_empty() {
        eprintln!("ccm sim: shard processes {pids:?}");
    }
    eprintln!("ccm sim: press Ctrl-C to stop");
}
