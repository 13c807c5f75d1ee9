//! The few raw OS calls ferricorn needs (descriptor checks, fd plumbing for
//! children, signals by pid), each wrapped once with its safety argument.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Descriptors a worker inherits sit at fixed numbers: the control socket at
/// [`CONTROL_FD`], listeners from [`FIRST_LISTENER_FD`] on.
pub const CONTROL_FD: RawFd = 3;
/// First listener descriptor in a worker.
pub const FIRST_LISTENER_FD: RawFd = 4;
/// Every descriptor the supervisor hands down lives at or above this number
/// before the fork, so the child's `dup2` into the low fixed slots never
/// clobbers a source it has yet to copy.
pub const INHERIT_FLOOR: RawFd = 64;

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Marks `fd` close-on-exec: a descriptor a worker inherited must not
/// pass on to programs the app runs (a child holding the hub's or the
/// control socket's end would keep the worker looking alive).
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD only change the descriptor's flags.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) })?;
    Ok(())
}

/// Whether `fd` is an open descriptor in this process.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// A listening TCP socket's accept queue: (connections waiting, the
/// queue's size). Linux reports both through `TCP_INFO` (`tcpi_unacked`
/// and `tcpi_sacked` of a socket in LISTEN state, as `ss -lt` shows them);
/// `None` for other sockets (a Unix socket has no such figure).
pub fn listen_queue(fd: RawFd) -> Option<(u32, u32)> {
    // SAFETY: tcp_info is plain integers, which TCP_INFO fills in.
    let info: libc::tcp_info = unsafe { getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO)? };
    // TCP_LISTEN is state 10 (include/net/tcp_states.h).
    (info.tcpi_state == 10).then_some((info.tcpi_unacked, info.tcpi_sacked))
}

/// Whether the socket at `fd` is in the listening state (SO_ACCEPTCONN).
pub fn is_listening(fd: RawFd) -> bool {
    // SAFETY: SO_ACCEPTCONN is an int.
    let value = unsafe { getsockopt::<libc::c_int>(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN) };
    value == Some(1)
}

/// getsockopt(2) of option `name` at `level`, read into a `T`.
///
/// # Safety
/// `T` must be the option's type, and all zeroes a valid `T`.
unsafe fn getsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int) -> Option<T> {
    // SAFETY: the caller vouches that all zeroes is a valid T.
    let mut value: T = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: value and len point at live locals of the sizes passed.
    let rc = unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut T).cast(), &mut len) };
    (rc == 0).then_some(value)
}

/// Whether a listening socket at `fd` has a connection waiting to be
/// accepted (it polls readable), without taking it.
pub fn has_pending_connection(fd: RawFd) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd, count 1, no wait.
    let rc = unsafe { libc::poll(&mut poll, 1, 0) };
    rc == 1 && poll.revents & libc::POLLIN != 0
}

/// A close-on-exec duplicate of `fd` numbered at least `floor`.
///
/// # Errors
/// The descriptor table is full, or `fd` is not open.
pub fn dup_above(fd: RawFd, floor: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC creates a new descriptor we then own alone.
    let new = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor) })?;
    // SAFETY: `new` was just returned by fcntl and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// In a forked child before exec: put `src` at `dst` without close-on-exec.
/// Only async-signal-safe calls (dup2), per signal-safety(7).
///
/// # Errors
/// dup2 failing; the child then fails to spawn and the parent sees the error.
pub fn child_dup2(src: RawFd, dst: RawFd) -> io::Result<()> {
    // SAFETY: dup2 is async-signal-safe; both numbers are plain integers.
    cvt(unsafe { libc::dup2(src, dst) }).map(drop)
}

/// In a forked child before exec: die with `SIGKILL` when the parent does,
/// and close the race where the parent died before the prctl.
///
/// # Errors
/// prctl failing, or the parent already being gone.
pub fn child_die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl and getppid are async-signal-safe system calls.
    unsafe {
        cvt(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
        ))?;
        if libc::getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

/// In a forked child before exec: join a cgroup by writing "0" to its
/// already-open `cgroup.procs`.
///
/// # Errors
/// The write failing (e.g. the cgroup was removed, or no permission).
pub fn child_write_zero(fd: RawFd) -> io::Result<()> {
    // SAFETY: write(2) is async-signal-safe; the buffer is a static literal.
    let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    if n == 1 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// This process's id.
pub fn pid() -> libc::pid_t {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// The machine's hostname (from uname: the unit's `ProcSubset=pid` hides
/// /proc/sys/kernel/hostname), or "" if it cannot be read.
pub fn hostname() -> String {
    // SAFETY: uname fills the zeroed struct; its nodename is NUL-terminated.
    let mut names: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut names) } != 0 {
        return String::new();
    }
    // SAFETY: the kernel NUL-terminates nodename within the array.
    let name = unsafe { std::ffi::CStr::from_ptr(names.nodename.as_ptr()) };
    name.to_string_lossy().into_owned()
}

/// Sends `signal` to `pid`. A pid that is gone is not an error: the caller
/// learns of the exit through the child's reaper.
pub fn signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 0 {
        return; // never signal a process group by accident
    }
    // SAFETY: kill(2) with a positive pid only signals that one process.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Whether stderr is the journal: `$JOURNAL_STREAM` is "device:inode" of the
/// stream systemd connected, per systemd.exec(5).
pub fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: an all-zero stat is a valid value to be overwritten by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a live, writable stat buffer.
    if unsafe { libc::fstat(libc::STDERR_FILENO, &mut st) } != 0 {
        return false;
    }
    st.st_dev == dev && st.st_ino == ino
}
