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

/// A one-record batch at `base_offset` whose record length lies (it claims
/// more bytes than the batch holds) under a correct CRC-32C: its header
/// chains like a good batch's, only a walk of its records refuses it.
fn batch_with_a_lying_record(base_offset: i64) -> Vec<u8> {
    let mut out = batch(1, 1_700_000_000_000, 7, 16);
    shardline_log::set_base_offset(&mut out, Offset(base_offset));
    out[61] = 0x7e; // record length varint: 63, past the batch's end
    let crc = shardline_log::compute_crc(&out).unwrap();
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Fuzz finding (segment_recovery, 2026-12-06): a sealed segment without an
/// index holding a batch whose records lie was kept as a damaged range at the
/// first open, which then wrote the segment's index; the second open trusted
/// that index, walked batch headers only, and served the batch.
#[test]
fn a_damaged_range_in_a_sealed_segment_stays_damaged_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    std::fs::write(path.join(format!("{:020}.log", 0)), batch_with_a_lying_record(0)).unwrap();
    let mut good = batch(1, 1_700_000_000_000, 8, 16);
    shardline_log::set_base_offset(&mut good, Offset(1));
    std::fs::write(path.join(format!("{:020}.log", 1)), &good).unwrap();
    run(move || async move {
        let mut end = None;
        for open in 0..3 {
            let log = Log::open(&path, config()).await.unwrap();
            assert_eq!(log.log_start(), Offset(0));
            let damaged = log.read(Offset(0), 1 << 20, log.log_end());
            assert!(
                matches!(damaged, Err(LogError::CorruptRange { ref range, .. }) if range.holds(Offset(0))),
                "open {open}: offset 0 lies in a damaged range, got {damaged:?}",
            );
            let read = log.read(Offset(1), 1 << 20, log.log_end()).unwrap();
            assert_eq!(
                read.chunks.concat()[..good.len()],
                good[..],
                "open {open}: the good batch after it"
            );
            if open == 0 {
                log.append(Bytes::from(batch(1, 1_700_000_000_000, 9, 16)))
                    .await
                    .unwrap();
                end = Some(log.log_end());
            }
            assert_eq!(Some(log.log_end()), end, "open {open}: the appended batch stays");
            log.close().await.unwrap();
        }
    });
}
