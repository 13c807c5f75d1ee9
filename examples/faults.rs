//! ferricorn with extra routes that fail or stall on purpose, for the fault
//! and lifecycle tests (tests/integration/): the same supervisor and workers
//! as the real binary, with an app that misbehaves the ways real apps do.
//!
//! - `GET /fault/panic`: the handler panics.
//! - `GET /fault/abort`: the worker process aborts (SIGABRT).
//! - `GET /fault/leak?mib=N`: the worker leaks N MiB, touched so it counts.
//! - `GET /fault/slow?secs=S`: answers after S seconds (a long request, which
//!   a drain must let finish); logs "slow request started" when it begins.
//!
//! And one start-up fault: when `FAULTS_BOOT_DELAY_FILE` names a file that
//! exists, each worker that starts sleeps the seconds written in it before
//! its routes are built (an app slow to initialise), so a test can hold a
//! reload open for as long as it needs.

use std::process::ExitCode;
use std::time::Duration;

use axum::http::Uri;
use axum::routing::get;
use axum::Router;
use ferricorn::worker::WorkerContext;

/// Names the file whose contents (seconds) delay every worker's start.
const BOOT_DELAY_FILE_ENV: &str = "FAULTS_BOOT_DELAY_FILE";

fn app(ctx: WorkerContext) -> Router {
    if let Some(delay) = boot_delay() {
        tracing::info!(
            secs = delay.as_secs_f64(),
            "delaying start (FAULTS_BOOT_DELAY_FILE)"
        );
        // Blocking on purpose: this is an app whose initialisation is slow.
        std::thread::sleep(delay);
    }
    ferricorn::app::router(ctx)
        .route("/fault/panic", get(panic))
        .route("/fault/abort", get(abort))
        .route("/fault/leak", get(leak))
        .route("/fault/slow", get(slow))
}

fn boot_delay() -> Option<Duration> {
    let path = std::env::var_os(BOOT_DELAY_FILE_ENV)?;
    let text = std::fs::read_to_string(path).ok()?;
    Duration::try_from_secs_f64(text.trim().parse().ok()?).ok()
}

/// The number after `name=` in the query, if any.
fn query_number(uri: &Uri, name: &str) -> Option<f64> {
    uri.query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?
        .parse()
        .ok()
}

async fn panic() -> &'static str {
    panic!("deliberate panic in a handler");
}

async fn abort() -> &'static str {
    std::process::abort();
}

async fn leak(uri: Uri) -> String {
    let mib = query_number(&uri, "mib").unwrap_or(1.0) as usize;
    let block = vec![1u8; mib << 20];
    std::mem::forget(block);
    format!("leaked {mib} MiB\n")
}

async fn slow(uri: Uri) -> String {
    let secs = query_number(&uri, "secs").unwrap_or(1.0);
    tracing::info!(secs, "slow request started");
    tokio::time::sleep(Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO)).await;
    format!("slow request done after {secs} s\n")
}

fn main() -> ExitCode {
    ferricorn::cli::main(app)
}
