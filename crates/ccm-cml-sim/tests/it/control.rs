//! The control API over HTTP.

use std::net::SocketAddr;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{ADMIN, Cml, expect_error, fleet, http};

#[tokio::test]
async fn control_api_should_report_and_drive_workers() {
    let f = fleet(4, |_| {}).await;
    let addr = f
        .serve_control(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let ctl = http();
    let url = |p: &str| format!("http://{addr}{p}");
    let get = |p: &'static str| {
        let ctl = ctl.clone();
        let u = url(p);
        async move {
            ctl.get(u)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };

    let list = get("/workers").await;
    let workers = list["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 4);
    assert_eq!(workers[2]["index"], 2);
    assert_eq!(workers[2]["endpoint"], f.endpoints()[2]);
    assert_eq!(get("/endpoints").await, json!(f.endpoints()));

    // Faults for a selector.
    let r = ctl
        .post(url("/faults"))
        .json(&json!({"spec": "1-2:down"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"matched": 2}));
    let one = get("/workers/1").await;
    assert_eq!(one["up"], false);
    assert!(one["faults"].as_str().unwrap().contains("down"));
    assert!(
        http()
            .get(format!("{}/api/v0/system_information", f.endpoints()[1]))
            .send()
            .await
            .is_err()
    );
    let r = ctl.delete(url("/faults?workers=1")).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"matched": 1}));
    assert_eq!(get("/workers/1").await["up"], true);
    assert_eq!(get("/workers/2").await["up"], false);

    // Actions.
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(ADMIN).await;
    let r = ctl
        .post(url("/actions"))
        .json(&json!({"workers": "0", "action": "fail401", "n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"matched": 1}));
    expect_error(cml.get("/authok").await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(cml.get("/authok").await.status(), StatusCode::OK);

    let w0 = get("/workers/0").await;
    assert_eq!(w0["counters"]["by_endpoint"]["authok"], 2);
    assert_eq!(w0["counters"]["logins"], 1);
    let total = get("/counters").await;
    assert!(total["requests"].as_u64().unwrap() >= 3);

    let r = ctl
        .post(url("/actions"))
        .json(&json!({"action": "reset_counters"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"matched": 4}));
    assert_eq!(get("/counters").await["requests"], 0);

    let r = ctl
        .post(url("/actions"))
        .json(&json!({"workers": "3", "action": "power_off"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"matched": 1}));
    assert_eq!(get("/workers/3").await["up"], false);
    let r = ctl
        .post(url("/actions"))
        .json(&json!({"workers": "3", "action": "power_on", "boot": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"matched": 1}));
    let w3 = get("/workers/3").await;
    assert_eq!(
        (w3["up"].clone(), w3["ready"].clone()),
        (json!(true), json!(false))
    );

    // Errors keep the CML error shape.
    let r = ctl
        .post(url("/faults"))
        .json(&json!({"spec": "1:explode"}))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST).await;
    let r = ctl.get(url("/workers/99")).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND).await;
    let r = ctl
        .post(url("/actions"))
        .json(&json!({"action": "explode"}))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST).await;
    f.shutdown().await;
}

#[tokio::test]
async fn two_user_agents_calling_one_worker_within_the_window_should_count_a_double_poll() {
    let f = fleet(2, |_| {}).await;
    let addr = f
        .serve_control(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let ctl = http();
    let url = |p: &str| format!("http://{addr}{p}");
    let agent = |name: &str| {
        reqwest::Client::builder()
            .no_proxy()
            .user_agent(name)
            .build()
            .unwrap()
    };
    let (a, b) = (agent("ccm/1 (replica a)"), agent("ccm/1 (replica b)"));
    let call = |c: &reqwest::Client, worker: usize| {
        let u = format!("{}/api/v0/system_information", f.endpoints()[worker]);
        let c = c.clone();
        async move { assert!(c.get(u).send().await.unwrap().status().is_success()) }
    };
    let window = |w: &'static str| {
        let r = ctl
            .post(url("/actions"))
            .json(&json!({"action": "double_poll_window", "window": w}));
        async move { assert!(r.send().await.unwrap().status().is_success()) }
    };
    let counters = |p: &'static str| {
        let r = ctl.get(url(p));
        async move { r.send().await.unwrap().json::<Value>().await.unwrap() }
    };

    // A window far longer than this test: every change of caller is a double poll.
    window("10m").await;
    call(&a, 0).await;
    call(&a, 0).await; // the same agent again: not a double poll
    call(&b, 0).await; // another agent right after: one
    call(&a, 1).await; // another worker, one agent: none
    let w0 = counters("/workers/0").await["counters"].clone();
    assert_eq!(w0["double_polls"], 1, "{w0}");
    assert_eq!(w0["by_agent"]["ccm/1 (replica a)"], 2);
    assert_eq!(w0["by_agent"]["ccm/1 (replica b)"], 1);
    assert_eq!(w0["last_agent"], "ccm/1 (replica b)");
    let example = &w0["double_poll_examples"][0];
    assert_eq!(example["worker"], 0);
    assert_eq!(example["earlier"], "ccm/1 (replica a)");
    assert_eq!(example["later"], "ccm/1 (replica b)");
    let total = counters("/counters").await;
    assert_eq!(total["double_polls"], 1, "{total}");
    assert_eq!(total["workers_by_agent"]["ccm/1 (replica a)"], 2);
    assert_eq!(total["workers_by_agent"]["ccm/1 (replica b)"], 1);

    // Window off: a change of caller is a handover, not a double poll.
    window("0s").await;
    call(&a, 0).await;
    assert_eq!(counters("/counters").await["double_polls"], 1);

    // A reset forgets agents and double polls.
    let r = ctl
        .post(url("/actions"))
        .json(&json!({"action": "reset_counters"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let total = counters("/counters").await;
    assert_eq!(total["double_polls"], 0);
    assert_eq!(total["by_agent"], json!({}));
}
