//! The control channel between supervisor and worker: a stream socket pair,
//! one line per message.
//!
//! Supervisor → worker: the resolved config as the first line (JSON), then
//! the supervisor's live figures ([`SupervisorStatus`], JSON) every few
//! seconds. Worker → supervisor: `ready`, `heartbeat`, `metrics` (its
//! counts for `/metrics`, JSON), `retire`, `draining`. Stop requests go by
//! signal,
//! not here, so that a worker with a wedged event loop still gets them.

use serde::{Deserialize, Serialize};

/// A worker's counters, sent with every heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Requests served since the worker started.
    pub requests: u64,
    /// Open HTTP connections, upgraded ones included.
    pub connections: u64,
    /// Open WebSockets.
    pub websockets: u64,
}

/// What a worker tells its supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerMessage {
    /// Accepting on every listener.
    Ready,
    /// Event loop alive, with the worker's counters.
    Heartbeat(Counters),
    /// Asks to be replaced (e.g. `max_requests` reached); keeps serving until
    /// the supervisor drains it, so capacity never dips.
    Retire(String),
    /// Stopped accepting (drain started); finishing what is open.
    Draining,
    /// The worker's counts since it started, for `/metrics`: sent with
    /// each heartbeat and once more just before it exits.
    Metrics(Box<crate::metrics::Report>),
}

/// The supervisor's live figures: what `STATUS=` says, as data, so each
/// worker's `/health` can show them too.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SupervisorStatus {
    pub generation: u64,
    pub workers_ready: usize,
    pub workers_target: usize,
    pub requests_per_second: f64,
    pub connections: u64,
    pub websockets: u64,
    /// Workers that died or were killed unexpectedly since start.
    pub restarts: u64,
    /// Quick deaths of slots currently backing off.
    pub crash_loop: u32,
    /// Generation a reload in progress is starting, if any.
    pub reloading_to: Option<u64>,
    /// "ok (gen N)" or "failed: why"; `None` before the first reload.
    pub last_reload: Option<String>,
}

impl std::fmt::Display for SupervisorStatus {
    /// The `STATUS=` line: short enough for `systemctl status`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "gen {}: {}/{} workers ready, {:.0} req/s, {} conns, {} ws, {} restarts",
            self.generation,
            self.workers_ready,
            self.workers_target,
            self.requests_per_second,
            self.connections,
            self.websockets,
            self.restarts
        )?;
        if self.crash_loop > 0 {
            write!(
                f,
                ", crash loop ({} quick deaths, backing off)",
                self.crash_loop
            )?;
        }
        if let Some(g) = self.reloading_to {
            write!(f, ", reloading to gen {g}")?;
        }
        if let Some(r) = &self.last_reload {
            write!(f, ", last reload {r}")?;
        }
        Ok(())
    }
}

/// Longest line either side accepts; anything longer is a broken peer.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty control message")]
    Empty,
    #[error("unknown control message {0:?}")]
    Unknown(String),
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

impl WorkerMessage {
    /// The line sent on the wire, newline included.
    pub fn encode(&self) -> String {
        match self {
            WorkerMessage::Ready => "ready\n".to_owned(),
            WorkerMessage::Heartbeat(c) => format!(
                "heartbeat {} {} {}\n",
                c.requests, c.connections, c.websockets
            ),
            // A reason is one word on the wire: the whitespace `decode` splits on
            // would split it (found by tests/integration/fuzz.rs).
            WorkerMessage::Retire(reason) => format!(
                "retire {}\n",
                reason.replace(|c: char| c.is_ascii_whitespace(), "_")
            ),
            WorkerMessage::Draining => "draining\n".to_owned(),
            // Compact JSON has no newline in it.
            WorkerMessage::Metrics(report) => format!(
                "metrics {}\n",
                serde_json::to_string(report).expect("a Report encodes as JSON")
            ),
        }
    }

