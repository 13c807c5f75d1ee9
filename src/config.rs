//! The one validated `Config`: built-in defaults < TOML file < the
//! `ferricorn.toml` credential (secrets, from `$CREDENTIALS_DIRECTORY`) <
//! `FERRICORN_*` environment < command-line flags, layered with figment.
//!
//! Every error names the key and the layer it came from (a file path, an
//! environment variable, or the command line), because "invalid value" alone
//! leaves an operator guessing which of four places to fix.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Where the supervisor looks for its file when `--config` is not given.
/// A missing file there is fine: the defaults serve.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ferricorn/ferricorn.toml";

/// The credential (`LoadCredential=ferricorn.toml:…` in a drop-in) read as
/// a config layer from `$CREDENTIALS_DIRECTORY`: where secrets go, so they
/// stay out of the world-readable file, and out of what `check-config`
/// prints.
pub const CREDENTIAL_NAME: &str = "ferricorn.toml";

/// Prefix of the environment layer; `__` separates nested keys.
pub const ENV_PREFIX: &str = "FERRICORN_";

/// Gunicorn's default listen backlog; tokio's 128 drops connections under
/// bursts of a few hundred.
const DEFAULT_BACKLOG: u32 = 2048;

/// Shortest and longest time a seconds key may give.
const MIN_SECONDS: f64 = 0.001;
const MAX_SECONDS: f64 = 86_400.0;

/// Most worker processes: beyond any machine, so a larger number is a typo.
const MAX_WORKERS: u64 = 1024;
/// Most runtime threads per worker, likewise.
const MAX_THREADS: u64 = 1024;

/// Uvicorn's default `--ws-max-size`.
const DEFAULT_WS_MAX_SIZE: usize = 16 * 1024 * 1024;

