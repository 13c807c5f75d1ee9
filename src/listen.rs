//! Listening sockets: taken from systemd (`LISTEN_FDS`, `LISTEN_PID`,
//! `LISTEN_FDNAMES`, sd_listen_fds(3)) or, without them, bound from `bind`:
//! TCP, or a Unix-domain stream socket (`ListenStream=/run/…/x.sock`,
//! `bind = "unix:/path"`), which is how nginx reaches an upstream on the
//! same host without a port. A socket systemd names `metrics` (or
//! `metrics_bind`) is kept apart: the supervisor serves `/metrics` there,
//! and workers never receive it.
//!
//! Called before any thread exists, because listenfd removes the variables
//! from the environment and `remove_var` is only sound single-threaded.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, Socket, Type};

use crate::sys;

/// First descriptor systemd passes (sd_listen_fds(3): `SD_LISTEN_FDS_START`).
const SD_LISTEN_FDS_START: RawFd = 3;

/// The `FileDescriptorName=` of the socket `/metrics` is served on.
pub const METRICS_NAME: &str = "metrics";

/// One listening socket (TCP or Unix) with the name systemd gave it
/// (`FileDescriptorName=`), or its address when ferricorn bound it.
#[derive(Debug)]
pub struct Listener {
    pub name: String,
    pub socket: Socket,
}

/// What `bind` names: a TCP address, or `unix:/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bind {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::str::FromStr for Bind {
    type Err = String;
    fn from_str(s: &str) -> Result<Bind, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            let path = Path::new(path);
            if !path.is_absolute() {
                return Err(format!("{s:?}: a Unix socket's path must be absolute, like unix:/run/ferricorn/ferricorn.sock"));
            }
            // sun_path holds 108 bytes with its terminating NUL.
            if path.as_os_str().len() > 107 {
                return Err(format!("{s:?}: a Unix socket's path is at most 107 bytes"));
            }
            return Ok(Bind::Unix(path.to_owned()));
        }
        s.parse::<SocketAddr>().map(Bind::Tcp).map_err(|_| {
            format!("{s:?} is not an address like 127.0.0.1:8097 nor unix:/path/to.sock")
        })
    }
}

impl std::fmt::Display for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bind::Tcp(addr) => addr.fmt(f),
            Bind::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("LISTEN_FDS={0:?} is not a number of descriptors")]
    BadCount(String),
    #[error("LISTEN_PID={0:?} is not a process id")]
    BadPid(String),
    #[error("LISTEN_FDS=0: systemd passed no socket")]
    NoSockets,
    #[error("systemd passed only the metrics socket: the service's own socket unit (FileDescriptorName=http) is not running")]
    OnlyMetrics,
    #[error("passed descriptor {fd} ({name}): {problem}")]
    BadSocket {
        fd: RawFd,
        name: String,
        problem: String,
    },
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: Bind, source: std::io::Error },
    #[error("cannot bind {0}: another process is listening on it")]
    InUse(Bind),
    #[error("cannot move a listener above descriptor {floor}: {0} (is the open-files limit, LimitNOFILE=, that low?)", floor = sys::INHERIT_FLOOR)]
    Lift(std::io::Error),
    #[error("cannot read the bound socket's address: {0}")]
    LocalAddr(std::io::Error),
}

/// Who made the listening sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Passed by systemd: one queue that outlives this process.
    Systemd,
    /// Bound here from `bind`, with `SO_REUSEPORT` if asked for.
    Bound { reuse_port: bool },
}

/// The sockets to serve on: systemd's if it passed any to this process,
/// else a new socket bound to `bind` with `backlog`.
///
/// # Errors
/// Malformed `LISTEN_*` values, a passed descriptor that is not a listening
/// TCP stream socket, or a failed bind.
fn listeners(
    bind: &Bind,
    backlog: u32,
    reuse_port: bool,
    mode: u32,
) -> Result<(Vec<Listener>, Vec<Listener>, Origin), ListenError> {
    if let Some(passed) = from_systemd()? {
        let (metrics, http): (Vec<_>, Vec<_>) = passed
            .into_iter()
            .partition(|(name, _)| name == METRICS_NAME);
        if http.is_empty() {
            return Err(ListenError::OnlyMetrics);
        }
        let strip = |v: Vec<(String, Listener)>| v.into_iter().map(|(_, l)| l).collect();
        return Ok((strip(http), strip(metrics), Origin::Systemd));
    }
    let (http, origin) = bound(bind, backlog, reuse_port, mode)?;
    Ok((http, Vec::new(), origin))
}

