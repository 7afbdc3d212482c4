//! `ccm sim` in-process: flags, endpoints file, answers, clean stop.

use std::time::Duration;

use ccm_cml_sim::SimLauncher;
use ccm_cml_sim::cli::{SHARD_CHILD_FLAG, SimArgs, run_until};
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

/// For runs that stay below `--shard-size`: the launcher is never used.
fn unused_launcher() -> SimLauncher {
    SimLauncher::new("/nonexistent/ccm-sim-launcher")
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
    let running = tokio::spawn(async move {
        run_until(args, &unused_launcher(), async move {
            let _ = stop_rx.await;
            Ok(())
        })
        .await
    });
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
    assert!(parse(&[SHARD_CHILD_FLAG]).unwrap().shard_child);
}

#[tokio::test]
async fn a_sharded_fleet_should_start_its_shards_with_the_callers_launcher() {
    // A launcher that records its arguments and exits at once: the shard never serves, and
    // the run says so, after starting exactly what the caller asked for.
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("args.txt");
    let launcher = SimLauncher::new("/bin/sh")
        .arg("-c")
        .arg(r#"echo "$@" > "$0""#)
        .arg(&record)
        .arg("host-subcommand");
    let args = parse(&[
        "--workers",
        "2",
        "--shard-size",
        "1",
        "--listen-base",
        "127.4.2.1",
        "--port",
        "0",
    ])
    .unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        run_until(args, &launcher, std::future::pending()),
    )
    .await
    .expect("a failed start ends the run");
    let err = outcome.expect_err("no shard serves");
    assert!(matches!(err, ccm_cml_sim::SimError::Shard { .. }), "{err}");
    assert!(err.to_string().contains("exited before serving"), "{err}");
    let recorded = std::fs::read_to_string(&record).unwrap();
    assert_eq!(
        recorded.trim(),
        format!("host-subcommand {SHARD_CHILD_FLAG}")
    );

    let missing = SimLauncher::new(dir.path().join("no-such-program"));
    let args = parse(&["--workers", "2", "--shard-size", "1", "--port", "0"]).unwrap();
    let err = run_until(args, &missing, std::future::pending())
        .await
        .expect_err("nothing to start");
    assert!(err.to_string().contains("no-such-program"), "{err}");
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
    let running =
        tokio::spawn(async move { ccm_cml_sim::cli::run(args, &unused_launcher()).await });
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
