//! `ccm demo`: the whole product on one machine — a simulated CML fleet on loopback
//! addresses, a simulated EC2, SQLite in a file, a fault mix, workers that go idle and get
//! paused — with the web UI.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ccm_store::{SqliteStore, StoreConfig};
use ccm_testbed::embedded::{Embedded, EmbeddedOptions};

use crate::config::Config;

/// `ccm demo` options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DemoArgs {
    /// Simulated workers.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub(crate) workers: u32,
    /// Port of the web UI and API (on 127.0.0.1).
    #[arg(long, default_value_t = 8080)]
    pub(crate) port: u16,
    /// The admin API token (default: a random one, printed at start).
    #[arg(long, env = "CCM_DEMO_ADMIN_TOKEN")]
    pub(crate) admin_token: Option<String>,
    /// SQLite database file; recreated at every start.
    #[arg(long, default_value = "ccm-demo.db")]
    pub(crate) db: PathBuf,
    /// Address of the first simulated worker (the others count up).
    #[arg(long, default_value = "127.1.0.1")]
    pub(crate) listen_base: Ipv4Addr,
    /// Fault mix of the simulated fleet (`ccm sim --help` has the grammar; `none` for none).
    #[arg(long, default_value = "demo")]
    pub(crate) faults: String,
    /// Idle timeout of the demo (short, so that idle workers get paused while you watch).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub(crate) idle_timeout: Duration,
    /// Impair the EC2 instance status check of this many workers (the first by name) while
    /// they run, so that they show as degraded (`ec2_status_impaired`) although CML answers.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) impaired_status: u32,
}

/// Starts the embedded fleet and runs until Ctrl-C: the API on the current runtime, the
/// engine and the simulated fleet on `engine_rt` ([`super::runtime::Runtimes`]).
pub(crate) async fn run(
    args: DemoArgs,
    config: Config,
    engine_rt: tokio::runtime::Handle,
) -> anyhow::Result<()> {
    let faults = ccm_cml_sim::faults::FaultSpec::parse(&args.faults)
        .map_err(|e| crate::config::ConfigError(format!("--faults: {e}")))?;
    let metrics = super::runtime::metrics()?;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = args.db.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    let store_cfg = StoreConfig {
        path: Some(args.db.clone()),
        url: None,
        synchronous: ccm_store::Synchronous::Normal,
        ..config.database.clone()
    };
    let store = SqliteStore::open(&store_cfg)
        .await
        .with_context(|| format!("database {}", args.db.display()))?;

    let workers = args.workers as usize;
    let mut opts = EmbeddedOptions::new(workers, args.listen_base, Arc::new(store));
    opts.sim.faults = faults;
    opts.sim.activity = Some(ccm_cml_sim::ActivityConfig {
        fraction: 0.3,
        interval: Duration::from_secs(45),
    });
    opts.resilience = config.resilience.clone();
    opts.resilience.breaker.open_for = Duration::from_secs(30);
    opts.resilience.timeout.per_attempt = Duration::from_secs(5);
    opts.resilience.timeout.deadline = Duration::from_secs(20);
    opts.engine = config.engine_config();
    opts.engine.import.ami_name_pattern = Some("cml-controller-*".into());
    opts.engine.import.tag = None;
    opts.engine.import.regions = Vec::new();
    if opts.engine.pricing.hourly.is_empty() {
        opts.engine
            .pricing
            .hourly
            .insert("m5zn.metal".into(), 3.9641);
    }
    let mut settings = config.runtime_settings();
    settings.idle.timeout = args.idle_timeout;
    settings.idle.snooze_after_resume = args.idle_timeout;
    let p = &mut settings.polling;
    p.ec2_interval = Duration::from_secs(10);
    p.cml_interval = Duration::from_secs(15);
    p.metrics_interval = Duration::from_secs(60);
    p.labs_interval = Duration::from_secs(60);
    p.activity_interval = Duration::from_secs(30);
    p.stale_max_age = Duration::from_secs(300);
    opts.settings = settings;
    opts.boot = Duration::from_secs(8);
    opts.cloud.pending_delay = Duration::from_secs(5);
    opts.cloud.stopping_delay = Duration::from_secs(5);

    let token = args
        .admin_token
        .clone()
        .unwrap_or_else(ccm_api::generate_token);
    let auth = config
        .auth
        .clone()
        .with_token("demo-admin", ccm_api::Role::Admin, &token);
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], args.port));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("--port {}: cannot listen on {listen}", args.port))?;
    let fleet = engine_rt
        .spawn(Embedded::start(opts))
        .await
        .context("the engine's runtime failed")?
        .context("cannot start the embedded fleet")?;
    let impaired = impair_status_checks(&fleet, args.impaired_status).await?;
    // The listener's limits from `[server]`; the demo always speaks plain HTTP on loopback.
    let server = ccm_api::ServerConfig {
        tls_cert: None,
        tls_key: None,
        ..config.server.clone()
    };
    let state = ccm_api::ApiState::with_server(
        fleet.engine.clone(),
        server,
        config.api.clone(),
        auth,
        Some(metrics),
    )
    .map_err(|e| crate::config::ConfigError(e.to_string()))?;
    let webhooks = {
        // Deliveries are background work: on the engine's runtime.
        let _engine_rt = engine_rt.enter();
        ccm_webhooks::Webhooks::start(&fleet.engine, config.webhooks.clone())
            .map_err(|e| crate::config::ConfigError(e.to_string()))?
    };
    state.attach_webhooks(webhooks.clone());
    let url = format!("http://{listen}/");
    println!(
        "ccm demo: {workers} simulated workers on {}…, database {}",
        args.listen_base,
        args.db.display()
    );
    println!("  web UI and API: {url}");
    println!("  admin token:    {token}");
    if !impaired.is_empty() {
        println!("  impaired EC2 status checks: {}", impaired.join(", "));
    }
    println!("  Ctrl-C stops everything.");
    let log = tokio::spawn(log_events(fleet.engine.subscribe()));
    ccm_api::serve(listener, state, super::runtime::shutdown_signal())
        .await
        .context("HTTP server failed")?;
    log.abort();
    webhooks.stop();
    fleet.shutdown().await;
    Ok(())
}

