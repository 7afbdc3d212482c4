//! The API client commands: `ccm workers …`, `ccm labs …`, `ccm licence …`, `ccm system …`
//! and `ccm events`. They talk to a running ccm over HTTP (`--api-url`, `--token`), print
//! tables (or `--json`), and follow long operations on the event stream with a spinner.
//!
//! Exit codes: 0 ok, 1 failure, 2 usage, 3 not found, 4 conflict (the state does not allow
//! it), 5 not authenticated or not allowed.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use ccm_api::sse_client::{SseItem, SseReader};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

const EXIT_HELP: &str = "Exit codes: 0 ok, 1 failure, 2 usage, 3 not found, 4 conflict, 5 not authenticated or not allowed.";

/// Where the API is and how to talk to it (every client command takes these).
#[derive(Debug, Clone, Args)]
pub(crate) struct ApiArgs {
    /// Base URL of the ccm API.
    #[arg(
        long,
        env = "CCM_API_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    api_url: String,
    /// API token (a static token or an OIDC access token).
    #[arg(long, env = "CCM_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

/// An error answer of the API (problem+json), printed as one line.
#[derive(Debug, thiserror::Error)]
#[error("{status} {title}: {detail}")]
pub(crate) struct ApiFailure {
    status: u16,
    title: String,
    detail: String,
}

impl ApiFailure {
    /// The process exit code for this failure.
    pub(crate) fn exit_code(&self) -> u8 {
        match self.status {
            404 => 3,
            409 => 4,
            401 | 403 => 5,
            _ => 1,
        }
    }
}

/// The HTTP side: base URL, token, clients.
struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    stream: reqwest::Client,
}

