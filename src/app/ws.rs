//! `/ws`: WebSocket echo of text and binary messages, and [`session`], the
//! loop every WebSocket route here runs (the echo, and `/chat`).
//!
//! Pings are answered by the protocol layer. The server pings a quiet
//! client every `ws_ping_interval` and closes with 1011 if nothing comes
//! back within `ws_ping_timeout`; a client that stops reading is dropped
//! once a send has waited that long, so it holds one batch at most. On
//! drain the worker's close code goes to the client, even one in the middle
//! of a send (1001 on stop, 1012 on reload or recycle, so it reconnects at
//! once). A message over `ws_max_size` closes with 1009.

use std::time::Duration;

use tokio::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;

use crate::worker::WorkerContext;

/// Most messages from elsewhere written to a client in one go.
const BATCH: usize = 64;

/// Read buffer per WebSocket. tungstenite's default reserves 128 KiB for
/// every connection, idle or not (measured: 132 KiB per idle socket); a
/// small one grows per read as messages need it.
const READ_BUFFER: usize = 4 * 1024;

/// Close code for a client that left a ping unanswered (RFC 6455 §7.4.1:
/// an unexpected condition), as Python's websockets sends.
const CLOSE_PING_TIMEOUT: u16 = 1011;

/// How long a draining echo waits for the client's answering Close frame
/// before dropping the connection anyway.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn echo(upgrade: WebSocketUpgrade, State(ctx): State<WorkerContext>) -> Response {
    accept(upgrade, ctx, |socket, ctx| async move {
        let replies = futures_util::stream::pending::<axum::extract::ws::Message>();
        session(socket, &ctx, replies, Some).await;
    })
}

/// Upgrades with this worker's limits and runs `serve` on the socket,
/// counted as an open WebSocket (in `/health`, in a connection slot, and in
/// what a drain waits for) until it returns.
pub fn accept<F, Fut>(upgrade: WebSocketUpgrade, ctx: WorkerContext, serve: F) -> Response
where
    F: FnOnce(WebSocket, WorkerContext) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    // Taken before the upgrade, so a drain that starts in between still waits.
    let guard = ctx.open_websocket();
    let limit = ctx.config.ws_max_size;
    upgrade
        .read_buffer_size(READ_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            serve(socket, ctx).await;
            drop(guard);
        })
}

/// Runs one WebSocket until either side closes it or the worker drains:
/// each text or binary message from the client goes to `on_message`, which
/// may return a reply; each item of `outgoing` (messages from elsewhere,
/// e.g. a chat room) is sent as it comes. Pings, the ping timeout, bounded
/// sends, close codes and the drain's close are handled here, once.
pub async fn session<S, F>(socket: WebSocket, ctx: &WorkerContext, outgoing: S, on_message: F)
where
    S: futures_util::Stream<Item = Message>,
    F: FnMut(Message) -> Option<Message>,
{
    let code = converse(socket, ctx, outgoing, on_message).await;
    ctx.metrics.ws_closed(code);
}

/// Close code for a connection that ended without a Close frame (RFC 6455
/// §7.1.5: it is never sent, only reported).
const CLOSE_ABNORMAL: u16 = 1006;
/// Close code for a Close frame without one.
const CLOSE_NO_STATUS: u16 = 1005;

