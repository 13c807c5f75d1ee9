//! Behind a proxy: the client's address and scheme from a trusted proxy's
//! `X-Forwarded-For`/`-Proto` (real nginx, the shipped site, over TCP and
//! a Unix socket), never from a client that talks to ferricorn directly;
//! and Unix-domain listeners, passed by systemd or bound from `bind`.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

/// From source address `from` (any of 127/8 is this host): `prefix`, then
/// `GET path` with extra header lines; the response. A server may answer
/// and close before all is written: what it answered is what counts.
fn exchange_from(
    from: IpAddr,
    to: SocketAddr,
    prefix: &[u8],
    path: &str,
    headers: &str,
) -> Response {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{headers}\r\n")
            .as_bytes(),
    );
    let _ = s.write_all(&bytes);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&raw)))
}

/// One request from `from`, with extra header lines.
fn request_from(from: IpAddr, to: SocketAddr, path: &str, headers: &str) -> Response {
    exchange_from(from, to, &[], path, headers)
}

fn client_of(r: &Response) -> (String, String) {
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    (
        v["client"].as_str().unwrap().to_owned(),
        v["scheme"].as_str().unwrap().to_owned(),
    )
}

/// Waits for the access line of a request to `path` (unique per test
/// step) and returns it.
fn access_line(server: &Server, path: &str) -> String {
    eventually(&format!("the access line of {path}"), PATIENCE, || {
        server
            .log()
            .lines()
            .find(|l| l.contains("ferricorn::access") && l.contains(&format!(" {path} ")))
            .map(str::to_owned)
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn only_a_trusted_proxy_names_the_client() {
    // 127.0.0.2 plays the proxy; the test's other addresses are clients.
    let server = Server::ready(Options {
        config: "forwarded_allow_ips = \"127.0.0.2\"".into(),
        ..Options::default()
    });
    let spoof = "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n";
    // Directly, from an untrusted address: the headers are ignored.
    let r = request_from(ip("127.0.0.3"), server.addr, "/health?direct", spoof);
    assert_eq!(client_of(&r), ("127.0.0.3".into(), "http".into()));
    let line = access_line(&server, "/health?direct");
    assert!(
        line.contains("127.0.0.3 \"GET /health?direct HTTP/1.1\" 200 "),
        "{line}"
    );
    // From the proxy: the right-most hop it did not add itself... the
    // client's own "1.1.1.1" is not believed.
    let r = request_from(
        ip("127.0.0.2"),
        server.addr,
        "/health?proxied",
        "X-Forwarded-For: 1.1.1.1, 203.0.113.7\r\nX-Forwarded-Proto: https\r\n",
    );
    assert_eq!(client_of(&r), ("203.0.113.7".into(), "https".into()));
    let line = access_line(&server, "/health?proxied");
    assert!(
        line.contains("203.0.113.7 \"GET /health?proxied HTTP/1.1\" 200 "),
        "{line}"
    );
    // Hostile values from the proxy: garbage and 700 hops.
    let r = request_from(
        ip("127.0.0.2"),
        server.addr,
        "/health?garbage",
        "X-Forwarded-For: <script>, 999.0.0.1\r\nX-Forwarded-Proto: gopher\r\n",
    );
    assert_eq!(client_of(&r), ("127.0.0.2".into(), "http".into()));
    // As many as fit in limit_request_field_size (more gets 431).
    let hops = vec!["127.0.0.2"; 700].join(",");
    let r = request_from(
        ip("127.0.0.2"),
        server.addr,
        "/health?hops",
        &format!("X-Forwarded-For: {hops}\r\n"),
    );
    assert_eq!(client_of(&r).0, "127.0.0.2");
    // The worker served all of it.
    assert_eq!(server.health()["status"], "healthy");
}

#[test]
fn nginx_in_front_over_tcp_gives_the_client_address() {
    let server = Server::ready(Options::default());
    let nginx = nginx(Upstream::Tcp(server.addr));
    through_nginx(&server, &nginx, "tcp");
    // And a client that talks to ferricorn directly cannot spoof it.
    let r = request_from(
        ip("127.0.0.9"),
        server.addr,
        "/health?direct-tcp",
        "X-Forwarded-For: 203.0.113.7\r\n",
    );
    assert_eq!(client_of(&r).0, "127.0.0.9");
}

#[test]
fn nginx_in_front_over_a_unix_socket_gives_the_client_address() {
    let server = Server::ready(Options {
        socket: Socket::ActivatedUnix,
        ..Options::default()
    });
    let path = server.unix_path.clone().unwrap();
    let nginx = nginx(Upstream::Unix(&path));
    through_nginx(&server, &nginx, "unix");
    // A local process on the socket without a proxy header is `unix`.
    let r = get_unix(&path, "/health?direct-unix").unwrap();
    assert_eq!(client_of(&r).0, "unix");
    let line = access_line(&server, "/health?direct-unix");
    assert!(
        line.contains("unix \"GET /health?direct-unix HTTP/1.1\" 200 "),
        "{line}"
    );
}

/// `/health`, `/ws` and a chat room through nginx from a client address
/// of the test's choosing, which ferricorn's access log and `/health` name.
fn through_nginx(server: &Server, nginx: &Daemon, tag: &str) {
    let client = ip("127.0.0.77");
    let path = format!("/health?via-nginx-{tag}");
    // The client's own X-Forwarded-For is kept by nginx but not believed.
    let r = request_from(client, nginx.addr, &path, "X-Forwarded-For: 6.6.6.6\r\n");
    assert_eq!(
        client_of(&r),
        ("127.0.0.77".into(), "http".into()),
        "{}",
        nginx.log()
    );
    let line = access_line(server, &path);
    assert!(
        line.contains(&format!("127.0.0.77 \"GET {path} HTTP/1.1\" 200 ")),
        "{line}"
    );
    runtime().block_on(async {
        let mut ws = connect_to(nginx.addr, "/ws").await;
        ws.send(Message::text("through nginx")).await.unwrap();
        assert_eq!(next_text(&mut ws).await, "through nginx");
        let mut chat = connect_to(nginx.addr, "/chat/lobby").await;
        let welcome = next_text(&mut chat).await;
        assert!(welcome.contains("welcome"), "{welcome}");
        chat.send(Message::text("hello")).await.unwrap();
        loop {
            let event = next_text(&mut chat).await;
            if event.contains("\"message\"") {
                assert!(event.contains("hello"), "{event}");
                break;
            }
        }
        let _ = ws.close(None).await;
        let _ = chat.close(None).await;
        while ws.next().await.is_some() {}
    });
}

#[test]
fn bind_unix_takes_over_a_stale_socket_file_and_refuses_a_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.sock");
    // A socket file left by a process that is gone.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = Server::ready(Options {
        socket: Socket::SelfBound,
        config: format!("bind = \"unix:{}\"", path.display()),
        ..Options::default()
    });
    let r = get_unix(&path, "/health").unwrap();
    assert_eq!(client_of(&r).0, "unix");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "unix_socket_mode's default");
    // A second server on the same path while the first listens: refused,
    // and the first keeps its socket.
    let out = std::process::Command::new(BIN)
        .args(["--bind", &format!("unix:{}", path.display()), "serve"])
        .env_remove("LISTEN_FDS")
        .env("FERRICORN_WORKERS", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another process is listening"), "{stderr}");
    assert_eq!(get_unix(&path, "/health").unwrap().status, 200);
    drop(server);
}

