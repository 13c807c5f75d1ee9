//! The access log, off the event loop: a request's record goes into a
//! bounded queue (never waiting) and a thread of its own formats it with
//! `access_log_format` and writes it to the journal or stderr. A slow
//! journal then costs log lines, counted and reported, never latency or a
//! blocked worker.
//!
//! The format takes Gunicorn's atoms where they apply (`%(h)s`, `%(r)s`,
//! `%(s)s`, …) plus ferricorn's own (`%(w)s` the worker's slot); it is
//! parsed once, at config load, so an unknown atom is a config error and
//! the writer never meets one.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hyper::header::HeaderValue;
use hyper::{Method, Uri, Version};

use crate::logging::ACCESS_TARGET;
use crate::proxy::Client;

/// Records waiting to be written; past this, records are dropped.
const QUEUE: usize = 16 * 1024;
/// At most one "dropped" report per this interval.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// `access_log_format`'s default: the client, the request line, status,
/// size, duration and worker, self-contained in `journalctl -o short`.
pub const DEFAULT_FORMAT: &str = r#"%(h)s "%(r)s" %(s)s %(b)s %(L)ss worker %(w)s"#;

/// One piece of a parsed `access_log_format`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Atom {
    Text(String),
    /// `h`: the client's address (behind a trusted proxy, the one it named).
    Client,
    /// `l`, `u`: remote log name and user, always `-` (as Gunicorn).
    Dash,
    /// `t`: the time, `[22/Nov/2026:04:10:00 +0000]`.
    Time,
    /// `r`: `GET /path?query HTTP/1.1`.
    RequestLine,
    /// `m`, `U`, `q`, `H`: method, path, query, protocol.
    Method,
    Path,
    Query,
    Protocol,
    /// `s`: status.
    Status,
    /// `B`: body size (0 when unknown); `b`: or `-`.
    Size {
        dash: bool,
    },
    /// `f`, `a`: Referer and User-Agent.
    Referer,
    Agent,
    /// `T` whole seconds, `M` milliseconds, `D` microseconds, `L` decimal
    /// seconds.
    Seconds,
    Millis,
    Micros,
    Decimal,
    /// `p`: `<pid>`.
    Pid,
    /// ferricorn's own: `w` worker slot, `g` generation, `P` the
    /// connection's peer (the proxy), `S` the scheme.
    Worker,
    Generation,
    Peer,
    Scheme,
}

/// A parsed `access_log_format`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    atoms: Vec<Atom>,
}

