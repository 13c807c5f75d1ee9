//! The operator's control socket: what `ferricorn status` and `ferricorn
//! reload` ask the running supervisor, what it answers, and where the
//! socket lives. (The supervisor's end is `supervisor::ctl`; the worker
//! protocol is [`crate::control`], a different thing.)
//!
//! One request per connection, one line each way: the client writes
//! `status` or `reload`, the supervisor answers one JSON [`Answer`] and
//! closes. A reload's answer comes when its outcome is known: the new
//! generation serves, or it failed (a bad config, workers not ready within
//! `boot_timeout`) and the old one still does. That is what lets
//! `ExecReload=ferricorn reload` make `systemctl reload` fail visibly.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest request line the supervisor reads; anything longer is refused.
pub const MAX_REQUEST: usize = 256;
/// Where the socket is when the config names none and systemd gave no
/// runtime directory: the unit's `RuntimeDirectory=ferricorn`.
pub const DEFAULT_PATH: &str = "/run/ferricorn/control.sock";
/// File name inside `$RUNTIME_DIRECTORY`.
const FILE_NAME: &str = "control.sock";

/// What a client may ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Status,
    Reload,
}

impl Request {
    /// Parses one request line (without its newline).
    ///
    /// # Errors
    /// Anything but `status` or `reload`, said in words for the client.
    pub fn parse(line: &[u8]) -> Result<Request, String> {
        let Ok(text) = std::str::from_utf8(line) else {
            return Err("the request is not UTF-8".into());
        };
        match text.trim() {
            "status" => Ok(Request::Status),
            "reload" => Ok(Request::Reload),
            other => {
                let shown: String = other.chars().take(40).collect();
                Err(format!(
                    "unknown request {shown:?}: send \"status\" or \"reload\""
                ))
            }
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Reload => "reload",
        }
    }
}

/// The supervisor's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    Status(Report),
    /// The reload is complete: `to` serves, `from` has drained.
    Reloaded {
        from: u64,
        to: u64,
        took_ms: u64,
    },
    /// The reload failed; the generation that served keeps serving.
    ReloadFailed {
        error: String,
        /// Whether it was the config (exit 78) rather than the workers.
        config: bool,
        serving: u64,
    },
    /// The request itself was refused.
    Error {
        error: String,
    },
}

/// `ferricorn status`: the service and one row per worker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub pid: u32,
    pub version: String,
    pub build: String,
    pub generation: u64,
    pub target: usize,
    pub last_reload: Option<String>,
    pub restarts: u64,
    pub workers: Vec<WorkerRow>,
}

/// One worker, as `gunicornc`/`pumactl stats` would show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerRow {
    pub slot: usize,
    pub pid: u32,
    pub generation: u64,
    /// booting, ready, retiring or draining.
    pub state: String,
    pub age_ms: u64,
    pub requests: u64,
    pub connections: u64,
    pub websockets: u64,
    /// cgroup `memory.current`, else RSS; none if unreadable.
    pub memory_bytes: Option<u64>,
}

/// The socket's path: the config's `control_socket` if set, else
/// `$RUNTIME_DIRECTORY/control.sock` (systemd sets the variable for the
/// service and its `ExecReload=`), else none for the server (no socket
/// outside systemd unless asked for) and [`DEFAULT_PATH`] for a client.
pub fn path(control_socket: &str, client: bool) -> Option<PathBuf> {
    if !control_socket.is_empty() {
        return Some(PathBuf::from(control_socket));
    }
    // Several directories are separated by colons; the first is ours.
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY") {
        let dir = dir.to_string_lossy().split(':').next()?.to_owned();
        if !dir.is_empty() {
            return Some(Path::new(&dir).join(FILE_NAME));
        }
    }
    client.then(|| PathBuf::from(DEFAULT_PATH))
}

