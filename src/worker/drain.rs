//! Drain and counting: the worker's one shutdown signal (and, before a
//! stop's drain, the leaving state in which `/health` fails while requests
//! are still served), the tracker every connection and WebSocket holds a
//! token of, and the counters heartbeats carry.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

/// RFC 6455 close code for a server going away (stop).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// RFC 6455 (IANA registry) close code for a service restart: the client
/// should reconnect now, and will reach the new generation.
pub const CLOSE_SERVICE_RESTART: u16 = 1012;

/// Why a worker drains, which decides what WebSocket clients are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainReason {
    /// The service stops (SIGTERM).
    Stop,
    /// The worker is replaced: reload, recycle, scale-down (SIGHUP).
    Restart,
}

/// The drain signal plus what is still running. Axum's graceful shutdown
/// does not wait for upgraded connections, so every connection and
/// WebSocket holds a [`TaskTrackerToken`] and the worker exits only when
/// the tracker is empty.
#[derive(Debug, Default)]
pub struct Drain {
    token: CancellationToken,
    close_code: AtomicU16,
    /// The service is stopping: `/health` fails from now on, so load
    /// balancers stop sending here, though requests are still served.
    leaving: AtomicBool,
    tracker: TaskTracker,
}

impl Drain {
    /// Starts draining; the first reason wins.
    pub fn start(&self, reason: DrainReason) {
        self.record(reason);
        self.token.cancel();
    }

    /// Marks the worker as leaving for a stop, without draining yet: it
    /// keeps accepting and serving, and only its health check fails. The
    /// drain that follows is a stop's, whatever starts it.
    pub fn leave(&self) {
        self.record(DrainReason::Stop);
        self.leaving.store(true, Ordering::SeqCst);
    }

    /// Whether the worker left the rotation for a stop (`stop_delay`), and
    /// so through the drain that follows: what `/health` answers 503 for.
    /// A stop without a delay never fails `/health` (its workers stop
    /// accepting at once, and a request in flight gets its usual answer),
    /// nor does a restart's drain: the host serves on through the new
    /// generation.
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Relaxed)
    }

    fn record(&self, reason: DrainReason) {
        let code = match reason {
            DrainReason::Stop => CLOSE_GOING_AWAY,
            DrainReason::Restart => CLOSE_SERVICE_RESTART,
        };
        let _ = self
            .close_code
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Resolves once draining has started.
    pub async fn draining(&self) {
        self.token.cancelled().await;
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The close code WebSockets get: 1001 on stop, 1012 on restart.
    pub fn close_code(&self) -> u16 {
        match self.close_code.load(Ordering::SeqCst) {
            0 => CLOSE_GOING_AWAY,
            code => code,
        }
    }

    /// The reason sent with [`Drain::close_code`], saying what the client
    /// should do.
    pub fn close_reason(&self) -> &'static str {
        match self.close_code() {
            CLOSE_SERVICE_RESTART => "service restarting; reconnect",
            _ => "server shutting down",
        }
    }

    /// The tracker connection tasks are spawned on.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Keeps the worker alive until the token is dropped.
    pub fn token(&self) -> TaskTrackerToken {
        self.tracker.token()
    }

    /// Resolves when nothing tracked is left. Call after draining started.
    pub async fn finished(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// The counters a heartbeat reports.
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    connections: AtomicU64,
    websockets: AtomicU64,
}

impl Stats {
    /// Counts one served request; returns the new total.
    pub fn request_done(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn counter(&self, kind: Kind) -> &AtomicU64 {
        match kind {
            Kind::Connection => &self.connections,
            Kind::WebSocket => &self.websockets,
        }
    }

    pub fn snapshot(&self) -> crate::control::Counters {
        crate::control::Counters {
            requests: self.requests.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            websockets: self.websockets.load(Ordering::Relaxed),
        }
    }
}

/// Which counter a [`Open`] guard holds up.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Connection,
    WebSocket,
}

/// Counts one open connection or WebSocket and keeps the drain waiting for
/// it, until dropped.
#[derive(Debug)]
pub struct Open {
    stats: Arc<Stats>,
    kind: Kind,
    _token: TaskTrackerToken,
}

impl Open {
    pub fn new(stats: Arc<Stats>, drain: &Drain, kind: Kind) -> Open {
        stats.counter(kind).fetch_add(1, Ordering::Relaxed);
        Open {
            stats,
            kind,
            _token: drain.token(),
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.stats
            .counter(self.kind)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins() {
        let drain = Drain::default();
        drain.start(DrainReason::Restart);
        drain.start(DrainReason::Stop);
        assert_eq!(drain.close_code(), CLOSE_SERVICE_RESTART);
        assert_eq!(drain.close_reason(), "service restarting; reconnect");
        assert!(drain.is_draining());
        assert!(
            !drain.is_leaving(),
            "a restart's drain keeps the host in rotation"
        );
    }

    #[test]
    fn leaving_lasts_through_the_drain_and_only_a_delayed_stop_leaves() {
        let drain = Drain::default();
        drain.leave();
        assert!(drain.is_leaving() && !drain.is_draining());
        // A reload's SIGHUP arriving meanwhile does not make it a restart.
        drain.start(DrainReason::Restart);
        assert_eq!(drain.close_code(), CLOSE_GOING_AWAY);
        assert!(drain.is_leaving() && drain.is_draining());
        let stopped = Drain::default();
        stopped.start(DrainReason::Stop);
        assert!(
            !stopped.is_leaving(),
            "a stop with no delay: in-flight /health stays 200"
        );
    }

    #[test]
    fn guards_count_up_and_down() {
        let drain = Drain::default();
        let stats = Arc::new(Stats::default());
        let a = Open::new(stats.clone(), &drain, Kind::Connection);
        let b = Open::new(stats.clone(), &drain, Kind::WebSocket);
        assert_eq!(stats.snapshot().connections, 1);
        assert_eq!(stats.snapshot().websockets, 1);
        drop((a, b));
        assert_eq!(stats.snapshot(), crate::control::Counters::default());
    }
}
