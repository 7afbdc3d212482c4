//! `ccm workers …`: list, get, create, import, start, stop, pause, resume, terminate, delete,
//! refresh, tags, idle.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use anyhow::bail;
use ccm_api::dto::{
    CreateWorkerRequest, IdleDetectionRequest, ImportView, ImportWorkersRequest, Order,
    RefreshView, SnoozeRequest, TagsRequest, WorkerListQuery, WorkerPage, WorkerView,
};
use ccm_api::sse_client::SseItem;
use ccm_domain::{Event, EventKind};
use clap::{Args, Subcommand, ValueEnum};

use super::choice::{ServiceChoice, SortChoice, StateChoice};
use super::{Api, ApiArgs, EXIT_HELP, age, freshness, opt, runtime, spinner, time};
use crate::cmd::output::outln;

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
        /// Only this EC2 state (repeatable).
        #[arg(long)]
        state: Vec<StateChoice>,
        /// Only this service status (repeatable).
        #[arg(long)]
        service: Vec<ServiceChoice>,
        /// Text in the name, id or instance id.
        #[arg(long, short)]
        query: Option<String>,
        /// Sort key.
        #[arg(long, default_value = "name")]
        sort: SortChoice,
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
        #[arg(long, value_parser = rfc3339, conflicts_with = "clear")]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// End the snooze now.
        #[arg(long)]
        clear: bool,
    },
}

/// An RFC 3339 time with any offset, as UTC.
fn rfc3339(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{e} (expected e.g. 2026-03-03T09:00:00+01:00)"))
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

const WORKER_HEADERS: [&str; 9] = [
    "ID", "NAME", "STATE", "SERVICE", "REGION", "IP", "CML", "DATA", "BREAKER",
];

fn worker_rows(items: &[WorkerView]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|w| {
            let info = &w.sources.system_information;
            vec![
                w.id.to_string(),
                w.name.clone(),
                w.ec2_state.clone(),
                w.service.status.clone(),
                w.region.clone(),
                opt(w.public_ip.as_ref()),
                opt(info.value.as_ref().map(|v| &v.version)),
                freshness(info.freshness),
                opt(w.breaker.as_ref().map(|b| &b.state)),
            ]
        })
        .collect()
}

fn print_worker(w: &WorkerView) -> anyhow::Result<()> {
    let s = &w.sources;
    let m = &w.monitoring;
    let rows = [
        ("id", w.id.to_string()),
        ("name", w.name.clone()),
        ("region", w.region.clone()),
        (
            "instance",
            format!(
                "{} ({})",
                opt(w.instance_id.as_ref()),
                opt(w.instance_type.as_ref())
            ),
        ),
        (
            "image",
            w.ami.as_ref().map_or_else(
                || "-".to_owned(),
                |a| {
                    format!(
                        "{} {} (owner {})",
                        a.id,
                        opt(a.name.as_ref()),
                        opt(a.owner.as_ref())
                    )
                },
            ),
        ),
        ("state", w.ec2_state.clone()),
        (
            "ec2 status checks",
            format!(
                "{} — {}",
                s.ec2_status.value.as_ref().map_or_else(
                    || "-".to_owned(),
                    |c| format!("system {}, instance {}", c.system, c.instance)
                ),
                age(&s.ec2_status)
            ),
        ),
        ("service", w.service.status.clone()),
        ("endpoint", opt(w.endpoint.as_ref())),
        (
            "cml version",
            opt(s.system_information.value.as_ref().map(|v| &v.version)),
        ),
        ("system_information", age(&s.system_information)),
        ("health", age(&s.health)),
        ("stats", age(&s.stats)),
        (
            "licence",
            format!(
                "{} — {}",
                opt(s.licence.value.as_ref().map(|l| &l.registration)),
                age(&s.licence)
            ),
        ),
        (
            "labs",
            format!("{} — {}", opt(s.labs_count.value), age(&s.labs_count)),
        ),
        (
            "cloudwatch cpu %",
            format!(
                "{} — {}",
                opt(s.cloudwatch.value.as_ref().and_then(|c| c.cpu_percent)),
                age(&s.cloudwatch)
            ),
        ),
        ("breaker", opt(w.breaker.as_ref().map(|b| &b.state))),
        ("idle detection", m.idle_detection.to_string()),
        (
            "idle policy",
            format!("{} {}", m.idle.action, opt(m.idle.keep_reason.as_ref())),
        ),
        ("tags", serde_json::to_string(&w.tags)?),
        (
            "updated",
            format!("{} by {}", time(&w.updated_at), w.updated_by),
        ),
    ];
    for (k, v) in rows {
        outln!("{k:<20} {v}");
    }
    Ok(())
}

