//! The zero-downtime lifecycle: rolling reload by generation, heartbeat
//! timeouts, recycling, scaling, crash-loop backoff, watchdog.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;
use crate::websocket::{close_code, connect, runtime};

/// Continuous load: half the clients reuse keep-alive connections, half
/// open a new connection per request. Bounded: every client stops when told
/// or after [`Load::LIMIT`].
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stale: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    const LIMIT: Duration = Duration::from_secs(120);

    fn start(addr: SocketAddr, clients: usize) -> Load {
        let load = Load {
            stop: Arc::default(),
            ok: Arc::default(),
            failed: Arc::default(),
            stale: Arc::default(),
            errors: Arc::default(),
            threads: Vec::new(),
        };
        let mut threads = Vec::new();
        for i in 0..clients {
            let (stop, ok, failed, stale, errors) = (
                load.stop.clone(),
                load.ok.clone(),
                load.failed.clone(),
                load.stale.clone(),
                load.errors.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let started = Instant::now();
                let mut pooled = KeepAlive::new(addr);
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Load::LIMIT {
                    let result = if i % 2 == 0 {
                        pooled.get("/health")
                    } else {
                        get(addr, "/health")
                    };
                    match result {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.lock().unwrap().push(format!("status {}", r.status));
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.lock().unwrap().push(e.to_string());
                        }
                    }
                }
                stale.fetch_add(pooled.stale_retries, Ordering::Relaxed);
            }));
        }
        Load { threads, ..load }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `n` more requests have succeeded.
    fn wait_more(&self, n: u64) {
        let target = self.ok() + n;
        eventually(&format!("{n} more requests"), PATIENCE, || {
            assert_eq!(
                self.failed.load(Ordering::Relaxed),
                0,
                "{:?}",
                self.errors.lock().unwrap()
            );
            (self.ok() >= target).then_some(())
        });
    }

    /// Stops the clients; returns (ok, failed, stale keep-alive retries).
    fn finish(self) -> (u64, u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load thread");
        }
        let errors = self.errors.lock().unwrap().clone();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.stale.load(Ordering::Relaxed),
            errors,
        )
    }
}

/// SIGHUP, then RELOADING=1 (with MONOTONIC_USEC) and a later READY=1.
fn reload(server: &mut Server) {
    let seen = server.notes().len();
    server.signal(libc::SIGHUP);
    let reloading = server.wait_note_after(seen, "RELOADING=1");
    let note = server.notes()[reloading].clone();
    assert!(note.contains("MONOTONIC_USEC="), "{note}");
    server.wait_note_after(reloading + 1, "READY=1");
}

fn pid_set(server: &Server) -> BTreeSet<u32> {
    server.worker_pids().into_iter().collect()
}

#[test]
fn three_reloads_under_load_fail_no_request() {
    let mut server = Server::ready(Options::default());
    let load = Load::start(server.addr, 4);
    load.wait_more(500);
    for round in 0..3u64 {
        let before = pid_set(&server);
        assert_eq!(before.len(), 2);
        reload(&mut server);
        // After READY=1 a new connection reaches the new generation.
        assert_eq!(server.health()["generation"], round + 2);
        eventually("old generation gone", PATIENCE, || {
            let now = pid_set(&server);
            (now.len() == 2 && now.is_disjoint(&before)).then_some(())
        });
        load.wait_more(500);
    }
    // With the waits above, at least 3,000 requests by construction.
    load.wait_more(1000);
    let (ok, failed, stale, errors) = load.finish();
    eprintln!("three reloads: {ok} requests ok, {failed} failed, {stale} stale keep-alive retries");
    assert!(ok >= 3000, "only {ok} requests");
    assert_eq!(failed, 0, "{errors:?}");
}