/// Log verbosity, named as in Gunicorn's `loglevel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// How log lines look when stderr is not the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The resolved configuration. Field names follow Gunicorn where the idea is
/// the same, Uvicorn where Gunicorn has none; the README documents each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to bind when systemd passes no socket (`LISTEN_FDS` unset):
    /// `host:port`, or `unix:/path/to.sock`.
    pub bind: String,
    /// Permissions of the socket file `bind = "unix:…"` creates, in octal:
    /// owner and group (put nginx's user in the group) by default.
    pub unix_socket_mode: String,
    /// Listen backlog used when ferricorn binds the socket itself.
    pub backlog: u32,
    /// When ferricorn binds itself: one `SO_REUSEPORT` socket per worker
    /// slot instead of one shared socket (see the README's measurements).
    pub reuse_port: bool,
    /// Where `/metrics` is served when systemd passes no socket named
    /// `metrics`: `host:port` or `unix:/path`; empty (the default): nowhere.
    /// Never the public socket.
    pub metrics_bind: String,
    /// Worker processes to run; defaults to the CPUs this process may use.
    pub workers: usize,
    /// Runtime threads per worker; 1 runs a single-threaded event loop.
    pub threads: usize,
    /// Seconds a worker may stay silent (no heartbeat) before it is killed.
    pub timeout: f64,
    /// Seconds a draining worker gets to finish before it is killed.
    pub graceful_timeout: f64,
    /// Seconds a graceful stop keeps serving, with `/health` answering 503,
    /// before workers stop accepting: time for a load balancer's health
    /// checks to take the host out of rotation first. 0 (the default):
    /// drain at once.
    pub stop_delay: f64,
    /// Seconds a new worker gets to report ready.
    pub boot_timeout: f64,
    /// Seconds an idle keep-alive connection (or a slow request head) is kept.
    pub keepalive: f64,
    /// Requests after which a worker is replaced; 0 never.
    pub max_requests: u64,
    /// Extra random requests (0..jitter) per worker, so workers don't all
    /// recycle at once.
    pub max_requests_jitter: u64,
    /// Connections (WebSockets included) one worker serves at once.
    pub worker_connections: usize,
    /// Longest request line (method, target, version) in bytes; longer
    /// gets 414. 0: no limit of ferricorn's own (hyper's 64 KiB target limit).
    pub limit_request_line: usize,
    /// Most header fields in a request; more gets 431. 0: hyper's 100.
    pub limit_request_fields: usize,
    /// Longest header field line in bytes; longer gets 431. 0: no limit.
    pub limit_request_field_size: usize,
    /// Largest WebSocket message accepted, in bytes; larger closes with 1009.
    pub ws_max_size: usize,
    /// Seconds between server pings on an idle-looking WebSocket; 0 none.
    pub ws_ping_interval: f64,
    /// Seconds a WebSocket may leave a ping unanswered, or a send unfinished
    /// (a client that stopped reading), before it is closed.
    pub ws_ping_timeout: f64,
    /// Memory (bytes, or "512M") above which a worker is recycled
    /// gracefully; 0 never.
    pub memory_high: ByteSize,
    /// Hard memory limit per worker (bytes, or "1G"), enforced by the
    /// kernel in the worker's own cgroup; 0 none.
    pub memory_max: ByteSize,
    /// One log event per request.
    pub access_log: bool,
    /// How an access line reads: Gunicorn's atoms (`%(h)s` client,
    /// `%(r)s` request line, `%(s)s` status, `%(b)s` size, …) plus `%(w)s`
    /// the worker; the journal also gets each part as a field.
    pub access_log_format: String,
    /// Proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed
    /// (Gunicorn's key): addresses or networks, comma-separated, or `*`.
    /// A Unix-socket peer is always trusted.
    pub forwarded_allow_ips: crate::proxy::AllowIps,
    /// Every connection opens with HAProxy's PROXY protocol header (v1 or
    /// v2), naming the client; one without gets 400. Off by default.
    pub proxy_protocol: bool,
    /// Least severe level logged.
    pub log_level: LogLevel,
    /// Line format on stderr (the journal always gets structured fields).
    pub log_format: LogFormat,
    /// The operator's control socket (`ferricorn status`, `ferricorn
    /// reload`): a path, or empty for `$RUNTIME_DIRECTORY/control.sock`
    /// under systemd and none outside it.
    pub control_socket: String,
    /// Where pub/sub messages go beyond one worker: "embedded" (the
    /// supervisor's hub: every worker of this host) or a Redis URL
    /// (`redis://[:password@]host:port[/db]`, `redis+unix:///path`): every
    /// host using that server.
    pub pubsub_url: String,
    /// A file holding the Redis URL instead (a secret kept out of the
    /// config); a relative path is in `$CREDENTIALS_DIRECTORY`, as systemd's
    /// `LoadCredential=` provides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pubsub_url_file: Option<PathBuf>,
    /// The app's own settings (`[app]` in TOML, `FERRICORN_APP__NAME` in the
    /// environment), strings by name: `ctx.config.app["database_url"]`.
    /// Last, as TOML writes tables after plain keys.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub app: std::collections::BTreeMap<String, String>,
}

/// Where a worker's pub/sub reaches, resolved from `pubsub_url` or
/// `pubsub_url_file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PubSubTarget {
    Embedded,
    Redis(String),
}

/// `pubsub_url`'s default.
pub const EMBEDDED: &str = "embedded";

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1:8097".to_owned(),
            unix_socket_mode: "0660".to_owned(),
            backlog: DEFAULT_BACKLOG,
            reuse_port: false,
            metrics_bind: String::new(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            threads: 1,
            timeout: 30.0,
            graceful_timeout: 30.0,
            stop_delay: 0.0,
            boot_timeout: 30.0,
            keepalive: 5.0,
            max_requests: 0,
            max_requests_jitter: 0,
            worker_connections: 1000,
            limit_request_line: 4094,
            limit_request_fields: 100,
            limit_request_field_size: 8190,
            ws_max_size: DEFAULT_WS_MAX_SIZE,
            ws_ping_interval: 20.0,
            ws_ping_timeout: 20.0,
            memory_high: ByteSize(0),
            memory_max: ByteSize(0),
            access_log: true,
            access_log_format: crate::worker::DEFAULT_ACCESS_LOG_FORMAT.to_owned(),
            forwarded_allow_ips: crate::proxy::AllowIps::default(),
            proxy_protocol: false,
            log_level: LogLevel::Info,
            log_format: LogFormat::Text,
            control_socket: String::new(),
            pubsub_url: EMBEDDED.to_owned(),
            pubsub_url_file: None,
            app: std::collections::BTreeMap::new(),
        }
    }
}

