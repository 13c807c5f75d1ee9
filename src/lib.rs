//! ferricorn: a socket-activated, pre-fork web service supervisor for
//! systemd — what Gunicorn with Uvicorn workers is for a FastAPI app, in
//! Rust, as a template to copy.
//!
//! # Layout
//!
//! - [`cli`]: command-line flags, resolved into a [`config::Loader`], and
//!   [`cli::main`], the whole program for a given app's routes.
//! - [`config`]: the one validated `Config` (defaults < file < env < flags).
//! - [`listen`]: sockets from systemd (`LISTEN_FDS`) or bound from `bind`.
//! - [`supervisor`]: `ferricorn serve`, the unit's main process: workers,
//!   generations, signals, sd_notify.
//! - [`worker`]: `ferricorn worker`: serves the app on the inherited sockets.
//! - [`app`]: the routes; the part a template user edits.
//! - [`control`]: the supervisor ↔ worker line protocol.
//! - [`ctl`]: the operator's control socket (`ferricorn status`, `reload`).
//! - [`exit`]: every exit code, and why a start fails.
//! - [`logging`]: journald or stderr.
//! - [`metrics`]: what workers report for `/metrics`, summed by the supervisor.
//! - [`proxy`]: the client behind a proxy (`forwarded_allow_ips`, [`proxy::Client`]).
//! - [`pubsub`]: messages across workers and hosts (`ctx.pubsub`).
//! - [`sys`]: the raw OS calls, each wrapped once.

pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod ctl;
pub mod exit;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod pubsub;
pub mod supervisor;
pub mod sys;
pub mod worker;
