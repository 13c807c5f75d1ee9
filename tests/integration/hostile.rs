//! Hostile input and faults: slow and oversized requests, malformed HTTP
//! and request-smuggling shapes, WebSocket abuse, connection floods,
//! descriptor exhaustion, and handlers that panic, abort or leak. Each test
//! shows the defined answer and that the worker keeps serving.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

/// The one worker's pid, from `/health`.
fn worker_pid(server: &Server) -> u64 {
    server.health()["pid"].as_u64().expect("pid")
}

fn one_worker_options(config: &str) -> Options {
    Options {
        workers: 1,
        config: config.into(),
        ..Options::default()
    }
}

fn one_worker(config: &str) -> Server {
    Server::ready(one_worker_options(config))
}

#[test]
fn slow_headers_are_cut_off_while_others_are_served() {
    let server = one_worker("keepalive = 1");
    let addr = server.addr;
    // 200 clients trickle an endless header, a byte per 100 ms each.
    let mut slow: Vec<Option<TcpStream>> = (0..200)
        .map(|_| Some(TcpStream::connect(addr).expect("connect")))
        .collect();
    for s in slow.iter_mut().flatten() {
        s.write_all(b"GET /health HTTP/1.1\r\nX-Slow: ").unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    let prober = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut latencies = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = get(addr, "/health").expect("health during slowloris");
                assert_eq!(r.status, 200);
                latencies.push(started.elapsed());
            }
            latencies
        })
    };
    let started = Instant::now();
    eventually(
        "every slow connection closed by the server",
        PATIENCE,
        || {
            for entry in slow.iter_mut() {
                if let Some(s) = entry {
                    // A write to a connection the server closed fails (reset)
                    // within a write or two.
                    if s.write_all(b"a").is_err() {
                        *entry = None;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            slow.iter().all(Option::is_none).then_some(())
        },
    );
    let cut_after = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let mut latencies = prober.join().expect("prober");
    latencies.sort();
    eprintln!(
        "slowloris: 200 connections cut after {cut_after:?}; {} health checks meanwhile, p50 {:?}, max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    // keepalive = 1 s bounds each head; without that bound the trickle
    // would run into limit_request_field_size only after 13 minutes, far
    // past the wait above.
    assert!(latencies.len() >= 5, "health checks starved");
}

#[test]
fn oversized_heads_get_414_and_431_and_the_worker_lives() {
    let server = one_worker(
        "limit_request_line = 200\nlimit_request_fields = 20\nlimit_request_field_size = 300",
    );
    let pid = worker_pid(&server);
    let addr = server.addr;
    let within = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(150));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("line within the limit", within.into_bytes(), 404),
        (
            "request line over limit_request_line",
            format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(250)).into_bytes(),
            414,
        ),
        (
            "request line still arriving past the limit",
            format!("GET /{}", "a".repeat(5000)).into_bytes(),
            414,
        ),
        (
            "more fields than limit_request_fields",
            format!(
                "GET /health HTTP/1.1\r\n{}\r\n",
                (0..21).map(|i| format!("X-{i}: 1\r\n")).collect::<String>()
            )
            .into_bytes(),
            431,
        ),
        (
            "a field over limit_request_field_size",
            format!("GET /health HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(400)).into_bytes(),
            431,
        ),
        (
            "a head without end, past every limit",
            format!("GET /health HTTP/1.1\r\n{}", "X: 1\r\n".repeat(100_000)).into_bytes(),
            431,
        ),
    ];
    for (what, request, status) in cases {
        let (raw, closed) = exchange(addr, &request, PATIENCE);
        assert_eq!(statuses(&raw), vec![status], "{what}");
        if status != 404 {
            assert!(closed, "{what}: connection left open");
        }
    }
    // A good request pipelined before a bad one is answered first.
    let mut pipelined = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    pipelined.extend(format!("GET /health HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(400)).bytes());
    let (raw, closed) = exchange(addr, &pipelined, PATIENCE);
    assert_eq!(statuses(&raw), vec![200, 431]);
    assert!(closed);
    assert_eq!(worker_pid(&server), pid, "the worker was replaced");
}

#[test]
fn bodies_on_health_are_not_read_into_memory() {
    let server = one_worker("");
    let pid = worker_pid(&server);
    let before = rss_kib(pid as u32);
    // A GET that declares a 1 GiB body and sends up to 64 MiB of it (a
    // POST would get 405 before any body question), while a second thread
    // reads what the server answers: a 200 without the body being read,
    // then the close. (Read only after the writes, the answer could be lost
    // to the reset a close with unread data sends.)
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let answer = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match std::io::Read::read(&mut reader, &mut buf) {
                Ok(0) => return (got, "closed"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, "reset"),
                Err(e) => {
                    return (
                        got,
                        if e.kind() == std::io::ErrorKind::WouldBlock {
                            "open"
                        } else {
                            "error"
                        },
                    )
                }
            }
        }
    });
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: a\r\nContent-Length: 1073741824\r\n\r\n")
        .unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0usize;
    let mut write_error = None;
    for _ in 0..64 {
        match stream.write_all(&chunk) {
            Ok(()) => sent += chunk.len(),
            Err(e) => {
                write_error = Some(e.kind());
                break;
            }
        }
    }
    let after = rss_kib(pid as u32);
    let (got, end) = answer.join().unwrap();
    eprintln!(
        "body: {} MiB sent of a declared 1 GiB before {write_error:?}; connection {end}; worker RSS {before} KiB -> {after} KiB",
        sent >> 20
    );
    assert_eq!(
        statuses(&got),
        vec![200],
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        matches!(end, "closed" | "reset"),
        "the server kept the connection: {end}"
    );
    assert!(write_error.is_some(), "the server read all 64 MiB");
    assert!(
        after < before + 16 * 1024,
        "worker grew by {} KiB",
        after - before
    );
    assert_eq!(worker_pid(&server), pid);
}