/// [`session`]'s conversation; returns the code the WebSocket closed with.
async fn converse<S, F>(
    mut socket: WebSocket,
    ctx: &WorkerContext,
    outgoing: S,
    mut on_message: F,
) -> u16
where
    S: futures_util::Stream<Item = Message>,
    F: FnMut(Message) -> Option<Message>,
{
    use futures_util::StreamExt;
    let interval = Duration::from_secs_f64(ctx.config.ws_ping_interval);
    let patience = Duration::from_secs_f64(ctx.config.ws_ping_timeout);
    let pings = !interval.is_zero();
    // Next ping due while the client is quiet; then the deadline for any
    // frame from it in answer.
    let mut ping_due = Instant::now() + interval;
    let mut answer_by: Option<Instant> = None;
    let mut outgoing = std::pin::pin!(outgoing.fuse());
    loop {
        let wake = answer_by.unwrap_or(ping_due);
        tokio::select! {
            () = ctx.drain.draining() => {
                close(&mut socket, ctx.drain.close_code(), ctx.drain.close_reason()).await;
                return ctx.drain.close_code();
            }
            () = tokio::time::sleep_until(wake), if pings => {
                if answer_by.is_some() {
                    tracing::debug!("WebSocket ping unanswered; closing");
                    close(&mut socket, CLOSE_PING_TIMEOUT, "ping timeout").await;
                    return CLOSE_PING_TIMEOUT;
                }
                if let Err(code) = send_or_close(&mut socket, vec![Message::Ping(Default::default())], patience, ctx).await {
                    return code;
                }
                answer_by = Some(Instant::now() + patience);
            }
            Some(message) = outgoing.next() => {
                // What else is ready goes in the same write: a burst into a
                // room costs one flush per member, not one per message.
                let mut batch = vec![message];
                while batch.len() < BATCH {
                    match futures_util::FutureExt::now_or_never(outgoing.next()) {
                        Some(Some(more)) => batch.push(more),
                        _ => break,
                    }
                }
                if let Err(code) = send_or_close(&mut socket, batch, patience, ctx).await {
                    return code;
                }
            }
            message = socket.recv() => {
                // Any frame shows the client alive, a pong or not.
                answer_by = None;
                ping_due = Instant::now() + interval;
                match message {
                    Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                        ctx.metrics.ws_received(1);
                        if let Some(reply) = on_message(message) {
                            if let Err(code) = send_or_close(&mut socket, vec![reply], patience, ctx).await {
                                return code;
                            }
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(frame))) => {
                        answer_close(socket).await;
                        return frame.map_or(CLOSE_NO_STATUS, |f| f.code);
                    }
                    None => return CLOSE_ABNORMAL,
                    Some(Err(error)) => {
                        return match close_code_for(error) {
                            Some((code, reason)) => {
                                close(&mut socket, code, reason).await;
                                code
                            }
                            None => CLOSE_ABNORMAL,
                        };
                    }
                }
            }
        }
    }
}

/// Sends messages (written together, flushed once); `Err` with the code the
/// session ended with if it is over: the send failed, or the client has not taken them within
/// `patience` (it stopped reading: what is queued for it is one batch,
/// never more; it is dropped), or the worker began draining meanwhile (the
/// client then gets the drain's close code, like any other member: a send
/// cut short leaves whole frames in the buffer, which the Close follows).
async fn send_or_close(
    socket: &mut WebSocket,
    messages: Vec<Message>,
    patience: Duration,
    ctx: &WorkerContext,
) -> Result<(), u16> {
    use futures_util::SinkExt;
    let data = messages
        .iter()
        .filter(|m| matches!(m, Message::Text(_) | Message::Binary(_)))
        .count() as u64;
    let send = async {
        for message in messages {
            socket.feed(message).await?;
        }
        socket.flush().await
    };
    tokio::select! {
        sent = tokio::time::timeout(patience, send) => match sent {
            Ok(Ok(())) => {
                ctx.metrics.ws_sent(data);
                Ok(())
            }
            Ok(Err(_)) => Err(CLOSE_ABNORMAL),
            Err(_) => {
                tracing::debug!("WebSocket client not reading; dropping it");
                Err(CLOSE_ABNORMAL)
            }
        },
        () = ctx.drain.draining() => {
            // Bounded by the close handshake's own timeout.
            close(socket, ctx.drain.close_code(), ctx.drain.close_reason()).await;
            Err(ctx.drain.close_code())
        }
    }
}

/// Sends a Close frame and waits for the client's reply, so the client
/// sees a clean close rather than a reset; bounded as a whole, since a
/// client that does not read cannot take the frame either.
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
        if socket.send(Message::Close(Some(frame))).await.is_ok() {
            while let Some(Ok(_)) = socket.recv().await {}
        }
    })
    .await;
}

/// Completes a close the client began. The protocol layer has queued the
/// answering Close frame (the client's own code, or 1002 for a code no
/// endpoint may send); RFC 6455 §5.5.1 requires it be sent before the TCP
/// connection ends, or the client reports an abnormal closure (1006).
/// Bounded, since a client that does not read cannot take it.
async fn answer_close(mut socket: WebSocket) {
    use futures_util::SinkExt;
    // Ends in an error once the answer is out: the connection is closed.
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, socket.flush()).await;
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
