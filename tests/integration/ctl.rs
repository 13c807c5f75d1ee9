//! The control socket as an operator uses it: `ferricorn status` lists the
//! workers, `ferricorn reload --wait` returns the reload's outcome (exit 0
//! when the new generation serves; 78 for a bad config and 1 for workers
//! that never become ready, the old generation serving on), the socket is
//! root's and the service user's only, and bad input gets an error answer,
//! never a crash.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use proptest::prelude::*;

use crate::harness::*;

/// A server with its control socket in a temp dir, started from a wrapper
/// whose workers exit at once or hang when `dir/mode` says so.
fn server_with_control(dir: &Path) -> (Server, PathBuf) {
    let socket = dir.join("control.sock");
    let exe = dir.join("ferricorn");
    let d = dir.display();
    std::fs::write(
        &exe,
        format!(
            "#!/bin/bash\n\
             if [ \"$1\" = worker ]; then\n\
               case \"$(cat {d}/mode 2>/dev/null)\" in\n\
                 exit) echo 'app failed to initialise' >&2; exit 1 ;;\n\
                 hang) exec sleep 600 ;;\n\
               esac\n\
             fi\n\
             exec -a \"$0\" {BIN} \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::ready(Options {
        exe: Some(exe),
        config: format!(
            "control_socket = \"{}\"\nboot_timeout = 3",
            socket.display()
        ),
        ..Options::default()
    });
    (server, socket)
}

/// The binary with `<args>` and the server's config, as an operator runs it;
/// a command that has not answered within a minute is ended (exit 124), so
/// a reload whose outcome never comes fails the test instead of hanging it.
fn cli(server: &Server, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(BIN)
        .arg("--config")
        .arg(&server.config_path)
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .env_remove("RUNTIME_DIRECTORY")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn status_lists_every_worker() {
    let dir = tempfile::tempdir().unwrap();
    let (server, socket) = server_with_control(dir.path());
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the service user's (and root's) only");
    let out = cli(&server, &["status"]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = table.lines();
    let head = lines.next().unwrap();
    assert!(
        head.contains(&format!("supervisor pid {}", server.pid()))
            && head.contains("generation 1, 2/2 workers ready"),
        "{table}"
    );
    assert!(lines
        .next()
        .unwrap()
        .split_whitespace()
        .eq(["SLOT", "PID", "GEN", "STATE", "AGE", "REQUESTS", "CONNS", "WS", "MEMORY"]));
    let mut pids: Vec<u32> = lines
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(cols.len(), 9, "{l}");
            assert_eq!((cols[2], cols[3]), ("1", "ready"), "{l}");
            assert!(cols[8].ends_with('M'), "memory read: {l}");
            cols[1].parse().unwrap()
        })
        .collect();
    pids.sort_unstable();
    let mut workers = server.worker_pids();
    workers.sort_unstable();
    assert_eq!(pids, workers, "{table}");
    // The same as JSON, with the requests each worker served.
    for _ in 0..10 {
        server.get("/health").unwrap();
    }
    let served = eventually("heartbeats carrying the requests", PATIENCE, || {
        let out = cli(&server, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let sum: u64 = v["workers"]
            .as_array()?
            .iter()
            .map(|w| w["requests"].as_u64().unwrap())
            .sum();
        (sum >= 10).then_some(sum)
    });
    assert!(served >= 10);
}

