//! A worker process (`ferricorn worker`, started only by the supervisor):
//! reads its config from the control socket, serves the app on the
//! inherited listeners, heartbeats, and drains on signal.
//!
//! Signals: SIGTERM drains and closes WebSockets with 1001 (stop), after
//! `stop_delay` spent serving with `/health` failing; SIGHUP
//! drains with 1012 (replaced by a reload, recycle or scale-down); SIGINT and
//! SIGQUIT exit at once.

mod access;
mod drain;
mod head;
mod health;
pub(crate) mod metrics;
pub(crate) mod server;

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{FromRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

pub use access::{Format as AccessFormat, DEFAULT_FORMAT as DEFAULT_ACCESS_LOG_FORMAT};
pub use drain::{Drain, DrainReason, CLOSE_GOING_AWAY, CLOSE_SERVICE_RESTART};
use drain::{Kind, Open, Stats};

use crate::config::Config;
use crate::control::{self, SupervisorStatus, WorkerMessage};
use crate::exit::Exit;
use crate::logging::{self, Role};
use crate::pubsub::PubSub;
use crate::sys::{self, CONTROL_FD, FIRST_LISTENER_FD};

/// Who this worker is, as the supervisor named it.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Slot number, 1..=workers; a replacement keeps its predecessor's slot.
    pub slot: usize,
    /// Generation: bumped by every reload.
    pub generation: u64,
    /// Identifier of the executable file this worker runs.
    pub build: String,
    pub pid: u32,
    /// The machine's hostname, read once: which host of a fleet this is.
    pub host: String,
}

/// What a handler can see of its worker. One `Arc`, so the clone every
/// request and connection makes costs one atomic increment.
#[derive(Clone, Debug)]
pub struct WorkerContext(Arc<Shared>);

impl std::ops::Deref for WorkerContext {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The worker's state behind [`WorkerContext`].
#[derive(Debug)]
pub struct Shared {
    pub identity: Identity,
    pub config: Config,
    pub drain: Drain,
    /// Messages across workers and hosts: `ctx.pubsub.publish(topic, msg)`
    /// and `ctx.pubsub.subscribe(topic)`.
    pub pubsub: PubSub,
    stats: Arc<Stats>,
    /// Counts for `/metrics` (a no-op when the service has no metrics
    /// listener).
    pub(crate) metrics: metrics::Recorder,
    /// The supervisor's latest figures, as it last sent them, and as JSON.
    supervisor: std::sync::RwLock<Option<(Arc<SupervisorStatus>, Box<str>)>>,
    control: mpsc::UnboundedSender<Outgoing>,
    /// Requests after which this worker asks to be replaced; 0 never.
    retire_after: u64,
    /// `worker_connections` slots, taken before accept; a WebSocket takes
    /// one of its own, since its HTTP connection's slot goes with the upgrade.
    slots: Arc<Semaphore>,
    /// Where request records go, when `access_log` is on.
    access_log: Option<Arc<access::AccessLog>>,
    /// `/health`, answered before the app's router.
    health: health::Page,
}

/// Appends `n` in decimal: `/health`'s numbers and the access line's,
/// per request, where `write!`'s formatting machinery costs several times
/// what the digits do.
#[inline]
fn push_number(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// Appends `n` (under 1,000,000) as six digits, zero-padded: the fraction
/// of a second in microseconds.
#[inline]
fn push_micros(out: &mut String, n: u64) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(n);
    out.extend(std::iter::repeat_n(
        '0',
        6usize.saturating_sub(digits.len()),
    ));
    out.push_str(digits);
}

/// Holds a WebSocket open: in the counters, in a connection slot, and in
/// what the drain waits for.
#[derive(Debug)]
pub struct WebSocketGuard {
    _open: Open,
    /// None when every slot is taken at the moment of the upgrade: the
    /// socket is already accepted, so it is served rather than refused.
    _slot: Option<OwnedSemaphorePermit>,
}

impl Shared {
    /// Call when a WebSocket is accepted; drop the guard when it closes.
    pub fn open_websocket(&self) -> WebSocketGuard {
        WebSocketGuard {
            _open: Open::new(self.stats.clone(), &self.drain, Kind::WebSocket),
            _slot: self.slots.clone().try_acquire_owned().ok(),
        }
    }

