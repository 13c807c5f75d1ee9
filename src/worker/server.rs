//! The accept loop and per-connection HTTP/1.1 serving on hyper.
//!
//! Our own loop rather than `axum::serve`: it takes a connection slot
//! (`worker_connections`) before accepting, so an overloaded worker leaves
//! connections in the shared backlog for its siblings; it backs off on
//! descriptor exhaustion instead of spinning; it times out slow request
//! heads; and it drains with the worker.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Notify;
use tower::Service;

use super::access::AccessRecord;
use super::head::{Inspected, Limits, Verdicts};
use super::health;
use super::metrics::{self, Timing};
use super::WorkerContext;
use crate::proxy::Peer;

/// First pause after an accept error that a retry cannot fix at once
/// (descriptor table full, no memory); doubles up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one log line per this interval while accept keeps failing.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// On drain, how long an idle connection (just accepted, or kept alive
/// between requests) is given for a request that may already be on its
/// way. hyper's graceful shutdown closes such a connection at once, and a
/// request the client sent in that instant would be lost; within the linger
/// it is served with `Connection: close` instead. Capped by `keepalive`.
const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// Whether a request is being served on a connection, and a wake-up when
/// one starts.
#[derive(Default)]
struct Activity {
    in_flight: AtomicBool,
    started: Notify,
}

/// A listening socket a worker accepts on: TCP or Unix, served alike.
pub trait Accept: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(
        &self,
    ) -> impl std::future::Future<Output = std::io::Result<(Self::Stream, Peer)>> + Send;
}

impl Accept for TcpListener {
    type Stream = TcpStream;
    async fn accept(&self) -> std::io::Result<(TcpStream, Peer)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        // Responses are small; waiting for Nagle costs a round trip.
        let _ = stream.set_nodelay(true);
        Ok((stream, Peer::Tcp(peer)))
    }
}

impl Accept for UnixListener {
    type Stream = UnixStream;
    async fn accept(&self) -> std::io::Result<(UnixStream, Peer)> {
        let (stream, _) = UnixListener::accept(self).await?;
        Ok((stream, Peer::Unix))
    }
}

