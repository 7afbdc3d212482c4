//! Three `ccm serve` replicas as real processes on one PostgreSQL (Debian's server, started by
//! the store's testkit), against moto (EC2) and `ccm sim` (300 CML workers): nothing faked in
//! between. The instances are created in moto with the `ccm:cml-endpoint` tag pointing each at
//! a simulator worker, and imported by tag. The simulator counts requests per `User-Agent`
//! (each replica names itself in it) and detects double polls (one worker called by two
//! replicas less than a window apart), which must stay at zero throughout: through a stop
//! seen on another replica's event stream, a sign-out, a kill -9, and a replica cut off from
//! the database and let back in.
//!
//! Every wait is on a condition with a deadline (generous: the machine may be loaded); the
//! measured takeover time is printed, not asserted (targets live in `ccm bench failover`).
//! Addresses 127.120.x are this file's.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use ccm_cloud::{CloudProvider, RunSpec};
use ccm_cloud_aws::{AwsCloud, AwsConfig, Secret};
use ccm_domain::{AmiId, InstanceType, Region};
use ccm_store::testkit::TestPostgres;
use serde_json::{Value, json};

mod common;
use common::{Api, Proc, free_port, wait_for};

const CCM: &str = env!("CARGO_BIN_EXE_ccm");
const TOKEN: &str = "ccm_replicas_e2e_admin_token_0123456789";
const WORKERS: usize = 300;
/// The CML controller image moto offers (`ccm_cloud_aws::moto::AMIS_JSON`).
const IMAGE: &str = "ami-0c31c0de00290000a";
const ROLE_PASSWORD: &str = "replica-pw";
/// Long enough for a sync's burst of calls to one worker (milliseconds), shorter than the
/// least gap of a lease handover here (`lease_ttl / 5` = 1.2 s).
const DOUBLE_POLL_WINDOW: &str = "500ms";
const LONG: Duration = Duration::from_secs(120);

/// What a replica puts in its CML requests' `User-Agent`.
fn agent(replica: &str) -> String {
    format!("ccm/{} (replica {replica})", env!("CARGO_PKG_VERSION"))
}

struct Replica {
    name: &'static str,
    api: Api,
    proc: Proc,
}

/// The simulator's control API.
struct SimControl {
    http: reqwest::Client,
    base: String,
}

