//! The supervisor (`ferricorn serve`, the unit's MAINPID): holds the
//! listening sockets, runs generations of worker processes, and turns
//! signals and worker reports into the lifecycle in DESIGN.md.
//!
//! It is a single-threaded event loop over three inputs: signals (as
//! [`signals::Intent`]s), worker events (control messages and exits), and a
//! tick that enforces deadlines (boot, heartbeat, drain), restarts slots
//! whose backoff has passed, and refreshes `STATUS=` and the watchdog.

mod cgroup;
mod notify;
mod signals;
mod spawn;

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::config::{Config, Loader};
use crate::control::{Counters, DecodeError, SupervisorStatus, WorkerMessage};
use crate::listen::Sockets;
use signals::{Intent, Signals};

/// Exit code when no worker could become ready at first start (the app
/// fails to initialise). Distinct so that `RestartPreventExitStatus=` stops
/// systemd from looping on it, as Gunicorn's exit 3 does not.
pub const EXIT_BOOT_FAILURE: u8 = 3;

/// How often deadlines are checked.
const TICK: Duration = Duration::from_millis(100);
/// How often `STATUS=` is refreshed while nothing else changes.
const STATUS_INTERVAL: Duration = Duration::from_secs(2);
/// A worker that dies within this long of starting counts as crash-looping.
const CRASH_WINDOW: Duration = Duration::from_secs(10);
/// First restart delay of a crash-looping slot; doubles per quick death.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest restart delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Quick deaths of one slot before a first start gives up with
/// [`EXIT_BOOT_FAILURE`].
const BOOT_ATTEMPTS: u32 = 3;
/// Time SIGINT/SIGQUIT give workers before SIGKILL.
const FAST_STOP_GRACE: Duration = Duration::from_secs(1);
/// How often worker memory is compared with `memory_high`.
const MEMORY_INTERVAL: Duration = Duration::from_secs(1);
/// After a reload, how long `READY=1` waits for the old generation to say
/// it stopped accepting (a wedged one is the heartbeat's business).
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a worker is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
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

struct Worker {
    slot: usize,
    generation: u64,
    state: State,
    started: Instant,
    /// Last heartbeat (or ready): silence past `timeout` kills.
    last_seen: Instant,
    /// Set when draining starts: past it, SIGKILL.
    drain_deadline: Option<Instant>,
    counters: Counters,
    /// Why the supervisor killed it, for the exit log line.
    killed_for: Option<String>,
    /// Its own cgroup, when the subtree is delegated.
    cgroup: Option<PathBuf>,
}

/// One generation's settings: a reload builds a new one.
struct Generation {
    number: u64,
    config: Arc<Config>,
    config_line: String,
    build: String,
    /// Workers wanted; SIGTTIN/SIGTTOU move it until the next reload.
    target: usize,
}

/// A reload in progress.
struct Pending {
    generation: Generation,
    deadline: Instant,
}

/// Restart pacing of one slot.
#[derive(Default)]
struct Backoff {
    quick_deaths: u32,
    not_before: Option<Instant>,
}

enum Phase {
    /// First start: `READY=1` not yet sent.
    Booting {
        deadline: Instant,
    },
    Running,
    Stopping {
        deadline: Instant,
        /// What the workers were given before SIGKILL, for the log.
        grace: Duration,
        killed: bool,
    },
}

enum Event {
    Message(u32, WorkerMessage),
    BadMessage(u32, DecodeError),
    Exited(u32, std::io::Result<ExitStatus>),
}

