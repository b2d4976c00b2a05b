//! Batches whose headers lie, through the log's public API: they are refused
//! on append, and when an older broker already stored some, recovery keeps
//! them out of the log without stopping (issue #12).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use bytes::Bytes;
use common::{batch, lying_batch, read_all, run};
use shardline_log::{build_batch, BatchSpec, Durability, Log, LogConfig, LogError, Offset};

/// More lying batches than one index interval holds: with 1 KiB between index
/// entries, the old log asserted on the index entry of the 18th one.
const LYING_BATCHES: i64 = 70;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 8 << 20,
        index_interval_bytes: 1024,
        durability: Durability::Always,
        retention_ms_max: None,
        ..LogConfig::default()
    }
}

#[test]
fn a_header_that_claims_records_it_does_not_hold_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, config()).await.unwrap();
        for _ in 0..LYING_BATCHES {
            let refused = log.append(Bytes::from(lying_batch(0))).await;
            assert!(
                matches!(refused, Err(LogError::InvalidBatch(_))),
                "a lying batch must be refused, got {refused:?}"
            );
            assert_eq!(log.log_end(), Offset(0), "a refused batch moves no offset");
        }
        let good = log.append(Bytes::from(batch(3, 1, 1, 50))).await.unwrap();
        assert_eq!((good.base_offset, good.last_offset), (Offset(0), Offset(2)));
        log.close().await.unwrap();
        drop(log);
        let log = Log::open(&path, config()).await.unwrap();
        assert_eq!(log.log_end(), Offset(3));
        assert_eq!(read_all(&log).len(), 1);
    });
}

#[test]
fn lying_batches_an_older_broker_stored_do_not_stop_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    // What the old log left on disk: lying batches with offsets 2^31 - 1
    // apart, their CRCs correct, then zero fill.
    let mut segment = Vec::new();
    for i in 0..LYING_BATCHES {
        segment.extend_from_slice(&lying_batch(i * i64::from(i32::MAX)));
    }
    let lying_bytes = segment.len();
    segment.resize(64 << 10, 0);
    std::fs::write(path.join("00000000000000000000.log"), &segment).unwrap();
    run(move || async move {
        let log = Log::open(&path, config()).await.unwrap();
        assert_eq!(log.log_end(), Offset(0), "no offset of a lying batch is served");
        assert!(read_all(&log).is_empty());
        let good = log.append(Bytes::from(batch(2, 1, 1, 50))).await.unwrap();
        assert_eq!(good.base_offset, Offset(0));
        log.close().await.unwrap();
        drop(log);
        // Quarantined in place: the bytes are still there, nothing was cut.
        let on_disk = std::fs::read(path.join("00000000000000000000.log")).unwrap();
        assert_eq!(&on_disk[..lying_bytes], &segment[..lying_bytes]);
        let log = Log::open(&path, config()).await.unwrap();
        assert_eq!(log.log_end(), Offset(2));
        assert_eq!(read_all(&log).len(), 1);
    });
}

/// A zstd batch whose header may truthfully claim `i32::MAX` records: its
/// compressed section is large enough to hold them (see `batch.rs`).
fn big_compressed_batch(seed: u8) -> Vec<u8> {
    let payload = vec![seed; 470_000];
    let mut spec = BatchSpec::plain(i32::MAX, 1_700_000_000_000, &payload);
    spec.attributes = 4; // zstd
    build_batch(&spec)
}

#[test]
fn a_segment_rolls_before_its_offsets_leave_the_index_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, config()).await.unwrap();
        let mut expected_base = 0i64;
        for seed in 0..5u8 {
            let info = log.append(Bytes::from(big_compressed_batch(seed))).await.unwrap();
            assert_eq!(info.base_offset, Offset(expected_base));
            expected_base += i64::from(i32::MAX);
        }
        assert_eq!(log.segment_count(), 5, "each batch needs a segment of its own");
        let stored = read_all(&log);
        assert_eq!(stored.len(), 5);
        log.close().await.unwrap();
        drop(log);
        let log = Log::open(&path, config()).await.unwrap();
        assert_eq!(log.log_end(), Offset(expected_base));
        assert_eq!(read_all(&log), stored);
    });
}
