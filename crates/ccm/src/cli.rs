//! The command line (clap). Raw arguments only; validation happens in `config`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// ccm: a control plane for fleets of Cisco Modeling Labs workers on AWS EC2.
#[derive(Debug, Parser)]
#[command(name = "ccm", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Configuration file (TOML). `CCM_*` environment variables override it.
    #[arg(long, global = true, env = "CCM_CONFIG", value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the control plane against real AWS and CML instances.
    Serve,
    /// Run the whole product on this machine: simulated CML fleet and cloud, SQLite, web UI.
    Demo(crate::cmd::demo::DemoArgs),
    /// Serve a fleet of simulated CML 2.9 controllers on loopback addresses.
    Sim(Box<ccm_cml_sim::cli::SimArgs>),
    /// Reproducible performance runs.
    Bench(crate::cmd::bench::BenchCmd),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// API token helpers.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Workers through the API: list, get, create, import, start, stop, pause, resume, …
    Workers(crate::cmd::client::WorkersCmd),
    /// Labs of a worker through the API: list, start, stop, wipe, delete, download, import.
    Labs(crate::cmd::client::LabsCmd),
    /// The CML licence of a worker through the API: register, deregister.
    Licence(crate::cmd::client::LicenceCmd),
    /// ccm itself through the API: health, jobs, breakers, savings.
    System(crate::cmd::client::SystemCmd),
    /// Tail the live event stream of the API.
    Events(crate::cmd::client::EventsCmd),
}

/// API token helpers.
#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Make a new random API token; prints it once, with its `[auth]` entry.
    New {
        /// Who uses it (shown as `token:<name>` in events and logs).
        #[arg(long, default_value = "api")]
        name: String,
        /// What it may do: viewer, lab_operator, manager or admin.
        #[arg(long, default_value = "viewer")]
        role: crate::cmd::client::choice::RoleChoice,
    },
    /// Print the SHA-256 of a token read from standard input (for `[auth] tokens`).
    Hash,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print a commented configuration file with every default.
    Example,
    /// Load and validate the configuration (file and environment), then print it as TOML.
    Check,
}
