//! # `shardline-testkit`: real engine processes for integration tests
//!
//! Dev-only (a dev-dependency of `engine`, `tools`, `bench`, `log`, `net` and
//! `raft`; nothing ships it). One harness instead of one per crate: it finds the `engine` binary,
//! starts it on free ports with its own data directory and log file, stops
//! it (SIGTERM, then SIGKILL) when dropped, kills and restarts it, and reads
//! what it logged. It depends on no other crate of the workspace, so `bench`
//! stays a pure client: the engine is a process here, never a library.
//!
//! Each shard of an engine listens on `--listen`'s port + shard index, so
//! engines start on a run of free ports ([`free_port_run`]); the HTTP
//! endpoint gets a free port of its own ([`Engine::http_addr`],
//! [`Engine::http_get`], [`http_request`]), never the default 9644, since
//! tests start engines concurrently.
//!
//! It also runs test code on a glommio executor as a shard runs it
//! ([`run_on_shard`], [`run_on_shard_reused`]), for the tests of `log`,
//! `net`, `raft` and `tools` that drive the code in-process.
//!
//! Failures panic with the engine's log: a panic is a test failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test support: a panic is a test failure, with the engine's log attached"
)]

mod engine;
mod http;
mod kafka;
mod ports;
mod shard;

pub use engine::{engine_binary, raw_exchange, run_engine_briefly, shard_count, Engine};
pub use http::{http_exchange, http_request, HttpResponse};
pub use kafka::{call, node_of, KafkaConnection};
pub use ports::free_port_run;
pub use shard::{run_on_shard, run_on_shard_reused};
