//! `ccm bench failover`: seconds from kill -9 of one `ccm serve` replica until every one of its
//! workers was polled again by the others, and the double polls seen meanwhile.
//!
//! Real processes throughout: `ccm sim` (the CML fleet, counting requests per `User-Agent`),
//! N `ccm serve` on one PostgreSQL database, and an AWS-compatible endpoint (moto) that holds
//! one instance per simulated worker, tagged `ccm:cml-endpoint` with its URL and imported by
//! the `ccm:fleet=failover-bench` tag. The database and the endpoint may be given (an empty
//! database: the bench imports into it); when they are not, a throwaway durable PostgreSQL
//! (Debian's package, as the tests use) and a moto server (`--moto-server`) are started.
//! Everything started here is stopped here.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use ccm_cloud::{CloudProvider, RunSpec};
use ccm_cloud_aws::{AwsCloud, AwsConfig, Secret};
use ccm_domain::{AmiId, InstanceType, Region};
use ccm_testbed::bench::{SimProcess, SimSpec};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The CML controller image the test moto offers (`ccm_cloud_aws::moto::AMIS_JSON`).
const DEFAULT_IMAGE: &str = "ami-0c31c0de00290000a";
const FLEET_TAG: (&str, &str) = ("ccm:fleet", "failover-bench");

/// `ccm bench failover` flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FailoverArgs {
    /// `ccm serve` replicas (one is killed).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=9))]
    pub(crate) replicas: u32,
    /// Simulated workers (one EC2 instance each).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=4000))]
    pub(crate) workers: u32,
    /// An empty PostgreSQL database for the replicas (`postgres://…`; never printed)
    /// [default: a throwaway durable server started for the run].
    #[arg(long, env = "CCM_BENCH_DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// The AWS-compatible endpoint holding the instances (a moto server)
    /// [default: `--moto-server` started for the run].
    #[arg(long, env = "CCM_BENCH_AWS_ENDPOINT_URL")]
    pub(crate) aws_endpoint_url: Option<url::Url>,
    /// The `moto_server` binary to start when no `--aws-endpoint-url` is given
    /// (`pip install 'moto[server]'`).
    #[arg(long, env = "CCM_MOTO_SERVER", value_name = "PATH")]
    pub(crate) moto_server: Option<PathBuf>,
    /// The image the instances are launched from.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub(crate) image: String,
    /// First loopback address of the simulated fleet (one address per worker).
    #[arg(long, default_value = "127.121.0.1")]
    pub(crate) listen_base: Ipv4Addr,
    /// `[cluster] lease_ttl` of the replicas.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub(crate) lease_ttl: Duration,
    /// `[cluster] renew_interval` of the replicas.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) renew_interval: Duration,
    /// `[polling] cml_interval` of the replicas.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    pub(crate) cml_interval: Duration,
    /// The simulator's double-poll window: one worker called by two replicas less than this
    /// apart counts as a double poll.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) double_poll_window: Duration,
    /// Give up after this long.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
}

/// A child killed (SIGKILL) when dropped; its output goes to `log`.
struct Kid {
    child: Child,
    log: PathBuf,
}

impl Kid {
    fn spawn(cmd: &mut Command, log: PathBuf) -> anyhow::Result<Self> {
        let out = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a child process")?;
        Ok(Self { child, log })
    }

    fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} exited ({status}):\n{}",
                self.log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }
}

/// Polls `probe` every 200 ms until it yields a value or `deadline` passes.
async fn until<T, F, Fut>(what: &str, deadline: Instant, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Each simulated worker's latest caller and requests per caller (`User-Agent`).
async fn poll_callers(
    sim: &SimProcess,
) -> anyhow::Result<Vec<(Option<String>, BTreeMap<String, u64>)>> {
    let list: Value = sim.get("/workers").await?;
    let workers = list["workers"].as_array().context("no workers list")?;
    workers
        .iter()
        .map(|w| {
            let c = &w["counters"];
            Ok((
                c["last_agent"].as_str().map(str::to_owned),
                serde_json::from_value(c["by_agent"].clone())?,
            ))
        })
        .collect()
}

fn replica_config(
    port: u16,
    id: &str,
    a: &FailoverArgs,
    aws: &url::Url,
    token_hash: &str,
) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[log]
level = "warn"
[cluster]
replica_id = "{id}"
lease_ttl = "{ttl}"
renew_interval = "{renew}"
[aws]
regions = ["us-east-1"]
endpoint_url = "{aws}"
access_key_id = "testing"
secret_access_key = "testing"
operation_timeout = "30s"
[cml.endpoint]
scheme = "http"
[import]
tag = "{tk}={tv}"
[auth]
tokens = [{{ name = "bench", role = "admin", sha256 = "{token_hash}" }}]
[polling]
ec2_enabled = true
ec2_interval = "5m"
cml_enabled = true
cml_interval = "{cml}"
metrics_enabled = false
labs_enabled = false
activity_enabled = false
"#,
        ttl = humantime::format_duration(a.lease_ttl),
        renew = humantime::format_duration(a.renew_interval),
        aws = aws,
        tk = FLEET_TAG.0,
        tv = FLEET_TAG.1,
        cml = humantime::format_duration(a.cml_interval),
    )
}