struct Supervisor {
    loader: Loader,
    exe: PathBuf,
    sockets: Sockets,
    serving: Generation,
    pending: Option<Pending>,
    reload_queued: bool,
    phase: Phase,
    workers: HashMap<u32, Worker>,
    backoff: HashMap<usize, Backoff>,
    events_tx: mpsc::UnboundedSender<Event>,
    restarts: u64,
    /// "ok (gen N)" or "FAILED: why", for `STATUS=`.
    last_reload: Option<String>,
    /// Old workers that have yet to confirm they stopped accepting after a
    /// promotion; `READY=1` waits for them so that a client connecting
    /// after it reaches the new generation.
    quiescing: Option<(Vec<u32>, Instant)>,
    /// Latest figures, sent to every worker for its `/health`.
    status_tx: tokio::sync::watch::Sender<String>,
    /// Requests counted from heartbeats, for the requests/s figure.
    requests_total: u64,
    rate: (Instant, u64, f64),
    last_status: Option<(Instant, String)>,
    watchdog: Option<(Duration, Instant)>,
    /// The delegated cgroup subtree, if systemd gave us one.
    cgroups: Option<cgroup::Subtree>,
    next_memory_check: Instant,
    exit: Option<ExitCode>,
}

/// Runs the supervisor until it stops.
pub async fn run(loader: Loader, config: Config, exe: PathBuf, sockets: Sockets) -> ExitCode {
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let serving = match generation(1, config, &exe) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let now = Instant::now();
    let mut sup = Supervisor {
        loader,
        exe,
        sockets,
        phase: Phase::Booting {
            deadline: now + secs(serving.config.boot_timeout),
        },
        serving,
        pending: None,
        reload_queued: false,
        workers: HashMap::new(),
        backoff: HashMap::new(),
        events_tx,
        restarts: 0,
        last_reload: None,
        quiescing: None,
        status_tx: tokio::sync::watch::Sender::new(String::new()),
        requests_total: 0,
        rate: (now, 0, 0.0),
        last_status: None,
        watchdog: notify::watchdog_interval().map(|d| (d / 2, now)),
        cgroups: None,
        next_memory_check: now,
        exit: None,
    };
    sup.cgroups = setup_cgroups(&sup.serving.config);
    let names = sup.sockets.names();
    if sup.serving.config.reuse_port && matches!(sup.sockets, Sockets::Shared(_)) {
        tracing::warn!("reuse_port applies only when ferricorn binds its own socket; systemd's sockets are shared by all workers");
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        build = %sup.serving.build,
        workers = sup.serving.target,
        listeners = ?names,
        pid = std::process::id(),
        "ferricorn starting"
    );
    sup.reconcile();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            intent = signals.next() => sup.on_intent(intent),
            Some(event) = events.recv() => sup.on_event(event),
            _ = tick.tick() => sup.on_tick(),
        }
        if let Some(code) = sup.exit.take() {
            notify::flush();
            return code;
        }
    }
}

