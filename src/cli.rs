//! Command-line interface: subcommands, the flags that form the config's
//! top layer, and [`main`], which dispatches them (config, sockets, then
//! the supervisor or a worker).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Loader, LogLevel, Overrides};
use crate::exit::{Exit, StartError};
use crate::logging::Early;
use crate::worker::App;
use crate::{listen, logging, supervisor, worker};

#[derive(Debug, Parser)]
#[command(
    name = "ferricorn",
    version,
    about = "Socket-activated pre-fork web service for systemd"
)]
pub struct Cli {
    /// Config file (default /etc/ferricorn/ferricorn.toml; a missing default
    /// file is fine, a missing explicit one is an error).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to bind when systemd passes no socket (config key `bind`).
    #[arg(long, global = true, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Worker processes (config key `workers`).
    #[arg(long, global = true, value_name = "N")]
    pub workers: Option<usize>,
    /// error, warn, info, debug or trace (config key `log_level`).
    #[arg(long, global = true, value_name = "LEVEL", value_parser = parse_level)]
    pub log_level: Option<LogLevel>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the supervisor and its workers (what systemd's ExecStart= runs).
    Serve,
    /// Validate the config, print it resolved, exit non-zero if invalid.
    CheckConfig {
        /// Print nothing when the config is valid (errors still go to
        /// stderr).
        #[arg(long, short)]
        quiet: bool,
    },
    /// One line per worker of the running service (slot, pid, generation,
    /// state, age, requests, connections, WebSockets, memory), asked on
    /// the control socket.
    Status {
        /// The supervisor's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rolling reload of the running service; with --wait, until the new
    /// generation serves (exit 0) or the reload failed and the old one
    /// still serves (exit 1, or 78 for an invalid config), as `systemctl
    /// reload` runs it (`ExecReload=`).
    Reload {
        /// Wait for the outcome.
        #[arg(long)]
        wait: bool,
        /// The supervisor's pid (`$MAINPID`): if it has no control socket
        /// (an older version still running after an upgrade), the config
        /// is checked and it is sent SIGHUP instead.
        #[arg(long, value_name = "PID")]
        pid: Option<u32>,
    },
    /// Internal: a worker process, started by `serve`.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        slot: usize,
        #[arg(long)]
        generation: u64,
        #[arg(long)]
        build: String,
        #[arg(long)]
        listeners: usize,
        /// The pub/sub hub's socket follows the listeners.
        #[arg(long)]
        pubsub: bool,
        /// The service serves `/metrics`: count and report.
        #[arg(long)]
        metrics: bool,
    },
}

fn parse_level(s: &str) -> Result<LogLevel, String> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
        .map_err(|_| format!("{s:?} is not one of error, warn, info, debug, trace"))
}

impl Cli {
    /// The config layers these flags select.
    pub fn loader(&self) -> Loader {
        Loader {
            explicit_path: self.config.clone(),
            overrides: Overrides {
                bind: self.bind.clone(),
                workers: self.workers,
                log_level: self.log_level,
            },
        }
    }
}

/// The whole program: `serve`, `check-config`, or (started by `serve`)
/// `worker`, whose workers build their routes with `app`. A binary's
/// `main` is this one call, so a worker re-executed from the binary gets
/// the same `app`.
pub fn main(app: App) -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; anything
            // else is a usage error, said on stderr.
            let _ = e.print();
            let exit = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            };
            return exit.into();
        }
    };
    let exit = match cli.command {
        Command::Worker {
            slot,
            generation,
            ref build,
            listeners,
            pubsub,
            metrics,
        } => worker::run(
            worker::WorkerArgs {
                slot,
                generation,
                build: build.clone(),
                listeners,
                pubsub,
                metrics,
            },
            app,
        ),
        Command::CheckConfig { quiet } => check_config(&cli, quiet),
        Command::Status { json } => status(&cli, json),
        Command::Reload { wait, pid } => reload(&cli, wait, pid),
        Command::Serve => serve(&cli).unwrap_or_else(|e| {
            logging::early(Early::Error, format_args!("{e}"));
            e.exit()
        }),
    };
    exit.into()
}

