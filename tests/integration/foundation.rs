//! The foundation contract: socket activation, READY=1 only when every
//! worker answers, workers as children, crash restart, self-binding.

use crate::harness::*;

#[test]
fn ready_only_when_every_worker_answers() {
    let mut server = Server::start(Options {
        workers: 3,
        ..Options::default()
    });
    let ready = server.wait_ready();
    // At the moment READY=1 arrives, all three workers are accepting.
    let note = server.notes()[ready].clone();
    assert!(
        note.contains("STATUS=") && note.contains("3/3 workers"),
        "{note}"
    );
    let pids = server.distinct_health_pids(3);
    assert_eq!(pids.len(), 3);
    let supervisor = server.pid();
    for pid in &pids {
        assert_eq!(
            parent_of(*pid as u32),
            Some(supervisor),
            "worker {pid} is not a child of the supervisor"
        );
    }
    let mut children = server.worker_pids();
    children.sort_unstable();
    let mut answered: Vec<u32> = pids.iter().map(|&p| p as u32).collect();
    answered.sort_unstable();
    assert_eq!(children, answered);
    // The socket came from "systemd": the supervisor bound nothing itself.
    assert!(
        server
            .log()
            .contains(&format!("listeners=[\"http ({})\"]", server.addr)),
        "{}",
        server.log()
    );
    let health = server.health();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(health["worker"]
        .as_u64()
        .is_some_and(|w| (1..=3).contains(&w)));
    assert_eq!(health["generation"], 1);
}

#[test]
fn workers_get_no_notify_socket_and_die_with_supervisor() {
    let mut server = Server::ready(Options::default());
    let workers = server.worker_pids();
    assert_eq!(workers.len(), 2);
    for pid in &workers {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let env = String::from_utf8_lossy(&env);
        assert!(
            !env.contains("NOTIFY_SOCKET="),
            "worker {pid} got NOTIFY_SOCKET"
        );
        assert!(!env.contains("LISTEN_FDS="), "worker {pid} got LISTEN_FDS");
    }
    send_signal(server.pid(), libc::SIGKILL);
    server.wait_exit(PATIENCE);
    for pid in workers {
        eventually("orphaned worker to die", PATIENCE, || {
            (!alive(pid)).then_some(())
        });
    }
}

#[test]
fn killed_worker_is_replaced() {
    let server = Server::ready(Options::default());
    let before = server.worker_pids();
    assert_eq!(before.len(), 2);
    let victim = before[0];
    send_signal(victim, libc::SIGKILL);
    let after = eventually("a replacement worker", PATIENCE, || {
        let now = server.worker_pids();
        (now.len() == 2 && !now.contains(&victim)).then_some(now)
    });
    assert!(after.contains(&before[1]), "the other worker was disturbed");
    server.wait_log("signal 9 (SIGKILL)");
    // The service answered throughout; now both slots do again.
    assert_eq!(server.distinct_health_pids(2).len(), 2);
}

#[test]
fn binds_configured_address_without_listen_fds() {
    let mut server = Server::ready(Options {
        socket: Socket::SelfBound,
        ..Options::default()
    });
    // The config says 127.0.0.1:0; the harness read the address back from
    // the start line, and /health answering on it shows the bind.
    let addr = server.addr;
    assert_eq!(addr.ip(), std::net::Ipv4Addr::LOCALHOST, "{}", server.log());
    assert_ne!(addr.port(), 0);
    assert_eq!(server.health()["status"], "healthy");
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(PATIENCE).success());
}

#[test]
fn sigterm_stops_gracefully_with_stopping_note() {
    let mut server = Server::ready(Options::default());
    let workers = server.worker_pids();
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(PATIENCE);
    assert!(status.success(), "supervisor exit: {status}");
    assert!(server
        .notes()
        .iter()
        .any(|n| n.lines().any(|l| l == "STOPPING=1")));
    for pid in workers {
        assert!(!alive(pid), "worker {pid} outlived the supervisor");
    }
}

/// `stop_delay`: a graceful stop first leaves the rotation. Every worker
/// keeps accepting new connections and serving, but `/health` answers 503
/// ("stopping"), so a load balancer's checks take the host out before its
/// workers stop accepting; then the usual drain, and a clean exit.
#[test]
fn stop_delay_fails_health_while_workers_still_serve_then_drains() {
    let mut server = Server::ready(Options {
        config: "stop_delay = 5".into(),
        ..Options::default()
    });
    let healthy = server.health();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(healthy["host"], hostname.trim(), "which host answered");
    server.signal(libc::SIGTERM);
    let stopping = eventually("/health answering 503 after SIGTERM", PATIENCE, || {
        server.get("/health").ok().filter(|r| r.status == 503)
    });
    let body: serde_json::Value = serde_json::from_str(&stopping.body).unwrap();
    assert_eq!(body["status"], "stopping", "{}", stopping.body);
    // Both workers still accept and answer on new connections meanwhile
    // (asked until both have, while the answers are still 503s: the kernel
    // may hand a run of connections to one worker).
    let mut pids = std::collections::BTreeSet::new();
    while pids.len() < 2 {
        let Some(r) = server.get("/health").ok().filter(|r| r.status == 503) else {
            break;
        };
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        pids.insert(body["pid"].as_u64().unwrap());
    }
    assert_eq!(pids.len(), 2, "answered by {pids:?}: {}", server.log());
    let status = server.wait_exit(PATIENCE);
    assert!(status.success(), "supervisor exit: {status}");
    server.wait_log("leaving: /health answers 503 for 5 s, then it drains");
}