/// Takes the delegated cgroup subtree if there is one, and says once in the
/// log what memory limits can and cannot do here.
fn setup_cgroups(config: &Config) -> Option<cgroup::Subtree> {
    let (high, max) = (config.memory_high.0, config.memory_max.0);
    match cgroup::Subtree::setup() {
        Ok(subtree) => {
            tracing::info!(
                memory_controller = subtree.has_memory(),
                "workers run in cgroups of their own (worker-<slot>)"
            );
            if !subtree.has_memory() && (high > 0 || max > 0) {
                tracing::warn!("no memory controller delegated: memory_max is not enforced, memory_high uses RSS from /proc");
            }
            Some(subtree)
        }
        Err(why) => {
            if max > 0 {
                tracing::warn!(reason = %why, "no per-worker cgroups: memory_max is not enforced; memory_high uses RSS from /proc");
            } else {
                tracing::info!(reason = %why, "no per-worker cgroups; worker memory measured from /proc");
            }
            None
        }
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Builds generation `number` from `config` and the binary on disk now.
fn generation(number: u64, config: Config, exe: &std::path::Path) -> Result<Generation, String> {
    let hashing = Instant::now();
    let build = spawn::build_id(exe).map_err(|e| format!("cannot read {}: {e}", exe.display()))?;
    tracing::debug!(
        ms = hashing.elapsed().as_millis() as u64,
        "hashed executable"
    );
    let config_line =
        serde_json::to_string(&config).map_err(|e| format!("cannot encode config: {e}"))?;
    Ok(Generation {
        number,
        target: config.workers,
        config: Arc::new(config),
        config_line,
        build,
    })
}

fn describe(status: &std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
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

fn backoff_delay(quick_deaths: u32) -> Duration {
    let exp = quick_deaths.saturating_sub(1).min(16);
    (BACKOFF_MIN * 2u32.pow(exp)).min(BACKOFF_MAX)
}

impl Supervisor {
    fn stopping(&self) -> bool {
        matches!(self.phase, Phase::Stopping { .. })
    }

    /// Whether slot `slot` of generation `number` has a worker that is or
    /// will be serving.
    fn slot_filled(&self, number: u64, slot: usize) -> bool {
        self.workers.values().any(|w| {
            w.generation == number
                && w.slot == slot
                && matches!(w.state, State::Booting | State::Ready)
        })
    }

    fn slots_ready(&self, number: u64, target: usize) -> bool {
        (1..=target).all(|slot| {
            self.workers
                .values()
                .any(|w| w.generation == number && w.slot == slot && w.state == State::Ready)
        })
    }

    /// Starts what is missing and drains what is surplus.
    fn reconcile(&mut self) {
        if self.stopping() || self.exit.is_some() {
            return;
        }
        let now = Instant::now();
        for slot in 1..=self.serving.target {
            if self.slot_filled(self.serving.number, slot) {
                continue;
            }
            let waiting = self
                .backoff
                .get(&slot)
                .and_then(|b| b.not_before)
                .is_some_and(|t| t > now);
            if !waiting {
                self.start_worker(false, slot);
            }
        }
        if let Some(pending) = &self.pending {
            let (number, target) = (pending.generation.number, pending.generation.target);
            for slot in 1..=target {
                if !self.slot_filled(number, slot) {
                    self.start_worker(true, slot);
                }
            }
        }
        // Scale-down: the highest slots go first.
        let surplus: Vec<u32> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.generation == self.serving.number
                    && w.slot > self.serving.target
                    && w.state != State::Draining
            })
            .map(|(&pid, _)| pid)
            .collect();
        for pid in surplus {
            self.drain(pid, "scaled down");
        }
        let pending_target = self.pending.as_ref().map_or(0, |p| p.generation.target);
        self.sockets
            .release_above(self.serving.target.max(pending_target));
    }

    fn start_worker(&mut self, pending: bool, slot: usize) {
        let fds = match self.sockets.for_slot(slot) {
            Ok(fds) => fds,
            Err(e) => {
                tracing::error!(slot, error = %e, "cannot open the slot's socket");
                return self.spawn_failed(slot, pending, format!("cannot open a socket: {e}"));
            }
        };
        let generation = match (&self.pending, pending) {
            (Some(p), true) => &p.generation,
            _ => &self.serving,
        };
        let number = generation.number;
        let cgroup = match &self.cgroups {
            Some(subtree) => match subtree.worker(slot, generation.config.memory_max.0) {
                Ok(cg) => Some(cg),
                Err(e) => {
                    tracing::warn!(slot, error = %e, "cannot create worker cgroup; starting it in the supervisor's");
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
        };
        let spawned = spawn::spawn(&request);
        let cgroup = cgroup.map(|cg| cg.path);
        match spawned {
            Ok(spawned) => {
                let now = Instant::now();
                tracing::info!(
                    slot,
                    generation = number,
                    pid = spawned.pid,
                    "worker spawned"
                );
                self.workers.insert(
                    spawned.pid,
                    Worker {
                        slot,
                        generation: number,
                        state: State::Booting,
                        started: now,
                        last_seen: now,
                        drain_deadline: None,
                        counters: Counters::default(),
                        killed_for: None,
                        cgroup,
                    },
                );
                tokio::spawn(watch(
                    spawned,
                    self.events_tx.clone(),
                    self.status_tx.subscribe(),
                ));
            }
            Err(e) => {
                if let Some(path) = &cgroup {
                    cgroup::remove(path);
                }
                tracing::error!(slot, generation = number, error = %e, exe = %self.exe.display(), "cannot spawn worker");
                self.spawn_failed(slot, pending, format!("cannot spawn worker: {e}"));
            }
        }
    }

    /// A worker could not be started: a reload gives up, a serving slot
    /// backs off as if its worker had died at once.
    fn spawn_failed(&mut self, slot: usize, pending: bool, why: String) {
        if pending {
            self.abort_reload(why);
        } else {
            self.quick_death(slot, false);
        }
    }

    /// Records a worker of the serving generation dying soon after start,
    /// and paces the slot's next start.
    fn quick_death(&mut self, slot: usize, was_ready: bool) {
        let entry = self.backoff.entry(slot).or_default();
        entry.quick_deaths += 1;
        let delay = backoff_delay(entry.quick_deaths);
        entry.not_before = Some(Instant::now() + delay);
        let deaths = entry.quick_deaths;
        if deaths > 1 {
            tracing::warn!(
                slot,
                quick_deaths = deaths,
                delay_ms = delay.as_millis() as u64,
                "worker crash loop; restart delayed"
            );
        }
        if matches!(self.phase, Phase::Booting { .. }) && !was_ready && deaths >= BOOT_ATTEMPTS {
            {
                tracing::error!(
                    slot,
                    attempts = deaths,
                    "no worker could start; giving up (exit code {EXIT_BOOT_FAILURE})"
                );
                self.give_up();
            }
        }
        self.publish_status(true);
    }

    fn give_up(&mut self) {
        for pid in self.workers.keys() {
            crate::sys::signal(*pid, libc::SIGKILL);
        }
        notify::status("failed: no worker could start");
        self.exit = Some(ExitCode::from(EXIT_BOOT_FAILURE));
    }

    /// SIGHUP to one worker: finish in flight, close WebSockets with 1012.
    fn drain(&mut self, pid: u32, why: &str) {
        let grace = secs(self.serving.config.graceful_timeout);
        if let Some(w) = self.workers.get_mut(&pid) {
            if w.state == State::Draining {
                return;
            }
            tracing::info!(
                slot = w.slot,
                generation = w.generation,
                pid,
                reason = why,
                "draining worker"
            );
            w.state = State::Draining;
            w.drain_deadline = Some(Instant::now() + grace);
            crate::sys::signal(pid, libc::SIGHUP);
        }
    }

    fn kill(&mut self, pid: u32, why: String) {
        if let Some(w) = self.workers.get_mut(&pid) {
            if w.killed_for.is_some() {
                return;
            }
            tracing::error!(slot = w.slot, generation = w.generation, pid, reason = %why, "killing worker");
            w.killed_for = Some(why);
            crate::sys::signal(pid, libc::SIGKILL);
        }
    }

    fn on_intent(&mut self, intent: Intent) {
        tracing::info!(?intent, "signal received");
        match intent {
            Intent::GracefulStop => self.stop(false),
            Intent::FastStop => self.stop(true),
            Intent::Reload => {
                if self.stopping() {
                    return;
                }
                if self.reloading() || matches!(self.phase, Phase::Booting { .. }) {
                    tracing::info!("reload queued until the current start or reload completes");
                    self.reload_queued = true;
                    return;
                }
                self.begin_reload();
            }
            Intent::AddWorker => {
                if !self.stopping() {
                    self.serving.target += 1;
                    tracing::info!(workers = self.serving.target, "scaling up");
                    self.reconcile();
                    self.publish_status(true);
                }
            }
            Intent::Ignore(name) => {
                tracing::info!(
                    signal = name,
                    "signal ignored: logs go to journald (nothing to reopen) and reload runs new code"
                );
            }
            Intent::RemoveWorker => {
                if !self.stopping() && self.serving.target > 1 {
                    self.serving.target -= 1;
                    tracing::info!(workers = self.serving.target, "scaling down");
                    self.reconcile();
                    self.publish_status(true);
                }
            }
        }
    }

    fn stop(&mut self, fast: bool) {
        let already = self.stopping();
        let (grace, signal, status) = if fast {
            (FAST_STOP_GRACE, libc::SIGQUIT, "stopping now")
        } else {
            (
                secs(self.serving.config.graceful_timeout),
                libc::SIGTERM,
                "stopping: draining workers",
            )
        };
        if already && !fast {
            return;
        }
        notify::stopping(status);
        tracing::info!(workers = self.workers.len(), fast, "stopping");
        // A stop ends any reload, wherever it was: nothing may send READY=1
        // after STOPPING=1.
        self.pending = None;
        self.quiescing = None;
        self.reload_queued = false;
        let deadline = Instant::now() + grace;
        self.phase = Phase::Stopping {
            deadline,
            grace,
            killed: false,
        };
        for (&pid, w) in &mut self.workers {
            w.state = State::Draining;
            w.drain_deadline = Some(deadline);
            crate::sys::signal(pid, signal);
        }
        self.check_stopped();
    }

    fn check_stopped(&mut self) {
        if self.stopping() && self.workers.is_empty() {
            tracing::info!("all workers exited; supervisor exiting");
            self.exit = Some(ExitCode::SUCCESS);
        }
    }

    fn begin_reload(&mut self) {
        notify::reloading();
        tracing::info!(config = %self.loader.path().display(), "reloading");
        let config = match self.loader.load() {
            Ok(c) => c,
            Err(e) => return self.reload_failed(e.to_string()),
        };
        if config.bind != self.serving.config.bind {
            tracing::warn!(old = %self.serving.config.bind, new = %config.bind, "`bind` changes take effect on restart, not reload");
        }
        let number = self.serving.number + 1;
        let generation = match generation(number, config, &self.exe) {
            Ok(g) => g,
            Err(e) => return self.reload_failed(e),
        };
        tracing::info!(generation = number, build = %generation.build, workers = generation.target, "starting new generation");
        self.pending = Some(Pending {
            deadline: Instant::now() + secs(generation.config.boot_timeout),
            generation,
        });
        self.reconcile();
        self.publish_status(true);
    }

    fn reload_failed(&mut self, why: String) {
        tracing::error!(reason = %why, "reload failed; previous generation keeps serving");
        self.last_reload = Some(format!("FAILED: {why}"));
        self.announce_ready();
    }

    fn abort_reload(&mut self, why: String) {
        if let Some(pending) = self.pending.take() {
            let doomed: Vec<u32> = self
                .workers
                .iter()
                .filter(|(_, w)| w.generation == pending.generation.number)
                .map(|(&pid, _)| pid)
                .collect();
            for pid in doomed {
                self.kill(pid, "its generation failed to start".into());
            }
            self.reload_failed(why);
            self.after_transition();
        }
    }

    /// The pending generation is fully ready: it serves, the old one drains.
    fn promote(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let old = std::mem::replace(&mut self.serving, pending.generation);
        let stale: Vec<u32> = self
            .workers
            .iter()
            .filter(|(_, w)| w.generation != self.serving.number)
            .map(|(&pid, _)| pid)
            .collect();
        for pid in stale.iter().copied() {
            self.drain(pid, "replaced by reload");
        }
        self.backoff.clear();
        self.last_reload = Some(format!("ok (gen {})", self.serving.number));
        tracing::info!(
            from = old.number,
            to = self.serving.number,
            "new generation serving; old one draining"
        );
        self.quiescing = Some((stale, Instant::now() + QUIESCE_TIMEOUT));
        self.check_quiesced(Instant::now());
    }

    /// Sends the post-reload `READY=1` once the old generation has stopped
    /// accepting (or [`QUIESCE_TIMEOUT`] passed).
    fn check_quiesced(&mut self, now: Instant) {
        let Some((waiting, deadline)) = &mut self.quiescing else {
            return;
        };
        let workers = &self.workers;
        waiting.retain(|pid| workers.get(pid).is_some_and(|w| w.killed_for.is_none()));
        if waiting.is_empty() || now > *deadline {
            self.quiescing = None;
            tracing::info!(generation = self.serving.number, "reload complete");
            self.announce_ready();
            self.after_transition();
        }
    }

    /// `READY=1` with a fresh `STATUS=`.
    fn announce_ready(&mut self) {
        let status = self.status();
        let line = status.to_string();
        notify::ready(&line);
        self.broadcast(&status);
        self.last_status = Some((Instant::now(), line));
    }

    /// Sends the figures to every worker, for its `/health`.
    fn broadcast(&self, status: &SupervisorStatus) {
        if let Ok(json) = serde_json::to_string(status) {
            self.status_tx.send_replace(json);
        }
    }

    fn reloading(&self) -> bool {
        self.pending.is_some() || self.quiescing.is_some()
    }

    /// Runs a reload that arrived while another transition was under way.
    fn after_transition(&mut self) {
        if self.reload_queued && !self.reloading() && !self.stopping() {
            self.reload_queued = false;
            self.begin_reload();
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Message(pid, message) => self.on_message(pid, message),
            Event::BadMessage(pid, error) => {
                tracing::warn!(pid, %error, "bad control message from worker");
            }
            Event::Exited(pid, status) => self.on_exit(pid, status),
        }
        self.reconcile();
    }

    fn on_message(&mut self, pid: u32, message: WorkerMessage) {
        let now = Instant::now();
        let Some(w) = self.workers.get_mut(&pid) else {
            return;
        };
        w.last_seen = now;
        match message {
            WorkerMessage::Heartbeat(counters) => {
                self.requests_total += counters.requests.saturating_sub(w.counters.requests);
                w.counters = counters;
            }
            WorkerMessage::Ready => {
                if w.state != State::Booting {
                    return;
                }
                w.state = State::Ready;
                let (slot, number) = (w.slot, w.generation);
                tracing::info!(
                    slot,
                    generation = number,
                    pid,
                    boot_ms = now.duration_since(w.started).as_millis() as u64,
                    "worker ready"
                );
                self.on_ready(slot, number);
            }
            WorkerMessage::Retire(reason) => self.retire(pid, &reason),
            WorkerMessage::Draining => {
                if let Some((waiting, _)) = &mut self.quiescing {
                    waiting.retain(|&p| p != pid);
                }
                self.check_quiesced(now);
            }
        }
    }

    /// Replaces a worker gracefully: its successor starts now (reconcile
    /// sees the slot unfilled) and it drains once the successor is ready.
    fn retire(&mut self, pid: u32, reason: &str) {
        let stopping = self.stopping();
        let Some(w) = self.workers.get_mut(&pid) else {
            return;
        };
        if w.state == State::Ready && w.generation == self.serving.number && !stopping {
            tracing::info!(slot = w.slot, pid, %reason, "worker to be replaced; starting its successor first");
            w.state = State::Retiring;
        }
    }

    fn on_ready(&mut self, slot: usize, number: u64) {
        if number == self.serving.number {
            self.backoff.remove(&slot);
            // A successor is up: its retiring predecessor can drain now.
            let retiring: Vec<u32> = self
                .workers
                .iter()
                .filter(|(_, w)| {
                    w.generation == number && w.slot == slot && w.state == State::Retiring
                })
                .map(|(&pid, _)| pid)
                .collect();
            for pid in retiring {
                self.drain(pid, "successor ready");
            }
            if matches!(self.phase, Phase::Booting { .. })
                && self.slots_ready(number, self.serving.target)
            {
                self.phase = Phase::Running;
                tracing::info!(workers = self.serving.target, "all workers ready");
                self.announce_ready();
                self.after_transition();
            }
        } else if let Some(pending) = &self.pending {
            if number == pending.generation.number
                && self.slots_ready(number, pending.generation.target)
            {
                self.promote();
            }
        }
    }

    fn on_exit(&mut self, pid: u32, status: std::io::Result<ExitStatus>) {
        let Some(w) = self.workers.remove(&pid) else {
            return;
        };
        let mut how = describe(&status);
        let uptime = w.started.elapsed();
        if let Some(path) = &w.cgroup {
            if cgroup::oom_kills(path) > 0 {
                how.push_str(", killed by the kernel OOM killer at memory_max");
            }
            cgroup::remove(path);
        }
        if let Some(why) = &w.killed_for {
            tracing::warn!(slot = w.slot, generation = w.generation, pid, status = %how, reason = %why, "worker killed");
        } else if w.state == State::Draining {
            tracing::info!(slot = w.slot, generation = w.generation, pid, status = %how, "worker exited after drain");
        } else {
            tracing::error!(slot = w.slot, generation = w.generation, pid, status = %how, uptime_ms = uptime.as_millis() as u64, "worker died");
        }
        self.check_quiesced(Instant::now());
        let expected = w.state == State::Draining && w.killed_for.is_none();
        if expected || self.stopping() {
            self.check_stopped();
            return;
        }
        self.restarts += 1;
        if let Some(pending) = &self.pending {
            if w.generation == pending.generation.number {
                self.abort_reload(format!(
                    "new worker {} exited before the generation was ready: {how}",
                    w.slot
                ));
                return;
            }
        }
        if w.generation == self.serving.number {
            let was_ready = w.state != State::Booting;
            // Killed for silence is a wedge, not a crash loop: replace at once.
            if w.killed_for.is_none() && (!was_ready || uptime < CRASH_WINDOW) {
                self.quick_death(w.slot, was_ready);
            } else {
                self.backoff.remove(&w.slot);
            }
        }
        self.publish_status(true);
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let config = self.serving.config.clone();
        let timeout = secs(config.timeout);
        let boot = secs(config.boot_timeout);
        let mut overdue = Vec::new();
        for (&pid, w) in &self.workers {
            if w.killed_for.is_some() {
                continue;
            }
            let why = match w.state {
                State::Booting if now.duration_since(w.started) > boot => Some(format!(
                    "not ready after boot_timeout ({}s)",
                    config.boot_timeout
                )),
                State::Ready | State::Retiring if now.duration_since(w.last_seen) > timeout => {
                    Some(format!(
                        "no heartbeat for {:.1}s (timeout {}s): event loop blocked",
                        now.duration_since(w.last_seen).as_secs_f64(),
                        config.timeout
                    ))
                }
                State::Draining if w.drain_deadline.is_some_and(|d| now > d) => Some(format!(
                    "still draining after graceful_timeout ({}s)",
                    config.graceful_timeout
                )),
                _ => None,
            };
            if let Some(why) = why {
                overdue.push((pid, why));
            }
        }
        for (pid, why) in overdue {
            self.kill(pid, why);
        }
        match self.phase {
            Phase::Booting { deadline } if now > deadline => {
                tracing::error!(boot_timeout = config.boot_timeout, "workers not ready within boot_timeout; giving up (exit code {EXIT_BOOT_FAILURE})");
                self.give_up();
                return;
            }
            Phase::Stopping {
                deadline,
                grace,
                killed: false,
            } if now > deadline => {
                tracing::warn!(
                    workers = self.workers.len(),
                    grace_ms = grace.as_millis() as u64,
                    "workers still alive past the stop deadline; killing"
                );
                for pid in self.workers.keys() {
                    crate::sys::signal(*pid, libc::SIGKILL);
                }
                self.phase = Phase::Stopping {
                    deadline,
                    grace,
                    killed: true,
                };
            }
            _ => {}
        }
        if let Some(pending) = &self.pending {
            if now > pending.deadline {
                let why = format!(
                    "new generation not ready within boot_timeout ({}s)",
                    pending.generation.config.boot_timeout
                );
                self.abort_reload(why);
            }
        }
        self.check_quiesced(now);
        if now >= self.next_memory_check {
            self.next_memory_check = now + MEMORY_INTERVAL;
            self.check_memory();
        }
        self.reconcile();
        self.publish_status(false);
        self.pet_watchdog(now, timeout);
    }

    /// Recycles (gracefully) every serving worker above `memory_high`.
    fn check_memory(&mut self) {
        let high = self.serving.config.memory_high.0;
        if high == 0 {
            return;
        }
        let over: Vec<(u32, u64)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.state == State::Ready)
            .filter_map(|(&pid, w)| {
                let used = cgroup::memory_usage(w.cgroup.as_deref(), pid)?;
                (used > high).then_some((pid, used))
            })
            .collect();
        for (pid, used) in over {
            tracing::warn!(pid, used, memory_high = high, "worker above memory_high");
            self.retire(pid, "memory_high");
        }
    }

    /// `WATCHDOG=1` only while some worker heartbeats: a supervisor whose
    /// workers are all wedged stops petting and lets systemd act.
    fn pet_watchdog(&mut self, now: Instant, timeout: Duration) {
        let Some((interval, next)) = self.watchdog else {
            return;
        };
        if now < next {
            return;
        }
        self.watchdog = Some((interval, now + interval));
        let fresh = heartbeat_fresh(&self.serving.config, timeout);
        let alive = matches!(self.phase, Phase::Booting { .. })
            || self
                .workers
                .values()
                .any(|w| w.state != State::Booting && now.duration_since(w.last_seen) <= fresh);
        if alive {
            notify::watchdog();
        } else {
            tracing::warn!("no worker heartbeating; withholding WATCHDOG=1");
        }
    }

    fn status(&self) -> SupervisorStatus {
        let number = self.serving.number;
        let workers_ready = self
            .workers
            .values()
            .filter(|w| w.generation == number && matches!(w.state, State::Ready | State::Retiring))
            .count();
        let (mut connections, mut websockets) = (0, 0);
        for w in self.workers.values() {
            connections += w.counters.connections;
            websockets += w.counters.websockets;
        }
        SupervisorStatus {
            generation: number,
            workers_ready,
            workers_target: self.serving.target,
            requests_per_second: self.rate.2,
            connections,
            websockets,
            restarts: self.restarts,
            crash_loop: self
                .backoff
                .values()
                .filter(|b| b.quick_deaths > 1)
                .map(|b| b.quick_deaths)
                .sum(),
            reloading_to: self.pending.as_ref().map(|p| p.generation.number),
            last_reload: self.last_reload.clone(),
        }
    }

    /// Refreshes `STATUS=` every [`STATUS_INTERVAL`], or now if `changed`.
    fn publish_status(&mut self, changed: bool) {
        let now = Instant::now();
        let due = self
            .last_status
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
        let status = self.status();
        let line = status.to_string();
        if self.last_status.as_ref().is_some_and(|(_, l)| *l == line) && !due {
            return;
        }
        notify::status(&line);
        self.broadcast(&status);
        self.last_status = Some((now, line));
    }
}

/// How recent a heartbeat must be for the watchdog: a few missed beats, but
/// never longer than `timeout` itself.
fn heartbeat_fresh(config: &Config, timeout: Duration) -> Duration {
    (crate::worker::heartbeat_interval(config.timeout) * 3).min(timeout)
}

/// Relays one worker's control messages and, at the end, its exit status;
/// passes the supervisor's figures down to it.
async fn watch(
    spawned: spawn::Spawned,
    events: mpsc::UnboundedSender<Event>,
    mut status: tokio::sync::watch::Receiver<String>,
) {
    let spawn::Spawned {
        pid,
        mut child,
        control,
    } = spawned;
    let (read_half, write_half) = control.into_split();
    let mut lines = tokio::io::BufReader::new(read_half).lines();
    status.mark_changed();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                // EOF comes when the worker exits (nothing else holds its end).
                let Ok(Some(line)) = line else { break };
                let event = match WorkerMessage::decode(&line) {
                    Ok(m) => Event::Message(pid, m),
                    Err(e) => Event::BadMessage(pid, e),
                };
                if events.send(event).is_err() {
                    return;
                }
            }
            Ok(()) = status.changed() => {
                let line = format!("{}\n", *status.borrow_and_update());
                // Never wait on a wedged worker: a figure it misses is stale
                // in two seconds anyway.
                if line.len() > 1 {
                    let _ = write_half.try_write(line.as_bytes());
                }
            }
        }
    }
    let status = child.wait().await;
    let _ = events.send(Event::Exited(pid, status));
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn backoff_doubles_from_250_ms_and_stops_at_30_s() {
        let delays: Vec<u64> = (1..=9)
            .map(|n| backoff_delay(n).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
        );
        // However many deaths, never past the cap, and no overflow.
        assert_eq!(backoff_delay(0), BACKOFF_MIN);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
    }

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
