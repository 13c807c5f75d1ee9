//! Listening sockets: taken from systemd (`LISTEN_FDS`, `LISTEN_PID`,
//! `LISTEN_FDNAMES`, sd_listen_fds(3)) or, without them, bound from `bind`.
//!
//! Called before any thread exists, because listenfd removes the variables
//! from the environment and `remove_var` is only sound single-threaded.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use crate::sys;

/// First descriptor systemd passes (sd_listen_fds(3): `SD_LISTEN_FDS_START`).
const SD_LISTEN_FDS_START: RawFd = 3;

/// One listening socket with the name systemd gave it (`FileDescriptorName=`),
/// or its address when ferricorn bound it.
#[derive(Debug)]
pub struct Listener {
    pub name: String,
    pub socket: TcpListener,
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("LISTEN_FDS={0:?} is not a number of descriptors")]
    BadCount(String),
    #[error("LISTEN_PID={0:?} is not a process id")]
    BadPid(String),
    #[error("LISTEN_FDS=0: systemd passed no socket")]
    NoSockets,
    #[error("passed descriptor {fd} ({name}): {problem}")]
    BadSocket {
        fd: RawFd,
        name: String,
        problem: String,
    },
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The sockets to serve on: systemd's if it passed any to this process,
/// else a new socket bound to `bind` with `backlog`.
///
/// # Errors
/// Malformed `LISTEN_*` values, a passed descriptor that is not a listening
/// TCP stream socket, or a failed bind.
pub fn listeners(bind: SocketAddr, backlog: u32) -> Result<Vec<Listener>, ListenError> {
    match from_systemd()? {
        Some(listeners) => Ok(listeners),
        None => Ok(vec![bind_one(bind, backlog)?]),
    }
}

/// sd_listen_fds(3) with the checks listenfd leaves out: it silently ignores
/// a non-numeric `LISTEN_FDS`, which would make ferricorn bind a second
/// socket of its own behind systemd's back.
fn from_systemd() -> Result<Option<Vec<Listener>>, ListenError> {
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
        let socket = fds
            .take_tcp_listener(idx)
            .map_err(|e| bad(format!("{e}; expected a TCP stream socket")))?
            .ok_or_else(|| bad("already taken".into()))?;
        if !sys::is_listening(socket.as_raw_fd()) {
            return Err(bad(
                "a TCP socket that is not listening (ListenStream= gives a listening one)".into(),
            ));
        }
        out.push(Listener { name, socket });
    }
    Ok(Some(out))
}

fn bind_one(addr: SocketAddr, backlog: u32) -> Result<Listener, ListenError> {
    let err = |source| ListenError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    // A restart must not wait out TIME_WAIT on the port.
    socket.set_reuse_address(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket
        .listen(i32::try_from(backlog).unwrap_or(i32::MAX))
        .map_err(err)?;
    let socket: TcpListener = socket.into();
    // The bound address, so `bind = "127.0.0.1:0"` logs the port it got.
    let name = socket.local_addr().map_err(err)?.to_string();
    Ok(Listener { name, socket })
}

/// Moves a listener above the fixed descriptor range workers receive, so
/// that the `dup2` calls in a child's `pre_exec` never overwrite a source
/// they still need.
///
/// # Errors
/// `fcntl(F_DUPFD_CLOEXEC)` failing (descriptor table full).
pub fn lift(listener: Listener) -> std::io::Result<Listener> {
    let raw = listener.socket.into_raw_fd();
    // SAFETY: `raw` came from `into_raw_fd`, so we own it and close it once.
    let original = unsafe { OwnedFd::from_raw_fd(raw) };
    let lifted = sys::dup_above(original.as_raw_fd(), sys::INHERIT_FLOOR)?;
    Ok(Listener {
        name: listener.name,
        socket: TcpListener::from(lifted),
    })
}
