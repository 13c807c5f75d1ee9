//! The supervisor's side of `/metrics`: one view of the whole service,
//! whichever worker served what.
//!
//! The [`Ledger`] keeps every live worker's latest [`Report`] (each relay
//! task stores what its worker sends) and the summed counts of every worker
//! that has exited, so a counter never goes back across a reload, a recycle
//! or a crash; only a restart of the service resets it, as Prometheus
//! expects. The core adds what only it knows ([`Figures`]: the generation,
//! exits by cause, reloads) whenever it publishes `STATUS=`. Scrapes are
//! answered on a thread of their own ([`serve`]), so a scrape never delays
//! a heartbeat, the watchdog or a reload; [`expose`] turns a snapshot into
//! Prometheus's text format.

pub(crate) mod expose;
pub(crate) mod serve;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::metrics::Report;

/// Why a worker's life ended, as `worker_exits_total{cause}` counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExitCause {
    /// Exited unasked with an error status (a panic that aborts, an exit
    /// code).
    Crash,
    /// Killed by a signal nobody here sent (`kill -9`, SIGSEGV).
    Signal,
    /// Killed by the kernel's OOM killer at `memory_max`.
    Oom,
    /// Killed for missing heartbeats (`timeout`).
    HeartbeatTimeout,
    /// Killed for not being ready within `boot_timeout`.
    BootTimeout,
    /// Killed for still draining after `graceful_timeout`.
    DrainTimeout,
    /// Replaced for being above `memory_high`.
    MemoryHigh,
    /// Replaced after `max_requests`.
    MaxRequests,
    /// Replaced by a reload's new generation.
    Reload,
    /// Killed because its (new) generation failed to start.
    ReloadFailed,
    /// Drained by SIGTTOU or a smaller `workers`.
    ScaleDown,
    /// The service stopped.
    Stop,
}

impl ExitCause {
    pub const ALL: [ExitCause; 12] = [
        ExitCause::Crash,
        ExitCause::Signal,
        ExitCause::Oom,
        ExitCause::HeartbeatTimeout,
        ExitCause::BootTimeout,
        ExitCause::DrainTimeout,
        ExitCause::MemoryHigh,
        ExitCause::MaxRequests,
        ExitCause::Reload,
        ExitCause::ReloadFailed,
        ExitCause::ScaleDown,
        ExitCause::Stop,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            ExitCause::Crash => "crash",
            ExitCause::Signal => "signal",
            ExitCause::Oom => "oom",
            ExitCause::HeartbeatTimeout => "heartbeat_timeout",
            ExitCause::BootTimeout => "boot_timeout",
            ExitCause::DrainTimeout => "drain_timeout",
            ExitCause::MemoryHigh => "memory_high",
            ExitCause::MaxRequests => "max_requests",
            ExitCause::Reload => "reload",
            ExitCause::ReloadFailed => "reload_failed",
            ExitCause::ScaleDown => "scale_down",
            ExitCause::Stop => "stop",
        }
    }

    fn index(self) -> usize {
        ExitCause::ALL
            .iter()
            .position(|&c| c == self)
            .expect("ALL lists every cause")
    }
}

/// Exits counted by cause.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Exits([u64; ExitCause::ALL.len()]);

impl Exits {
    pub fn count(&mut self, cause: ExitCause) {
        self.0[cause.index()] += 1;
    }

    pub fn get(&self, cause: ExitCause) -> u64 {
        self.0[cause.index()]
    }
}

/// A listening socket's accept queue, where the kernel shows it (TCP).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Queue {
    /// The socket's name and address, as the start-up line gives it.
    pub listener: String,
    /// Connections waiting to be accepted.
    pub queued: u32,
    /// The most the queue holds (the backlog, capped by somaxconn).
    pub limit: u32,
}

