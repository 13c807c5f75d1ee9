//! What the supervisor does with each operator intent (a signal, once
//! [`super::super::signals`] has mapped it): stop, reload or queue the
//! reload, scale, or say why a signal is ignored.

use std::time::Instant;

use super::super::signals::Intent;
use super::super::system::Os;
use super::{Phase, Supervisor};

impl<O: Os> Supervisor<O> {
    pub(in crate::supervisor) fn on_intent(&mut self, intent: Intent, now: Instant) {
        tracing::info!(?intent, "signal received");
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
                "signal ignored: logs go to journald (nothing to reopen) and reload runs new code"
            ),
        }
    }

    fn scale(&mut self, target: usize, what: &str, now: Instant) {
        self.serving.target = target;
        tracing::info!(workers = target, "{what}");
        self.reconcile(now);
        self.publish(true, now);
    }
}
