//! What the supervisor does with each operator intent (a signal, once
//! [`super::super::signals`] has mapped it): stop, reload or queue the
//! reload, scale, or say why a signal is ignored.

use std::time::Instant;

use super::super::ctl::Asked;
use super::super::signals::Intent;
use super::super::system::Os;
use super::{Phase, Supervisor};
use crate::ctl::{Answer, Report, Request, WorkerRow};

impl<O: Os> Supervisor<O> {
    pub(in crate::supervisor) fn on_intent(&mut self, intent: Intent, now: Instant) {
        tracing::info!(?intent, "signal received: {}", intent.describe());
        let stopping = self.stopping();
        match intent {
            Intent::GracefulStop => self.stop(false, now),
            Intent::FastStop => self.stop(true, now),
            Intent::Reload if stopping => {}
            Intent::Reload if self.reload.busy() || matches!(self.phase, Phase::Booting { .. }) => {
                tracing::info!("reload queued until the current start or reload completes");
                self.reload.queued = true;
            }
            Intent::Reload => self.begin_reload(now),
            Intent::AddWorker | Intent::RemoveWorker if stopping => {}
            Intent::AddWorker => self.scale(self.serving.target + 1, "scaling up", now),
            Intent::RemoveWorker if self.serving.target > 1 => {
                self.scale(self.serving.target - 1, "scaling down", now);
            }
            Intent::RemoveWorker => {}
            Intent::Ignore(name) => tracing::info!(
                signal = name,
                "{name} ignored: logs go to journald (nothing to reopen) and reload runs new code"
            ),
        }
    }

    /// A control-socket request: the figures now, or a reload whose
    /// outcome the client waits for (queued like SIGHUP's behind a start
    /// or reload under way).
    pub(in crate::supervisor) fn on_ctl(&mut self, asked: Asked, now: Instant) {
        let Asked { request, reply } = asked;
        match request {
            Request::Status => {
                let _ = reply.send(Answer::Status(self.report(now)));
            }
            Request::Reload if self.stopping() => {
                let _ = reply.send(Answer::Error {
                    error: "the service is stopping".into(),
                });
            }
            Request::Reload => {
                tracing::info!("reload asked on the control socket");
                if self.reload.busy() || matches!(self.phase, Phase::Booting { .. }) {
                    tracing::info!("reload queued until the current start or reload completes");
                    self.reload.queued = true;
                    self.reload.queued_waiters.push(reply);
                } else {
                    self.reload.waiters.push(reply);
                    self.begin_reload(now);
                }
            }
        }
    }

    /// `ferricorn status`.
    fn report(&self, now: Instant) -> Report {
        let mut workers: Vec<WorkerRow> = self
            .workers
            .iter()
            .map(|(pid, w)| WorkerRow {
                slot: w.slot,
                pid,
                generation: w.generation,
                state: w.state.name().to_owned(),
                age_ms: now.saturating_duration_since(w.started).as_millis() as u64,
                requests: w.counters.requests,
                connections: w.counters.connections,
                websockets: w.counters.websockets,
                memory_bytes: self.os.memory_usage(pid, w.cgroup.as_deref()),
            })
            .collect();
        workers.sort_by_key(|w| (w.generation, w.slot, w.pid));
        Report {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            build: self.serving.build.clone(),
            generation: self.serving.number,
            target: self.serving.target,
            last_reload: self.board.last_reload.clone(),
            restarts: self.board.restarts,
            workers,
        }
    }

    fn scale(&mut self, target: usize, what: &str, now: Instant) {
        self.serving.target = target;
        tracing::info!(workers = target, "{what} to {target} workers");
        self.reconcile(now);
        self.publish(true, now);
    }
}