impl SimControl {
    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn act(&self, body: Value) {
        self.http
            .post(format!("{}/actions", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }

    /// Each worker's requests per user agent.
    async fn agents(&self) -> Vec<BTreeMap<String, u64>> {
        let list = self.get("/workers").await;
        list["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| serde_json::from_value(w["counters"]["by_agent"].clone()).unwrap())
            .collect()
    }

    /// Each worker's latest caller.
    async fn last_agents(&self) -> Vec<Option<String>> {
        let list = self.get("/workers").await;
        list["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["counters"]["last_agent"].as_str().map(str::to_owned))
            .collect()
    }

    /// Fails with the examples when any double poll was seen.
    async fn assert_no_double_polls(&self, when: &str) {
        let c = self.get("/counters").await;
        assert_eq!(
            c["double_polls"], 0,
            "double polls {when}: {}",
            c["double_poll_examples"]
        );
    }
}

/// Requests to each worker from agents other than `but`.
fn others(all: &[BTreeMap<String, u64>], but: &str) -> Vec<u64> {
    all.iter()
        .map(|m| {
            m.iter()
                .filter(|(a, _)| a.as_str() != but)
                .map(|(_, n)| n)
                .sum()
        })
        .collect()
}

fn config(name: &str, port: u16, url: &str, moto: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[log]
level = "info"
[database]
url = "{url}"
[cluster]
replica_id = "{name}"
lease_ttl = "6s"
renew_interval = "1s"
[aws]
regions = ["us-east-1"]
endpoint_url = "{moto}"
access_key_id = "testing"
secret_access_key = "testing"
operation_timeout = "20s"
[cml.endpoint]
scheme = "http"
[import]
tag = "ccm:fleet=replicas"
[auth]
tokens = [{{ name = "e2e", role = "admin", sha256 = "{hash}" }}]
[polling]
ec2_enabled = true
ec2_interval = "30s"
cml_enabled = true
cml_interval = "3s"
metrics_enabled = false
labs_enabled = false
activity_enabled = false
"#,
        hash = ccm_api::hash_token(TOKEN),
    )
}

async fn ready(r: &mut Replica, want: bool) {
    let what = format!("replica {} readyz {want}", r.name);
    let url = format!("{}/readyz", r.api.base);
    let http = r.api.http.clone();
    r.proc.assert_alive();
    wait_for(&what, LONG, || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let ok = http
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            (ok == want).then_some(())
        }
    })
    .await;
}

/// Reads an event stream until a chunk holds every one of `needles` (bounded).
async fn stream_shows(resp: &mut reqwest::Response, needles: &[&str]) -> bool {
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(chunk)) = resp.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen
                .split("\n\n")
                .any(|ev| needles.iter().all(|n| ev.contains(n)))
            {
                return true;
            }
        }
        false
    })
    .await;
    found.unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_should_share_the_fleet_take_over_from_a_dead_one_and_never_double_poll() {
    let dir = tempfile::tempdir().unwrap();
    let pg = TestPostgres::start().unwrap_or_else(|e| panic!("{e}"));
    let db = pg.create_database().await.unwrap();
    let moto = ccm_cloud_aws::moto::Moto::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // The CML fleet, with its control API.
    let control = format!("127.0.0.1:{}", free_port());
    let endpoints_file = dir.path().join("endpoints.txt");
    let mut sim = Proc::spawn(
        "sim",
        Command::new(CCM)
            .args(["sim", "--workers", &WORKERS.to_string(), "--port", "0"])
            .args(["--listen-base", "127.120.0.1", "--control", &control])
            .arg("--endpoints-out")
            .arg(&endpoints_file),
        dir.path(),
    );
    let endpoints: Vec<String> = wait_for("the simulator's endpoints", LONG, || {
        let text = std::fs::read_to_string(&endpoints_file).unwrap_or_default();
        let urls: Vec<String> = text.lines().map(str::to_owned).collect();
        std::future::ready((urls.len() == WORKERS).then_some(urls))
    })
    .await;
    sim.assert_alive();
    let sim = SimControl {
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(LONG)
            .build()
            .unwrap(),
        base: format!("http://{control}"),
    };
    sim.act(json!({"action": "double_poll_window", "window": DOUBLE_POLL_WINDOW}))
        .await;

    // The instances, in moto: each tagged with its simulator worker's URL and the fleet tag.
    let aws = Arc::new(
        AwsCloud::connect(&AwsConfig {
            regions: vec![Region::parse("us-east-1").unwrap()],
            endpoint_url: Some(url::Url::parse(&moto.url).unwrap()),
            access_key_id: Some("testing".to_owned()),
            secret_access_key: Some(Secret::new("testing")),
            ..AwsConfig::default()
        })
        .await
        .unwrap(),
    );
    for chunk in endpoints.chunks(10) {
        let mut set = tokio::task::JoinSet::new();
        for url in chunk {
            let aws = aws.clone();
            let mut spec = RunSpec::new(
                AmiId::parse(IMAGE).unwrap(),
                InstanceType::parse("m5.large").unwrap(),
                "replica-e2e",
            );
            spec.detailed_monitoring = false;
            spec.tags.insert("ccm:cml-endpoint".into(), url.clone());
            spec.tags.insert("ccm:fleet".into(), "replicas".into());
            set.spawn(async move {
                aws.run_instance(&Region::parse("us-east-1").unwrap(), &spec)
                    .await
                    .unwrap()
            });
        }
        while let Some(done) = set.join_next().await {
            done.unwrap();
        }
    }

    // Three replicas, each with its own database role (so that one can be cut off).
    let mut replicas = Vec::new();
    for name in ["a", "b", "c"] {
        pg.execute(&format!(
            "CREATE ROLE ccm_{name} LOGIN SUPERUSER PASSWORD '{ROLE_PASSWORD}'"
        ))
        .await
        .unwrap();
        let url = db.expose().replacen(
            &format!("postgres:{}@", pg.password()),
            &format!("ccm_{name}:{ROLE_PASSWORD}@"),
            1,
        );
        let port = free_port();
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config(name, port, &url, &moto.url)).unwrap();
        let proc = Proc::spawn(
            match name {
                "a" => "serve-a",
                "b" => "serve-b",
                _ => "serve-c",
            },
            Command::new(CCM)
                .args(["serve", "--config"])
                .arg(&path)
                .current_dir(dir.path())
                .env_remove("CCM_CONFIG"),
            dir.path(),
        );
        let mut r = Replica {
            name,
            // Longer still: the import of 300 workers, one transaction each, took over two
            // minutes when every core was busy (load 15).
            api: Api::with_timeout(port, TOKEN, LONG * 3),
            proc,
        };
        ready(&mut r, true).await;
        replicas.push(r);
    }

    // Import by tag, on one replica.
    let import_started = Instant::now();
    let (status, report) = replicas[0]
        .api
        .call(
            reqwest::Method::POST,
            "/api/v1/workers/import",
            Some(json!({"configured": true, "all": true})),
        )
        .await;
    assert!((200..300).contains(&status), "{status} {report}");
    assert_eq!(
        report["imported"].as_array().unwrap().len(),
        WORKERS,
        "{report}"
    );
    println!(
        "import of {WORKERS} workers by tag: {:.1} s",
        import_started.elapsed().as_secs_f64()
    );

    // Every worker polled, by the three replicas, each of a part.
    let ccm_agents: Vec<String> = ["a", "b", "c"].into_iter().map(agent).collect();
    let (simr, agents_r) = (&sim, &ccm_agents);
    wait_for(
        "every worker polled by a replica, all three polling",
        LONG,
        move || async move {
            let last = simr.last_agents().await;
            let all = last
                .iter()
                .all(|a| a.as_ref().is_some_and(|a| agents_r.contains(a)));
            let each = agents_r
                .iter()
                .all(|want| last.iter().any(|a| a.as_ref() == Some(want)));
            (all && each).then_some(())
        },
    )
    .await;
    // Settled: the same owners one full poll round later (the joins' handovers are over).
    let mut settled = false;
    for _ in 0..20 {
        let owners = sim.last_agents().await;
        let counts = sim.agents().await;
        let counts = &counts;
        wait_for("one more poll of every worker", LONG, move || async move {
            let now = simr.agents().await;
            let all = now
                .iter()
                .zip(counts)
                .all(|(n, c)| n.values().sum::<u64>() > c.values().sum::<u64>());
            all.then_some(())
        })
        .await;
        if sim.last_agents().await == owners {
            settled = true;
            break;
        }
    }
    assert!(settled, "ownership never settled");
    // From here on, any double poll fails the test.
    sim.act(json!({"action": "reset_counters"})).await;

    // Workers as ccm sees them: id and the simulator worker each one is.
    let (_, list) = replicas[0]
        .api
        .call(reqwest::Method::GET, "/api/v1/workers?limit=1000", None)
        .await;
    let index_of: BTreeMap<String, usize> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let endpoint = w["endpoint"].as_str().unwrap();
            let index = endpoints.iter().position(|e| e == endpoint).unwrap();
            (w["id"].as_str().unwrap().to_owned(), index)
        })
        .collect();
    assert_eq!(index_of.len(), WORKERS);

    // A stop sent to A shows on C's event stream.
    let (stopped_id, stopped_index) = index_of
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), *v))
        .unwrap();
    let mut stream_c = replicas[2]
        .api
        .http
        .get(format!("{}/api/v1/events", replicas[2].api.base))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .unwrap();
    assert_eq!(stream_c.status().as_u16(), 200);
    let (status, body) = replicas[0]
        .api
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/workers/{stopped_id}/stop"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(
        stream_shows(&mut stream_c, &["ccm.worker.action_requested", &stopped_id]).await,
        "the stop on replica a never showed on replica c's event stream"
    );
    drop(stream_c);

    // A sign-out on A ends the session on B: its API answers 401, its open stream closes.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let signed_in = http
        .post(format!("{}/api/v1/session", replicas[0].api.base))
        .json(&json!({"token": TOKEN}))
        .send()
        .await
        .unwrap();
    assert!(signed_in.status().is_success(), "{}", signed_in.status());
    let cookie = signed_in
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.contains("ccm_session="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let session: Value = signed_in.json().await.unwrap();
    let csrf = session["csrf_token"]
        .as_str()
        .expect("a csrf token")
        .to_owned();
    let on_b = |path: &str| {
        http.get(format!("{}{path}", replicas[1].api.base))
            .header(reqwest::header::COOKIE, &cookie)
    };
    assert_eq!(on_b("/api/v1/session").send().await.unwrap().status(), 200);
    let mut stream_b = on_b("/api/v1/events").send().await.unwrap();
    assert_eq!(stream_b.status().as_u16(), 200);
    let out = http
        .delete(format!("{}/api/v1/session", replicas[0].api.base))
        .header(reqwest::header::COOKIE, &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert!(out.status().is_success(), "sign-out: {}", out.status());
    let on_b_r = &on_b;
    wait_for(
        "the session ended on replica b",
        Duration::from_secs(30),
        move || async move {
            let s = on_b_r("/api/v1/session").send().await.unwrap().status();
            (s == 401).then_some(())
        },
    )
    .await;
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(_)) = stream_b.chunk().await {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "replica b's event stream of the ended session stayed open"
    );
    sim.assert_no_double_polls("before the kill").await;

    // kill -9 C: every worker it polled is polled again by A or B.
    let victim = agent("c");
    let last = sim.last_agents().await;
    let theirs: Vec<usize> = (0..WORKERS)
        .filter(|i| *i != stopped_index && last[*i].as_deref() == Some(victim.as_str()))
        .collect();
    assert!(
        theirs.len() > WORKERS / 10,
        "c polled only {} workers",
        theirs.len()
    );
    let before = others(&sim.agents().await, &victim);
    let killed = Instant::now();
    replicas[2].proc.kill9();
    let (theirs_r, before_r, victim_r) = (&theirs, &before, &victim);
    wait_for(
        "c's workers polled again by a or b",
        LONG,
        move || async move {
            let now = others(&simr.agents().await, victim_r);
            theirs_r
                .iter()
                .all(|i| now[*i] > before_r[*i])
                .then_some(())
        },
    )
    .await;
    println!(
        "takeover after kill -9: every one of the {} workers of replica c polled again after {:.1} s",
        theirs.len(),
        killed.elapsed().as_secs_f64()
    );
    sim.assert_no_double_polls("after the kill").await;

    // B cut off from the database (its role may not log in, its connections are ended): it
    // stops polling before its leases expire, A takes its workers over; let back in, it rejoins.
    let cut = agent("b");
    let last = sim.last_agents().await;
    let theirs: Vec<usize> = (0..WORKERS)
        .filter(|i| *i != stopped_index && last[*i].as_deref() == Some(cut.as_str()))
        .collect();
    assert!(!theirs.is_empty(), "b polls nothing");
    let before = others(&sim.agents().await, &cut);
    pg.execute(
        "ALTER ROLE ccm_b NOLOGIN; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'ccm_b'",
    )
    .await
    .unwrap();
    let cut_at = Instant::now();
    let (theirs_r, before_r, cut_r) = (&theirs, &before, &cut);
    wait_for("b's workers taken over by a", LONG, move || async move {
        let now = others(&simr.agents().await, cut_r);
        theirs_r
            .iter()
            .all(|i| now[*i] > before_r[*i])
            .then_some(())
    })
    .await;
    println!(
        "takeover from a replica cut off the database: {} workers after {:.1} s",
        theirs.len(),
        cut_at.elapsed().as_secs_f64()
    );
    ready(&mut replicas[1], false).await;
    let polled_by_b = move |all: &[BTreeMap<String, u64>]| -> u64 {
        all.iter().filter_map(|m| m.get(cut_r)).sum()
    };
    let b_before = polled_by_b(&sim.agents().await);
    sim.assert_no_double_polls("while b is cut off").await;
    pg.execute("ALTER ROLE ccm_b LOGIN").await.unwrap();
    ready(&mut replicas[1], true).await;
    wait_for("b polling again", LONG, move || async move {
        (polled_by_b(&simr.agents().await) > b_before).then_some(())
    })
    .await;
    sim.assert_no_double_polls("after b rejoined").await;

    // The on-demand refresh throttle and single flight hold across replicas: the same worker
    // asked on A and B at once runs once; the other is skipped as throttled (the claim is in
    // the database), and so is a repeat on B right after. (Last in the test: a refresh is a
    // command any replica runs, so the simulator may see it overlap the owner's poll.)
    let (refresh_id, _) = index_of.iter().find(|(id, _)| **id != stopped_id).unwrap();
    let path = format!("/api/v1/workers/{refresh_id}/refresh");
    let (on_a, on_b) = tokio::join!(
        replicas[0].api.call(reqwest::Method::POST, &path, None),
        replicas[1].api.call(reqwest::Method::POST, &path, None),
    );
    assert_eq!((on_a.0, on_b.0), (200, 200), "{} {}", on_a.1, on_b.1);
    let mut outcomes: Vec<(String, Option<String>)> = [&on_a.1, &on_b.1]
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap_or_default().to_owned(),
                r["reason"].as_str().map(str::to_owned),
            )
        })
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("refreshed".to_owned(), None),
            ("skipped".to_owned(), Some("throttled".to_owned()))
        ],
        "one refresh across replicas: {} {}",
        on_a.1,
        on_b.1
    );
    let (_, again) = replicas[1]
        .api
        .call(reqwest::Method::POST, &path, None)
        .await;
    assert_eq!(again["outcome"], "skipped", "{again}");
    assert_eq!(again["reason"], "throttled", "{again}");
    assert!(
        again["retry_in_seconds"].as_u64().is_some_and(|s| s >= 1),
        "{again}"
    );
    let (_, replicas_view) = replicas[0]
        .api
        .call(reqwest::Method::GET, "/api/v1/system/replicas", None)
        .await;
    assert!(
        !replicas_view.to_string().contains("refresh:"),
        "refresh claims are not shown as work leases: {replicas_view}"
    );
    replicas[0].proc.assert_alive();
    replicas[1].proc.assert_alive();
}

