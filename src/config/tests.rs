//! Defaults, ranges and ceilings of the config, and sizes as written.

use super::*;

#[test]
fn byte_sizes_parse_with_units() {
    assert_eq!("512".parse(), Ok(ByteSize(512)));
    assert_eq!("64M".parse(), Ok(ByteSize(64 << 20)));
    assert_eq!("1G".parse(), Ok(ByteSize(1 << 30)));
    assert!("12 parsecs".parse::<ByteSize>().is_err());
    assert!("99999999999T".parse::<ByteSize>().is_err());
}

#[test]
fn defaults_are_valid() {
    assert!(Config::default().problems().is_empty());
}

#[test]
fn range_problems_name_the_key() {
    let config = Config {
        workers: 0,
        timeout: -1.0,
        bind: "nowhere".into(),
        ..Config::default()
    };
    let keys: Vec<_> = config.problems().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["bind", "workers", "timeout"]);
}

/// The keys of a config whose one field was changed by `set`.
fn problem_keys(set: impl FnOnce(&mut Config)) -> Vec<&'static str> {
    let mut config = Config::default();
    set(&mut config);
    config.problems().into_iter().map(|(k, _)| k).collect()
}

#[test]
fn defaults_are_the_documented_ones() {
    // The README's table and Gunicorn/Uvicorn's defaults, which a
    // migrating team relies on without reading either.
    let c = Config::default();
    assert_eq!(c.bind, "127.0.0.1:8097");
    assert_eq!(c.backlog, 2048);
    assert_eq!(c.ws_max_size, 16_777_216);
    assert_eq!(
        (c.timeout, c.graceful_timeout, c.boot_timeout),
        (30.0, 30.0, 30.0)
    );
    assert_eq!(c.keepalive, 5.0);
    assert_eq!(c.stop_delay, 0.0);
    assert_eq!((c.ws_ping_interval, c.ws_ping_timeout), (20.0, 20.0));
    assert_eq!(
        (
            c.limit_request_line,
            c.limit_request_fields,
            c.limit_request_field_size
        ),
        (4094, 100, 8190)
    );
    assert_eq!(
        (c.max_requests, c.max_requests_jitter, c.worker_connections),
        (0, 0, 1000)
    );
    assert_eq!((c.memory_high, c.memory_max), (ByteSize(0), ByteSize(0)));
    assert_eq!(c.threads, 1);
}

#[test]
fn seconds_have_a_range_and_only_ws_ping_interval_and_stop_delay_may_be_off() {
    assert!(problem_keys(|c| c.timeout = MIN_SECONDS).is_empty());
    assert_eq!(problem_keys(|c| c.timeout = 0.0009), ["timeout"]);
    assert!(problem_keys(|c| c.keepalive = MAX_SECONDS).is_empty());
    assert_eq!(problem_keys(|c| c.keepalive = 86_400.1), ["keepalive"]);
    assert_eq!(
        problem_keys(|c| c.graceful_timeout = 0.0),
        ["graceful_timeout"]
    );
    assert_eq!(
        problem_keys(|c| c.boot_timeout = f64::NAN),
        ["boot_timeout"]
    );
    assert!(problem_keys(|c| c.ws_ping_interval = 0.0).is_empty());
    assert!(problem_keys(|c| c.stop_delay = 0.0).is_empty());
    assert_eq!(problem_keys(|c| c.stop_delay = -2.0), ["stop_delay"]);
    assert_eq!(
        problem_keys(|c| c.ws_ping_interval = -1.0),
        ["ws_ping_interval"]
    );
    assert_eq!(
        problem_keys(|c| c.ws_ping_timeout = 0.0),
        ["ws_ping_timeout"]
    );
}

#[test]
fn ceilings_include_their_value() {
    assert!(problem_keys(|c| c.workers = 1024).is_empty());
    assert_eq!(problem_keys(|c| c.workers = 1025), ["workers"]);
    assert!(problem_keys(|c| c.limit_request_fields = 32_768).is_empty());
    assert_eq!(
        problem_keys(|c| c.limit_request_fields = 32_769),
        ["limit_request_fields"]
    );
    assert!(problem_keys(|c| c.memory_max = ByteSize(i64::MAX as u64)).is_empty());
    assert_eq!(
        problem_keys(|c| c.memory_max = ByteSize(u64::MAX)),
        ["memory_max"]
    );
}

#[test]
fn byte_sizes_are_written_back_as_bytes() {
    // `check-config` prints a config that loads back the same.
    let config = Config {
        memory_high: "512M".parse().unwrap(),
        ..Config::default()
    };
    let text = config.to_toml();
    assert!(text.contains("memory_high = 536870912"), "{text}");
    assert!(text.contains("memory_max = 0"), "{text}");
}

#[test]
fn passwords_are_masked_wherever_a_redis_url_carries_them() {
    assert_eq!(
        redact_url("redis://:s3cret@host:6379/0"),
        "redis://:****@host:6379/0"
    );
    assert_eq!(
        redact_url("redis://user:s3cret@host/"),
        "redis://user:****@host/"
    );
    // A slash or an at sign in the password: masked whole.
    assert_eq!(redact_url("redis://:a/b@c@host/"), "redis://:****@host/");
    assert_eq!(
        redact_url("redis+unix:///run/redis.sock?db=1&pass=s3cret"),
        "redis+unix:///run/redis.sock?db=1&pass=****"
    );
    assert_eq!(redact_url("redis://host:6379/"), "redis://host:6379/");
    assert_eq!(redact_url("embedded"), "embedded");
}

#[test]
fn proxy_and_socket_keys_are_checked_at_load() {
    let c = Config::default();
    assert_eq!(c.forwarded_allow_ips.to_string(), "127.0.0.1,::1");
    assert_eq!(c.unix_socket_mode, "0660");
    assert!(problem_keys(|c| c.bind = "unix:/run/x/f.sock".into()).is_empty());
    assert_eq!(problem_keys(|c| c.bind = "unix:f.sock".into()), ["bind"]);
    assert_eq!(
        problem_keys(|c| c.bind = format!("unix:/{}", "x".repeat(120))),
        ["bind"]
    );
    assert_eq!(
        problem_keys(|c| c.unix_socket_mode = "0999".into()),
        ["unix_socket_mode"]
    );
    assert_eq!(
        problem_keys(|c| c.unix_socket_mode = "1777".into()),
        ["unix_socket_mode"]
    );
    assert_eq!(
        problem_keys(|c| c.access_log_format = "%(h)s %(zz)s".into()),
        ["access_log_format"]
    );
}

#[test]
fn the_packaged_config_file_documents_every_key() {
    let packaged = include_str!("../../packaging/ferricorn.toml");
    let mut documented: Vec<&str> = packaged
        .lines()
        .filter_map(|l| l.strip_prefix('#')?.split_once(" = ").map(|(k, _)| k))
        .filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    documented.sort_unstable();
    documented.dedup();
    let mut keys: Vec<String> = toml::Value::try_from(Config::default())
        .unwrap()
        .as_table()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    keys.push("pubsub_url_file".into());
    keys.sort_unstable();
    assert_eq!(documented, keys);
    // And the commented values load as they are written.
    let uncommented: String = packaged
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter(|l| l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')))
        .filter(|l| !l.starts_with("pubsub_url_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    let config: Config = toml::from_str(&uncommented).unwrap();
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    assert_eq!(
        config.access_log_format,
        Config::default().access_log_format
    );
}
