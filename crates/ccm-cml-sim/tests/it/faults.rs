//! Every fault kind, as a client sees it.

use std::time::Duration;

use ccm_cml_sim::{Endpoint, EndpointFaults, ErrorFault, FaultSpec, Latency, WorkerFaults};
use reqwest::StatusCode;
use tokio::time::Instant;

use crate::support::{ADMIN, Cml, expect_error, fleet, http};

fn spec(s: &str) -> FaultSpec {
    s.parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn latency_should_delay_every_answer_by_base_plus_jitter() {
    let f = fleet(2, |c| c.faults = spec("0:latency=200ms~100ms")).await;
    let slow = Cml::new(&f.endpoints()[0]);
    let fast = Cml::new(&f.endpoints()[1]);
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(
            slow.get("/system_information").await.status(),
            StatusCode::OK
        );
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took <= Duration::from_millis(301),
            "{took:?}"
        );
    }
    let t = Instant::now();
    fast.get("/system_information").await;
    assert!(t.elapsed() < Duration::from_millis(5));
    f.shutdown().await;
}

#[tokio::test]
async fn error_faults_should_answer_the_status_with_an_error_body() {
    let f = fleet(1, |_| {}).await;
    let w = f.worker(0).unwrap();
    w.set_faults(WorkerFaults::default().with_endpoint(
        Endpoint::SystemStats,
        EndpointFaults {
            error: Some(ErrorFault {
                status: 503,
                rate: 1.0,
            }),
            ..EndpointFaults::default()
        },
    ));
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(ADMIN).await;
    expect_error(
        cml.get("/system_stats").await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_eq!(cml.get("/system_health").await.status(), StatusCode::OK);

    // At a rate: roughly half of 200 requests fail.
    w.apply_faults(&spec("*/system_health:error=500@0.5"));
    let mut failed = 0;
    for _ in 0..200 {
        if cml.get("/system_health").await.status() == StatusCode::INTERNAL_SERVER_ERROR {
            failed += 1;
        }
    }
    assert!((60..=140).contains(&failed), "{failed} of 200");
    f.shutdown().await;
}

#[tokio::test]
async fn reset_should_break_the_connection_without_an_answer() {
    let f = fleet(1, |c| c.faults = spec("*/system_stats:reset")).await;
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(ADMIN).await;
    let err = cml
        .request(reqwest::Method::GET, "/system_stats")
        .send()
        .await
        .expect_err("reset");
    assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");
    // Other endpoints still answer.
    assert_eq!(cml.get("/system_health").await.status(), StatusCode::OK);
    f.shutdown().await;
}

#[tokio::test]
async fn blackhole_should_hold_the_connection_and_never_answer() {
    let f = fleet(1, |c| c.faults = spec("*:blackhole")).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = client
        .get(format!("{}/api/v0/system_information", f.endpoints()[0]))
        .send()
        .await
        .expect_err("no answer");
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(
        f.worker(0)
            .unwrap()
            .counters()
            .get(Endpoint::SystemInformation),
        1
    );
    // Shutdown does not wait for the held request.
    tokio::time::timeout(Duration::from_secs(5), f.shutdown())
        .await
        .expect("shutdown is prompt despite a blackholed request");
}

#[tokio::test]
async fn malformed_should_cut_json_bodies_in_half() {
    let f = fleet(1, |c| c.faults = spec("*/system_information:malformed")).await;
    let cml = Cml::new(&f.endpoints()[0]);
    let resp = cml.get("/system_information").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(text.starts_with("{\"version\""), "{text}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_err(),
        "{text}"
    );
    f.shutdown().await;
}

#[tokio::test]
async fn older_should_404_only_the_optional_endpoints() {
    let f = fleet(1, |c| c.faults = spec("*:older")).await;
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(ADMIN).await;
    for path in [
        "/system_health",
        "/system_stats",
        "/licensing",
        "/telemetry/events",
    ] {
        expect_error(cml.get(path).await, StatusCode::NOT_FOUND).await;
    }
    for path in ["/system_information", "/labs", "/authok"] {
        assert_eq!(cml.get(path).await.status(), StatusCode::OK, "{path}");
    }
    f.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn slow_body_should_arrive_spread_over_the_duration() {
    let f = fleet(1, |c| c.faults = spec("*/system_information:slow=2s")).await;
    let cml = Cml::new(&f.endpoints()[0]);
    let t = Instant::now();
    let resp = cml.get("/system_information").await;
    let headers_after = t.elapsed();
    let body: serde_json::Value = resp.json().await.unwrap();
    let body_after = t.elapsed();
    assert!(body["version"].is_string());
    assert!(
        headers_after < Duration::from_millis(500),
        "{headers_after:?}"
    );
    assert!(body_after >= Duration::from_secs(2), "{body_after:?}");
    f.shutdown().await;
}

#[tokio::test]
async fn down_should_refuse_connections_until_cleared() {
    let f = fleet(2, |c| c.faults = spec("1:down")).await;
    let url = |i: usize| format!("{}/api/v0/system_information", f.endpoints()[i]);
    let client = http();
    assert!(client.get(url(0)).send().await.is_ok());
    let err = client.get(url(1)).send().await.expect_err("refused");
    assert!(err.is_connect(), "{err:?}");
    f.worker(1).unwrap().clear_faults();
    // The listener is bound again by the accept loop; give it a moment (bounded).
    let mut ok = false;
    for _ in 0..100 {
        if client.get(url(1)).send().await.is_ok() {
            ok = true;
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ok, "worker 1 answers again");
    f.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn flapping_workers_should_alternate_between_up_and_reset() {
    let f = fleet(1, |c| c.faults = spec("*:flap=10s")).await;
    let client = http();
    let url = format!("{}/api/v0/system_information", f.endpoints()[0]);
    let mut pattern = Vec::new();
    for _ in 0..4 {
        pattern.push(client.get(&url).send().await.is_ok());
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert_eq!(pattern, [true, false, true, false]);
    f.shutdown().await;
}

#[tokio::test]
async fn set_faults_should_replace_and_clear_should_heal() {
    let f = fleet(1, |_| {}).await;
    let w = f.worker(0).unwrap();
    let faults = WorkerFaults::default().with_all(EndpointFaults {
        latency: Some(Latency {
            base: Duration::from_millis(1),
            jitter: Duration::ZERO,
        }),
        ..EndpointFaults::default()
    });
    w.set_faults(faults.clone());
    assert_eq!(w.faults(), faults);
    w.apply_faults(&spec("*:not-ready"));
    assert!(
        w.faults().not_ready && w.faults().all.latency.is_some(),
        "apply merges"
    );
    assert!(!w.is_ready());
    w.clear_faults();
    assert!(w.faults().is_empty() && w.is_ready());
    f.shutdown().await;
}

#[tokio::test]
async fn redirect_should_answer_the_status_with_location_and_an_error_body() {
    let f = fleet(1, |c| {
        c.faults = spec("0/authenticate:redirect=308:http://127.9.9.9:8080/api/v0/authenticate")
    })
    .await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("{}/api/v0/authenticate", f.endpoints()[0]);
    let resp = client
        .post(&url)
        .json(&serde_json::json!({"username": "admin", "password": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()[reqwest::header::LOCATION],
        "http://127.9.9.9:8080/api/v0/authenticate"
    );
    expect_error(resp, StatusCode::PERMANENT_REDIRECT).await;
    // Other endpoints answer as usual.
    let cml = Cml::new(&f.endpoints()[0]);
    assert_eq!(
        cml.get("/system_information").await.status(),
        StatusCode::OK
    );
    f.shutdown().await;
}
