//! The API client commands as an operator runs them, against a running `ccm demo`: list and
//! get workers (table and JSON), stop one and wait for `stopped` on the event stream, system
//! health, and the documented exit codes (3 not found, 5 not allowed, 2 usage).
//!
//! Addresses 127.122.x are this file's. Every wait is bounded; the demo is killed on drop.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::{Api, Proc, free_port, wait_for};

const CCM: &str = env!("CARGO_BIN_EXE_ccm");
const TOKEN: &str = "cli-test-admin-token-0123456789abcdef";

/// `ccm <args> --api-url … --token …`, bounded; exit code, stdout, stderr.
async fn ccm(url: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let run = tokio::process::Command::new(CCM)
        .args(args)
        .args(["--api-url", url, "--token", token])
        .env_remove("CCM_CONFIG")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("ccm {args:?} did not finish in 60 s"))
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_should_list_inspect_and_stop_workers_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut demo = Proc::spawn(
        "ccm demo",
        Command::new(CCM)
            .args(["demo", "--workers", "3", "--port", &port.to_string()])
            .args(["--admin-token", TOKEN, "--listen-base", "127.122.0.1"])
            .args(["--faults", "*:latency=1ms"])
            .arg("--db")
            .arg(tmp.path().join("cli.db"))
            .current_dir(tmp.path()),
        tmp.path(),
    );
    let url = format!("http://127.0.0.1:{port}");
    let api = Api::new(port, TOKEN);
    wait_for(
        "the demo's three running workers",
        Duration::from_secs(120),
        || {
            demo.assert_alive();
            async {
                // Not listening yet at first: connection refused means "not yet".
                api.http
                    .get(format!("{}/readyz", api.base))
                    .send()
                    .await
                    .ok()?;
                let (s, v) = api
                    .call(reqwest::Method::GET, "/api/v1/workers?state=running", None)
                    .await;
                (s == 200 && v["items"].as_array().is_some_and(|i| i.len() == 3)).then_some(())
            }
        },
    )
    .await;

    // The table names every worker; JSON is the API's page.
    let (code, table, err) = ccm(&url, TOKEN, &["workers", "list"]).await;
    assert_eq!(code, 0, "{err}");
    for n in 1..=3 {
        assert!(table.contains(&format!("cml-worker-00{n}")), "{table}");
    }
    let (code, out, err) = ccm(
        &url,
        TOKEN,
        &["workers", "list", "--json", "--sort", "name"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let page = json(&out);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{page}");
    let id = items[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(items[0]["name"], "cml-worker-001");

    let (code, out, err) = ccm(&url, TOKEN, &["workers", "get", &id, "--json"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["id"], id.as_str());
    // The table shows the image with its owner and EC2's status checks with their age.
    let (code, out, err) = ccm(&url, TOKEN, &["workers", "get", &id]).await;
    assert_eq!(code, 0, "{err}");
    for label in ["image ", "ec2 status checks "] {
        assert!(out.lines().any(|l| l.starts_with(label)), "{label}: {out}");
    }

    // Stop and follow the events until the worker is stopped.
    let (code, out, err) = ccm(
        &url,
        TOKEN,
        &[
            "workers",
            "stop",
            &id,
            "--wait",
            "--timeout",
            "50s",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let (_, out, _) = ccm(&url, TOKEN, &["workers", "get", &id, "--json"]).await;
    assert_eq!(json(&out)["ec2_state"], "stopped", "{out}");
    // Stopping it again is a conflict: exit 4.
    let (code, _, err) = ccm(&url, TOKEN, &["workers", "stop", &id]).await;
    assert_eq!(code, 4, "{err}");

    let (code, out, err) = ccm(&url, TOKEN, &["system", "health", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(json(&out).is_object(), "{out}");

    // Exit codes: unknown id 3, bad token 5, a usage error 2; errors are one clear line.
    let unknown = "01890000-0000-7000-8000-000000000000";
    let (code, _, err) = ccm(&url, TOKEN, &["workers", "get", unknown]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("404"), "{err}");
    let (code, _, err) = ccm(&url, "not-a-valid-token", &["workers", "list"]).await;
    assert_eq!(code, 5, "{err}");
    assert!(
        !err.contains("not-a-valid-token"),
        "the token must not be echoed: {err}"
    );
    let (code, _, err) = ccm(&url, TOKEN, &["workers", "stop"]).await;
    assert_eq!(code, 2, "{err}");
    // An option with a fixed set of values refuses others before any request.
    let (code, _, err) = ccm(&url, TOKEN, &["workers", "list", "--state", "asleep"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("running"), "the error lists the states: {err}");

    // Every table decodes the API's own types: each must succeed and show its fields.
    let (code, out, err) = ccm(
        &url,
        TOKEN,
        &[
            "workers", "list", "--state", "stopped", "--sort", "updated", "--desc",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id) && out.contains("stopped"), "{out}");
    assert!(err.contains("1 of 1 workers"), "{err}");
    let (code, out, err) = ccm(&url, TOKEN, &["workers", "get", &id]).await;
    assert_eq!(code, 0, "{err}");
    for field in [
        "cml-worker-001",
        "system_information",
        "idle detection",
        "updated",
    ] {
        assert!(out.contains(field), "{field} missing:\n{out}");
    }
    for (args, needle) in [
        (vec!["system", "jobs"], "cml_sync"),
        (vec!["system", "breakers"], "bulkhead cml_poll"),
        (vec!["system", "savings"], "instance-hours"),
        (vec!["system", "health"], "healthy: true"),
        (vec!["labs", "list", &id], "LAB"),
    ] {
        let (code, out, err) = ccm(&url, TOKEN, &args).await;
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(out.contains(needle), "{args:?}: {needle} missing:\n{out}");
    }

    // A reader that has gone (`ccm workers list | head -1`): a quiet exit, no panic.
    let (code, err) = into_closed_pipe(&["workers", "list", "--api-url", &url, "--token", TOKEN]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "nothing on stderr: {err}");
}

/// Runs `ccm <args>` with standard output a pipe whose reading end is already closed: the
/// first write fails with EPIPE. The exit code and standard error.
fn into_closed_pipe(args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(CCM)
        .args(args)
        .env_remove("CCM_CONFIG")
        .env_remove("RUST_LOG")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn printing_into_a_closed_pipe_should_end_quietly() {
    let (code, err) = into_closed_pipe(&["config", "example"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn every_command_should_read_rust_log_first_and_refuse_a_bad_filter() {
    let run = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(CCM);
        cmd.args(["token", "hash"])
            .env_remove("CCM_CONFIG")
            .env_remove("RUST_LOG")
            .env_remove("CCM_LOG__LEVEL")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"some-token\n").unwrap();
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(run(&[]).0, Some(0));
    let (code, err) = run(&[("RUST_LOG", "ccm=notalevel")]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("RUST_LOG"), "{err}");
    let (code, err) = run(&[("CCM_LOG__LEVEL", "ccm=notalevel")]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("log.level"), "{err}");
    // RUST_LOG decides the filter even when log.level says otherwise.
    let (code, err) = run(&[("RUST_LOG", "warn"), ("CCM_LOG__LEVEL", "ccm=notalevel")]);
    assert_eq!(code, Some(0), "{err}");
}