impl Api {
    fn new(args: &ApiArgs) -> anyhow::Result<Self> {
        let base = args.api_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--api-url must start with http:// or https://, got {base:?}");
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        let stream = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            base,
            token: args.token.clone(),
            http,
            stream,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends, and turns an error answer into [`ApiFailure`].
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach the ccm API at {}", self.base))?;
        if res.status().is_success() || res.status().is_redirection() {
            return Ok(res);
        }
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        Err(ApiFailure {
            status: status.as_u16(),
            title: body["title"]
                .as_str()
                .or(status.canonical_reason())
                .unwrap_or("Error")
                .to_owned(),
            detail: body["detail"].as_str().unwrap_or("no details").to_owned(),
        }
        .into())
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = self.send(req).await?;
        if res.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        Ok(res.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.json(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.json(reqwest::Method::POST, path, body).await
    }

    /// Opens the event stream.
    async fn events(&self, query: &str, last_event_id: Option<&str>) -> anyhow::Result<SseReader> {
        let mut req = self
            .stream
            .get(format!("{}/api/v1/events{query}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        Ok(SseReader::new(self.send(req).await?))
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

// === output ===

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn worker_rows(items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|w| {
            let info = &w["sources"]["system_information"];
            vec![
                text(&w["id"]),
                text(&w["name"]),
                text(&w["ec2_state"]),
                text(&w["service"]["status"]),
                text(&w["region"]),
                text(&w["public_ip"]),
                text(&info["value"]["version"]),
                text(&info["freshness"]),
                text(&w["breaker"]["state"]),
            ]
        })
        .collect()
}

const WORKER_HEADERS: [&str; 9] = [
    "ID", "NAME", "STATE", "SERVICE", "REGION", "IP", "CML", "DATA", "BREAKER",
];

fn print_worker(w: &Value, as_json: bool) {
    if as_json {
        return print_json(w);
    }
    let s = &w["sources"];
    let age = |src: &Value| {
        format!(
            "{} ({}{})",
            text(&src["freshness"]),
            src["age_seconds"]
                .as_u64()
                .map(|a| format!("{a}s old"))
                .unwrap_or_else(|| "never read".into()),
            src["error"]["code"]
                .as_str()
                .map(|c| format!(", last error {c}"))
                .unwrap_or_default()
        )
    };
    let rows = [
        ("id", text(&w["id"])),
        ("name", text(&w["name"])),
        ("region", text(&w["region"])),
        (
            "instance",
            format!(
                "{} ({})",
                text(&w["instance_id"]),
                text(&w["instance_type"])
            ),
        ),
        ("state", text(&w["ec2_state"])),
        ("service", text(&w["service"]["status"])),
        ("endpoint", text(&w["endpoint"])),
        (
            "cml version",
            text(&s["system_information"]["value"]["version"]),
        ),
        ("system_information", age(&s["system_information"])),
        ("health", age(&s["health"])),
        ("stats", age(&s["stats"])),
        (
            "licence",
            format!(
                "{} — {}",
                text(&s["licence"]["value"]["registration"]),
                age(&s["licence"])
            ),
        ),
        (
            "labs",
            format!(
                "{} — {}",
                text(&s["labs_count"]["value"]),
                age(&s["labs_count"])
            ),
        ),
        (
            "cloudwatch cpu %",
            format!(
                "{} — {}",
                text(&s["cloudwatch"]["value"]["cpu_percent"]),
                age(&s["cloudwatch"])
            ),
        ),
        ("breaker", text(&w["breaker"]["state"])),
        ("idle detection", text(&w["monitoring"]["idle_detection"])),
        (
            "idle policy",
            format!(
                "{} {}",
                text(&w["monitoring"]["idle"]["action"]),
                text(&w["monitoring"]["idle"]["keep_reason"])
            ),
        ),
        ("tags", w["tags"].to_string()),
        (
            "updated",
            format!("{} by {}", text(&w["updated_at"]), text(&w["updated_by"])),
        ),
    ];
    for (k, v) in rows {
        println!("{k:<20} {v}");
    }
}

// === following long operations ===

/// Follows the worker's events until its EC2 state is `target` (or `failed`), with a spinner.
async fn wait_for_state(
    api: &Api,
    id: &str,
    target: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new_spinner();
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(format!("waiting for {id} to be {target}"));
    let follow = async {
        let mut events = api
            .events(&format!("?worker={id}&type=ccm.worker.*"), None)
            .await?;
        while let Some(item) = events.next().await {
            let SseItem::Message(m) = item? else { continue };
            let data: Value = serde_json::from_str(&m.data).unwrap_or(Value::Null);
            let state = match m.event_type() {
                "ccm.worker.snapshot" => data["data"]["worker"]["ec2_state"].clone(),
                "ccm.worker.state_changed" => data["data"]["to"].clone(),
                "ccm.worker.provisioning_failed" => json!("failed"),
                "ccm.worker.deleted" => bail!("the worker was deleted"),
                "reset" => bail!(
                    "the event stream was reset; check the worker with `ccm workers get {id}`"
                ),
                _ => continue,
            };
            let state = text(&state);
            bar.set_message(format!("{id}: {state} (waiting for {target})"));
            if state == target {
                return Ok(());
            }
            if state == "failed" || (state == "terminated" && target != "terminated") {
                bail!("the worker became {state}");
            }
        }
        bail!("the event stream ended before the worker was {target}")
    };
    let outcome = tokio::time::timeout(timeout, follow).await;
    bar.finish_and_clear();
    match outcome {
        Ok(r) => r,
        Err(_) => bail!(
            "the worker was not {target} after {}",
            humantime::format_duration(timeout)
        ),
    }
}

// === workers ===

/// `ccm workers …`: the workers, through the API.
#[derive(Debug, Args)]
#[command(after_help = EXIT_HELP)]
pub(crate) struct WorkersCmd {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    action: WorkersAction,
}

#[derive(Debug, Subcommand)]
enum WorkersAction {
    /// List workers (filter, sort, page).
    List {
        /// Only this region (repeatable).
        #[arg(long)]
        region: Vec<String>,
        /// Only this EC2 state (repeatable): running, stopped, …
        #[arg(long)]
        state: Vec<String>,
        /// Only this service status (repeatable): ready, degraded, unavailable, unknown.
        #[arg(long)]
        service: Vec<String>,
        /// Text in the name, id or instance id.
        #[arg(long, short)]
        query: Option<String>,
        /// Sort key: name, created, updated, state, service, region.
        #[arg(long, default_value = "name")]
        sort: String,
        /// Sort descending.
        #[arg(long)]
        desc: bool,
        /// Page size (1–1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Rows to skip.
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    /// Show one worker, with the freshness of every source.
    Get {
        /// Worker id.
        id: String,
    },
    /// Provision a new worker.
    Create {
        /// Display name.
        name: String,
        /// Region (default: the configured one).
        #[arg(long)]
        region: Option<String>,
        /// Instance type (default: the configured one).
        #[arg(long)]
        instance_type: Option<String>,
        /// Image id.
        #[arg(long, conflicts_with = "ami_name")]
        ami_id: Option<String>,
        /// Newest image whose name matches.
        #[arg(long)]
        ami_name: Option<String>,
        /// Tag KEY=VALUE (repeatable).
        #[arg(long, value_parser = key_value)]
        tag: Vec<(String, String)>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Import existing instances.
    Import {
        /// Instance ids.
        instance_ids: Vec<String>,
        /// Instances launched from this image.
        #[arg(long)]
        ami_id: Option<String>,
        /// Instances launched from images whose name matches.
        #[arg(long)]
        ami_name: Option<String>,
        /// The configured [import] filter.
        #[arg(long)]
        configured: bool,
        /// Import every match.
        #[arg(long)]
        all: bool,
        /// Region to search.
        #[arg(long)]
        region: Option<String>,
    },
    /// Start a stopped worker.
    Start(IdWait),
    /// Stop a running worker.
    Stop(IdWait),
    /// Pause a running worker (a manual stop).
    Pause(IdWait),
    /// Resume a paused worker.
    Resume(IdWait),
    /// Terminate a worker's instance, for good.
    Terminate {
        #[command(flatten)]
        target: IdWait,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Delete a worker record (the instance is untouched).
    Delete {
        /// Worker id.
        id: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Refresh now (EC2, CML, labs).
    Refresh {
        /// Worker id.
        id: String,
    },
    /// Set and remove tags.
    Tags {
        /// Worker id.
        id: String,
        /// Tag KEY=VALUE to set (repeatable).
        #[arg(long, value_parser = key_value)]
        set: Vec<(String, String)>,
        /// Tag key to remove (repeatable).
        #[arg(long)]
        remove: Vec<String>,
    },
    /// Switch idle detection (auto-pause) for a worker.
    Idle {
        /// Worker id.
        id: String,
        /// on or off.
        switch: OnOff,
    },
    /// Keep a worker awake: no idle pause and no schedule stop until then (ends by itself).
    Snooze {
        /// Worker id.
        id: String,
        /// For this long from now (e.g. 1h, 4h, 90m).
        #[arg(long = "for", value_name = "DURATION", conflicts_with_all = ["until", "clear"])]
        for_: Option<String>,
        /// Until this time (RFC 3339, e.g. 2026-03-03T09:00:00+01:00).
        #[arg(long, conflicts_with = "clear")]
        until: Option<String>,
        /// End the snooze now.
        #[arg(long)]
        clear: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Args)]
struct WaitArgs {
    /// Follow the events until the worker reaches its target state.
    #[arg(long)]
    wait: bool,
    /// How long to wait at most.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Clone, Args)]
struct IdWait {
    /// Worker id.
    id: String,
    #[command(flatten)]
    wait: WaitArgs,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn confirm(question: &str) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("{question} — pass --yes to confirm without a terminal");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        bail!("cancelled");
    }
    Ok(())
}

/// Runs `ccm workers …`.
pub(crate) fn workers(cmd: WorkersCmd) -> anyhow::Result<()> {
    runtime()?.block_on(workers_async(cmd))
}

async fn workers_async(cmd: WorkersCmd) -> anyhow::Result<()> {
    let api = Api::new(&cmd.api)?;
    let as_json = cmd.api.json;
    let lifecycle = |id: &str, action: &str| format!("/api/v1/workers/{id}/{action}");
    match cmd.action {
        WorkersAction::List {
            region,
            state,
            service,
            query,
            sort,
            desc,
            limit,
            offset,
        } => {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for r in &region {
                q.append_pair("region", r);
            }
            for s in &state {
                q.append_pair("state", s);
            }
            for s in &service {
                q.append_pair("service", s);
            }
            if let Some(t) = &query {
                q.append_pair("q", t);
            }
            q.append_pair("sort", &sort)
                .append_pair("order", if desc { "desc" } else { "asc" })
                .append_pair("limit", &limit.to_string())
                .append_pair("offset", &offset.to_string());
            let page = api.get(&format!("/api/v1/workers?{}", q.finish())).await?;
            if as_json {
                print_json(&page);
            } else {
                let items = page["items"].as_array().cloned().unwrap_or_default();
                print_table(&WORKER_HEADERS, &worker_rows(&items));
                eprintln!("{} of {} workers", items.len(), text(&page["total"]));
            }
        }
        WorkersAction::Get { id } => {
            print_worker(&api.get(&format!("/api/v1/workers/{id}")).await?, as_json)
        }
        WorkersAction::Create {
            name,
            region,
            instance_type,
            ami_id,
            ami_name,
            tag,
            wait,
        } => {
            let body = json!({
                "name": name, "region": region, "instance_type": instance_type,
                "ami_id": ami_id, "ami_name_pattern": ami_name,
                "tags": tag.into_iter().collect::<std::collections::BTreeMap<String, String>>(),
            });
            let body = strip_nulls(body);
            let w = api.post("/api/v1/workers", Some(body)).await?;
            let id = text(&w["id"]);
            if wait.wait {
                wait_for_state(&api, &id, "running", wait.timeout).await?;
                print_worker(&api.get(&format!("/api/v1/workers/{id}")).await?, as_json);
            } else {
                print_worker(&w, as_json);
            }
        }
        WorkersAction::Import {
            instance_ids,
            ami_id,
            ami_name,
            configured,
            all,
            region,
        } => {
            let mut body = json!({"configured": configured, "all": all, "region": region,
                                  "ami_id": ami_id, "ami_name_pattern": ami_name});
            if !instance_ids.is_empty() {
                body["instance_ids"] = json!(instance_ids);
            }
            let r = api
                .post("/api/v1/workers/import", Some(strip_nulls(body)))
                .await?;
            if as_json {
                print_json(&r);
            } else {
                println!(
                    "matched {}, imported {}, already workers {}, skipped {}",
                    text(&r["matched"]),
                    r["imported"].as_array().map_or(0, Vec::len),
                    r["existing"].as_array().map_or(0, Vec::len),
                    r["skipped"].as_array().map_or(0, Vec::len),
                );
                for id in r["imported"].as_array().into_iter().flatten() {
                    println!("imported {}", text(id));
                }
                for s in r["skipped"].as_array().into_iter().flatten() {
                    println!(
                        "skipped {}: {}",
                        text(&s["instance_id"]),
                        text(&s["reason"])
                    );
                }
            }
        }
        WorkersAction::Start(t) => {
            lifecycle_cmd(&api, &t, lifecycle(&t.id, "start"), "running", as_json).await?
        }
        WorkersAction::Resume(t) => {
            lifecycle_cmd(&api, &t, lifecycle(&t.id, "resume"), "running", as_json).await?
        }
        WorkersAction::Stop(t) => {
            lifecycle_cmd(&api, &t, lifecycle(&t.id, "stop"), "stopped", as_json).await?
        }
        WorkersAction::Pause(t) => {
            lifecycle_cmd(&api, &t, lifecycle(&t.id, "pause"), "stopped", as_json).await?
        }
        WorkersAction::Terminate { target, yes } => {
            if !yes {
                confirm(&format!(
                    "Terminate the instance of worker {}? This cannot be undone.",
                    target.id
                ))?;
            }
            lifecycle_cmd(
                &api,
                &target,
                lifecycle(&target.id, "terminate"),
                "terminated",
                as_json,
            )
            .await?;
        }
        WorkersAction::Delete { id, yes } => {
            if !yes {
                confirm(&format!(
                    "Delete the record of worker {id}? The instance is not touched."
                ))?;
            }
            api.json(
                reqwest::Method::DELETE,
                &format!("/api/v1/workers/{id}"),
                None,
            )
            .await?;
            eprintln!("deleted {id}");
        }
        WorkersAction::Refresh { id } => {
            let r = api.post(&lifecycle(&id, "refresh"), None).await?;
            if as_json {
                print_json(&r);
            } else {
                match text(&r["outcome"]).as_str() {
                    "skipped" => println!(
                        "skipped: {}{}",
                        text(&r["reason"]),
                        r["retry_in_seconds"]
                            .as_u64()
                            .map(|s| format!(" (retry in {s}s)"))
                            .unwrap_or_default()
                    ),
                    other => println!("{other}"),
                }
                print_worker(&r["worker"], false);
            }
        }
        WorkersAction::Tags { id, set, remove } => {
            let body = json!({
                "set": set.into_iter().collect::<std::collections::BTreeMap<String, String>>(),
                "remove": remove,
            });
            let w = api
                .json(reqwest::Method::PATCH, &lifecycle(&id, "tags"), Some(body))
                .await?;
            if as_json {
                print_json(&w);
            } else {
                println!("{}", w["tags"]);
            }
        }
        WorkersAction::Idle { id, switch } => {
            let enabled = matches!(switch, OnOff::On);
            let w = api
                .json(
                    reqwest::Method::PUT,
                    &lifecycle(&id, "idle-detection"),
                    Some(json!({"enabled": enabled})),
                )
                .await?;
            if as_json {
                print_json(&w);
            } else {
                println!("idle detection {}", if enabled { "on" } else { "off" });
            }
        }
        WorkersAction::Snooze {
            id,
            for_,
            until,
            clear,
        } => {
            let path = lifecycle(&id, "snooze");
            let w = if clear {
                api.json(reqwest::Method::DELETE, &path, None).await?
            } else {
                let body = match (for_, until) {
                    (Some(d), None) => json!({"for": d}),
                    (None, Some(u)) => json!({"until": u}),
                    _ => anyhow::bail!("give --for DURATION, --until TIME or --clear"),
                };
                api.json(reqwest::Method::PUT, &path, Some(body)).await?
            };
            if as_json {
                print_json(&w);
            } else {
                let s = &w["monitoring"]["snooze"];
                if s.is_null() {
                    println!("not snoozed");
                } else {
                    println!("kept awake until {} (by {})", text(&s["until"]), text(&s["by"]));
                }
            }
        }
    }
    Ok(())
}

async fn lifecycle_cmd(
    api: &Api,
    t: &IdWait,
    path: String,
    target: &str,
    as_json: bool,
) -> anyhow::Result<()> {
    let w = api.post(&path, None).await?;
    if t.wait.wait {
        wait_for_state(api, &t.id, target, t.wait.timeout).await?;
        print_worker(
            &api.get(&format!("/api/v1/workers/{}", t.id)).await?,
            as_json,
        );
    } else if as_json {
        print_json(&w);
    } else {
        println!(
            "{}: {} (accepted; --wait follows it to {target})",
            t.id,
            text(&w["ec2_state"])
        );
    }
    Ok(())
}

fn strip_nulls(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|_, x| !x.is_null());
    }
    v
}

// === labs ===

/// `ccm labs …`: the labs of a worker.
#[derive(Debug, Args)]
#[command(after_help = EXIT_HELP)]
pub(crate) struct LabsCmd {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    action: LabsAction,
}

#[derive(Debug, Subcommand)]
enum LabsAction {
    /// List the labs of a worker.
    List {
        /// Worker id.
        worker: String,
    },
    /// Start a lab.
    Start(LabRef),
    /// Stop a lab.
    Stop(LabRef),
    /// Wipe a lab.
    Wipe(LabRef),
    /// Delete a lab.
    Delete(LabRef),
    /// Download a lab's topology (YAML).
    Download {
        #[command(flatten)]
        lab: LabRef,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Import a topology (YAML file, or `-` for standard input) as a new lab.
    Import {
        /// Worker id.
        worker: String,
        /// The topology file.
        file: PathBuf,
        /// Title of the new lab.
        #[arg(long)]
        title: Option<String>,
    },
}

#[derive(Debug, Clone, Args)]
struct LabRef {
    /// Worker id.
    worker: String,
    /// Lab id.
    lab: String,
}

/// Runs `ccm labs …`.
pub(crate) fn labs(cmd: LabsCmd) -> anyhow::Result<()> {
    runtime()?.block_on(labs_async(cmd))
}

async fn labs_async(cmd: LabsCmd) -> anyhow::Result<()> {
    let api = Api::new(&cmd.api)?;
    let as_json = cmd.api.json;
    let lab_path = |l: &LabRef| format!("/api/v1/workers/{}/labs/{}", l.worker, l.lab);
    let show_action = |r: &Value| {
        if as_json {
            print_json(r);
        } else {
            println!(
                "{} {}: {}",
                text(&r["action"]),
                text(&r["lab_id"]),
                text(&r["lab"]["state"])
            );
        }
    };
    match cmd.action {
        LabsAction::List { worker } => {
            let r = api.get(&format!("/api/v1/workers/{worker}/labs")).await?;
            if as_json {
                print_json(&r);
            } else {
                let rows: Vec<Vec<String>> = r["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|l| {
                        vec![
                            text(&l["lab_id"]),
                            text(&l["title"]),
                            text(&l["state"]),
                            text(&l["node_count"]),
                            text(&l["owner_username"]),
                        ]
                    })
                    .collect();
                print_table(&["LAB", "TITLE", "STATE", "NODES", "OWNER"], &rows);
            }
        }
        LabsAction::Start(l) => {
            show_action(&api.post(&format!("{}/start", lab_path(&l)), None).await?)
        }
        LabsAction::Stop(l) => {
            show_action(&api.post(&format!("{}/stop", lab_path(&l)), None).await?)
        }
        LabsAction::Wipe(l) => {
            show_action(&api.post(&format!("{}/wipe", lab_path(&l)), None).await?)
        }
        LabsAction::Delete(l) => {
            api.json(reqwest::Method::DELETE, &lab_path(&l), None)
                .await?;
            eprintln!("deleted lab {}", l.lab);
        }
        LabsAction::Download { lab, output } => {
            let res = api
                .send(api.request(
                    reqwest::Method::GET,
                    &format!("{}/topology", lab_path(&lab)),
                ))
                .await?;
            let yaml = res.text().await?;
            match output {
                Some(path) => {
                    std::fs::write(&path, yaml)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{yaml}"),
            }
        }
        LabsAction::Import {
            worker,
            file,
            title,
        } => {
            let mut topology = String::new();
            if file.as_os_str() == "-" {
                std::io::stdin().read_to_string(&mut topology)?;
            } else {
                topology = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
            }
            let r = api
                .post(
                    &format!("/api/v1/workers/{worker}/labs"),
                    Some(strip_nulls(json!({"topology": topology, "title": title}))),
                )
                .await?;
            if as_json {
                print_json(&r);
            } else {
                println!("imported lab {}", text(&r["lab_id"]));
            }
        }
    }
    Ok(())
}

// === licence ===

/// `ccm licence …`: the CML licence of a worker.
#[derive(Debug, Args)]
#[command(after_help = EXIT_HELP)]
pub(crate) struct LicenceCmd {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    action: LicenceAction,
}

#[derive(Debug, Subcommand)]
enum LicenceAction {
    /// Register the licence (the token is read from CCM_LICENCE_TOKEN or standard input).
    Register {
        /// Worker id.
        worker: String,
        /// Register again even if registered.
        #[arg(long)]
        reregister: bool,
        /// Follow the events until the registration completes or fails.
        #[arg(long)]
        wait: bool,
        /// How long to wait at most.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Deregister the licence.
    Deregister {
        /// Worker id.
        worker: String,
    },
}

/// Runs `ccm licence …`.
pub(crate) fn licence(cmd: LicenceCmd) -> anyhow::Result<()> {
    runtime()?.block_on(licence_async(cmd))
}

async fn licence_async(cmd: LicenceCmd) -> anyhow::Result<()> {
    let api = Api::new(&cmd.api)?;
    match cmd.action {
        LicenceAction::Register {
            worker,
            reregister,
            wait,
            timeout,
        } => {
            // Never a command-line argument: it would end up in the shell history.
            let token = match std::env::var("CCM_LICENCE_TOKEN") {
                Ok(t) if !t.trim().is_empty() => t,
                _ => {
                    if std::io::stdin().is_terminal() {
                        eprint!("Smart Licensing token: ");
                        std::io::stderr().flush().ok();
                    }
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line
                }
            };
            let token = token.trim().to_owned();
            if token.is_empty() {
                bail!("no licence token given (set CCM_LICENCE_TOKEN or type it)");
            }
            // Watch first, so the outcome cannot be missed.
            let mut events = if wait {
                Some(
                    api.events(&format!("?worker={worker}&type=ccm.licence.*"), None)
                        .await?,
                )
            } else {
                None
            };
            let r = api
                .post(
                    &format!("/api/v1/workers/{worker}/licence"),
                    Some(json!({"token": token, "reregister": reregister})),
                )
                .await?;
            if cmd.api.json {
                print_json(&r);
            }
            let Some(events) = events.as_mut() else {
                eprintln!(
                    "registration accepted; follow it with: ccm events --worker {worker} --type 'ccm.licence.*'"
                );
                return Ok(());
            };
            let bar = indicatif::ProgressBar::new_spinner();
            if !std::io::stderr().is_terminal() {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar.set_message("registering");
            let outcome = tokio::time::timeout(timeout, async {
                while let Some(item) = events.next().await {
                    let SseItem::Message(m) = item? else { continue };
                    let data: Value = serde_json::from_str(&m.data).unwrap_or(Value::Null);
                    match m.event_type() {
                        "ccm.licence.registration_progress" => bar
                            .set_message(format!("registering: {}", text(&data["data"]["status"]))),
                        "ccm.licence.registered" => return Ok(()),
                        "ccm.licence.registration_failed" => {
                            bail!("registration failed: {}", text(&data["data"]["reason"]))
                        }
                        _ => {}
                    }
                }
                bail!("the event stream ended before the registration did")
            })
            .await;
            bar.finish_and_clear();
            match outcome {
                Ok(Ok(())) => eprintln!("registered"),
                Ok(Err(e)) => return Err(e),
                Err(_) => bail!("no outcome after {}", humantime::format_duration(timeout)),
            }
        }
        LicenceAction::Deregister { worker } => {
            let r = api
                .json(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/workers/{worker}/licence"),
                    None,
                )
                .await?;
            if cmd.api.json {
                print_json(&r);
            } else {
                eprintln!("deregistration accepted");
            }
        }
    }
    Ok(())
}

// === system ===

/// `ccm system …`: health, jobs, breakers, savings.
#[derive(Debug, Args)]
#[command(after_help = EXIT_HELP)]
pub(crate) struct SystemCmd {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    action: SystemAction,
}

#[derive(Debug, Subcommand)]
enum SystemAction {
    /// Health of the database, the scheduler and the providers.
    Health,
    /// The background jobs (or run one now with --run).
    Jobs {
        /// Run this job now and wait for it (admin).
        #[arg(long)]
        run: Option<String>,
    },
    /// Circuit breakers, the retry budget and the bulkheads.
    Breakers,
    /// Instance-hours and money saved (by worker; --csv: by week, tag value and reason).
    Savings {
        /// Print the groups (week, tag value, reason) as CSV.
        #[arg(long)]
        csv: bool,
        /// Split the groups by the value of this tag key (e.g. team).
        #[arg(long)]
        tag: Option<String>,
    },
}

/// Runs `ccm system …`.
pub(crate) fn system(cmd: SystemCmd) -> anyhow::Result<()> {
    runtime()?.block_on(system_async(cmd))
}

async fn system_async(cmd: SystemCmd) -> anyhow::Result<()> {
    let api = Api::new(&cmd.api)?;
    let as_json = cmd.api.json;
    match cmd.action {
        SystemAction::Health => {
            let h = api.get("/api/v1/system/health").await?;
            if as_json {
                print_json(&h);
            } else {
                let mut rows = vec![
                    vec![
                        text(&h["database"]["name"]),
                        text(&h["database"]["ok"]),
                        text(&h["database"]["detail"]),
                    ],
                    vec![
                        text(&h["scheduler"]["name"]),
                        text(&h["scheduler"]["ok"]),
                        text(&h["scheduler"]["detail"]),
                    ],
                ];
                for p in h["providers"].as_array().into_iter().flatten() {
                    rows.push(vec![text(&p["name"]), text(&p["ok"]), text(&p["detail"])]);
                }
                print_table(&["COMPONENT", "OK", "DETAIL"], &rows);
                println!(
                    "healthy: {}, workers: {}",
                    text(&h["healthy"]),
                    text(&h["workers"])
                );
            }
            if h["healthy"] != json!(true) {
                bail!("ccm is not healthy");
            }
        }
        SystemAction::Jobs { run } => {
            if let Some(job) = run {
                let j = api
                    .post(&format!("/api/v1/system/jobs/{job}/run"), None)
                    .await?;
                if as_json {
                    print_json(&j);
                } else {
                    println!(
                        "{} ran in {} ms",
                        text(&j["job"]),
                        text(&j["last_duration_ms"])
                    );
                }
                return Ok(());
            }
            let jobs = api.get("/api/v1/system/jobs").await?;
            if as_json {
                print_json(&jobs);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = jobs["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|j| {
                    vec![
                        text(&j["job"]),
                        text(&j["enabled"]),
                        format!("{}s", text(&j["interval_seconds"])),
                        text(&j["runs"]),
                        text(&j["failures"]),
                        text(&j["in_flight"]),
                        text(&j["last_finished"]),
                        text(&j["last_error"]),
                    ]
                })
                .collect();
            print_table(
                &[
                    "JOB", "ENABLED", "EVERY", "RUNS", "FAILED", "RUNNING", "LAST", "ERROR",
                ],
                &rows,
            );
        }
        SystemAction::Breakers => {
            let r = api.get("/api/v1/system/resilience").await?;
            if as_json {
                print_json(&r);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = r["breakers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| {
                    vec![
                        text(&b["key"]),
                        text(&b["state"]),
                        text(&b["consecutive_failures"]),
                        text(&b["retry_in_seconds"]),
                    ]
                })
                .collect();
            print_table(&["BREAKER", "STATE", "FAILURES", "RETRY IN (s)"], &rows);
            let b = &r["budget"];
            println!(
                "retry budget: {} available, {} retries / {} calls{}",
                text(&b["available"]),
                text(&b["retries"]),
                text(&b["calls"]),
                if b["exhausted"] == json!(true) {
                    " (exhausted)"
                } else {
                    ""
                }
            );
            for h in r["bulkheads"].as_array().into_iter().flatten() {
                println!(
                    "bulkhead {}: {} in flight, {} queued (max {}, queue {})",
                    text(&h["name"]),
                    text(&h["in_flight"]),
                    text(&h["queued"]),
                    text(&h["max_concurrent"]),
                    text(&h["max_queue"])
                );
            }
        }
        SystemAction::Savings { csv, tag } => {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            if csv {
                query.append_pair("format", "csv");
            }
            if let Some(tag) = &tag {
                query.append_pair("tag", tag);
            }
            let query = query.finish();
            let path = if query.is_empty() {
                "/api/v1/system/savings".to_owned()
            } else {
                format!("/api/v1/system/savings?{query}")
            };
            if csv {
                let res = api
                    .send(api.request(reqwest::Method::GET, &path))
                    .await?;
                print!("{}", res.text().await?);
                return Ok(());
            }
            let s = api.get(&path).await?;
            if as_json {
                print_json(&s);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = s["workers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| {
                    vec![
                        text(&w["name"]),
                        text(&w["instance_type"]),
                        format!("{:.1}", w["hours"].as_f64().unwrap_or(0.0)),
                        w["saved"]
                            .as_f64()
                            .map(|v| format!("{v:.2}"))
                            .unwrap_or_else(|| "-".into()),
                        text(&w["idle_pauses"]),
                        text(&w["manual_pauses"]),
                    ]
                })
                .collect();
            print_table(
                &[
                    "WORKER",
                    "TYPE",
                    "HOURS",
                    "SAVED",
                    "IDLE PAUSES",
                    "MANUAL PAUSES",
                ],
                &rows,
            );
            println!(
                "total: {:.1} instance-hours, {:.2} {}",
                s["total_hours"].as_f64().unwrap_or(0.0),
                s["total_saved"].as_f64().unwrap_or(0.0),
                text(&s["currency"])
            );
        }
    }
    Ok(())
}

// === events ===

/// `ccm events`: tail the live event stream (reconnects and resumes by itself).
#[derive(Debug, Args)]
#[command(after_help = EXIT_HELP)]
pub(crate) struct EventsCmd {
    #[command(flatten)]
    api: ApiArgs,
    /// Only events about this worker (repeatable).
    #[arg(long)]
    worker: Vec<String>,
    /// Only this type, or a prefix such as `ccm.worker.*` (repeatable).
    #[arg(long = "type")]
    types: Vec<String>,
    /// Start after this event id (replays the log from there).
    #[arg(long)]
    last_event_id: Option<String>,
    /// Also print the snapshot of every worker on connect.
    #[arg(long)]
    snapshot: bool,
}

/// Runs `ccm events`.
pub(crate) fn events(cmd: EventsCmd) -> anyhow::Result<()> {
    runtime()?.block_on(events_async(cmd))
}

async fn events_async(cmd: EventsCmd) -> anyhow::Result<()> {
    let api = Api::new(&cmd.api)?;
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for w in &cmd.worker {
        q.append_pair("worker", w);
    }
    for t in &cmd.types {
        q.append_pair("type", t);
    }
    q.append_pair("snapshot", if cmd.snapshot { "true" } else { "false" });
    let query = format!("?{}", q.finish());
    let mut last = cmd.last_event_id.clone();
    let mut failures = 0u32;
    loop {
        let mut stream = match api.events(&query, last.as_deref()).await {
            Ok(s) => {
                failures = 0;
                s
            }
            Err(e) if e.downcast_ref::<ApiFailure>().is_some() => return Err(e),
            Err(e) => {
                failures += 1;
                if failures > 5 {
                    return Err(e);
                }
                eprintln!("ccm: {e:#}; reconnecting");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        while let Some(item) = stream.next().await {
            let Ok(SseItem::Message(m)) = item else {
                continue;
            };
            if m.event_type() == "reset" {
                eprintln!(
                    "ccm: the stream was reset (too slow); resuming from {}",
                    last.as_deref().unwrap_or("now")
                );
                break;
            }
            if m.id.is_some() {
                last.clone_from(&m.id);
            }
            let line = if cmd.api.json {
                m.data.clone()
            } else {
                let e: Value = serde_json::from_str(&m.data).unwrap_or(Value::Null);
                format!(
                    "{} {:<40} {} {}",
                    text(&e["time"]),
                    m.event_type(),
                    e["subject"].as_str().unwrap_or("-"),
                    e["data"]
                )
            };
            let mut out = std::io::stdout();
            // A closed pipe (`ccm events | head`) ends the command quietly.
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn api_failures_should_map_to_exit_codes_and_print_on_one_line() {
        let f = ApiFailure {
            status: 409,
            title: "Conflict".into(),
            detail: "cannot Stop a worker that is stopped: it is already stopped".into(),
        };
        assert_eq!(
            f.to_string(),
            "409 Conflict: cannot Stop a worker that is stopped: it is already stopped"
        );
        assert_eq!(f.exit_code(), 4);
        for (status, code) in [(404, 3), (401, 5), (403, 5), (500, 1), (422, 1)] {
            let f = ApiFailure {
                status,
                title: String::new(),
                detail: String::new(),
            };
            assert_eq!(f.exit_code(), code, "{status}");
        }
    }

    #[test]
    fn the_client_commands_should_parse() {
        let cli = crate::cli::Cli::try_parse_from([
            "ccm",
            "workers",
            "--api-url",
            "http://127.0.0.1:9",
            "start",
            "abc",
            "--wait",
        ])
        .unwrap();
        assert!(matches!(cli.command, crate::cli::Command::Workers(_)));
        for args in [
            vec!["ccm", "labs", "import", "w", "lab.yaml", "--title", "t"],
            vec!["ccm", "licence", "register", "w", "--wait"],
            vec!["ccm", "system", "jobs", "--run", "cml_sync", "--json"],
            vec!["ccm", "events", "--type", "ccm.worker.*", "--worker", "w"],
            vec![
                "ccm", "workers", "tags", "w", "--set", "a=b", "--remove", "c",
            ],
            vec!["ccm", "workers", "idle", "w", "off"],
        ] {
            crate::cli::Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        assert!(
            crate::cli::Cli::try_parse_from(["ccm", "workers", "tags", "w", "--set", "nokv"])
                .is_err()
        );
    }
}