#[test]
fn reload_wait_reports_the_outcome_and_the_old_generation_serves_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _socket) = server_with_control(dir.path());
    let out = cli(&server, &["reload", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reload 1→2 complete in "));
    assert_eq!(server.health()["generation"], 2);
    let serving = server.distinct_health_pids(2);

    // Workers that exit at start: exit 1, generation 2 serves on.
    std::fs::write(dir.path().join("mode"), "exit").unwrap();
    let out = cli(&server, &["reload", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reload failed: new worker") && err.contains("generation 2 keeps serving"),
        "{err}"
    );
    assert_eq!(server.health()["generation"], 2);
    // Workers that never say ready: boot_timeout (3 s) ends it.
    std::fs::write(dir.path().join("mode"), "hang").unwrap();
    let out = cli(&server, &["reload", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not ready within boot_timeout"),
        "{}",
        text(&out)
    );
    std::fs::remove_file(dir.path().join("mode")).unwrap();
    // A bad config: exit 78 naming the key and file; nothing changes. The
    // supervisor finds a bad value; a file that does not parse at all
    // (which hides the socket's path) the client finds itself.
    let good = std::fs::read_to_string(&server.config_path).unwrap();
    for bad in ["keepalive = -1", "workers = \"lots\""] {
        std::fs::write(&server.config_path, format!("{good}\n{bad}\n")).unwrap();
        let out = cli(&server, &["reload", "--wait"]);
        assert_eq!(out.status.code(), Some(78), "{bad}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        let key = bad.split(' ').next().unwrap();
        assert!(err.contains(key) && err.contains("ferricorn.toml"), "{err}");
    }
    let mut still = server.distinct_health_pids(2);
    still.sort_unstable();
    let mut before = serving.clone();
    before.sort_unstable();
    assert_eq!(still, before, "generation 2's workers serve throughout");
    // Fixed: the next reload succeeds (generations 3 and 4 were spent
    // failing; a config that does not load spends none).
    std::fs::write(&server.config_path, good).unwrap();
    let out = cli(&server, &["reload", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(server.health()["generation"], 5);
}

#[test]
fn reload_without_a_control_socket_falls_back_to_sighup_given_the_pid() {
    // A supervisor from before the control socket (as after a package
    // upgrade, until a restart): none at the configured path.
    let mut server = Server::ready(Options::default());
    let missing = tempfile::tempdir().unwrap();
    let absent = missing.path().join("control.sock");
    let (config, pid) = (server.config_path.clone(), server.pid());
    let run = |extra: &[&str]| {
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .args(["reload", "--wait"])
            .args(extra)
            .env("FERRICORN_CONTROL_SOCKET", &absent)
            .env_remove("JOURNAL_STREAM")
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the supervisor"));
    let notes = server.notes().len();
    let out = run(&["--pid", &pid.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sent SIGHUP"));
    server.wait_note_after(notes, "READY=1");
    assert_eq!(server.health()["generation"], 2);
}

/// One raw exchange on the control socket: what came back.
fn exchange_ctl(socket: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn only_root_and_the_service_user_may_ask_and_bad_input_gets_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (server, socket) = server_with_control(dir.path());
    // (The temp dir is root's 0700: let nobody reach the socket's file,
    // and run a copy of the binary nobody may execute: the built one may
    // sit under a directory nobody can enter, as in a renamed copy's
    // checkout.)
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("cli");
    std::fs::create_dir(&bin).unwrap();
    let bin = bin.join("client");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Another user: the file's mode keeps it out...
    let as_nobody = |socket: &Path| {
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(&server.config_path)
            .arg("status")
            .env("FERRICORN_CONTROL_SOCKET", socket);
        cmd.uid(65534).gid(65534);
        cmd.output().unwrap()
    };
    let out = as_nobody(&socket);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ermission denied"),
        "{}",
        text(&out)
    );
    // ...and with the mode opened, the supervisor's credential check does.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody(&socket);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("uid 65534 may not use the control socket"),
        "{}",
        text(&out)
    );
    // Hostile lines: each gets one error answer.
    for (bytes, says) in [
        (&b"stop\n"[..], "unknown request"),
        (b"\xff\xfe\n", "not UTF-8"),
        (&[b'x'; 4096][..], "longer than 256 bytes"),
        (b"", "unknown request"),
    ] {
        let answer = exchange_ctl(&socket, bytes);
        let v: serde_json::Value =
            serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"));
        assert_eq!(v["answer"], "error", "{answer}");
        assert!(v["error"].as_str().unwrap().contains(says), "{answer}");
    }
    // More clients at once than it serves, all silent: the extra ones are
    // told so at once, and the supervisor answers again once they go.
    let silent: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    let busy = exchange_ctl(&socket, b"status\n");
    assert!(busy.contains("too many control clients"), "{busy}");
    drop(silent);
    let out = eventually("status once the silent clients left", PATIENCE, || {
        let out = cli(&server, &["status"]);
        out.status.success().then_some(out)
    });
    assert!(String::from_utf8_lossy(&out.stdout).contains("2/2 workers ready"));
}

/// Whatever bytes a client sends (a request excepted), it gets one error
/// answer and the supervisor carries on: 64 cases against one server.
#[test]
fn the_control_socket_answers_any_bytes_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (server, socket) = server_with_control(dir.path());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    });
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..400), |bytes| {
            let trimmed = String::from_utf8_lossy(&bytes).trim().to_owned();
            prop_assume!(!trimmed.starts_with("status") && !trimmed.starts_with("reload"));
            let answer = exchange_ctl(&socket, &bytes);
            let v: serde_json::Value = serde_json::from_str(&answer)
                .map_err(|e| TestCaseError::fail(format!("{e}: {answer:?}")))?;
            prop_assert_eq!(&v["answer"], "error", "{}", answer);
            prop_assert!(alive(server.pid()));
            Ok(())
        })
        .unwrap();
    assert_eq!(server.health()["status"], "healthy");
}
