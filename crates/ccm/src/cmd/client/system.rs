//! `ccm system …`: health, jobs, breakers, savings.

use anyhow::bail;
use ccm_api::dto::{HealthView, JobList, JobView, ResilienceView, SavingsView};
use clap::{Args, Subcommand};

use super::choice::JobChoice;
use super::{Api, ApiArgs, EXIT_HELP, opt, print_raw, print_table, runtime, time};
use crate::cmd::output::outln;

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
        run: Option<JobChoice>,
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
            let answer = api.get("/api/v1/system/health").await?;
            let h: HealthView = answer.decode()?;
            if as_json {
                answer.print_json()?;
            } else {
                let rows: Vec<Vec<String>> = [&h.database, &h.scheduler]
                    .into_iter()
                    .chain(&h.providers)
                    .map(|c| vec![c.name.clone(), c.ok.to_string(), c.detail.clone()])
                    .collect();
                print_table(&["COMPONENT", "OK", "DETAIL"], &rows)?;
                outln!("healthy: {}, workers: {}", h.healthy, h.workers);
            }
            if !h.healthy {
                bail!("ccm is not healthy");
            }
        }
        SystemAction::Jobs { run } => {
            if let Some(job) = run {
                let answer = api
                    .post::<()>(&format!("/api/v1/system/jobs/{}/run", job.0.as_str()), None)
                    .await?;
                if as_json {
                    answer.print_json()?;
                } else {
                    let j: JobView = answer.decode()?;
                    outln!("{} ran in {} ms", j.job, opt(j.last_duration_ms));
                }
                return Ok(());
            }
            let answer = api.get("/api/v1/system/jobs").await?;
            if as_json {
                return answer.print_json();
            }
            let jobs: JobList = answer.decode()?;
            let rows: Vec<Vec<String>> = jobs
                .items
                .iter()
                .map(|j| {
                    vec![
                        j.job.clone(),
                        j.enabled.to_string(),
                        format!("{}s", j.interval_seconds),
                        j.runs.to_string(),
                        j.failures.to_string(),
                        j.in_flight.to_string(),
                        opt(j.last_finished.as_ref().map(time)),
                        opt(j.last_error.as_ref()),
                    ]
                })
                .collect();
            print_table(
                &[
                    "JOB", "ENABLED", "EVERY", "RUNS", "FAILED", "RUNNING", "LAST", "ERROR",
                ],
                &rows,
            )?;
        }
        SystemAction::Breakers => {
            let answer = api.get("/api/v1/system/resilience").await?;
            if as_json {
                return answer.print_json();
            }
            let r: ResilienceView = answer.decode()?;
            let rows: Vec<Vec<String>> = r
                .breakers
                .iter()
                .map(|b| {
                    vec![
                        b.key.clone(),
                        b.state.clone(),
                        b.consecutive_failures.to_string(),
                        opt(b.retry_in_seconds),
                    ]
                })
                .collect();
            print_table(&["BREAKER", "STATE", "FAILURES", "RETRY IN (s)"], &rows)?;
            let b = &r.budget;
            outln!(
                "retry budget: {} available, {} retries / {} calls{}",
                b.available,
                b.retries,
                b.calls,
                if b.exhausted { " (exhausted)" } else { "" }
            );
            for h in &r.bulkheads {
                outln!(
                    "bulkhead {}: {} in flight, {} queued (max {}, queue {})",
                    h.name,
                    h.in_flight,
                    h.queued,
                    opt(h.max_concurrent),
                    h.max_queue
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
                let res = api.send(api.request(reqwest::Method::GET, &path)).await?;
                print_raw(&res.text().await?)?;
                return Ok(());
            }
            let answer = api.get(&path).await?;
            if as_json {
                return answer.print_json();
            }
            let s: SavingsView = answer.decode()?;
            let rows: Vec<Vec<String>> = s
                .workers
                .iter()
                .map(|w| {
                    vec![
                        w.name.clone(),
                        opt(w.instance_type.as_ref()),
                        format!("{:.1}", w.hours),
                        w.saved
                            .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}")),
                        w.idle_pauses.to_string(),
                        w.manual_pauses.to_string(),
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
            )?;
            outln!(
                "total: {:.1} instance-hours, {:.2} {}",
                s.total_hours,
                s.total_saved,
                s.currency
            );
            if !s.groups.is_empty() {
                outln!();
                let rows: Vec<Vec<String>> = s
                    .groups
                    .iter()
                    .map(|g| {
                        vec![
                            g.week.clone(),
                            g.tag.clone(),
                            g.reason.clone(),
                            g.workers.to_string(),
                            format!("{:.1}", g.hours),
                            format!("{:.2}", g.saved),
                        ]
                    })
                    .collect();
                let tag_header = s
                    .group_tag
                    .as_deref()
                    .map_or_else(|| "TAG".to_owned(), |t| format!("TAG {}", t.to_uppercase()));
                print_table(
                    &["WEEK", &tag_header, "REASON", "WORKERS", "HOURS", "SAVED"],
                    &rows,
                )?;
            }
        }
    }
    Ok(())
}