/// A socket bound to `bind`, and how.
fn bound(
    bind: &Bind,
    backlog: u32,
    reuse_port: bool,
    mode: u32,
) -> Result<(Vec<Listener>, Origin), ListenError> {
    match bind {
        Bind::Tcp(addr) => Ok((
            vec![bind_one(*addr, backlog, reuse_port)?],
            Origin::Bound { reuse_port },
        )),
        // One socket file, one queue: SO_REUSEPORT has no meaning here.
        Bind::Unix(path) => Ok((
            vec![bind_unix(path, backlog, mode)?],
            Origin::Bound { reuse_port: false },
        )),
    }
}

/// What the supervisor listens on.
#[derive(Debug)]
pub struct Opened {
    /// The service's sockets, handed to workers.
    pub sockets: Sockets,
    /// Where `/metrics` is served (the supervisor's alone); empty: nowhere.
    pub metrics: Vec<Listener>,
}

/// The supervisor's sockets: [`listeners`], each lifted above the
/// descriptors workers receive, arranged by [`Sockets::new`]; and the
/// metrics sockets: systemd's, or `metrics` bound when it passed none.
///
/// # Errors
/// As [`listeners`], or a descriptor table too small to lift into.
pub fn open(
    bind: &Bind,
    backlog: u32,
    reuse_port: bool,
    mode: u32,
    metrics: Option<&Bind>,
) -> Result<Opened, ListenError> {
    let (listeners, mut metrics_listeners, origin) = listeners(bind, backlog, reuse_port, mode)?;
    if let (true, Some(metrics)) = (metrics_listeners.is_empty(), metrics) {
        metrics_listeners = bound(metrics, backlog, false, mode)?.0;
    }
    let lift_all = |v: Vec<Listener>| v.into_iter().map(lift).collect::<Result<Vec<_>, _>>();
    Ok(Opened {
        sockets: Sockets::new(lift_all(listeners)?, origin, backlog)?,
        metrics: lift_all(metrics_listeners)?,
    })
}

/// Whether systemd passed this process listening sockets (`LISTEN_FDS`
/// with our `LISTEN_PID`) and a client is already waiting on one of them.
/// Reads the variables without taking the sockets or changing anything.
pub fn systemd_client_waiting() -> bool {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.trim().parse::<RawFd>().ok())
        .unwrap_or(0);
    ours && (0..count).any(|i| {
        let fd = SD_LISTEN_FDS_START + i;
        sys::is_listening(fd) && sys::has_pending_connection(fd)
    })
}

/// sd_listen_fds(3) with the checks listenfd leaves out: it silently ignores
/// a non-numeric `LISTEN_FDS`, which would make ferricorn bind a second
/// socket of its own behind systemd's back.
fn from_systemd() -> Result<Option<Vec<(String, Listener)>>, ListenError> {
    let Ok(count) = std::env::var("LISTEN_FDS") else {
        return Ok(None);
    };
    let count: usize = count
        .trim()
        .parse()
        .map_err(|_| ListenError::BadCount(count.clone()))?;
    if let Ok(pid) = std::env::var("LISTEN_PID") {
        if !pid.is_empty() && pid.trim().parse::<u32>().is_err() {
            return Err(ListenError::BadPid(pid));
        }
    }
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|v| v.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut fds = listenfd::ListenFd::from_env();
    // listenfd has checked LISTEN_PID and found the sockets meant for
    // another process: behave as if none were passed, as sd_listen_fds does.
    if fds.len() == 0 && count > 0 {
        return Ok(None);
    }
    std::env::remove_var("LISTEN_FDNAMES");
    if count == 0 {
        return Err(ListenError::NoSockets);
    }
    let mut out = Vec::with_capacity(count);
    for idx in 0..count {
        let fd = SD_LISTEN_FDS_START + idx as RawFd;
        let name = names
            .get(idx)
            .cloned()
            .unwrap_or_else(|| "unknown".to_owned());
        let bad = |problem: String| ListenError::BadSocket {
            fd,
            name: name.clone(),
            problem,
        };
        if !sys::fd_is_open(fd) {
            return Err(bad("not an open descriptor".into()));
        }
        let raw = fds
            .take_raw_fd(idx)
            .map_err(|e| bad(e.to_string()))?
            .ok_or_else(|| bad("already taken".into()))?;
        // SAFETY: systemd passed `raw` to this process (checked open above)
        // and listenfd has handed its number over to us alone.
        let socket = unsafe { Socket::from_raw_fd(raw) };
        let kind = socket
            .r#type()
            .map_err(|e| bad(format!("not a socket ({e})")))?;
        let family = socket.domain().ok();
        if kind != Type::STREAM
            || !matches!(family, Some(Domain::IPV4 | Domain::IPV6 | Domain::UNIX))
        {
            return Err(bad(
                "expected a TCP or Unix stream socket (ListenStream=)".into()
            ));
        }
        if !sys::is_listening(socket.as_raw_fd()) {
            return Err(bad(
                "a stream socket that is not listening (ListenStream= gives a listening one)"
                    .into(),
            ));
        }
        // The name and where it listens, for the start-up line.
        let shown = match socket.local_addr().ok() {
            Some(addr) => match (addr.as_socket(), addr.as_pathname()) {
                (Some(tcp), _) => format!("{name} ({tcp})"),
                (None, Some(path)) => format!("{name} (unix:{})", path.display()),
                _ => name.clone(),
            },
            None => name.clone(),
        };
        out.push((
            name,
            Listener {
                name: shown,
                socket,
            },
        ));
    }
    Ok(Some(out))
}