    /// Parses one line (without its newline).
    ///
    /// # Errors
    /// Anything that is not exactly one of the messages `encode` writes.
    pub fn decode(line: &str) -> Result<Self, DecodeError> {
        if let Some(json) = line.strip_prefix("metrics ") {
            return serde_json::from_str(json)
                .map(|report| WorkerMessage::Metrics(Box::new(report)))
                .map_err(|_| DecodeError::Malformed("metrics"));
        }
        let mut words = line.split_ascii_whitespace();
        let kind = words.next().ok_or(DecodeError::Empty)?;
        let rest: Vec<&str> = words.collect();
        match (kind, rest.as_slice()) {
            ("ready", []) => Ok(WorkerMessage::Ready),
            ("ready", _) => Err(DecodeError::Malformed("ready")),
            ("heartbeat", [r, c, w]) => {
                let num = |s: &str| {
                    s.parse::<u64>()
                        .map_err(|_| DecodeError::Malformed("heartbeat"))
                };
                Ok(WorkerMessage::Heartbeat(Counters {
                    requests: num(r)?,
                    connections: num(c)?,
                    websockets: num(w)?,
                }))
            }
            ("heartbeat", _) => Err(DecodeError::Malformed("heartbeat")),
            ("retire", [reason]) => Ok(WorkerMessage::Retire((*reason).to_owned())),
            ("retire", _) => Err(DecodeError::Malformed("retire")),
            ("draining", []) => Ok(WorkerMessage::Draining),
            ("draining", _) => Err(DecodeError::Malformed("draining")),
            ("metrics", _) => Err(DecodeError::Malformed("metrics")),
            (other, _) => Err(DecodeError::Unknown(other.chars().take(32).collect())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let messages = [
            WorkerMessage::Ready,
            WorkerMessage::Heartbeat(Counters {
                requests: 7,
                connections: 2,
                websockets: 1,
            }),
            WorkerMessage::Retire("max_requests".into()),
            WorkerMessage::Draining,
            WorkerMessage::Metrics(Box::new(crate::metrics::Report {
                requests: 3,
                routes: vec![crate::metrics::RouteReport {
                    route: "/chat/{room}".into(),
                    requests: vec![(0, 1, 3)],
                    buckets: vec![3],
                    sum_us: 120,
                }],
                ..crate::metrics::Report::default()
            })),
        ];
        for m in messages {
            let line = m.encode();
            assert_eq!(WorkerMessage::decode(line.trim_end()), Ok(m));
        }
    }

    #[test]
    fn retire_reason_with_spaces_stays_one_word() {
        let line = WorkerMessage::Retire("memory high".into()).encode();
        assert_eq!(
            WorkerMessage::decode(line.trim_end()),
            Ok(WorkerMessage::Retire("memory_high".into()))
        );
    }

    #[test]
    fn status_line_reads_as_systemctl_status_shows_it() {
        let mut status = SupervisorStatus {
            generation: 3,
            workers_ready: 2,
            workers_target: 2,
            requests_per_second: 15234.4,
            connections: 12,
            websockets: 3,
            ..SupervisorStatus::default()
        };
        assert_eq!(
            status.to_string(),
            "gen 3: 2/2 workers ready, 15234 req/s, 12 conns, 3 ws, 0 restarts"
        );
        status.crash_loop = 1;
        status.restarts = 4;
        status.reloading_to = Some(4);
        status.last_reload = Some("ok (gen 3)".into());
        assert_eq!(
            status.to_string(),
            "gen 3: 2/2 workers ready, 15234 req/s, 12 conns, 3 ws, 4 restarts, crash loop (1 quick deaths, backing off), reloading to gen 4, last reload ok (gen 3)"
        );
        status.crash_loop = 0;
        assert!(!status.to_string().contains("crash loop"));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(WorkerMessage::decode(""), Err(DecodeError::Empty));
        assert!(WorkerMessage::decode("heartbeat 1 2").is_err());
        assert!(WorkerMessage::decode("heartbeat a b c").is_err());
        assert!(WorkerMessage::decode("ready now").is_err());
        assert!(WorkerMessage::decode("launch").is_err());
        assert!(WorkerMessage::decode("metrics").is_err());
        assert!(WorkerMessage::decode("metrics {\"requests\": -1}").is_err());
    }
}
