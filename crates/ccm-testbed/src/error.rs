//! [`TestbedError`]: why an embedded fleet could not start.

/// Why an embedded fleet ([`crate::embedded::Embedded`]) could not start.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// The simulated CML fleet could not start (addresses, ports, TLS).
    #[error("CML simulator: {0}")]
    CmlSimulator(#[from] ccm_cml_sim::SimError),
    /// The simulated cloud refused its configuration.
    #[error("simulated cloud: {0}")]
    Cloud(#[from] ccm_cloud::CloudError),
    /// The CML client refused its configuration.
    #[error("cml client: {0}")]
    CmlClient(#[from] ccm_cml::CmlConfigError),
    /// The engine could not start, or the initial import failed.
    #[error(transparent)]
    Engine(#[from] ccm_engine::EngineError),
}
