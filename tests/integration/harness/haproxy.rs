//! Debian's HAProxy, started by a test on a free loopback port in front of
//! a test's server, sending the PROXY protocol (v2) as a load balancer in
//! front of a `proxy_protocol = true` ferricorn does.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use super::daemon::{free_port, Daemon};

/// HAProxy in front of `upstream` with `send-proxy-v2`; `log()` is its
/// output.
pub fn haproxy(upstream: SocketAddr) -> Daemon {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = format!(
        "global\n  maxconn 256\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend public\n  bind 127.0.0.1:{port}\n  default_backend ferricorn\n\
         backend ferricorn\n  server app {upstream} send-proxy-v2\n"
    );
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, config).expect("write haproxy.cfg");
    let log = std::fs::File::create(dir.path().join("haproxy.log")).expect("log file");
    let mut command = Command::new("/usr/sbin/haproxy");
    command
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log);
    Daemon::start("haproxy", command, dir, port, "haproxy.log", libc::SIGTERM)
}
