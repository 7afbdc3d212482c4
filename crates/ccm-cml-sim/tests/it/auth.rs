//! Logins, tokens, 401/403 rules, logout.

use std::time::Duration;

use base64::Engine;
use ccm_cml_sim::{ADMIN_USER_ID, STUDENT_USER_ID};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN, Cml, STUDENT, expect_error, fleet};

fn claims(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts");
    let dec = |s: &str| {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .expect("base64url");
        serde_json::from_slice::<Value>(&bytes).expect("JSON")
    };
    (dec(parts[0]), dec(parts[1]))
}

#[tokio::test]
async fn authenticate_should_return_a_quoted_hs256_jwt_with_cml_claims() {
    let f = fleet(1, |c| c.token_ttl = Duration::from_secs(3600)).await;
    let mut cml = Cml::new(&f.endpoints()[0]);
    let token = cml.login(ADMIN).await;
    let (header, claims) = claims(&token);
    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(claims["iss"], "com.cisco.virl");
    assert_eq!(claims["sub"], ADMIN_USER_ID.to_string());
    let ttl = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(ttl, 3600);
    assert_eq!(cml.get_json("/authok").await, json!("OK"));
    assert_eq!(cml.get_json("/web_session_timeout").await, json!(3600));
    f.shutdown().await;
}

#[tokio::test]
async fn bearer_endpoints_should_answer_401_without_a_valid_token() {
    let f = fleet(2, |_| {}).await;
    let mut other = Cml::new(&f.endpoints()[1]);
    let foreign = other.login(ADMIN).await;
    let mut cml = Cml::new(&f.endpoints()[0]);
    for path in [
        "/authok",
        "/system_health",
        "/labs",
        "/telemetry/events",
        "/licensing",
    ] {
        cml.token = None;
        expect_error(cml.get(path).await, StatusCode::UNAUTHORIZED).await;
        cml.token = Some("not.a.jwt".into());
        expect_error(cml.get(path).await, StatusCode::UNAUTHORIZED).await;
        // A token of another controller is not valid here.
        cml.token = Some(foreign.clone());
        expect_error(cml.get(path).await, StatusCode::UNAUTHORIZED).await;
    }
    let basic = cml
        .http
        .get(cml.url("/authok"))
        .header("authorization", "Basic YWRtaW46YWRtaW4=")
        .send()
        .await
        .unwrap();
    expect_error(basic, StatusCode::UNAUTHORIZED).await;
    // The four open endpoints need no token.
    cml.token = None;
    assert_eq!(
        cml.get("/system_information").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        cml.get("/system/maintenance_mode").await.status(),
        StatusCode::OK
    );
    f.shutdown().await;
}

#[tokio::test]
async fn bad_logins_should_be_403_and_never_429() {
    let f = fleet(1, |_| {}).await;
    let cml = Cml::new(&f.endpoints()[0]);
    for i in 0..31 {
        let path = if i % 2 == 0 {
            "/authenticate"
        } else {
            "/auth_extended"
        };
        let resp = cml
            .http
            .post(cml.url(path))
            .json(&json!({"username": "admin", "password": format!("wrong{i}")}))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN).await;
    }
    let mut ok = cml.clone();
    ok.login(ADMIN).await;
    assert_eq!(f.worker(0).unwrap().counters().logins, 1);
    f.shutdown().await;
}

#[tokio::test]
async fn login_with_a_missing_or_malformed_field_should_be_400() {
    let f = fleet(1, |_| {}).await;
    let cml = Cml::new(&f.endpoints()[0]);
    for body in [
        json!({"username": "admin"}),
        json!({"password": "admin"}),
        json!({"username": 5, "password": "admin"}),
        json!({"username": "", "password": "admin"}),
    ] {
        let resp = cml
            .http
            .post(cml.url("/authenticate"))
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::BAD_REQUEST).await;
    }
    let resp = cml
        .http
        .post(cml.url("/authenticate"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST).await;
    f.shutdown().await;
}

