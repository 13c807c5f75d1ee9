//! Runs the real `ferricorn` binary the way systemd does: a listening socket
//! at fd 3 with `LISTEN_FDS=1` and `LISTEN_PID` of the server itself, and a
//! `NOTIFY_SOCKET` datagram socket the test reads. Everything is polled with
//! deadlines; nothing sleeps for synchronisation.

mod daemon;
mod haproxy;
mod nginx;
mod ws;
pub use daemon::*;
pub use haproxy::*;
pub use nginx::*;
pub use ws::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ferricorn");

/// Generous bound for anything the tests wait on: CI machines are shared.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `f` every 20 ms until it returns `Some`, or `limit` passes: the
/// one polling loop of the tests.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`poll`], or a panic naming `what` after `limit`.
pub fn eventually<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll(limit, f).unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// How the server gets its socket.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Socket {
    /// The test binds and passes it at fd 3, as systemd's socket unit does.
    Activated,
    /// `serve` binds `bind` itself.
    SelfBound,
    /// The test binds a Unix socket and passes it at fd 3, as a socket
    /// unit with `ListenStream=/path` does ([`Server::unix_path`]).
    ActivatedUnix,
}

pub struct Options {
    pub workers: usize,
    pub socket: Socket,
    /// Extra TOML lines for the config file.
    pub config: String,
    pub env: Vec<(String, String)>,
    /// Run this executable instead of the built one (e.g. a copy the test
    /// later replaces).
    pub exe: Option<PathBuf>,
    /// Extra environment for the shell wrapper (`WATCHDOG_USEC`...), with
    /// `$$` expanding to the server's pid.
    pub wrapper_env: String,
    /// RLIMIT_NOFILE for the server (and so its workers).
    pub nofile: Option<u64>,
    /// Connect a client to the (activated) socket before the server starts,
    /// as one waiting in systemd's backlog: [`Server::queued_client`].
    pub queued_client: bool,
    /// Pass a second socket, named `metrics`, at fd 4 (as
    /// ferricorn-metrics.socket does): [`Server::metrics_addr`].
    pub metrics_socket: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 2,
            socket: Socket::Activated,
            config: String::new(),
            env: Vec::new(),
            exe: None,
            wrapper_env: String::new(),
            nofile: None,
            queued_client: false,
            metrics_socket: false,
        }
    }
}

pub struct Server {
    pub child: Child,
    /// The TCP address (unused with [`Socket::ActivatedUnix`]).
    pub addr: SocketAddr,
    /// The Unix socket's path, with [`Socket::ActivatedUnix`].
    pub unix_path: Option<PathBuf>,
    /// The client connected before the server started, if asked for.
    pub queued_client: Option<TcpStream>,
    /// The metrics socket passed at fd 4, if asked for.
    pub metrics_addr: Option<SocketAddr>,
    /// Holds the config and notify socket; removed when the server is dropped.
    _dir: tempfile::TempDir,
    pub config_path: PathBuf,
    notify_path: PathBuf,
    /// Every datagram received on NOTIFY_SOCKET so far, read by a thread as
    /// promptly as systemd would (the socket queue holds only 10).
    received: Arc<Mutex<Vec<String>>>,
    notes: Vec<String>,
    log: Arc<Mutex<String>>,
    /// Held by a test to stop reading the server's stderr (see
    /// [`Server::hold_log`]).
    log_gate: Arc<Mutex<()>>,
    exited: Option<ExitStatus>,
}

