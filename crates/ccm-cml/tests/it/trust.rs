//! What the client trusts: it never follows a redirect (a redirected login would re-send the
//! password), a pinned certificate fingerprint is the only certificate accepted, and settings
//! that expose the password are warned about once, at start.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ccm_cml::{CertFingerprint, CmlClient, CmlConfig, CmlError, TlsConfig};
use ccm_domain::service::{CmlCall, ReasonCode};
use ccm_resilience::{Classify, ErrorClass, Resilience};
use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

use crate::support::{client, eventually, fleet, resilience_config, target};

/// A listener on `ip` that counts the connections it accepts and closes each at once.
async fn counting_listener(ip: &str) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (port, count)
}

#[tokio::test]
async fn a_redirect_should_never_be_followed_and_should_name_its_sanitised_location() {
    let (port, hits) = counting_listener("127.9.9.9").await;
    let elsewhere = format!("http://127.9.9.9:{port}/api/v0/authenticate");
    // The location carries user info, a query and a fragment: none may reach the error.
    let location = format!("http://admin:leaked@127.9.9.9:{port}/api/v0/authenticate?token=abc#x");
    let f = fleet(40, 1, |cfg| {
        cfg.faults = format!(
            "0/authenticate+auth_extended:redirect=307:{location};\
             0/system_information:redirect=302:/elsewhere?session=42"
        )
        .parse()
        .unwrap();
    })
    .await;
    let w = f.worker(0).unwrap();
    let c = client();
    let t = target(&c, &f, 0);

    // A login answered with 307: the password is not re-sent anywhere.
    let err = c.auth_extended(&t).await.unwrap_err();
    match &err {
        CmlError::Redirect {
            status: 307,
            location: Some(l),
            ..
        } => assert_eq!(l, &elsewhere),
        other => panic!("expected a redirect error, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(&elsewhere), "{text}");
    for leak in ["leaked", "admin:", "token=abc", "#x"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    assert_eq!(err.class(), ErrorClass::Failure);
    // An authenticated call logs in first and fails the same way.
    let err = c.system_health(&t).await.unwrap_err();
    assert!(
        matches!(err, CmlError::Redirect { status: 307, .. }),
        "{err:?}"
    );

    // An idempotent GET answered with a relative 302: not retried, not followed.
    let err = c.system_information(&t).await.unwrap_err();
    match &err {
        CmlError::Redirect {
            status: 302,
            location: Some(l),
            ..
        } => assert_eq!(l, "/elsewhere"),
        other => panic!("expected a redirect error, got {other:?}"),
    }
    let reason = err.reason(CmlCall::SystemInformation);
    assert_eq!(
        (reason.code, reason.status),
        (ReasonCode::HttpStatus, Some(302))
    );
    assert!(reason.detail.unwrap().contains("/elsewhere"));
    let counts = w.counters().by_endpoint;
    assert_eq!(counts.get("system_information"), Some(&1), "{counts:?}");
    assert!(!counts.contains_key("system_health"), "{counts:?}");

    // The host the redirect named received nothing: each call above returned only after its
    // whole exchange, so a followed redirect would already have connected.
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // Control: a client with reqwest's default policy does follow the login redirect, and
    // the listener sees it — so the zero above is not a listener that cannot count.
    let naive = reqwest::Client::builder().no_proxy().build().unwrap();
    let _ = naive
        .post(format!("{}/api/v0/authenticate", f.endpoints()[0]))
        .json(&serde_json::json!({"username": "admin", "password": "admin"}))
        .send()
        .await;
    eventually(
        Duration::from_secs(5),
        "the naive client follows",
        || async { (hits.load(Ordering::SeqCst) > 0).then_some(()) },
    )
    .await;
    f.shutdown().await;
}

/// The fingerprint of the certificate the simulator serves at `url`, read over a connection
/// verified with the simulator's CA.
async fn served_fingerprint(url: &str, ca: &std::path::Path) -> CertFingerprint {
    let pem = std::fs::read(ca).unwrap();
    let certs = reqwest::Certificate::from_pem_bundle(&pem).unwrap();
    let http = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(certs)
        .tls_info(true)
        .build()
        .unwrap();
    let resp = http
        .get(format!("{url}/api/v0/system_information"))
        .send()
        .await
        .unwrap();
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    CertFingerprint::of(info.peer_certificate().unwrap())
}

#[tokio::test]
async fn a_pinned_fingerprint_should_connect_only_to_the_certificate_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let ca_out = ca.clone();
    let f = fleet(41, 1, move |cfg| {
        cfg.tls = true;
        cfg.ca_out = Some(ca_out);
    })
    .await;
    let url = f.endpoints()[0].clone();
    assert!(url.starts_with("https://"), "{url}");
    let right = served_fingerprint(&url, &ca).await;
    let wrong = CertFingerprint::of(b"another controller");
    let with = |pin: CertFingerprint| {
        let cfg = CmlConfig {
            tls: TlsConfig::Fingerprint(pin),
            ..CmlConfig::default()
        };
        CmlClient::new(&cfg, Resilience::builder(&resilience_config()).build()).unwrap()
    };

    // The right pin: no CA is configured, yet both the open and the logged-in calls work.
    let pinned = with(right);
    let t = pinned.target(&url).unwrap();
    assert!(pinned.system_information(&t).await.unwrap().ready);
    pinned.system_health(&t).await.unwrap();

    // The wrong pin: refused before anything is sent, naming both fingerprints.
    let before = f.worker(0).unwrap().counters().requests;
    let other = with(wrong);
    let t = other.target(&url).unwrap();
    let err = other.system_health(&t).await.unwrap_err();
    match &err {
        CmlError::CertificateMismatch { expected, seen, .. } => {
            assert_eq!((*expected, *seen), (wrong, right));
        }
        other => panic!("expected a certificate mismatch, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(&wrong.to_string()), "{text}");
    assert!(text.contains(&right.to_string()), "{text}");
    assert_eq!(err.class(), ErrorClass::Failure);
    let reason = err.reason(CmlCall::SystemHealth);
    assert_eq!(reason.code, ReasonCode::Tls);
    assert!(reason.detail.unwrap().contains(&right.to_string()));
    assert_eq!(f.worker(0).unwrap().counters().requests, before);
    f.shutdown().await;
}

/// Records the messages of the warnings `ccm_cml` logs.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let ours = meta.target() == "ccm_cml" || meta.target().starts_with("ccm_cml::");
        if *meta.level() == tracing::Level::WARN && ours {
            let mut m = Message(String::new());
            event.record(&mut m);
            self.0.lock().push(m.0);
        }
    }
}

#[tokio::test]
async fn insecure_tls_should_be_warned_about_once_at_start_not_per_worker() {
    let warnings = Warnings::default();
    // Thread-local: this current-thread test runtime runs the client and the fleet here.
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(warnings.clone()));
    let f = fleet(42, 3, |cfg| cfg.tls = true).await;
    let cfg = CmlConfig {
        tls: TlsConfig::Insecure,
        ..CmlConfig::default()
    };
    let c = CmlClient::new(&cfg, Resilience::builder(&resilience_config()).build()).unwrap();
    assert_eq!(warnings.0.lock().len(), 1, "{:?}", warnings.0.lock());
    for url in f.endpoints() {
        let t = c.target(&url).unwrap();
        for _ in 0..3 {
            c.system_health(&t).await.unwrap();
        }
    }
    let seen = warnings.0.lock().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].starts_with("cml.tls = \"insecure\""), "{seen:?}");

    // Plain http: one more warning naming the scheme, again once.
    let plain = fleet(43, 2, |_| {}).await;
    let cfg = CmlConfig {
        endpoint: ccm_domain::worker::EndpointPolicy {
            scheme: "http".into(),
            ..ccm_domain::worker::EndpointPolicy::default()
        },
        ..CmlConfig::default()
    };
    let c = CmlClient::new(&cfg, Resilience::builder(&resilience_config()).build()).unwrap();
    for url in plain.endpoints() {
        c.system_health(&c.target(&url).unwrap()).await.unwrap();
    }
    let seen = warnings.0.lock().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[1].starts_with("cml.endpoint.scheme = \"http\""),
        "{seen:?}"
    );
    f.shutdown().await;
    plain.shutdown().await;
}

