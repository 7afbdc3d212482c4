//! [`SimLauncher`]: how to start the simulator's command line as a child process.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// A program and the leading arguments that run the simulator's command line ([`crate::cli`])
/// in a child process — for the `ccm` binary, its own executable and `sim`.
///
/// The simulator re-executes itself as shard processes above `--shard-size` workers, and the
/// benchmarks start it in its own process; neither knows which binary hosts it, so whoever
/// owns the binary hands them a launcher. Flags of [`crate::cli::SimArgs`] go after the
/// leading arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimLauncher {
    program: PathBuf,
    args: Vec<OsString>,
}

impl SimLauncher {
    /// Runs `program` with no leading arguments.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
        }
    }

    /// Adds a leading argument (e.g. the subcommand that selects the simulator).
    #[must_use]
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// The program.
    pub fn program(&self) -> &std::path::Path {
        &self.program
    }

    /// A command for the program with the leading arguments; the caller adds the simulator's
    /// flags, the standard streams and the rest.
    pub fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args);
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launcher_should_put_its_leading_arguments_first() {
        let l = SimLauncher::new("/usr/bin/ccm").arg("sim");
        let mut cmd = l.command();
        cmd.arg("--workers").arg("3");
        let std = cmd.as_std();
        assert_eq!(std.get_program(), "/usr/bin/ccm");
        let args: Vec<&OsStr> = std.get_args().collect();
        assert_eq!(args, ["sim", "--workers", "3"]);
        assert_eq!(l.program(), std::path::Path::new("/usr/bin/ccm"));
    }
}
