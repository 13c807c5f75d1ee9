//! The supervisor (`ferricorn serve`, the unit's MAINPID): holds the
//! listening sockets, runs generations of worker processes, and turns
//! intents and worker reports into the lifecycle in DESIGN.md.
//!
//! [`run`] is the event loop on the real machine. The lifecycle's state
//! machine is [`core`]: its inputs are [`Intent`]s (signals become intents
//! in [`signals`], outside it), worker [`relay::Event`]s and a tick, and
//! everything it does to the machine goes through [`system::Os`], so its
//! unit tests (`tests.rs`) drive it without processes. The other concerns
//! live next to it: [`workers`] (the table), [`reload`], [`backoff`],
//! `core::checks` (deadlines, memory, watchdog), [`status`], [`relay`]
//! (one task per worker), [`system`] (the real machine), [`metrics`]
//! (every worker's counts, and `/metrics` on a thread of its own),
//! [`cgroup`], [`spawn`], [`notify`] and [`exit_status`].

mod cgroup;
mod core;
mod ctl;
mod exit_status;
mod metrics;
mod notify;
mod relay;
mod reload;
pub mod signals;
mod spawn;
mod status;
mod system;
mod workers;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::config::{Config, Loader};
use crate::exit::{Exit, StartError};
use crate::listen::{Opened, Sockets};
pub use signals::Intent;
use system::System;

/// How often deadlines are checked.
const TICK: Duration = Duration::from_millis(100);
/// Runs the supervisor on `opened`'s sockets until it stops, taking
/// intents from `intents` (see [`signals::forward`]); serves `/metrics` on
/// its metrics sockets, if any.
///
/// # Errors
/// The executable cannot be read to compute the build id.
pub async fn run(
    loader: Loader,
    config: Config,
    exe: PathBuf,
    opened: Opened,
    mut intents: mpsc::UnboundedReceiver<Intent>,
) -> Result<Exit, StartError> {
    let Opened { sockets, metrics } = opened;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    if config.reuse_port && matches!(sockets, Sockets::Shared(_)) {
        tracing::warn!("reuse_port applies only when ferricorn binds its own socket; systemd's sockets are shared by all workers");
    }
    let mut names = sockets.names();
    let ledger = match metrics.is_empty() {
        true => None,
        false => {
            let ledger = metrics::Ledger::shared();
            names.extend(metrics.iter().map(|l| format!("/metrics on {}", l.name)));
            match metrics::serve::start(metrics, ledger.clone()) {
                Ok(()) => Some(ledger),
                Err(e) => {
                    tracing::error!("cannot start the metrics thread: {e}; /metrics is not served");
                    None
                }
            }
        }
    };
    let cgroups = cgroup::take_subtree(&config);
    let os = System::new(exe, sockets, cgroups, events_tx, ledger);
    let now = Instant::now();
    // The control socket: before the first worker, so `ferricorn status`
    // answers while they boot. Without one the service runs as before;
    // `ferricorn reload` then says it cannot reach it.
    let (ctl_tx, mut asked) = mpsc::unbounded_channel();
    if let Some(path) = crate::ctl::path(&config.control_socket, false) {
        match ctl::bind(&path) {
            Ok(listener) => {
                tokio::spawn(ctl::serve(listener, ctl_tx));
            }
            Err(e) => tracing::error!(
                path = %path.display(),
                "cannot open the control socket {}: {e}; `ferricorn status` and `ferricorn reload` will not reach this supervisor",
                path.display()
            ),
        }
    }
    let mut sup = core::Supervisor::new(loader, config, os, now).map_err(StartError::Build)?;
    sup.start(&names, now);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some(intent) = intents.recv() => sup.on_intent(intent, Instant::now()),
            Some(event) = events.recv() => sup.on_event(event, Instant::now()),
            Some(asked) = asked.recv() => sup.on_ctl(asked, Instant::now()),
            _ = tick.tick() => sup.on_tick(Instant::now()),
        }
        if let Some(exit) = sup.take_exit() {
            notify::flush();
            return Ok(exit);
        }
    }
}
