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
}
