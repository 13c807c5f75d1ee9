//! What the supervisor's core asks of the machine — hash the executable,
//! start a worker, signal it, tell systemd, read memory — as one trait
//! ([`Os`]), so the lifecycle runs in unit tests against a recorder.
//! [`System`] is the real machine: processes, sockets, cgroups, sd_notify.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use tokio::sync::{mpsc, watch};

use super::metrics::{Figures, Queue, SharedLedger};
use super::notify::{self, Note};
use super::relay::{relay, Event};
use super::workers::Generation;
use super::{cgroup, spawn};
use crate::control::SupervisorStatus;
use crate::listen::{ListenError, Sockets};
use crate::pubsub::hub::Hub;

/// The machine, as the core sees it.
pub(crate) trait Os {
    /// The build id of the executable workers start from, as it is on
    /// disk now (a package upgrade replaces it).
    fn build_id(&mut self) -> io::Result<String>;
    /// Starts a worker of `generation` in `slot`.
    fn spawn(&mut self, slot: usize, generation: &Generation) -> Result<Started, SpawnError>;
    /// Sends `signal` to a worker.
    fn signal(&mut self, pid: u32, signal: libc::c_int);
    /// Tells systemd.
    fn notify(&mut self, note: Note);
    /// Passes the figures to every worker, for its `/health`.
    fn broadcast(&mut self, status: &SupervisorStatus);
    /// Passes the core's figures to `/metrics`.
    fn figures(&mut self, figures: Figures);
    /// Closes the per-slot sockets of slots above `keep`.
    fn release_sockets_above(&mut self, keep: usize);
    /// Bytes a worker uses.
    fn memory_usage(&self, pid: u32, cgroup: Option<&Path>) -> Option<u64>;
    /// Removes an exited worker's cgroup; whether the kernel's OOM killer
    /// acted in it.
    fn reap_cgroup(&mut self, cgroup: &Path) -> bool;
}

/// A worker process that started.
pub(crate) struct Started {
    pub pid: u32,
    /// Its own cgroup, if it got one.
    pub cgroup: Option<PathBuf>,
}