impl Config {
    /// `bind` as a TCP address or Unix socket path.
    ///
    /// # Panics
    /// On a `bind` that is neither, which [`Loader::load`] refuses: only a
    /// `Config` built by hand can have one.
    pub fn bind_target(&self) -> crate::listen::Bind {
        self.bind.parse().expect("bind was validated at load")
    }

    /// `metrics_bind` as an address, if set.
    ///
    /// # Panics
    /// On a value [`Loader::load`] refuses.
    pub fn metrics_target(&self) -> Option<crate::listen::Bind> {
        (!self.metrics_bind.is_empty()).then(|| {
            self.metrics_bind
                .parse()
                .expect("metrics_bind was validated at load")
        })
    }

    /// `unix_socket_mode` as permission bits.
    ///
    /// # Panics
    /// On a mode [`Loader::load`] refuses.
    pub fn unix_mode(&self) -> u32 {
        parse_mode(&self.unix_socket_mode).expect("unix_socket_mode was validated at load")
    }

    /// The config as `check-config` prints it: TOML that loads back to the
    /// same config.
    pub fn to_toml(&self) -> String {
        self.to_toml_hiding(&[])
    }

    /// [`Config::to_toml`] with the values of `secret` keys (dotted, as
    /// `app.database_url`) shown as `"****"`: those the credential set.
    pub fn to_toml_hiding(&self, secret: &[String]) -> String {
        // A password in the URL stays out of what is printed.
        let shown = Config {
            pubsub_url: redact_url(&self.pubsub_url),
            ..self.clone()
        };
        // Validation keeps every integer within TOML's i64 and every float
        // finite, the only values TOML cannot write.
        let mut value = toml::Value::try_from(&shown).expect("a validated Config encodes as TOML");
        for key in secret {
            hide(&mut value, &key.split('.').collect::<Vec<_>>());
        }
        toml::to_string(&value).expect("a TOML value encodes")
    }

    /// Where pub/sub goes: reads `pubsub_url_file` if set.
    ///
    /// # Errors
    /// The key and what is wrong: an unreadable file, not a Redis URL, both
    /// keys set.
    pub fn pubsub(&self) -> Result<PubSubTarget, (&'static str, String)> {
        let url = match &self.pubsub_url_file {
            None => self.pubsub_url.clone(),
            Some(_) if self.pubsub_url != EMBEDDED => {
                return Err((
                    "pubsub_url_file",
                    "is set together with pubsub_url: give one of them".to_owned(),
                ))
            }
            Some(file) => {
                let path = match std::env::var_os("CREDENTIALS_DIRECTORY") {
                    Some(dir) if file.is_relative() => Path::new(&dir).join(file),
                    _ => file.clone(),
                };
                match std::fs::read_to_string(&path) {
                    Ok(text) => text.trim().to_owned(),
                    Err(e) => {
                        return Err((
                            "pubsub_url_file",
                            format!("cannot read {}: {e}", path.display()),
                        ))
                    }
                }
            }
        };
        if url == EMBEDDED {
            return Ok(PubSubTarget::Embedded);
        }
        let key = if self.pubsub_url_file.is_some() {
            "pubsub_url_file"
        } else {
            "pubsub_url"
        };
        let shown = redact_url(&url);
        if !(url.starts_with("redis://")
            || url.starts_with("redis+unix://")
            || url.starts_with("unix://"))
        {
            return Err((
                key,
                format!("{shown:?} is neither \"embedded\" nor a redis:// or redis+unix:// URL (rediss:// is not built in)"),
            ));
        }
        match redis::Client::open(url.as_str()) {
            Ok(_) => Ok(PubSubTarget::Redis(url)),
            // Not the URL itself: unparsed, its password cannot be found
            // to mask (a `/` in it, unencoded, ends the host part early).
            Err(e) => Err((
                key,
                format!("not a Redis URL ({e}); percent-encode special characters in the password"),
            )),
        }
    }