#[test]
fn malformed_and_smuggling_requests_get_400_and_never_reach_the_app() {
    let server = one_worker("");
    let pid = worker_pid(&server);
    let requests_before = server.health()["counters"]["requests"].as_u64().unwrap();
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let cases: Vec<(&str, String)> = vec![
        ("garbage bytes", "\u{1}\u{2}\u{3} garbage\r\n\r\n".into()),
        ("invalid method", "G(ET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n".into()),
        ("unknown version", "GET /smuggled HTTP/9.9\r\nHost: a\r\n\r\n".into()),
        (
            "Content-Length then Transfer-Encoding",
            format!("POST /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "Transfer-Encoding then Content-Length",
            format!("POST /smuggled HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
        (
            "two different Content-Lengths",
            "POST /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".into(),
        ),
        (
            "signed Content-Length",
            "POST /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello".into(),
        ),
        (
            "Transfer-Encoding not ending in chunked",
            "POST /smuggled HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n".into(),
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            "POST /smuggled HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
        ),
        (
            "obsolete line folding",
            "GET /smuggled HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n".into(),
        ),
        (
            "space before the colon",
            "GET /smuggled HTTP/1.1\r\nHost : a\r\n\r\n".into(),
        ),
        (
            "HTTP/1.1 without Host",
            "GET /smuggled HTTP/1.1\r\nX: 1\r\n\r\n".into(),
        ),
        (
            "two Host fields",
            "GET /smuggled HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(),
        ),
        (
            "two Host fields on HTTP/1.0",
            "GET /smuggled HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n".into(),
        ),
        (
            "a Host that is a list",
            "GET /smuggled HTTP/1.1\r\nHost: a, b\r\n\r\n".into(),
        ),
    ];
    for (what, request) in &cases {
        let (raw, closed) = exchange(server.addr, request.as_bytes(), PATIENCE);
        assert_eq!(
            statuses(&raw),
            vec![400],
            "{what}: {}",
            String::from_utf8_lossy(&raw)
        );
        assert!(closed, "{what}: connection left open");
    }
    // HTTP/1.0 may leave Host out (RFC 9112 §3.2 requires it of 1.1 only).
    let (raw, _) = exchange(server.addr, b"GET /health HTTP/1.0\r\n\r\n", PATIENCE);
    assert_eq!(
        statuses(&raw),
        vec![200],
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let log = server.log();
    assert!(
        !log.contains("/smuggled"),
        "a request reached the app:\n{log}"
    );
    let requests_after = server.health()["counters"]["requests"].as_u64().unwrap();
    // Only the /health calls of this test were served.
    assert_eq!(requests_after, requests_before + 2);
    assert_eq!(worker_pid(&server), pid);
}

#[test]
fn bad_websocket_frames_close_with_1002_and_1007() {
    let server = one_worker("");
    let pid = worker_pid(&server);
    runtime().block_on(async {
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("unmasked client frame", vec![0x81, 0x02, b'h', b'i'], 1002),
            (
                "reserved bits set",
                {
                    let mut f = frame(0x1, b"hi");
                    f[0] |= 0x40;
                    f
                },
                1002,
            ),
            ("unknown opcode", frame(0x3, b"hi"), 1002),
            (
                "invalid UTF-8 in a text frame",
                frame(0x1, &[0xff, 0xfe, 0xfd]),
                1007,
            ),
        ];
        for (what, bytes, code) in cases {
            let mut ws = raw_websocket(server.addr).await;
            ws.write_all(&bytes).await.unwrap();
            assert_eq!(raw_close_code(&mut ws).await, code, "{what}");
        }
    });
    assert_eq!(worker_pid(&server), pid);
}

/// The client closes first: the server answers with a Close frame (RFC
/// 6455 §5.5.1) echoing a valid code, 1002 for a code no endpoint may send,
/// then ends the TCP connection.
#[test]
fn a_client_close_is_answered_and_an_invalid_code_gets_1002() {
    let server = one_worker("");
    let pid = worker_pid(&server);
    runtime().block_on(async {
        let close = |code: u16, reason: &[u8]| {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice(reason);
            frame(0x8, &payload)
        };
        let mut cases: Vec<(String, Vec<u8>, u16)> = vec![
            ("1000 \"bye\"".into(), close(1000, b"bye"), 1000),
            ("1001".into(), close(1001, b""), 1001),
            ("3000 (registered)".into(), close(3000, b""), 3000),
            ("4000 (private use)".into(), close(4000, b""), 4000),
            ("a 1-byte payload".into(), frame(0x8, &[3]), 1002),
        ];
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            cases.push((format!("{code} (not sendable)"), close(code, b""), 1002));
        }
        for (what, bytes, answer) in cases {
            let mut ws = raw_websocket(server.addr).await;
            ws.write_all(&bytes).await.unwrap();
            assert_eq!(raw_close_code(&mut ws).await, answer, "Close {what}");
            // Then the server ends the connection.
            let mut rest = Vec::new();
            let end = tokio::time::timeout(PATIENCE, ws.read_to_end(&mut rest)).await;
            assert!(
                matches!(end, Ok(Ok(0)) | Ok(Err(_))),
                "Close {what}: connection left open ({end:?}, {rest:?})"
            );
        }
    });
    assert_eq!(worker_pid(&server), pid);
}

#[test]
fn unanswered_ping_closes_with_1011_while_a_live_client_stays() {
    let server = one_worker("ws_ping_interval = 0.3\nws_ping_timeout = 0.6");
    runtime().block_on(async {
        // Reads (so tungstenite answers each ping) for well past the timeout.
        let mut live = connect(server.addr).await;
        // Never reads, so never answers.
        let mut silent = raw_websocket(server.addr).await;
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut pings = 0;
        while let Ok(Some(message)) = tokio::time::timeout_at(until, live.next()).await {
            match message.expect("live client read") {
                Message::Ping(_) => pings += 1,
                other => panic!("live client got {other:?}"),
            }
        }
        assert!(pings >= 3, "{pings} pings in 3 s");
        // The silent one was pinged, then closed with 1011.
        assert_eq!(raw_close_code(&mut silent).await, 1011);
        live.send(Message::text("still here")).await.unwrap();
        assert_eq!(next_text(&mut live).await, "still here");
    });
}

#[test]
fn client_that_never_reads_is_dropped_without_growing_the_worker() {
    let ping_timeout = 1.0;
    let server = one_worker(&format!("ws_ping_timeout = {ping_timeout}"));
    let pid = worker_pid(&server) as u32;
    let before = rss_kib(pid);
    let rt = runtime();
    let mut ws = rt.block_on(connect(server.addr));
    let message = Message::binary(vec![7u8; 256 * 1024]);
    // Echo requests, never reading a reply: the server's echo stalls, it
    // stops reading, the socket buffers fill, and this side stalls in turn.
    let mut sent = 0usize;
    rt.block_on(async {
        loop {
            match tokio::time::timeout(Duration::from_millis(300), ws.send(message.clone())).await {
                Ok(Ok(())) => sent += 1,
                Err(_) => break,
                Ok(Err(e)) => panic!("the server dropped the client before it stalled: {e}"),
            }
            assert!(sent < 4096, "1 GiB accepted without backpressure");
        }
    });
    let stalled_at = Instant::now();
    // Still held open by this client, so only the server can end it.
    let during = rss_kib(pid);
    let dropped_after = eventually("the server to drop the stalled WebSocket", PATIENCE, || {
        let health = server.health();
        (health["counters"]["websockets"] == 0).then(|| stalled_at.elapsed())
    });
    eprintln!(
        "never-reading client: {sent} × 256 KiB sent before backpressure; worker RSS {before} KiB, {during} KiB while stalled; dropped by the server {dropped_after:?} after the client stalled (ws_ping_timeout {ping_timeout} s)"
    );
    // Its send to this client waited since before the client stalled, so
    // the server's patience ran out less than ws_ping_timeout later: the
    // margin is for a loaded machine, far below the 20 s ping interval.
    assert!(
        dropped_after < Duration::from_secs_f64(ping_timeout + 5.0),
        "dropped after {dropped_after:?}"
    );
    // What the worker holds for it: the message it is echoing, not the
    // {sent} it was sent (the rest wait in the kernel's socket buffers).
    assert!(
        during < before + 2 * 1024,
        "worker grew by {} KiB while the client stalled",
        during - before
    );
    assert_eq!(worker_pid(&server), pid as u64);
    drop(ws);
}

#[test]
fn connection_flood_waits_in_the_backlog_and_health_still_answers() {
    let server = Server::ready(Options {
        workers: 2,
        config: "worker_connections = 10\nkeepalive = 1".into(),
        // ferricorn's own backlog (2048), not the test's socket's 128.
        socket: Socket::SelfBound,
        ..Options::default()
    });
    let pids = server.worker_pids();
    // 100 idle connections: 5 × the 20 slots. Each round of 20 is cut at
    // the 1 s keepalive, so /health waits its turn in the backlog.
    let flood: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(server.addr).expect("connect: refused by the flood"))
        .collect();
    let started = Instant::now();
    let health = eventually("health through the flood", PATIENCE, || {
        server.get("/health").ok()
    });
    let waited = started.elapsed();
    assert_eq!(health.status, 200);
    let body: serde_json::Value = serde_json::from_str(&health.body).unwrap();
    let open = body["counters"]["connections"].as_u64().unwrap();
    eprintln!(
        "flood: /health answered after {waited:?} with {open} connections open in its worker"
    );
    assert!(open <= 10, "worker_connections exceeded: {open}");
    drop(flood);
    assert_eq!(server.distinct_health_pids(2).len(), 2);
    assert_eq!(server.worker_pids(), pids, "a worker was replaced");
}

#[test]
fn descriptor_exhaustion_backs_off_logs_once_and_recovers() {
    let server = Server::ready(Options {
        workers: 1,
        // Above the supervisor's descriptor floor (64), far below the
        // default.
        nofile: Some(128),
        ..Options::default()
    });
    let worker = server.worker_pids()[0];
    // Idle keep-alive connections until the worker's table is full.
    let held: Vec<TcpStream> = (0..160)
        .map(|_| TcpStream::connect(server.addr).expect("connect"))
        .collect();
    server.wait_log("accept failed (");
    let cpu_before = cpu_seconds(worker);
    let window = Instant::now();
    eventually("a 2 s window", PATIENCE, || {
        (window.elapsed() >= Duration::from_secs(2)).then_some(())
    });
    let cpu = cpu_seconds(worker) - cpu_before;
    let elapsed = window.elapsed().as_secs_f64();
    eprintln!("EMFILE: worker used {cpu:.2} s CPU in {elapsed:.1} s");
    assert!(cpu < 0.5 * elapsed, "accept loop spinning: {cpu:.2} s CPU");
    assert_eq!(server.log().matches("accept failed (").count(), 1);
    drop(held);
    let r = eventually("service back once descriptors free", PATIENCE, || {
        server.get("/health").ok()
    });
    assert_eq!(r.status, 200);
    assert_eq!(server.worker_pids(), vec![worker]);
}

/// One worker of the `faults` example, which adds failing routes.
fn faulty_server(config: &str) -> Server {
    Server::ready(Options {
        exe: Some(faults_binary()),
        ..one_worker_options(config)
    })
}

#[test]
fn panicking_handler_gets_500_and_the_worker_lives() {
    let server = faulty_server("");
    let pid = worker_pid(&server);
    for _ in 0..3 {
        assert_eq!(server.get("/fault/panic").unwrap().status, 500);
    }
    server.wait_log("deliberate panic in a handler");
    assert_eq!(worker_pid(&server), pid);
    // The supervisor saw no worker end, and started none after the first.
    let log = server.log();
    assert!(!log.contains(") died: "), "{log}");
    assert_eq!(log.matches(") spawned").count(), 1, "{log}");
}

#[test]
fn aborting_worker_is_replaced() {
    let server = faulty_server("");
    let pid = worker_pid(&server);
    assert!(
        server.get("/fault/abort").is_err(),
        "an abort answers nothing"
    );
    server.wait_log("signal 6 (SIGABRT)");
    let new = eventually("a replacement answering", PATIENCE, || {
        server.get("/health").ok().filter(|r| r.status == 200)
    });
    let body: serde_json::Value = serde_json::from_str(&new.body).unwrap();
    assert_ne!(body["pid"].as_u64().unwrap(), pid);
}

#[test]
fn leaking_worker_is_recycled_gracefully_past_memory_high() {
    let server = faulty_server("memory_high = \"64M\"");
    let pid = worker_pid(&server);
    assert_eq!(server.get("/fault/leak?mib=80").unwrap().status, 200);
    server.wait_log(") above memory_high: ");
    let replaced = eventually("the leaking worker replaced", PATIENCE, || {
        let now = worker_pid(&server);
        (now != pid).then_some(now)
    });
    assert!(rss_kib(replaced as u32) < 64 * 1024);
    server.wait_log("successor ready");
}
