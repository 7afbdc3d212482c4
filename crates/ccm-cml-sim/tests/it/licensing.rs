//! The licensing registration state machine.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN, Cml, expect_error, fleet};

async fn register(cml: &Cml, body: Value) -> reqwest::Response {
    cml.request(Method::POST, "/licensing/registration")
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn registration_with_a_good_token_should_complete_after_the_delay() {
    let f = fleet(1, |c| c.licence_delay = Duration::from_secs(10)).await;
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(ADMIN).await;
    let lic = cml.get_json("/licensing").await;
    assert_eq!(lic["registration"]["status"], "NOT_REGISTERED");
    assert_eq!(lic["authorization"]["status"], "EVAL");
    assert!(lic["registration"]["smart_account"].is_null());
    assert_eq!(cml.get_json("/system_health").await["is_licensed"], false);

    let resp = register(
        &cml,
        json!({"token": "OTk5LWdvb2QtdG9rZW4=", "reregister": false}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let lic = cml.get_json("/licensing").await;
    assert_eq!(lic["registration"]["status"], "IN_PROGRESS");
    assert!(lic["registration"]["register_time"]["attempted"].is_string());
    expect_error(
        register(&cml, json!({"token": "again"})).await,
        StatusCode::CONFLICT,
    )
    .await;
    expect_error(
        cml.delete("/licensing/deregistration").await,
        StatusCode::CONFLICT,
    )
    .await;

    tokio::time::sleep(Duration::from_secs(11)).await;
    let lic = cml.get_json("/licensing").await;
    assert_eq!(lic["registration"]["status"], "COMPLETED");
    assert_eq!(lic["authorization"]["status"], "IN_COMPLIANCE");
    assert!(lic["registration"]["smart_account"].is_string());
    assert!(lic["registration"]["expires"].is_string());
    assert_eq!(lic["registration"]["register_time"]["success"], "SUCCESS");
    assert_eq!(cml.get_json("/system_health").await["is_licensed"], true);
    // Registered again without reregister → 409; with it → accepted.
    expect_error(
        register(&cml, json!({"token": "abc"})).await,
        StatusCode::CONFLICT,
    )
    .await;

    let expires = lic["authorization"]["expires"].clone();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(
        cml.put("/licensing/authorization/renew").await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        cml.put("/licensing/registration/renew").await.status(),
        StatusCode::NO_CONTENT
    );
    let lic = cml.get_json("/licensing").await;
    assert_ne!(
        lic["authorization"]["expires"], expires,
        "renewal bumps the expiry"
    );
    assert_eq!(
        register(&cml, json!({"token": "abc", "reregister": true}))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    f.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn registration_with_a_bad_token_should_fail() {
    let f = fleet(1, |c| c.licence_delay = Duration::from_secs(5)).await;
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(ADMIN).await;
    assert_eq!(
        register(&cml, json!({"token": "invalid-token"}))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    let lic = cml.get_json("/licensing").await;
    assert_eq!(lic["registration"]["status"], "FAILED");
    assert_eq!(lic["authorization"]["status"], "EVAL");
    let failure = lic["registration"]["register_time"]["failure"]
        .as_str()
        .unwrap();
    assert!(
        failure.contains("'invalid-token' is not valid"),
        "{failure}"
    );
    // A failed registration can be retried.
    assert_eq!(
        register(&cml, json!({"token": "good"})).await.status(),
        StatusCode::NO_CONTENT
    );
    f.shutdown().await;
}

#[tokio::test]
async fn registration_input_should_be_checked_with_400() {
    let f = fleet(1, |_| {}).await;
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(ADMIN).await;
    for body in [
        json!({}),
        json!({"token": ""}),
        json!({"token": "has spaces"}),
        json!({"token": "x".repeat(257)}),
        json!({"token": "ok", "reregister": "yes"}),
        json!({"token": "ok", "extra": 1}),
    ] {
        expect_error(register(&cml, body).await, StatusCode::BAD_REQUEST).await;
    }
    expect_error(
        cml.put("/licensing/registration/renew").await,
        StatusCode::CONFLICT,
    )
    .await;
    expect_error(
        cml.put("/licensing/authorization/renew").await,
        StatusCode::CONFLICT,
    )
    .await;
    f.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn deregistration_should_return_to_not_registered() {
    let f = fleet(2, |c| c.licence_delay = Duration::from_secs(1)).await;
    f.worker(1)
        .unwrap()
        .apply_faults(&"*:ssms-unreachable".parse().unwrap());
    for (i, expected) in [(0, StatusCode::NO_CONTENT), (1, StatusCode::ACCEPTED)] {
        let mut cml = Cml::new(&f.endpoints()[i]);
        cml.login(ADMIN).await;
        expect_error(
            cml.delete("/licensing/deregistration").await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        register(&cml, json!({"token": "good"})).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            cml.get_json("/licensing").await["registration"]["status"],
            "COMPLETED"
        );
        assert_eq!(
            cml.delete("/licensing/deregistration").await.status(),
            expected
        );
        let lic = cml.get_json("/licensing").await;
        assert_eq!(lic["registration"]["status"], "NOT_REGISTERED");
        assert_eq!(lic["authorization"]["status"], "EVAL");
        assert_eq!(cml.get_json("/system_health").await["is_licensed"], false);
    }
    f.shutdown().await;
}
