//! Helpers shared by the log's integration tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test helpers: not every test file uses each; a panic is a test failure"
)]

use std::future::Future;

use glommio::{LocalExecutorBuilder, Placement};
use shardline_log::{build_batch, validate, BatchSpec, Clock, Log};

/// Runs `f` on a fresh single-threaded glommio executor, as a shard would.
pub fn run<T: 'static, F: Future<Output = T> + 'static>(f: impl FnOnce() -> F) -> T {
    LocalExecutorBuilder::new(Placement::Unbound)
        // Small registered-buffer pool: stays under the 8 MiB memlock limit.
        .io_memory(512 << 10)
        .make()
        .expect("glommio executor")
        .run(f())
}

/// A batch of `records` records with a payload derived from `seed`.
pub fn batch(records: i32, timestamp_ms: i64, seed: u64, payload_bytes: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..payload_bytes)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8)
        .collect();
    build_batch(&BatchSpec::plain(records, timestamp_ms, &payload))
}

/// A clock the test moves by hand.
#[derive(Default)]
pub struct ManualClock(pub std::cell::Cell<i64>);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.get()
    }
}

/// Every stored batch, read back from the log start to its end. Everything
/// served must be a whole valid batch, and every read must make progress.
pub fn read_all(log: &Log) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut from = log.log_start();
    while from < log.log_end() {
        let read = log.read(from, 1 << 30, log.log_end()).unwrap();
        for chunk in &read.chunks {
            let mut at = 0;
            while at < chunk.len() {
                let header = validate(&chunk[at..]).unwrap();
                out.push(chunk[at..at + header.total_bytes()].to_vec());
                at += header.total_bytes();
            }
        }
        assert!(read.next_offset > from, "reads must make progress");
        from = read.next_offset;
    }
    out
}
