//! `ccm serve`: the control plane against real AWS and real CML instances.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ccm_cloud::{CloudProvider, ResilientCloud, ResilientCloudConfig};
use ccm_cloud_aws::AwsCloud;
use ccm_cml::CmlClient;
use ccm_engine::cluster::Listen;
use ccm_engine::{Engine, EngineParts, LeaseOwnership, TokioClock, resilience_with_bus};
use ccm_store::{Backend, PgStore, SingleNodeLock, SqliteStore, Store};

use crate::config::Config;

/// Builds every part from the configuration and runs until Ctrl-C or SIGTERM: the API and the
/// cluster's lease rounds on the current runtime, the engine and the webhooks' deliveries on
/// `engine_rt` ([`super::runtime::Runtimes`]).
pub(crate) async fn run(config: Config, engine_rt: tokio::runtime::Handle) -> anyhow::Result<()> {
    let metrics = super::runtime::metrics()?;
    let opened = open_store(&config.database).await?;
    let store = opened.store.clone();
    let (events, resilience) = resilience_with_bus(&config.resilience, None);
    // One id per process; on PostgreSQL it names this replica, also in CML's User-Agent.
    let replica = opened
        .postgres
        .is_some()
        .then(|| replica_id(&config.cluster));
    let cml = CmlClient::with_user_agent(
        &config.cml,
        resilience.clone(),
        ccm_cml::user_agent(replica.as_deref()),
    )
    .map_err(|e| crate::config::ConfigError(e.to_string()))?;
    let aws = AwsCloud::connect(&config.aws)
        .await
        .map_err(|e| crate::config::ConfigError(e.to_string()))?;
    // One deadline per AWS operation, a little above the SDK's own so that it speaks first.
    let cloud_policy = ResilientCloudConfig {
        deadline: config.aws.operation_timeout + Duration::from_secs(5),
        attempts: 1,
        attempt_timeout: None,
    };
    let cloud: Arc<dyn CloudProvider> = Arc::new(ResilientCloud::sharing(
        Arc::new(aws),
        resilience.clone(),
        &cloud_policy,
    ));
    let parts = EngineParts {
        store,
        cloud,
        cml,
        resilience,
        endpoint: config.cml.endpoint.clone(),
        config: config.engine_config(),
        initial_settings: config.runtime_settings(),
        clock: Arc::new(TokioClock::new()),
    };
    // PostgreSQL: one replica among several (leases); SQLite: the only one (a file lock).
    // The lease rounds run where the cluster is joined: on this runtime, at the process's
    // priority (a late renewal loses leases), not on the engine's lowered one.
    let cluster = match (&opened.postgres, replica) {
        (Some(pg), Some(replica)) => {
            let repo: Arc<dyn ccm_store::ClusterRepo> = Arc::new(pg.clone());
            let me = ccm_store::ReplicaRecord {
                id: replica,
                address: config
                    .cluster
                    .advertise
                    .clone()
                    .unwrap_or_else(|| config.server.listen.to_string()),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                started_at: chrono::Utc::now(),
            };
            let lease = LeaseOwnership::join(repo.clone(), me, config.cluster.clone())
                .await
                .map_err(crate::config::ConfigError)?;
            tracing::info!(
                replica = lease.id(),
                leases = lease.held().len(),
                "joined the cluster"
            );
            Some((repo, lease))
        }
        _ => None,
    };
    let lease = cluster.as_ref().map(|(_, lease)| lease.clone());
    // Started on the engine's runtime, where its background work will run.
    let engine = engine_rt
        .spawn(start_engine(parts, cluster, events))
        .await
        .context("the engine's runtime failed")??;
    let state = ccm_api::ApiState::with_server(
        engine.clone(),
        config.server.clone(),
        config.api.clone(),
        config.auth.clone(),
        Some(metrics),
    )
    .map_err(|e| crate::config::ConfigError(e.to_string()))?;
    let webhooks = {
        // Deliveries are background work: on the engine's runtime.
        let _engine_rt = engine_rt.enter();
        ccm_webhooks::Webhooks::start(&engine, config.webhooks.clone())
            .map_err(|e| crate::config::ConfigError(e.to_string()))?
    };
    state.attach_webhooks(webhooks.clone());
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("server.listen {}", config.server.listen))?;
    tracing::info!(
        listen = %config.server.listen,
        https = config.server.tls(),
        "ccm serving"
    );
    ccm_api::serve(listener, state, super::runtime::shutdown_signal())
        .await
        .context("HTTP server failed")?;
    webhooks.stop();
    engine.shutdown().await;
    if let Some(lease) = lease {
        // Hand the leases over at once instead of letting them expire.
        lease.leave().await;
    }
    drop(opened);
    Ok(())
}

/// Starts the engine (on the calling runtime: its background work runs there), as one replica
/// of several on PostgreSQL (`cluster`: the joined cluster) or as the only node.
async fn start_engine(
    parts: EngineParts,
    cluster: Option<(Arc<dyn ccm_store::ClusterRepo>, LeaseOwnership)>,
    events: ccm_engine::ResilienceEvents,
) -> anyhow::Result<Engine> {
    let engine = match cluster {
        Some((repo, lease)) => {
            let engine = Engine::start_with_ownership(parts, Arc::new(lease.clone()))
                .await
                .context("cannot start the engine")?;
            engine.follow_cluster(Listen::new(repo), lease);
            engine
        }
        None => Engine::start(parts)
            .await
            .context("cannot start the engine")?,
    };
    engine.forward_resilience_events(events);
    Ok(engine)
}

/// This replica's id: configured, or `<host>-<pid>-<start time>` (a new member per process).
fn replica_id(config: &ccm_engine::ClusterConfig) -> String {
    if let Some(id) = &config.replica_id {
        return id.clone();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_else(|| "ccm".into());
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(32)
        .collect();
    let host = if host.is_empty() { "ccm".into() } else { host };
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!("{host}-{}-{started:x}", std::process::id())
}

/// The opened store, and what keeps it: the PostgreSQL store for the cluster, or the SQLite
/// file's single-node lock (held until dropped).
struct Opened {
    store: Arc<dyn Store>,
    postgres: Option<PgStore>,
    _lock: Option<SingleNodeLock>,
}

/// The store the configuration selects: PostgreSQL for `database.url`, else the SQLite file
/// (locked against a second `ccm serve`). Errors name the key; the URL shows without its
/// password.
async fn open_store(config: &ccm_store::StoreConfig) -> anyhow::Result<Opened> {
    Ok(match config.backend() {
        Backend::Postgres(url) => {
            let store = PgStore::connect(url, config)
                .await
                .with_context(|| format!("database.url {url}"))?;
            tracing::info!(database = %url, "store: PostgreSQL (replica)");
            Opened {
                store: Arc::new(store.clone()),
                postgres: Some(store),
                _lock: None,
            }
        }
        Backend::Sqlite(path) => {
            let lock = SingleNodeLock::acquire(path)
                .map_err(|e| crate::config::ConfigError(format!("database.path: {e}")))?;
            let store = SqliteStore::open(config)
                .await
                .with_context(|| format!("database.path {}", path.display()))?;
            tracing::info!(database = %path.display(), "store: SQLite (single node)");
            Opened {
                store: Arc::new(store),
                postgres: None,
                _lock: Some(lock),
            }
        }
    })
}
