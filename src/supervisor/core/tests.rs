//! The lifecycle's interleavings, driven without processes: intents and
//! worker events go in, and a recorder standing in for the machine shows
//! what the supervisor started, signalled and told systemd.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::super::metrics::{ExitCause, Figures};
use super::super::notify::Note;
use super::super::relay::Event;
use super::super::signals::Intent;
use super::super::system::{Os, SpawnError, Started};
use super::super::workers::{Generation, State};
use super::Supervisor;
use crate::config::{Loader, Overrides};
use crate::control::{SupervisorStatus, WorkerMessage};
use crate::exit::Exit;

/// The machine, recorded.
#[derive(Default)]
struct Recorder {
    last_pid: u32,
    /// (pid, slot, generation) of every worker started.
    spawned: Vec<(u32, usize, u64)>,
    /// (pid, signal) in the order sent.
    signals: Vec<(u32, i32)>,
    /// Everything told to systemd, in order.
    notes: Vec<Note>,
    /// Whether the next spawns fail.
    fail_spawns: bool,
    /// Spawns asked for, failed ones included.
    attempts: usize,
    /// What `/metrics` was last given.
    figures: Option<Figures>,
}

impl Os for Recorder {
    fn build_id(&mut self) -> std::io::Result<String> {
        Ok("test".into())
    }

    fn spawn(&mut self, slot: usize, generation: &Generation) -> Result<Started, SpawnError> {
        self.attempts += 1;
        if self.fail_spawns {
            return Err(std::io::Error::other("no such file").into());
        }
        self.last_pid += 1;
        let pid = 1000 + self.last_pid;
        self.spawned.push((pid, slot, generation.number));
        Ok(Started { pid, cgroup: None })
    }

    fn signal(&mut self, pid: u32, signal: libc::c_int) {
        self.signals.push((pid, signal));
    }

    fn notify(&mut self, note: Note) {
        self.notes.push(note);
    }

    fn broadcast(&mut self, _: &SupervisorStatus) {}

    fn figures(&mut self, figures: Figures) {
        self.figures = Some(figures);
    }

    fn release_sockets_above(&mut self, _: usize) {}

    fn memory_usage(&self, _: u32, _: Option<&Path>) -> Option<u64> {
        None
    }

    fn reap_cgroup(&mut self, _: &Path) -> bool {
        false
    }
}

/// A supervisor on a recorder, with a config file of its own and a clock
/// the test moves.
struct Rig {
    sup: Supervisor<Recorder>,
    now: Instant,
    _dir: tempfile::TempDir,
}

/// `boot_timeout` and `graceful_timeout` of every rig, in seconds.
const BOOT: u64 = 5;
const GRACE: u64 = 10;

impl Rig {
    /// A supervisor with `workers` workers, started (spawned, none ready).
    fn new(workers: usize) -> Rig {
        Rig::with_timeout(workers, 30)
    }

    /// The same, with heartbeat `timeout` seconds.
    fn with_timeout(workers: usize, timeout: u64) -> Rig {
        Rig::with_extra(workers, &format!("timeout = {timeout}\n"))
    }

    /// The same, with `extra` lines of config.
    fn with_extra(workers: usize, extra: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferricorn.toml");
        let text = format!(
            "workers = {workers}\nboot_timeout = {BOOT}\ngraceful_timeout = {GRACE}\n{extra}"
        );
        std::fs::write(&path, text).unwrap();
        let loader = Loader {
            explicit_path: Some(path),
            overrides: Overrides::default(),
        };
        let config = loader.load().unwrap();
        let now = Instant::now();
        let mut sup = Supervisor::new(loader, config, Recorder::default(), now).unwrap();
        sup.start(&[], now);
        Rig {
            sup,
            now,
            _dir: dir,
        }
    }

    /// A rig whose first generation is ready, and `READY=1` sent.
    fn running(workers: usize) -> Rig {
        Rig::ready(Rig::new(workers))
    }

    /// `rig` once its first generation is ready.
    fn ready(mut rig: Rig) -> Rig {
        for pid in rig.generation(1) {
            rig.event(Event::Message(pid, WorkerMessage::Ready));
        }
        assert_eq!(rig.readies(), 1, "{:?}", rig.os().notes);
        rig
    }

    fn os(&self) -> &Recorder {
        &self.sup.os
    }