/// A descriptor systemd could never have meant: each is refused by name.
#[test]
fn invalid_listen_fds_are_refused() {
    use std::os::unix::process::CommandExt;
    use std::process::Command;
    let run = |listen_fds: &str, fd3: Option<std::os::fd::RawFd>| {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "LISTEN_PID=$$ LISTEN_FDS={listen_fds} exec \"$0\" --config /dev/null serve"
            ))
            .arg(BIN)
            .env_remove("NOTIFY_SOCKET");
        if let Some(fd) = fd3 {
            // SAFETY: dup2/fcntl only, between fork and exec.
            unsafe {
                cmd.pre_exec(move || move_to_fd3(fd));
            }
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Unusable sockets: exit 1, as the README's exit-code table says.
    let (code, err) = run("lots", None);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("LISTEN_FDS"), "{err}");
    let (code, err) = run("1", None);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("descriptor 3") && err.contains("not an open descriptor"),
        "{err}"
    );
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (code, err) = run("1", Some(std::os::fd::AsRawFd::as_raw_fd(&udp)));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("descriptor 3"), "{err}");
    let file = std::fs::File::open("/dev/null").unwrap();
    let (code, err) = run("1", Some(std::os::fd::AsRawFd::as_raw_fd(&file)));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not a socket"), "{err}");
    let unlistened = std::net::TcpStream::connect(
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap(),
    )
    .unwrap();
    let (code, err) = run("1", Some(std::os::fd::AsRawFd::as_raw_fd(&unlistened)));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not listening"), "{err}");
}

#[test]
fn json_log_lines_carry_worker_identity_and_access_fields() {
    let server = Server::ready(Options {
        config: "log_format = \"json\"".into(),
        ..Options::default()
    });
    server.get("/health?probe=1").unwrap();
    server.wait_log("\"path\":\"/health\"");
    let access: serde_json::Value = server
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] == "ferricorn::access")
        .expect("an access-log JSON line");
    assert_eq!(access["method"], "GET");
    assert_eq!(access["status"], 200);
    assert_eq!(access["generation"], 1);
    assert!(access["worker"].as_u64().is_some(), "{access}");
    assert!(access["peer"]
        .as_str()
        .is_some_and(|p| p.starts_with("127.0.0.1:")));
    assert!(access["duration_us"].as_u64().is_some());
}

#[test]
fn access_log_can_be_switched_off() {
    let mut server = Server::ready(Options {
        config: "access_log = false".into(),
        ..Options::default()
    });
    for _ in 0..5 {
        server.get("/health").unwrap();
    }
    // A later, unrelated line proves the log has caught up with the requests.
    server.signal(libc::SIGTERM);
    server.wait_exit(PATIENCE);
    let log = server.log();
    assert!(log.contains("drained after"), "{log}");
    assert!(!log.contains("ferricorn::access"), "{log}");
}