/// Asks the supervisor at `socket` and returns its answer. `wait` bounds
/// the wait for it (None: as long as it takes; a reload is bounded by
/// `boot_timeout` on the supervisor's side).
///
/// # Errors
/// The socket cannot be reached (`NotFound`, `ConnectionRefused`: no
/// supervisor serves it), or the answer is not one.
pub fn ask(socket: &Path, request: Request, wait: Option<Duration>) -> std::io::Result<Answer> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(wait)?;
    // A refusal (a client it does not allow) is answered before the
    // request is read, and the socket closed: the write may then fail
    // while the answer waits to be read.
    let wrote = stream.write_all(format!("{}\n", request.as_str()).as_bytes());
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    if line.is_empty() {
        wrote?;
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the supervisor closed the control socket without answering (is it stopping?)",
        ));
    }
    serde_json::from_str(&line)
        .map_err(|e| std::io::Error::other(format!("not an answer ({e}): {line:?}")))
}

/// `ferricorn status`'s table.
pub fn render(report: &Report) -> String {
    let ready = report
        .workers
        .iter()
        .filter(|w| w.generation == report.generation && w.state == "ready")
        .count();
    let mut out = format!(
        "ferricorn {} (build {}), supervisor pid {}, generation {}, {ready}/{} workers ready, {} restarts, last reload: {}\n",
        report.version,
        report.build,
        report.pid,
        report.generation,
        report.target,
        report.restarts,
        report.last_reload.as_deref().unwrap_or("none")
    );
    out.push_str(&format!(
        "{:>4}  {:>8}  {:>3}  {:<8}  {:>9}  {:>9}  {:>5}  {:>4}  {:>9}\n",
        "SLOT", "PID", "GEN", "STATE", "AGE", "REQUESTS", "CONNS", "WS", "MEMORY"
    ));
    for w in &report.workers {
        let memory = w.memory_bytes.map_or_else(
            || "-".to_owned(),
            |b| format!("{:.1}M", b as f64 / 1048576.0),
        );
        out.push_str(&format!(
            "{:>4}  {:>8}  {:>3}  {:<8}  {:>9}  {:>9}  {:>5}  {:>4}  {:>9}\n",
            w.slot,
            w.pid,
            w.generation,
            w.state,
            age(w.age_ms),
            w.requests,
            w.connections,
            w.websockets,
            memory
        ));
    }
    out
}

/// An age as `ps` would show it, short.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{:02}h", s / 86_400, s / 3600 % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_anything_else_is_said_to_be_wrong() {
        assert_eq!(Request::parse(b"status"), Ok(Request::Status));
        assert_eq!(Request::parse(b" reload \r"), Ok(Request::Reload));
        assert!(Request::parse(b"stop").unwrap_err().contains("\"stop\""));
        assert!(Request::parse(b"\xff\xfe").unwrap_err().contains("UTF-8"));
        let long = "x".repeat(1000);
        assert!(Request::parse(long.as_bytes()).unwrap_err().len() < 120);
    }

    #[test]
    fn answers_round_trip_as_json_lines() {
        let answers = [
            Answer::Reloaded {
                from: 1,
                to: 2,
                took_ms: 180,
            },
            Answer::ReloadFailed {
                error: "workers: bad value".into(),
                config: true,
                serving: 1,
            },
            Answer::Status(Report::default()),
            Answer::Error { error: "no".into() },
        ];
        for a in answers {
            let line = serde_json::to_string(&a).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Answer>(&line).unwrap(), a);
        }
    }

    #[test]
    fn the_table_has_a_row_per_worker() {
        let report = Report {
            pid: 10,
            version: "0.1.0".into(),
            build: "abc".into(),
            generation: 2,
            target: 1,
            last_reload: Some("ok (gen 2)".into()),
            restarts: 0,
            workers: vec![WorkerRow {
                slot: 1,
                pid: 11,
                generation: 2,
                state: "ready".into(),
                age_ms: 125_000,
                requests: 7,
                connections: 1,
                websockets: 0,
                memory_bytes: Some(12 << 20),
            }],
        };
        let table = render(&report);
        assert!(table.contains("1/1 workers ready"), "{table}");
        assert!(table.lines().nth(2).unwrap().contains("2m05s"), "{table}");
        assert!(table.contains("12.0M"), "{table}");
    }
}