/// Why a worker could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    #[error("cannot open a socket: {0}")]
    Socket(#[from] ListenError),
    #[error("cannot spawn worker: {0}")]
    Spawn(#[from] io::Error),
}

/// The real machine.
pub(crate) struct System {
    /// The path workers are started from (see `cli::worker_executable`).
    exe: PathBuf,
    /// Held for the supervisor's life, so a queue outlives any worker.
    sockets: Sockets,
    /// The delegated cgroup subtree, if systemd gave one.
    cgroups: Option<cgroup::Subtree>,
    /// Where each worker's relay task sends its events.
    events: mpsc::UnboundedSender<Event>,
    /// The latest figures (JSON), which every relay passes on.
    status: watch::Sender<String>,
    /// The pub/sub hub every worker is attached to; `None` if its thread
    /// could not start (workers then publish to themselves only).
    hub: Option<Hub>,
    /// Every worker's counts for `/metrics`, when it is served.
    ledger: Option<SharedLedger>,
}

impl System {
    pub fn new(
        exe: PathBuf,
        sockets: Sockets,
        cgroups: Option<cgroup::Subtree>,
        events: mpsc::UnboundedSender<Event>,
        ledger: Option<SharedLedger>,
    ) -> System {
        System {
            ledger,
            exe,
            sockets,
            cgroups,
            events,
            status: watch::Sender::new(String::new()),
            hub: Hub::start()
                .inspect_err(|e| tracing::error!(error = %e, "cannot start the pub/sub hub ({e}); pub/sub reaches one worker only"))
                .ok(),
        }
    }
}

impl Os for System {
    fn build_id(&mut self) -> io::Result<String> {
        let hashing = std::time::Instant::now();
        let build = spawn::build_id(&self.exe).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot read {}: {e}", self.exe.display()))
        })?;
        let ms = hashing.elapsed().as_millis() as u64;
        tracing::debug!(ms, "hashed executable");
        Ok(build)
    }

    fn spawn(&mut self, slot: usize, generation: &Generation) -> Result<Started, SpawnError> {
        let fds = self.sockets.for_slot(slot).inspect_err(|e| {
            tracing::error!(slot, error = %e, "cannot open slot {slot}'s socket: {e}");
        })?;
        let cgroup = match &self.cgroups {
            Some(subtree) => match subtree.worker(slot, generation.config.memory_max.0) {
                Ok(cg) => Some(cg),
                Err(e) => {
                    tracing::warn!(slot, error = %e, "cannot create worker {slot}'s cgroup ({e}); starting it in the supervisor's");
                    None
                }
            },
            None => None,
        };
        // Above the floor, like the listeners, for the child's dup2.
        let pubsub = match &self.hub {
            Some(hub) => match hub
                .attach(slot, generation.number)
                .and_then(|fd| crate::sys::dup_above(fd.as_raw_fd(), crate::sys::INHERIT_FLOOR))
            {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::error!(slot, error = %e, "cannot attach worker {slot} to the pub/sub hub ({e}); it publishes to itself only");
                    None
                }
            },
            None => None,
        };
        let request = spawn::SpawnRequest {
            exe: &self.exe,
            slot,
            generation: generation.number,
            build: &generation.build,
            listeners: &fds,
            config_line: &generation.config_line,
            cgroup_procs: cgroup.as_ref().map(|cg| cg.procs.as_raw_fd()),
            pubsub: pubsub.as_ref().map(AsRawFd::as_raw_fd),
            metrics: self.ledger.is_some(),
        };
        let spawned = spawn::spawn(&request);
        // The child has its copy; the hub keeps the other end.
        drop(pubsub);
        let cgroup = cgroup.map(|cg| cg.path);
        match spawned {
            Ok(spawned) => {
                let pid = spawned.pid;
                let entry = self.ledger.as_ref().and_then(|ledger| {
                    let id = ledger.lock().ok()?.join(slot, pid, cgroup.clone());
                    Some((ledger.clone(), id))
                });
                let status = self.status.subscribe();
                tokio::spawn(relay(spawned, self.events.clone(), status, entry));
                Ok(Started { pid, cgroup })
            }
            Err(e) => {
                if let Some(path) = &cgroup {
                    cgroup::remove(path);
                }
                let number = generation.number;
                let exe = self.exe.display();
                tracing::error!(slot, generation = number, error = %e, %exe, "cannot spawn worker {slot} of generation {number} from {exe}: {e}");
                Err(e.into())
            }
        }
    }

    fn signal(&mut self, pid: u32, signal: libc::c_int) {
        crate::sys::signal(pid, signal);
    }

    fn notify(&mut self, note: Note) {
        notify::send(note);
    }

    fn broadcast(&mut self, status: &SupervisorStatus) {
        if let Ok(json) = serde_json::to_string(status) {
            self.status.send_replace(json);
        }
    }

    fn figures(&mut self, mut figures: Figures) {
        let Some(ledger) = &self.ledger else { return };
        figures.queues = self
            .sockets
            .queues()
            .into_iter()
            .map(|(listener, queued, limit)| Queue {
                listener,
                queued,
                limit,
            })
            .collect();
        if let Ok(mut ledger) = ledger.lock() {
            ledger.set_figures(figures);
        }
    }

    fn release_sockets_above(&mut self, keep: usize) {
        self.sockets.release_above(keep);
    }

    fn memory_usage(&self, pid: u32, cgroup: Option<&Path>) -> Option<u64> {
        cgroup::memory_usage(cgroup, pid)
    }

    fn reap_cgroup(&mut self, cgroup: &Path) -> bool {
        let oom = cgroup::oom_kills(cgroup) > 0;
        cgroup::remove(cgroup);
        oom
    }
}