#[test]
fn reload_runs_the_new_executable_on_disk() {
    let bin_dir = tempfile::tempdir().unwrap();
    let exe = copy_binary(bin_dir.path());
    let mut server = Server::ready(Options {
        exe: Some(exe.clone()),
        ..Options::default()
    });
    let old_build = server.health()["build"].as_str().unwrap().to_owned();
    let load = Load::start(server.addr, 2);
    load.wait_more(200);
    // A different build at the same path, installed the way a package
    // manager does it: write beside, rename over.
    let mut bytes = std::fs::read(&exe).unwrap();
    bytes.extend_from_slice(b"\0a different build\0");
    let staged = bin_dir.path().join("ferricorn.new");
    std::fs::write(&staged, bytes).unwrap();
    std::fs::set_permissions(&staged, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&staged, &exe).unwrap();
    reload(&mut server);
    let health = server.health();
    assert_ne!(health["build"].as_str().unwrap(), old_build);
    assert_eq!(health["generation"], 2);
    load.wait_more(200);
    let (ok, failed, _, errors) = load.finish();
    assert_eq!(failed, 0, "{errors:?}");
    assert!(ok > 0);
}

#[test]
fn websocket_gets_1012_on_reload_and_reconnects_to_new_generation() {
    let mut server = Server::ready(Options::default());
    let rt = runtime();
    let mut ws = rt.block_on(connect(server.addr));
    rt.block_on(async {
        ws.send(Message::text("hi")).await.unwrap();
        ws.next().await.unwrap().unwrap();
    });
    reload(&mut server);
    assert_eq!(rt.block_on(close_code(&mut ws)), Some(CloseCode::Restart));
    assert_eq!(server.health()["generation"], 2);
    rt.block_on(async {
        let mut again = connect(server.addr).await;
        again.send(Message::text("again")).await.unwrap();
        assert_eq!(again.next().await.unwrap().unwrap(), Message::text("again"));
    });
}

#[test]
fn invalid_config_on_reload_keeps_old_generation() {
    let mut server = Server::ready(Options::default());
    let before = pid_set(&server);
    std::fs::write(&server.config_path, "workers = 2\nworkerz = 1\n").unwrap();
    reload(&mut server);
    let status = server.status().unwrap();
    assert!(
        status.contains("FAILED") && status.contains("workerz"),
        "{status}"
    );
    assert!(server.log().contains("reload failed"), "{}", server.log());
    assert_eq!(pid_set(&server), before);
    let health = server.health();
    assert_eq!(health["generation"], 1);
    assert!(before.contains(&(health["pid"].as_u64().unwrap() as u32)));
}

#[test]
fn stopped_worker_is_killed_after_timeout_and_replaced() {
    let timeout = 2.0;
    let server = Server::ready(Options {
        config: format!("timeout = {timeout}"),
        ..Options::default()
    });
    let before = server.worker_pids();
    let victim = before[0];
    let stopped_at = Instant::now();
    send_signal(victim, libc::SIGSTOP);
    eventually("stopped worker replaced", PATIENCE, || {
        let now = server.worker_pids();
        (now.len() == 2 && !now.contains(&victim)).then_some(())
    });
    let took = stopped_at.elapsed();
    eprintln!("SIGSTOPped worker replaced after {took:?} (timeout {timeout}s)");
    // A generous margin: shared CI machines stall.
    assert!(
        took < Duration::from_secs_f64(timeout + 5.0),
        "took {took:?}"
    );
    // Silence is counted from the last heartbeat, which came up to one
    // heartbeat interval (timeout / 4) before the SIGSTOP.
    assert!(
        took >= Duration::from_secs_f64(timeout * 0.75),
        "killed before timeout: {took:?}"
    );
    server.wait_log("no heartbeat");
    assert_eq!(server.distinct_health_pids(2).len(), 2);
}

#[test]
fn max_requests_recycles_workers_without_failures() {
    let server = Server::ready(Options {
        config: "max_requests = 50\nmax_requests_jitter = 10".into(),
        ..Options::default()
    });
    let first = pid_set(&server);
    let load = Load::start(server.addr, 2);
    load.wait_more(400);
    let (ok, failed, stale, errors) = load.finish();
    eprintln!("recycling: {ok} ok, {failed} failed, {stale} stale keep-alive retries");
    assert_eq!(failed, 0, "{errors:?}");
    server.wait_log("worker to be replaced");
    server.wait_log("successor ready");
    let now = pid_set(&server);
    assert!(
        now.is_disjoint(&first) || now != first,
        "no worker was replaced"
    );
}

