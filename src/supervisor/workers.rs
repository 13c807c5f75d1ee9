//! The supervisor's table of worker processes and the generations they
//! belong to: who is in which slot, in which state, and the questions the
//! lifecycle asks of them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::metrics::ExitCause;
use crate::config::Config;
use crate::control::Counters;

/// Where a worker is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Started, not yet ready.
    Booting,
    /// Accepting.
    Ready,
    /// Accepting, but asked to be replaced; drained once its replacement is
    /// ready.
    Retiring,
    /// Told to drain (or to stop); no longer counts for its slot.
    Draining,
}

impl State {
    /// As `ferricorn status` shows it.
    pub fn name(self) -> &'static str {
        match self {
            State::Booting => "booting",
            State::Ready => "ready",
            State::Retiring => "retiring",
            State::Draining => "draining",
        }
    }
}

/// One worker process.
pub(super) struct Worker {
    /// Its place among the generation's workers (1-based): a successor
    /// takes the same slot, and with it the slot's socket and cgroup name.
    pub slot: usize,
    /// The generation it was started for.
    pub generation: u64,
    /// What it may be asked, and what its exit means.
    pub state: State,
    /// When it was spawned: boot timeout, crash-loop window, uptime.
    pub started: Instant,
    /// Last heartbeat (or ready): silence past `timeout` kills.
    pub last_seen: Instant,
    /// Set when draining starts: past it, SIGKILL.
    pub drain_deadline: Option<Instant>,
    /// Its latest figures, summed into `STATUS=`.
    pub counters: Counters,
    /// Why the supervisor killed it, for the exit log line; also marks it
    /// as no longer worth waiting for.
    pub killed_for: Option<String>,
    /// Why it is leaving, once it was asked to (drained, retired, killed):
    /// what `/metrics` counts its exit as.
    pub leaving: Option<ExitCause>,
    /// Its own cgroup, when the subtree is delegated: read for memory,
    /// removed at exit.
    pub cgroup: Option<PathBuf>,
}

/// How the journal names a worker, so each line reads on its own in
/// `journalctl -u ferricorn`: "worker 2 (pid 1234, generation 3)".
pub(super) fn label(slot: usize, pid: u32, generation: u64) -> String {
    format!("worker {slot} (pid {pid}, generation {generation})")
}

/// A duration as a person reads it in a log line: "850 ms", "12.3 s",
/// "2 h 5 min".
pub(super) fn human(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..=9_999 => format!("{ms} ms"),
        10_000..=119_999 => format!("{:.1} s", d.as_secs_f64()),
        120_000..=7_199_999 => format!("{} min {} s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{} h {} min", ms / 3_600_000, ms / 60_000 % 60),
    }
}

impl Worker {
    pub fn label(&self, pid: u32) -> String {
        label(self.slot, pid, self.generation)
    }

    pub fn new(slot: usize, generation: u64, cgroup: Option<PathBuf>, now: Instant) -> Worker {
        Worker {
            slot,
            generation,
            state: State::Booting,
            started: now,
            last_seen: now,
            drain_deadline: None,
            counters: Counters::default(),
            killed_for: None,
            leaving: None,
            cgroup,
        }
    }
}

/// One generation's settings: a reload builds a new one.
pub(super) struct Generation {
    /// Counts reloads from 1; workers and logs carry it.
    pub number: u64,
    /// What its workers run with.
    pub config: Arc<Config>,
    /// `config` as the JSON line each of its workers reads first.
    pub config_line: String,
    /// Hash of the executable it was started from, for `/health`.
    pub build: String,
    /// Workers wanted; SIGTTIN/SIGTTOU move it until the next reload.
    pub target: usize,
}

impl Generation {
    /// Generation `number` of `config`, run from the binary whose hash is
    /// `build`.
    pub fn new(number: u64, config: Config, build: String) -> Generation {
        // Every field is a plain number, string or enum, and validation
        // keeps floats finite: JSON can encode all of them.
        let config_line = serde_json::to_string(&config).expect("a Config encodes as JSON");
        Generation {
            number,
            target: config.workers,
            config_line,
            config: Arc::new(config),
            build,
        }
    }
}

/// Every live worker, by pid.
#[derive(Default)]
pub(super) struct Workers(HashMap<u32, Worker>);

impl Workers {
    pub fn get(&self, pid: u32) -> Option<&Worker> {
        self.0.get(&pid)
    }

    pub fn get_mut(&mut self, pid: u32) -> Option<&mut Worker> {
        self.0.get_mut(&pid)
    }

    pub fn insert(&mut self, pid: u32, worker: Worker) {
        self.0.insert(pid, worker);
    }

    pub fn remove(&mut self, pid: u32) -> Option<Worker> {
        self.0.remove(&pid)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &Worker)> {
        self.0.iter().map(|(&pid, w)| (pid, w))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut Worker)> {
        self.0.iter_mut().map(|(&pid, w)| (pid, w))
    }

    /// Pids of the workers `keep` selects, collected so the caller may
    /// change the table while acting on them.
    pub fn pids(&self, keep: impl Fn(&Worker) -> bool) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .iter()
            .filter(|(_, w)| keep(w))
            .map(|(p, _)| p)
            .collect();
        // Stable order: logs and tests read the same sequence every run.
        pids.sort_unstable();
        pids
    }

    /// Whether slot `slot` of generation `number` has a worker that is or
    /// will be serving.
    pub fn slot_filled(&self, number: u64, slot: usize) -> bool {
        self.0.values().any(|w| {
            w.generation == number
                && w.slot == slot
                && matches!(w.state, State::Booting | State::Ready)
        })
    }

    /// Whether every slot up to `target` of generation `number` is ready.
    pub fn slots_ready(&self, number: u64, target: usize) -> bool {
        (1..=target).all(|slot| {
            self.0
                .values()
                .any(|w| w.generation == number && w.slot == slot && w.state == State::Ready)
        })
    }
}