/// `ccm bench failover` at a small size, short leases and intervals: the report follows from
/// the run (its measured numbers are the benchmark's business, BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_failover_should_report_the_takeover_of_a_killed_replica_and_no_double_polls() {
    let pg = TestPostgres::start().unwrap_or_else(|e| panic!("{e}"));
    let db = pg.create_database().await.unwrap();
    let moto = ccm_cloud_aws::moto::Moto::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let run = tokio::process::Command::new(CCM)
        .args(["bench", "failover", "--replicas", "3", "--workers", "60"])
        .args(["--listen-base", "127.120.4.1", "--lease-ttl", "6s"])
        .args(["--renew-interval", "1s", "--cml-interval", "3s"])
        .args([
            "--double-poll-window",
            DOUBLE_POLL_WINDOW,
            "--timeout",
            "240s",
        ])
        .env("CCM_BENCH_DATABASE_URL", db.expose())
        .env("CCM_BENCH_AWS_ENDPOINT_URL", &moto.url)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("ccm bench failover should end within its --timeout")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ccm bench failover failed:\n{stderr}");
    assert!(
        !stderr.contains(pg.password()),
        "the database password leaked"
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{stderr}"));
    println!("{report}");
    assert_eq!(report["benchmark"], "failover");
    assert_eq!(report["replicas"], 3);
    assert_eq!(report["workers"], 60);
    let killed = report["killed_replica_workers"].as_u64().unwrap();
    // The replica that polled the most of 60 workers among 3 polled at least a third.
    assert!((20..=60).contains(&killed), "{report}");
    let seconds = report["failover_seconds"].as_f64().unwrap();
    // A takeover cannot come before the killed replica's leases expire in the database:
    // at least lease_ttl − renew_interval after its last renewal.
    assert!(seconds >= 5.0, "{report}");
    assert_eq!(report["double_polls"], 0, "{report}");
    assert!(report["setup_seconds"].as_f64().unwrap() > 0.0);
}
