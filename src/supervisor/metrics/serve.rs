//! `GET /metrics` on the metrics listeners (systemd's socket named
//! `metrics`, or `metrics_bind`), on a thread of its own: a slow or hostile
//! scraper costs this thread, never the supervisor's event loop. At most
//! [`MAX_CLIENTS`] connections at once; a head must arrive within
//! [`HEAD_TIMEOUT`], which is also how long an idle kept-alive connection
//! stays.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use super::{expose, SharedLedger};
use crate::listen::Listener;
use crate::worker::server::Accept;

/// Scrapers served at once; more are closed at accept.
const MAX_CLIENTS: usize = 16;
/// Time for a request head, and the keep-alive idle limit.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the metrics thread serving `listeners`.
///
/// # Errors
/// The thread or its runtime cannot start.
pub(crate) fn start(listeners: Vec<Listener>, ledger: SharedLedger) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
                let mut loops = tokio::task::JoinSet::new();
                for listener in listeners {
                    let name = listener.name.clone();
                    let (ledger, slots) = (ledger.clone(), slots.clone());
                    match into_tokio(listener) {
                        Ok(Either::Tcp(l)) => loops.spawn(accept_loop(l, ledger, slots)),
                        Ok(Either::Unix(l)) => loops.spawn(accept_loop(l, ledger, slots)),
                        Err(e) => {
                            tracing::error!(
                                "metrics listener {name}: {e}; /metrics is not served there"
                            );
                            continue;
                        }
                    };
                }
                while loops.join_next().await.is_some() {}
            });
        })?;
    Ok(())
}

enum Either {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

fn into_tokio(listener: Listener) -> std::io::Result<Either> {
    let socket = listener.socket;
    socket.set_nonblocking(true)?;
    let unix = socket.domain()? == socket2::Domain::UNIX;
    let fd = std::os::fd::OwnedFd::from(socket);
    Ok(match unix {
        true => Either::Unix(tokio::net::UnixListener::from_std(fd.into())?),
        false => Either::Tcp(tokio::net::TcpListener::from_std(fd.into())?),
    })
}

async fn accept_loop<L: Accept>(listener: L, ledger: SharedLedger, slots: Arc<Semaphore>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Descriptor exhaustion and the like: pause rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let ledger = ledger.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = answer(&request, &ledger);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `/metrics` for GET and HEAD; 405 for other methods there; 404
/// elsewhere.
fn answer<B>(request: &Request<B>, ledger: &SharedLedger) -> Response<Body> {
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        );
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    // Copied out under the lock, rendered (and memory read) outside it.
    let snapshot = match ledger.lock() {
        Ok(ledger) => ledger.snapshot(),
        Err(poisoned) => poisoned.into_inner().snapshot(),
    };
    let text = expose::render(&snapshot, &|live| {
        super::super::cgroup::memory_usage(live.cgroup.as_deref(), live.pid)
    });
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(expose::CONTENT_TYPE),
    );
    response
}
