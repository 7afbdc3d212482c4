//! `ccm events`: tail the live event stream (reconnects and resumes by itself).

use std::time::Duration;

use ccm_api::sse_client::SseItem;
use ccm_domain::Event;
use clap::Args;

use super::{ApiArgs, ApiFailure, EXIT_HELP, runtime, time};
use crate::cmd::output::outln;

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

/// One line of the text output: time, type, subject, data. An event this version does not
/// know is still shown, from its raw JSON.
fn line(event_type: &str, data: &str) -> String {
    match serde_json::from_str::<Event>(data) {
        Ok(e) => {
            let payload = serde_json::to_value(&e.kind)
                .ok()
                .and_then(|v| v.get("data").cloned())
                .unwrap_or_default();
            format!(
                "{} {event_type:<40} {} {payload}",
                time(&e.time),
                e.subject.as_deref().unwrap_or("-"),
            )
        }
        Err(_) => {
            let raw: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
            let text = |k: &str| {
                raw.get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or("-")
                    .to_owned()
            };
            format!(
                "{} {event_type:<40} {} {}",
                text("time"),
                text("subject"),
                raw.get("data").cloned().unwrap_or_default()
            )
        }
    }
}

async fn events_async(cmd: EventsCmd) -> anyhow::Result<()> {
    let api = super::Api::new(&cmd.api)?;
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
            // A closed pipe (`ccm events | head`) ends the command quietly (see `output`).
            if cmd.api.json {
                outln!("{}", m.data);
            } else {
                outln!("{}", line(m.event_type(), &m.data));
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::line;

    #[test]
    fn an_event_line_should_show_time_type_subject_and_data() {
        let data = r#"{"specversion":"1.0","id":"0193a3c4-0000-7000-8000-000000000001","source":"/ccm/engine","type":"ccm.worker.state_changed","time":"2026-11-30T04:28:24.123Z","subject":"w1","datacontenttype":"application/json","data":{"from":"running","to":"stopping"}}"#;
        let l = line("ccm.worker.state_changed", data);
        assert!(
            l.starts_with("2026-11-30T04:28:24.123Z ccm.worker.state_changed"),
            "{l}"
        );
        assert!(
            l.ends_with(r#"w1 {"from":"running","to":"stopping"}"#),
            "{l}"
        );
        let unknown = r#"{"type":"ccm.future.thing","time":"t","subject":"s","data":{"a":1}}"#;
        assert_eq!(
            line("ccm.future.thing", unknown)
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["t", "ccm.future.thing", "s", r#"{"a":1}"#]
        );
    }
}
