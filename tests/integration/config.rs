//! Bad config exits non-zero naming the key and the layer it came from.

use std::process::Command;

use crate::harness::BIN;

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
        assert_ne!(code, 0, "{sub} accepted FERRICORN_WORKERS=lots");
        assert!(err.contains("workers"), "{sub}: {err}");
        assert!(err.contains("FERRICORN_WORKERS"), "{sub}: {err}");
    }
}

#[test]
fn unknown_toml_key_names_key_and_file() {
    let (_dir, path) = config_file("workers = 2\nworkerz = 3\n");
    for sub in ["serve", "check-config"] {
        let (code, err) = run(&["--config", &path, sub], &[]);
        assert_ne!(code, 0);
        assert!(
            err.contains("workerz") && err.contains(&path),
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
    assert_ne!(code, 0);
    assert!(
        err.contains("workers") && err.contains("command-line flag"),
        "{err}"
    );
}

#[test]
fn missing_explicit_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let (code, err) = run(&["--config", path.to_str().unwrap(), "check-config"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("absent.toml"), "{err}");
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
