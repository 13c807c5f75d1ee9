//! Talking to systemd over `$NOTIFY_SOCKET` (sd_notify(3)); every call is a
//! no-op when the variable is unset, so `ferricorn serve` runs the same on a
//! laptop.

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends `states` in one datagram. A failure is logged, never fatal: the
/// service keeps serving even if systemd cannot hear it.
fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// `READY=1` with the status line: every worker of the serving generation
/// has reported ready.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` with `MONOTONIC_USEC=`, as `Type=notify-reload` (systemd
/// 253+) requires; older systemd ignores the extra field.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading"),
        ]),
        Err(_) => send(&[NotifyState::Reloading, NotifyState::Status("reloading")]),
    }
}

/// `STOPPING=1`.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// `STATUS=` alone: what `systemctl status` shows.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// `WATCHDOG=1`.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// The watchdog interval systemd expects (`WatchdogSec=`), if it is on and
/// meant for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    // Keep the variables: workers never see them anyway (spawn removes them).
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}
