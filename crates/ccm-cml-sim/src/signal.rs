//! The stop signals of `ccm sim` and its shard children.

use std::future::Future;
use std::io;

/// Installs the SIGINT and SIGTERM handlers now and returns a future that resolves on the
/// first of them (installing first means no signal is lost while the fleet starts).
pub(crate) fn terminate_signal() -> io::Result<impl Future<Output = io::Result<()>>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    })
}
