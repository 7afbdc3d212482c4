//! `ccm sim` in-process: flags, endpoints file, answers, clean stop.

use std::time::Duration;

use ccm_cml_sim::cli::{SimArgs, run_until};
use clap::Parser;
use reqwest::StatusCode;

use crate::support::http;

#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    args: SimArgs,
}

fn parse(args: &[&str]) -> Result<SimArgs, clap::Error> {
    Cmd::try_parse_from(std::iter::once("sim").chain(args.iter().copied())).map(|c| c.args)
}

#[tokio::test]
async fn run_should_write_endpoints_serve_and_stop_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("endpoints.txt");
    let args = parse(&[
        "--workers",
        "3",
        "--listen-base",
        "127.4.0.1",
        "--port",
        "0",
        "--endpoints-out",
        out.to_str().unwrap(),
        "--faults",
        "2:down",
    ])
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(run_until(args, async move {
        let _ = stop_rx.await;
        Ok(())
    }));
    let mut text = None;
    for _ in 0..500 {
        if let Ok(t) = std::fs::read_to_string(&out) {
            text = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = text.expect("endpoints file is written within 5 s");
    let urls: Vec<&str> = text.lines().collect();
    assert_eq!(urls.len(), 3);
    assert!(urls[0].starts_with("http://127.4.0.1:") && urls[2].starts_with("http://127.4.0.3:"));
    let client = http();
    for u in &urls[..2] {
        let r = client
            .get(format!("{u}/api/v0/system_information"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert!(
        client
            .get(format!("{}/api/v0/system_information", urls[2]))
            .send()
            .await
            .is_err()
    );
    stop_tx.send(()).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops within 10 s")
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    let fresh = http();
    assert!(
        fresh
            .get(format!("{}/api/v0/system_information", urls[0]))
            .send()
            .await
            .is_err()
    );
}

#[test]
fn flags_should_default_like_the_issue_says_and_reject_bad_input() {
    let a = parse(&[]).unwrap();
    let cfg = a.to_config().unwrap();
    assert_eq!(cfg.workers, 1);
    assert_eq!(cfg.listen_base.to_string(), "127.1.0.1");
    assert_eq!(cfg.port, 9443);
    assert_eq!(
        (cfg.username.as_str(), cfg.password.expose()),
        ("admin", "admin")
    );
    assert_eq!(cfg.token_ttl, Duration::from_secs(86_400));
    assert!(
        !format!("{a:?}").contains("password: \"admin\""),
        "no secrets in Debug"
    );
    assert!(parse(&["--faults", "1:explode"]).is_err());
    assert!(parse(&["--faults", "demo", "--latency-ms", "5", "--tls"]).is_ok());
    assert!(parse(&["--activity", "2"]).unwrap().to_config().is_err());
}

async fn stops_on(signal: nix::sys::signal::Signal) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("endpoints.txt");
    let args = parse(&[
        "--workers",
        "3",
        "--listen-base",
        "127.4.1.1",
        "--port",
        "0",
        "--endpoints-out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let running = tokio::spawn(ccm_cml_sim::cli::run(args));
    let mut text = None;
    for _ in 0..500 {
        if let Ok(t) = std::fs::read_to_string(&out) {
            text = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = text.expect("endpoints file is written within 5 s");
    assert_eq!(text.lines().count(), 3);
    let first = text.lines().next().unwrap().to_owned();
    assert!(
        http()
            .get(format!("{first}/api/v0/system_information"))
            .send()
            .await
            .is_ok()
    );
    nix::sys::signal::raise(signal).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops within 10 s")
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(
        http()
            .get(format!("{first}/api/v0/system_information"))
            .send()
            .await
            .is_err()
    );
}

// One test for both signals: tokio delivers a signal to every listener of the process, so two
// such tests running side by side in one process (`cargo test`) would stop each other.
#[tokio::test]
async fn run_should_stop_cleanly_on_sigterm_and_on_sigint() {
    stops_on(nix::sys::signal::Signal::SIGTERM).await;
    stops_on(nix::sys::signal::Signal::SIGINT).await;
}