/// Prints a worker answer: as it came (`--json`) or as a table.
fn show_worker(answer: &super::Answer, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        answer.print_json()
    } else {
        print_worker(&answer.decode()?)
    }
}

/// Follows the worker's events until its EC2 state is `target` (or `failed`), with a spinner.
async fn wait_for_state(
    api: &Api,
    id: &str,
    target: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let bar = spinner(format!("waiting for {id} to be {target}"));
    let follow = async {
        let mut events = api
            .events(&format!("?worker={id}&type=ccm.worker.*"), None)
            .await?;
        while let Some(item) = events.next().await {
            let SseItem::Message(m) = item? else { continue };
            if m.event_type() == "reset" {
                bail!("the event stream was reset; check the worker with `ccm workers get {id}`");
            }
            // An event this version does not know is not about the state: skip it.
            let Ok(event) = serde_json::from_str::<Event>(&m.data) else {
                continue;
            };
            let state = match event.kind {
                EventKind::WorkerSnapshot { worker } => {
                    match serde_json::from_value::<WorkerView>(worker) {
                        Ok(w) => w.ec2_state,
                        Err(e) => bail!("unexpected worker snapshot: {e}"),
                    }
                }
                EventKind::WorkerStateChanged { to, .. } => to.as_str().to_owned(),
                EventKind::WorkerProvisioningFailed { .. } => "failed".to_owned(),
                EventKind::WorkerDeleted { .. } => bail!("the worker was deleted"),
                _ => continue,
            };
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
            let q = WorkerListQuery {
                region,
                state: state.iter().map(|s| s.0.as_str().to_owned()).collect(),
                service: service.iter().map(|s| s.0.as_str().to_owned()).collect(),
                q: query,
                sort: Some(sort.0),
                order: Some(if desc { Order::Desc } else { Order::Asc }),
                limit: Some(limit),
                offset: Some(offset),
            };
            let answer = api
                .get(&format!(
                    "/api/v1/workers?{}",
                    serde_html_form::to_string(&q)?
                ))
                .await?;
            if as_json {
                answer.print_json()?;
            } else {
                let page: WorkerPage = answer.decode()?;
                super::print_table(&WORKER_HEADERS, &worker_rows(&page.items))?;
                eprintln!("{} of {} workers", page.items.len(), page.total);
            }
        }
        WorkersAction::Get { id } => {
            show_worker(&api.get(&format!("/api/v1/workers/{id}")).await?, as_json)?;
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
            let body = CreateWorkerRequest {
                name,
                region,
                instance_type,
                ami_id,
                ami_name_pattern: ami_name,
                tags: tag.into_iter().collect::<BTreeMap<String, String>>(),
            };
            let answer = api.post("/api/v1/workers", Some(&body)).await?;
            let created: WorkerView = answer.decode()?;
            let id = created.id.to_string();
            if wait.wait {
                wait_for_state(&api, &id, "running", wait.timeout).await?;
                show_worker(&api.get(&format!("/api/v1/workers/{id}")).await?, as_json)?;
            } else {
                show_worker(&answer, as_json)?;
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
            let body = ImportWorkersRequest {
                region,
                instance_ids: (!instance_ids.is_empty()).then_some(instance_ids),
                ami_id,
                ami_name_pattern: ami_name,
                configured,
                all,
            };
            let answer = api.post("/api/v1/workers/import", Some(&body)).await?;
            if as_json {
                answer.print_json()?;
            } else {
                let r: ImportView = answer.decode()?;
                outln!(
                    "matched {}, imported {}, already workers {}, skipped {}",
                    r.matched,
                    r.imported.len(),
                    r.existing.len(),
                    r.skipped.len(),
                );
                for id in &r.imported {
                    outln!("imported {id}");
                }
                for s in &r.skipped {
                    outln!("skipped {}: {}", s.instance_id, s.reason);
                }
            }
        }
        WorkersAction::Start(t) => {
            lifecycle_cmd(&api, &t, lifecycle(&t.id, "start"), "running", as_json).await?;
        }
        WorkersAction::Resume(t) => {
            lifecycle_cmd(&api, &t, lifecycle(&t.id, "resume"), "running", as_json).await?;
        }
        WorkersAction::Stop(t) => {
            lifecycle_cmd(&api, &t, lifecycle(&t.id, "stop"), "stopped", as_json).await?;
        }
        WorkersAction::Pause(t) => {
            lifecycle_cmd(&api, &t, lifecycle(&t.id, "pause"), "stopped", as_json).await?;
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
            api.call::<()>(
                reqwest::Method::DELETE,
                &format!("/api/v1/workers/{id}"),
                None,
            )
            .await?;
            eprintln!("deleted {id}");
        }
        WorkersAction::Refresh { id } => {
            let answer = api.post::<()>(&lifecycle(&id, "refresh"), None).await?;
            if as_json {
                answer.print_json()?;
            } else {
                let r: RefreshView = answer.decode()?;
                if r.outcome == "skipped" {
                    outln!(
                        "skipped: {}{}",
                        opt(r.reason.as_ref()),
                        r.retry_in_seconds
                            .map(|s| format!(" (retry in {s}s)"))
                            .unwrap_or_default()
                    );
                } else {
                    outln!("{}", r.outcome);
                }
                print_worker(&r.worker)?;
            }
        }
        WorkersAction::Tags { id, set, remove } => {
            let body = TagsRequest {
                set: set.into_iter().collect(),
                remove,
            };
            let answer = api
                .call(reqwest::Method::PATCH, &lifecycle(&id, "tags"), Some(&body))
                .await?;
            if as_json {
                answer.print_json()?;
            } else {
                let w: WorkerView = answer.decode()?;
                outln!("{}", serde_json::to_string(&w.tags)?);
            }
        }
        WorkersAction::Idle { id, switch } => {
            let body = IdleDetectionRequest {
                enabled: matches!(switch, OnOff::On),
            };
            let answer = api
                .call(
                    reqwest::Method::PUT,
                    &lifecycle(&id, "idle-detection"),
                    Some(&body),
                )
                .await?;
            if as_json {
                answer.print_json()?;
            } else {
                let w: WorkerView = answer.decode()?;
                let on = w.monitoring.idle_detection;
                outln!("idle detection {}", if on { "on" } else { "off" });
            }
        }
        WorkersAction::Snooze {
            id,
            for_,
            until,
            clear,
        } => {
            let path = lifecycle(&id, "snooze");
            let answer = if clear {
                api.call::<()>(reqwest::Method::DELETE, &path, None).await?
            } else {
                if for_.is_none() && until.is_none() {
                    bail!("give --for DURATION, --until TIME or --clear");
                }
                let body = SnoozeRequest { until, for_ };
                api.call(reqwest::Method::PUT, &path, Some(&body)).await?
            };
            if as_json {
                answer.print_json()?;
            } else {
                let w: WorkerView = answer.decode()?;
                match &w.monitoring.snooze {
                    None => outln!("not snoozed"),
                    Some(s) => outln!("kept awake until {} (by {})", time(&s.until), s.by),
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
    let answer = api.post::<()>(&path, None).await?;
    if t.wait.wait {
        wait_for_state(api, &t.id, target, t.wait.timeout).await?;
        show_worker(
            &api.get(&format!("/api/v1/workers/{}", t.id)).await?,
            as_json,
        )?;
    } else if as_json {
        answer.print_json()?;
    } else {
        let w: WorkerView = answer.decode()?;
        outln!(
            "{}: {} (accepted; --wait follows it to {target})",
            t.id,
            w.ec2_state
        );
    }
    Ok(())
}
