//! The lifecycle's state machine: starting, draining and killing
//! workers, their exits, rolling reloads, scaling and stops, driven by
//! intents, worker events and a tick, acting only through [`Os`].

use std::time::{Duration, Instant};

use super::exit_status;
use super::metrics::ExitCause;
use super::notify::Note;
use super::relay::Event;
use super::reload::{Reload, Step};
use super::status::Board;
use super::system::Os;
use super::workers::{Generation, State, Worker, Workers};
use crate::config::{Config, Loader};
use crate::control::WorkerMessage;
use crate::exit::Exit;
use backoff::Backoff;

/// Time SIGINT/SIGQUIT give workers before SIGKILL.
const FAST_STOP_GRACE: Duration = Duration::from_secs(1);
/// After a reload, how long `READY=1` waits for the old generation to say
/// it stopped accepting (a wedged one is the heartbeat's business).
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(2);

/// The supervisor's own life.
enum Phase {
    /// First start: `READY=1` not yet sent; past `deadline`, give up.
    Booting {
        deadline: Instant,
    },
    Running,
    Stopping {
        /// Past it, SIGKILL.
        deadline: Instant,
        /// What the workers were given before SIGKILL, for the log.
        grace: Duration,
        /// SIGKILL was sent: once is enough.
        killed: bool,
    },
}

/// The supervisor's whole state; [`super::run`] drives it.
pub(super) struct Supervisor<O: Os> {
    /// Reads the config again on reload.
    loader: Loader,
    /// Where every effect goes: the machine, or a test's recorder.
    os: O,
    /// The generation whose workers fill the slots (before the first
    /// `READY=1`, the one starting).
    serving: Generation,
    /// The highest generation number used. A failed reload's number is
    /// not used again: its killed workers may still be exiting, and must
    /// not count for (or abort) the next attempt.
    last_generation: u64,
    /// A reload under way, and whether another waits behind it.
    reload: Reload,
    /// First start, running, or stopping: what a worker's exit or a
    /// deadline means depends on it.
    phase: Phase,
    /// Every live worker, of any generation.
    workers: Workers,
    /// Restart pacing of the serving generation's crash-looping slots.
    backoff: Backoff,
    /// `STATUS=` and `/health` figures.
    board: Board,
    /// `WATCHDOG=1` pacing, when systemd asked for it.
    watchdog: Option<checks::Watchdog>,
    /// When `memory_high` is next compared (every
    /// [`checks::MEMORY_INTERVAL`], not every tick: it reads /proc).
    next_memory_check: Instant,
    /// Set once the supervisor is done; [`run`] returns it.
    exit: Option<Exit>,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

impl<O: Os> Supervisor<O> {
    /// A supervisor about to start generation 1 of `config`.
    pub(super) fn new(
        loader: Loader,
        config: Config,
        mut os: O,
        now: Instant,
    ) -> std::io::Result<Self> {
        let serving = Generation::new(1, config, os.build_id()?);
        Ok(Supervisor {
            loader,
            os,
            phase: Phase::Booting {
                deadline: now + secs(serving.config.boot_timeout),
            },
            serving,
            last_generation: 1,
            reload: Reload::default(),
            workers: Workers::default(),
            backoff: Backoff::default(),
            board: Board::new(now),
            watchdog: checks::Watchdog::from_env(now),
            next_memory_check: now,
            exit: None,
        })
    }

    /// Says what is starting, and starts it.
    pub(super) fn start(&mut self, listeners: &[String], now: Instant) {
        let (version, build, workers) = (
            env!("CARGO_PKG_VERSION"),
            &self.serving.build,
            self.serving.target,
        );
        tracing::info!(
            version,
            %build,
            workers,
            ?listeners,
            pid = std::process::id(),
            "ferricorn {version} (build {build}) starting {workers} workers on {}",
            listeners.join(", ")
        );
        self.reconcile(now);
    }

