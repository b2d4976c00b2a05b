//! Helpers shared by the log's integration tests.
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test helpers: not every test file uses each; a panic is a test failure"
)]

use shardline_log::{build_batch, validate, BatchError, BatchHeader, BatchSpec, Clock, Durability, Log, LogConfig};

/// 64 KiB segments, an index entry per KiB, no fsync, no retention: many
/// segments from little data.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 10,
        index_interval_bytes: 1024,
        durability: Durability::Never,
        retention_ms_max: None,
        ..LogConfig::default()
    }
}

pub use shardline_testkit::{run_on_shard as run, run_on_shard_reused as run_reused};

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
    for_each_served(log, validate, |batch, _| out.push(batch.to_vec()));
    out
}

/// Calls `f` with every batch served from the log start to its end and its
/// header, each checked by `check` (`validate`, or `validate_stored` for a
/// log that may be compacted); every read must make progress.
fn for_each_served(
    log: &Log,
    check: fn(&[u8]) -> Result<BatchHeader, BatchError>,
    mut f: impl FnMut(&[u8], &BatchHeader),
) {
    let mut from = log.log_start();
    while from < log.log_end() {
        let read = log.read(from, 1 << 30, log.log_end()).unwrap();
        for chunk in &read.chunks {
            let mut at = 0;
            while at < chunk.len() {
                let header = check(&chunk[at..]).unwrap();
                f(&chunk[at..at + header.total_bytes()], &header);
                at += header.total_bytes();
            }
        }
        assert!(read.next_offset > from, "reads must make progress");
        from = read.next_offset;
    }
}

/// A 61-byte batch whose header claims `i32::MAX` records (last offset delta
/// `i32::MAX - 1`) with no record behind it, and a correct CRC-32C: what a
/// hostile client sends to move a partition's offsets by 2^31 at a time.
pub fn lying_batch(base_offset: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(61);
    out.extend_from_slice(&base_offset.to_be_bytes());
    out.extend_from_slice(&49i32.to_be_bytes()); // batch length: header only
    out.extend_from_slice(&(-1i32).to_be_bytes()); // leader epoch
    out.push(2); // magic
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
    out.extend_from_slice(&0i16.to_be_bytes()); // attributes: uncompressed
    out.extend_from_slice(&(i32::MAX - 1).to_be_bytes()); // last offset delta
    out.extend_from_slice(&1_700_000_000_000i64.to_be_bytes()); // base timestamp
    out.extend_from_slice(&1_700_000_000_000i64.to_be_bytes()); // max timestamp
    out.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    out.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    out.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    out.extend_from_slice(&i32::MAX.to_be_bytes()); // record count
    assert_eq!(out.len(), 61);
    let crc = shardline_log::compute_crc(&out).unwrap();
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A record as stored: offset, key, value.
pub type StoredRecord = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// Every record stored, as (offset, key, value), read back from the log
/// start to its end through `Log::read`: stored batches may be compacted.
pub fn read_records(log: &Log) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    let from = log.log_start();
    for_each_served(log, shardline_log::validate_stored, |batch, header| {
        for record in shardline_log::uncompressed_records(batch, header).unwrap() {
            let record = record.unwrap();
            let offset = header.base_offset.0 + i64::from(record.offset_delta);
            if offset >= from.0 {
                out.push((offset, record.key.map(<[u8]>::to_vec), record.value.map(<[u8]>::to_vec)));
            }
        }
    });
    out
}