/// A client over TLS to worker 0 of a fresh TLS fleet on `127.20.<net>.1` (CA file trust), no
/// idle connections kept (every call opens a connection), `sessions` workers' TLS sessions kept.
async fn tls_fleet_and_client(
    net: u8,
    tls: impl FnOnce(std::path::PathBuf) -> TlsConfig,
    sessions: usize,
) -> (
    ccm_cml_sim::SimFleet,
    CmlClient,
    ccm_cml::Target,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let ca_out = ca.clone();
    let f = fleet(net, 1, move |cfg| {
        cfg.tls = true;
        cfg.ca_out = Some(ca_out);
    })
    .await;
    let cfg = CmlConfig {
        tls: tls(ca),
        pool_max_idle_per_host: 0,
        tls_session_cache: sessions,
        ..CmlConfig::default()
    };
    let c = CmlClient::new(&cfg, Resilience::builder(&resilience_config()).build()).unwrap();
    let t = c.target(&f.endpoints()[0]).unwrap();
    (f, c, t, dir)
}

#[tokio::test]
async fn a_second_connection_to_a_tls_worker_should_resume_the_first_ones_session() {
    let (f, c, t, _dir) = tls_fleet_and_client(43, TlsConfig::CaFile, 16).await;
    let w = f.worker(0).unwrap();
    assert!(c.system_information(&t).await.unwrap().ready);
    let first = w.counters();
    assert_eq!((first.tls_handshakes, first.tls_resumed), (1, 0));
    // No idle connection is kept: the next call connects again, and resumes.
    assert!(c.system_information(&t).await.unwrap().ready);
    let second = w.counters();
    assert_eq!((second.connections, second.tls_handshakes), (2, 2));
    assert_eq!(second.tls_resumed, 1, "the second handshake resumed");
    // The login (one connection) resumes too.
    c.authenticate(&t).await.unwrap();
    let logged_in = w.counters();
    assert_eq!(logged_in.tls_resumed, logged_in.tls_handshakes - 1);
    // Two calls at once (each on its own connection): the store kept one ticket per worker,
    // so one of them resumes and the other pays a full handshake …
    let (a, b) = tokio::join!(c.system_health(&t), c.system_stats(&t));
    a.unwrap();
    b.unwrap();
    let first_pair = w.counters();
    assert_eq!(first_pair.tls_handshakes, logged_in.tls_handshakes + 2);
    assert_eq!(
        first_pair.tls_resumed,
        logged_in.tls_resumed + 1,
        "one ticket was kept: {first_pair:?}"
    );
    // … after which the worker keeps two, and every connection of the next pair resumes.
    let (a, b) = tokio::join!(c.system_health(&t), c.system_stats(&t));
    a.unwrap();
    b.unwrap();
    let second_pair = w.counters();
    assert_eq!(second_pair.tls_handshakes, first_pair.tls_handshakes + 2);
    assert_eq!(
        second_pair.tls_resumed,
        first_pair.tls_resumed + 2,
        "both resumed: {second_pair:?}"
    );
    f.shutdown().await;
}