    /// The checks serde's types cannot express, as (key, problem) pairs.
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Err(problem) = self.bind.parse::<crate::listen::Bind>() {
            out.push(("bind", problem));
        }
        if let Err(problem) = parse_mode(&self.unix_socket_mode) {
            out.push(("unix_socket_mode", problem));
        }
        if !self.metrics_bind.is_empty() {
            match self.metrics_bind.parse::<crate::listen::Bind>() {
                Err(problem) => out.push(("metrics_bind", problem)),
                // Port 0 is a fresh port each time, never the same socket.
                Ok(metrics)
                    if self.bind.parse().ok().as_ref() == Some(&metrics)
                        && !matches!(metrics, crate::listen::Bind::Tcp(a) if a.port() == 0) =>
                {
                    out.push((
                    "metrics_bind",
                    "is the public socket (bind): /metrics needs one of its own, like 127.0.0.1:9097".into(),
                    ))
                }
                Ok(_) => {}
            }
        }
        let at_least_one = [
            ("workers", self.workers),
            ("threads", self.threads),
            ("worker_connections", self.worker_connections),
            ("backlog", self.backlog as usize),
            ("ws_max_size", self.ws_max_size),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                out.push((key, "must be at least 1".to_owned()));
            }
        }
        // (key, value, whether 0 means "off").
        let seconds = [
            ("timeout", self.timeout, false),
            ("graceful_timeout", self.graceful_timeout, false),
            ("stop_delay", self.stop_delay, true),
            ("boot_timeout", self.boot_timeout, false),
            ("keepalive", self.keepalive, false),
            ("ws_ping_timeout", self.ws_ping_timeout, false),
            ("ws_ping_interval", self.ws_ping_interval, true),
        ];
        for (key, value, zero_ok) in seconds {
            // A day at most keeps `Duration::from_secs_f64` far from
            // overflow; a millisecond at least keeps a timeout from
            // rounding to none (4e-259 s is a typo, not a deadline).
            let in_range = (MIN_SECONDS..=MAX_SECONDS).contains(&value);
            if !(in_range || (zero_ok && value == 0.0)) {
                let off = if zero_ok { " (or 0: off)" } else { "" };
                out.push((
                    key,
                    format!("{value} is not a number of seconds from {MIN_SECONDS} to {MAX_SECONDS}{off}"),
                ));
            }
        }
        if let Err(problem) = crate::worker::AccessFormat::parse(&self.access_log_format) {
            out.push(("access_log_format", problem));
        }
        if let Err((key, problem)) = self.pubsub() {
            out.push((key, problem));
        }
        // (key, value, ceiling). Gunicorn's ceiling for fields: hyper keeps
        // a slot per field on its stack. Worker and thread counts far past
        // any machine are typos. Everything else must at least fit TOML's
        // integers, or `check-config` could not print the config it loaded
        // (found by tests/integration/fuzz.rs).
        let toml_max = i64::MAX as u64;
        let ceilings = [
            (
                "limit_request_fields",
                self.limit_request_fields as u64,
                32_768,
            ),
            ("workers", self.workers as u64, MAX_WORKERS),
            ("threads", self.threads as u64, MAX_THREADS),
            ("max_requests", self.max_requests, toml_max),
            ("max_requests_jitter", self.max_requests_jitter, toml_max),
            (
                "worker_connections",
                self.worker_connections as u64,
                toml_max,
            ),
            (
                "limit_request_line",
                self.limit_request_line as u64,
                toml_max,
            ),
            (
                "limit_request_field_size",
                self.limit_request_field_size as u64,
                toml_max,
            ),
            ("ws_max_size", self.ws_max_size as u64, toml_max),
            ("memory_high", self.memory_high.0, toml_max),
            ("memory_max", self.memory_max.0, toml_max),
        ];
        for (key, value, ceiling) in ceilings {
            if value > ceiling {
                out.push((key, format!("{value} is more than {ceiling}")));
            }
        }
        out
    }
}

