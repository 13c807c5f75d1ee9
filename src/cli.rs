//! Command-line interface: subcommands and the flags that form the config's
//! top layer.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Loader, LogLevel, Overrides};

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