#[tokio::test]
async fn auth_extended_should_report_who_logged_in() {
    let f = fleet(1, |_| {}).await;
    let cml = Cml::new(&f.endpoints()[0]);
    let resp = cml
        .http
        .post(cml.url("/auth_extended"))
        .json(&json!({"username": "student", "password": "student"}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], STUDENT_USER_ID.to_string());
    assert_eq!(body["admin"], false);
    assert_eq!(body["username"], "student");
    assert!(body["error"].is_null());
    let mut as_student = cml.clone();
    as_student.token = Some(body["token"].as_str().unwrap().to_owned());
    assert_eq!(as_student.get("/authok").await.status(), StatusCode::OK);
    f.shutdown().await;
}

#[tokio::test]
async fn logout_should_revoke_one_token_or_every_session() {
    let f = fleet(1, |_| {}).await;
    let mut a = Cml::new(&f.endpoints()[0]);
    let mut b = a.clone();
    a.login(ADMIN).await;
    b.login(ADMIN).await;
    let resp = a.delete("/logout").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!(true));
    expect_error(a.get("/authok").await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        b.get("/authok").await.status(),
        StatusCode::OK,
        "other sessions survive"
    );

    let mut c = a.clone();
    c.login(ADMIN).await;
    let mut s = a.clone();
    s.login(STUDENT).await;
    let resp = b.delete("/logout?clear_all_sessions=true").await;
    assert_eq!(resp.status(), StatusCode::OK);
    expect_error(b.get("/authok").await, StatusCode::UNAUTHORIZED).await;
    expect_error(c.get("/authok").await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        s.get("/authok").await.status(),
        StatusCode::OK,
        "other users survive"
    );
    expect_error(
        s.delete("/logout?clear_all_sessions=maybe").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    f.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn tokens_should_expire_after_the_configured_lifetime() {
    let f = fleet(1, |c| c.token_ttl = Duration::from_secs(60)).await;
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(ADMIN).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(cml.get("/authok").await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(31)).await;
    expect_error(cml.get("/authok").await, StatusCode::UNAUTHORIZED).await;
    cml.login(ADMIN).await;
    assert_eq!(cml.get("/authok").await.status(), StatusCode::OK);
    f.shutdown().await;
}

#[tokio::test]
async fn non_admins_should_get_403_on_admin_endpoints() {
    let f = fleet(1, |_| {}).await;
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(STUDENT).await;
    for path in ["/licensing", "/telemetry", "/system/compute_hosts"] {
        expect_error(cml.get(path).await, StatusCode::FORBIDDEN).await;
    }
    let resp = cml
        .request(Method::POST, "/licensing/registration")
        .json(&json!({"token": "abc"}))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN).await;
    expect_error(
        cml.delete("/licensing/deregistration").await,
        StatusCode::FORBIDDEN,
    )
    .await;
    // But they see the health page (with the admin-only details nulled) and themselves.
    let health = cml.get_json("/system_health").await;
    assert!(health["is_licensed"].is_null());
    let users = cml.get_json("/users").await;
    assert_eq!(users.as_array().unwrap().len(), 1);
    f.shutdown().await;
}

#[tokio::test]
async fn expire_tokens_now_and_fail_next_401_should_force_a_relogin() {
    let f = fleet(1, |_| {}).await;
    let w = f.worker(0).unwrap();
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(ADMIN).await;
    w.expire_tokens_now();
    expect_error(cml.get("/authok").await, StatusCode::UNAUTHORIZED).await;
    cml.login(ADMIN).await;
    assert_eq!(cml.get("/authok").await.status(), StatusCode::OK);

    w.fail_next_requests_with_401(2);
    // Open endpoints do not use up the 401s.
    assert_eq!(
        cml.get("/system_information").await.status(),
        StatusCode::OK
    );
    expect_error(cml.get("/system_stats").await, StatusCode::UNAUTHORIZED).await;
    expect_error(cml.get("/system_stats").await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(cml.get("/system_stats").await.status(), StatusCode::OK);
    f.shutdown().await;
}
