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
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hyper::header::HeaderValue;
use hyper::{Method, Uri, Version};

use crate::logging::ACCESS_TARGET;
use crate::proxy::Client;

/// Records waiting to be written; past this, records are dropped.
const QUEUE: usize = 16 * 1024;
/// Lines written to stderr at once, at most.
const BATCH: usize = 256;
/// How often the writer looks at the queue. A request only queues its
/// record: waking the writer for each (a futex call, then a context switch
/// on a worker's one core) cost more than writing the line. Lines reach
/// the log this much later at most; nginx's `access_log … flush=` is the
/// same trade.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
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

    /// The line for `r`. Text and numbers are pushed, not `write!`n:
    /// this runs once per request, and `fmt`'s machinery costs several
    /// times what the bytes do.
    fn render(&self, r: &AccessRecord, who: &Who, out: &mut String) {
        let number = super::push_number;
        out.clear();
        for atom in &self.atoms {
            match atom {
                Atom::Text(t) => out.push_str(t),
                Atom::Client => r.client.push_to(out),
                Atom::Dash => out.push('-'),
                Atom::Time => {
                    out.push('[');
                    out.push_str(&clf_time(r.at));
                    out.push(']');
                }
                Atom::RequestLine => {
                    out.push_str(r.head.method.as_str());
                    out.push(' ');
                    out.push_str(r.head.uri.path_and_query().map_or("/", |p| p.as_str()));
                    out.push(' ');
                    out.push_str(protocol(r.head.version));
                }
                Atom::Method => out.push_str(r.head.method.as_str()),
                Atom::Path => out.push_str(r.head.uri.path()),
                Atom::Query => out.push_str(r.head.uri.query().unwrap_or("")),
                Atom::Protocol => out.push_str(protocol(r.head.version)),
                Atom::Status => number(out, r.status.into()),
                Atom::Size { dash } => match (r.size, dash) {
                    (Some(n), _) => number(out, n),
                    (None, true) => out.push('-'),
                    (None, false) => out.push('0'),
                },
                Atom::Referer => push_header(out, r.head.referer.as_ref()),
                Atom::Agent => push_header(out, r.head.agent.as_ref()),
                Atom::Seconds => number(out, r.duration_us / 1_000_000),
                Atom::Millis => number(out, r.duration_us / 1_000),
                Atom::Micros => number(out, r.duration_us),
                Atom::Decimal => {
                    // Seconds to the microsecond, as `{:.6}` of the float
                    // would print them, from the integer.
                    number(out, r.duration_us / 1_000_000);
                    out.push('.');
                    super::push_micros(out, r.duration_us % 1_000_000);
                }
                Atom::Pid => {
                    out.push('<');
                    number(out, who.pid.into());
                    out.push('>');
                }
                Atom::Worker => number(out, who.slot as u64),
                Atom::Generation => number(out, who.generation),
                Atom::Peer => {
                    // Writing to a String cannot fail.
                    let _ = write!(out, "{}", r.client.peer);
                }
                Atom::Scheme => out.push_str(r.client.scheme.as_str()),
            }
        }
    }
}

/// `HTTP/1.1`, as `Version`'s `Debug` writes it.
fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
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
fn push_header(out: &mut String, value: Option<&HeaderValue>) {
    match value {
        None => out.push('-'),
        // Writing to a String cannot fail.
        Some(v) => {
            let _ = write!(out, "{}", v.as_bytes().escape_ascii());
        }
    }
}

