use ccm_api::SignInLimit;
use serde_json::{Value, json};

use crate::support::{MANAGER, TestApi, VIEWER, http};

#[tokio::test]
async fn a_cookie_session_should_need_the_csrf_token_to_change_anything() {
    let api = TestApi::start(81, 1).await;
    let addr = api.serve().await;
    let base = format!("http://{addr}");
    let client = http();
    let id = api.workers().await[0].id;

    let res = client
        .post(format!("{base}/api/v1/session"))
        .json(&json!({"token": MANAGER}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("ccm_session="), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP without public_url: {cookie}"
    );
    assert!(!cookie.contains(MANAGER));
    let session: Value = res.json().await.unwrap();
    assert_eq!(session["user"], "token:manager");
    assert_eq!(session["role"], "manager");
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();
    let pair = cookie.split(';').next().unwrap().to_owned();

    // Reads work with the cookie alone; GET /session gives the CSRF token again.
    let me: Value = client
        .get(format!("{base}/api/v1/session"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["csrf_token"], csrf);
    let list = client
        .get(format!("{base}/api/v1/workers"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);

    // A state change without the header, or with a wrong one: 403.
    let idle = format!("{base}/api/v1/workers/{id}/idle-detection");
    for header in [None, Some("wrong"), Some("")] {
        let mut req = client
            .put(&idle)
            .header("cookie", &pair)
            .json(&json!({"enabled": false}));
        if let Some(h) = header {
            req = req.header("x-csrf-token", h);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 403, "{header:?}");
    }
    let ok = client
        .put(&idle)
        .header("cookie", &pair)
        .header("x-csrf-token", &csrf)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let w: Value = ok.json().await.unwrap();
    assert_eq!(w["monitoring"]["idle_detection"], false);
    assert_eq!(w["updated_by"], "token:manager");
    // A bearer request needs no CSRF token.
    let bearer = client
        .put(&idle)
        .bearer_auth(MANAGER)
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);

    // Signing out needs the CSRF token too, then the cookie is dead.
    let out = client
        .delete(format!("{base}/api/v1/session"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 403);
    let out = client
        .delete(format!("{base}/api/v1/session"))
        .header("cookie", &pair)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = client
        .get(format!("{base}/api/v1/workers"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    assert_eq!(api.state.sessions(), 0);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn a_viewer_session_should_not_operate_and_cookies_should_be_secure_behind_https() {
    let api = TestApi::start_with(82, 1, |_, cfg, _| {
        cfg.public_url = Some("https://ccm.example.com".into())
    })
    .await;
    let addr = api.serve().await;
    let client = http();
    let res = client
        .post(format!("http://{addr}/api/v1/session"))
        .json(&json!({"token": VIEWER}))
        .send()
        .await
        .unwrap();
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    let session: Value = res.json().await.unwrap();
    let pair = cookie.split(';').next().unwrap().to_owned();
    let id = api.workers().await[0].id;
    let res = client
        .post(format!("http://{addr}/api/v1/workers/{id}/refresh"))
        .header("cookie", &pair)
        .header("x-csrf-token", session["csrf_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn failed_sign_ins_should_be_rate_limited_per_address() {
    let api = TestApi::start_with(83, 1, |_, _, auth| {
        auth.sign_in_limit = SignInLimit {
            burst: 3,
            per_minute: 1,
        }
    })
    .await;
    let addr = api.serve().await;
    let client = http();
    let sign_in = |token: &str| {
        client
            .post(format!("http://{addr}/api/v1/session"))
            .json(&json!({"token": token}))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(sign_in("guess").await.unwrap().status(), 401);
    }
    let limited = sign_in("guess").await.unwrap();
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let p: Value = limited.json().await.unwrap();
    assert_eq!(p["status"], 429);
    // Even the right token waits now.
    assert_eq!(sign_in(MANAGER).await.unwrap().status(), 429);
    // Bearer requests are not sign-ins and are not blocked.
    let ok = client
        .get(format!("http://{addr}/api/v1/workers"))
        .bearer_auth(MANAGER)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    api.fleet.shutdown().await;
}

/// Sends one request through a router; status, `Set-Cookie` and JSON body.
async fn send_to(
    router: &axum::Router,
    method: http::Method,
    path: &str,
    cookie: Option<&str>,
    csrf: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    use tower::ServiceExt as _;
    let mut req = http::Request::builder().method(method).uri(path);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if let Some(t) = csrf {
        req = req.header("x-csrf-token", t);
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(axum::body::Body::from(b.to_string())),
        None => req.body(axum::body::Body::empty()),
    }
    .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let set_cookie = res
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, set_cookie, json)
}

/// The API as after a restart of ccm: a new state over the same engine and database, with
/// no session in memory.
fn restarted(api: &TestApi) -> axum::Router {
    let auth =
        ccm_api::AuthConfig::default().with_token("manager", ccm_api::Role::Manager, MANAGER);
    let state = ccm_api::ApiState::new(
        api.fleet.engine.clone(),
        ccm_api::ApiConfig::default(),
        auth,
        None,
    )
    .unwrap();
    ccm_api::router(state)
}

#[tokio::test]
async fn a_session_should_survive_a_restart_and_end_everywhere_when_signed_out() {
    let api = TestApi::start(84, 1).await;
    let first = restarted(&api);
    let (status, cookie, session) = send_to(
        &first,
        http::Method::POST,
        "/api/v1/session",
        None,
        None,
        Some(json!({"token": MANAGER})),
    )
    .await;
    assert_eq!(status, 200, "{session}");
    let pair = cookie.unwrap().split(';').next().unwrap().to_owned();
    let csrf = session["csrf_token"].as_str().unwrap().to_owned();

    // After a restart the same cookie still signs in, with the same CSRF token.
    let second = restarted(&api);
    let (status, _, me) = send_to(
        &second,
        http::Method::GET,
        "/api/v1/session",
        Some(&pair),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"], "token:manager");
    assert_eq!(me["csrf_token"], csrf.as_str());

    // Signed out there, it is gone for the next start too.
    let (status, _, _) = send_to(
        &second,
        http::Method::DELETE,
        "/api/v1/session",
        Some(&pair),
        Some(&csrf),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let third = restarted(&api);
    let (status, _, _) = send_to(
        &third,
        http::Method::GET,
        "/api/v1/session",
        Some(&pair),
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
}