/// Replaces the value at `path` in `value` with `"****"` (a table is left
/// alone: its keys are listed one by one).
fn hide(value: &mut toml::Value, path: &[&str]) {
    match path {
        [] if !value.is_table() => *value = toml::Value::String("****".into()),
        [] => {}
        [first, rest @ ..] => {
            if let Some(next) = value.get_mut(*first) {
                hide(next, rest);
            }
        }
    }
}

/// Octal permission bits such as `0660`.
fn parse_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text.trim(), 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!("{text:?} is not octal permissions like 0660")),
    }
}

/// `url` with any password replaced by `****`, for logs and printouts:
/// the userinfo's (`redis://user:secret@host`, up to the last `@`, so a
/// password holding `/` or `@` is masked whole) and a `pass=` query
/// parameter's (`redis+unix:///sock?pass=secret`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let mut shown = match rest.rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:****{}", &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };
    if let Some(query) = shown.find('?') {
        let masked: Vec<String> = shown[query + 1..]
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some(("pass" | "password", _)) => {
                    format!("{}=****", pair.split('=').next().unwrap_or("pass"))
                }
                _ => pair.to_owned(),
            })
            .collect();
        shown = format!("{}?{}", &shown[..query], masked.join("&"));
    }
    shown
}

/// A size in bytes, written as a number or with a K, M, G or T suffix
/// (powers of 1024, as systemd's `MemoryMax=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(into = "u64")]
pub struct ByteSize(pub u64);

impl From<ByteSize> for u64 {
    fn from(b: ByteSize) -> u64 {
        b.0
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?} is not a size like 512M"))?;
        let shift = match unit.trim() {
            "" => 0,
            "K" | "k" => 10,
            "M" | "m" => 20,
            "G" | "g" => 30,
            "T" | "t" => 40,
            other => return Err(format!("unknown size unit {other:?} (use K, M, G or T)")),
        };
        n.checked_mul(1u64 << shift)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Config values given as command-line flags: the top layer.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<LogLevel>,
}

/// A config error, already worded for the operator: the key, the problem and
/// the layer the value came from.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

/// Everything needed to load the config again on reload: the layers' sources,
/// not their values, so a reload sees an edited file.
#[derive(Clone, Debug)]
pub struct Loader {
    /// `--config`, if given: then the file must exist.
    pub explicit_path: Option<PathBuf>,
    /// Flags from the command line.
    pub overrides: Overrides,
}

