//! `/chat`: a WebSocket chat room per worker, the example of a handler that
//! holds connections open and of state shared by handlers.
//!
//! Every text message a client sends reaches every client connected to the
//! same worker process, the sender included. The room is built once per
//! worker, in [`router`], after the worker has started: it is that worker's
//! memory, so clients on other workers (or other hosts) are in other rooms.
//! A room spanning workers needs a broker outside the processes, Redis
//! pub/sub, NATS or Postgres `LISTEN/NOTIFY` for example, because workers
//! share no memory and a reload replaces them all.
//!
//! The drain contract: when the worker drains, every member gets the
//! worker's close code: 1012 on reload or recycle, so clients reconnect at
//! once and land on the new generation; 1001 on stop. [`super::ws::session`]
//! does that for every WebSocket route.

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tokio::sync::broadcast;

use super::ws;
use crate::worker::WorkerContext;

/// Messages a member may fall behind by before it skips ahead: a slow
/// client loses old messages rather than grow the worker's memory.
const BACKLOG: usize = 256;

/// What `/chat`'s handler sees: the worker, and this worker's room.
#[derive(Clone)]
struct Chat {
    ctx: WorkerContext,
    room: broadcast::Sender<Message>,
}

/// `/chat` with its room, for [`super::router`] to merge.
pub fn router(ctx: WorkerContext) -> Router {
    let (room, _) = broadcast::channel(BACKLOG);
    Router::new()
        .route("/chat", get(join))
        .with_state(Chat { ctx, room })
}

async fn join(upgrade: WebSocketUpgrade, State(chat): State<Chat>) -> Response {
    let Chat { ctx, room } = chat;
    // A member from the moment its handshake is answered: what the room
    // hears after the 101 waits for it here until its session runs.
    let member = room.subscribe();
    ws::accept(upgrade, ctx, move |socket, ctx| async move {
        let heard = futures_util::stream::unfold(member, |mut member| async move {
            loop {
                match member.recv().await {
                    Ok(message) => return Some((message, member)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "chat member fell behind; skipping ahead");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        ws::session(socket, &ctx, heard, |message| {
            if let Message::Text(_) = message {
                // No member is an error only for this room's last leaver.
                let _ = room.send(message);
            }
            None
        })
        .await;
    })
}
