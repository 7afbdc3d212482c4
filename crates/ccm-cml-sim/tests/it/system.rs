//! System endpoints, power, readiness and counters.

use std::time::Duration;

use ccm_cml_sim::Endpoint;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{ADMIN, Cml, fleet, http};

#[tokio::test]
async fn system_information_should_report_version_and_readiness() {
    let f = fleet(1, |c| c.version = "2.9.1+build.7".into()).await;
    let cml = Cml::new(&f.endpoints()[0]);
    let info = cml.get_json("/system_information").await;
    assert_eq!(info["version"], "2.9.1+build.7");
    assert_eq!(info["ready"], true);
    f.worker(0).unwrap().set_ready(false);
    assert_eq!(cml.get_json("/system_information").await["ready"], false);
    let mut admin = cml.clone();
    admin.login(ADMIN).await;
    let health = admin.get_json("/system_health").await;
    assert_eq!(health["valid"], false);
    let compute = health["computes"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(compute["admission_state"], "ONLINE");
    f.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn power_off_should_refuse_and_power_on_should_boot_before_ready() {
    let f = fleet(1, |_| {}).await;
    let w = f.worker(0).unwrap();
    let client = http();
    let url = format!("{}/api/v0/system_information", f.endpoints()[0]);
    // A keep-alive connection exists before the power-off…
    assert!(client.get(&url).send().await.is_ok());
    w.power_off();
    assert!(!w.is_up());
    tokio::task::yield_now().await;
    let err = client.get(&url).send().await.expect_err("down");
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    let fresh = http();
    assert!(
        fresh
            .get(&url)
            .send()
            .await
            .expect_err("refused")
            .is_connect()
    );

    w.power_on(Duration::from_secs(60));
    let mut answered = None;
    for _ in 0..50 {
        if let Ok(r) = fresh.get(&url).send().await {
            answered = Some(r.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info = answered.expect("answers after power-on");
    assert_eq!(info["ready"], false, "still booting");
    tokio::time::sleep(Duration::from_secs(61)).await;
    let info: Value = fresh.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["ready"], true);
    f.shutdown().await;
}

#[tokio::test]
async fn counters_should_count_requests_per_endpoint_logins_and_connections() {
    let f = fleet(2, |_| {}).await;
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(ADMIN).await;
    for _ in 0..3 {
        cml.get("/system_information").await;
    }
    cml.get("/system_stats").await;
    cml.get("/nowhere").await;
    let c = f.worker(0).unwrap().counters();
    assert_eq!(c.get(Endpoint::SystemInformation), 3);
    assert_eq!(c.get(Endpoint::SystemStats), 1);
    assert_eq!(c.get(Endpoint::Authenticate), 1);
    assert_eq!(c.get(Endpoint::Other), 1);
    assert_eq!(c.requests, 6);
    assert_eq!(c.logins, 1);
    assert!(c.connections >= 1);
    assert_eq!(f.worker(1).unwrap().counters().requests, 0);
    assert_eq!(f.counters().requests, 6);
    f.worker(0).unwrap().reset_counters();
    assert_eq!(f.worker(0).unwrap().counters().requests, 0);
    assert_eq!(
        cml.get("/system_information").await.status(),
        StatusCode::OK
    );
    f.shutdown().await;
}

#[tokio::test]
async fn every_worker_should_listen_on_its_own_loopback_address() {
    let f = fleet(3, |_| {}).await;
    let ips: Vec<String> = f.workers().map(|w| w.addr().ip().to_string()).collect();
    assert_eq!(ips, ["127.3.0.1", "127.3.0.2", "127.3.0.3"]);
    for e in f.endpoints() {
        assert!(e.starts_with("http://127.3.0.") && !e.ends_with('/'), "{e}");
        assert_eq!(
            Cml::new(&e).get("/system_information").await.status(),
            StatusCode::OK
        );
    }
    f.shutdown().await;
}

#[tokio::test]
async fn shutdown_should_release_every_socket() {
    let f = fleet(3, |c| c.port = 0).await;
    let addrs: Vec<_> = f.workers().map(|w| w.addr()).collect();
    let client = http();
    client
        .get(format!("{}/api/v0/system_information", f.endpoints()[0]))
        .send()
        .await
        .unwrap();
    f.shutdown().await;
    for a in addrs {
        assert!(
            tokio::net::TcpStream::connect(a).await.is_err(),
            "{a} still listens"
        );
        assert!(
            std::net::TcpListener::bind(a).is_ok(),
            "{a} can be bound again"
        );
    }
}
