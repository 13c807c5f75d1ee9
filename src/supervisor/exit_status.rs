//! A worker's exit as an operator reads it in the journal:
//! "exit code 3", "signal 9 (SIGKILL)", "signal 11 (SIGSEGV), core dumped".

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use super::metrics::ExitCause;
use super::workers::{human, State, Worker};

/// What `/metrics` counts an exit as: the OOM killer's kill; the reason
/// the supervisor killed it; a stop; a drain it was asked for, ended
/// cleanly; else a signal nobody here sent, or a crash.
pub(super) fn cause(
    status: &std::io::Result<ExitStatus>,
    w: &Worker,
    oom: bool,
    stopping: bool,
) -> ExitCause {
    let signalled = matches!(status, Ok(s) if s.signal().is_some());
    let clean = matches!(status, Ok(s) if s.success());
    match w.leaving {
        _ if oom => ExitCause::Oom,
        Some(cause) if w.killed_for.is_some() => cause,
        _ if stopping => ExitCause::Stop,
        Some(cause) if clean && w.state == State::Draining => cause,
        _ if signalled => ExitCause::Signal,
        _ => ExitCause::Crash,
    }
}

/// The status in words.
pub(super) fn describe(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Err(e) => format!("unknown status ({e})"),
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => {
                let core = if s.core_dumped() { ", core dumped" } else { "" };
                format!("signal {sig} ({}){core}", signal_name(sig))
            }
            _ => "unknown status".to_owned(),
        },
    }
}

/// The journal line for worker `pid`'s exit: killed (and why) or died
/// unasked, both warnings (the service goes on; `replacing` says whether
/// the slot is filled again), or drained as asked.
pub(super) fn log(pid: u32, w: &Worker, how: &str, uptime: Duration, replacing: bool) {
    let (slot, generation) = (w.slot, w.generation);
    let who = w.label(pid);
    let uptime_ms = uptime.as_millis() as u64;
    let then = if replacing { "; replacing it" } else { "" };
    if let Some(why) = &w.killed_for {
        tracing::warn!(slot, generation, pid, status = %how, reason = %why, uptime_ms, "{who} killed ({why}): {how}{then}");
    } else if w.state == State::Draining {
        tracing::info!(slot, generation, pid, status = %how, uptime_ms, "{who} exited after drain: {how}");
    } else {
        let up = human(uptime);
        tracing::warn!(slot, generation, pid, status = %how, uptime_ms, "{who} died: {how} after {up}{then}");
    }
}

/// The signals a worker dies of in practice, by name.
fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGBUS => "SIGBUS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_read_as_an_operator_would() {
        let exited = |code: i32| Ok(ExitStatus::from_raw(code << 8));
        let killed = |signal: i32| Ok(ExitStatus::from_raw(signal));
        assert_eq!(describe(&exited(0)), "exit code 0");
        assert_eq!(describe(&exited(3)), "exit code 3");
        assert_eq!(describe(&killed(libc::SIGKILL)), "signal 9 (SIGKILL)");
        assert_eq!(describe(&killed(libc::SIGABRT)), "signal 6 (SIGABRT)");
        assert_eq!(
            describe(&Ok(ExitStatus::from_raw(libc::SIGSEGV | 0x80))),
            "signal 11 (SIGSEGV), core dumped"
        );
        assert_eq!(describe(&killed(libc::SIGUSR1)), "signal 10 (other)");
        for (signal, name) in [
            (libc::SIGKILL, "SIGKILL"),
            (libc::SIGTERM, "SIGTERM"),
            (libc::SIGSEGV, "SIGSEGV"),
            (libc::SIGABRT, "SIGABRT"),
            (libc::SIGINT, "SIGINT"),
            (libc::SIGQUIT, "SIGQUIT"),
            (libc::SIGHUP, "SIGHUP"),
            (libc::SIGBUS, "SIGBUS"),
        ] {
            assert_eq!(signal_name(signal), name);
        }
        assert!(describe(&Err(std::io::Error::other("gone"))).contains("gone"));
    }
}
