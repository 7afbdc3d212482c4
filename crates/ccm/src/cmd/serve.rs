//! `ccm serve`: the control plane against real AWS and real CML instances.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ccm_cloud::{CloudProvider, ResilientCloud, ResilientCloudConfig};
use ccm_cloud_aws::AwsCloud;
use ccm_cml::CmlClient;
use ccm_engine::{Engine, EngineParts, TokioClock, resilience_with_bus};
use ccm_store::{Backend, PgStore, SqliteStore, Store};

use crate::config::Config;

/// Builds every part from the configuration and runs until Ctrl-C or SIGTERM.
pub(crate) async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = super::runtime::metrics()?;
    let store = open_store(&config.database).await?;
    let (events, resilience) = resilience_with_bus(&config.resilience, None);
    let cml = CmlClient::new(&config.cml, resilience.clone())
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
    let engine = Engine::start(EngineParts {
        store,
        cloud,
        cml,
        resilience,
        endpoint: config.cml.endpoint.clone(),
        config: config.engine_config(),
        initial_settings: config.runtime_settings(),
        clock: Arc::new(TokioClock::new()),
    })
    .await
    .context("cannot start the engine")?;
    engine.forward_resilience_events(events);
    let state = ccm_api::ApiState::with_server(
        engine.clone(),
        config.server.clone(),
        config.api.clone(),
        config.auth.clone(),
        Some(metrics),
    )
    .map_err(|e| crate::config::ConfigError(e.to_string()))?;
    let webhooks = ccm_webhooks::Webhooks::start(&engine, config.webhooks.clone())
        .map_err(|e| crate::config::ConfigError(e.to_string()))?;
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
    Ok(())
}

/// The store the configuration selects: PostgreSQL for `database.url`, else the SQLite file.
/// Errors name the key; the URL shows without its password.
async fn open_store(config: &ccm_store::StoreConfig) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match config.backend() {
        Backend::Postgres(url) => {
            let store = PgStore::connect(url, config)
                .await
                .with_context(|| format!("database.url {url}"))?;
            tracing::info!(database = %url, "store: PostgreSQL");
            Arc::new(store)
        }
        Backend::Sqlite(path) => {
            let store = SqliteStore::open(config)
                .await
                .with_context(|| format!("database.path {}", path.display()))?;
            tracing::info!(database = %path.display(), "store: SQLite");
            Arc::new(store)
        }
    })
}
