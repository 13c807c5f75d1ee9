//! Bad config exits non-zero naming the key and the layer it came from.

use std::process::Command;

use crate::harness::BIN;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("LISTEN_FDS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run ferricorn");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_env_value_names_key_and_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.toml");
    std::fs::write(&path, "").unwrap();
    let path = path.to_str().unwrap();
    for sub in ["serve", "check-config"] {
        let (code, err) = run(&["--config", path, sub], &[("FERRICORN_WORKERS", "lots")]);
        assert_ne!(code, 0, "{sub} accepted FERRICORN_WORKERS=lots");
        assert!(err.contains("workers"), "{sub}: {err}");
        assert!(err.contains("FERRICORN_WORKERS"), "{sub}: {err}");
    }
}

#[test]
fn unknown_toml_key_names_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferricorn.toml");
    std::fs::write(&path, "workers = 2\nworkerz = 3\n").unwrap();
    let path = path.to_str().unwrap();
    for sub in ["serve", "check-config"] {
        let (code, err) = run(&["--config", path, sub], &[]);
        assert_ne!(code, 0);
        assert!(
            err.contains("workerz") && err.contains(path),
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
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferricorn.toml");
    std::fs::write(&path, "workers = 5\nkeepalive = 9\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "--config",
            path.to_str().unwrap(),
            "--log-level",
            "debug",
            "check-config",
        ])
        .env("FERRICORN_KEEPALIVE", "7")
        .output()
        .unwrap();
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
