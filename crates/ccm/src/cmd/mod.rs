//! One module per subcommand; `run` dispatches and `exit_code` maps errors to exit codes.

use crate::cli::{Cli, Command};

/// Runs the parsed command line.
pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve | Command::Demo | Command::Sim | Command::Bench | Command::Config(_) => {
            anyhow::bail!("not implemented yet")
        }
    }
}

/// The exit code for a failure: 64 (EX_USAGE) for configuration errors, 1 otherwise.
pub(crate) fn exit_code(_err: &anyhow::Error) -> u8 {
    1
}