/// Binds and listens on `addr`. With `reuse_port`, further sockets may bind
/// the same address and the kernel spreads new connections over them by a
/// hash of the connection's addresses.
///
/// # Errors
/// The socket calls failing, usually the address being in use.
fn bind_one(addr: SocketAddr, backlog: u32, reuse_port: bool) -> Result<Listener, ListenError> {
    let err = |source| ListenError::Bind {
        addr: Bind::Tcp(addr),
        source,
    };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    // A restart must not wait out TIME_WAIT on the port.
    socket.set_reuse_address(true).map_err(err)?;
    if reuse_port {
        socket.set_reuse_port(true).map_err(err)?;
    }
    socket.bind(&addr.into()).map_err(err)?;
    socket
        .listen(i32::try_from(backlog).unwrap_or(i32::MAX))
        .map_err(err)?;
    // The bound address, so `bind = "127.0.0.1:0"` logs the port it got.
    let name = match socket.local_addr().map_err(err)?.as_socket() {
        Some(bound) => bound.to_string(),
        None => addr.to_string(),
    };
    Ok(Listener { name, socket })
}

/// Binds and listens on a Unix socket at `path`, its file given `mode`
/// (`unix_socket_mode`; the directory must exist). A stale socket file is
/// replaced ([`remove_stale_socket`]); a live one fails the start, as
/// binding a TCP port in use does.
///
/// # Errors
/// The path is taken by a live listener or by something that is not a
/// socket, or a socket call failed.
fn bind_unix(path: &Path, backlog: u32, mode: u32) -> Result<Listener, ListenError> {
    let addr = Bind::Unix(path.to_owned());
    let err = |source| ListenError::Bind {
        addr: addr.clone(),
        source,
    };
    match remove_stale_socket(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(ListenError::InUse(addr))
        }
        other => other.map_err(err)?,
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(err)?;
    socket
        .bind(&socket2::SockAddr::unix(path).map_err(err)?)
        .map_err(err)?;
    // Before listen: no connection is accepted under the umask's mode.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    socket
        .listen(i32::try_from(backlog).unwrap_or(i32::MAX))
        .map_err(err)?;
    Ok(Listener {
        name: addr.to_string(),
        socket,
    })
}

/// Makes way for a Unix socket at `path`: removes a socket file nobody
/// listens on (left by a process that is gone: a crash or `kill -9`
/// removes nothing), and leaves a live one alone.
///
/// # Errors
/// `AddrInUse` when a process listens there; `AlreadyExists` when the path
/// is not a socket; what removing it says.
pub fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another process is listening on it",
                ));
            }
            std::fs::remove_file(path)
        }
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a file that is not a socket is in the way",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Moves a listener above the fixed descriptor range workers receive, so
/// that the `dup2` calls in a child's `pre_exec` never overwrite a source
/// they still need.
///
/// # Errors
/// `fcntl(F_DUPFD_CLOEXEC)` failing (descriptor table full).
fn lift(listener: Listener) -> Result<Listener, ListenError> {
    let original = OwnedFd::from(listener.socket);
    let lifted =
        sys::dup_above(original.as_raw_fd(), sys::INHERIT_FLOOR).map_err(ListenError::Lift)?;
    Ok(Listener {
        name: listener.name,
        socket: Socket::from(lifted),
    })
}

