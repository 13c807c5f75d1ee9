//! `ferricorn`: parse flags, load config, take sockets, dispatch.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use ferricorn::cli::{Cli, Command};
use ferricorn::{listen, logging, supervisor, worker};

/// Exit code of an invalid config (sysexits' EX_CONFIG; systemd shows it
/// as "CONFIG").
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Worker {
            slot,
            generation,
            ref build,
            listeners,
        } => worker::run(worker::WorkerArgs {
            slot,
            generation,
            build: build.clone(),
            listeners,
        }),
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

fn toml_string(config: &ferricorn::config::Config) -> Result<String, String> {
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
                .map(|l| listen::lift(l).map_err(|e| e.to_string()))
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
