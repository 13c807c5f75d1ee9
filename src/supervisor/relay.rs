//! The per-worker relay task: turns a worker's control lines and, at the
//! end, its exit status into [`Event`]s for the supervisor, and passes the
//! supervisor's figures down to the worker. A worker's `metrics` reports go
//! to the [`Ledger`](super::metrics::Ledger), not to the core.

use std::process::ExitStatus;

use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, watch};

use super::metrics::SharedLedger;
use super::spawn::Spawned;
use crate::control::{DecodeError, WorkerMessage};

/// What the supervisor hears about a worker, by pid.
#[derive(Debug)]
pub(crate) enum Event {
    Message(u32, WorkerMessage),
    BadMessage(u32, DecodeError),
    Exited(u32, std::io::Result<ExitStatus>),
}

/// Relays until the worker exits; the last event is its exit.
pub(super) async fn relay(
    spawned: Spawned,
    events: mpsc::UnboundedSender<Event>,
    mut status: watch::Receiver<String>,
    ledger: Option<(SharedLedger, u64)>,
) {
    let Spawned {
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
                    Ok(WorkerMessage::Metrics(report)) => {
                        if let Some((ledger, id)) = &ledger {
                            if let Ok(mut ledger) = ledger.lock() {
                                ledger.report(*id, *report);
                            }
                        }
                        continue;
                    }
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
    // Before the core hears of the exit, so no scrape after it misses
    // this worker's counts.
    if let Some((ledger, id)) = &ledger {
        if let Ok(mut ledger) = ledger.lock() {
            ledger.leave(*id);
        }
    }
    let _ = events.send(Event::Exited(pid, status));
}
