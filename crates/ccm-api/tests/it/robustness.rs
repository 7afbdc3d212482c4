use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use ccm_api::routes::ROUTES;
use http::{Method, Request, StatusCode, header};
use rand::{Rng, SeedableRng};
use serde_json::json;
use tower::ServiceExt as _;

use crate::support::{ADMIN, MANAGER, TestApi, VIEWER, http};

/// Sends a request; never reads an event stream's endless body.
async fn status(api: &TestApi, req: Request<Body>) -> (StatusCode, String) {
    let res = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        api.router.clone().oneshot(req),
    )
    .await
    .expect("no answer in 30 s")
    .unwrap();
    let s = res.status();
    let streaming = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == "text/event-stream");
    if streaming {
        return (s, String::new());
    }
    let b = axum::body::to_bytes(res.into_body(), 64 << 20)
        .await
        .unwrap();
    (s, String::from_utf8_lossy(&b).into_owned())
}

fn acceptable(s: StatusCode) -> bool {
    // 5xx only for dependencies (bad gateway, unavailable, timeout) or unsupported features.
    !s.is_server_error() || [501, 502, 503, 504].contains(&s.as_u16())
}

#[tokio::test]
async fn garbage_paths_queries_headers_and_bodies_should_never_yield_500() {
    let api = TestApi::start(111, 1).await;
    let id = api.workers().await[0].id.to_string();
    let long = "a".repeat(20_000);
    let paths = [
        "/api/v1/workers/%00".to_owned(),
        "/api/v1/workers/..%2F..%2Fetc%2Fpasswd".to_owned(),
        "/api/v1/workers/../../etc/passwd".to_owned(),
        format!("/api/v1/workers/{long}"),
        format!("/api/v1/workers/{id}/labs/%ff%fe/start"),
        format!("/api/v1/workers/{id}/labs/{long}/topology"),
        "/api/v1/workers/😀".to_owned(),
        "/api/v1/workers?limit=99999999999999999999999".to_owned(),
        "/api/v1/workers?limit=-1&offset=-5".to_owned(),
        "/api/v1/workers?state=%00&region=%ff".to_owned(),
        format!("/api/v1/workers?q={long}"),
        format!("/api/v1/workers?{}", "a=1&".repeat(3000)),
        "/api/v1/workers?sort[]=x&order[x]=y".to_owned(),
        format!("/api/v1/workers/{id}/metrics?since=99999999999999999999h"),
        format!("/api/v1/workers/{id}/metrics?since=1970-01-01T00:00:00Z"),
        format!("/api/v1/workers/{id}/events?before=18446744073709551615"),
        "/api/v1/events?worker=%00&type=%ff".to_owned(),
        "/api/v1/events?last_event_id=18446744073709551616".to_owned(),
        "/api/v1/system/jobs/%2e%2e/run".to_owned(),
        "/api/docs/%2e%2e%2fCargo.toml".to_owned(),
        "//api//v1//workers".to_owned(),
    ];
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    for path in &paths {
        for method in &methods {
            let req = Request::builder()
                .method(method.clone())
                .uri(path.as_str())
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
                .body(Body::empty());
            let Ok(req) = req else { continue };
            let (s, text) = status(&api, req).await;
            assert!(
                acceptable(s),
                "{method} {}: {s} {text}",
                &path[..path.len().min(80)]
            );
        }
    }

    let nasty_headers: Vec<(&str, String)> = vec![
        ("authorization", format!("Bearer {}", "x".repeat(20_000))),
        ("authorization", "Bearer".to_owned()),
        ("authorization", "Bearer a.b.c".to_owned()),
        ("authorization", "Basic Zm9vOmJhcg==".to_owned()),
        ("cookie", "ccm_session=; ccm_session=x".to_owned()),
        ("cookie", format!("ccm_session={}", "y".repeat(5000))),
        ("last-event-id", "-1".to_owned()),
        ("if-match", "\"\u{7f}\"".to_owned()),
        ("content-type", "application/json; charset=\"".to_owned()),
    ];
    for (name, value) in &nasty_headers {
        for (method, path) in [
            (Method::GET, "/api/v1/workers"),
            (Method::PATCH, "/api/v1/settings"),
        ] {
            let Ok(req) = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(*name, value.as_str())
                .body(Body::from("{}"))
            else {
                continue;
            };
            let (s, text) = status(&api, req).await;
            assert!(acceptable(s), "{name}: {s} {text}");
        }
    }

    // Bodies: a fixed corpus plus seeded random bytes, at every route that takes one.
    let mut corpus: Vec<Vec<u8>> =
        vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"string\"".to_vec(),
        b"1e999999".to_vec(),
        b"{\"name\": 18446744073709551616}".to_vec(),
        "[".repeat(100_000).into_bytes(),
        format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000)).into_bytes(),
        vec![0xff, 0xfe, 0xfd],
        b"{\"name\": \"\\ud800\"}".to_vec(),
        b"{\"token\": {\"$ne\": null}}".to_vec(),
        json!({"topology": "nodes: [", "title": "\u{0}"}).to_string().into_bytes(),
        json!({"set": {"k": "v".repeat(10_000)}}).to_string().into_bytes(),
        json!({"idle": {"timeout": "-5s"}, "polling": {"cml_interval": "1000000000000000000000s"}})
            .to_string()
            .into_bytes(),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x00cc_0a91);
    for _ in 0..30 {
        let len = rng.random_range(0..512);
        corpus.push((0..len).map(|_| rng.random::<u8>()).collect());
    }
    let worker = id.clone();
    for route in ROUTES.iter().filter(|r| r.method != Method::GET) {
        let path = route
            .path
            .replace("{id}", &worker)
            .replace("{lab_id}", "lab-1")
            .replace("{job}", "ec2_sync")
            .replace("{file}", "x");
        for body in &corpus {
            for content_type in [
                "application/json",
                "application/yaml",
                "text/plain; charset=utf-8",
            ] {
                let req = Request::builder()
                    .method(route.method.clone())
                    .uri(&path)
                    .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
                    .header(header::CONTENT_TYPE, content_type)
                    .body(Body::from(body.clone()))
                    .unwrap();
                let (s, text) = status(&api, req).await;
                assert!(
                    acceptable(s),
                    "{} {path} [{content_type}]: {s} {text}",
                    route.method
                );
            }
        }
    }
    // After all that, the server still works.
    api.get("/api/v1/workers", VIEWER).await.ok(200);
    api.fleet.shutdown().await;
}

