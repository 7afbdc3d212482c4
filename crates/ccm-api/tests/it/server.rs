//! The listener over raw sockets: half-sent headers and trickled bodies time out, idle
//! kept-alive connections close, connections over the maximum are closed at once, shutdown
//! ends within its deadline with stalled connections open, and HTTPS with `__Host-` cookies.
//! Timeouts are configured short; each test waits for the close itself (a read that ends),
//! never for a fixed time.

use std::net::SocketAddr;
use std::time::Duration;

use ccm_api::{ApiState, ServerConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::support::{MANAGER, TestApi, VIEWER, http};

/// The API served with a `[server]` section, and the switch that shuts it down.
struct Served {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn serve(api: &TestApi, server: ServerConfig) -> Served {
    let state = ApiState::with_server(
        api.fleet.engine.clone(),
        server,
        api.api_config.clone(),
        api.auth_config.clone(),
        None,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(ccm_api::serve(listener, state, async move {
        let _ = rx.await;
    }));
    Served {
        addr,
        stop: Some(tx),
        task,
    }
}

fn server(f: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
    let mut s = ServerConfig::default();
    f(&mut s);
    s
}

/// Reads until the peer closes (EOF or reset); what was read. Bounded: panics after `limit`.
async fn until_closed(s: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .expect("the server did not close the connection in time");
    got
}

/// Reads one HTTP/1.1 response with a `content-length` (no close); its text.
async fn read_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("a response")
            .unwrap();
        assert!(n > 0, "closed before a full response");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

const HALF_HEADER: &[u8] = b"GET /api/v1/workers HTTP/1.1\r\nHost: ccm\r\nAccept: */";

#[tokio::test]
async fn fifty_half_sent_headers_should_all_be_closed_after_the_header_read_timeout() {
    let api = TestApi::start(121, 1).await;
    let timeout = Duration::from_millis(400);
    let s = serve(
        &api,
        server(|s| {
            s.header_read_timeout = timeout;
            s.keep_alive_timeout = timeout;
        }),
    )
    .await;
    let mut conns = Vec::new();
    for _ in 0..50 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(HALF_HEADER).await.unwrap();
        conns.push((c, Instant::now()));
    }
    let closing = conns.into_iter().map(|(mut c, sent)| async move {
        until_closed(&mut c, Duration::from_secs(20)).await;
        sent.elapsed()
    });
    let lived = futures::future::join_all(closing).await;
    assert_eq!(lived.len(), 50, "every connection was closed");
    for l in &lived {
        assert!(
            *l >= timeout - Duration::from_millis(50),
            "closed too early: {l:?}"
        );
    }
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn a_body_slower_than_its_timeout_should_be_answered_408() {
    let api = TestApi::start(122, 1).await;
    let s = serve(
        &api,
        server(|s| s.body_read_timeout = Duration::from_millis(300)),
    )
    .await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(
        b"POST /api/v1/session HTTP/1.1\r\nHost: ccm\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"tok",
    )
    .await
    .unwrap();
    let res = read_response(&mut c).await;
    assert!(res.starts_with("HTTP/1.1 408"), "{res}");
    assert!(res.contains("body_read_timeout"), "{res}");
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_should_be_closed_after_the_keep_alive_timeout() {
    let api = TestApi::start(123, 1).await;
    let keep_alive = Duration::from_millis(300);
    let s = serve(
        &api,
        server(|s| {
            s.keep_alive_timeout = keep_alive;
            s.header_read_timeout = Duration::from_secs(30);
        }),
    )
    .await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    for _ in 0..2 {
        // Kept alive between requests that come in time.
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: ccm\r\n\r\n")
            .await
            .unwrap();
        let res = read_response(&mut c).await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    }
    let answered = Instant::now();
    let rest = until_closed(&mut c, Duration::from_secs(10)).await;
    assert!(rest.is_empty());
    let idle = answered.elapsed();
    assert!(
        idle >= keep_alive - Duration::from_millis(50),
        "closed too early: {idle:?}"
    );
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_maximum_should_be_closed_at_once() {
    let api = TestApi::start(124, 1).await;
    let s = serve(
        &api,
        server(|s| {
            s.max_connections = 5;
            s.header_read_timeout = Duration::from_secs(60);
        }),
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(HALF_HEADER).await.unwrap();
        held.push(c);
    }
    // The sixth: closed at once (long before the 60 s header timeout), with a 503 over
    // plain HTTP.
    for _ in 0..3 {
        let mut extra = TcpStream::connect(s.addr).await.unwrap();
        let got = until_closed(&mut extra, Duration::from_secs(10)).await;
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 503"),
            "{text}"
        );
    }
    // The five are still served.
    let c = &mut held[0];
    c.write_all(b"*\r\n\r\n").await.unwrap();
    let res = read_response(c).await;
    assert!(res.starts_with("HTTP/1.1 401"), "{res}");
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn shutdown_should_end_within_its_deadline_with_stalled_connections_open() {
    let api = TestApi::start(125, 1).await;
    let deadline = Duration::from_millis(500);
    let mut s = serve(
        &api,
        server(|s| {
            s.shutdown_timeout = deadline;
            s.header_read_timeout = Duration::from_secs(60);
            s.keep_alive_timeout = Duration::from_secs(60);
        }),
    )
    .await;
    let mut stalled = Vec::new();
    for _ in 0..10 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(HALF_HEADER).await.unwrap();
        stalled.push(c);
    }
    // A request in flight that will not finish: its body never completes (30 s body timeout).
    // `Expect: 100-continue` makes the server say when the handler starts reading the body.
    let mut in_flight = TcpStream::connect(s.addr).await.unwrap();
    in_flight
        .write_all(
            b"POST /api/v1/session HTTP/1.1\r\nHost: ccm\r\nContent-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), in_flight.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 100"), "{:?}", &buf[..n]);
    in_flight.write_all(b"{").await.unwrap();
    // An idle kept-alive connection and an event stream.
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: ccm\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut idle).await;
    let mut stream = http()
        .get(format!("http://{}/api/v1/events", s.addr))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    stream.chunk().await.unwrap();

    let asked = Instant::now();
    s.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), &mut s.task)
        .await
        .expect("serve returned")
        .unwrap()
        .unwrap();
    let took = asked.elapsed();
    assert!(took < deadline + Duration::from_secs(2), "{took:?}");
    assert!(
        took >= deadline,
        "the request in flight had until the deadline: {took:?}"
    );
    for mut c in stalled {
        until_closed(&mut c, Duration::from_secs(2)).await;
    }
    until_closed(&mut idle, Duration::from_secs(2)).await;
    until_closed(&mut in_flight, Duration::from_secs(2)).await;
    let end = async { while let Ok(Some(_)) = stream.chunk().await {} };
    tokio::time::timeout(Duration::from_secs(2), end)
        .await
        .expect("the event stream ended");
    assert!(
        TcpStream::connect(s.addr).await.is_err(),
        "no longer accepting"
    );
    api.fleet.shutdown().await;
}

