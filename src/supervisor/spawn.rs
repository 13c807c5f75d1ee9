//! Starting one worker process: re-execute the binary path on disk as
//! `ferricorn worker`, with the control socket and listeners at fixed
//! descriptors, set up in `pre_exec` with async-signal-safe calls only.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;

use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use crate::sys::{self, CONTROL_FD, FIRST_LISTENER_FD, INHERIT_FLOOR};

/// Variables that belong to the supervisor alone: workers must not talk to
/// systemd (`NotifyAccess=main`) nor mistake the sockets for their own.
const SUPERVISOR_ONLY_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// What the supervisor needs to start a worker.
pub struct SpawnRequest<'a> {
    pub exe: &'a Path,
    pub slot: usize,
    pub generation: u64,
    pub build: &'a str,
    /// Listener descriptors, already at or above [`INHERIT_FLOOR`].
    pub listeners: &'a [RawFd],
    /// The resolved config as one JSON line: the worker's first read.
    pub config_line: &'a str,
    /// An open `cgroup.procs` of the worker's own cgroup, if delegated.
    pub cgroup_procs: Option<RawFd>,
    /// The worker's end of its pub/sub hub socket, at or above
    /// [`INHERIT_FLOOR`]; it lands after the listeners.
    pub pubsub: Option<RawFd>,
    /// Whether the service serves `/metrics` (the worker then counts).
    pub metrics: bool,
}

/// A started worker: its process and the supervisor's end of its control
/// socket.
pub struct Spawned {
    pub pid: u32,
    pub child: Child,
    pub control: UnixStream,
}

/// Starts one worker.
///
/// # Errors
/// Socket creation, fork/exec (e.g. the binary was removed), or writing
/// the config line.
pub fn spawn(req: &SpawnRequest<'_>) -> io::Result<Spawned> {
    let (mut ours, theirs) = StdUnixStream::pair()?;
    let theirs: OwnedFd = sys::dup_above(theirs.as_raw_fd(), INHERIT_FLOOR)?;
    let control_src = theirs.as_raw_fd();
    let listeners = req.listeners.to_vec();
    let cgroup = req.cgroup_procs;
    let parent = sys::pid();

    let mut command = Command::new(req.exe);
    command
        .arg("worker")
        .arg("--slot")
        .arg(req.slot.to_string())
        .arg("--generation")
        .arg(req.generation.to_string())
        .arg("--build")
        .arg(req.build)
        .arg("--listeners")
        .arg(listeners.len().to_string())
        .stdin(std::process::Stdio::null());
    if req.pubsub.is_some() {
        command.arg("--pubsub");
    }
    if req.metrics {
        command.arg("--metrics");
    }
    let pubsub = req.pubsub;
    for name in SUPERVISOR_ONLY_ENV {
        command.env_remove(name);
    }
    // SAFETY: the closure runs between fork and exec, so it only makes
    // async-signal-safe calls (write, dup2, prctl, getppid) on integers
    // captured before the fork; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if let Some(procs) = cgroup {
                sys::child_write_zero(procs)?;
            }
            sys::child_dup2(control_src, CONTROL_FD)?;
            for (idx, &src) in listeners.iter().enumerate() {
                sys::child_dup2(src, FIRST_LISTENER_FD + idx as RawFd)?;
            }
            if let Some(src) = pubsub {
                sys::child_dup2(src, FIRST_LISTENER_FD + listeners.len() as RawFd)?;
            }
            sys::child_die_with_parent(parent)
        });
    }
    let child = command.spawn()?;
    drop(theirs);
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("worker exited before its pid was read"))?;
    // A few hundred bytes into an empty socket buffer: cannot block.
    ours.write_all(req.config_line.as_bytes())?;
    ours.write_all(b"\n")?;
    ours.set_nonblocking(true)?;
    Ok(Spawned {
        pid,
        child,
        control: UnixStream::from_std(ours)?,
    })
}

/// Identifies the executable at `path` by its contents, so two different
/// builds at the same path differ and a reload after an upgrade shows the
/// new one. Four FNV-1a lanes over 64-bit words: a few milliseconds for a
/// release binary, and no hashing crate.
///
/// # Errors
/// The file cannot be read.
pub fn build_id(path: &Path) -> io::Result<String> {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut file = std::fs::File::open(path)?;
    let mut lanes = [OFFSET, OFFSET ^ 1, OFFSET ^ 2, OFFSET ^ 3];
    let mut buf = vec![0u8; 1 << 20];
    let mut len: u64 = 0;
    loop {
        // Fill the buffer whole, so chunking never depends on read sizes.
        let mut n = 0;
        while n < buf.len() {
            match file.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            break;
        }
        len += n as u64;
        let (blocks, rest) = buf[..n].as_chunks::<32>();
        for block in blocks {
            let (words, _) = block.as_chunks::<8>();
            for (lane, word) in lanes.iter_mut().zip(words) {
                *lane = (*lane ^ u64::from_le_bytes(*word)).wrapping_mul(PRIME);
            }
        }
        for &b in rest {
            lanes[0] = (lanes[0] ^ u64::from(b)).wrapping_mul(PRIME);
        }
    }
    let hash = lanes
        .iter()
        .fold(len, |acc, lane| (acc ^ lane).wrapping_mul(PRIME));
    Ok(format!("{hash:016x}"))
}
