//! Ctrl-C and SIGTERM end a recording with a saved session, whenever they arrive: they are
//! held pending from the first line of `main` until the handlers exist.
use nix::sys::signal::{SigSet, Signal};
use tokio::signal::unix::{SignalKind, signal};

fn stop_signals() -> SigSet {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals
}

/// Holds SIGINT and SIGTERM pending (call it before any thread exists; threads inherit the
/// mask) until [`StopSignals::install`] lets them through to its handlers.
pub fn hold() {
    if let Err(e) = stop_signals().thread_block() {
        log::debug!("cannot hold signals: {e}");
    }
}

/// Handlers for the signals that stop a recording.
pub struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers, then releases what [`hold`] kept pending: a signal that came
    /// meanwhile is delivered to them now.
    pub fn install() -> std::io::Result<Self> {
        let stops = Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        };
        if let Err(e) = stop_signals().thread_unblock() {
            log::debug!("cannot release signals: {e}");
        }
        Ok(stops)
    }

    /// Resolves at the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