/// Common Log Format time, in UTC (the journal keeps its own timestamp).
fn clf_time(at: SystemTime) -> String {
    let (year, month, day, secs) = civil(at);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The UTC date of `at` (year, month 1–12, day 1–31) and the seconds into
/// that day.
fn civil(at: SystemTime) -> (i64, i64, i64, i64) {
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
    (year, month, day, rem)
}

/// The time a text log line starts with, `2026-11-22T04:10:00.123456Z`
/// (RFC 3339 in UTC, as tracing writes the other lines), its date and
/// second rendered once per second.
#[derive(Default)]
struct Stamp {
    second: u64,
    /// Up to and including the `.` before the microseconds.
    head: String,
}

impl Stamp {
    fn push_to(&mut self, out: &mut String, at: SystemTime) {
        let since = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        if since.as_secs() != self.second || self.head.is_empty() {
            let (year, month, day, secs) = civil(at);
            self.second = since.as_secs();
            self.head = format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
                secs / 3600,
                secs % 3600 / 60,
                secs % 60
            );
        }
        out.push_str(&self.head);
        super::push_micros(out, since.subsec_micros().into());
        out.push('Z');
    }
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

/// Writes every queued record, [`BATCH`] lines to a write; true when the
/// queue has ended (the log was dropped and all of it written).
fn drain(records: &Receiver<AccessRecord>, write: &mut impl FnMut(AccessRecord)) -> bool {
    loop {
        let mut written = 0;
        let mut ended = false;
        crate::logging::batched(|| {
            while written < BATCH {
                match records.try_recv() {
                    Ok(r) => {
                        write(r);
                        written += 1;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        ended = true;
                        break;
                    }
                }
            }
        });
        if ended || written < BATCH {
            return ended;
        }
    }
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
    /// Asks the writer to write what is queued at once, and say when done.
    flush: mpsc::Sender<mpsc::Sender<()>>,
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
        let (flush, flushes) = mpsc::channel::<mpsc::Sender<()>>();
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
                // Plain text on stderr: the line is written here, in the
                // layout of the other text lines, without tracing's
                // formatting (two thirds of the writer's work per line).
                // The journal and JSON lines carry the record's parts as
                // fields of their own.
                let text = crate::logging::text_prefix()
                    .filter(|_| tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO));
                let mut stamp = Stamp::default();
                let mut out = String::with_capacity(512);
                let mut write = |r: AccessRecord| {
                    format.render(&r, &who, &mut line);
                    if let Some(prefix) = text {
                        out.clear();
                        out.push_str(prefix);
                        stamp.push_to(&mut out, r.at);
                        out.push_str("  INFO ");
                        out.push_str(ACCESS_TARGET);
                        out.push_str(": ");
                        out.push_str(&line);
                        out.push('\n');
                        crate::logging::write_text(out.as_bytes());
                        return;
                    }
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
                };
                loop {
                    let asked = match flushes.recv_timeout(FLUSH_INTERVAL) {
                        Ok(done) => Some(done),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        // The log is gone: the queue's end shows below.
                        Err(mpsc::RecvTimeoutError::Disconnected) => None,
                    };
                    let ended = drain(&records, &mut write);
                    if let Some(done) = asked {
                        let _ = done.send(());
                    }
                    if ended {
                        return;
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
            flush,
            dropped,
            wants_headers,
        })
    }

    /// Writes what is queued now, waiting at most `limit`: called as the
    /// worker exits, so its last requests' lines are not lost with it.
    pub fn flush(&self, limit: Duration) {
        let (done, finished) = mpsc::channel();
        if self.flush.send(done).is_ok() {
            let _ = finished.recv_timeout(limit);
        }
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
    fn decimal_seconds_read_as_the_float_would_print() {
        let mut r = record();
        for (us, text) in [
            (0, "0.000000"),
            (5, "0.000005"),
            (120_000_001, "120.000001"),
        ] {
            r.duration_us = us;
            assert_eq!(render("%(L)s", &r), text);
            assert_eq!(text, format!("{:.6}", us as f64 / 1e6));
        }
    }

    #[test]
    fn text_lines_start_with_the_time_as_tracing_writes_it() {
        let mut stamp = Stamp::default();
        let mut out = String::new();
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_320_600_000_042);
        stamp.push_to(&mut out, at);
        assert_eq!(out, "2026-11-22T04:10:00.000042Z");
        // A later second is rendered anew, not taken from the cache.
        out.clear();
        stamp.push_to(&mut out, at + Duration::from_micros(61_999_958));
        assert_eq!(out, "2026-11-22T04:11:02.000000Z");
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
