use std::time::Duration;

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
    // Even the right token waits now, as a sign-in or as a bearer token: a blocked address
    // could otherwise go on guessing through any route.
    assert_eq!(sign_in(MANAGER).await.unwrap().status(), 429);
    let blocked = client
        .get(format!("http://{addr}/api/v1/workers"))
        .bearer_auth(MANAGER)
        .send()
        .await
        .unwrap();
    assert_eq!(blocked.status(), 429);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn failed_bearer_tokens_on_any_route_should_count_against_the_sign_in_limit() {
    let api = TestApi::start_with(85, 1, |_, _, auth| {
        auth.sign_in_limit = SignInLimit {
            burst: 3,
            per_minute: 1,
        }
    })
    .await;
    let addr = api.serve().await;
    let client = http();
    let id = api.workers().await[0].id;
    let routes = [
        format!("http://{addr}/api/v1/workers"),
        format!("http://{addr}/api/v1/workers/{id}"),
        format!("http://{addr}/api/v1/system/health"),
    ];
    for url in &routes {
        let res = client.get(url).bearer_auth("guess").send().await.unwrap();
        assert_eq!(res.status(), 401, "{url}");
    }
    let res = client
        .get(&routes[0])
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    // The same limit as the sign-in: it is refused too, right token or not.
    let res = client
        .post(format!("http://{addr}/api/v1/session"))
        .json(&json!({"token": MANAGER}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    // A wrong cookie is not a guess at a token: nobody is blocked for an expired session.
    let api2 = TestApi::start_with(86, 1, |_, _, auth| {
        auth.sign_in_limit = SignInLimit {
            burst: 1,
            per_minute: 1,
        }
    })
    .await;
    let addr2 = api2.serve().await;
    for _ in 0..5 {
        let res = client
            .get(format!("http://{addr2}/api/v1/workers"))
            .header("cookie", "ccm_session=expired-or-signed-out")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    api.fleet.shutdown().await;
    api2.fleet.shutdown().await;
}

#[tokio::test]
async fn behind_a_proxy_the_limit_should_key_on_the_right_most_untrusted_forwarded_hop() {
    let api = TestApi::start_with(87, 1, |_, api, auth| {
        api.trust_forwarded_headers = true;
        auth.sign_in_limit = SignInLimit {
            burst: 2,
            per_minute: 1,
        }
    })
    .await;
    let addr = api.serve().await;
    let client = http();
    // The test connects from 127.0.0.1: the default trusted proxy. The attacker varies the
    // left-most hop it writes itself; the proxy appended its real address on the right.
    let sign_in = |xff: String| {
        client
            .post(format!("http://{addr}/api/v1/session"))
            .header("x-forwarded-for", xff)
            .json(&json!({"token": "guess"}))
            .send()
    };
    for i in 0..2 {
        let res = sign_in(format!("10.9.9.{i}, 203.0.113.7")).await.unwrap();
        assert_eq!(res.status(), 401);
    }
    let res = sign_in("10.9.9.77, 203.0.113.7".into()).await.unwrap();
    assert_eq!(
        res.status(),
        429,
        "a fresh left-most hop does not reset the limit"
    );
    // Another real client behind the same proxy is not affected.
    let res = sign_in("203.0.113.8".into()).await.unwrap();
    assert_eq!(res.status(), 401);
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
    restarted_with(
        api,
        ccm_api::AuthConfig::default().with_token("manager", ccm_api::Role::Manager, MANAGER),
    )
}

/// As [`restarted`], with another `[auth]` configuration.
fn restarted_with(api: &TestApi, auth: ccm_api::AuthConfig) -> axum::Router {
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

#[tokio::test]
async fn a_session_should_end_at_the_next_start_when_its_token_is_removed_or_lowered() {
    let api = TestApi::start(88, 1).await;
    let first = restarted(&api);
    let mut cookies = Vec::new();
    for _ in 0..3 {
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
        cookies.push(cookie.unwrap().split(';').next().unwrap().to_owned());
    }
    let me = |router: axum::Router, cookie: String| async move {
        send_to(
            &router,
            http::Method::GET,
            "/api/v1/session",
            Some(&cookie),
            None,
            None,
        )
        .await
        .0
    };
    use ccm_api::{AuthConfig, Role};
    // Lowered to viewer: the manager session ends.
    let lowered = AuthConfig::default().with_token("manager", Role::Viewer, MANAGER);
    assert_eq!(
        me(restarted_with(&api, lowered), cookies[0].clone()).await,
        401
    );
    // Removed: ends.
    let removed = AuthConfig::default().with_token("other", Role::Admin, "other-token");
    assert_eq!(
        me(restarted_with(&api, removed), cookies[1].clone()).await,
        401
    );
    // Unchanged: lives on.
    assert_eq!(me(restarted(&api), cookies[2].clone()).await, 200);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn an_event_stream_should_end_when_its_session_signs_out() {
    let api = TestApi::start(89, 1).await;
    let addr = api.serve().await;
    let base = format!("http://{addr}");
    let client = http();
    let res = client
        .post(format!("{base}/api/v1/session"))
        .json(&json!({"token": VIEWER}))
        .send()
        .await
        .unwrap();
    let pair = res.headers()["set-cookie"].to_str().unwrap();
    let pair = pair.split(';').next().unwrap().to_owned();
    let csrf = res.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut stream = client
        .get(format!("{base}/api/v1/events"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    // Wait until it streams (the connect comment and the snapshot).
    let mut text = String::new();
    while !text.contains("ccm.worker.snapshot") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("the stream opened")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Another session of the same user keeps its stream.
    let res = client
        .post(format!("{base}/api/v1/session"))
        .json(&json!({"token": VIEWER}))
        .send()
        .await
        .unwrap();
    let other = res.headers()["set-cookie"].to_str().unwrap();
    let other = other.split(';').next().unwrap().to_owned();
    let mut other_stream = client
        .get(format!("{base}/api/v1/events?snapshot=false"))
        .header("cookie", &other)
        .send()
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), other_stream.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("connected"));

    let out = client
        .delete(format!("{base}/api/v1/session"))
        .header("cookie", &pair)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let rest = async {
        let mut rest = String::new();
        while let Some(chunk) = stream.chunk().await.unwrap() {
            rest.push_str(&String::from_utf8_lossy(&chunk));
        }
        rest
    };
    let rest = tokio::time::timeout(Duration::from_secs(10), rest)
        .await
        .expect("the stream ends promptly after the sign-out");
    assert!(rest.contains("event: ccm.session.ended"), "{rest}");
    assert!(rest.contains("\"reason\":\"signed_out\""), "{rest}");
    assert!(
        rest.trim_end().ends_with('}'),
        "the end event is the last frame: {rest}"
    );
    // The other session is still signed in.
    let me = client
        .get(format!("{base}/api/v1/session"))
        .header("cookie", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    drop(other_stream);
    api.fleet.shutdown().await;
}
