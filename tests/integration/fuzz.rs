//! Property tests over the two parsers that take outside input: the config
//! loader (a TOML file of any content, any flag values) and the control
//! channel (any line a worker or supervisor could send). No input may panic;
//! what loads must be valid; what is encoded must decode to itself.
//!
//! Bounded: `FUZZ_CASES` cases each (default 2,000), part of `cargo test`.

use std::io::Write;

use ferricorn::config::{Loader, Overrides};
use ferricorn::control::{Counters, SupervisorStatus, WorkerMessage};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

fn runner() -> TestRunner {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

const KEYS: &[&str] = &[
    "bind",
    "backlog",
    "reuse_port",
    "workers",
    "threads",
    "timeout",
    "graceful_timeout",
    "boot_timeout",
    "keepalive",
    "max_requests",
    "max_requests_jitter",
    "worker_connections",
    "limit_request_line",
    "limit_request_fields",
    "limit_request_field_size",
    "ws_max_size",
    "ws_ping_interval",
    "ws_ping_timeout",
    "memory_high",
    "memory_max",
    "access_log",
    "log_level",
    "log_format",
    "workerz",
    "",
    "bind.x",
];

/// A TOML value of any type, some of them nonsense for the key.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("nan".to_owned()),
        Just("-inf".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<String>().prop_map(|s| format!("{s:?}")),
        proptest::sample::select(vec![
            "\"512M\"",
            "\"1G\"",
            "\"9999999999T\"",
            "\"12Q\"",
            "\"\"",
            "\"info\"",
            "\"json\"",
            "\"127.0.0.1:0\"",
            "\"[::1]:80\"",
            "\"nope\""
        ])
        .prop_map(str::to_owned),
        Just("[1, 2]".to_owned()),
        Just("{ a = 1 }".to_owned()),
    ]
}

/// A config file: `key = value` lines, with the keys they set (empty for
/// raw garbage, whose keys are unknown).
fn file() -> impl Strategy<Value = (String, Vec<String>)> {
    prop_oneof![
        4 => proptest::collection::vec((proptest::sample::select(KEYS), value()), 0..6)
            .prop_map(|lines| {
                let text = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
                // "bind.x" sets the key `bind` (to a table).
                let keys = lines.iter().map(|(k, _)| k.split('.').next().unwrap_or_default().to_owned()).collect();
                (text, keys)
            }),
        1 => any::<String>().prop_map(|text| (text, Vec::new())),
    ]
}

#[test]
fn config_loader_never_panics_and_loads_only_valid_configs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferricorn.toml");
    let printed = dir.path().join("printed.toml");
    let file_name = path.to_str().unwrap().to_owned();
    let strategy = (
        file(),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<usize>()),
    );
    let started = std::time::Instant::now();
    let (loaded, refused) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
    runner()
        .run(&strategy, |((text, keys), bind, workers)| {
            std::fs::File::create(&path)
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let loader = Loader {
                explicit_path: Some(path.clone()),
                overrides: Overrides {
                    bind: bind.clone(),
                    workers,
                    ..Overrides::default()
                },
            };
            match loader.load() {
                Ok(config) => {
                    loaded.set(loaded.get() + 1);
                    // What check-config prints loads back to the same
                    // config, and so does the JSON line a worker reads.
                    let toml = config.to_toml();
                    std::fs::write(&printed, &toml).unwrap();
                    let again = Loader {
                        explicit_path: Some(printed.clone()),
                        overrides: Overrides::default(),
                    }
                    .load();
                    prop_assert!(
                        again.is_ok(),
                        "printed config refused: {:?}\n{}",
                        again.err().map(|e| e.to_string()),
                        toml
                    );
                    prop_assert_eq!(again.unwrap(), config.clone());
                    let json = serde_json::to_string(&config).unwrap();
                    let decoded: ferricorn::config::Config = serde_json::from_str(&json).unwrap();
                    prop_assert_eq!(decoded, config);
                }
                Err(e) => {
                    refused.set(refused.get() + 1);
                    let message = e.to_string();
                    // It says where to look: the file, or the flag.
                    let from_flag = message.contains("(from command-line flag)");
                    prop_assert!(
                        message.contains(&file_name) || from_flag,
                        "names no source: {}",
                        message
                    );
                    // And what to fix: a key the input set, or (a file
                    // that is not TOML) the line and column.
                    let flags = [bind.as_ref().map(|_| "bind"), workers.map(|_| "workers")];
                    let named_key = keys
                        .iter()
                        .map(String::as_str)
                        .chain(flags.into_iter().flatten())
                        .any(|k| {
                            !k.is_empty()
                                && (message.contains(&format!("{k}:"))
                                    || message.contains(&format!("{k}.")))
                        });
                    let syntax = message.contains("line") && message.contains("column");
                    prop_assert!(
                        named_key || syntax || keys.is_empty(),
                        "names no key of {:?}: {}",
                        keys,
                        message
                    );
                }
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "config fuzz: {} inputs ({} loaded, {} refused) in {:?}",
        loaded.get() + refused.get(),
        loaded.get(),
        refused.get(),
        started.elapsed()
    );
    // Both answers were exercised, not one of them only.
    assert!(loaded.get() > 0 && refused.get() > 0);
}

fn message() -> impl Strategy<Value = WorkerMessage> {
    prop_oneof![
        Just(WorkerMessage::Ready),
        Just(WorkerMessage::Draining),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(r, c, w)| {
            WorkerMessage::Heartbeat(Counters {
                requests: r,
                connections: c,
                websockets: w,
            })
        }),
        proptest::collection::vec(
            proptest::sample::select(('a'..='z').chain(['_']).collect::<Vec<_>>()),
            1..20
        )
        .prop_map(|c| WorkerMessage::Retire(c.into_iter().collect())),
    ]
}

/// A message as the reader on the other end gets it: one line, newline cut.
fn wire(m: &WorkerMessage) -> String {
    let line = m.encode();
    line.strip_suffix('\n').expect("one line").to_owned()
}

#[test]
fn control_lines_never_panic_and_round_trip() {
    let started = std::time::Instant::now();
    let mut runner = runner();
    let line = prop_oneof![
        any::<String>(),
        // Near misses of real messages.
        (
            proptest::sample::select(vec![
                "ready",
                "heartbeat",
                "retire",
                "draining",
                "HEARTBEAT"
            ]),
            proptest::collection::vec(any::<String>(), 0..5)
        )
            .prop_map(|(w, rest)| format!("{w} {}", rest.join(" "))),
    ];
    runner
        .run(&line, |line| {
            // Either a message or an error; a decoded one encodes back to
            // a line that decodes to it.
            if let Ok(m) = WorkerMessage::decode(&line) {
                prop_assert_eq!(WorkerMessage::decode(&wire(&m)).unwrap(), m);
            }
            // The worker's side: status and config lines from the supervisor.
            let _ = serde_json::from_str::<SupervisorStatus>(&line);
            let _ = serde_json::from_str::<ferricorn::config::Config>(&line);
            Ok(())
        })
        .unwrap();
    runner
        .run(&message(), |m| {
            prop_assert_eq!(WorkerMessage::decode(&wire(&m)).unwrap(), m);
            Ok(())
        })
        .unwrap();
    eprintln!(
        "control fuzz: 2 × {} inputs in {:?}",
        runner.config().cases,
        started.elapsed()
    );
}