fn check_config(cli: &Cli, quiet: bool) -> Exit {
    let loader = cli.loader();
    match loader.load() {
        Ok(_) if quiet => Exit::Success,
        Ok(config) => {
            let secrets = loader.secret_keys();
            let credential = match secrets.is_empty() {
                true => String::new(),
                false => format!(" < credential {}", crate::config::CREDENTIAL_NAME),
            };
            println!(
                "# resolved from defaults < {}{credential} < FERRICORN_* < flags",
                loader.path().display()
            );
            print!("{}", config.to_toml_hiding(&secrets));
            Exit::Success
        }
        Err(e) => {
            logging::early(Early::Error, format_args!("{e}"));
            Exit::Config
        }
    }
}

/// The control socket's path for a client: the config's `control_socket`
/// (read alone, so an invalid config elsewhere still finds the socket and
/// the supervisor can say what is wrong), else the default.
fn control_path(cli: &Cli) -> std::path::PathBuf {
    let key = cli.loader().control_socket();
    crate::ctl::path(&key, true).unwrap_or_else(|| crate::ctl::DEFAULT_PATH.into())
}

fn status(cli: &Cli, json: bool) -> Exit {
    let path = control_path(cli);
    match crate::ctl::ask(
        &path,
        crate::ctl::Request::Status,
        Some(Duration::from_secs(10)),
    ) {
        Ok(crate::ctl::Answer::Status(report)) if json => {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            Exit::Success
        }
        Ok(crate::ctl::Answer::Status(report)) => {
            print!("{}", crate::ctl::render(&report));
            Exit::Success
        }
        Ok(other) => {
            eprintln!("ferricorn status: unexpected answer {other:?}");
            Exit::Failure
        }
        Err(e) => {
            eprintln!(
                "ferricorn status: cannot reach the supervisor at {}: {e} (is the service running? root or the service user only)",
                path.display()
            );
            Exit::Failure
        }
    }
}

fn reload(cli: &Cli, wait: bool, pid: Option<u32>) -> Exit {
    use crate::ctl::{Answer, Request};
    let path = control_path(cli);
    if !wait {
        // Ask and go: the supervisor reloads whether or not anyone waits.
        return match std::os::unix::net::UnixStream::connect(&path)
            .and_then(|mut s| std::io::Write::write_all(&mut s, b"reload\n"))
        {
            Ok(()) => Exit::Success,
            Err(e) => fallback(cli, pid, &path, e),
        };
    }
    match crate::ctl::ask(&path, Request::Reload, None) {
        // Under systemd (`ExecReload=`) the supervisor's own journal line
        // says the outcome; a second copy would be noise. At a terminal,
        // this is the only place it shows.
        Ok(Answer::Reloaded { from, to, took_ms }) => {
            if !crate::sys::stderr_is_journal() {
                logging::early(
                    Early::Notice,
                    format_args!("reload {from}→{to} complete in {took_ms} ms"),
                );
            }
            Exit::Success
        }
        Ok(Answer::ReloadFailed {
            error,
            config,
            serving,
        }) => {
            if !crate::sys::stderr_is_journal() {
                logging::early(
                    Early::Error,
                    format_args!("reload failed: {error}; generation {serving} keeps serving"),
                );
            }
            if config {
                Exit::Config
            } else {
                Exit::Failure
            }
        }
        Ok(Answer::Error { error }) => {
            logging::early(Early::Error, format_args!("reload refused: {error}"));
            Exit::Failure
        }
        Ok(other) => {
            logging::early(
                Early::Error,
                format_args!("reload: unexpected answer {other:?}"),
            );
            Exit::Failure
        }
        Err(e) => fallback(cli, pid, &path, e),
    }
}

