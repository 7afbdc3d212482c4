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
