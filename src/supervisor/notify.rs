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

/// What the supervisor tells systemd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// `READY=1` with the status line: every worker of the serving
    /// generation has reported ready.
    Ready(String),
    /// `RELOADING=1` with `MONOTONIC_USEC=` (taken when queued, not when
    /// sent), as `Type=notify-reload` (systemd 253+) requires; older
    /// systemd ignores it.
    Reloading,
    /// `STOPPING=1` with the status line.
    Stopping(String),
    /// `STATUS=` alone: what `systemctl status` shows.
    Status(String),
    /// `WATCHDOG=1`.
    Watchdog,
}

/// What the sender thread sends; owned, so it can cross the channel.
enum Queued {
    Note(Note, Option<i128>),
    /// Answered once everything queued before it has been sent.
    Flush(mpsc::Sender<()>),
}

/// Longest wait in [`flush`]: notes are best-effort, exiting is not.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

fn sender() -> &'static mpsc::Sender<Queued> {
    static SENDER: OnceLock<mpsc::Sender<Queued>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Queued>();
        let spawned = std::thread::Builder::new()
            .name("sd-notify".into())
            .spawn(move || {
                for queued in rx {
                    send_now(queued);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no sd_notify thread; notes to systemd are lost");
        }
        tx
    })
}

fn send_now(queued: Queued) {
    let result = match queued {
        Queued::Note(Note::Ready(status), _) => {
            sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(&status)])
        }
        Queued::Note(Note::Reloading, Some(usec)) => sd_notify::notify(
            false,
            &[
                NotifyState::Reloading,
                NotifyState::MonotonicUsec(usec),
                NotifyState::Status("reloading"),
            ],
        ),
        Queued::Note(Note::Reloading, None) => sd_notify::notify(
            false,
            &[NotifyState::Reloading, NotifyState::Status("reloading")],
        ),
        Queued::Note(Note::Stopping(status), _) => sd_notify::notify(
            false,
            &[NotifyState::Stopping, NotifyState::Status(&status)],
        ),
        Queued::Note(Note::Status(status), _) => {
            sd_notify::notify(false, &[NotifyState::Status(&status)])
        }
        Queued::Note(Note::Watchdog, _) => sd_notify::notify(false, &[NotifyState::Watchdog]),
        Queued::Flush(done) => {
            let _ = done.send(());
            Ok(())
        }
    };
    // Never fatal: the service keeps serving even if systemd cannot hear it.
    if let Err(e) = result {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// Queues `note` for systemd, in order.
pub fn send(note: Note) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let usec = match note {
        Note::Reloading => match NotifyState::monotonic_usec_now() {
            Ok(NotifyState::MonotonicUsec(usec)) => Some(usec),
            _ => None,
        },
        _ => None,
    };
    let _ = sender().send(Queued::Note(note, usec));
}

/// Waits (bounded) until every note queued so far is sent: call before
/// exiting, so the last `STATUS=` is not lost.
pub fn flush() {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let (tx, rx) = mpsc::channel();
    if sender().send(Queued::Flush(tx)).is_ok() {
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
