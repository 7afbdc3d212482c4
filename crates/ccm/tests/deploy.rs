//! The deployment files in `deploy/` are valid for the tools that read them: the alert rules
//! and the scrape config pass `promtool` (Debian's `prometheus` package; `scripts/test`
//! installs it), the systemd unit passes `systemd-analyze verify` with the built binary and
//! keeps a low exposure score, the dashboard is JSON for Grafana's import, and the
//! Containerfile builds in stages and runs as a non-root user. (That every metric they use is
//! exported is checked against a running ccm in ccm-api's `deploy` test.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::path::{Path, PathBuf};
use std::process::Command;

const CCM: &str = env!("CARGO_BIN_EXE_ccm");

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Runs a tool; a missing tool fails the test with what to install (never a silent skip).
fn run(tool: &str, args: &[&str], install: &str) -> (bool, String) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} is needed ({e}): {install}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const PROMTOOL: &str =
    "run ./scripts/test once (it installs Debian's `prometheus` package for promtool)";

#[test]
fn the_alert_rules_should_pass_promtool() {
    let rules = deploy().join("prometheus/alerts.yml");
    let (ok, out) = run(
        "promtool",
        &["check", "rules", rules.to_str().unwrap()],
        PROMTOOL,
    );
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_scrape_config_should_pass_promtool_with_its_token_file() {
    // The config names /etc/prometheus/ccm-token; check a copy pointing at a real file.
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("ccm-token");
    std::fs::write(&token, "a-viewer-token").unwrap();
    let config = std::fs::read_to_string(deploy().join("prometheus/prometheus.yml")).unwrap();
    assert!(config.contains("credentials_file: /etc/prometheus/ccm-token"));
    assert!(
        config.contains("type: Bearer"),
        "/metrics needs the bearer token"
    );
    std::fs::write(
        tmp.path().join("prometheus.yml"),
        config.replace("/etc/prometheus/ccm-token", token.to_str().unwrap()),
    )
    .unwrap();
    std::fs::copy(
        deploy().join("prometheus/alerts.yml"),
        tmp.path().join("alerts.yml"),
    )
    .unwrap();
    let path = tmp.path().join("prometheus.yml");
    let (ok, out) = run(
        "promtool",
        &["check", "config", path.to_str().unwrap()],
        PROMTOOL,
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("SUCCESS: 10 rules found") || out.contains("rules found"),
        "{out}"
    );
}

#[test]
fn the_systemd_unit_should_verify_and_stay_hardened() {
    let unit = std::fs::read_to_string(deploy().join("systemd/ccm.service")).unwrap();
    for directive in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=ccm",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(directive), "missing {directive:?}");
    }
    // With the real binary in ExecStart, as installed.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ccm.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/ccm", CCM)).unwrap();
    let install = "systemd-analyze comes with Debian's systemd package";
    let (ok, out) = run(
        "systemd-analyze",
        &["verify", path.to_str().unwrap()],
        install,
    );
    assert!(ok && out.trim().is_empty(), "{out}");
    let (_, out) = run(
        "systemd-analyze",
        &["security", "--offline=true", path.to_str().unwrap()],
        install,
    );
    let score: f64 = out
        .lines()
        .find_map(|l| l.split("Overall exposure level for ccm.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{out}"));
    assert!(
        score <= 2.0,
        "exposure {score} (0 is best, 10 worst):\n{out}"
    );
}

#[test]
fn the_dashboard_should_be_a_grafana_import_with_a_prometheus_input() {
    let text = std::fs::read_to_string(deploy().join("grafana/ccm-dashboard.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(d["__inputs"][0]["pluginId"], "prometheus");
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut ids = std::collections::BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}");
        assert!(
            !p["targets"].as_array().unwrap().is_empty(),
            "{}",
            p["title"]
        );
    }
}

#[test]
fn the_containerfile_should_build_in_stages_and_run_as_non_root() {
    let text = std::fs::read_to_string(deploy().join("Containerfile")).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(froms[0].ends_with(" AS build"), "{}", froms[0]);
    assert!(text.contains("COPY --from=build"));
    assert!(text.contains("cargo build --release --locked -p ccm"));
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "{user}"
    );
    assert!(text.contains("VOLUME [\"/var/lib/ccm\"]"));
    assert!(text.contains("CMD [\"serve\""));
}