impl Loader {
    /// The file this loader reads.
    pub fn path(&self) -> &Path {
        self.explicit_path
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_CONFIG_PATH))
    }

    fn figment(&self) -> Result<Figment, ConfigError> {
        let path = self.path();
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match std::fs::metadata(path) {
            Ok(_) => figment = figment.merge(Toml::file_exact(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.explicit_path.is_none() => {}
            Err(e) => {
                return Err(ConfigError(format!(
                    "cannot read config file {}: {e}",
                    path.display()
                )))
            }
        }
        if let Some(credential) = credential_path() {
            figment = figment.merge(Toml::file_exact(credential));
        }
        Ok(figment
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .merge(Serialized::globals(&self.overrides)))
    }

    /// The keys the credential sets, dotted (`app.database_url`), for
    /// [`Config::to_toml_hiding`]. None if it cannot be read as TOML: then
    /// the load fails anyway, and nothing is printed.
    pub fn secret_keys(&self) -> Vec<String> {
        let Some(path) = credential_path() else {
            return Vec::new();
        };
        let Ok(table) = std::fs::read_to_string(path)
            .map_err(|_| ())
            .and_then(|t| t.parse::<toml::Table>().map_err(|_| ()))
        else {
            return Vec::new();
        };
        let mut keys = Vec::new();
        for (key, value) in table {
            match value {
                toml::Value::Table(inner) => {
                    keys.extend(inner.keys().map(|k| format!("{key}.{k}")));
                }
                _ => keys.push(key),
            }
        }
        keys
    }

    /// `control_socket` alone, from whichever layer sets it, even when
    /// other keys are invalid; empty if unset or unreadable.
    pub fn control_socket(&self) -> String {
        self.figment()
            .ok()
            .and_then(|f| f.extract_inner::<String>("control_socket").ok())
            .unwrap_or_default()
    }

    /// Reads every layer and validates the result.
    ///
    /// # Errors
    /// A missing explicit file, a key no layer may set, a value of the wrong
    /// type or out of range; the message names key and layer.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let figment = self.figment()?;
        let config: Config = figment.extract().map_err(|e| describe(&figment, e))?;
        let problems = config.problems();
        if problems.is_empty() {
            return Ok(config);
        }
        let lines: Vec<String> = problems
            .into_iter()
            .map(|(key, problem)| format!("{key}: {problem}{}", source_of(&figment, key)))
            .collect();
        Err(ConfigError(lines.join("; ")))
    }
}

/// `$CREDENTIALS_DIRECTORY/ferricorn.toml`, if systemd passed it.
fn credential_path() -> Option<PathBuf> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let path = Path::new(&dir).join(CREDENTIAL_NAME);
    path.is_file().then_some(path)
}

/// " (from <layer>)" for the layer that set `key`.
fn source_of(figment: &Figment, key: &str) -> String {
    match figment.find_metadata(key) {
        Some(md) => match &md.source {
            Some(figment::Source::File(path)) => format!(" (from {})", path.display()),
            _ if md.name.contains("environment") => {
                format!(
                    " (from environment variable {ENV_PREFIX}{})",
                    key.to_uppercase()
                )
            }
            // Serialized providers are named after their Rust type.
            _ if md.name.contains("Overrides") => " (from command-line flag)".to_owned(),
            _ if md.name.contains("Config") => " (built-in default)".to_owned(),
            _ => format!(" (from {})", md.name),
        },
        None => String::new(),
    }
}

/// Turns figment's errors into one message per problem. Figment reports an
/// unknown key at the parent (no path, so no source): find which layer
/// carries it so the operator knows where to look.
fn describe(figment: &Figment, errors: figment::Error) -> ConfigError {
    let lines: Vec<String> = errors
        .into_iter()
        .map(|e| {
            if let figment::error::Kind::UnknownField(field, _) = &e.kind {
                return format!(
                    "{field}: unknown key{}; see README for the keys",
                    source_of(figment, field)
                );
            }
            let key = e.path.join(".");
            if key.is_empty() {
                // Not about one key: a file that is not TOML at all. Name
                // the file the error came from.
                let file = match e.metadata.as_ref().and_then(|md| md.source.as_ref()) {
                    Some(figment::Source::File(path)) => path.display().to_string(),
                    _ => "config".to_owned(),
                };
                return format!("{file}: {}", e.kind);
            }
            let mut problem = e.kind.to_string();
            if let figment::error::Kind::InvalidType(_, _)
            | figment::error::Kind::InvalidValue(_, _) = &e.kind
            {
                problem = format!("bad value: {problem}");
            }
            // A secret's value is never echoed, even when it is wrong.
            let from_credential = matches!(
                e.metadata.as_ref().and_then(|md| md.source.as_ref()),
                Some(figment::Source::File(path)) if Some(path) == credential_path().as_ref()
            );
            if from_credential {
                problem = "bad value (not shown: it comes from the credential)".to_owned();
            }
            format!("{key}: {problem}{}", source_of(figment, &key))
        })
        .collect();
    ConfigError(lines.join("; "))
}

#[cfg(test)]
mod tests;
