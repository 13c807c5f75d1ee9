//! Talking to systemd over `$NOTIFY_SOCKET` (sd_notify(3)); every call is a
//! no-op when the variable is unset, so `ferricorn serve` runs the same on a
//! laptop.
//!
//! The datagram send blocks when the receiver's queue is full
//! (`net.unix.max_dgram_qlen` is 10 on Debian), e.g. while PID 1 is busy.
//! The supervisor must keep supervising meanwhile, so notes go through a
//! channel to one sender thread, which keeps their order.

use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use sd_notify::NotifyState;

/// What the sender thread sends; owned, so it can cross the channel.
enum Note {
    Ready(String),
    Reloading(Option<i128>),
    Stopping(String),
    Status(String),
    Watchdog,
    /// Answered once everything queued before it has been sent.
    Flush(mpsc::Sender<()>),
}

/// Longest wait in [`flush`]: notes are best-effort, exiting is not.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

fn sender() -> &'static mpsc::Sender<Note> {
    static SENDER: OnceLock<mpsc::Sender<Note>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Note>();
        let spawned = std::thread::Builder::new()
            .name("sd-notify".into())
            .spawn(move || {
                for note in rx {
                    send_now(note);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no sd_notify thread; notes to systemd are lost");
        }
        tx
    })
}

fn send_now(note: Note) {
    let result = match note {
        Note::Ready(status) => {
            sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(&status)])
        }
        Note::Reloading(Some(usec)) => sd_notify::notify(
            false,
            &[
                NotifyState::Reloading,
                NotifyState::MonotonicUsec(usec),
                NotifyState::Status("reloading"),
            ],
        ),
        Note::Reloading(None) => sd_notify::notify(
            false,
            &[NotifyState::Reloading, NotifyState::Status("reloading")],
        ),
        Note::Stopping(status) => sd_notify::notify(
            false,
            &[NotifyState::Stopping, NotifyState::Status(&status)],
        ),
        Note::Status(status) => sd_notify::notify(false, &[NotifyState::Status(&status)]),
        Note::Watchdog => sd_notify::notify(false, &[NotifyState::Watchdog]),
        Note::Flush(done) => {
            let _ = done.send(());
            Ok(())
        }
    };
    // Never fatal: the service keeps serving even if systemd cannot hear it.
    if let Err(e) = result {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

fn send(note: Note) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let _ = sender().send(note);
}

/// `READY=1` with the status line: every worker of the serving generation
/// has reported ready.
pub fn ready(status: &str) {
    send(Note::Ready(status.to_owned()));
}

/// `RELOADING=1` with `MONOTONIC_USEC=` (taken now, not when sent), as
/// `Type=notify-reload` (systemd 253+) requires; older systemd ignores it.
pub fn reloading() {
    let usec = match NotifyState::monotonic_usec_now() {
        Ok(NotifyState::MonotonicUsec(usec)) => Some(usec),
        _ => None,
    };
    send(Note::Reloading(usec));
}

/// `STOPPING=1`.
pub fn stopping(status: &str) {
    send(Note::Stopping(status.to_owned()));
}

/// `STATUS=` alone: what `systemctl status` shows.
pub fn status(status: &str) {
    send(Note::Status(status.to_owned()));
}

/// `WATCHDOG=1`.
pub fn watchdog() {
    send(Note::Watchdog);
}

/// Waits (bounded) until every note queued so far is sent: call before
/// exiting, so the last `STATUS=` is not lost.
pub fn flush() {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let (tx, rx) = mpsc::channel();
    if sender().send(Note::Flush(tx)).is_ok() {
        let _ = rx.recv_timeout(FLUSH_TIMEOUT);
    }
}

/// The watchdog interval systemd expects (`WatchdogSec=`), if it is on and
/// meant for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    // Keep the variables: workers never see them anyway (spawn removes them).
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}