impl Format {
    /// Parses Gunicorn's `%(x)s` notation; `%%` is a percent sign.
    ///
    /// # Errors
    /// An atom that is not one of the list above, or a `%(` left open.
    pub fn parse(text: &str) -> Result<Format, String> {
        let mut atoms = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('%') {
            literal.push_str(&rest[..at]);
            rest = &rest[at..];
            if let Some(after) = rest.strip_prefix("%%") {
                literal.push('%');
                rest = after;
                continue;
            }
            let Some(inner) = rest.strip_prefix("%(") else {
                return Err(format!(
                    "a % at {:?} that is neither %% nor an atom like %(h)s",
                    truncate(rest)
                ));
            };
            let Some(close) = inner.find(")s") else {
                return Err(format!("{:?} is not closed with )s", truncate(rest)));
            };
            let name = &inner[..close];
            let atom = match name {
                "h" => Atom::Client,
                "l" | "u" => Atom::Dash,
                "t" => Atom::Time,
                "r" => Atom::RequestLine,
                "m" => Atom::Method,
                "U" => Atom::Path,
                "q" => Atom::Query,
                "H" => Atom::Protocol,
                "s" => Atom::Status,
                "B" => Atom::Size { dash: false },
                "b" => Atom::Size { dash: true },
                "f" => Atom::Referer,
                "a" => Atom::Agent,
                "T" => Atom::Seconds,
                "M" => Atom::Millis,
                "D" => Atom::Micros,
                "L" => Atom::Decimal,
                "p" => Atom::Pid,
                "w" => Atom::Worker,
                "g" => Atom::Generation,
                "P" => Atom::Peer,
                "S" => Atom::Scheme,
                other => {
                    return Err(format!(
                        "unknown atom %({other})s; known: h l u t r m U q H s B b f a T M D L p (Gunicorn's) and w g P S (worker, generation, peer, scheme)"
                    ))
                }
            };
            if !literal.is_empty() {
                atoms.push(Atom::Text(std::mem::take(&mut literal)));
            }
            atoms.push(atom);
            rest = &inner[close + 2..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            atoms.push(Atom::Text(literal));
        }
        Ok(Format { atoms })
    }

    /// Whether records must carry the Referer and User-Agent headers.
    fn wants_headers(&self) -> bool {
        self.atoms
            .iter()
            .any(|a| matches!(a, Atom::Referer | Atom::Agent))
    }

    fn render(&self, r: &AccessRecord, who: &Who, out: &mut String) {
        out.clear();
        for atom in &self.atoms {
            // Writing to a String cannot fail.
            let _ = match atom {
                Atom::Text(t) => write!(out, "{t}"),
                Atom::Client => write!(out, "{}", r.client),
                Atom::Dash => write!(out, "-"),
                Atom::Time => write!(out, "[{}]", clf_time(r.at)),
                Atom::RequestLine => write!(
                    out,
                    "{} {} {:?}",
                    r.head.method,
                    r.head.uri.path_and_query().map_or("/", |p| p.as_str()),
                    r.head.version
                ),
                Atom::Method => write!(out, "{}", r.head.method),
                Atom::Path => write!(out, "{}", r.head.uri.path()),
                Atom::Query => write!(out, "{}", r.head.uri.query().unwrap_or("")),
                Atom::Protocol => write!(out, "{:?}", r.head.version),
                Atom::Status => write!(out, "{}", r.status),
                Atom::Size { dash } => match (r.size, dash) {
                    (Some(n), _) => write!(out, "{n}"),
                    (None, true) => write!(out, "-"),
                    (None, false) => write!(out, "0"),
                },
                Atom::Referer => write!(out, "{}", header_text(r.head.referer.as_ref())),
                Atom::Agent => write!(out, "{}", header_text(r.head.agent.as_ref())),
                Atom::Seconds => write!(out, "{}", r.duration_us / 1_000_000),
                Atom::Millis => write!(out, "{}", r.duration_us / 1_000),
                Atom::Micros => write!(out, "{}", r.duration_us),
                Atom::Decimal => write!(out, "{:.6}", r.duration_us as f64 / 1e6),
                Atom::Pid => write!(out, "<{}>", who.pid),
                Atom::Worker => write!(out, "{}", who.slot),
                Atom::Generation => write!(out, "{}", who.generation),
                Atom::Peer => write!(out, "{}", r.client.peer),
                Atom::Scheme => write!(out, "{}", r.client.scheme.as_str()),
            };
        }
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(12) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A header's value as the log shows it: `-` when absent, and bytes that
/// are not visible ASCII escaped, so a client cannot write a line of its
/// own into the log.
fn header_text(value: Option<&HeaderValue>) -> String {
    match value {
        None => "-".to_owned(),
        Some(v) => v.as_bytes().escape_ascii().to_string(),
    }
}

/// Common Log Format time, in UTC (the journal keeps its own timestamp).
fn clf_time(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The parts of a request head the log may show, taken before the request
/// goes to the app (which consumes it). Cloning a `Uri` or a `HeaderValue`
/// shares its bytes rather than copying them.
pub struct Head {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub referer: Option<HeaderValue>,
    pub agent: Option<HeaderValue>,
}

/// One served request.
pub struct AccessRecord {
    pub head: Head,
    pub status: u16,
    /// The body's size when known before it is sent.
    pub size: Option<u64>,
    pub duration_us: u64,
    pub client: Client,
    pub at: SystemTime,
}

/// The worker the lines are from.
struct Who {
    slot: usize,
    generation: u64,
    pid: u32,
}

/// The hot-path end of the access log.
#[derive(Debug)]
pub struct AccessLog {
    queue: SyncSender<AccessRecord>,
    dropped: Arc<AtomicU64>,
    wants_headers: bool,
}

impl AccessLog {
    /// Starts the writer thread for worker `slot` of `generation`.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start(format: Format, slot: usize, generation: u64) -> std::io::Result<AccessLog> {
        let (queue, records) = mpsc::sync_channel::<AccessRecord>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = dropped.clone();
        let wants_headers = format.wants_headers();
        let who = Who {
            slot,
            generation,
            pid: std::process::id(),
        };
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut last_report: Option<Instant> = None;
                let mut line = String::with_capacity(256);
                loop {
                    match records.recv_timeout(DROP_REPORT_INTERVAL) {
                        Ok(r) => {
                            format.render(&r, &who, &mut line);
                            tracing::info!(
                                target: ACCESS_TARGET,
                                method = %r.head.method,
                                path = %r.head.uri.path(),
                                status = r.status,
                                duration_us = r.duration_us,
                                client = %r.client,
                                peer = %r.client.peer,
                                "{line}"
                            );
                        }
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
                            "{n} access log lines dropped: the log sink is slower than the requests"
                        );
                        last_report = Some(Instant::now());
                    }
                }
            })?;
        Ok(AccessLog {
            queue,
            dropped,
            wants_headers,
        })
    }

