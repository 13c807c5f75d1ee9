//! Bad config exits non-zero naming the key and the layer it came from.

use std::process::Command;

use std::io::{Read, Write};

use crate::harness::*;

/// The exit code of an invalid config (EX_CONFIG), as the README documents.
const EXIT_CONFIG: i32 = 78;
/// The exit code of a bad command line.
const EXIT_USAGE: i32 = 2;

/// Runs the binary to its end: (exit code, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = output(args, env);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn output(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("LISTEN_FDS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run ferricorn")
}

/// A config file holding `text` in a new temp dir (dropped with it).
fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferricorn.toml");
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap().to_owned();
    (dir, path)
}

#[test]
fn bad_env_value_names_key_and_variable() {
    let (_dir, path) = config_file("");
    for sub in ["serve", "check-config"] {
        let (code, err) = run(&["--config", &path, sub], &[("FERRICORN_WORKERS", "lots")]);
        assert_eq!(
            code, EXIT_CONFIG,
            "{sub} with FERRICORN_WORKERS=lots: {err}"
        );
        assert!(err.contains("workers"), "{sub}: {err}");
        assert!(err.contains("FERRICORN_WORKERS"), "{sub}: {err}");
    }
}

#[test]
fn unknown_toml_key_names_key_and_file() {
    let (_dir, path) = config_file("workers = 2\nworkerz = 3\n");
    for sub in ["serve", "check-config"] {
        let (code, err) = run(&["--config", &path, sub], &[]);
        assert_eq!(code, EXIT_CONFIG, "{sub}: {err}");
        assert!(
            err.contains("workerz") && err.contains(&path),
            "{sub}: {err}"
        );
    }
}

#[test]
fn a_file_that_is_not_toml_is_named_with_the_line() {
    let (_dir, path) = config_file("workers = 2\nbind = [\n");
    for sub in ["serve", "check-config"] {
        let (code, err) = run(&["--config", &path, sub], &[]);
        assert_eq!(code, EXIT_CONFIG, "{sub}: {err}");
        assert!(
            err.contains(&path) && err.contains("line 2"),
            "{sub}: {err}"
        );
    }
}

#[test]
fn out_of_range_flag_names_the_flag() {
    let (code, err) = run(
        &["--config", "/dev/null", "--workers", "0", "check-config"],
        &[],
    );
    assert_eq!(code, EXIT_CONFIG, "{err}");
    assert!(
        err.contains("workers") && err.contains("command-line flag"),
        "{err}"
    );
}

#[test]
fn missing_explicit_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    for sub in ["serve", "check-config"] {
        let (code, err) = run(&["--config", path.to_str().unwrap(), sub], &[]);
        assert_eq!(code, EXIT_CONFIG, "{sub}: {err}");
        assert!(err.contains("absent.toml"), "{sub}: {err}");
    }
}

#[test]
fn a_bad_command_line_exits_2_and_says_why() {
    for args in [
        &["--no-such-flag", "serve"][..],
        &["--workers", "two", "serve"],
        &["serv"],
    ] {
        let (code, err) = run(args, &[]);
        assert_eq!(code, EXIT_USAGE, "{args:?}: {err}");
        assert!(err.contains("error:"), "{args:?}: {err}");
    }
}