    /// How the supervisor ends, once it is done.
    pub(super) fn take_exit(&mut self) -> Option<Exit> {
        self.exit.take()
    }

    fn stopping(&self) -> bool {
        matches!(self.phase, Phase::Stopping { .. })
    }

    /// Starts what is missing and drains what is surplus.
    fn reconcile(&mut self, now: Instant) {
        if self.stopping() || self.exit.is_some() {
            return;
        }
        for slot in 1..=self.serving.target {
            if !self.workers.slot_filled(self.serving.number, slot)
                && !self.backoff.waiting(slot, now)
            {
                self.start_worker(false, slot, now);
            }
        }
        if let Some(new) = self.reload.starting() {
            let (number, target) = (new.number, new.target);
            for slot in 1..=target {
                // A failed start aborts the reload (and may begin a queued
                // one, which starts its own workers): stop here then.
                let same = self.reload.starting().is_some_and(|g| g.number == number);
                if same && !self.workers.slot_filled(number, slot) {
                    self.start_worker(true, slot, now);
                }
            }
        }
        // Scale-down: the highest slots go first.
        let (number, target) = (self.serving.number, self.serving.target);
        let surplus = self
            .workers
            .pids(|w| w.generation == number && w.slot > target && w.state != State::Draining);
        for pid in surplus {
            self.drain(pid, "scaled down", Some(ExitCause::ScaleDown), now);
        }
        let new_target = self.reload.starting().map_or(0, |g| g.target);
        self.os.release_sockets_above(target.max(new_target));
    }

    /// Starts a worker in `slot` of the serving generation, or of the one a
    /// reload is starting (`new`).
    fn start_worker(&mut self, new: bool, slot: usize, now: Instant) {
        let generation = match (self.reload.starting(), new) {
            (Some(g), true) => g,
            _ => &self.serving,
        };
        let number = generation.number;
        match self.os.spawn(slot, generation) {
            Ok(started) => {
                let pid = started.pid;
                let who = super::workers::label(slot, pid, number);
                tracing::info!(slot, generation = number, pid, "{who} spawned");
                let worker = Worker::new(slot, number, started.cgroup, now);
                self.workers.insert(pid, worker);
            }
            // A reload gives up; a serving slot backs off as if its worker
            // had died at once.
            Err(e) if new => self.abort_reload(e.to_string(), now),
            Err(_) => self.quick_death(slot, false, now),
        }
    }

    /// SIGHUP to one worker: finish in flight, close WebSockets with 1012.
    /// `cause` is what its exit counts as, unless it already had one.
    fn drain(&mut self, pid: u32, why: &str, cause: Option<ExitCause>, now: Instant) {
        let grace = secs(self.serving.config.graceful_timeout);
        let Some(w) = self.workers.get_mut(pid) else {
            return;
        };
        if w.state == State::Draining {
            return;
        }
        let (slot, generation, who) = (w.slot, w.generation, w.label(pid));
        tracing::info!(slot, generation, pid, reason = why, "{who} draining: {why}");
        w.state = State::Draining;
        w.drain_deadline = Some(now + grace);
        w.leaving = w.leaving.or(cause);
        self.os.signal(pid, libc::SIGHUP);
    }

    fn kill(&mut self, pid: u32, why: String, cause: ExitCause) {
        let Some(w) = self.workers.get_mut(pid) else {
            return;
        };
        if w.killed_for.is_some() {
            return;
        }
        let who = w.label(pid);
        tracing::warn!(slot = w.slot, generation = w.generation, pid, reason = %why, "killing {who}: {why}");
        w.killed_for = Some(why);
        w.leaving = Some(cause);
        self.os.signal(pid, libc::SIGKILL);
    }