/// Impairs the EC2 instance status check of the first `n` workers by name (the simulated
/// cloud reports `impaired` for them while they run); returns their names.
async fn impair_status_checks(fleet: &Embedded, n: u32) -> anyhow::Result<Vec<String>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let filter = ccm_store::WorkerFilter {
        sort: ccm_store::WorkerSort::Name,
        limit: n,
        ..Default::default()
    };
    let page = fleet
        .engine
        .workers(&filter)
        .await
        .context("--impaired-status: cannot list the workers")?;
    let checks = ccm_domain::StatusChecks {
        system: ccm_domain::CheckStatus::Ok,
        instance: ccm_domain::CheckStatus::Impaired,
    };
    let mut names = Vec::new();
    for worker in page.items {
        if let Some(instance) = &worker.instance_id {
            fleet.cloud.set_status_checks(instance, Some(checks));
            names.push(worker.name);
        }
    }
    Ok(names)
}

/// Logs the events worth watching in a demo (state and status changes, pauses, breakers).
async fn log_events(mut rx: tokio::sync::broadcast::Receiver<ccm_engine::BusEvent>) {
    use ccm_domain::EventKind as K;
    loop {
        let event = match rx.recv().await {
            Ok(e) => e.event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        let subject = event.subject.as_deref().unwrap_or("-");
        match &event.kind {
            K::WorkerStateChanged { from, to } => {
                tracing::info!(worker = subject, "EC2 {from} → {to}")
            }
            K::WorkerServiceChanged { from, to, reasons } => {
                let why: Vec<String> = reasons.iter().map(ToString::to_string).collect();
                tracing::info!(worker = subject, "CML {from} → {to} {}", why.join("; "))
            }
            K::WorkerPaused { reason, .. } => {
                tracing::info!(worker = subject, "paused ({reason:?})")
            }
            K::WorkerResumed { reason, .. } => {
                tracing::info!(worker = subject, "resumed ({reason:?})")
            }
            K::WorkerIdleDetected {
                action,
                idle_for_seconds,
                ..
            } => {
                tracing::info!(worker = subject, "idle for {idle_for_seconds} s: {action}")
            }
            K::BreakerOpened { key, .. } => {
                tracing::info!(worker = subject, "breaker opened for {key}")
            }
            K::BreakerClosed { key } => {
                tracing::info!(worker = subject, "breaker closed for {key}")
            }
            K::ImportCompleted {
                matched,
                imported,
                existing,
                ..
            } => {
                tracing::info!(
                    "import: {matched} matched, {imported} imported, {existing} already known"
                )
            }
            _ => {}
        }
    }
}
