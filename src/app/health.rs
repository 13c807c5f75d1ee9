//! `GET /health`: liveness plus who answered (worker slot, generation, pid,
//! version and build of the executable), so a client can tell old code from
//! new across a reload; this worker's counters; and the supervisor's live
//! figures (the same as its `STATUS=`), relayed every few seconds.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::worker::WorkerContext;

pub async fn health(State(ctx): State<WorkerContext>) -> Json<Value> {
    let id = &ctx.identity;
    Json(json!({
        "status": "healthy",
        "version": env!("CARGO_PKG_VERSION"),
        "build": id.build,
        "pid": id.pid,
        "worker": id.slot,
        "generation": id.generation,
        "counters": ctx.counters(),
        "supervisor": ctx.supervisor_status(),
    }))
}
