//! Integration tests: every test runs the real `ferricorn` binary with real
//! sockets, processes and signals (see `harness`).

mod config;
mod ctl;
mod foundation;
mod fuzz;
mod harness;
mod hostile;
mod lifecycle;
mod metrics;
mod proxy;
mod pubsub;
mod websocket;