    fn intent(&mut self, intent: Intent) {
        self.sup.on_intent(intent, self.now);
    }

    fn event(&mut self, event: Event) {
        self.sup.on_event(event, self.now);
    }

    /// Moves the clock on and ticks.
    fn tick_after(&mut self, elapsed: Duration) {
        self.now += elapsed;
        self.sup.on_tick(self.now);
    }

    /// Every worker of `generation` ready.
    fn all_ready(&mut self, generation: u64) {
        for pid in self.generation(generation) {
            self.event(Event::Message(pid, WorkerMessage::Ready));
        }
    }

    /// Every worker of `generation` says it stopped accepting.
    fn all_draining(&mut self, generation: u64) {
        for pid in self.generation(generation) {
            self.event(Event::Message(pid, WorkerMessage::Draining));
        }
    }

    fn exited(&mut self, pid: u32, status: ExitStatus) {
        self.event(Event::Exited(pid, Ok(status)));
    }

    /// Every live worker exits (as after a stop).
    fn all_exit(&mut self) {
        for pid in self.sup.workers.pids(|_| true) {
            self.exited(pid, ExitStatus::from_raw(0));
        }
    }

    /// Live workers of `generation`, in pid order.
    fn generation(&self, generation: u64) -> Vec<u32> {
        self.sup.workers.pids(|w| w.generation == generation)
    }

    fn readies(&self) -> usize {
        let ready = |n: &&Note| matches!(n, Note::Ready(_));
        self.os().notes.iter().filter(ready).count()
    }

    fn reloadings(&self) -> usize {
        let reloading = |n: &&Note| matches!(n, Note::Reloading);
        self.os().notes.iter().filter(reloading).count()
    }

    /// Pids sent `signal`, in order, each once (a stop's deadline and
    /// a worker's drain deadline may both send SIGKILL).
    fn sent(&self, signal: i32) -> Vec<u32> {
        let mut pids: Vec<u32> = Vec::new();
        for &(pid, s) in &self.os().signals {
            if s == signal && !pids.contains(&pid) {
                pids.push(pid);
            }
        }
        pids
    }

    /// No `READY=1` follows a `STOPPING=1`.
    fn assert_no_ready_after_stopping(&self) {
        let notes = &self.os().notes;
        let stopping = notes.iter().position(|n| matches!(n, Note::Stopping(_)));
        let stopping = stopping.expect("STOPPING=1 sent");
        let late = notes[stopping..]
            .iter()
            .any(|n| matches!(n, Note::Ready(_)));
        assert!(!late, "READY=1 after STOPPING=1: {notes:?}");
    }
}