    pub(super) fn stop(&mut self, fast: bool, now: Instant) {
        if self.stopping() && !fast {
            return;
        }
        // With stop_delay, workers keep serving that long with /health
        // failing (a load balancer takes the host out), then drain: their
        // deadline covers both.
        let delay = self.serving.config.stop_delay;
        let graceful = self.serving.config.graceful_timeout;
        let (grace, signal, status, how) = if fast {
            let how = "now (SIGQUIT)".to_owned();
            (
                FAST_STOP_GRACE,
                libc::SIGQUIT,
                "stopping now".to_owned(),
                how,
            )
        } else if delay > 0.0 {
            let status = format!(
                "stopping: leaving the rotation for {delay} s (/health 503), then draining"
            );
            let how = format!(
                "serving {delay} s more with /health failing (stop_delay), then gracefully, within {graceful} s"
            );
            (secs(graceful) + secs(delay), libc::SIGTERM, status, how)
        } else {
            let how = format!("gracefully, within {graceful} s");
            let status = "stopping: draining workers".to_owned();
            (secs(graceful), libc::SIGTERM, status, how)
        };
        self.os.notify(Note::Stopping(status));
        let workers = self.workers.len();
        tracing::info!(workers, fast, "stopping: {workers} workers, {how}");
        // A stop ends any reload, wherever it was: nothing may send READY=1
        // after STOPPING=1.
        self.reload = Reload::default();
        let deadline = now + grace;
        self.phase = Phase::Stopping {
            deadline,
            grace,
            killed: false,
        };
        for (pid, w) in self.workers.iter_mut() {
            w.state = State::Draining;
            w.drain_deadline = Some(deadline);
            self.os.signal(pid, signal);
        }
        self.check_stopped();
    }

    fn check_stopped(&mut self) {
        if self.stopping() && self.workers.is_empty() {
            tracing::info!("all workers exited; supervisor exiting");
            self.exit = Some(Exit::Success);
        }
    }

    pub(super) fn begin_reload(&mut self, now: Instant) {
        self.os.notify(Note::Reloading);
        let path = self.loader.path().display().to_string();
        tracing::info!(config = %path, "reloading: reading {path}");
        let config = match self.loader.load() {
            Ok(c) => c,
            Err(e) => return self.reload_failed(e.to_string(), true, now),
        };
        if config.bind != self.serving.config.bind {
            let (old, new) = (&self.serving.config.bind, &config.bind);
            tracing::warn!(%old, %new, "bind changed from {old} to {new}: takes effect on restart, not reload");
        }
        let build = match self.os.build_id() {
            Ok(b) => b,
            Err(e) => return self.reload_failed(e.to_string(), false, now),
        };
        self.last_generation += 1;
        let generation = Generation::new(self.last_generation, config, build);
        let (from, to, build, workers) = (
            self.serving.number,
            generation.number,
            &generation.build,
            generation.target,
        );
        tracing::info!(generation = to, %build, workers, "reload {from}→{to}: starting {workers} new workers (build {build})");
        self.reload.step = Step::Starting {
            began: now,
            deadline: now + secs(generation.config.boot_timeout),
            generation,
        };
        self.reconcile(now);
        self.publish(true, now);
    }

    fn reload_failed(&mut self, why: String, config: bool, now: Instant) {
        let serving = self.serving.number;
        for waiter in self.reload.waiters.drain(..) {
            let _ = waiter.send(crate::ctl::Answer::ReloadFailed {
                error: why.clone(),
                config,
                serving,
            });
        }
        tracing::error!(reason = %why, "reload failed: {why}; generation {serving} keeps serving");
        self.board.last_reload = Some(format!("FAILED: {why}"));
        self.board.reloads_failed += 1;
        self.reload.step = Step::Idle;
        self.announce_ready(now);
    }

    fn abort_reload(&mut self, why: String, now: Instant) {
        let Some(number) = self.reload.starting().map(|g| g.number) else {
            return;
        };
        for pid in self.workers.pids(|w| w.generation == number) {
            self.kill(
                pid,
                "its generation failed to start".into(),
                ExitCause::ReloadFailed,
            );
        }
        self.reload_failed(why, false, now);
        self.after_transition(now);
    }

