use std::net::Ipv4Addr;
use std::time::Duration;

use ccm_cml::{CmlClient, CmlConfig, Target, TlsConfig};
use ccm_cml_sim::{CmlSimConfig, NodeTiming, SimFleet};
use ccm_resilience::{Resilience, ResilienceConfig};

/// A fleet of `n` simulated workers on `127.20.<net>.1..` (port 0), with fast node and
/// licence timing; `tweak` adjusts the config.
pub(crate) async fn fleet(net: u8, n: usize, tweak: impl FnOnce(&mut CmlSimConfig)) -> SimFleet {
    let mut cfg = CmlSimConfig {
        workers: n,
        listen_base: Ipv4Addr::new(127, 20, net, 1),
        port: 0,
        node_timing: NodeTiming {
            queue: Duration::from_millis(20),
            stagger: Duration::from_millis(10),
            boot: Duration::from_millis(60),
        },
        licence_delay: Duration::from_millis(100),
        ..CmlSimConfig::default()
    };
    tweak(&mut cfg);
    SimFleet::start(cfg)
        .await
        .expect("the simulated fleet starts")
}

/// Resilience tuned for tests: real timeouts but short, fast backoff; the rest default.
pub(crate) fn resilience_config() -> ResilienceConfig {
    let mut cfg = ResilienceConfig::default();
    cfg.timeout.per_attempt = Duration::from_secs(3);
    cfg.timeout.deadline = Duration::from_secs(10);
    cfg.retry.base = Duration::from_millis(10);
    cfg.retry.cap = Duration::from_millis(50);
    cfg.validate().expect("the test resilience config is valid");
    cfg
}

/// The `[cml]` config for the simulator (plain HTTP, admin/admin).
pub(crate) fn cml_config() -> CmlConfig {
    CmlConfig {
        tls: TlsConfig::Verify,
        ..CmlConfig::default()
    }
}

/// A client with `resilience` and the simulator's config.
pub(crate) fn client_with(resilience: &ResilienceConfig) -> CmlClient {
    CmlClient::new(
        &cml_config(),
        Resilience::builder(resilience).jitter_seed(7).build(),
    )
    .expect("the client builds")
}

/// A client with the test resilience config.
pub(crate) fn client() -> CmlClient {
    client_with(&resilience_config())
}

/// The target of worker `i`.
pub(crate) fn target(client: &CmlClient, fleet: &SimFleet, i: usize) -> Target {
    client
        .target(&fleet.endpoints()[i])
        .expect("the simulator's base url is valid")
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `within`; panics with
/// `what` otherwise.
pub(crate) async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