    /// What of `request`'s head the log needs.
    pub fn head<B>(&self, request: &hyper::Request<B>) -> Head {
        let header = |name| match self.wants_headers {
            true => request.headers().get(name).cloned(),
            false => None,
        };
        Head {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            referer: header(hyper::header::REFERER),
            agent: header(hyper::header::USER_AGENT),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::{Peer, Scheme};

    fn record() -> AccessRecord {
        AccessRecord {
            head: Head {
                method: Method::GET,
                uri: "/chat/lobby?x=1".parse().unwrap(),
                version: Version::HTTP_11,
                referer: None,
                agent: Some(HeaderValue::from_bytes(b"curl\xff\"/8").unwrap()),
            },
            status: 200,
            size: Some(135),
            duration_us: 1_234_567,
            client: Client {
                ip: Some("203.0.113.7".parse().unwrap()),
                scheme: Scheme::Https,
                peer: Peer::Tcp("127.0.0.1:40000".parse().unwrap()),
                forwarded: true,
            },
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_320_600),
        }
    }

    fn render(format: &str, r: &AccessRecord) -> String {
        let who = Who {
            slot: 2,
            generation: 3,
            pid: 77,
        };
        let mut out = String::new();
        Format::parse(format).unwrap().render(r, &who, &mut out);
        out
    }

    #[test]
    fn the_default_line_reads_on_its_own() {
        assert_eq!(
            render(DEFAULT_FORMAT, &record()),
            r#"203.0.113.7 "GET /chat/lobby?x=1 HTTP/1.1" 200 135 1.234567s worker 2"#
        );
    }

    #[test]
    fn gunicorns_atoms_render_as_gunicorn_renders_them() {
        let gunicorn = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;
        assert_eq!(
            render(gunicorn, &record()),
            r#"203.0.113.7 - - [22/Nov/2026:04:10:00 +0000] "GET /chat/lobby?x=1 HTTP/1.1" 200 135 "-" "curl\xff\"/8""#
        );
        let mut r = record();
        r.size = None;
        assert_eq!(
            render("%(m)s %(U)s %(q)s %(H)s %(B)s/%(b)s %(T)s %(M)s %(D)s %(p)s %(g)s %(P)s %(S)s 100%%", &r),
            "GET /chat/lobby x=1 HTTP/1.1 0/- 1 1234 1234567 <77> 3 127.0.0.1:40000 https 100%"
        );
    }

    #[test]
    fn a_bad_format_names_what_is_wrong() {
        let e = Format::parse("%(h)s %(x)s").unwrap_err();
        assert!(e.contains("%(x)s"), "{e}");
        assert!(Format::parse("%(h").unwrap_err().contains("not closed"));
        assert!(Format::parse("50% off").unwrap_err().contains("neither %%"));
        assert_eq!(
            Format::parse("plain").unwrap().atoms,
            vec![Atom::Text("plain".into())]
        );
    }
}
