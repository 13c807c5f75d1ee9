//! A rolling reload's progress as one value, so that every transition sets
//! all of it at once: a stop resets it in one assignment, and nothing that
//! follows a stop can find a reload to complete.

use std::time::Instant;

use tokio::sync::oneshot;

use crate::ctl::Answer;

use super::workers::Generation;

/// Where a reload is.
#[derive(Default)]
pub(super) enum Step {
    /// None under way.
    #[default]
    Idle,
    /// A new generation is starting; the old one serves until every slot
    /// of the new one is ready, or `deadline` (its `boot_timeout`) passes.
    Starting {
        generation: Generation,
        deadline: Instant,
        /// When the reload began, for "complete in …".
        began: Instant,
    },
    /// The new generation serves. `READY=1` waits until these old workers
    /// have said they stopped accepting (or `deadline`), so a client that
    /// connects after it reaches the new generation.
    Quiescing {
        waiting: Vec<u32>,
        deadline: Instant,
        /// The generation it replaced, and when the reload began.
        from: u64,
        began: Instant,
    },
}

/// The reload state of the supervisor.
#[derive(Default)]
pub(super) struct Reload {
    /// Where the reload under way is, if any.
    pub step: Step,
    /// A SIGHUP arrived during the first start or another reload: run it
    /// once that is over.
    pub queued: bool,
    /// Control-socket clients (`ferricorn reload`) waiting for this
    /// reload's outcome, and those waiting for the queued one. Dropped
    /// with the reload by a stop, which the clients then hear.
    pub waiters: Vec<oneshot::Sender<Answer>>,
    pub queued_waiters: Vec<oneshot::Sender<Answer>>,
}

impl Reload {
    /// Whether a reload is under way.
    pub fn busy(&self) -> bool {
        !matches!(self.step, Step::Idle)
    }

    /// The generation being started, if any.
    pub fn starting(&self) -> Option<&Generation> {
        match &self.step {
            Step::Starting { generation, .. } => Some(generation),
            _ => None,
        }
    }
}
