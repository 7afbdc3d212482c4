//! `ccm serve` end to end, as an operator runs it: a config file, real AWS APIs (moto in
//! server mode on loopback), the HTTP API with a static token. Provisions a worker through the
//! API, watches EC2 state arrive, stops it, and shuts down on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::{Api, free_port};

const TOKEN: &str = "ccm_e2e_admin_token_0123456789";

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Api {
    /// Runs the EC2 sync, then reads the worker; until `pred` holds (bounded).
    async fn until(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..100 {
            let (status, _) = self
                .call(
                    reqwest::Method::POST,
                    "/api/v1/system/jobs/ec2_sync/run",
                    None,
                )
                .await;
            assert_eq!(status, 200);
            let (_, w) = self
                .call(reqwest::Method::GET, &format!("/api/v1/workers/{id}"), None)
                .await;
            if pred(&w) {
                return w;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, w) = self
            .call(reqwest::Method::GET, &format!("/api/v1/workers/{id}"), None)
            .await;
        panic!("worker {id} never reached: {what}\n{w:#}");
    }
}

#[tokio::test]
async fn serve_should_provision_watch_and_stop_a_worker_against_aws() {
    let moto = ccm_cloud_aws::moto::Moto::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
threads = 2
[engine]
threads = 2
nice = 7
[log]
level = "warn"
[database]
path = "{db}"
[aws]
regions = ["us-east-1"]
endpoint_url = "{moto}"
access_key_id = "testing"
secret_access_key = "testing"
operation_timeout = "20s"
[provisioning]
allowed_instance_types = ["m5zn.metal", "m5.large"]
[auth]
tokens = [{{ name = "e2e", role = "admin", sha256 = "{hash}" }}]
[polling]
ec2_enabled = false
cml_enabled = false
metrics_enabled = false
labs_enabled = false
activity_enabled = false
"#,
        db = dir.path().join("ccm.db").display(),
        moto = moto.url,
        hash = ccm_api::hash_token(TOKEN),
    );
    let path = dir.path().join("ccm.toml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ccm"))
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("CCM_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut serve = Serve(child);
    let api = Api::new(port, TOKEN);

    // Up: liveness, then readiness (store and scheduler).
    let mut ready = false;
    for _ in 0..300 {
        if let Ok(r) = api.http.get(format!("{}/readyz", api.base)).send().await
            && r.status().is_success()
        {
            ready = true;
            break;
        }
        assert!(
            serve.0.try_wait().unwrap().is_none(),
            "ccm serve exited early"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "ccm serve never became ready");
    let (status, _) = api
        .call(reqwest::Method::GET, "/api/v1/workers", None)
        .await;
    assert_eq!(status, 200);
    let anonymous = api
        .http
        .get(format!("{}/api/v1/workers", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    // Provision through the API: RunInstances against AWS, the worker gets its instance.
    let (status, created) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/workers",
            Some(json!({"name": "e2e-worker", "instance_type": "m5.large"})),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let running = api
        .until(&id, "running with an instance", |w| {
            w["ec2_state"] == "running" && w["instance_id"].is_string()
        })
        .await;
    assert!(
        running["ami"]["name"]
            .as_str()
            .unwrap_or_default()
            .starts_with("cml-controller-2.9"),
        "{running}"
    );

    // Stop it: EC2 says stopped, the pause is counted as manual.
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/workers/{id}/stop"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let stopped = api
        .until(&id, "stopped", |w| w["ec2_state"] == "stopped")
        .await;
    assert_eq!(stopped["monitoring"]["pauses"]["manual"], 1, "{stopped}");
    let (_, events) = api
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/workers/{id}/events"),
            None,
        )
        .await;
    assert!(
        events.to_string().contains("ccm.worker.state_changed"),
        "{events}"
    );

    // Metrics for Prometheus.
    let metrics = api
        .http
        .get(format!("{}/metrics", api.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("ccm_workers"), "{metrics}");

    // Two runtimes: the API's threads at the process's priority, the engine's lowered.
    let threads = threads_by_name(serve.0.id());
    let own = nice_of("/proc/self/stat");
    let engine: Vec<i32> = threads
        .iter()
        .filter(|t| t.0 == "ccm-engine")
        .map(|t| t.1)
        .collect();
    let api_threads: Vec<i32> = threads
        .iter()
        .filter(|t| t.0 == "ccm-api")
        .map(|t| t.1)
        .collect();
    assert!(engine.len() >= 2, "{threads:?}");
    assert!(api_threads.len() >= 2, "{threads:?}");
    assert!(
        engine.iter().all(|&n| n == (own + 7).min(19)),
        "{threads:?}"
    );
    assert!(api_threads.iter().all(|&n| n == own), "{threads:?}");

    // SIGTERM: a clean, bounded shutdown.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut code = None;
    for _ in 0..200 {
        if let Some(status) = serve.0.try_wait().unwrap() {
            code = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let code = code.expect("ccm serve did not stop within 10 s of SIGTERM");
    assert!(code.success(), "exit status {code:?}");
}

#[test]
fn serve_should_name_a_missing_config_file_and_exit_64() {
    let out = Command::new(env!("CARGO_BIN_EXE_ccm"))
        .args(["serve", "--config", "/no/such.toml"])
        .env_remove("CCM_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/no/such.toml"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// The nice value in a `/proc/…/stat` file (field 19).
fn nice_of(stat: &str) -> i32 {
    let text = std::fs::read_to_string(stat).unwrap();
    // The command name (field 2) may hold spaces: count from the last ')'.
    let rest = &text[text.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(16).unwrap().parse().unwrap()
}

/// Every thread of process `pid`: its name and nice value.
fn threads_by_name(pid: u32) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = entry.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap();
        out.push((
            name.trim().to_owned(),
            nice_of(&dir.join("stat").to_string_lossy()),
        ));
    }
    out
}
