//! Bench-only: the same `/health` JSON and `/ws` echo as ferricorn's app, as
//! one bare single-process axum server on a current-thread runtime, with no
//! supervisor, no counters and no access log: the ceiling ferricorn's
//! overhead is measured against (`scripts/bench`).
//!
//!   cargo run --release --example bare_axum -- 127.0.0.1:8099

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use ferricorn::control::{Counters, SupervisorStatus};
use serde::Serialize;

/// The same fields, and the same typed serialisation, as ferricorn's
/// `/health`; the figures are fixed, as there is no supervisor.
#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    build: &'static str,
    pid: u32,
    worker: usize,
    generation: u64,
    counters: Counters,
    supervisor: Option<SupervisorStatus>,
}

async fn health() -> Json<Health> {
    Json(Health {
        status: "healthy",
        version: env!("CARGO_PKG_VERSION"),
        build: "bare",
        pid: std::process::id(),
        worker: 1,
        generation: 1,
        counters: Counters::default(),
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
        axum::serve(listener, app).await
    })
}