#[test]
fn ttin_and_ttou_scale_two_three_two() {
    let server = Server::ready(Options::default());
    assert_eq!(server.worker_pids().len(), 2);
    server.signal(libc::SIGTTIN);
    assert_eq!(server.distinct_health_pids(3).len(), 3);
    eventually("3 workers", PATIENCE, || {
        (server.worker_pids().len() == 3).then_some(())
    });
    server.signal(libc::SIGTTOU);
    eventually("back to 2 workers", PATIENCE, || {
        (server.worker_pids().len() == 2).then_some(())
    });
    server.signal(libc::SIGTTOU);
    eventually("1 worker", PATIENCE, || {
        (server.worker_pids().len() == 1).then_some(())
    });
    // Never below one.
    server.signal(libc::SIGTTOU);
    server.wait_log("signal received intent=RemoveWorker");
    assert_eq!(server.health()["status"], "healthy");
    assert_eq!(server.worker_pids().len(), 1);
}

/// An executable that runs the supervisor but whose workers die at once,
/// as an app that cannot initialise would.
fn failing_worker_exe(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("ferricorn");
    let script = format!(
        "#!/bin/bash\nif [ \"$1\" = worker ]; then echo 'app failed to initialise' >&2; exit 1; fi\nexec -a \"$0\" {BIN} \"$@\"\n"
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

#[test]
fn workers_failing_at_first_start_back_off_then_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut server = Server::start(Options {
        exe: Some(failing_worker_exe(dir.path())),
        ..Options::default()
    });
    let status = server.wait_exit(PATIENCE);
    let took = started.elapsed();
    assert_eq!(status.code(), Some(3), "{}", server.log());
    let spawns = server.log().matches("worker spawned").count();
    eprintln!("first start: {spawns} spawn attempts over {took:?}, then exit 3");
    // Three attempts per slot, spaced 250 ms then 500 ms: no spin.
    assert!((5..=6).contains(&spawns), "{}", server.log());
    assert!(took >= Duration::from_millis(700), "{took:?}");
    assert!(server.log().contains("no worker could start"));
    assert!(!server.notes().iter().any(|n| n.contains("READY=1")));
}

#[test]
fn crash_loop_after_start_backs_off_and_shows_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let exe = copy_binary(dir.path());
    let mut server = Server::ready(Options {
        exe: Some(exe.clone()),
        ..Options::default()
    });
    // The app breaks on disk; a worker dies; every replacement dies too.
    std::fs::remove_file(&exe).unwrap();
    failing_worker_exe(dir.path());
    let victim = server.worker_pids()[0];
    send_signal(victim, libc::SIGKILL);
    eventually("crash loop in STATUS=", PATIENCE, || {
        server
            .status()
            .filter(|s| s.contains("crash loop"))
            .map(|_| ())
    });
    let window = Instant::now();
    eventually("a few restarts", PATIENCE, || {
        (server.log().matches("worker spawned").count() >= 5).then_some(())
    });
    let spawns = server.log().matches("worker spawned").count();
    let elapsed = window.elapsed();
    eprintln!("crash loop: {spawns} spawns so far, {elapsed:?} since backoff began");
    // 250 + 500 + 1000 ms of backoff before the fifth spawn: not a spin.
    assert!(elapsed >= Duration::from_millis(1000), "{elapsed:?}");
    // The healthy worker kept serving throughout, and the supervisor lives.
    assert_eq!(server.health()["status"], "healthy");
    assert!(server.child.try_wait().unwrap().is_none());
}

#[test]
fn watchdog_stops_when_all_workers_are_wedged() {
    let mut server = Server::ready(Options {
        wrapper_env: "WATCHDOG_USEC=400000 WATCHDOG_PID=$$".into(),
        config: "timeout = 30".into(),
        ..Options::default()
    });
    let pets = |s: &mut Server| {
        s.notes()
            .iter()
            .filter(|n| n.lines().any(|l| l == "WATCHDOG=1"))
            .count()
    };
    eventually("WATCHDOG=1 while healthy", PATIENCE, || {
        (pets(&mut server) >= 3).then_some(())
    });
    let workers = server.worker_pids();
    for &pid in &workers {
        send_signal(pid, libc::SIGSTOP);
    }
    server.wait_log("withholding WATCHDOG=1");
    let withheld_at = pets(&mut server);
    // Several watchdog intervals (200 ms each) pass without a pet.
    let since = Instant::now();
    eventually("more withheld pets", PATIENCE, || {
        (server.log().matches("withholding WATCHDOG=1").count() >= 4).then_some(())
    });
    assert!(since.elapsed() >= Duration::from_millis(400));
    assert_eq!(
        pets(&mut server),
        withheld_at,
        "WATCHDOG=1 sent while every worker was stopped"
    );
    for &pid in &workers {
        send_signal(pid, libc::SIGCONT);
    }
    eventually("WATCHDOG=1 again", PATIENCE, || {
        (pets(&mut server) > withheld_at).then_some(())
    });
}