#[test]
fn check_config_prints_the_resolved_layers() {
    let (_dir, path) = config_file("workers = 5\nkeepalive = 9\n");
    let out = output(
        &["--config", &path, "--log-level", "debug", "check-config"],
        &[("FERRICORN_KEEPALIVE", "7")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // file < env < flags
    assert!(text.contains("workers = 5"), "{text}");
    assert!(text.contains("keepalive = 7.0"), "{text}");
    assert!(text.contains("log_level = \"debug\""), "{text}");
}

#[test]
fn without_a_file_the_defaults_serve() {
    // As on a fresh machine: no --config and no /etc file is not an
    // error (Gunicorn runs with no config file too).
    if std::path::Path::new("/etc/ferricorn/ferricorn.toml").exists() {
        eprintln!("skipped: /etc/ferricorn/ferricorn.toml exists on this machine");
        return;
    }
    let out = output(&["check-config"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bind = \"127.0.0.1:8097\""), "{text}");
}

/// Under socket activation a client may already wait in systemd's backlog
/// when the config turns out invalid: the start waits (4 s) for a fix,
/// reading the file again, and serves that client once it is fixed.
#[test]
fn an_invalid_config_with_a_client_waiting_is_read_again_and_the_client_served() {
    let mut server = Server::start(Options {
        workers: 1,
        config: "workerz = 1".into(),
        queued_client: true,
        ..Options::default()
    });
    server.wait_log("clients are waiting on the socket");
    std::fs::write(&server.config_path, "workers = 1\n").unwrap();
    server.wait_ready();
    let mut client = server.queued_client.take().expect("queued client");
    client
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    client.read_to_end(&mut raw).unwrap();
    assert_eq!(
        statuses(&raw),
        vec![200],
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let log = server.log();
    assert_eq!(log.matches("workerz: unknown key").count(), 1, "{log}");
    assert!(log.contains("the configuration is valid now"), "{log}");
}

#[test]
fn an_invalid_config_with_a_client_waiting_exits_78_when_not_fixed() {
    let mut server = Server::start(Options {
        config: "workerz = 1".into(),
        queued_client: true,
        ..Options::default()
    });
    let status = server.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(EXIT_CONFIG), "{}", server.log());
    let log = server.log();
    assert!(log.contains("reading"), "{log}");
    assert_eq!(log.matches("workerz: unknown key").count(), 1, "{log}");
}

#[test]
fn an_invalid_config_with_no_client_waiting_exits_78_at_once() {
    let mut server = Server::start(Options {
        config: "workerz = 1".into(),
        ..Options::default()
    });
    let status = server.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(EXIT_CONFIG), "{}", server.log());
    let log = server.log();
    assert!(
        !log.contains("reading"),
        "it waited with no client waiting:\n{log}"
    );
    assert!(log.contains("workerz: unknown key"), "{log}");
}

#[test]
fn the_redis_url_comes_from_a_credential_file_and_its_password_is_never_printed() {
    let credentials = tempfile::tempdir().unwrap();
    std::fs::write(
        credentials.path().join("redis-url"),
        "redis://:s3cret@127.0.0.1:6379/\n",
    )
    .unwrap();
    let creds = credentials.path().to_str().unwrap();
    // A relative name is read from $CREDENTIALS_DIRECTORY (LoadCredential=).
    let (_dir, path) = config_file("pubsub_url_file = \"redis-url\"\n");
    let out = output(
        &["--config", &path, "check-config"],
        &[("CREDENTIALS_DIRECTORY", creds)],
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("pubsub_url_file = \"redis-url\""),
        "{printed}"
    );
    assert!(!printed.contains("s3cret"), "{printed}");
    // Without the directory the file is not there: the key and its file
    // are named.
    let (code, err) = run(&["--config", &path, "check-config"], &[]);
    assert_eq!(code, EXIT_CONFIG, "{err}");
    assert!(
        err.contains("pubsub_url_file: cannot read redis-url"),
        "{err}"
    );
    assert!(err.contains(&path), "{err}");
    // A URL given inline is printed without its password.
    let (_dir, inline) = config_file("pubsub_url = \"redis://:s3cret@127.0.0.1:6379/\"\n");
    let out = output(&["--config", &inline, "check-config"], &[]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        printed.contains("pubsub_url = \"redis://:****@127.0.0.1:6379/\""),
        "{printed}"
    );
    // Both at once, or not a Redis URL: refused, naming the key.
    let (_dir, both) =
        config_file("pubsub_url = \"redis://127.0.0.1/\"\npubsub_url_file = \"redis-url\"\n");
    let (code, err) = run(
        &["--config", &both, "check-config"],
        &[("CREDENTIALS_DIRECTORY", creds)],
    );
    assert_eq!(code, EXIT_CONFIG, "{err}");
    assert!(
        err.contains("pubsub_url_file: is set together with pubsub_url"),
        "{err}"
    );
    let (code, err) = run(&["check-config"], &[("FERRICORN_PUBSUB_URL", "http://x/")]);
    assert_eq!(code, EXIT_CONFIG, "{err}");
    assert!(
        err.contains("pubsub_url: \"http://x/\" is neither \"embedded\" nor a redis://"),
        "{err}"
    );
    assert!(err.contains("FERRICORN_PUBSUB_URL"), "{err}");
}

#[test]
fn proxy_keys_name_the_bad_entry_and_its_source() {
    // Gunicorn's comma-separated string, or a TOML list.
    let (_dir, path) = config_file("forwarded_allow_ips = [\"10.0.0.0/8\", \"proxy.local\"]\n");
    let (code, err) = run(&["--config", &path, "check-config"], &[]);
    assert_eq!(code, EXIT_CONFIG, "{err}");
    assert!(
        err.contains("forwarded_allow_ips")
            && err.contains("\"proxy.local\"")
            && err.contains(&path),
        "{err}"
    );
    let (code, err) = run(
        &["check-config"],
        &[("FERRICORN_FORWARDED_ALLOW_IPS", "127.0.0.1,nope")],
    );
    assert_eq!(code, EXIT_CONFIG, "{err}");
    assert!(err.contains("FERRICORN_FORWARDED_ALLOW_IPS"), "{err}");
    let (code, err) = run(
        &["check-config"],
        &[("FERRICORN_ACCESS_LOG_FORMAT", "%(h)s %(Z)s")],
    );
    assert_eq!(code, EXIT_CONFIG, "{err}");
    assert!(
        err.contains("access_log_format: unknown atom %(Z)s"),
        "{err}"
    );
    let (code, err) = run(&["--bind", "unix:relative.sock", "check-config"], &[]);
    assert_eq!(code, EXIT_CONFIG, "{err}");
    assert!(err.contains("bind") && err.contains("absolute"), "{err}");
    // A valid list prints back as Gunicorn writes it.
    let (_dir, path) = config_file("forwarded_allow_ips = [\"10.0.0.0/8\", \"192.0.2.1\"]\n");
    let out = output(&["--config", &path, "check-config"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("forwarded_allow_ips = \"10.0.0.0/8,192.0.2.1\""),
        "{text}"
    );
}

#[test]
fn a_credential_is_a_config_layer_whose_values_are_never_printed() {
    // LoadCredential=ferricorn.toml:/etc/ferricorn/secrets.toml in a
    // drop-in: systemd puts it in $CREDENTIALS_DIRECTORY.
    let credentials = tempfile::tempdir().unwrap();
    let secret = credentials.path().join("ferricorn.toml");
    std::fs::write(
        &secret,
        "pubsub_url = \"redis://app:s3cret@127.0.0.1:6379/\"\n\
         [app]\ndatabase_url = \"postgres://app:hunter2@db/chat\"\n",
    )
    .unwrap();
    let creds = credentials.path().to_str().unwrap();
    // The file sets the app's other settings; the credential overrides it.
    let (_dir, path) = config_file(
        "workers = 3\n[app]\ndatabase_url = \"postgres://placeholder\"\nregion = \"eu\"\n",
    );
    let out = output(
        &["--config", &path, "check-config"],
        &[("CREDENTIALS_DIRECTORY", creds)],
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !printed.contains("s3cret") && !printed.contains("hunter2"),
        "{printed}"
    );
    // A key the credential sets is hidden whichever layer's value won (that
    // the credential's wins is shown by its bad value below).
    assert!(!printed.contains("placeholder"), "{printed}");
    assert!(printed.contains("pubsub_url = \"****\""), "{printed}");
    assert!(printed.contains("database_url = \"****\""), "{printed}");
    assert!(
        printed.contains("region = \"eu\"") && printed.contains("workers = 3"),
        "{printed}"
    );
    assert!(
        printed.contains("< credential ferricorn.toml <"),
        "{printed}"
    );
    // A bad value in it is named with the credential's path, not echoed.
    std::fs::write(&secret, "workers = \"hunter2\"\n").unwrap();
    let (code, err) = run(
        &["--config", &path, "check-config"],
        &[("CREDENTIALS_DIRECTORY", creds)],
    );
    assert_eq!(code, EXIT_CONFIG, "{err}");
    assert!(
        err.contains("workers") && err.contains(secret.to_str().unwrap()),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn check_config_quiet_says_nothing_about_a_valid_config() {
    let (_dir, path) = config_file("workers = 2\n");
    let out = output(&["--config", &path, "check-config", "--quiet"], &[]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    let (_dir, bad) = config_file("workers = 0\n");
    let (code, err) = run(&["--config", &bad, "check-config", "--quiet"], &[]);
    assert_eq!(code, EXIT_CONFIG, "{err}");
    assert!(err.contains("workers: must be at least 1"), "{err}");
}

#[test]
fn metrics_bind_names_a_bad_address_and_is_never_the_public_socket() {
    let (code, err) = run(
        &["check-config"],
        &[("FERRICORN_METRICS_BIND", "localhost")],
    );
    assert_eq!(code, EXIT_CONFIG, "{err}");
    assert!(
        err.contains("metrics_bind") && err.contains("FERRICORN_METRICS_BIND"),
        "{err}"
    );
    let (_dir, path) =
        config_file("bind = \"127.0.0.1:8097\"\nmetrics_bind = \"127.0.0.1:8097\"\n");
    let (code, err) = run(&["--config", &path, "serve"], &[]);
    assert_eq!(code, EXIT_CONFIG, "{err}");
    assert!(
        err.contains("metrics_bind: is the public socket") && err.contains(&path),
        "{err}"
    );
    // A metrics port in use stops the start, as the public one does.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (_dir, path) = config_file(&format!(
        "bind = \"127.0.0.1:0\"\nmetrics_bind = \"{addr}\"\n"
    ));
    let (code, err) = run(&["--config", &path, "serve"], &[]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains(&format!("cannot bind {addr}")), "{err}");
}
