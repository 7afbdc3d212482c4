//! `ccm bench sync`, `ccm bench sse` and `ccm bench api` at a tiny size (the JSON report has every field, with
//! values that follow from the run), and `ccm sim` sharding as the benchmark uses it (several processes, one
//! fleet: endpoints, requests, counters summed across shards, SIGTERM stops them all).
//!
//! Addresses 127.110.x, 127.111.x, 127.113.x and 127.114.x are this file's. Every wait polls with a deadline;
//! children are killed when a test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::free_port;
use tokio::process::Command;

const CCM: &str = env!("CARGO_BIN_EXE_ccm");

fn num(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for key in path.split('.') {
        cur = cur
            .get(key)
            .unwrap_or_else(|| panic!("the report has no {path}: {v}"));
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {cur}"))
}

/// Runs `ccm bench …` (bounded) and returns its JSON report.
async fn bench_report(args: &[&str]) -> Value {
    let run = Command::new(CCM)
        .arg("bench")
        .args(args)
        .args(["--timeout", "90s"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("ccm bench should finish within its own --timeout")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ccm bench {args:?} failed:\n{stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_sync_should_report_every_field_with_values_that_follow_from_the_run() {
    let report = bench_report(&[
        "sync",
        "--workers",
        "20",
        "--cycles",
        "2",
        "--listen-base",
        "127.110.0.1",
        "--latency-ms",
        "5",
    ])
    .await;

    assert_eq!(report["benchmark"], "sync");
    assert_eq!(num(&report, "workers"), 20.0);
    assert_eq!(num(&report, "cycles"), 2.0);
    assert_eq!(num(&report, "latency_ms"), 5.0);
    assert!(num(&report, "concurrency") >= 1.0);
    let (min, median, max) = (
        num(&report, "cycle_seconds.min"),
        num(&report, "cycle_seconds.median"),
        num(&report, "cycle_seconds.max"),
    );
    // Every worker answers after ≥ 5 ms, so no cycle can be shorter; nor longer than the run.
    assert!(
        0.005 <= min && min <= median && median <= max && max < 60.0,
        "{report}"
    );
    let per_cycle = report["per_cycle_seconds"].as_array().unwrap();
    assert_eq!(per_cycle.len(), 2);
    assert!(num(&report, "warmup_seconds") >= 0.005);
    // After the warm-up (logins), every worker is ready and gets exactly its four sync calls
    // per cycle: system_information, system_health, system_stats, licensing.
    let requests = num(&report, "requests");
    assert_eq!(requests, 20.0 * 4.0 * 2.0, "{report}");
    let rps = num(&report, "requests_per_second");
    let total: f64 = per_cycle.iter().map(|c| c.as_f64().unwrap()).sum();
    assert!(
        (rps - requests / total).abs() <= 0.02 * rps + 1.0,
        "rps {rps} vs {requests} requests in {total} s"
    );
    let rss = num(&report, "rss_mb");
    assert!(rss > 1.0 && rss < 1024.0, "rss {rss}");
    assert!(num(&report, "rss_end_mb") <= rss + 0.1);
    assert!(num(&report, "cpu_seconds") >= 0.0);
    assert!(num(&report, "sim_cpu_seconds") >= 0.0);
    assert!(num(&report, "setup_seconds") > 0.0);
    // Plain HTTP: a sync's calls go one by one and take 2 gate slots (4 over HTTPS).
    assert_eq!(
        num(&report, "cml_poll_slots"),
        2.0 * num(&report, "concurrency")
    );
    assert!(num(&report, "open_fds_peak") >= 3.0);
    // Plain HTTP/1.1: a ready worker's four calls at once, so at most four connections per
    // worker sync (fewer when kept-alive ones are reused).
    assert!(num(&report, "connections") <= 20.0 * 4.0 * 2.0, "{report}");
    assert_eq!(num(&report, "statuses.ready"), 20.0, "{report}");
    assert_eq!(num(&report, "statuses.degraded"), 0.0);
    assert_eq!(num(&report, "statuses.unavailable"), 0.0);
    assert!(report.get("peer").is_none() && report.get("speedup").is_none());
    assert!(report.get("blackholed").is_none());
    assert_eq!(report["tls"], false);
    assert!(report.get("tls_handshakes").is_none() && report.get("floor_seconds").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_sync_with_floor_should_measure_the_bare_stack_on_the_same_fleet() {
    let report = bench_report(&[
        "sync",
        "--workers",
        "10",
        "--cycles",
        "2",
        "--floor",
        "--listen-base",
        "127.110.3.1",
        "--latency-ms",
        "5",
    ])
    .await;
    let floor = num(&report, "floor_seconds");
    // Every cycle of the floor waits for at least one 5 ms round trip.
    assert!(floor >= 0.005, "{report}");
    assert_eq!(num(&report, "floor_cycle_seconds.median"), floor);
    assert_eq!(num(&report, "floor_failed_requests"), 0.0, "{report}");
    let ratio = num(&report, "ratio_to_floor");
    // Both medians are rounded to the millisecond in the report, the ratio is not.
    let median = num(&report, "cycle_seconds.median");
    let (lo, hi) = (
        (median - 0.0005) / (floor + 0.0005) - 0.001,
        (median + 0.0005) / (floor - 0.0005) + 0.001,
    );
    assert!(
        ratio >= lo && ratio <= hi,
        "{ratio} not in [{lo}, {hi}]: {report}"
    );
    // The floor's requests are not ccm's: `requests` counts the measured cycles only.
    assert_eq!(num(&report, "requests"), 80.0, "{report}");
}

/// The product's default over TLS (`[cml] http2 = false`): each worker's sync on one HTTP/1.1
/// connection that its last call closes, every handshake after the warm-up cycle a resumed
/// session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_sync_over_tls_by_default_should_sync_each_worker_on_one_resumed_http1_connection() {
    let report = bench_report(&[
        "sync",
        "--workers",
        "5",
        "--cycles",
        "1",
        "--tls",
        "--listen-base",
        "127.110.5.1",
        "--latency-ms",
        "1",
    ])
    .await;
    assert_eq!(report["tls"], true);
    assert_eq!(num(&report, "statuses.ready"), 5.0, "{report}");
    assert_eq!(num(&report, "requests"), 20.0, "{report}");
    assert_eq!(num(&report, "connections"), 5.0, "{report}");
    assert_eq!(num(&report, "h2_connections"), 0.0, "{report}");
    assert_eq!(num(&report, "tls_handshakes"), 5.0, "{report}");
    assert_eq!(num(&report, "tls_resumed"), 5.0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_sync_over_tls_should_trust_the_simulators_ca_and_sync_every_worker() {
    let report = bench_report(&[
        "sync",
        "--workers",
        "5",
        "--cycles",
        "1",
        "--tls",
        "--http2",
        "--listen-base",
        "127.110.1.1",
        "--latency-ms",
        "1",
    ])
    .await;
    assert_eq!(report["tls"], true);
    assert_eq!(num(&report, "statuses.ready"), 5.0, "{report}");
    assert_eq!(num(&report, "requests"), 20.0, "{report}");
    // The simulator offers HTTP/2 (as CML's nginx does): each worker's sync shares one
    // connection (at most one per worker per cycle; none when the warm-up cycle's
    // connection is still kept alive), every one HTTP/2, every handshake a resumed session.
    let connections = num(&report, "connections");
    assert!(connections <= 5.0, "{report}");
    assert_eq!(num(&report, "h2_connections"), connections, "{report}");
    assert_eq!(num(&report, "tls_handshakes"), connections, "{report}");
    assert_eq!(num(&report, "tls_resumed"), connections, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_sync_over_tls_without_http2_should_fall_back_to_http1_and_sync_every_worker() {
    let report = bench_report(&[
        "sync",
        "--workers",
        "5",
        "--cycles",
        "1",
        "--tls",
        "--sim-http1",
        "--http2",
        "--floor",
        "--listen-base",
        "127.110.4.1",
        "--latency-ms",
        "1",
    ])
    .await;
    assert_eq!(num(&report, "statuses.ready"), 5.0, "{report}");
    assert_eq!(num(&report, "requests"), 20.0, "{report}");
    assert_eq!(num(&report, "h2_connections"), 0.0, "{report}");
    assert_eq!(num(&report, "floor_failed_requests"), 0.0, "{report}");
    // Every connection of the cycle was a TLS one (resumption is the session tests' subject).
    assert_eq!(
        num(&report, "tls_handshakes"),
        num(&report, "connections"),
        "{report}"
    );
}

/// `ccm bench failover` given neither an AWS endpoint nor a moto server to start says which
/// flag to give, before starting anything.
#[test]
fn bench_failover_without_an_aws_endpoint_or_moto_should_name_the_flags() {
    let out = std::process::Command::new(CCM)
        .args(["bench", "failover", "--workers", "1", "--timeout", "60s"])
        .env_remove("CCM_MOTO_SERVER")
        .env_remove("CCM_BENCH_AWS_ENDPOINT_URL")
        .env_remove("CCM_BENCH_DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--aws-endpoint-url") && stderr.contains("--moto-server"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("PostgreSQL"),
        "nothing should start before the arguments are complete: {stderr}"
    );
}

/// `--store both`: the same fleet synced on SQLite and then on a throwaway PostgreSQL server,
/// every worker stored on both, and the ratio of the medians reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_sync_on_both_stores_should_measure_sqlite_and_postgres_on_one_fleet() {
    let report = bench_report(&[
        "sync",
        "--workers",
        "8",
        "--cycles",
        "2",
        "--store",
        "both",
        "--listen-base",
        "127.110.2.1",
        "--latency-ms",
        "1",
    ])
    .await;
    assert_eq!(report["store"], "sqlite", "{report}");
    assert_eq!(num(&report, "statuses.ready"), 8.0, "{report}");
    let pg = &report["postgres"];
    assert_eq!(num(pg, "statuses.ready"), 8.0, "{report}");
    assert_eq!(pg["per_cycle_seconds"].as_array().map(Vec::len), Some(2));
    let ratio = num(pg, "median_vs_sqlite");
    let expected = num(pg, "cycle_seconds.median") / num(&report, "cycle_seconds.median");
    assert!(
        ratio > 0.0 && (ratio - expected).abs() < 0.01,
        "the ratio must follow from the medians: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_sse_should_count_every_delivery_to_every_subscriber() {
    let report = bench_report(&[
        "sse",
        "--subscribers",
        "10",
        "--events",
        "30",
        "--interval",
        "5ms",
        "--listen-base",
        "127.113.0.1",
    ])
    .await;
    assert_eq!(num(&report, "subscribers"), 10.0);
    assert_eq!(num(&report, "events"), 30.0);
    assert_eq!(num(&report, "expected"), 300.0);
    assert_eq!(num(&report, "delivered"), 300.0, "{report}");
    assert_eq!(num(&report, "dropped_clients"), 0.0, "{report}");
    let (p50, p99, max) = (
        num(&report, "p50_ms"),
        num(&report, "p99_ms"),
        num(&report, "max_ms"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{report}");
}

#[tokio::test]
async fn bench_sse_should_refuse_a_bad_flag_with_a_usage_error() {
    let out = Command::new(CCM)
        .args(["bench", "sse", "--subscribers", "0"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--subscribers"), "{stderr}");
}

#[tokio::test]
async fn bench_sync_should_refuse_a_missing_seed_poller_in_one_line_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-seed-poller");
    // Given by flag, and the default (bench/seed-poller under the working directory), from a
    // directory that has neither: a usage error naming where it looked, before any simulator.
    let runs = [
        (
            vec!["--seed-poller", missing.to_str().unwrap()],
            missing.display().to_string(),
        ),
        (Vec::new(), "bench/seed-poller".to_owned()),
    ];
    for (extra, looked_in) in runs {
        let out = Command::new(CCM)
            .current_dir(dir.path())
            .args(["bench", "sync", "--workers", "1", "--peer", "seed-poller"])
            .args(&extra)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(&looked_in), "{stderr}");
        assert!(stderr.contains("--seed-poller"), "{stderr}");
        assert!(!stderr.contains("starting the simulator"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_idle_should_name_the_bad_line_of_a_trace_and_report_a_small_one_with_its_chart() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.trace");
    std::fs::write(
        &bad,
        "start 2026-03-02\ndays 1\nworkers 2\non Mon 09:00 10:00 sleeping\n",
    )
    .unwrap();
    let out = Command::new(CCM)
        .args(["bench", "idle", "--trace", bad.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("bad.trace:4"), "{stderr}");
    assert!(stderr.contains("sleeping"), "{stderr}");

    // Two workers for a day: one in use 09:00-11:00, one never. The baselines that act on the
    // cloud alone run in a second or two.
    let small = dir.path().join("small.trace");
    std::fs::write(
        &small,
        "name small\nstart 2026-03-02\ndays 1\nworkers 2\non Mon 09:00 11:00 interactive workers 1\n",
    )
    .unwrap();
    let svg = dir.path().join("chart.svg");
    let run = Command::new(CCM)
        .args(["bench", "idle", "--trace", small.to_str().unwrap()])
        .args([
            "--policies",
            "fixed-schedule,cpu-threshold",
            "--tick",
            "15m",
        ])
        .args(["--svg", svg.to_str().unwrap()])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("a one-day trace of two workers should finish")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let reports: Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = &reports[0];
    assert_eq!(report["trace"], "small");
    assert_eq!(report["workers"], 2);
    let policies: Vec<&str> = report["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policy"].as_str().unwrap())
        .collect();
    assert_eq!(policies, ["fixed-schedule", "cpu-threshold"]);
    // Idle per the trace: 22 h + 24 h; the schedule keeps both off outside 08-18 (14 h each).
    let schedule = &report["policies"][0];
    assert!(
        (num(schedule, "idle_hours") - 46.0).abs() < 0.01,
        "{schedule}"
    );
    assert!(num(schedule, "instance_hours") <= 20.5, "{schedule}");
    assert!(stderr.contains("fixed-schedule"), "the table: {stderr}");
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(
        chart.starts_with("<svg") && chart.contains("small"),
        "{chart}"
    );
}

/// `GET url`, a success status, and its JSON body.
async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A running `ccm sim`, killed (with its shards, which stop when its pipe closes) on drop.
struct Sim(tokio::process::Child);

async fn wait_for_endpoints(file: &Path, n: usize, sim: &mut Sim) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(file) {
            let urls: Vec<String> = text.lines().map(str::to_owned).collect();
            if urls.len() == n {
                return urls;
            }
        }
        assert!(
            sim.0.try_wait().unwrap().is_none(),
            "ccm sim exited before serving"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "ccm sim wrote no endpoints in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccm_sim_should_shard_into_processes_and_sum_their_counters() {
    let dir = tempfile::tempdir().unwrap();
    let endpoints_file = dir.path().join("endpoints.txt");
    let control = format!("127.0.0.1:{}", free_port());
    let child = Command::new(CCM)
        .args(["sim", "--workers", "6", "--shard-size", "2", "--port", "0"])
        .args(["--listen-base", "127.111.0.1", "--control", &control])
        .arg("--endpoints-out")
        .arg(&endpoints_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut sim = Sim(child);
    let pid = sim.0.id().unwrap();
    let urls = tokio::time::timeout(
        Duration::from_secs(90),
        wait_for_endpoints(&endpoints_file, 6, &mut sim),
    )
    .await
    .expect("endpoints in time");
    for (i, url) in urls.iter().enumerate() {
        assert!(
            url.starts_with(&format!("http://127.111.0.{}:", i + 1)),
            "{url}"
        );
    }
    let shards = children_of(pid);
    assert_eq!(shards.len(), 3, "6 workers at 2 per shard: {shards:?}");

    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Worker i gets i + 1 requests, so sums and per-worker counts are told apart.
    for (i, url) in urls.iter().enumerate() {
        for _ in 0..=i {
            let info = get_json(&http, &format!("{url}/api/v0/system_information")).await;
            assert!(info["ready"].is_boolean(), "{info}");
        }
    }
    let counters = get_json(&http, &format!("http://{control}/counters")).await;
    assert_eq!(num(&counters, "requests"), 21.0, "{counters}");
    assert_eq!(num(&counters, "by_endpoint.system_information"), 21.0);
    // Fleet-wide indices reach into the last shard.
    let last = get_json(&http, &format!("http://{control}/workers/5")).await;
    assert_eq!(last["endpoint"], urls[5].as_str());
    assert_eq!(num(&last, "counters.requests"), 6.0, "{last}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), sim.0.wait())
        .await
        .expect("ccm sim should stop on SIGTERM")
        .unwrap();
    assert!(status.success(), "ccm sim exited with {status}");
    // The shards are gone too, and nobody answers any more.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while shards.iter().any(|s| {
        std::fs::read_to_string(format!("/proc/{s}/stat")).is_ok_and(|t| !t.contains(") Z "))
    }) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "shard processes still running: {shards:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for url in &urls {
        assert!(
            http.get(format!("{url}/api/v0/system_information"))
                .send()
                .await
                .is_err(),
            "{url} still answers"
        );
    }
}

/// `ccm bench api` at a tiny size: a viewer's list and detail requests all answered, every
/// subscriber following one worker got that worker's synced event of every cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_api_should_answer_every_request_and_deliver_every_event_to_every_subscriber() {
    let report = bench_report(&[
        "api",
        "--workers",
        "50",
        "--clients",
        "5",
        "--client-interval",
        "10ms",
        "--subscribers",
        "20",
        "--cycles",
        "2",
        "--listen-base",
        "127.114.0.1",
        "--latency-ms",
        "1",
    ])
    .await;
    assert_eq!(report["benchmark"], "api");
    assert_eq!(report["store"], "sqlite");
    assert_eq!(num(&report, "workers"), 50.0);
    assert_eq!(report["cycle_seconds"].as_array().map(Vec::len), Some(2));
    assert_eq!(num(&report, "statuses.ready"), 50.0, "{report}");
    for kind in ["list", "detail"] {
        let stats = &report[kind];
        assert_eq!(num(stats, "errors"), 0.0, "{kind}: {report}");
        // Every client makes at least one request of each kind.
        assert!(num(stats, "requests") >= 5.0, "{kind}: {report}");
        let (p50, p99, max) = (
            num(stats, "p50_ms"),
            num(stats, "p99_ms"),
            num(stats, "max_ms"),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{kind}: {report}");
    }
    assert!(report["list_query"].as_str().unwrap().contains("sort="));
    let events = &report["events"];
    assert_eq!(events["stream"], "worker");
    assert_eq!(num(events, "subscribers"), 20.0);
    assert_eq!(num(events, "connect_errors"), 0.0, "{report}");
    // One synced event per cycle for the one worker each subscriber follows.
    assert_eq!(num(events, "expected"), 40.0, "{report}");
    assert_eq!(num(events, "delivered"), 40.0, "{report}");
    assert_eq!(num(events, "dropped_clients"), 0.0, "{report}");
    assert!(num(events, "received") >= 40.0, "{report}");
    assert!(num(events, "p50_ms") <= num(events, "max_ms"), "{report}");
    assert!(num(&report, "open_files_limit") >= num(&report, "open_fds_peak"));
}

/// `--stream fleet --store postgres`: every subscriber of the unfiltered stream gets every
/// worker's synced event, with the engine and the API on a throwaway PostgreSQL server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_api_on_postgres_should_deliver_every_fleet_event_to_every_subscriber() {
    let report = bench_report(&[
        "api",
        "--workers",
        "10",
        "--clients",
        "2",
        "--client-interval",
        "10ms",
        "--subscribers",
        "5",
        "--stream",
        "fleet",
        "--store",
        "postgres",
        "--listen-base",
        "127.114.1.1",
        "--latency-ms",
        "1",
    ])
    .await;
    assert_eq!(report["store"], "postgres");
    assert_eq!(
        num(&report, "list.errors") + num(&report, "detail.errors"),
        0.0,
        "{report}"
    );
    let events = &report["events"];
    assert_eq!(events["stream"], "fleet");
    assert_eq!(num(events, "expected"), 50.0, "{report}");
    assert_eq!(num(events, "delivered"), 50.0, "{report}");
    assert_eq!(num(events, "dropped_clients"), 0.0, "{report}");
}

#[tokio::test]
async fn bench_api_should_refuse_an_api_address_off_loopback_before_starting() {
    let out = Command::new(CCM)
        .args(["bench", "api", "--api-listen", "10.1.2.3"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "a configuration error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--api-listen"), "{stderr}");
    assert!(!stderr.contains("starting the simulator"), "{stderr}");
}