#[tokio::test]
async fn without_a_session_cache_every_tls_connection_should_be_a_full_handshake() {
    let (f, c, t, _dir) = tls_fleet_and_client(44, TlsConfig::CaFile, 0).await;
    for _ in 0..3 {
        c.system_information(&t).await.unwrap();
    }
    let seen = f.worker(0).unwrap().counters();
    assert_eq!((seen.tls_handshakes, seen.tls_resumed), (3, 0), "{seen:?}");
    f.shutdown().await;
}

#[tokio::test]
async fn a_pinned_worker_should_resume_its_session_and_keep_refusing_another_pin() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let ca_out = ca.clone();
    let f = fleet(45, 1, move |cfg| {
        cfg.tls = true;
        cfg.ca_out = Some(ca_out);
    })
    .await;
    let url = f.endpoints()[0].clone();
    let right = served_fingerprint(&url, &ca).await;
    let w = f.worker(0).unwrap();
    let before = w.counters();
    let with = |pin: CertFingerprint| {
        let cfg = CmlConfig {
            tls: TlsConfig::Fingerprint(pin),
            pool_max_idle_per_host: 0,
            ..CmlConfig::default()
        };
        CmlClient::new(&cfg, Resilience::builder(&resilience_config()).build()).unwrap()
    };
    let pinned = with(right);
    let t = pinned.target(&url).unwrap();
    pinned.system_information(&t).await.unwrap();
    pinned.system_information(&t).await.unwrap();
    let seen = w.counters();
    assert_eq!(seen.tls_handshakes - before.tls_handshakes, 2);
    assert_eq!(seen.tls_resumed - before.tls_resumed, 1, "{seen:?}");
    // Another client with another pin has no session of this worker: a full handshake, refused.
    let other = with(CertFingerprint::of(b"another controller"));
    let t = other.target(&url).unwrap();
    let err = other.system_information(&t).await.unwrap_err();
    assert!(
        matches!(err, CmlError::CertificateMismatch { .. }),
        "{err:?}"
    );
    f.shutdown().await;
}