#[test]
fn health_carries_the_supervisor_figures() {
    let mut server = Server::ready(Options::default());
    let health = server.health();
    let figures = &health["supervisor"];
    assert_eq!(figures["generation"], 1, "{health}");
    assert_eq!(figures["workers_target"], 2, "{health}");
    assert_eq!(figures["workers_ready"], 2, "{health}");
    assert_eq!(figures["restarts"], 0, "{health}");
    assert!(
        figures["requests_per_second"].as_f64().is_some(),
        "{health}"
    );
    assert!(
        health["counters"]["requests"].as_u64().is_some(),
        "{health}"
    );
    // The same figures as STATUS=.
    let status = server.status().unwrap();
    assert!(status.starts_with("gen 1: 2/2 workers ready"), "{status}");
}

/// Outside a delegated cgroup the supervisor measures each worker's RSS
/// from /proc; past `memory_high` the worker is replaced gracefully.
#[test]
fn memory_high_recycles_gracefully_from_rss() {
    let server = Server::ready(Options {
        // Below any worker's resident set: every worker is over it.
        config: "memory_high = \"1M\"".into(),
        ..Options::default()
    });
    let first = pid_set(&server);
    let load = Load::start(server.addr, 2);
    server.wait_log("worker above memory_high");
    server.wait_log("successor ready");
    eventually("a worker replaced", PATIENCE, || {
        (!pid_set(&server).is_superset(&first)).then_some(())
    });
    load.wait_more(200);
    let (_, failed, _, errors) = load.finish();
    assert_eq!(failed, 0, "{errors:?}");
    assert!(server.log().contains("worker memory measured from /proc"));
}

/// Listening sockets on `port` (state 0A in /proc/net/tcp), one per
/// SO_REUSEPORT slot.
fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "0A"
        })
        .count()
}

#[test]
fn reuse_port_gives_each_slot_a_socket_that_survives_reload_and_scaling() {
    let mut server = Server::ready(Options {
        socket: Socket::SelfBound,
        config: "reuse_port = true".into(),
        ..Options::default()
    });
    let port = server.addr.port();
    assert!(
        server.log().contains("reuse_port, one per worker"),
        "{}",
        server.log()
    );
    assert_eq!(listening_sockets(port), 2);
    // The kernel spreads new connections over both workers' sockets.
    assert_eq!(server.distinct_health_pids(2).len(), 2);

    let load = Load::start(server.addr, 4);
    load.wait_more(300);
    let before = pid_set(&server);
    reload(&mut server);
    assert_eq!(server.health()["generation"], 2);
    eventually("old generation gone", PATIENCE, || {
        let now = pid_set(&server);
        (now.len() == 2 && now.is_disjoint(&before)).then_some(())
    });
    // The new workers took over their slots' sockets: still two, not four.
    assert_eq!(listening_sockets(port), 2);
    load.wait_more(300);

    server.signal(libc::SIGTTIN);
    eventually("a third slot socket", PATIENCE, || {
        (listening_sockets(port) == 3).then_some(())
    });
    assert_eq!(server.distinct_health_pids(3).len(), 3);
    load.wait_more(300);
    server.signal(libc::SIGTTOU);
    eventually("the third slot's socket closed", PATIENCE, || {
        (listening_sockets(port) == 2 && server.worker_pids().len() == 2).then_some(())
    });
    let (ok, failed, _, errors) = load.finish();
    eprintln!("reuse_port reload and scaling: {ok} ok, {failed} failed {errors:?}");
    // Scaling down may reset a connection still queued on the closed
    // socket (no tcp_migrate_req); the reload must lose nothing, and the
    // per-step waits above assert that as they go.
    assert!(failed <= 4, "{errors:?}");
}