    /// The new generation is fully ready: it serves, the old one drains.
    fn promote(&mut self, now: Instant) {
        let Step::Starting {
            generation, began, ..
        } = std::mem::take(&mut self.reload.step)
        else {
            return;
        };
        let old = std::mem::replace(&mut self.serving, generation).number;
        let number = self.serving.number;
        let stale = self.workers.pids(|w| w.generation != number);
        for &pid in &stale {
            self.drain(pid, "replaced by reload", Some(ExitCause::Reload), now);
        }
        self.backoff.clear();
        self.board.last_reload = Some(format!("ok (gen {number})"));
        self.board.reloads_ok += 1;
        tracing::info!(
            from = old,
            to = number,
            "reload {old}→{number}: new generation serving; old one draining"
        );
        self.reload.step = Step::Quiescing {
            from: old,
            began,
            waiting: stale,
            deadline: now + QUIESCE_TIMEOUT,
        };
        self.check_quiesced(now);
    }

    /// Sends the post-reload `READY=1` once the old generation has stopped
    /// accepting (or [`QUIESCE_TIMEOUT`] passed).
    fn check_quiesced(&mut self, now: Instant) {
        let Step::Quiescing {
            waiting,
            deadline,
            from,
            began,
        } = &mut self.reload.step
        else {
            return;
        };
        let workers = &self.workers;
        waiting.retain(|&pid| workers.get(pid).is_some_and(|w| w.killed_for.is_none()));
        if waiting.is_empty() || now > *deadline {
            let (from, to, took) = (*from, self.serving.number, now.duration_since(*began));
            self.reload.step = Step::Idle;
            let duration_ms = took.as_millis() as u64;
            let took = super::workers::human(took);
            tracing::info!(
                generation = to,
                duration_ms,
                "reload {from}→{to} complete in {took}"
            );
            for waiter in self.reload.waiters.drain(..) {
                let _ = waiter.send(crate::ctl::Answer::Reloaded {
                    from,
                    to,
                    took_ms: duration_ms,
                });
            }
            self.announce_ready(now);
            self.after_transition(now);
        }
    }

    /// Runs a reload that arrived while another transition was under way.
    fn after_transition(&mut self, now: Instant) {
        if self.reload.queued && !self.reload.busy() && !self.stopping() {
            self.reload.queued = false;
            self.reload.waiters = std::mem::take(&mut self.reload.queued_waiters);
            self.begin_reload(now);
        }
    }