/// What only the core knows, as of its last `STATUS=`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Figures {
    /// The serving generation and the build it runs.
    pub generation: u64,
    pub build: String,
    /// Workers wanted.
    pub target: usize,
    /// Live workers by state: booting, ready, retiring, draining.
    pub states: [(&'static str, usize); 4],
    pub exits: Exits,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// Filled in by the machine (`System`), which holds the sockets.
    pub queues: Vec<Queue>,
}

/// A live worker, as the ledger knows it.
#[derive(Clone, Debug)]
pub(crate) struct Live {
    pub slot: usize,
    pub pid: u32,
    /// Read for its memory at scrape time.
    pub cgroup: Option<PathBuf>,
    pub report: Report,
}

/// Every worker's counts, and the core's figures.
#[derive(Debug)]
pub(crate) struct Ledger {
    /// The summed counts of every worker that has exited.
    retired: Report,
    /// Requests of exited workers, by slot.
    retired_by_slot: BTreeMap<usize, u64>,
    /// Live workers by ledger id (not pid: a pid is reused).
    live: HashMap<u64, Live>,
    next_id: u64,
    figures: Figures,
    /// When the supervisor started, seconds since the epoch.
    started: f64,
}

/// The ledger, shared by the relays (writing), the core (writing its
/// figures) and the metrics thread (reading).
pub(crate) type SharedLedger = Arc<Mutex<Ledger>>;

/// What one scrape shows.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    /// Every worker's counts, exited or live.
    pub totals: Report,
    /// Requests by slot, exited workers included.
    pub requests_by_slot: BTreeMap<usize, u64>,
    pub live: Vec<Live>,
    pub figures: Figures,
    pub started: f64,
}

impl Ledger {
    pub fn shared() -> SharedLedger {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Arc::new(Mutex::new(Ledger {
            retired: Report::default(),
            retired_by_slot: BTreeMap::new(),
            live: HashMap::new(),
            next_id: 0,
            figures: Figures::default(),
            started,
        }))
    }

    /// A worker started; its reports go to the id returned.
    pub fn join(&mut self, slot: usize, pid: u32, cgroup: Option<PathBuf>) -> u64 {
        self.next_id += 1;
        let live = Live {
            slot,
            pid,
            cgroup,
            report: Report::default(),
        };
        self.live.insert(self.next_id, live);
        self.next_id
    }

    /// A worker's latest counts, replacing its previous ones.
    pub fn report(&mut self, id: u64, report: Report) {
        if let Some(live) = self.live.get_mut(&id) {
            live.report = report;
        }
    }

    /// A worker exited: its last counts join the retired ones.
    pub fn leave(&mut self, id: u64) {
        if let Some(gone) = self.live.remove(&id) {
            self.retired.add_counts(&gone.report);
            *self.retired_by_slot.entry(gone.slot).or_default() += gone.report.requests;
        }
    }

    pub fn set_figures(&mut self, figures: Figures) {
        self.figures = figures;
    }

    /// The whole service now.
    pub fn snapshot(&self) -> Snapshot {
        let mut totals = self.retired.clone();
        let mut requests_by_slot = self.retired_by_slot.clone();
        let mut live: Vec<Live> = self.live.values().cloned().collect();
        live.sort_by_key(|w| (w.slot, w.pid));
        for w in &live {
            totals.add_counts(&w.report);
            *requests_by_slot.entry(w.slot).or_default() += w.report.requests;
        }
        Snapshot {
            totals,
            requests_by_slot,
            live,
            figures: self.figures.clone(),
            started: self.started,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(requests: u64) -> Report {
        Report {
            requests,
            connections: 1,
            ..Report::default()
        }
    }

    #[test]
    fn an_exited_workers_counts_stay_in_the_totals() {
        let ledger = Ledger::shared();
        let mut ledger = ledger.lock().unwrap();
        let a = ledger.join(1, 100, None);
        let b = ledger.join(2, 101, None);
        ledger.report(a, report(5));
        ledger.report(b, report(7));
        assert_eq!(ledger.snapshot().totals.requests, 12);
        ledger.report(a, report(6));
        ledger.leave(a);
        // Its successor in slot 1, with a reused pid.
        let c = ledger.join(1, 100, None);
        ledger.report(c, report(2));
        let snap = ledger.snapshot();
        assert_eq!(snap.totals.requests, 15);
        assert_eq!(snap.requests_by_slot[&1], 8);
        assert_eq!(snap.requests_by_slot[&2], 7);
        assert_eq!(snap.live.len(), 2);
        // A report for a worker already gone changes nothing.
        ledger.report(a, report(100));
        assert_eq!(ledger.snapshot().totals.requests, 15);
    }

    #[test]
    fn every_cause_has_its_own_count() {
        let mut exits = Exits::default();
        for cause in ExitCause::ALL {
            exits.count(cause);
        }
        exits.count(ExitCause::Reload);
        assert_eq!(exits.get(ExitCause::Reload), 2);
        assert_eq!(exits.get(ExitCause::Stop), 1);
        let labels: std::collections::HashSet<_> =
            ExitCause::ALL.iter().map(|c| c.label()).collect();
        assert_eq!(labels.len(), ExitCause::ALL.len());
    }
}