/// A self-signed certificate for 127.0.0.1 in a temporary directory: (dir, cert PEM).
fn tls_files() -> (tempfile::TempDir, ServerConfig, String) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("cert.pem");
    let k = dir.path().join("key.pem");
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let cfg = ServerConfig {
        tls_cert: Some(c),
        tls_key: Some(k),
        ..ServerConfig::default()
    };
    (dir, cfg, cert.pem())
}

#[tokio::test]
async fn https_on_the_listener_should_serve_with_secure_host_prefixed_cookies() {
    let api = TestApi::start(126, 1).await;
    let (_dir, cfg, ca) = tls_files();
    let s = serve(&api, cfg).await;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let base = format!("https://{}", s.addr);
    let res = client
        .post(format!("{base}/api/v1/session"))
        .json(&json!({"token": MANAGER}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-ccm_session="), "{cookie}");
    assert!(
        cookie.contains("; Path=/;") && cookie.ends_with("; Secure"),
        "{cookie}"
    );
    assert!(!cookie.to_ascii_lowercase().contains("domain="), "{cookie}");
    let csrf = res.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let pair = cookie.split(';').next().unwrap().to_owned();
    let me: Value = client
        .get(format!("{base}/api/v1/session"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"], "token:manager");
    // The unprefixed name is not the session cookie here.
    let unprefixed = pair.replacen("__Host-", "", 1);
    let res = client
        .get(format!("{base}/api/v1/session"))
        .header("cookie", &unprefixed)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let out = client
        .delete(format!("{base}/api/v1/session"))
        .header("cookie", &pair)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let cleared = out.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("__Host-ccm_session=;") && cleared.ends_with("; Secure"),
        "{cleared}"
    );
    // Plain HTTP on the TLS port gets no answer.
    let plain = http()
        .get(format!("http://{}/healthz", s.addr))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn a_tls_handshake_that_never_comes_should_be_cut_at_the_header_read_timeout() {
    let api = TestApi::start(127, 1).await;
    let (_dir, mut cfg, _) = tls_files();
    cfg.header_read_timeout = Duration::from_millis(300);
    cfg.keep_alive_timeout = Duration::from_millis(300);
    let s = serve(&api, cfg).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(&[0x16, 0x03, 0x01]).await.unwrap(); // the start of a ClientHello
    let sent = Instant::now();
    until_closed(&mut c, Duration::from_secs(10)).await;
    assert!(sent.elapsed() >= Duration::from_millis(250));
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn cookie_secure_never_with_https_should_be_a_configuration_error() {
    let api = TestApi::start(128, 1).await;
    let (_dir, cfg, _) = tls_files();
    let mut auth = api.auth_config.clone();
    auth.cookie_secure = ccm_api::CookieSecure::Never;
    let err = ApiState::with_server(
        api.fleet.engine.clone(),
        cfg,
        api.api_config.clone(),
        auth,
        None,
    )
    .unwrap_err();
    assert_eq!(err.key, "auth.cookie_secure");
    api.fleet.shutdown().await;
}