    /// The supervisor's live figures (generation, workers ready, requests/s,
    /// restarts, last reload), refreshed every few seconds.
    pub fn supervisor_status(&self) -> Option<Arc<SupervisorStatus>> {
        let slot = self.supervisor.read().ok()?;
        slot.as_ref().map(|(status, _)| status.clone())
    }

    /// Calls `f` with the supervisor's latest figures as a JSON object
    /// (rendered once as they arrive, not per call), or None before any.
    pub fn with_supervisor_json<R>(&self, f: impl FnOnce(Option<&str>) -> R) -> R {
        let slot = self.supervisor.read().ok();
        f(slot
            .as_ref()
            .and_then(|s| s.as_ref())
            .map(|(_, json)| &json[..]))
    }

    /// This worker's own counters.
    pub fn counters(&self) -> control::Counters {
        self.stats.snapshot()
    }

    fn open_connection(&self) -> Open {
        Open::new(self.stats.clone(), &self.drain, Kind::Connection)
    }

    /// Counts a served request and asks for replacement at `max_requests`.
    fn request_done(&self) {
        let served = self.stats.request_done();
        if self.retire_after != 0 && served == self.retire_after {
            let _ = self.control.send(Outgoing::Message(WorkerMessage::Retire(
                "max_requests".into(),
            )));
        }
    }

    /// What this worker's `metrics` line says now.
    fn metrics_report(&self) -> crate::metrics::Report {
        let counters = self.stats.snapshot();
        let pubsub = self.pubsub.health();
        crate::metrics::Report {
            requests: counters.requests,
            connections: counters.connections,
            websockets: counters.websockets,
            published: pubsub.published,
            delivered: pubsub.delivered,
            dropped: pubsub.dropped,
            lost: pubsub.lost,
            ..self.metrics.report()
        }
    }
}

/// What goes to the supervisor, in order.
#[derive(Debug)]
enum Outgoing {
    Message(WorkerMessage),
    /// Answered once everything queued before it is written: the last
    /// figures reach the supervisor before the process exits.
    Flushed(tokio::sync::oneshot::Sender<()>),
}

/// How long an exiting worker waits for its last lines to be written.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// Arguments the supervisor passes on the command line.
#[derive(Clone, Debug)]
pub struct WorkerArgs {
    pub slot: usize,
    pub generation: u64,
    pub build: String,
    pub listeners: usize,
    /// Whether the supervisor passed a pub/sub hub socket, after the
    /// listeners.
    pub pubsub: bool,
    /// Whether the service serves `/metrics`: only then are requests
    /// counted and reported.
    pub metrics: bool,
}

/// Builds a worker's routes, once, in the worker after it has started.
pub type App = fn(WorkerContext) -> axum::Router;

/// Runs a worker to completion.
pub fn run(args: WorkerArgs, app: App) -> Exit {
    match boot(&args) {
        Ok((config, control, listeners, hub)) => {
            logging::init(
                config.log_level,
                config.log_format,
                Role::Worker {
                    slot: args.slot,
                    generation: args.generation,
                },
            );
            // To the log, with the worker's fields, rather than bare stderr.
            // A panic in a handler is caught and answered with 500 (see
            // server.rs); this records where and why.
            let slot = args.slot;
            std::panic::set_hook(Box::new(move |info| {
                tracing::error!(%info, "worker {slot} panicked: {info}");
            }));
            let runtime = if config.threads == 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(config.threads)
                    .enable_all()
                    .build()
            };
            match runtime {
                Ok(rt) => rt.block_on(serve(args, config, control, listeners, hub, app)),
                Err(e) => {
                    logging::early(
                        logging::Early::Error,
                        format_args!("worker: cannot start runtime: {e}"),
                    );
                    Exit::BootFailure
                }
            }
        }
        Err(e) => {
            logging::early(
                logging::Early::Error,
                format_args!("worker {}: {e}", args.slot),
            );
            Exit::BootFailure
        }
    }
}

