//! ferricorn with three extra routes that fail on purpose, for the fault
//! tests (tests/integration/hostile.rs): the same supervisor and workers as
//! the real binary, with an app that misbehaves the ways real apps do.
//!
//! - `GET /fault/panic`: the handler panics.
//! - `GET /fault/abort`: the worker process aborts (SIGABRT).
//! - `GET /fault/leak?mib=N`: the worker leaks N MiB, touched so it counts.

use std::process::ExitCode;

use axum::http::Uri;
use axum::routing::get;
use axum::Router;
use ferricorn::worker::WorkerContext;

fn app(ctx: WorkerContext) -> Router {
    ferricorn::app::router(ctx)
        .route("/fault/panic", get(panic))
        .route("/fault/abort", get(abort))
        .route("/fault/leak", get(leak))
}

async fn panic() -> &'static str {
    panic!("deliberate panic in a handler");
}

async fn abort() -> &'static str {
    std::process::abort();
}

async fn leak(uri: Uri) -> String {
    let mib: usize = uri
        .query()
        .and_then(|q| q.strip_prefix("mib="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let block = vec![1u8; mib << 20];
    std::mem::forget(block);
    format!("leaked {mib} MiB\n")
}

fn main() -> ExitCode {
    ferricorn::cli::main(app)
}