#[test]
fn a_first_start_is_ready_once_every_slot_is() {
    let mut rig = Rig::new(3);
    assert_eq!(
        rig.os().spawned.iter().map(|s| s.1).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let pids = rig.generation(1);
    rig.event(Event::Message(pids[0], WorkerMessage::Ready));
    rig.event(Event::Message(pids[1], WorkerMessage::Ready));
    assert_eq!(rig.readies(), 0);
    rig.event(Event::Message(pids[2], WorkerMessage::Ready));
    assert_eq!(rig.readies(), 1);
}

#[test]
fn term_while_a_new_generation_starts_ends_the_reload_and_sends_no_ready() {
    let mut rig = Rig::running(2);
    rig.intent(Intent::Reload);
    assert_eq!(rig.generation(2).len(), 2, "the new generation is starting");
    rig.intent(Intent::GracefulStop);
    // Every worker, old and new, is told to drain.
    assert_eq!(rig.sent(libc::SIGTERM).len(), 4);
    // The new workers report ready anyway: nothing is promoted.
    rig.all_ready(2);
    assert_eq!(rig.sup.serving.number, 1);
    assert!(!rig.sup.reload.busy());
    rig.tick_after(Duration::from_secs(3));
    rig.all_exit();
    rig.assert_no_ready_after_stopping();
    assert_eq!(rig.sup.take_exit(), Some(Exit::Success));
}

#[test]
fn term_while_the_old_generation_quiesces_sends_no_ready() {
    let mut rig = Rig::running(2);
    rig.intent(Intent::Reload);
    rig.all_ready(2);
    assert_eq!(rig.sup.serving.number, 2, "promoted");
    assert_eq!(rig.readies(), 1, "READY=1 waits for the old generation");
    rig.intent(Intent::GracefulStop);
    // The old workers confirm late, and the quiesce deadline passes.
    rig.all_draining(1);
    rig.tick_after(Duration::from_secs(3));
    rig.all_exit();
    rig.assert_no_ready_after_stopping();
    assert_eq!(rig.sup.take_exit(), Some(Exit::Success));
}

#[test]
fn a_reload_completes_when_the_old_generation_stops_accepting() {
    let mut rig = Rig::running(3);
    rig.intent(Intent::Reload);
    rig.all_ready(2);
    let old = rig.generation(1);
    assert_eq!(rig.sent(libc::SIGHUP), old, "old drained");
    for (confirmed, &pid) in old.iter().enumerate() {
        assert_eq!(
            rig.readies(),
            1,
            "{confirmed} of 3 old workers stopped accepting"
        );
        rig.event(Event::Message(pid, WorkerMessage::Draining));
    }
    assert_eq!(rig.readies(), 2);
    assert!(!rig.sup.reload.busy());
    // Drained workers exiting is no restart and starts nothing.
    for pid in old {
        rig.exited(pid, ExitStatus::from_raw(0));
    }
    assert_eq!(rig.sup.board.restarts, 0);
    assert_eq!(rig.os().spawned.len(), 6);
    assert_eq!(rig.sup.take_exit(), None);
}

#[test]
fn a_reload_completes_after_the_quiesce_timeout_if_old_workers_never_confirm() {
    let mut rig = Rig::running(1);
    rig.intent(Intent::Reload);
    rig.all_ready(2);
    rig.tick_after(Duration::from_millis(1900));
    assert_eq!(rig.readies(), 1);
    rig.tick_after(Duration::from_millis(200));
    assert_eq!(rig.readies(), 2, "READY=1 once the quiesce timeout passed");
}

#[test]
fn a_serving_spawn_that_fails_is_retried_after_its_backoff_only() {
    let mut rig = Rig::running(1);
    rig.sup.os.fail_spawns = true;
    let pid = rig.generation(1)[0];
    rig.exited(pid, ExitStatus::from_raw(1 << 8));
    // The death waits 250 ms; the spawn that then fails counts as a second
    // quick death, so the next try waits 500 ms.
    let attempts = rig.os().attempts;
    rig.tick_after(Duration::from_millis(300));
    assert_eq!(rig.os().attempts, attempts + 1, "retried after 250 ms");
    rig.tick_after(Duration::from_millis(400));
    assert_eq!(rig.os().attempts, attempts + 1, "waiting out 500 ms");
    rig.tick_after(Duration::from_millis(200));
    assert_eq!(rig.os().attempts, attempts + 2);
}

#[test]
fn a_worker_killed_for_silence_is_replaced_at_once() {
    // Within the crash window (10 s): still a wedge, not a crash loop.
    let mut rig = Rig::ready(Rig::with_timeout(1, 2));
    let pid = rig.generation(1)[0];
    rig.tick_after(Duration::from_millis(2100));
    assert_eq!(rig.sent(libc::SIGKILL), [pid], "silent past timeout");
    rig.exited(pid, ExitStatus::from_raw(libc::SIGKILL));
    assert_eq!(rig.os().spawned.len(), 2, "no backoff for a wedge");
}

#[test]
fn a_ready_from_a_worker_that_is_not_booting_changes_nothing() {
    let mut rig = Rig::running(1);
    let pid = rig.generation(1)[0];
    rig.event(Event::Message(
        pid,
        WorkerMessage::Retire("max_requests".into()),
    ));
    rig.event(Event::Message(pid, WorkerMessage::Ready));
    assert_eq!(rig.sup.workers.get(pid).unwrap().state, State::Retiring);
    // Nor does a retire from a worker still booting.
    let successor = *rig.generation(1).last().unwrap();
    rig.event(Event::Message(successor, WorkerMessage::Retire("x".into())));
    assert_eq!(
        rig.sup.workers.get(successor).unwrap().state,
        State::Booting
    );
}

#[test]
fn a_hup_during_a_reload_is_queued_and_runs_after_it() {
    let mut rig = Rig::running(2);
    rig.intent(Intent::Reload);
    rig.intent(Intent::Reload);
    assert_eq!(rig.reloadings(), 1, "the second waits");
    assert!(rig.generation(3).is_empty());
    rig.all_ready(2);
    rig.all_draining(1);
    // The first completed (READY=1), then the queued one began.
    assert_eq!(rig.readies(), 2);
    assert_eq!(rig.reloadings(), 2);
    assert_eq!(rig.generation(3).len(), 2);
    assert!(!rig.sup.reload.queued);
}

#[test]
fn a_hup_during_the_first_start_runs_once_it_is_ready() {
    let mut rig = Rig::new(1);
    rig.intent(Intent::Reload);
    assert_eq!(rig.reloadings(), 0);
    rig.all_ready(1);
    assert_eq!(rig.reloadings(), 1);
    assert_eq!(rig.generation(2).len(), 1);
}

#[test]
fn ttin_and_ttou_during_a_reload_scale_the_serving_generation_only() {
    let mut rig = Rig::running(2);
    rig.intent(Intent::Reload);
    rig.intent(Intent::AddWorker);
    let slots = |rig: &Rig, generation: u64| {
        let mut slots: Vec<usize> = rig
            .generation(generation)
            .iter()
            .map(|&pid| rig.sup.workers.get(pid).unwrap().slot)
            .collect();
        slots.sort_unstable();
        slots
    };
    assert_eq!(slots(&rig, 1), [1, 2, 3], "TTIN adds slot 3 to the serving");
    assert_eq!(
        slots(&rig, 2),
        [1, 2],
        "the new generation keeps its config"
    );
    rig.intent(Intent::RemoveWorker);
    let slot3 = rig.generation(1)[2];
    assert_eq!(
        rig.sent(libc::SIGHUP),
        [slot3],
        "TTOU drains the highest slot"
    );
    rig.intent(Intent::RemoveWorker);
    rig.intent(Intent::RemoveWorker);
    assert_eq!(rig.sup.serving.target, 1, "never below one");
    // The reload still completes, with the new generation's own target.
    rig.all_ready(2);
    rig.all_draining(1);
    assert_eq!(rig.readies(), 2);
    assert_eq!(rig.sup.serving.target, 2);
}

#[test]
fn a_new_worker_that_dies_aborts_the_reload_and_the_old_generation_serves() {
    let mut rig = Rig::running(2);
    let old = rig.generation(1);
    rig.intent(Intent::Reload);
    let new = rig.generation(2);
    rig.exited(new[0], ExitStatus::from_raw(1 << 8));
    assert_eq!(rig.sent(libc::SIGKILL), [new[1]], "its sibling is killed");
    assert_eq!(rig.sup.serving.number, 1);
    assert!(!rig.sup.reload.busy());
    assert_eq!(rig.readies(), 2, "READY=1: the reload is over");
    let last = rig.sup.board.last_reload.clone().unwrap_or_default();
    assert!(last.starts_with("FAILED: new worker 1 exited"), "{last}");
    assert!(rig.os().signals.iter().all(|(pid, _)| !old.contains(pid)));
    // Nothing of the failed generation is started again.
    rig.tick_after(Duration::from_secs(1));
    assert_eq!(rig.os().spawned.len(), 4);
}

#[test]
fn a_new_generation_not_ready_within_boot_timeout_is_abandoned() {
    let mut rig = Rig::running(2);
    let old = rig.generation(1);
    for pid in &old {
        // Old workers heartbeat throughout.
        rig.event(Event::Message(
            *pid,
            WorkerMessage::Heartbeat(Default::default()),
        ));
    }
    rig.intent(Intent::Reload);
    let new = rig.generation(2);
    rig.event(Event::Message(new[0], WorkerMessage::Ready));
    rig.tick_after(Duration::from_secs(BOOT) - Duration::from_millis(100));
    assert!(rig.sup.reload.busy(), "still within boot_timeout");
    rig.tick_after(Duration::from_millis(200));
    assert!(!rig.sup.reload.busy());
    let mut killed = rig.sent(libc::SIGKILL);
    killed.sort_unstable();
    assert_eq!(killed, new);
    assert_eq!(rig.sup.serving.number, 1);
    assert_eq!(rig.readies(), 2);
    assert!(rig.os().signals.iter().all(|(pid, _)| !old.contains(pid)));
}

#[test]
fn a_spawn_that_fails_aborts_the_reload() {
    let mut rig = Rig::running(1);
    rig.sup.os.fail_spawns = true;
    rig.intent(Intent::Reload);
    assert!(!rig.sup.reload.busy());
    assert_eq!(rig.readies(), 2);
    assert_eq!(rig.generation(1).len(), 1);
    let last = rig.sup.board.last_reload.clone().unwrap_or_default();
    assert!(last.contains("cannot spawn worker"), "{last}");
}

#[test]
fn a_fast_stop_during_a_graceful_one_kills_after_one_second() {
    let mut rig = Rig::running(2);
    rig.intent(Intent::GracefulStop);
    assert_eq!(rig.sent(libc::SIGTERM).len(), 2);
    rig.tick_after(Duration::from_millis(500));
    rig.intent(Intent::FastStop);
    assert_eq!(rig.sent(libc::SIGQUIT).len(), 2);
    rig.tick_after(Duration::from_millis(900));
    assert!(rig.sent(libc::SIGKILL).is_empty(), "within the second");
    rig.tick_after(Duration::from_millis(200));
    assert_eq!(
        rig.sent(libc::SIGKILL).len(),
        2,
        "far inside graceful_timeout"
    );
    // A second graceful stop changes nothing.
    rig.intent(Intent::GracefulStop);
    assert_eq!(rig.sent(libc::SIGTERM).len(), 2);
}

#[test]
fn a_graceful_stop_kills_only_after_graceful_timeout() {
    let mut rig = Rig::running(1);
    rig.intent(Intent::GracefulStop);
    rig.tick_after(Duration::from_secs(GRACE) - Duration::from_millis(100));
    assert!(rig.sent(libc::SIGKILL).is_empty());
    rig.tick_after(Duration::from_millis(200));
    assert_eq!(rig.sent(libc::SIGKILL).len(), 1);
}

#[test]
fn stop_delay_adds_to_the_time_a_graceful_stop_gives_before_sigkill() {
    let mut rig = Rig::ready(Rig::with_extra(1, "stop_delay = 3\n"));
    rig.intent(Intent::GracefulStop);
    // SIGTERM at once: the worker leaves the rotation, then drains.
    assert_eq!(rig.sent(libc::SIGTERM).len(), 1);
    rig.tick_after(Duration::from_secs(GRACE + 3) - Duration::from_millis(100));
    assert!(rig.sent(libc::SIGKILL).is_empty());
    rig.tick_after(Duration::from_millis(200));
    assert_eq!(rig.sent(libc::SIGKILL).len(), 1);
}

#[test]
fn a_crash_loop_at_first_start_gives_up_with_exit_3() {
    let mut rig = Rig::new(1);
    for attempt in 1..=3 {
        let pid = rig.generation(1)[0];
        rig.exited(pid, ExitStatus::from_raw(1 << 8));
        if attempt < 3 {
            // The slot waits out its backoff, then starts again.
            rig.tick_after(Duration::from_secs(2));
        }
    }
    assert_eq!(rig.os().spawned.len(), 3);
    assert_eq!(rig.sup.take_exit(), Some(Exit::BootFailure));
}

#[test]
fn a_worker_that_dies_while_serving_is_replaced_after_its_backoff() {
    let mut rig = Rig::running(2);
    let pid = rig.generation(1)[0];
    rig.exited(pid, ExitStatus::from_raw(libc::SIGSEGV));
    assert_eq!(rig.os().spawned.len(), 2, "backing off");
    rig.tick_after(Duration::from_millis(300));
    assert_eq!(rig.os().spawned.len(), 3, "replaced in its slot");
    assert_eq!(rig.os().spawned[2].1, 1);
    assert_eq!(rig.sup.board.restarts, 1);
    assert_eq!(rig.sup.take_exit(), None);
}

#[test]
fn a_retiring_worker_drains_once_its_successor_is_ready() {
    let mut rig = Rig::running(1);
    let old = rig.generation(1)[0];
    rig.event(Event::Message(
        old,
        WorkerMessage::Retire("max_requests".into()),
    ));
    assert_eq!(rig.sup.workers.get(old).unwrap().state, State::Retiring);
    let successor = *rig.generation(1).last().unwrap();
    assert_ne!(successor, old);
    assert!(rig.sent(libc::SIGHUP).is_empty(), "serving until replaced");
    rig.event(Event::Message(successor, WorkerMessage::Ready));
    assert_eq!(rig.sent(libc::SIGHUP), [old]);
    // It gets graceful_timeout to finish, not less.
    rig.tick_after(Duration::from_secs(GRACE - 1));
    assert!(rig.sent(libc::SIGKILL).is_empty(), "{:?}", rig.os().signals);
}

#[test]
fn a_hup_queued_behind_a_reload_that_fails_starts_afresh() {
    let mut rig = Rig::running(2);
    rig.intent(Intent::Reload);
    rig.intent(Intent::Reload);
    let doomed = rig.generation(2);
    rig.exited(doomed[0], ExitStatus::from_raw(1 << 8));
    // The queued reload began at once, with workers of its own: the killed
    // ones of the failed attempt (still exiting) fill none of its slots.
    assert_eq!(rig.reloadings(), 2);
    let new = rig
        .sup
        .reload
        .starting()
        .map(|g| g.number)
        .expect("started");
    let fresh = rig.generation(new);
    assert_eq!(fresh.len(), 2, "{:?}", rig.os().spawned);
    assert!(fresh.iter().all(|pid| !doomed.contains(pid)));
    // The killed worker's exit does not abort it.
    rig.exited(doomed[1], ExitStatus::from_raw(libc::SIGKILL));
    assert!(rig.sup.reload.busy());
    rig.all_ready(new);
    rig.all_draining(1);
    assert_eq!(rig.sup.serving.number, new);
    assert_eq!(rig.readies(), 3, "the failure's READY=1, then this one's");
}

#[test]
fn a_worker_that_dies_after_the_crash_window_is_replaced_at_once() {
    let mut rig = Rig::running(1);
    let pid = rig.generation(1)[0];
    rig.event(Event::Message(
        pid,
        WorkerMessage::Heartbeat(Default::default()),
    ));
    rig.tick_after(Duration::from_secs(11));
    rig.exited(pid, ExitStatus::from_raw(1 << 8));
    assert_eq!(rig.os().spawned.len(), 2, "served 11 s: not a crash loop");
}

#[test]
fn metrics_count_each_exit_by_its_cause_and_each_reload_by_its_outcome() {
    let mut rig = Rig::ready(Rig::with_timeout(4, 2));
    let gen1 = rig.generation(1);
    // A crash, a kill from outside, a recycle.
    rig.exited(gen1[0], ExitStatus::from_raw(1 << 8));
    rig.exited(gen1[1], ExitStatus::from_raw(libc::SIGKILL));
    rig.event(Event::Message(
        gen1[2],
        WorkerMessage::Retire("max_requests".into()),
    ));
    rig.all_ready(1);
    rig.exited(gen1[2], ExitStatus::from_raw(0));
    // A reload replaces every worker; the old ones drain and exit cleanly.
    rig.tick_after(Duration::from_millis(300));
    rig.all_ready(1);
    rig.intent(Intent::Reload);
    rig.all_ready(2);
    rig.all_draining(1);
    for pid in rig.generation(1) {
        rig.exited(pid, ExitStatus::from_raw(0));
    }
    // One goes silent and is killed.
    let silent = rig.generation(2)[0];
    rig.tick_after(Duration::from_millis(1500));
    for pid in rig.generation(2).into_iter().skip(1) {
        rig.event(Event::Message(
            pid,
            WorkerMessage::Heartbeat(Default::default()),
        ));
    }
    rig.tick_after(Duration::from_millis(700));
    assert_eq!(rig.sent(libc::SIGKILL), [silent]);
    rig.exited(silent, ExitStatus::from_raw(libc::SIGKILL));
    let figures = rig.os().figures.clone().expect("figures published");
    let count = |cause| figures.exits.get(cause);
    assert_eq!(count(ExitCause::Crash), 1);
    assert_eq!(count(ExitCause::Signal), 1);
    assert_eq!(count(ExitCause::MaxRequests), 1);
    assert_eq!(count(ExitCause::Reload), 4);
    assert_eq!(count(ExitCause::HeartbeatTimeout), 1);
    assert_eq!(count(ExitCause::Stop), 0);
    assert_eq!((figures.reloads_ok, figures.reloads_failed), (1, 0));
    assert_eq!(figures.generation, 2);
    rig.intent(Intent::GracefulStop);
    rig.all_exit();
    assert_eq!(rig.sup.board.exits.get(ExitCause::Stop), 4);
}