/// A log sink for the test's tracing subscriber.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_should_appear_in_responses_or_logs() {
    let sink = Sink::default();
    let writer = sink.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let licence = "SecretLicenceToken42";
    let guess = "wrong-secret-guess-123";
    let client_secret = "oidc-client-secret-xyz";
    let api = TestApi::start_with(112, 1, |_, _, auth| {
        let mut o = ccm_api::OidcConfig::new("http://127.0.0.1:9/realms/x", "ccm");
        o.client_secret = Some(ccm_cml::Secret::new(client_secret));
        auth.oidc = Some(o);
    })
    .await;
    api.until_ready().await;
    let addr = api.serve().await;
    let base = format!("http://{addr}");
    let client = http();
    let id = api.workers().await[0].id;
    let mut bodies = Vec::new();
    let mut headers = Vec::new();

    let record = |res: reqwest::Response| async move {
        let h = format!("{:?}", res.headers());
        let b = res.text().await.unwrap_or_default();
        (h, b)
    };
    for token in [guess, MANAGER] {
        let (h, b) = record(
            client
                .post(format!("{base}/api/v1/session"))
                .json(&json!({"token": token}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        headers.push(h);
        bodies.push(b);
    }
    for token in [guess, ADMIN, "a.b.c"] {
        let (h, b) = record(
            client
                .get(format!("{base}/api/v1/workers"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        headers.push(h);
        bodies.push(b);
    }
    for token in [licence, "bad token with spaces"] {
        let (h, b) = record(
            client
                .post(format!("{base}/api/v1/workers/{id}/licence"))
                .bearer_auth(MANAGER)
                .json(&json!({"token": token}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        headers.push(h);
        bodies.push(b);
    }
    let (h, b) = record(
        client
            .get(format!("{base}/api/v1/workers/{id}/events?limit=500"))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap(),
    )
    .await;
    headers.push(h);
    bodies.push(b);
    let (_, doc) = record(
        client
            .get(format!("{base}/api/openapi.json"))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap(),
    )
    .await;
    bodies.push(doc);
    // Let the licence poller run and log.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let logs = String::from_utf8_lossy(&sink.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("sign-in refused"),
        "the test must capture the API's logs"
    );
    let answers = format!("{headers:?}{bodies:?}");
    for secret in [ADMIN, MANAGER, VIEWER, guess, licence, client_secret] {
        assert!(!logs.contains(secret), "{secret} in the logs");
        assert!(!answers.contains(secret), "{secret} in a response");
    }
    let state_debug = format!("{:?}", api.state);
    assert!(!state_debug.contains(client_secret));
    api.fleet.shutdown().await;
}
