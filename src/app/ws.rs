//! `/ws`: WebSocket echo of text and binary messages.
//!
//! Pings are answered by the protocol layer. On drain the worker's close
//! code goes to the client (1001 on stop, 1012 on reload or recycle, so it
//! reconnects at once). A message over `ws_max_size` closes with 1009.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;

use crate::worker::WorkerContext;

/// Read buffer per WebSocket. tungstenite's default reserves 128 KiB for
/// every connection, idle or not (measured: 132 KiB per idle socket); a
/// small one grows per read as messages need it.
const READ_BUFFER: usize = 4 * 1024;

/// How long a draining echo waits for the client's answering Close frame
/// before dropping the connection anyway.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn echo(upgrade: WebSocketUpgrade, State(ctx): State<WorkerContext>) -> Response {
    // Taken before the upgrade, so a drain that starts in between still waits.
    let guard = ctx.open_websocket();
    let limit = ctx.config.ws_max_size;
    upgrade
        .read_buffer_size(READ_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            run(socket, ctx).await;
            drop(guard);
        })
}

async fn run(mut socket: WebSocket, ctx: WorkerContext) {
    loop {
        tokio::select! {
            () = ctx.drain.draining() => {
                close(socket, ctx.drain.close_code(), "server going away").await;
                return;
            }
            message = socket.recv() => match message {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    if socket.send(message).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => return,
                Some(Err(error)) => {
                    if let Some((code, reason)) = close_code_for(error) {
                        close(socket, code, reason).await;
                    }
                    return;
                }
            },
        }
    }
}

/// Sends a Close frame and waits (bounded) for the client's reply, so the
/// client sees a clean close rather than a reset.
async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

/// The close code and reason for a failed read, per RFC 6455 section 7.4.1;
/// `None` where the connection is simply gone.
fn close_code_for(error: axum::Error) -> Option<(u16, &'static str)> {
    use tokio_tungstenite::tungstenite::Error;
    match error.into_inner().downcast_ref::<Error>()? {
        Error::Capacity(_) => Some((1009, "message too big")),
        Error::Protocol(_) => Some((1002, "protocol error")),
        Error::Utf8(_) => Some((1007, "invalid UTF-8 in text message")),
        _ => None,
    }
}
