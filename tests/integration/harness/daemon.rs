//! A server program the tests start in front of ferricorn (nginx, HAProxy)
//! on a free loopback port: started in a temp dir of its own, waited for
//! until it listens, its log read back, and stopped, by pid, when dropped.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command};

use super::{poll, PATIENCE};

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    /// Its config and log; removed with it.
    pub dir: tempfile::TempDir,
    /// The file in `dir` it logs to.
    log: &'static str,
    /// Its graceful stop.
    stop: libc::c_int,
}

impl Daemon {
    /// Spawns `command` (written into `dir`) and waits until `port`
    /// accepts; panics with its log if it exits or never listens.
    pub fn start(
        name: &'static str,
        mut command: Command,
        dir: tempfile::TempDir,
        port: u16,
        log: &'static str,
        stop: libc::c_int,
    ) -> Daemon {
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("start {name} (scripts/test installs Debian's {name}): {e}")
        });
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut daemon = Daemon {
            child,
            addr,
            dir,
            log,
            stop,
        };
        let up = poll(PATIENCE, || {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("{name} exited ({status}): {}", daemon.log());
            }
            std::net::TcpStream::connect(addr).ok()
        });
        assert!(up.is_some(), "{name} not listening: {}", daemon.log());
        daemon
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(self.log)).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Our own child, by pid, with its graceful stop.
        // SAFETY: kill(2) with a pid we spawned.
        unsafe { libc::kill(self.child.id() as libc::pid_t, self.stop) };
        let _ = self.child.wait();
    }
}
