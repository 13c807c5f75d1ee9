//! Bench-only: the same `/health` JSON and `/ws` echo as ferricorn's app, as
//! one bare single-process axum server on a current-thread runtime, with no
//! supervisor, no counters and no access log: the ceiling ferricorn's
//! overhead is measured against (`scripts/bench`). Its `/health` has
//! ferricorn's fields in ferricorn's order, serialised as an axum app
//! would: `Json` of a typed struct, the client from `ConnectInfo`.
//!
//!   cargo run --release --example bare_axum -- 127.0.0.1:8099

use std::net::SocketAddr;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::ConnectInfo;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use ferricorn::control::{Counters, SupervisorStatus};
use ferricorn::pubsub::{Backend, Health as PubSubHealth};
use serde::Serialize;

/// The same fields, and the same typed serialisation, as ferricorn's
/// `/health`; the figures are fixed, as there is no supervisor.
#[derive(Serialize)]
struct Health {
    status: &'static str,
    host: &'static str,
    version: &'static str,
    build: &'static str,
    pid: u32,
    worker: usize,
    generation: u64,
    client: String,
    scheme: &'static str,
    counters: Counters,
    pubsub: PubSubHealth,
    supervisor: Option<SupervisorStatus>,
}

async fn health(ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Json<Health> {
    Json(Health {
        status: "healthy",
        host: "localhost",
        version: env!("CARGO_PKG_VERSION"),
        build: "bare-axum-build",
        pid: std::process::id(),
        worker: 1,
        generation: 1,
        client: peer.ip().to_string(),
        scheme: "http",
        counters: Counters::default(),
        pubsub: PubSubHealth {
            backend: Backend::Embedded,
            state: "ok",
            published: 0,
            delivered: 0,
            dropped: 0,
            lost: 0,
        },
        supervisor: Some(SupervisorStatus {
            generation: 1,
            workers_ready: 1,
            workers_target: 1,
            ..SupervisorStatus::default()
        }),
    })
}

async fn ws(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(echo)
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        match message {
            Message::Text(_) | Message::Binary(_) => {
                let Ok(()) = socket.send(message).await else {
                    return;
                };
            }
            Message::Close(_) => return,
            _ => {}
        }
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8099".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        let app = Router::new()
            .route("/health", get(health))
            .route("/ws", get(ws));
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    })
}
