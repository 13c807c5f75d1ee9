//! Log output: straight to journald with structured fields when stderr is
//! the journal, else text (or JSON) lines on stderr.
//!
//! Worker lines carry `WORKER` (slot) and `GENERATION`, so
//! `journalctl -u ferricorn WORKER=2` reads one worker.

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer as _;

use crate::config::{LogFormat, LogLevel};

/// `SYSLOG_IDENTIFIER` of every journal entry, whatever argv[0] is.
pub const SYSLOG_IDENTIFIER: &str = "ferricorn";

/// Target of access-log events, so they can be filtered apart.
pub const ACCESS_TARGET: &str = "ferricorn::access";

/// How urgent a line written with [`early`] is (syslog priorities).
#[derive(Clone, Copy, Debug)]
pub enum Early {
    Error = 3,
    Warning = 4,
    Notice = 5,
}

/// One line on stderr from before (or outside) the log subscriber: a bad
/// config, unusable sockets. Under systemd stderr is a journal stream, and
/// the line starts with the `<N>` prefix journald reads as its priority
/// (sd-daemon(3)): an error shows as one (`journalctl -p err`, red in
/// `systemctl status`), and it is not lost to journald's rate limit, which
/// counts each priority apart, when a flood of info lines (the access log)
/// has used up the service's budget.
pub fn early(priority: Early, message: std::fmt::Arguments<'_>) {
    if crate::sys::stderr_is_journal() {
        eprintln!("<{}>ferricorn: {message}", priority as u8);
    } else {
        eprintln!("ferricorn: {message}");
    }
}

/// Set by [`init`] when lines are plain text on stderr: what each starts
/// with (`worker 1 gen 1: ` in a worker).
static TEXT_PREFIX: OnceLock<String> = OnceLock::new();

/// The prefix of this process's lines when they are plain text on stderr;
/// None for the journal and JSON lines, whose events keep fields apart
/// from the message.
pub fn text_prefix() -> Option<&'static str> {
    TEXT_PREFIX.get().map(String::as_str)
}

/// Writes `text`, whole lines in the layout of this module's text lines,
/// to stderr (through this thread's batch, if one is open).
pub fn write_text(text: &[u8]) {
    let _ = Stderr.write_all(text);
}

thread_local! {
    /// Lines this thread writes to stderr inside [`batched`], held for one
    /// write.
    static BATCH: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Runs `f`, and writes the stderr log lines this thread emits meanwhile
/// with one `write` at the end rather than one each: the access log's
/// writer puts a burst of lines out at the cost of one system call. Lines
/// to the journal are unaffected (it takes one entry per datagram).
pub fn batched<R>(f: impl FnOnce() -> R) -> R {
    let held = BATCH.with_borrow_mut(|b| b.replace(Vec::new()).is_some());
    let result = f();
    if !held {
        if let Some(lines) = BATCH.with_borrow_mut(Option::take) {
            let _ = std::io::stderr().write_all(&lines);
        }
    }
    result
}

/// stderr for the fmt layer: the open batch of this thread, if any.
struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match BATCH.with_borrow_mut(|b| b.as_mut().map(|lines| lines.extend_from_slice(buf))) {
            Some(()) => Ok(buf.len()),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Which process is logging.
#[derive(Clone, Copy, Debug)]
pub enum Role {
    Supervisor,
    Worker { slot: usize, generation: u64 },
}

fn level_filter(level: LogLevel) -> tracing_subscriber::filter::LevelFilter {
    use tracing_subscriber::filter::LevelFilter;
    match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// Installs the global subscriber for this process. Call once, early.
pub fn init(level: LogLevel, format: LogFormat, role: Role) {
    let filter = level_filter(level);
    if crate::sys::stderr_is_journal() {
        match journald(role) {
            Ok(layer) => {
                tracing_subscriber::registry()
                    .with(layer.with_filter(filter))
                    .init();
                return;
            }
            // Fall through to stderr, which the journal also captures.
            Err(e) => early(
                Early::Warning,
                format_args!("journald socket unusable ({e}); logging to stderr"),
            ),
        }
    }
    let prefix = match role {
        Role::Supervisor => String::new(),
        Role::Worker { slot, generation } => format!("worker {slot} gen {generation}: "),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(|| Stderr)
        .with_ansi(false);
    match format {
        LogFormat::Text => {
            let _ = TEXT_PREFIX.set(prefix.clone());
            let layer = layer.event_format(Prefixed {
                prefix,
                inner: format::Format::default().with_ansi(false),
            });
            tracing_subscriber::registry()
                .with(layer.with_filter(filter))
                .init();
        }
        LogFormat::Json => {
            let layer = layer.event_format(JsonLines { role });
            tracing_subscriber::registry()
                .with(layer.with_filter(filter))
                .init();
        }
    }
}

fn journald(role: Role) -> std::io::Result<tracing_journald::Layer> {
    let layer = tracing_journald::layer()?
        .with_syslog_identifier(SYSLOG_IDENTIFIER.to_owned())
        // Plain field names (`WORKER`, `STATUS`), not journald-layer's `F_` default.
        .with_field_prefix(None);
    Ok(match role {
        Role::Supervisor => layer.with_custom_fields([("ROLE", "supervisor")]),
        Role::Worker { slot, generation } => layer.with_custom_fields([
            ("ROLE", "worker".to_owned()),
            ("WORKER", slot.to_string()),
            ("GENERATION", generation.to_string()),
        ]),
    })
}

/// Default text lines with the worker's identity in front.
struct Prefixed<F> {
    prefix: String,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        writer.write_str(&self.prefix)?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// One JSON object per line: time, level, target, role identity and fields.
struct JsonLines {
    role: Role,
}

struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = JsonFields(serde_json::Map::new());
        event.record(&mut fields);
        let mut line = fields.0;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        line.insert("ts".into(), now.as_secs_f64().into());
        line.insert("level".into(), event.metadata().level().as_str().into());
        line.insert("target".into(), event.metadata().target().into());
        line.insert("pid".into(), std::process::id().into());
        if let Role::Worker { slot, generation } = self.role {
            line.insert("worker".into(), slot.into());
            line.insert("generation".into(), generation.into());
        }
        let text = serde_json::Value::Object(line).to_string();
        writeln!(writer, "{text}")
    }
}
