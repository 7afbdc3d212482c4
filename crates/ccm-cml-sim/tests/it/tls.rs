//! `--tls`: HTTPS with a generated CA that clients can verify.

use ccm_cml_sim::{CmlSimConfig, SimFleet};
use reqwest::StatusCode;

#[tokio::test]
async fn tls_fleet_should_serve_https_that_its_ca_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let ca_out = dir.path().join("ca.pem");
    let f = SimFleet::start(CmlSimConfig {
        workers: 2,
        port: 0,
        listen_base: "127.5.0.1".parse().unwrap(),
        tls: true,
        ca_out: Some(ca_out.clone()),
        ..CmlSimConfig::default()
    })
    .await
    .unwrap();
    let pem = f.ca_pem().expect("a CA");
    assert_eq!(std::fs::read_to_string(&ca_out).unwrap(), pem);
    assert_eq!(f.ca_path(), Some(ca_out.clone()));
    let ca = reqwest::Certificate::from_pem(pem.as_bytes()).unwrap();
    let trusting = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    for e in f.endpoints() {
        assert!(e.starts_with("https://127.5.0."), "{e}");
        let r = trusting
            .get(format!("{e}/api/v0/system_information"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let other_ca = reqwest::Certificate::from_pem(ccm_cml_sim_test_ca().await.as_bytes()).unwrap();
    let stranger = reqwest::Client::builder()
        .tls_certs_only([other_ca])
        .build()
        .unwrap();
    let err = stranger
        .get(format!("{}/api/v0/system_information", f.endpoints()[0]))
        .send()
        .await
        .expect_err("an unknown CA is refused");
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    f.shutdown().await;
    assert!(ca_out.exists(), "a CA file asked for with ca_out is kept");
}

#[tokio::test]
async fn a_generated_ca_file_at_the_default_path_should_be_removed_with_the_fleet() {
    let f = SimFleet::start(CmlSimConfig {
        port: 0,
        listen_base: "127.5.2.1".parse().unwrap(),
        tls: true,
        ..CmlSimConfig::default()
    })
    .await
    .unwrap();
    let path = f.ca_path().expect("written to the temp dir");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), f.ca_pem().unwrap());
    f.shutdown().await;
    assert!(!path.exists(), "{} left behind", path.display());
}

/// The CA of a second fleet: valid, but not the one that signed the first fleet.
async fn ccm_cml_sim_test_ca() -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = SimFleet::start(CmlSimConfig {
        port: 0,
        listen_base: "127.5.1.1".parse().unwrap(),
        tls: true,
        ca_out: Some(dir.path().join("other-ca.pem")),
        ..CmlSimConfig::default()
    })
    .await
    .unwrap();
    let pem = f.ca_pem().unwrap();
    f.shutdown().await;
    pem
}
