//! Debian's nginx, started by a test on a free loopback port with the
//! shipped site (`packaging/nginx/ferricorn.conf`) in front of a test's
//! server: only the addresses and TLS lines are changed, and each change
//! must find its text, so the shipped site cannot drift from what is tested.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{poll, PATIENCE};

/// The shipped site, as installed under /usr/share/doc/ferricorn/examples.
const SITE: &str = include_str!("../../../packaging/nginx/ferricorn.conf");

/// Where nginx sends requests: ferricorn's TCP address or Unix socket.
pub enum Upstream<'a> {
    Tcp(SocketAddr),
    Unix(&'a Path),
}

pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// `text` with `from` replaced by `to`; panics if `from` is not there.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the shipped nginx site no longer has {from:?}; update the test with it"
    );
    text.replace(from, to)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Nginx {
    pub fn start(upstream: Upstream<'_>) -> Nginx {
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
        let child = Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx (scripts/test installs Debian's nginx)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let mut nginx = Nginx {
            child,
            addr,
            _dir: dir,
        };
        let up = poll(PATIENCE, || {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}): {}", nginx.error_log());
            }
            std::net::TcpStream::connect(addr).ok()
        });
        assert!(up.is_some(), "nginx not listening: {}", nginx.error_log());
        nginx
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Our own child, by pid: SIGQUIT is nginx's graceful stop.
        // SAFETY: kill(2) with a pid we spawned.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGQUIT) };
        let _ = self.child.wait();
    }
}