/// No control socket answers: a supervisor from before it (still running
/// the old binary after a package upgrade) is reloaded as it always was,
/// a config check then SIGHUP, if its pid is known; its outcome cannot be
/// reported.
fn fallback(cli: &Cli, pid: Option<u32>, path: &std::path::Path, e: std::io::Error) -> Exit {
    let unreachable = matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    );
    // An invalid config fails the reload whoever would have run it (and a
    // file that does not parse may be why the socket's path is unknown).
    if let Err(config) = cli.loader().load() {
        logging::early(Early::Error, format_args!("reload refused: {config}"));
        return Exit::Config;
    }
    let Some(pid) = pid.filter(|_| unreachable) else {
        logging::early(
            Early::Error,
            format_args!(
                "reload: cannot reach the supervisor at {}: {e}",
                path.display()
            ),
        );
        return Exit::Failure;
    };
    // SAFETY: kill(2) with a pid systemd named as the service's main process.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) } != 0 {
        let e = std::io::Error::last_os_error();
        logging::early(
            Early::Error,
            format_args!("reload: cannot signal pid {pid}: {e}"),
        );
        return Exit::Failure;
    }
    logging::early(
        Early::Warning,
        format_args!(
            "reload: no control socket at {} (a supervisor older than it is running); sent SIGHUP to {pid}, whose outcome is not reported: restart once to have it",
            path.display()
        ),
    );
    Exit::Success
}

/// How long a start with an invalid config waits for a fix while clients
/// wait on systemd's socket (see [`config_or_wait`]).
const CONFIG_WAIT: Duration = Duration::from_secs(4);
/// How often the file is read again meanwhile.
const CONFIG_RETRY: Duration = Duration::from_millis(250);

fn serve(cli: &Cli) -> Result<Exit, StartError> {
    let loader = cli.loader();
    let config = config_or_wait(&loader)?;
    // Before any thread exists: listenfd edits the environment.
    let exe = worker_executable().map_err(StartError::Executable)?;
    let opened = listen::open(
        &config.bind_target(),
        config.backlog,
        config.reuse_port,
        config.unix_mode(),
        config.metrics_target().as_ref(),
    )?;
    logging::init(
        config.log_level,
        config.log_format,
        logging::Role::Supervisor,
    );
    // One thread: the supervisor waits on signals, sockets and timers only.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    runtime.block_on(async {
        let intents = supervisor::signals::forward().map_err(StartError::Signals)?;
        supervisor::run(loader, config, exe, opened, intents).await
    })
}

/// The config, or the error that ends the start once it is clear there is
/// none.
///
/// An invalid config is said once and ends the start at once (the unit's
/// `RestartPreventExitStatus=` keeps systemd from restarting it) — unless
/// systemd started this process for a client already waiting on its
/// socket. Then the connection is still queued when the process exits, the
/// socket starts the service again at once, and five failures within ten
/// seconds would stop the socket itself (`service-start-limit-hit`): every
/// later connection refused, until an operator runs `reset-failed`. Waiting
/// [`CONFIG_WAIT`] first, re-reading the file, paces those starts below the
/// unit's start limit, so the socket keeps listening and its clients keep
/// waiting; a fix made meanwhile is taken at once and the waiting clients
/// are served.
fn config_or_wait(loader: &Loader) -> Result<crate::config::Config, StartError> {
    let first = match loader.load() {
        Ok(config) => return Ok(config),
        Err(e) => e,
    };
    if !listen::systemd_client_waiting() {
        return Err(first.into());
    }
    logging::early(Early::Error, format_args!("{first}"));
    logging::early(
        Early::Warning,
        format_args!(
            "clients are waiting on the socket: reading {} again for {} s before giving up",
            loader.path().display(),
            CONFIG_WAIT.as_secs()
        ),
    );
    let until = std::time::Instant::now() + CONFIG_WAIT;
    while std::time::Instant::now() < until {
        std::thread::sleep(CONFIG_RETRY);
        if let Ok(config) = loader.load() {
            logging::early(
                Early::Notice,
                format_args!("the configuration is valid now; starting"),
            );
            return Ok(config);
        }
    }
    Err(StartError::ConfigUnfixed(CONFIG_WAIT.as_secs()))
}

/// The path workers are started from: the path this process was started as
/// (what systemd's `ExecStart=` names), not `/proc/self/exe`, which keeps
/// pointing at the old inode after a package upgrade replaced the file.
fn worker_executable() -> std::io::Result<PathBuf> {
    let argv0 = std::env::args_os().next().map(PathBuf::from);
    match argv0 {
        Some(p) if p.components().count() > 1 => std::path::absolute(p),
        _ => std::env::current_exe(),
    }
}