/// In the child before exec: put `fd` at 3 without close-on-exec.
pub fn move_to_fd3(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: dup2 and fcntl are async-signal-safe; integers only.
    unsafe {
        if fd == 3 {
            let flags = libc::fcntl(3, libc::F_GETFD);
            if libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) == -1 {
                return Err(std::io::Error::last_os_error());
            }
        } else if libc::dup2(fd, 3) == -1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Server {
    pub fn start(opts: Options) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("ferricorn.toml");
        let mut config = format!("workers = {}\n{}\n", opts.workers, opts.config);
        let mut listener = Some(TcpListener::bind("127.0.0.1:0").expect("bind"));
        let mut addr = listener
            .as_ref()
            .expect("bound")
            .local_addr()
            .expect("addr");
        let self_bound = opts.socket == Socket::SelfBound;
        // A test that names its own `bind` (a Unix socket) finds it itself.
        let own_bind = opts.config.lines().any(|l| l.starts_with("bind ="));
        if self_bound {
            listener = None;
        }
        if self_bound && !own_bind {
            // Port 0: the server binds a free port itself and logs it (no
            // bind-release-reuse race with other tests).
            addr.set_port(0);
            config.push_str(&format!("bind = \"{addr}\"\n"));
        }
        std::fs::write(&config_path, config).expect("write config");
        let unix_path = dir.path().join("ferricorn.sock");
        let unix_listener = match opts.socket {
            Socket::ActivatedUnix => {
                listener = None;
                Some(std::os::unix::net::UnixListener::bind(&unix_path).expect("bind unix"))
            }
            _ => None,
        };
        let queued_client = match (&listener, opts.queued_client) {
            (Some(_), true) => Some(TcpStream::connect(addr).expect("connect before start")),
            _ => None,
        };
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        let received: Arc<Mutex<Vec<String>>> = Arc::default();
        let inbox = received.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            // Ends when the test drops the server and its temp dir... or at
            // process exit; a blocked recv holds nothing else.
            while let Ok(n) = notify.recv(&mut buf) {
                let note = String::from_utf8_lossy(&buf[..n]).into_owned();
                inbox.lock().expect("notes lock").push(note);
            }
        });

        let metrics_listener = opts
            .metrics_socket
            .then(|| TcpListener::bind("127.0.0.1:0").expect("bind metrics"));
        let metrics_addr = metrics_listener
            .as_ref()
            .map(|l| l.local_addr().expect("metrics addr"));
        let exe = opts.exe.clone().unwrap_or_else(|| PathBuf::from(BIN));
        let mut cmd = Command::new("sh");
        let listen_env = match (opts.socket, opts.metrics_socket) {
            (Socket::SelfBound, _) => "",
            (_, false) => "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http ",
            (_, true) => "LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=http:metrics ",
        };
        // LISTEN_PID must be the server's own pid: the shell's, which exec keeps.
        let script = format!(
            "{listen_env}{} exec \"$0\" --config \"$1\" serve",
            opts.wrapper_env
        );
        cmd.arg("-c")
            .arg(script)
            .arg(&exe)
            .arg(&config_path)
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let listener_fd = listener
            .as_ref()
            .map(AsRawFd::as_raw_fd)
            .or(unix_listener.as_ref().map(AsRawFd::as_raw_fd));
        let nofile = opts.nofile;
        let metrics_fd = metrics_listener.as_ref().map(AsRawFd::as_raw_fd);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Out of the way first: the metrics socket may sit at fd 3.
                let metrics_fd = match metrics_fd {
                    Some(fd) => match libc::fcntl(fd, libc::F_DUPFD, 10) {
                        -1 => return Err(std::io::Error::last_os_error()),
                        high => Some(high),
                    },
                    None => None,
                };
                if let Some(fd) = listener_fd {
                    move_to_fd3(fd)?;
                }
                // dup2 leaves the copy without close-on-exec.
                if let Some(fd) = metrics_fd {
                    if libc::dup2(fd, 4) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(n) = nofile {
                    let limit = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn ferricorn");
        drop(listener);
        drop(unix_listener);
        drop(metrics_listener);
        let log = Arc::new(Mutex::new(String::new()));
        let log_gate: Arc<Mutex<()>> = Arc::default();
        let stderr = child.stderr.take().expect("stderr piped");
        let sink = log.clone();
        let gate = log_gate.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Waits here while a test holds the gate: the pipe fills and
                // the server's writes to stderr block.
                drop(gate.lock());
                if std::env::var_os("ECHO_SERVER_LOG").is_some() {
                    eprintln!("{line}");
                }
                let mut log = sink.lock().expect("log lock");
                log.push_str(&line);
                log.push('\n');
            }
        });
        if self_bound && !own_bind {
            addr = eventually("the bound address in the start line", PATIENCE, || {
                let log = log.lock().expect("log lock");
                let rest = log.split("listeners=[\"").nth(1)?;
                let end = rest.find(['"', ' '])?;
                rest[..end].parse().ok()
            });
        }
        Server {
            child,
            addr,
            unix_path: (opts.socket == Socket::ActivatedUnix).then_some(unix_path),
            queued_client,
            metrics_addr,
            _dir: dir,
            config_path,
            notify_path,
            received,
            notes: Vec::new(),
            log,
            log_gate,
            exited: None,
        }
    }

    /// [`Server::start`], then [`Server::wait_ready`].
    pub fn ready(opts: Options) -> Server {
        let mut server = Server::start(opts);
        server.wait_ready();
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Stops reading the server's stderr until the guard is dropped: a log
    /// sink that has stopped taking lines, as a stalled journal is.
    pub fn hold_log(&self) -> std::sync::MutexGuard<'_, ()> {
        self.log_gate.lock().expect("log gate")
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) {
        if poll(PATIENCE, || self.log().contains(needle).then_some(())).is_none() {
            panic!(
                "no log line {needle:?} after {PATIENCE:?}; log:\n{}",
                self.log()
            );
        }
    }

    /// Takes whatever datagrams arrived.
    fn pump_notify(&mut self) {
        self.notes = self.received.lock().expect("notes lock").clone();
    }

    /// All sd_notify datagrams so far.
    pub fn notes(&mut self) -> Vec<String> {
        self.pump_notify();
        self.notes.clone()
    }

    /// Waits for a datagram with a line equal to `line` (e.g. "READY=1")
    /// after the first `skip` datagrams; returns its index.
    pub fn wait_note_after(&mut self, skip: usize, line: &str) -> usize {
        let find = |notes: &[String]| {
            let mut later = notes.iter().enumerate().skip(skip);
            later
                .find(|(_, n)| n.lines().any(|l| l == line))
                .map(|(i, _)| i)
        };
        let mut exited = None;
        let found = poll(PATIENCE, || {
            self.pump_notify();
            if let Some(i) = find(&self.notes) {
                return Some(Some(i));
            }
            exited = self.child.try_wait().ok().flatten();
            // Exited: one last look once the reader took the last datagrams.
            exited.is_some().then(|| {
                std::thread::sleep(Duration::from_millis(100));
                self.pump_notify();
                find(&self.notes)
            })
        });
        match (found, exited) {
            (Some(Some(i)), _) => i,
            (_, Some(status)) => panic!(
                "server exited ({status}) before {line:?}\nlog:\n{}",
                self.log()
            ),
            _ => panic!(
                "no {line:?} on NOTIFY_SOCKET; got {:?}\nlog:\n{}",
                self.notes,
                self.log()
            ),
        }
    }

    /// Every datagram the server sent, once it has exited: a marker sent
    /// after its exit comes back through the reader last, so everything
    /// before it has been taken.
    pub fn final_notes(&mut self) -> Vec<String> {
        assert!(
            self.child.try_wait().ok().flatten().is_some(),
            "final_notes before the server exited"
        );
        let marker = "HARNESS_END=1";
        let sender = UnixDatagram::unbound().expect("datagram socket");
        sender
            .send_to(marker.as_bytes(), &self.notify_path)
            .expect("send the end marker");
        eventually("the reader to reach the end marker", PATIENCE, || {
            let notes = self.received.lock().expect("notes lock").clone();
            notes
                .iter()
                .position(|n| n == marker)
                .map(|end| notes[..end].to_vec())
        })
    }

    pub fn wait_ready(&mut self) -> usize {
        self.wait_note_after(0, "READY=1")
    }

    /// Latest `STATUS=` text.
    pub fn status(&mut self) -> Option<String> {
        self.notes()
            .iter()
            .rev()
            .flat_map(|n| n.lines())
            .find_map(|l| l.strip_prefix("STATUS=").map(str::to_owned))
    }

    pub fn signal(&self, sig: libc::c_int) {
        send_signal(self.pid(), sig);
    }

    /// Current child processes of the supervisor (its workers).
    pub fn worker_pids(&self) -> Vec<u32> {
        children_of(self.pid())
    }

    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        let status = eventually("server exit", limit, || {
            self.child.try_wait().ok().flatten()
        });
        self.exited = Some(status);
        status
    }

    pub fn get(&self, path: &str) -> std::io::Result<Response> {
        get(self.addr, path)
    }

    /// `/health` as JSON.
    pub fn health(&self) -> serde_json::Value {
        let r = self.get("/health").expect("GET /health");
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).expect("health JSON")
    }

    /// Polls `/health` over new connections until `n` distinct worker pids
    /// have answered; returns them.
    pub fn distinct_health_pids(&self, n: usize) -> Vec<u64> {
        self.health_of_workers(n).into_keys().collect()
    }

    /// Polls `/health` over new connections until `n` distinct workers have
    /// answered; each one's latest answer, by pid.
    pub fn health_of_workers(
        &self,
        n: usize,
    ) -> std::collections::BTreeMap<u64, serde_json::Value> {
        let mut seen = std::collections::BTreeMap::new();
        eventually(&format!("{n} distinct workers answering"), PATIENCE, || {
            if let Ok(r) = self.get("/health") {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&r.body) {
                    if let Some(pid) = v["pid"].as_u64() {
                        seen.insert(pid, v);
                    }
                }
            }
            (seen.len() >= n).then(|| seen.clone())
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // Workers die with the supervisor (PDEATHSIG).
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn send_signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a positive pid the test started.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// Children of `pid`, from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The fields of /proc/<pid>/stat after the command name (state, ppid,
/// …: stat(5)'s third field on), or None if the process is gone.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Whether `pid` exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|state| state != "Z"))
}

pub fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

pub struct Response {
    pub status: u16,
    pub body: String,
}

/// What a response head says: the one HTTP parser of the tests.
pub struct Head {
    pub status: u16,
    pub content_length: Option<usize>,
    pub close: bool,
}

/// Parses a response head (status line and fields, without the blank line).
pub fn parse_head(head: &str) -> std::io::Result<Head> {
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let (mut content_length, mut close) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(Head {
        status,
        content_length,
        close,
    })
}

/// The responses in `raw`, in order: each head, and its body by
/// Content-Length (to the end when there is none).
pub fn parse_responses(raw: &[u8]) -> std::io::Result<Vec<Response>> {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let text = String::from_utf8_lossy(rest);
        let end = text
            .find("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other(format!("no header end in {text:?}")))?;
        let head = parse_head(&text[..end])?;
        let body_start = end + 4;
        let body_end = head
            .content_length
            .map_or(rest.len(), |n| (body_start + n).min(rest.len()));
        let body =
            String::from_utf8_lossy(&rest[body_start.min(rest.len())..body_end]).into_owned();
        out.push(Response {
            status: head.status,
            body,
        });
        rest = &rest[body_end..];
    }
    Ok(out)
}

/// The first response in `raw`.
pub fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    parse_responses(raw)?
        .into_iter()
        .next()
        .ok_or_else(|| std::io::Error::other("no response"))
}