/// Accepts until the worker drains; each connection runs on the drain's
/// tracker so the worker waits for it.
pub async fn accept_loop<L: Accept>(listener: L, ctx: WorkerContext, router: Router) {
    let slots = ctx.slots.clone();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut last_error_log: Option<Instant> = None;
    loop {
        let permit = tokio::select! {
            () = ctx.drain.draining() => return,
            permit = slots.clone().acquire_owned() => permit.expect("semaphore is never closed"),
        };
        let accepted = tokio::select! {
            () = ctx.drain.draining() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                let ctx = ctx.clone();
                let router = router.clone();
                ctx.drain.tracker().clone().spawn(async move {
                    serve_connection(stream, peer, ctx, router).await;
                    drop(permit);
                });
            }
            Err(e) if is_per_connection(&e) => {}
            Err(e) => {
                if last_error_log.is_none_or(|t| t.elapsed() >= ACCEPT_ERROR_LOG_INTERVAL) {
                    let slot = ctx.identity.slot;
                    tracing::error!(error = %e, "worker {slot}: accept failed ({e}); backing off");
                    last_error_log = Some(Instant::now());
                }
                drop(permit);
                tokio::select! {
                    () = ctx.drain.draining() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// An empty response with `status` that closes the connection.
fn closing(status: StatusCode) -> axum::response::Response {
    let mut response = axum::response::Response::new(axum::body::Body::empty());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Errors about one connection that died in the backlog: retry at once.
fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::ECONNRESET | libc::EPROTO | libc::EPERM | libc::EINTR)
    )
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    mut stream: S,
    mut peer: Peer,
    ctx: WorkerContext,
    router: Router,
) {
    let _open = ctx.open_connection();
    let keepalive = Duration::from_secs_f64(ctx.config.keepalive);
    let limits = Limits {
        line: ctx.config.limit_request_line,
        fields: ctx.config.limit_request_fields,
        field_size: ctx.config.limit_request_field_size,
    };
    // With `proxy_protocol`, the balancer's header names the client first;
    // the bytes read past it are the first request's.
    let mut early = Vec::new();
    if ctx.config.proxy_protocol {
        match crate::proxy::protocol::read_header(&mut stream, keepalive).await {
            Ok((source, rest)) => {
                if let Some(source) =
                    source.filter(|_| ctx.config.forwarded_allow_ips.trusts_peer(peer))
                {
                    peer = Peer::Tcp(source);
                }
                early = rest;
            }
            Err(why) => {
                tracing::debug!("{peer}: {why}; refused with 400");
                return;
            }
        }
    }
    let verdicts = Arc::new(Verdicts::default());
    let stream = Inspected::with_prefix(stream, &early, limits, verdicts.clone());
    let request_ctx = ctx.clone();
    // The clock is read only for what uses the time.
    let timed = ctx.metrics.enabled() || ctx.access_log.is_some();
    let activity = Arc::new(Activity::default());
    let request_activity = activity.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let mut router = router.clone();
        let ctx = request_ctx.clone();
        let activity = request_activity.clone();
        let refused = verdicts.next_request();
        activity.in_flight.store(true, Ordering::SeqCst);
        // Only a draining connection waits for this (it checks in_flight
        // after it starts listening, so no request slips between).
        if ctx.drain.is_draining() {
            activity.started.notify_waiters();
        }
        let timing = Timing::start(&request, timed);
        async move {
            if let Some(status) = refused {
                // The stand-in for a head the inspector refused: never the app's.
                activity.in_flight.store(false, Ordering::SeqCst);
                let _ = timing.finish(&ctx.metrics, None, status);
                return Ok(closing(status));
            }
            let client = ctx
                .config
                .forwarded_allow_ips
                .client(peer, request.headers());
            let head = ctx.access_log.as_ref().map(|log| log.head(&request));
            let upgrade = request.headers().contains_key(header::UPGRADE);
            let (answer, route) = if request.uri().path() == health::PATH {
                let response = ctx.health.respond(&ctx, request.method(), client);
                (Ok(Ok(response)), ctx.metrics.route(health::PATH))
            } else {
                let mut request = request;
                request.extensions_mut().insert(client);
                let answer = AssertUnwindSafe(router.call(request)).catch_unwind();
                // Which route answered is asked only when it is counted.
                match ctx.metrics.enabled() {
                    true => metrics::routed(answer).await,
                    false => (answer.await, None),
                }
            };
            let mut response = match answer {
                Ok(response) => response?,
                // The panic hook has logged it; the worker carries on.
                Err(_) => closing(StatusCode::INTERNAL_SERVER_ERROR),
            };
            activity.in_flight.store(false, Ordering::SeqCst);
            ctx.request_done();
            let elapsed = timing.finish(&ctx.metrics, route, response.status());
            if let (Some(log), Some(head)) = (&ctx.access_log, head) {
                log.record(AccessRecord {
                    head,
                    status: response.status().as_u16(),
                    size: hyper::body::Body::size_hint(response.body()).exact(),
                    duration_us: elapsed.as_micros() as u64,
                    client,
                    at: std::time::SystemTime::now(),
                });
            }
            // This response is the connection's last when the worker is
            // draining (saying so lets the client open a new connection, to
            // a live worker, rather than find this one closed under its next
            // request) or when an upgrade was refused (the inspector stopped
            // reading the connection as HTTP at the `Upgrade` head).
            let last = upgrade || ctx.drain.is_draining();
            if last && response.status() != StatusCode::SWITCHING_PROTOCOLS {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = http1::Builder::new();
    // The header read timer also runs while a kept-alive connection waits
    // for its next request, so it is the keep-alive idle timeout too.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(keepalive)
        .keep_alive(true);
    if limits.fields != 0 {
        // hyper's own cap (100) would otherwise answer first.
        builder.max_headers(limits.fields);
    }
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = ctx.drain.draining() => {
            let request = activity.started.notified();
            tokio::pin!(request);
            request.as_mut().enable();
            if !activity.in_flight.load(Ordering::SeqCst) {
                tokio::select! {
                    _ = connection.as_mut() => return,
                    // Its response says `Connection: close`; hyper closes after.
                    () = request => {
                        let _ = connection.await;
                        return;
                    }
                    () = tokio::time::sleep(DRAIN_LINGER.min(keepalive)) => {}
                }
            }
            // Finish the request in flight (answered with `Connection:
            // close`), then close; an idle connection closes now.
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
