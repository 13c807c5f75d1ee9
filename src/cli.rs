//! Command-line interface: subcommands, the flags that form the config's
//! top layer, and [`main`], which dispatches them (config, sockets, then
//! the supervisor or a worker).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Loader, LogLevel, Overrides};
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
    CheckConfig,
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

/// Exit code of an invalid config (sysexits' EX_CONFIG; systemd shows it
/// as "CONFIG").
const EXIT_CONFIG: u8 = 78;

/// The whole program: `serve`, `check-config`, or (started by `serve`)
/// `worker`, whose workers build their routes with `app`. A binary's
/// `main` is this one call, so a worker re-executed from the binary gets
/// the same `app`.
pub fn main(app: App) -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Worker {
            slot,
            generation,
            ref build,
            listeners,
        } => worker::run(
            worker::WorkerArgs {
                slot,
                generation,
                build: build.clone(),
                listeners,
            },
            app,
        ),
        Command::CheckConfig => check_config(&cli),
        Command::Serve => serve(&cli),
    }
}

fn check_config(cli: &Cli) -> ExitCode {
    let loader = cli.loader();
    match loader.load() {
        Ok(config) => match toml_string(&config) {
            Ok(text) => {
                println!(
                    "# resolved from defaults < {} < FERRICORN_* < flags",
                    loader.path().display()
                );
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ferricorn: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("ferricorn: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn toml_string(config: &crate::config::Config) -> Result<String, String> {
    toml::to_string(config).map_err(|e| e.to_string())
}

fn serve(cli: &Cli) -> ExitCode {
    let loader = cli.loader();
    let config = match loader.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferricorn: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Before any thread exists: listenfd edits the environment.
    let exe = match worker_executable() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ferricorn: cannot find own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bind = match config.bind_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ferricorn: bind: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let sockets = match listen::listeners(bind, config.backlog, config.reuse_port)
        .map_err(|e| e.to_string())
        .and_then(|(ls, origin)| {
            let lifted = ls
                .into_iter()
                .map(|l| {
                    listen::lift(l).map_err(|e| {
                        format!(
                            "cannot move a listener above descriptor {}: {e} (is the open-files limit, LimitNOFILE=, that low?)",
                            crate::sys::INHERIT_FLOOR
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            listen::Sockets::new(lifted, origin, config.backlog).map_err(|e| e.to_string())
        }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferricorn: {e}");
            return ExitCode::FAILURE;
        }
    };
    logging::init(
        config.log_level,
        config.log_format,
        logging::Role::Supervisor,
    );
    // One thread: the supervisor waits on signals, sockets and timers only.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferricorn: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(supervisor::run(loader, config, exe, sockets))
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
