//! `/chat/{room}`: WebSocket chat rooms that span every worker (and, with
//! Redis, every host), built on `ctx.pubsub`; the example of a handler that
//! holds connections open and of publishing from app code.
//!
//! - `GET /chat/{room}` (WebSocket): join `room`. `/chat` is the room
//!   `default`. Room names are 1-64 letters, digits, `-`, `_` or `.`.
//! - `POST /chat/{room}/messages`: the body (UTF-8 text) is said in the
//!   room by `http`: publishing from an ordinary handler.
//!
//! What a member receives, one JSON object per text frame: first
//! `{"type":"welcome","room":…,"member":…,"host":…,"pid":…}` (its own id,
//! and the host and worker process it is connected to, as `/health` names
//! them: which one a load balancer chose), then
//! `{"type":"join","member":…}`, `{"type":"leave","member":…}` and
//! `{"type":"message","from":…,"text":…}` for everyone in the room, its own
//! included. Each text frame it sends is a message; one too large for
//! pub/sub gets `{"type":"error",…}` back.
//!
//! The drain contract: when the worker drains, every member gets the
//! worker's close code: 1012 on reload or recycle, so clients reconnect at
//! once and land on the new generation; 1001 on stop. [`super::ws::session`]
//! does that for every WebSocket route.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ws::{Message, Utf8Bytes, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use serde::Serialize;

use super::ws;
use crate::pubsub::PubSub;
use crate::worker::WorkerContext;

/// The room `/chat` joins.
pub const DEFAULT_ROOM: &str = "default";
const MAX_ROOM: usize = 64;

/// What members hear.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Event<'a> {
    Welcome {
        room: &'a str,
        member: &'a str,
        host: &'a str,
        pid: u32,
    },
    Join {
        member: &'a str,
    },
    Leave {
        member: &'a str,
    },
    Message {
        from: &'a str,
        text: &'a str,
    },
    Error {
        error: String,
    },
}

impl Event<'_> {
    fn encode(&self) -> String {
        serde_json::to_string(self).expect("events are plain strings")
    }
}

/// `/chat` and its rooms, for [`super::router`] to merge.
pub fn router(ctx: WorkerContext) -> Router {
    Router::new()
        .route("/chat", get(join_default))
        .route("/chat/{room}", get(join))
        .route("/chat/{room}/messages", post(say))
        .with_state(ctx)
}

fn topic(room: &str) -> Option<String> {
    let valid = !room.is_empty()
        && room.len() <= MAX_ROOM
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    valid.then(|| format!("chat/{room}"))
}

fn bad_room() -> Response {
    (
        StatusCode::BAD_REQUEST,
        "room names are 1-64 letters, digits, '-', '_' or '.'\n",
    )
        .into_response()
}

async fn join_default(upgrade: WebSocketUpgrade, State(ctx): State<WorkerContext>) -> Response {
    enter(upgrade, ctx, DEFAULT_ROOM.to_owned())
}

async fn join(
    Path(room): Path<String>,
    upgrade: WebSocketUpgrade,
    State(ctx): State<WorkerContext>,
) -> Response {
    enter(upgrade, ctx, room)
}

/// A member id unique across workers and hosts: the process's pub/sub node
/// and a counter.
fn member_id(pubsub: &PubSub) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n}", &pubsub.node()[..8])
}

fn enter(upgrade: WebSocketUpgrade, ctx: WorkerContext, room: String) -> Response {
    let Some(topic) = topic(&room) else {
        return bad_room();
    };
    // A member from the moment its handshake is answered: what the room
    // hears after the 101 waits for it here until its session runs.
    let heard = match ctx.pubsub.subscribe(&topic) {
        Ok(subscription) => subscription,
        Err(_) => return bad_room(),
    };
    let member = member_id(&ctx.pubsub);
    ws::accept(upgrade, ctx, move |socket, ctx| async move {
        let pubsub = ctx.pubsub.clone();
        let welcome = Event::Welcome {
            room: &room,
            member: &member,
            host: &ctx.identity.host,
            pid: ctx.identity.pid,
        }
        .encode();
        // Subscribed first, then announced: whoever hears the join can
        // answer, and the answer reaches the newcomer.
        let _ = pubsub.publish(&topic, Event::Join { member: &member }.encode());
        let outgoing = futures_util::stream::once(async { Message::Text(welcome.into()) }).chain(
            heard.into_stream().filter_map(|bytes| async move {
                Utf8Bytes::try_from(bytes).ok().map(Message::Text)
            }),
        );
        ws::session(socket, &ctx, outgoing, |message| {
            let Message::Text(text) = message else {
                return None;
            };
            let said = Event::Message {
                from: &member,
                text: &text,
            }
            .encode();
            match pubsub.publish(&topic, said) {
                Ok(()) => None,
                Err(e) => Some(Message::Text(
                    Event::Error {
                        error: e.to_string(),
                    }
                    .encode()
                    .into(),
                )),
            }
        })
        .await;
        let _ = pubsub.publish(&topic, Event::Leave { member: &member }.encode());
    })
}

/// `POST /chat/{room}/messages`: says the body in the room, as `http`.
async fn say(Path(room): Path<String>, State(ctx): State<WorkerContext>, text: String) -> Response {
    let Some(topic) = topic(&room) else {
        return bad_room();
    };
    let said = Event::Message {
        from: "http",
        text: &text,
    }
    .encode();
    match ctx.pubsub.publish(&topic, said) {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => (StatusCode::PAYLOAD_TOO_LARGE, format!("{e}\n")).into_response(),
    }
}
