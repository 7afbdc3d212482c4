//! `ccm labs …`: the labs of a worker.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context as _;
use ccm_api::dto::{LabActionView, LabImportRequest, LabImported, LabList};
use clap::{Args, Subcommand};

use super::{Answer, Api, ApiArgs, EXIT_HELP, opt, print_raw, print_table, runtime};
use crate::cmd::output::outln;

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

impl LabRef {
    fn path(&self) -> String {
        format!("/api/v1/workers/{}/labs/{}", self.worker, self.lab)
    }
}

/// Runs `ccm labs …`.
pub(crate) fn labs(cmd: LabsCmd) -> anyhow::Result<()> {
    runtime()?.block_on(labs_async(cmd))
}

fn show_action(answer: &Answer, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return answer.print_json();
    }
    let r: LabActionView = answer.decode()?;
    outln!(
        "{} {}: {}",
        r.action,
        r.lab_id,
        opt(r.lab.as_ref().map(|l| &l.state))
    );
    Ok(())
}

async fn labs_async(cmd: LabsCmd) -> anyhow::Result<()> {
    let api = Api::new(&cmd.api)?;
    let as_json = cmd.api.json;
    match cmd.action {
        LabsAction::List { worker } => {
            let answer = api.get(&format!("/api/v1/workers/{worker}/labs")).await?;
            if as_json {
                answer.print_json()?;
            } else {
                let list: LabList = answer.decode()?;
                let rows: Vec<Vec<String>> = list
                    .items
                    .iter()
                    .map(|l| {
                        vec![
                            l.lab_id.clone(),
                            l.title.clone(),
                            l.state.clone(),
                            l.node_count.to_string(),
                            opt(l.owner_username.as_ref()),
                        ]
                    })
                    .collect();
                print_table(&["LAB", "TITLE", "STATE", "NODES", "OWNER"], &rows)?;
            }
        }
        LabsAction::Start(l) => show_action(
            &api.post::<()>(&format!("{}/start", l.path()), None).await?,
            as_json,
        )?,
        LabsAction::Stop(l) => show_action(
            &api.post::<()>(&format!("{}/stop", l.path()), None).await?,
            as_json,
        )?,
        LabsAction::Wipe(l) => show_action(
            &api.post::<()>(&format!("{}/wipe", l.path()), None).await?,
            as_json,
        )?,
        LabsAction::Delete(l) => {
            api.call::<()>(reqwest::Method::DELETE, &l.path(), None)
                .await?;
            eprintln!("deleted lab {}", l.lab);
        }
        LabsAction::Download { lab, output } => {
            let res = api
                .send(api.request(reqwest::Method::GET, &format!("{}/topology", lab.path())))
                .await?;
            let yaml = res.text().await?;
            match output {
                Some(path) => {
                    std::fs::write(&path, yaml)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print_raw(&yaml)?,
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
            let body = LabImportRequest { topology, title };
            let answer = api
                .post(&format!("/api/v1/workers/{worker}/labs"), Some(&body))
                .await?;
            if as_json {
                answer.print_json()?;
            } else {
                let r: LabImported = answer.decode()?;
                outln!("imported lab {}", r.lab_id);
            }
        }
    }
    Ok(())
}
