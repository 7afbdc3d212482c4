//! `ccm licence …`: the CML licence of a worker.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use anyhow::bail;
use ccm_api::dto::{LicenceAccepted, LicenceRequest};
use ccm_api::sse_client::SseItem;
use ccm_domain::{Event, EventKind};
use clap::{Args, Subcommand};

use super::{Api, ApiArgs, EXIT_HELP, runtime, spinner};

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

/// The Smart Licensing token: `CCM_LICENCE_TOKEN`, else one line of standard input. Never a
/// command-line argument: it would end up in the shell history.
fn read_token() -> anyhow::Result<String> {
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
    Ok(token)
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
            let token = read_token()?;
            // Watch first, so the outcome cannot be missed.
            let mut events = if wait {
                Some(
                    api.events(&format!("?worker={worker}&type=ccm.licence.*"), None)
                        .await?,
                )
            } else {
                None
            };
            let body = LicenceRequest {
                token: token.into(),
                reregister,
            };
            let answer = api
                .post(&format!("/api/v1/workers/{worker}/licence"), Some(&body))
                .await?;
            let _: LicenceAccepted = answer.decode()?;
            if cmd.api.json {
                answer.print_json()?;
            }
            let Some(events) = events.as_mut() else {
                eprintln!(
                    "registration accepted; follow it with: ccm events --worker {worker} --type 'ccm.licence.*'"
                );
                return Ok(());
            };
            let bar = spinner("registering".to_owned());
            let outcome = tokio::time::timeout(timeout, async {
                while let Some(item) = events.next().await {
                    let SseItem::Message(m) = item? else { continue };
                    let Ok(event) = serde_json::from_str::<Event>(&m.data) else {
                        continue;
                    };
                    match event.kind {
                        EventKind::LicenceRegistrationProgress { status } => {
                            bar.set_message(format!("registering: {status}"));
                        }
                        EventKind::LicenceRegistered { .. } => return Ok(()),
                        EventKind::LicenceRegistrationFailed { reason } => {
                            bail!("registration failed: {reason}")
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
            let answer = api
                .call::<()>(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/workers/{worker}/licence"),
                    None,
                )
                .await?;
            let _: LicenceAccepted = answer.decode()?;
            if cmd.api.json {
                answer.print_json()?;
            } else {
                eprintln!("deregistration accepted");
            }
        }
    }
    Ok(())
}