/// A log sink that stops taking lines (a stalled journal) costs access-log
/// lines, never requests: every request is answered, and each one is either
/// logged or counted in a "dropped" line once the sink takes lines again.
#[test]
fn access_log_lines_a_stalled_sink_cannot_take_are_dropped_and_counted() {
    let server = Server::ready(Options {
        workers: 1,
        ..Options::default()
    });
    // More than the queue (16,384 records) and the pipe hold together.
    let requests = 25_000u64;
    {
        let _stalled = server.hold_log();
        let mut client = KeepAlive::new(server.addr);
        for i in 0..requests {
            let r = client
                .get("/health")
                .unwrap_or_else(|e| panic!("request {i} while the log sink stalled: {e}"));
            assert_eq!(r.status, 200);
        }
    }
    server.wait_log("access log lines dropped");
    let (logged, dropped) = eventually("every request logged or counted", PATIENCE, || {
        let log = server.log();
        let logged = log
            .lines()
            .filter(|l| l.contains("ferricorn::access"))
            .count() as u64;
        let dropped: u64 = log
            .lines()
            .filter(|l| l.contains("access log lines dropped"))
            .filter_map(|l| {
                let rest = &l[l.find("dropped=")? + "dropped=".len()..];
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        (logged + dropped == requests).then_some((logged, dropped))
    });
    eprintln!("stalled log sink: {requests} requests served, {logged} logged, {dropped} dropped and counted");
    assert!(dropped > 0);
}

/// The messages of one JSON log, with their levels: what `journalctl -o
/// cat` shows of each line (the journal gets the same message text).
fn messages(server: &Server) -> Vec<(String, String)> {
    server
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            (
                v["level"].as_str().unwrap_or("").to_owned(),
                v["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// The first message matching `pattern`, with its level, once logged.
fn wait_message(server: &Server, pattern: &str) -> (String, String) {
    let re = regex::Regex::new(pattern).unwrap();
    poll(PATIENCE, || {
        messages(server).into_iter().find(|(_, m)| re.is_match(m))
    })
    .unwrap_or_else(|| {
        let all: Vec<String> = messages(server).into_iter().map(|(_, m)| m).collect();
        panic!(
            "no message matching {pattern:?}; messages:\n{}",
            all.join("\n")
        )
    })
}

#[test]
fn log_lines_read_on_their_own() {
    let mut server = Server::ready(Options {
        config: "log_format = \"json\"".into(),
        ..Options::default()
    });
    wait_message(
        &server,
        r"^ferricorn \S+ \(build [0-9a-f]+\) starting 2 workers on http \(127\.0\.0\.1:\d+\)$",
    );
    wait_message(
        &server,
        r"^worker [12] \(pid \d+, generation 1\) ready in \d+ ms$",
    );
    server.get("/health?read-me").unwrap();
    let (level, _) = wait_message(
        &server,
        r#"^127\.0\.0\.1 "GET /health\?read-me HTTP/1\.1" 200 \d+ \d+\.\d{6}s worker [12]$"#,
    );
    assert_eq!(level, "INFO");
    // A crash: which worker, which pid, which signal, and what happens next.
    let victim = server.worker_pids()[0];
    send_signal(victim, libc::SIGKILL);
    let (level, _) = wait_message(
        &server,
        &format!(
            r"^worker [12] \(pid {victim}, generation 1\) died: signal 9 \(SIGKILL\) after \d+(\.\d)? (ms|s|min \d+ s); replacing it$"
        ),
    );
    assert_eq!(level, "WARN");
    server.wait_ready();
    let notes = server.notes().len();
    server.signal(libc::SIGHUP);
    server.wait_note_after(notes, "READY=1");
    wait_message(&server, r"^signal received: SIGHUP \(rolling reload\)$");
    wait_message(
        &server,
        r"^reload 1→2: starting 2 new workers \(build [0-9a-f]+\)$",
    );
    let (level, _) = wait_message(&server, r"^reload 1→2 complete in \d+ ms$");
    assert_eq!(level, "INFO");
    wait_message(
        &server,
        r"^worker [12] \(pid \d+, generation 1\) draining: replaced by reload$",
    );
    wait_message(
        &server,
        r"^worker [12] draining: \d+ connections and \d+ WebSockets open; WebSockets close with 1012$",
    );
    server.signal(libc::SIGTERM);
    server.wait_exit(PATIENCE);
    wait_message(&server, r"^stopping: 2 workers, gracefully, within 30 s$");
    wait_message(
        &server,
        r"^worker [12] drained after \d+ requests, exiting$",
    );
}

/// `/health` is the worker's own, answered before the app's router: `GET`
/// (whatever the query) and `HEAD` answer, the latter with the length and
/// no body; any other method gets 405 naming the two.
#[test]
fn health_answers_get_and_head_and_refuses_other_methods() {
    let server = Server::ready(Options::default());
    let ask = |request: &str| {
        let (raw, closed) = exchange(server.addr, request.as_bytes(), PATIENCE);
        assert!(closed, "{request}: the server kept the connection");
        String::from_utf8(raw).unwrap()
    };
    let head = ask("HEAD /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let (fields, body) = head.split_once("\r\n\r\n").expect("a whole head");
    let parsed = parse_head(fields).unwrap();
    assert_eq!(parsed.status, 200, "{head}");
    assert!(parsed.content_length.is_some_and(|n| n > 100), "{head}");
    assert_eq!(body, "", "HEAD answered with a body");
    let get = ask("GET /health?probe=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert!(get.starts_with("HTTP/1.1 200 "), "{get}");
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let refused = ask(&format!(
            "{method} /health HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ));
        assert!(refused.starts_with("HTTP/1.1 405 "), "{refused}");
        assert!(
            refused
                .to_ascii_lowercase()
                .contains("\r\nallow: get,head\r\n"),
            "{refused}"
        );
    }
}

/// The access log's writer looks at its queue every 50 ms; a worker that
/// exits meanwhile has it write what is queued first, so a stop loses no
/// line of a request it served.
#[test]
fn a_stopping_worker_writes_its_last_access_lines() {
    let mut server = Server::ready(Options {
        workers: 1,
        ..Options::default()
    });
    for i in 0..3 {
        assert_eq!(
            server.get(&format!("/health?last-{i}")).unwrap().status,
            200
        );
    }
    server.signal(libc::SIGTERM);
    server.wait_exit(PATIENCE);
    let log = server.log();
    for i in 0..3 {
        assert!(
            log.lines()
                .any(|l| l.contains("ferricorn::access")
                    && l.contains(&format!("/health?last-{i} "))),
            "no access line for request {i}:\n{log}"
        );
    }
}