/// A connection that opens with `prefix` then asks `GET path`; the status
/// and body of the answer.
fn with_prefix(from: IpAddr, to: SocketAddr, prefix: &[u8], path: &str) -> (u16, String) {
    let r = exchange_from(from, to, prefix, path, "");
    (r.status, r.body)
}

fn proxy_v2(source: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    h.extend_from_slice(&source);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&8097u16.to_be_bytes());
    h
}

#[test]
fn proxy_protocol_names_the_client_and_a_connection_without_it_is_refused() {
    let server = Server::ready(Options {
        config: "proxy_protocol = true\nforwarded_allow_ips = \"127.0.0.2\"".into(),
        ..Options::default()
    });
    let proxy = ip("127.0.0.2");
    let client = |status_body: (u16, String)| {
        assert_eq!(status_body.0, 200, "{}", status_body.1);
        let v: serde_json::Value = serde_json::from_str(&status_body.1).unwrap();
        v["client"].as_str().unwrap().to_owned()
    };
    // v1 and v2 from the trusted balancer: the client they name.
    let v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 8097\r\n";
    assert_eq!(
        client(with_prefix(proxy, server.addr, v1, "/health?pp-v1")),
        "203.0.113.7"
    );
    let line = access_line(&server, "/health?pp-v1");
    assert!(
        line.contains("203.0.113.7 \"GET /health?pp-v1 HTTP/1.1\" 200 "),
        "{line}"
    );
    let v2 = proxy_v2([198, 51, 100, 4], 4444);
    assert_eq!(
        client(with_prefix(proxy, server.addr, &v2, "/health?pp-v2")),
        "198.51.100.4"
    );
    // LOCAL (the balancer's own health check): the connection's peer.
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    assert_eq!(
        client(with_prefix(proxy, server.addr, local, "/health?pp-local")),
        "127.0.0.2"
    );
    // From an untrusted peer the header is read but not believed.
    assert_eq!(
        client(with_prefix(
            ip("127.0.0.3"),
            server.addr,
            v1,
            "/health?pp-spoof"
        )),
        "127.0.0.3"
    );
    // No header, or a malformed one: 400, said, and the connection closed.
    for bad in [
        &b""[..],
        b"PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\n",
        b"PROXY TCP4 203.0.113.7 127.0.0.1 5555\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x99\x11\x00\x0c",
        &[0u8; 5000][..],
    ] {
        let (status, body) = with_prefix(proxy, server.addr, bad, "/health");
        assert_eq!(
            (status, body.as_str()),
            (400, "missing or malformed PROXY protocol header\n"),
            "{bad:?}"
        );
    }
    assert_eq!(
        client(with_prefix(proxy, server.addr, v1, "/health?pp-after")),
        "203.0.113.7"
    );
}

#[test]
fn haproxy_in_front_with_send_proxy_v2_gives_the_client_address() {
    let server = Server::ready(Options {
        config: "proxy_protocol = true".into(),
        ..Options::default()
    });
    let haproxy = haproxy(server.addr);
    let r = request_from(ip("127.0.0.66"), haproxy.addr, "/health?via-haproxy", "");
    assert_eq!(client_of(&r).0, "127.0.0.66", "{}", haproxy.log());
    let line = access_line(&server, "/health?via-haproxy");
    assert!(
        line.contains("127.0.0.66 \"GET /health?via-haproxy HTTP/1.1\" 200 "),
        "{line}"
    );
}