    pub(super) fn on_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::Message(pid, message) => self.on_message(pid, message, now),
            Event::BadMessage(pid, error) => {
                tracing::warn!(pid, %error, "bad control message from worker pid {pid}: {error}");
            }
            Event::Exited(pid, status) => self.on_exit(pid, status, now),
        }
        self.reconcile(now);
    }

    fn on_message(&mut self, pid: u32, message: WorkerMessage, now: Instant) {
        let Some(w) = self.workers.get_mut(pid) else {
            return;
        };
        w.last_seen = now;
        match message {
            WorkerMessage::Heartbeat(counters) => {
                let requests = counters.requests.saturating_sub(w.counters.requests);
                w.counters = counters;
                self.board.count_requests(requests);
            }
            WorkerMessage::Ready if w.state == State::Booting => {
                w.state = State::Ready;
                let (slot, number) = (w.slot, w.generation);
                let boot_ms = now.duration_since(w.started).as_millis() as u64;
                let who = w.label(pid);
                tracing::info!(
                    slot,
                    generation = number,
                    pid,
                    boot_ms,
                    "{who} ready in {boot_ms} ms"
                );
                self.on_ready(slot, number, now);
            }
            WorkerMessage::Ready => {}
            WorkerMessage::Retire(reason) => self.retire(pid, &reason),
            // The relay gives reports to the ledger; none reach here.
            WorkerMessage::Metrics(_) => {}
            WorkerMessage::Draining => {
                if let Step::Quiescing { waiting, .. } = &mut self.reload.step {
                    waiting.retain(|&p| p != pid);
                }
                self.check_quiesced(now);
            }
        }
    }

    /// Replaces a worker gracefully: its successor starts now (reconcile
    /// sees the slot unfilled) and it drains once the successor is ready.
    fn retire(&mut self, pid: u32, reason: &str) {
        let (stopping, serving) = (self.stopping(), self.serving.number);
        let Some(w) = self.workers.get_mut(pid) else {
            return;
        };
        if w.state == State::Ready && w.generation == serving && !stopping {
            let who = w.label(pid);
            tracing::info!(slot = w.slot, pid, %reason, "{who} to be replaced ({reason}); starting its successor first");
            w.state = State::Retiring;
            w.leaving = Some(match reason {
                "memory_high" => ExitCause::MemoryHigh,
                _ => ExitCause::MaxRequests,
            });
        }
    }

    fn on_ready(&mut self, slot: usize, number: u64, now: Instant) {
        if number == self.serving.number {
            self.backoff.forget(slot);
            // A successor is up: its retiring predecessor can drain now.
            let retiring = self
                .workers
                .pids(|w| w.generation == number && w.slot == slot && w.state == State::Retiring);
            for pid in retiring {
                // Its cause is already set: why it retired.
                self.drain(pid, "successor ready", None, now);
            }
            let booting = matches!(self.phase, Phase::Booting { .. });
            if booting && self.workers.slots_ready(number, self.serving.target) {
                self.phase = Phase::Running;
                let (workers, generation) = (self.serving.target, number);
                tracing::info!(
                    workers,
                    generation,
                    "all {workers} workers of generation {generation} ready"
                );
                self.announce_ready(now);
                self.after_transition(now);
            }
        } else if let Some(new) = self.reload.starting() {
            if number == new.number && self.workers.slots_ready(number, new.target) {
                self.promote(now);
            }
        }
    }

    fn on_exit(
        &mut self,
        pid: u32,
        status: std::io::Result<std::process::ExitStatus>,
        now: Instant,
    ) {
        let Some(w) = self.workers.remove(pid) else {
            return;
        };
        let mut how = exit_status::describe(&status);
        let uptime = now.duration_since(w.started);
        let mut oom = false;
        if let Some(path) = &w.cgroup {
            if self.os.reap_cgroup(path) {
                oom = true;
                how.push_str(", killed by the kernel OOM killer at memory_max");
            }
        }
        let cause = exit_status::cause(&status, &w, oom, self.stopping());
        self.board.exits.count(cause);
        let (slot, generation) = (w.slot, w.generation);
        let expected = w.state == State::Draining && w.killed_for.is_none();
        // Filled again by reconcile: a worker of the serving generation
        // that was not leaving anyway.
        let replacing = !expected
            && !self.stopping()
            && generation == self.serving.number
            && w.state != State::Retiring;
        exit_status::log(pid, &w, &how, uptime, replacing);
        self.check_quiesced(now);
        if expected || self.stopping() {
            if !self.stopping() {
                // /metrics counts the exit now, not at the next STATUS=.
                self.publish(true, now);
            }
            return self.check_stopped();
        }
        self.board.restarts += 1;
        if self
            .reload
            .starting()
            .is_some_and(|g| g.number == generation)
        {
            let why = format!("new worker {slot} exited before the generation was ready: {how}");
            return self.abort_reload(why, now);
        }
        if generation == self.serving.number {
            let was_ready = w.state != State::Booting;
            // Killed for silence is a wedge, not a crash loop: replace at once.
            if w.killed_for.is_none() && (!was_ready || uptime < backoff::CRASH_WINDOW) {
                self.quick_death(slot, was_ready, now);
            } else {
                self.backoff.forget(slot);
            }
        }
        self.publish(true, now);
    }
}

mod backoff;
mod checks;
mod intents;
#[cfg(test)]
mod tests;