/// The sockets the supervisor hands to workers, held for the life of the
/// supervisor so that a queue outlives any one worker.
#[derive(Debug)]
pub enum Sockets {
    /// Every worker accepts on the same sockets: one queue, taken by
    /// whichever worker is free (systemd's sockets are always shared).
    Shared(Vec<Listener>),
    /// Each worker slot has its own `SO_REUSEPORT` socket on `addr` and the
    /// kernel picks the slot by a hash of each new connection. A slot's
    /// successor (crash, recycle, reload) inherits its socket and queue; a
    /// slot removed by scaling down closes its socket, and connections still
    /// queued there are reset unless `net.ipv4.tcp_migrate_req=1`.
    PerSlot {
        addr: SocketAddr,
        backlog: u32,
        slots: std::collections::BTreeMap<usize, Listener>,
    },
}

impl Sockets {
    /// Arranges what [`listeners`] returned: per-slot when ferricorn bound
    /// the socket itself with `reuse_port`, the first socket being slot 1's.
    ///
    /// # Errors
    /// The bound socket's address cannot be read.
    fn new(
        mut listeners: Vec<Listener>,
        origin: Origin,
        backlog: u32,
    ) -> Result<Sockets, ListenError> {
        if origin != (Origin::Bound { reuse_port: true }) || listeners.len() != 1 {
            return Ok(Sockets::Shared(listeners));
        }
        let first = listeners.remove(0);
        // The address actually bound, so `bind = "…:0"` gives every slot the
        // same port.
        let addr = first
            .socket
            .local_addr()
            .map_err(ListenError::LocalAddr)?
            .as_socket()
            .ok_or_else(|| ListenError::LocalAddr(std::io::Error::other("not a TCP socket")))?;
        Ok(Sockets::PerSlot {
            addr,
            backlog,
            slots: [(1, first)].into(),
        })
    }

    /// Listener descriptors for a worker in `slot`, binding the slot's
    /// socket first if it has none yet (a first start or a scale-up).
    ///
    /// # Errors
    /// Binding or lifting a new per-slot socket failed.
    pub fn for_slot(&mut self, slot: usize) -> Result<Vec<RawFd>, ListenError> {
        match self {
            Sockets::Shared(listeners) => {
                Ok(listeners.iter().map(|l| l.socket.as_raw_fd()).collect())
            }
            Sockets::PerSlot {
                addr,
                backlog,
                slots,
            } => {
                if let std::collections::btree_map::Entry::Vacant(e) = slots.entry(slot) {
                    e.insert(lift(bind_one(*addr, *backlog, true)?)?);
                }
                Ok(vec![slots[&slot].socket.as_raw_fd()])
            }
        }
    }

    /// Closes the per-slot sockets of slots above `keep`, once no worker of
    /// theirs is meant to serve; a draining worker holds its own copy until
    /// it exits.
    pub fn release_above(&mut self, keep: usize) {
        if let Sockets::PerSlot { slots, .. } = self {
            slots.retain(|&slot, _| slot <= keep);
        }
    }

    /// Each TCP socket's accept queue: (name, waiting, size).
    pub fn queues(&self) -> Vec<(String, u32, u32)> {
        let each = |name: String, l: &Listener| {
            sys::listen_queue(l.socket.as_raw_fd()).map(|(queued, limit)| (name, queued, limit))
        };
        match self {
            Sockets::Shared(listeners) => listeners
                .iter()
                .filter_map(|l| each(l.name.clone(), l))
                .collect(),
            Sockets::PerSlot { addr, slots, .. } => slots
                .iter()
                .filter_map(|(slot, l)| each(format!("{addr} (worker {slot})"), l))
                .collect(),
        }
    }

    /// Names for the start-up log line.
    pub fn names(&self) -> Vec<String> {
        match self {
            Sockets::Shared(listeners) => listeners.iter().map(|l| l.name.clone()).collect(),
            Sockets::PerSlot { addr, .. } => vec![format!("{addr} (reuse_port, one per worker)")],
        }
    }
}
