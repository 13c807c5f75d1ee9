//! The routes: the one part of ferricorn a template user edits.
//!
//! Everything here runs inside a worker process. [`WorkerContext`] gives a
//! handler the worker's identity, the resolved config, the drain signal
//! and `pubsub` (messages to every worker and host, see `chat`);
//! a handler that holds a connection open (a WebSocket, a stream) must stop
//! when [`crate::worker::Drain::draining`] fires, or it delays every reload
//! and stop by `graceful_timeout`.
//!
//! State shared by handlers (a database pool, a cache) belongs in a type
//! built in [`router`], which runs in each worker after it has started:
//! never before the supervisor spawns workers, so no connection crosses a
//! fork. State shared by *clients* (who is in a room) never lives in one
//! worker: the next connection may land on another; publish it instead.
//!
//! `/health` is not here: it is the worker's own (`worker/health.rs`),
//! answered before this router sees the request, whatever the app routes.

mod chat;
pub mod ws;

use axum::routing::get;
use axum::Router;

use crate::worker::WorkerContext;

/// The application's routes, built once per worker at start.
pub fn router(ctx: WorkerContext) -> Router {
    Router::new()
        .route("/ws", get(ws::echo))
        .with_state(ctx.clone())
        .merge(chat::router(ctx))
}
