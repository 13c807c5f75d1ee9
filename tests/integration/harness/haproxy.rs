//! Debian's HAProxy, started by a test on a free loopback port in front of
//! a test's server, sending the PROXY protocol (v2) as a load balancer in
//! front of a `proxy_protocol = true` ferricorn does.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use super::{poll, PATIENCE};

pub struct Haproxy {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Haproxy {
    pub fn start(upstream: SocketAddr) -> Haproxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = super::nginx::free_port();
        let config = format!(
            "global\n  maxconn 256\n\
             defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend public\n  bind 127.0.0.1:{port}\n  default_backend ferricorn\n\
             backend ferricorn\n  server app {upstream} send-proxy-v2\n"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let log = std::fs::File::create(dir.path().join("haproxy.log")).expect("log file");
        let child = Command::new("/usr/sbin/haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start haproxy (scripts/test installs Debian's haproxy)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let mut haproxy = Haproxy { child, addr, dir };
        let up = poll(PATIENCE, || {
            if let Ok(Some(status)) = haproxy.child.try_wait() {
                panic!("haproxy exited ({status}): {}", haproxy.log());
            }
            std::net::TcpStream::connect(addr).ok()
        });
        assert!(up.is_some(), "haproxy not listening: {}", haproxy.log());
        haproxy
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // Our own child, by pid.
        // SAFETY: kill(2) with a pid we spawned.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
