//! `GET /health`: liveness plus who answered (worker slot, generation, pid,
//! version and build of the executable), so a client can tell old code from
//! new across a reload; this worker's counters; its pub/sub backend and
//! whether it is reachable ("degraded" is still a 200: the worker serves,
//! its messages reach this worker only); and the supervisor's live
//! figures (the same as its `STATUS=`), relayed every few seconds. When a
//! stop has a `stop_delay`, it answers 503 with `"status": "stopping"`
//! from the stop on, so a load balancer's health checks take the host out
//! while its workers still serve. It also
//! says who it thinks the client is ([`Client`]: behind a trusted proxy,
//! the address and scheme the proxy named), which shows at once whether
//! `forwarded_allow_ips` fits the proxy in front.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::control::{Counters, SupervisorStatus};
use crate::proxy::{Client, Scheme};
use crate::worker::WorkerContext;

/// The answer, typed: serialised straight to bytes, with no intermediate
/// JSON tree per request.
#[derive(Serialize)]
pub struct Health<'a> {
    status: &'static str,
    /// The machine's hostname: which host of a fleet answered.
    host: &'a str,
    version: &'static str,
    build: &'a str,
    pid: u32,
    worker: usize,
    generation: u64,
    /// The client's address (`unix` for a local peer that named none).
    client: String,
    scheme: Scheme,
    counters: Counters,
    pubsub: crate::pubsub::Health,
    supervisor: Option<Arc<SupervisorStatus>>,
}

pub async fn health(State(ctx): State<WorkerContext>, client: Client) -> Response {
    let id = &ctx.identity;
    let (code, status) = match ctx.drain.is_leaving() {
        true => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
        false => (StatusCode::OK, "healthy"),
    };
    let body = Json(Health {
        status,
        host: &id.host,
        version: env!("CARGO_PKG_VERSION"),
        build: &id.build,
        pid: id.pid,
        worker: id.slot,
        generation: id.generation,
        client: client.to_string(),
        scheme: client.scheme,
        counters: ctx.counters(),
        pubsub: ctx.pubsub.health(),
        supervisor: ctx.supervisor_status(),
    });
    (code, body).into_response()
}