/// A TLS worker (offering HTTP/2 or not) and a client that keeps one idle connection per
/// worker (the product default) for as long as the test runs.
async fn pooled_tls_fleet_and_client(
    net: u8,
    sim_http2: bool,
    client_http2: bool,
) -> (
    ccm_cml_sim::SimFleet,
    CmlClient,
    ccm_cml::Target,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let ca_out = ca.clone();
    let f = fleet(net, 1, move |cfg| {
        cfg.tls = true;
        cfg.http2 = sim_http2;
        cfg.ca_out = Some(ca_out);
    })
    .await;
    let cfg = CmlConfig {
        tls: TlsConfig::CaFile(ca),
        pool_idle_timeout: Duration::from_secs(3600),
        http2: client_http2,
        ..CmlConfig::default()
    };
    let c = CmlClient::new(&cfg, Resilience::builder(&resilience_config()).build()).unwrap();
    let t = c.target(&f.endpoints()[0]).unwrap();
    (f, c, t, dir)
}

/// The calls of one sync as the engine makes them: system_information alone, then the other
/// three at once.
async fn sync_calls(c: &CmlClient, t: &ccm_cml::Target) {
    assert!(c.system_information(t).await.unwrap().ready);
    let (a, b, l) = tokio::join!(c.system_health(t), c.system_stats(t), c.licensing(t));
    a.unwrap();
    b.unwrap();
    l.unwrap();
}

#[tokio::test]
async fn a_sync_of_a_worker_offering_http2_should_share_one_connection_and_one_handshake() {
    let (f, c, t, _dir) = pooled_tls_fleet_and_client(46, true, true).await;
    let w = f.worker(0).unwrap();
    sync_calls(&c, &t).await;
    let seen = w.counters();
    // The four calls (and the login): one TCP connection, one TLS handshake, in HTTP/2.
    assert_eq!(seen.requests - seen.logins, 4, "{seen:?}");
    assert_eq!(
        (seen.connections, seen.tls_handshakes, seen.h2_connections),
        (1, 1, 1),
        "{seen:?}"
    );
    sync_calls(&c, &t).await;
    let again = w.counters();
    assert_eq!(again.requests - again.logins, 8, "{again:?}");
    assert_eq!(again.connections, 1, "the next sync reuses it: {again:?}");
    f.shutdown().await;
}

#[tokio::test]
async fn a_worker_without_http2_should_be_synced_over_http1_with_a_kept_alive_connection() {
    let (f, c, t, _dir) = pooled_tls_fleet_and_client(47, false, true).await;
    let w = f.worker(0).unwrap();
    sync_calls(&c, &t).await;
    let seen = w.counters();
    assert_eq!(seen.requests - seen.logins, 4, "{seen:?}");
    // HTTP/1.1 (no ALPN on the server): every connection was TLS, none spoke HTTP/2, and
    // the overlapped calls needed more than the one kept-alive connection.
    assert_eq!(seen.h2_connections, 0, "{seen:?}");
    assert_eq!(seen.tls_handshakes, seen.connections, "{seen:?}");
    assert!(seen.connections >= 2, "{seen:?}");
    f.shutdown().await;
}

/// HTTPS without HTTP/2 syncs as plain HTTP does: the four calls one after another on one
/// connection (one resumed handshake), which the last call closes, so nothing idles after it.
#[tokio::test]
async fn a_tls_sync_without_http2_should_use_one_connection_and_keep_none_after_it() {
    let (f, c, t, _dir) = pooled_tls_fleet_and_client(49, true, false).await;
    let w = f.worker(0).unwrap();
    assert_eq!(c.sync_order(t.base_url()), ccm_cml::SyncOrder::OneByOne);
    for sync in 1..=3u64 {
        assert!(c.system_information(&t).await.unwrap().ready);
        c.system_health(&t).await.unwrap();
        c.system_stats(&t).await.unwrap();
        c.licensing_closing(&t).await.unwrap();
        let seen = w.counters();
        assert_eq!(
            (
                seen.requests - seen.logins,
                seen.connections,
                seen.tls_handshakes,
                seen.h2_connections
            ),
            (4 * sync, sync, sync, 0),
            "sync {sync}: one connection, none kept from the last: {seen:?}"
        );
    }
    let seen = w.counters();
    assert_eq!(
        seen.tls_resumed, 2,
        "every sync after the first resumed: {seen:?}"
    );
    f.shutdown().await;
}

#[tokio::test]
async fn a_client_without_http2_should_speak_http1_to_a_worker_that_offers_it() {
    let (f, c, t, _dir) = pooled_tls_fleet_and_client(48, true, false).await;
    let w = f.worker(0).unwrap();
    sync_calls(&c, &t).await;
    let seen = w.counters();
    assert_eq!(seen.requests - seen.logins, 4, "{seen:?}");
    assert_eq!(seen.h2_connections, 0, "{seen:?}");
    assert!(seen.connections >= 2, "{seen:?}");
    f.shutdown().await;
}