/// `GET path` with `Connection: close` on a connection just opened, and
/// its response.
fn get_on(mut s: impl Read + Write, path: &str) -> std::io::Result<Response> {
    // One write: `write!` sends each piece on its own, and Nagle plus the
    // server's delayed ACK would hold the last piece back for 40 ms.
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// One request on a new connection to a Unix socket (`Connection: close`).
pub fn get_unix(socket: &Path, path: &str) -> std::io::Result<Response> {
    let s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    get_on(s, path)
}

/// One request on a new connection (`Connection: close`).
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    get_on(s, path)
}

/// A keep-alive HTTP/1.1 client: requests on one connection until the
/// server closes it, then reconnects — as a load balancer's pool does.
pub struct KeepAlive {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    /// Requests resent because a pooled connection had been closed idle.
    pub stale_retries: u64,
}

impl KeepAlive {
    pub fn new(addr: SocketAddr) -> KeepAlive {
        KeepAlive {
            addr,
            conn: None,
            stale_retries: 0,
        }
    }

    /// Sends `GET path`; `Ok` only for a complete response. A connection
    /// the server closed while idle is reopened once (what every HTTP client
    /// does for an idempotent request on a stale pooled connection).
    pub fn get(&mut self, path: &str) -> std::io::Result<Response> {
        let reused = self.conn.is_some();
        match self.try_get(path) {
            Ok(r) => Ok(r),
            Err(e)
                if reused
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::UnexpectedEof
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::BrokenPipe
                    ) =>
            {
                self.stale_retries += 1;
                self.conn = None;
                self.try_get(path)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    fn try_get(&mut self, path: &str) -> std::io::Result<Response> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().expect("connected above");
        // One write (see `get`).
        conn.get_mut()
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())?;
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if conn.read_line(&mut line)? == 0 {
                self.conn = None;
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let head = parse_head(&head)?;
        let length = head
            .content_length
            .ok_or_else(|| std::io::Error::other("no content-length"))?;
        let mut body = vec![0; length];
        conn.read_exact(&mut body)?;
        if head.close {
            self.conn = None;
        }
        Ok(Response {
            status: head.status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// A copy of the built binary in `dir`, for tests that replace it.
pub fn copy_binary(dir: &Path) -> PathBuf {
    let path = dir.join("ferricorn");
    std::fs::copy(BIN, &path).expect("copy binary");
    path
}

/// The `faults` example: ferricorn with routes that panic, abort and leak.
pub fn faults_binary() -> PathBuf {
    let path = Path::new(BIN)
        .parent()
        .expect("target dir")
        .join("examples/faults");
    assert!(
        path.exists(),
        "{} is missing: plain `cargo test` builds the examples",
        path.display()
    );
    path
}

/// Writes `request` on a new connection and reads until the server closes
/// it (or `limit` passes): (bytes read, whether the server closed).
pub fn exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(limit)).expect("timeout");
    // The server may answer and close before all of a long request is
    // written; what it read is what counts.
    let _ = stream.write_all(request);
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A reset after the response is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

/// The status codes of the responses in `raw`, in order (none if `raw`
/// is not a sequence of responses).
pub fn statuses(raw: &[u8]) -> Vec<u16> {
    parse_responses(raw)
        .map(|rs| rs.iter().map(|r| r.status).collect())
        .unwrap_or_default()
}

/// CPU seconds (user + system) a process has used, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> f64 {
    let fields = stat_fields(pid).expect("stat");
    // utime and stime: fields 14 and 15 of stat(5), 11 and 12 after the name.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Resident set of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
