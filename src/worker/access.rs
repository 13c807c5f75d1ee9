//! The access log, off the event loop: a request's record goes into a
//! bounded queue (never waiting) and a thread of its own writes it to the
//! journal or stderr. A slow journal then costs log lines, counted and
//! reported, never latency or a blocked worker.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;

use crate::logging::ACCESS_TARGET;

/// Records waiting to be written; past this, records are dropped.
const QUEUE: usize = 16 * 1024;
/// At most one "dropped" report per this interval.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// One served request.
pub struct AccessRecord {
    pub method: Method,
    pub path: String,
    pub status: u16,
    pub duration_us: u64,
    pub peer: SocketAddr,
}

/// The hot-path end of the access log.
#[derive(Debug)]
pub struct AccessLog {
    queue: SyncSender<AccessRecord>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Starts the writer thread.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start() -> std::io::Result<AccessLog> {
        let (queue, records) = mpsc::sync_channel::<AccessRecord>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = dropped.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut last_report: Option<Instant> = None;
                loop {
                    match records.recv_timeout(DROP_REPORT_INTERVAL) {
                        Ok(r) => tracing::info!(
                            target: ACCESS_TARGET,
                            method = %r.method,
                            path = %r.path,
                            status = r.status,
                            duration_us = r.duration_us,
                            peer = %r.peer,
                            "{} {} {}",
                            r.method,
                            r.path,
                            r.status
                        ),
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    // A report is a line to the same slow sink: at most one
                    // per interval, however long the overload lasts; the
                    // count carries over to the next.
                    if last_report.is_some_and(|t| t.elapsed() < DROP_REPORT_INTERVAL) {
                        continue;
                    }
                    let n = lost.swap(0, Ordering::Relaxed);
                    if n > 0 {
                        tracing::warn!(
                            dropped = n,
                            "access log lines dropped: the log sink is slower than the requests"
                        );
                        last_report = Some(Instant::now());
                    }
                }
            })?;
        Ok(AccessLog { queue, dropped })
    }

    /// Queues a record; drops it (counted) if the writer is behind.
    pub fn record(&self, record: AccessRecord) {
        match self.queue.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
