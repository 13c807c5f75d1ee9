//! The supervisor's periodic checks, run every tick: each worker's
//! deadlines (boot, heartbeat, drain), the stop's and the reload's
//! deadlines, `memory_high`, `STATUS=`, and petting systemd's watchdog.

use std::time::{Duration, Instant};

use super::super::metrics::ExitCause;
use super::super::notify::{self, Note};
use super::super::reload::Step;
use super::super::status::{self, Board};
use super::super::system::Os;
use super::super::workers::{State, Workers};
use super::{Phase, Supervisor};
use crate::config::Config;

/// How often worker memory is compared with `memory_high`.
pub(in crate::supervisor) const MEMORY_INTERVAL: Duration = Duration::from_secs(1);

impl<O: Os> Supervisor<O> {
    /// Kills what is overdue, restarts what waited out its backoff, and
    /// refreshes what systemd sees.
    pub(in crate::supervisor) fn on_tick(&mut self, now: Instant) {
        let config = self.serving.config.clone();
        for (pid, why, cause) in overdue(&self.workers, &config, now) {
            self.kill(pid, why, cause);
        }
        match self.phase {
            Phase::Booting { deadline } if now > deadline => {
                let boot_timeout = config.boot_timeout;
                tracing::error!(
                    boot_timeout,
                    "workers not ready within boot_timeout; giving up (exit code 3)"
                );
                return self.give_up();
            }
            Phase::Stopping {
                deadline,
                grace,
                killed: false,
            } if now > deadline => {
                let (workers, grace_ms) = (self.workers.len(), grace.as_millis() as u64);
                tracing::warn!(
                    workers,
                    grace_ms,
                    "workers still alive past the stop deadline; killing"
                );
                for pid in self.workers.pids(|_| true) {
                    self.os.signal(pid, libc::SIGKILL);
                }
                self.phase = Phase::Stopping {
                    deadline,
                    grace,
                    killed: true,
                };
            }
            _ => {}
        }
        if let Step::Starting {
            deadline,
            generation,
            ..
        } = &self.reload.step
        {
            if now > *deadline {
                let boot_timeout = generation.config.boot_timeout;
                let why = format!("new generation not ready within boot_timeout ({boot_timeout}s)");
                self.abort_reload(why, now);
            }
        }
        self.check_quiesced(now);
        if now >= self.next_memory_check {
            self.next_memory_check = now + MEMORY_INTERVAL;
            let high = config.memory_high.0;
            for (pid, used) in above_memory_high(&self.workers, high, &self.os) {
                let who = self
                    .workers
                    .get(pid)
                    .map_or_else(|| format!("worker pid {pid}"), |w| w.label(pid));
                let (used_mib, high_mib) = (used >> 20, high >> 20);
                tracing::warn!(
                    pid,
                    used,
                    memory_high = high,
                    "{who} above memory_high: {used_mib} MiB used, memory_high {high_mib} MiB"
                );
                self.retire(pid, "memory_high");
            }
        }
        self.reconcile(now);
        self.publish(false, now);
        if let Some(watchdog) = &mut self.watchdog {
            let booting = matches!(self.phase, Phase::Booting { .. });
            watchdog.check(now, booting, &self.workers, &config, &mut self.os);
        }
    }

    /// `READY=1` with fresh figures.
    pub(super) fn announce_ready(&mut self, now: Instant) {
        let (board, facts, os) = self.figures();
        board.ready(&facts, now, os);
    }

    /// `STATUS=` when due, or now if `changed`.
    pub(super) fn publish(&mut self, changed: bool, now: Instant) {
        let (board, facts, os) = self.figures();
        board.publish(&facts, changed, now, os);
    }

    /// What the figures are made of, borrowed apart.
    fn figures(&mut self) -> (&mut Board, status::Facts<'_>, &mut O) {
        let crash_loop = self.backoff.crash_loop();
        let facts = status::facts(&self.workers, &self.serving, crash_loop, &self.reload);
        (&mut self.board, facts, &mut self.os)
    }
}

/// Workers past a deadline, with the reason to kill each.
fn overdue(workers: &Workers, config: &Config, now: Instant) -> Vec<(u32, String, ExitCause)> {
    let timeout = Duration::from_secs_f64(config.timeout);
    let boot = Duration::from_secs_f64(config.boot_timeout);
    let mut out = Vec::new();
    for (pid, w) in workers.iter() {
        if w.killed_for.is_some() {
            continue;
        }
        let why = match w.state {
            State::Booting if now.duration_since(w.started) > boot => Some((
                format!("not ready after boot_timeout ({}s)", config.boot_timeout),
                ExitCause::BootTimeout,
            )),
            State::Ready | State::Retiring if now.duration_since(w.last_seen) > timeout => Some((
                format!(
                    "no heartbeat for {:.1}s (timeout {}s): event loop blocked",
                    now.duration_since(w.last_seen).as_secs_f64(),
                    config.timeout
                ),
                ExitCause::HeartbeatTimeout,
            )),
            State::Draining if w.drain_deadline.is_some_and(|d| now > d) => Some((
                format!(
                    "still draining after graceful_timeout ({}s)",
                    config.graceful_timeout
                ),
                ExitCause::DrainTimeout,
            )),
            _ => None,
        };
        if let Some((why, cause)) = why {
            out.push((pid, why, cause));
        }
    }
    out.sort_unstable_by_key(|(pid, _, _)| *pid);
    out
}

/// Ready workers above `memory_high` (bytes; 0 is off), with their usage.
fn above_memory_high(workers: &Workers, high: u64, os: &impl Os) -> Vec<(u32, u64)> {
    if high == 0 {
        return Vec::new();
    }
    let mut over: Vec<(u32, u64)> = workers
        .iter()
        .filter(|(_, w)| w.state == State::Ready)
        .filter_map(|(pid, w)| {
            let used = os.memory_usage(pid, w.cgroup.as_deref())?;
            (used > high).then_some((pid, used))
        })
        .collect();
    over.sort_unstable();
    over
}

/// `WATCHDOG=1` pacing, when systemd asked for it (`WatchdogSec=`).
pub(in crate::supervisor) struct Watchdog {
    /// Half systemd's interval, so one late tick is not a miss.
    interval: Duration,
    /// When it is next due.
    next: Instant,
}

impl Watchdog {
    /// The watchdog systemd asked this process for, if any.
    pub(super) fn from_env(now: Instant) -> Option<Watchdog> {
        notify::watchdog_interval().map(|d| Watchdog {
            interval: d / 2,
            next: now,
        })
    }

    /// Pets the watchdog when due, but only while some worker heartbeats
    /// (or the first start is still under way): a supervisor whose workers
    /// are all wedged stops petting and lets systemd act.
    fn check(
        &mut self,
        now: Instant,
        booting: bool,
        workers: &Workers,
        config: &Config,
        os: &mut impl Os,
    ) {
        if now < self.next {
            return;
        }
        self.next = now + self.interval;
        let alive = booting
            || workers.iter().any(|(_, w)| {
                w.state != State::Booting && now.duration_since(w.last_seen) <= fresh(config)
            });
        if alive {
            os.notify(Note::Watchdog);
        } else {
            tracing::warn!("no worker heartbeating; withholding WATCHDOG=1");
        }
    }
}

/// How recent a heartbeat must be for the watchdog: a few missed beats, but
/// never longer than `timeout` itself.
fn fresh(config: &Config) -> Duration {
    (crate::worker::heartbeat_interval(config.timeout) * 3)
        .min(Duration::from_secs_f64(config.timeout))
}
