//! Writing to standard output, so that a reader who stops early (`ccm workers list | head -1`)
//! ends the command quietly instead of a panic: `println!` panics on a closed pipe, these
//! writes turn it into [`StdoutClosed`], which `main` maps to exit status 0 without a message.

use std::io::Write as _;

/// Standard output was closed by its reader; the command stops quietly.
#[derive(Debug, thiserror::Error)]
#[error("standard output is closed")]
pub(crate) struct StdoutClosed;

/// Writes `args` to standard output; a closed pipe is [`StdoutClosed`].
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
    }
}

/// `println!` for commands: `outln!(…)` writes a line to standard output and returns from the
/// enclosing function (`anyhow::Result`) when the reader has gone.
macro_rules! outln {
    () => {
        $crate::cmd::output::write_stdout(format_args!("\n"))?
    };
    ($($arg:tt)*) => {
        $crate::cmd::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

/// `print!` for commands (see [`outln!`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cmd::output::write_stdout(format_args!($($arg)*))?
    };
}

pub(crate) use {out, outln};