/// An inherited listening socket, by family.
enum Inherited {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

type Booted = (
    Config,
    std::os::unix::net::UnixStream,
    Vec<Inherited>,
    Option<std::os::unix::net::UnixStream>,
);

/// Takes the inherited descriptors and reads the config line.
fn boot(args: &WorkerArgs) -> Result<Booted, String> {
    if !sys::fd_is_open(CONTROL_FD) {
        return Err("no control socket: `ferricorn worker` is started by `ferricorn serve`".into());
    }
    sys::set_cloexec(CONTROL_FD).map_err(|e| format!("control socket: {e}"))?;
    // SAFETY: the supervisor put our end of the control socket pair at
    // CONTROL_FD, checked open above, and nothing else here owns it.
    let control = unsafe { std::os::unix::net::UnixStream::from_raw_fd(CONTROL_FD) };
    let mut line = String::new();
    BufReader::new(&control)
        .take(control::MAX_LINE as u64)
        .read_line(&mut line)
        .map_err(|e| format!("reading config from supervisor: {e}"))?;
    let config: Config =
        serde_json::from_str(&line).map_err(|e| format!("config from supervisor: {e}"))?;
    let mut listeners = Vec::with_capacity(args.listeners);
    for idx in 0..args.listeners {
        let fd = FIRST_LISTENER_FD + idx as RawFd;
        if !sys::is_listening(fd) {
            return Err(format!("descriptor {fd} is not a listening socket"));
        }
        sys::set_cloexec(fd).map_err(|e| format!("listener {fd}: {e}"))?;
        // SAFETY: the supervisor placed a listening socket at `fd` (checked
        // above) and this process takes sole ownership of the number.
        let socket = unsafe { socket2::Socket::from_raw_fd(fd) };
        socket
            .set_nonblocking(true)
            .map_err(|e| format!("listener {fd}: {e}"))?;
        let unix =
            socket.domain().map_err(|e| format!("listener {fd}: {e}"))? == socket2::Domain::UNIX;
        listeners.push(match unix {
            true => Inherited::Unix(std::os::fd::OwnedFd::from(socket).into()),
            false => Inherited::Tcp(std::os::fd::OwnedFd::from(socket).into()),
        });
    }
    control
        .set_nonblocking(true)
        .map_err(|e| format!("control socket: {e}"))?;
    let hub_fd = FIRST_LISTENER_FD + args.listeners as RawFd;
    let hub = match args.pubsub {
        true if sys::fd_is_open(hub_fd) => {
            sys::set_cloexec(hub_fd).map_err(|e| format!("pub/sub hub socket: {e}"))?;
            // SAFETY: the supervisor put the worker's end of its pub/sub
            // socket pair after the listeners (checked open above); nothing
            // else here owns the number.
            Some(unsafe { std::os::unix::net::UnixStream::from_raw_fd(hub_fd) })
        }
        true => return Err(format!("descriptor {hub_fd} (the pub/sub hub) is not open")),
        false => None,
    };
    Ok((config, control, listeners, hub))
}

/// Heartbeats often enough that a few can be lost inside `timeout`.
pub fn heartbeat_interval(timeout: f64) -> Duration {
    Duration::from_secs_f64(timeout / 4.0).min(Duration::from_secs(1))
}

/// A per-worker random-ish number: pid and clock mixed, enough to spread
/// recycling (`max_requests_jitter`) without a random-number crate.
fn jitter(bound: u64) -> u64 {
    if bound == 0 {
        return 0;
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() % bound
}

async fn serve(
    args: WorkerArgs,
    config: Config,
    control: std::os::unix::net::UnixStream,
    listeners: Vec<Inherited>,
    hub: Option<std::os::unix::net::UnixStream>,
    app: App,
) -> Exit {
    let control = match UnixStream::from_std(control) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("worker {}: control socket: {e}", args.slot);
            return Exit::BootFailure;
        }
    };
    // The first line at debug level: a `log_level` change on reload shows
    // in the new generation's workers from here on.
    tracing::debug!(
        threads = config.threads,
        worker_connections = config.worker_connections,
        "worker runtime started"
    );
    let (read_half, mut write_half) = control.into_split();
    let (to_supervisor, mut outbox) = mpsc::unbounded_channel::<Outgoing>();
    let worker_connections = config.worker_connections;
    let access_log = match config.access_log {
        true => match access::Format::parse(&config.access_log_format)
            .map_err(std::io::Error::other)
            .and_then(|format| access::AccessLog::start(format, args.slot, args.generation))
        {
            Ok(log) => Some(Arc::new(log)),
            Err(e) => {
                tracing::error!(
                    "worker {}: cannot start the access-log thread: {e}; access log off",
                    args.slot
                );
                None
            }
        },
        false => None,
    };
    let retire_after = match config.max_requests {
        0 => 0,
        n => n + jitter(config.max_requests_jitter),
    };
    let target = config.pubsub().unwrap_or_else(|(key, problem)| {
        // The supervisor checked the same config; only a credential file
        // changed since can get here.
        tracing::error!(
            "worker {}: {key}: {problem}; pub/sub reaches this host only",
            args.slot
        );
        crate::config::PubSubTarget::Embedded
    });
    let pubsub = PubSub::start(target, hub);
    let identity = Identity {
        slot: args.slot,
        generation: args.generation,
        build: args.build.clone(),
        pid: std::process::id(),
        host: crate::sys::hostname(),
    };
    let ctx = WorkerContext(Arc::new(Shared {
        health: health::Page::new(&identity),
        identity,
        config,
        drain: Drain::default(),
        pubsub,
        stats: Arc::new(Stats::default()),
        metrics: metrics::Recorder::new(args.metrics),
        supervisor: std::sync::RwLock::default(),
        control: to_supervisor.clone(),
        retire_after,
        slots: Arc::new(Semaphore::new(worker_connections)),
        access_log,
    }));

