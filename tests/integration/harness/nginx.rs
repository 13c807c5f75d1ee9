//! Debian's nginx, started by a test on a free loopback port with the
//! shipped site (`packaging/nginx/ferricorn.conf`) in front of a test's
//! server: only the addresses and TLS lines are changed, and each change
//! must find its text, so the shipped site cannot drift from what is tested.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use super::daemon::{free_port, Daemon};

/// The shipped site, as installed under /usr/share/doc/ferricorn/examples.
const SITE: &str = include_str!("../../../packaging/nginx/ferricorn.conf");

/// Where nginx sends requests: ferricorn's TCP address or Unix socket.
pub enum Upstream<'a> {
    Tcp(SocketAddr),
    Unix(&'a Path),
}

/// `text` with `from` replaced by `to`; panics if `from` is not there.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the shipped nginx site no longer has {from:?}; update the test with it"
    );
    text.replace(from, to)
}

/// nginx with the shipped site in front of `upstream`; `log()` is its
/// error log.
pub fn nginx(upstream: Upstream<'_>) -> Daemon {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let redirect = free_port();
    let mut site = edit(
        SITE,
        "listen 443 ssl;",
        &format!("listen 127.0.0.1:{port};"),
    );
    site = edit(
        &site,
        "listen 80;",
        &format!("listen 127.0.0.1:{redirect};"),
    );
    for gone in [
        "    listen [::]:80;\n",
        "    listen [::]:443 ssl;\n",
        "    http2 on;\n",
        "    ssl_certificate     /etc/ssl/certs/example.com.pem;\n",
        "    ssl_certificate_key /etc/ssl/private/example.com.key;\n",
    ] {
        site = edit(&site, gone, "");
    }
    site = match upstream {
        Upstream::Tcp(addr) => edit(
            &site,
            "    server 127.0.0.1:8097;\n",
            &format!("    server {addr};\n"),
        ),
        Upstream::Unix(path) => edit(
            &edit(&site, "    server 127.0.0.1:8097;\n", ""),
            "    # server unix:/run/ferricorn/ferricorn.sock;\n",
            &format!("    server unix:{};\n", path.display()),
        ),
    };
    let d = dir.path().display();
    std::fs::write(dir.path().join("site.conf"), site).expect("write site");
    let main = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             user root;\nevents {{ worker_connections 512; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               include {d}/site.conf;\n}}\n"
        );
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, main).expect("write nginx.conf");
    let mut command = Command::new("/usr/sbin/nginx");
    command
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // SIGQUIT is nginx's graceful stop.
    Daemon::start("nginx", command, dir, port, "error.log", libc::SIGQUIT)
}
