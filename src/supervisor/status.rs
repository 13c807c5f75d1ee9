//! The supervisor's figures: `STATUS=` for `systemctl status`, the same as
//! JSON for each worker's `/health`, how often they are sent, and the
//! request rate computed from heartbeats.

use std::time::{Duration, Instant};

use super::metrics::{Exits, Figures};
use super::notify::Note;
use super::reload::Reload;
use super::system::Os;
use super::workers::{Generation, State, Workers};
use crate::control::SupervisorStatus;

/// How often `STATUS=` is refreshed while nothing else changes; also the
/// request rate's window.
const STATUS_INTERVAL: Duration = Duration::from_secs(2);

/// What the core knows that goes into the figures.
pub(super) struct Facts<'a> {
    /// Counted for ready workers, connections and WebSockets.
    pub workers: &'a Workers,
    /// The serving generation, its build and its worker target.
    pub generation: u64,
    pub build: &'a str,
    pub target: usize,
    /// Quick deaths of looping slots.
    pub crash_loop: u32,
    /// The generation a reload is starting.
    pub reloading_to: Option<u64>,
}

/// The facts of the supervisor's parts, gathered.
pub(super) fn facts<'a>(
    workers: &'a Workers,
    serving: &'a Generation,
    crash_loop: u32,
    reload: &Reload,
) -> Facts<'a> {
    Facts {
        workers,
        generation: serving.number,
        build: &serving.build,
        target: serving.target,
        crash_loop,
        reloading_to: reload.starting().map(|g| g.number),
    }
}

/// The figures' own state.
pub(super) struct Board {
    /// Requests counted from heartbeats since start.
    requests_total: u64,
    /// Start of the current rate window, the total then, and the rate of
    /// the last full window.
    rate: (Instant, u64, f64),
    /// The last line sent and when: an unchanged line is sent again only
    /// every [`STATUS_INTERVAL`].
    last: Option<(Instant, String)>,
    /// Workers that died or were killed unexpectedly since start.
    pub restarts: u64,
    /// "ok (gen N)" or "FAILED: why", once a reload has run.
    pub last_reload: Option<String>,
    /// Worker exits by cause, reloads by outcome: for `/metrics`.
    pub exits: Exits,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
}

impl Board {
    pub fn new(now: Instant) -> Board {
        Board {
            requests_total: 0,
            rate: (now, 0, 0.0),
            last: None,
            restarts: 0,
            last_reload: None,
            exits: Exits::default(),
            reloads_ok: 0,
            reloads_failed: 0,
        }
    }

    /// Adds requests a heartbeat reported.
    pub fn count_requests(&mut self, requests: u64) {
        self.requests_total += requests;
    }

    /// The figures now.
    pub fn status(&self, facts: &Facts<'_>) -> SupervisorStatus {
        let workers_ready = facts
            .workers
            .iter()
            .filter(|(_, w)| {
                w.generation == facts.generation
                    && matches!(w.state, State::Ready | State::Retiring)
            })
            .count();
        let (mut connections, mut websockets) = (0, 0);
        for (_, w) in facts.workers.iter() {
            connections += w.counters.connections;
            websockets += w.counters.websockets;
        }
        SupervisorStatus {
            generation: facts.generation,
            workers_ready,
            workers_target: facts.target,
            requests_per_second: self.rate.2,
            connections,
            websockets,
            restarts: self.restarts,
            crash_loop: facts.crash_loop,
            reloading_to: facts.reloading_to,
            last_reload: self.last_reload.clone(),
        }
    }

    /// What `/metrics` takes from the core.
    fn figures(&self, facts: &Facts<'_>) -> Figures {
        let mut states = [
            (State::Booting.name(), 0),
            (State::Ready.name(), 0),
            (State::Retiring.name(), 0),
            (State::Draining.name(), 0),
        ];
        for (_, w) in facts.workers.iter() {
            if let Some(entry) = states.iter_mut().find(|(name, _)| *name == w.state.name()) {
                entry.1 += 1;
            }
        }
        Figures {
            generation: facts.generation,
            build: facts.build.to_owned(),
            target: facts.target,
            states,
            exits: self.exits.clone(),
            reloads_ok: self.reloads_ok,
            reloads_failed: self.reloads_failed,
            queues: Vec::new(),
        }
    }

    /// `READY=1` with fresh figures.
    pub fn ready(&mut self, facts: &Facts<'_>, now: Instant, os: &mut impl Os) {
        let status = self.status(facts);
        let line = status.to_string();
        os.notify(Note::Ready(line.clone()));
        os.broadcast(&status);
        os.figures(self.figures(facts));
        self.last = Some((now, line));
    }

    /// Sends the figures every [`STATUS_INTERVAL`], or now if `changed`
    /// and the line differs.
    pub fn publish(&mut self, facts: &Facts<'_>, changed: bool, now: Instant, os: &mut impl Os) {
        let due = self
            .last
            .as_ref()
            .is_none_or(|(t, _)| now.duration_since(*t) >= STATUS_INTERVAL);
        if !(due || changed) {
            return;
        }
        let (since, base, _) = self.rate;
        let elapsed = now.duration_since(since).as_secs_f64();
        if elapsed >= STATUS_INTERVAL.as_secs_f64() {
            let rate = (self.requests_total - base) as f64 / elapsed;
            self.rate = (now, self.requests_total, rate);
        }
        // /metrics counts what the line does not show (exits by cause).
        os.figures(self.figures(facts));
        let status = self.status(facts);
        let line = status.to_string();
        if self.last.as_ref().is_some_and(|(_, l)| *l == line) && !due {
            return;
        }
        os.notify(Note::Status(line.clone()));
        os.broadcast(&status);
        self.last = Some((now, line));
    }
}
