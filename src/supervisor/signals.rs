//! The one place signals become intents, so the mapping is written once and
//! a test (or systemd's `ExecReload=`) drives the same code path. The
//! supervisor takes intents from a channel ([`forward`]), not from
//! signals, so its unit tests inject them.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

/// What the operator asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// SIGHUP: rolling reload into a new generation.
    Reload,
    /// SIGTERM: drain everything and exit 0.
    GracefulStop,
    /// SIGINT, SIGQUIT: stop now.
    FastStop,
    /// SIGTTIN: one worker more.
    AddWorker,
    /// SIGTTOU: one worker fewer, never below one.
    RemoveWorker,
    /// SIGUSR1, SIGUSR2: Gunicorn's "reopen logs" and "exec a new master",
    /// which ferricorn has no use for (journald; the socket is systemd's).
    /// Their default action would end the supervisor, so they are caught
    /// and logged instead: a logrotate script kept from Gunicorn does no harm.
    Ignore(&'static str),
}

impl Intent {
    /// The signal and what it asks, for the journal.
    pub fn describe(self) -> &'static str {
        match self {
            Intent::Reload => "SIGHUP (rolling reload)",
            Intent::GracefulStop => "SIGTERM (graceful stop)",
            Intent::FastStop => "SIGINT or SIGQUIT (stop now)",
            Intent::AddWorker => "SIGTTIN (one worker more)",
            Intent::RemoveWorker => "SIGTTOU (one worker fewer)",
            Intent::Ignore(name) => name,
        }
    }
}

/// Installs the handlers and forwards each signal, as an intent, to the
/// returned channel (call within a tokio runtime).
///
/// # Errors
/// The runtime's signal driver cannot register a handler.
pub fn forward() -> std::io::Result<mpsc::UnboundedReceiver<Intent>> {
    let mut signals = Signals::install()?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let intent = signals.next().await;
            if tx.send(intent).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// The signals the supervisor handles.
struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
    quit: Signal,
    ttin: Signal,
    ttou: Signal,
    usr1: Signal,
    usr2: Signal,
}

impl Signals {
    /// Installs the handlers.
    ///
    /// # Errors
    /// The runtime's signal driver cannot register a handler.
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            ttin: signal(SignalKind::from_raw(libc::SIGTTIN))?,
            ttou: signal(SignalKind::from_raw(libc::SIGTTOU))?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// The next intent.
    async fn next(&mut self) -> Intent {
        tokio::select! {
            _ = self.hup.recv() => Intent::Reload,
            _ = self.term.recv() => Intent::GracefulStop,
            _ = self.int.recv() => Intent::FastStop,
            _ = self.quit.recv() => Intent::FastStop,
            _ = self.ttin.recv() => Intent::AddWorker,
            _ = self.ttou.recv() => Intent::RemoveWorker,
            _ = self.usr1.recv() => Intent::Ignore("SIGUSR1"),
            _ = self.usr2.recv() => Intent::Ignore("SIGUSR2"),
        }
    }
}
