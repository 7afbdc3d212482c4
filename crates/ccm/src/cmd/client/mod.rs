//! The API client commands: `ccm workers …`, `ccm labs …`, `ccm licence …`, `ccm system …`
//! and `ccm events`. They talk to a running ccm over HTTP (`--api-url`, `--token`), print
//! tables (or `--json`), and follow long operations on the event stream with a spinner.
//!
//! Answers are decoded into `ccm-api`'s own types ([`ccm_api::dto`]) and requests built from
//! them, so a renamed API field fails to compile here instead of printing `-`. Enumerated
//! options are clap value enums built from the API's and the domain's own lists ([`choice`]).
//! `--json` prints the API's answer as it came.
//!
//! Exit codes: 0 ok, 1 failure, 2 usage, 3 not found, 4 conflict (the state does not allow
//! it), 5 not authenticated or not allowed.

pub(crate) mod choice;
mod events;
mod labs;
mod licence;
mod system;
mod workers;

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use ccm_api::dto::{FreshnessView, SourceView};
use ccm_api::sse_client::SseReader;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub(crate) use events::{EventsCmd, events};
pub(crate) use labs::{LabsCmd, labs};
pub(crate) use licence::{LicenceCmd, licence};
pub(crate) use system::{SystemCmd, system};
pub(crate) use workers::{WorkersCmd, workers};

use crate::cmd::output::{out, outln};

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

/// The parts of a problem document the CLI shows.
#[derive(Debug, Default, serde::Deserialize)]
struct ProblemText {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

/// An answer's body: decoded into an API type, or printed as it came (`--json`).
struct Answer {
    path: String,
    bytes: Vec<u8>,
}

impl Answer {
    /// The body as the API type `T`. A mismatch means this CLI and the server disagree on the
    /// API: said so, naming the field.
    fn decode<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        let de = &mut serde_json::Deserializer::from_slice(&self.bytes);
        serde_path_to_error::deserialize(de).map_err(|e| {
            anyhow::anyhow!(
                "unexpected answer from {} at `{}`: {} (is the server the same ccm version?)",
                self.path,
                e.path(),
                e.inner()
            )
        })
    }

    /// Prints the body as indented JSON.
    fn print_json(&self) -> anyhow::Result<()> {
        let value: serde_json::Value = self.decode()?;
        outln!("{}", serde_json::to_string_pretty(&value)?);
        Ok(())
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
        let problem: ProblemText = res.json().await.unwrap_or_default();
        Err(ApiFailure {
            status: status.as_u16(),
            title: problem
                .title
                .or(status.canonical_reason().map(str::to_owned))
                .unwrap_or_else(|| "Error".to_owned()),
            detail: problem.detail.unwrap_or_else(|| "no details".to_owned()),
        }
        .into())
    }

    /// One call with an optional JSON body; the answer's body.
    async fn call<B: Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<Answer> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = self.send(req).await?;
        let bytes = res
            .bytes()
            .await
            .with_context(|| format!("reading the answer of {path}"))?
            .to_vec();
        Ok(Answer {
            path: path.to_owned(),
            bytes,
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.call::<()>(reqwest::Method::GET, path, None).await
    }

    async fn post<B: Serialize>(&self, path: &str, body: Option<&B>) -> anyhow::Result<Answer> {
        self.call(reqwest::Method::POST, path, body).await
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

/// An optional value, `-` when absent.
fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A time as the API writes it (RFC 3339, UTC).
fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The wire name of a unit enum (`fresh`, `stale`, …).
fn wire_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "-".to_owned(),
    }
}

fn freshness(f: FreshnessView) -> String {
    wire_name(&f)
}

/// `fresh (12s old, last error timeout)`.
fn age<T>(src: &SourceView<T>) -> String {
    format!(
        "{} ({}{})",
        freshness(src.freshness),
        src.age_seconds
            .map_or_else(|| "never read".to_owned(), |a| format!("{a}s old")),
        src.error
            .as_ref()
            .map(|e| format!(", last error {}", e.code))
            .unwrap_or_default()
    )
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &[String]| -> anyhow::Result<()> {
        let mut text = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(c);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                text.push_str(&format!("{c:<w$}  "));
            }
        }
        outln!("{}", text.trim_end());
        Ok(())
    };
    line(&headers.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())?;
    for row in rows {
        line(row)?;
    }
    Ok(())
}

/// A spinner on standard error (hidden when it is not a terminal).
fn spinner(message: String) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(message);
    bar
}

/// Prints raw text (a topology) as it came.
fn print_raw(text: &str) -> anyhow::Result<()> {
    out!("{text}");
    Ok(())
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
            vec!["ccm", "workers", "snooze", "w", "--for", "4h"],
            vec![
                "ccm",
                "workers",
                "snooze",
                "w",
                "--until",
                "2026-03-03T09:00:00+01:00",
            ],
            vec!["ccm", "workers", "snooze", "w", "--clear"],
            vec!["ccm", "system", "savings", "--csv", "--tag", "team"],
            vec!["ccm", "system", "jobs", "--run", "schedules"],
            vec![
                "ccm",
                "workers",
                "list",
                "--state",
                "shutting-down",
                "--service",
                "degraded",
                "--sort",
                "updated",
            ],
            vec!["ccm", "token", "new", "--role", "manager"],
        ] {
            crate::cli::Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        for bad in [
            vec!["ccm", "workers", "tags", "w", "--set", "nokv"],
            vec!["ccm", "workers", "list", "--state", "sleeping"],
            vec!["ccm", "workers", "list", "--service", "fine"],
            vec!["ccm", "workers", "list", "--sort", "size"],
            vec!["ccm", "system", "jobs", "--run", "nope"],
            vec!["ccm", "workers", "snooze", "w", "--until", "tomorrow"],
            vec!["ccm", "workers", "snooze", "w", "--for", "1h", "--clear"],
            vec!["ccm", "token", "new", "--role", "root"],
        ] {
            assert!(
                crate::cli::Cli::try_parse_from(&bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn a_mismatched_answer_should_name_the_field() {
        let a = Answer {
            path: "/api/v1/workers".into(),
            bytes: br#"{"items": [], "total": "many"}"#.to_vec(),
        };
        let err = a
            .decode::<ccm_api::dto::WorkerPage>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/api/v1/workers") && err.contains("total"),
            "{err}"
        );
    }
}