    // The supervisor gone means nobody will ever drain us: exit. (PDEATHSIG
    // normally gets here first.)
    tokio::spawn(async move {
        while let Some(outgoing) = outbox.recv().await {
            let message = match outgoing {
                Outgoing::Message(message) => message,
                Outgoing::Flushed(done) => {
                    let _ = done.send(());
                    continue;
                }
            };
            if write_half
                .write_all(message.encode().as_bytes())
                .await
                .is_err()
            {
                std::process::exit(Exit::Success as i32);
            }
        }
    });
    let figures = ctx.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(read_half).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<SupervisorStatus>(&line) {
                Ok(status) => {
                    let json = serde_json::to_string(&status).expect("numbers and strings");
                    if let Ok(mut slot) = figures.supervisor.write() {
                        *slot = Some((Arc::new(status), json.into()));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "bad status line from supervisor: {e}"),
            }
        }
        std::process::exit(Exit::Success as i32);
    });

    if let Err(e) = watch_signals(ctx.clone()) {
        tracing::error!("worker {}: cannot install signal handlers: {e}", args.slot);
        return Exit::BootFailure;
    }

    let beat = heartbeat_interval(ctx.config.timeout);
    let beating = ctx.clone();
    let heartbeats = to_supervisor.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(beat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let beat = WorkerMessage::Heartbeat(beating.stats.snapshot());
            if heartbeats.send(Outgoing::Message(beat)).is_err() {
                return;
            }
            if beating.metrics.enabled() {
                let report = WorkerMessage::Metrics(Box::new(beating.metrics_report()));
                let _ = heartbeats.send(Outgoing::Message(report));
            }
        }
    });

    let router = app(ctx.clone());
    // Every route, the fallback included, says which template it is.
    let router = match ctx.metrics.enabled() {
        true => router.layer(metrics::TagLayer(ctx.clone())),
        false => router,
    };
    let mut accept_loops = tokio::task::JoinSet::new();
    for listener in listeners {
        let registered = match listener {
            Inherited::Tcp(l) => tokio::net::TcpListener::from_std(l).map(|l| {
                accept_loops.spawn(server::accept_loop(l, ctx.clone(), router.clone()));
            }),
            Inherited::Unix(l) => tokio::net::UnixListener::from_std(l).map(|l| {
                accept_loops.spawn(server::accept_loop(l, ctx.clone(), router.clone()));
            }),
        };
        match registered {
            Ok(()) => {}
            Err(e) => {
                tracing::error!("worker {}: cannot register listener: {e}", args.slot);
                return Exit::BootFailure;
            }
        }
    }
    tracing::info!(pid = std::process::id(), "worker {} ready", args.slot);
    let _ = to_supervisor.send(Outgoing::Message(WorkerMessage::Ready));

    ctx.drain.draining().await;
    // Accept loops end on drain; their listeners close with them, in this
    // process only: the other workers and systemd keep the socket.
    while accept_loops.join_next().await.is_some() {}
    let _ = to_supervisor.send(Outgoing::Message(WorkerMessage::Draining));
    let open = ctx.stats.snapshot();
    let (connections, websockets, close_code) =
        (open.connections, open.websockets, ctx.drain.close_code());
    tracing::info!(
        connections,
        websockets,
        close_code,
        "worker {} draining: {connections} connections and {websockets} WebSockets open; WebSockets close with {close_code}",
        args.slot
    );
    ctx.drain.finished().await;
    if let Some(log) = &ctx.access_log {
        log.flush(Duration::from_secs(1));
    }
    // Leave notices and last messages go out before the process does.
    ctx.pubsub.flush(Duration::from_secs(1)).await;
    // The final counts: what was served since the last heartbeat would
    // otherwise be missing from the service's totals.
    if ctx.metrics.enabled() {
        let report = WorkerMessage::Metrics(Box::new(ctx.metrics_report()));
        let _ = to_supervisor.send(Outgoing::Message(report));
        let (done, written) = tokio::sync::oneshot::channel();
        if to_supervisor.send(Outgoing::Flushed(done)).is_ok() {
            let _ = tokio::time::timeout(FINAL_FLUSH, written).await;
        }
    }
    let requests = ctx.stats.snapshot().requests;
    tracing::info!(
        requests,
        "worker {} drained after {requests} requests, exiting",
        args.slot
    );
    Exit::Success
}

/// SIGTERM: the service stops. With `stop_delay`, the worker first leaves
/// the rotation (`/health` answers 503, everything else is served) and
/// drains when the delay is over; a second SIGTERM drains at once.
fn stop(ctx: &WorkerContext) {
    let delay = ctx.config.stop_delay;
    if delay == 0.0 || ctx.drain.is_leaving() {
        return ctx.drain.start(DrainReason::Stop);
    }
    ctx.drain.leave();
    tracing::info!(
        stop_delay = delay,
        "worker {} leaving: /health answers 503 for {delay} s, then it drains",
        ctx.identity.slot
    );
    let ctx = ctx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs_f64(delay)).await;
        ctx.drain.start(DrainReason::Stop);
    });
}

fn watch_signals(ctx: WorkerContext) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut quit = signal(SignalKind::quit())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => stop(&ctx),
                _ = hup.recv() => ctx.drain.start(DrainReason::Restart),
                _ = int.recv() => std::process::exit(Exit::Success as i32),
                _ = quit.recv() => std::process::exit(Exit::Success as i32),
            }
        }
    });
    Ok(())
}