fn agent(id: &str) -> String {
    ccm_cml::user_agent(Some(id))
}

/// Runs the benchmark; the report as JSON.
pub(crate) async fn run(a: FailoverArgs) -> anyhow::Result<Value> {
    let dir = std::env::temp_dir().join(format!("ccm-bench-failover-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = tokio::time::timeout(a.timeout, with_backends(&a, &dir)).await;
    let _ = std::fs::remove_dir_all(&dir);
    result.with_context(|| format!("the benchmark took longer than --timeout {:?}", a.timeout))?
}

/// Starts what was not given (PostgreSQL, moto), runs the measurement, stops them.
async fn with_backends(a: &FailoverArgs, dir: &Path) -> anyhow::Result<Value> {
    if a.aws_endpoint_url.is_none() && a.moto_server.is_none() {
        bail!(
            "give --aws-endpoint-url (a moto server) or --moto-server PATH (CCM_MOTO_SERVER) to start one"
        );
    }
    let mut _pg = None;
    let database_url = match &a.database_url {
        Some(url) => url.clone(),
        None => {
            let (server, url) = ccm_testbed::bench::throwaway_postgres().await?;
            _pg = Some(server);
            url.expose().to_owned()
        }
    };
    let mut _moto = None;
    let aws = match &a.aws_endpoint_url {
        Some(url) => url.clone(),
        None => {
            let Some(binary) = a.moto_server.clone() else {
                bail!("--moto-server is required without --aws-endpoint-url");
            };
            eprintln!("ccm bench: starting moto ({})", binary.display());
            let moto = ccm_cloud_aws::moto::Moto::start_with(binary)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let url = url::Url::parse(&moto.url)?;
            _moto = Some(moto);
            url
        }
    };
    measure(a, dir, &database_url, &aws).await
}

async fn measure(
    a: &FailoverArgs,
    dir: &Path,
    database_url: &str,
    aws_endpoint: &url::Url,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let deadline = started + a.timeout;
    let exe = std::env::current_exe().context("cannot find the ccm binary")?;
    let workers = a.workers as usize;

    // The CML fleet.
    let sim = SimProcess::start(
        &SimSpec {
            launcher: super::sim_launcher()?,
            workers: a.workers,
            listen_base: a.listen_base,
            port: 0,
            latency_ms: 0,
            faults: None,
            shard_size: a.workers,
            tls_ca_out: None,
            http2: false,
            nice: 0,
        },
        dir,
    )
    .await?;
    let endpoints = &sim.endpoints;
    sim.act(&json!({
        "action": "double_poll_window",
        "window": humantime::format_duration(a.double_poll_window).to_string(),
    }))
    .await?;

    // One instance per worker, tagged with its URL.
    let region = Region::parse("us-east-1")?;
    let aws = Arc::new(
        AwsCloud::connect(&AwsConfig {
            regions: vec![region.clone()],
            endpoint_url: Some(aws_endpoint.clone()),
            access_key_id: Some("testing".to_owned()),
            secret_access_key: Some(Secret::new("testing")),
            ..AwsConfig::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("aws endpoint: {e}"))?,
    );
    let image = AmiId::parse(&a.image)?;
    for chunk in endpoints.chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for url in chunk {
            let (aws, region) = (aws.clone(), region.clone());
            let mut spec = RunSpec::new(
                image.clone(),
                InstanceType::parse("m5.large")?,
                "failover-bench",
            );
            spec.detailed_monitoring = false;
            spec.tags.insert("ccm:cml-endpoint".into(), url.clone());
            spec.tags.insert(FLEET_TAG.0.into(), FLEET_TAG.1.into());
            set.spawn(async move { aws.run_instance(&region, &spec).await });
        }
        while let Some(done) = set.join_next().await {
            done?.map_err(|e| anyhow::anyhow!("run instance: {e}"))?;
        }
    }

    // The replicas.
    let token = ccm_api::generate_token();
    let hash = ccm_api::hash_token(&token);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let mut replicas = Vec::new();
    for i in 0..a.replicas {
        let id = format!("bench-{i}");
        let port = free_port()?;
        let path = dir.join(format!("{id}.toml"));
        std::fs::write(&path, replica_config(port, &id, a, aws_endpoint, &hash))?;
        let mut kid = Kid::spawn(
            Command::new(&exe)
                .args(["serve", "--config"])
                .arg(&path)
                .env_remove("CCM_CONFIG")
                .env("CCM_DATABASE__URL", database_url),
            dir.join(format!("{id}.log")),
        )?;
        let base = format!("http://127.0.0.1:{port}");
        until("a replica ready", deadline, || {
            let alive = kid.alive();
            let req = http.get(format!("{base}/readyz")).send();
            async move {
                alive?;
                Ok(req
                    .await
                    .is_ok_and(|r| r.status().is_success())
                    .then_some(()))
            }
        })
        .await?;
        replicas.push((id, base, kid));
    }
    let imported: Value = http
        .post(format!("{}/api/v1/workers/import", replicas[0].1))
        .bearer_auth(&token)
        .json(&json!({"configured": true, "all": true}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let n = imported["imported"].as_array().map_or(0, Vec::len);
    if n != workers {
        bail!("imported {n} of {workers} instances (is the database empty?): {imported}");
    }

    // Every worker polled by a replica, all replicas polling, ownership settled.
    let agents: Vec<String> = replicas.iter().map(|r| agent(&r.0)).collect();
    let sim = &sim;
    let agents_r = &agents;
    until("every worker polled", deadline, move || async move {
        let c = poll_callers(sim).await?;
        let all = c
            .iter()
            .all(|(last, _)| last.as_ref().is_some_and(|l| agents_r.contains(l)));
        let each = agents_r
            .iter()
            .all(|g| c.iter().any(|(last, _)| last.as_ref() == Some(g)));
        Ok((all && each).then_some(()))
    })
    .await?;
    let mut settled = false;
    for _ in 0..10 {
        let before = poll_callers(sim).await?;
        let before_r = &before;
        until("a full poll round", deadline, move || async move {
            let now = poll_callers(sim).await?;
            let all = now
                .iter()
                .zip(before_r)
                .all(|((_, n), (_, b))| n.values().sum::<u64>() > b.values().sum::<u64>());
            Ok(all.then_some(()))
        })
        .await?;
        let after = poll_callers(sim).await?;
        if after.iter().map(|c| &c.0).eq(before.iter().map(|c| &c.0)) {
            settled = true;
            break;
        }
    }
    if !settled {
        bail!("ownership never settled");
    }
    // Kill -9 the replica that polls the most workers; double polls count from here.
    let callers = poll_callers(sim).await?;
    sim.act(&json!({"action": "reset_counters"})).await?;
    let setup_seconds = started.elapsed().as_secs_f64();
    let (victim_index, victim) = agents
        .iter()
        .enumerate()
        .max_by_key(|(_, g)| {
            callers
                .iter()
                .filter(|(l, _)| l.as_deref() == Some(g.as_str()))
                .count()
        })
        .context("no replica")?;
    let victim = victim.clone();
    let theirs: Vec<usize> = (0..workers)
        .filter(|i| callers[*i].0.as_deref() == Some(victim.as_str()))
        .collect();
    let others = |c: &[(Option<String>, BTreeMap<String, u64>)], v: &str| -> Vec<u64> {
        c.iter()
            .map(|(_, m)| {
                m.iter()
                    .filter(|(g, _)| g.as_str() != v)
                    .map(|(_, n)| n)
                    .sum()
            })
            .collect()
    };
    let before = others(&poll_callers(sim).await?, &victim);
    let killed = Instant::now();
    replicas[victim_index].2.child.start_kill()?;
    let _ = replicas[victim_index].2.child.wait().await;
    let (theirs_r, before_r, victim_r, others_r) = (&theirs, &before, &victim, &others);
    until(
        "the killed replica's workers polled again",
        deadline,
        move || async move {
            let now = others_r(&poll_callers(sim).await?, victim_r);
            Ok(theirs_r
                .iter()
                .all(|i| now[*i] > before_r[*i])
                .then_some(()))
        },
    )
    .await?;
    let failover_seconds = killed.elapsed().as_secs_f64();
    for (i, r) in replicas.iter_mut().enumerate() {
        if i != victim_index {
            r.2.alive()?;
        }
    }
    let counters: Value = sim.get("/counters").await?;
    Ok(json!({
        "benchmark": "failover",
        "replicas": a.replicas,
        "workers": a.workers,
        "lease_ttl_seconds": a.lease_ttl.as_secs_f64(),
        "renew_interval_seconds": a.renew_interval.as_secs_f64(),
        "cml_interval_seconds": a.cml_interval.as_secs_f64(),
        "killed_replica": replicas[victim_index].0,
        "killed_replica_workers": theirs.len(),
        "failover_seconds": failover_seconds,
        "double_polls": counters["double_polls"],
        "double_poll_window_seconds": a.double_poll_window.as_secs_f64(),
        "double_poll_examples": counters["double_poll_examples"],
        "setup_seconds": setup_seconds,
    }))
}
