//! A sealed segment's index file is only a hint: whatever it holds, the log
//! opens, no offset lookup fails on intact data and no time lookup skips a
//! batch (docs/reliability.md, findings 2 and 3). An index every entry of
//! which the batch headers bear out is kept as written; any other is rebuilt
//! from the data and written back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::{
    future::Future,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use bytes::Bytes;
use common::{batch, run};
use shardline_log::{validate, BatchHeader, Durability, Log, LogConfig, Offset, TimestampOffset};

/// Bytes of one index entry and of its checksummed part (log/src/index.rs).
const ENTRY_BYTES: usize = 24;
const ENTRY_CHECKED_BYTES: usize = 20;

/// Batches in the sealed segment.
const SEALED_BATCHES: i64 = 60;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 10,
        index_interval_bytes: 256,
        durability: Durability::Always,
        retention_ms_max: None,
        ..LogConfig::default()
    }
}

/// One index entry: (relative offset, position, running maximum before it).
type Entry = (u32, u32, i64);

fn index_file(dir: &Path) -> std::path::PathBuf {
    dir.join("00000000000000000000.index")
}

fn read_entries(dir: &Path) -> Vec<Entry> {
    let bytes = std::fs::read(index_file(dir)).unwrap();
    assert_eq!(bytes.len() % ENTRY_BYTES, 0);
    bytes
        .chunks_exact(ENTRY_BYTES)
        .map(|entry| {
            (
                u32::from_le_bytes(entry[0..4].try_into().unwrap()),
                u32::from_le_bytes(entry[4..8].try_into().unwrap()),
                i64::from_le_bytes(entry[8..16].try_into().unwrap()),
            )
        })
        .collect()
}

/// Writes `entries` as the sealed segment's index, each with a good CRC, as
/// a stale index left by a crash would have.
fn write_entries(dir: &Path, entries: &[Entry]) {
    let mut bytes = Vec::new();
    for (relative_offset, position, max_before_ms) in entries {
        let mut entry = [0u8; ENTRY_BYTES];
        entry[0..4].copy_from_slice(&relative_offset.to_le_bytes());
        entry[4..8].copy_from_slice(&position.to_le_bytes());
        entry[8..16].copy_from_slice(&max_before_ms.to_le_bytes());
        let crc = crc32c::crc32c(&entry[..ENTRY_CHECKED_BYTES]);
        entry[ENTRY_CHECKED_BYTES..].copy_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(&entry);
    }
    std::fs::write(index_file(dir), bytes).unwrap();
}

/// A log of one sealed segment (60 batches of 1 to 4 records, timestamps
/// going up and down, batch 0 the smallest) and an active one; returns
/// every stored batch.
async fn sealed_log(dir: &Path) -> Vec<Vec<u8>> {
    let log = Log::open(dir, config()).await.unwrap();
    for i in 0..SEALED_BATCHES {
        let records = 1 + (i % 4) as i32;
        let timestamp_ms = 1_000 + (i * 7_919) % 200;
        log.append(Bytes::from(batch(
            records,
            timestamp_ms,
            i as u64,
            (i as usize * 37) % 300,
        )))
        .await
        .unwrap();
    }
    log.roll().await.unwrap();
    log.append(Bytes::from(batch(1, 5_000, 99, 10))).await.unwrap();
    let stored = common::read_all(&log);
    log.close().await.unwrap();
    assert!(!read_entries(dir).is_empty(), "the sealed segment has an index");
    stored
}

fn headers(stored: &[Vec<u8>]) -> Vec<BatchHeader> {
    stored.iter().map(|batch| validate(batch).unwrap()).collect()
}

/// Every offset is served from the batch that holds it.
fn check_offset_lookups(log: &Log, stored: &[Vec<u8>]) {
    for header in headers(stored) {
        for offset in header.base_offset.0..=header.last_offset().0 {
            let read = log
                .read(Offset(offset), 1, log.log_end())
                .unwrap_or_else(|error| panic!("read at {offset}: {error}"));
            let served = validate(&read.chunks[0]).unwrap();
            assert_eq!(served.base_offset, header.base_offset, "offset {offset}");
        }
    }
}

/// Every time lookup answers what a scan of all batches answers.
fn check_time_lookups(log: &Log, stored: &[Vec<u8>]) {
    let headers = headers(stored);
    for timestamp_ms in (990..1_210).chain([5_000, 5_001, i64::MIN, i64::MAX]) {
        let expected = headers
            .iter()
            .find(|header| header.max_timestamp_ms >= timestamp_ms)
            .map(|header| TimestampOffset {
                offset: header.base_offset,
                timestamp_ms: header.max_timestamp_ms,
                // One timestamp per batch here: its first record is the one.
                exact: header.codec() == Some(shardline_log::Codec::None),
            });
        assert_eq!(
            log.offset_for_timestamp(timestamp_ms).unwrap(),
            expected,
            "time lookup for {timestamp_ms}"
        );
    }
}

/// Opens the log over whatever index is on disk, checks every lookup, and
/// returns the index file as the open left it.
async fn open_and_check(dir: &Path, stored: &[Vec<u8>]) -> Vec<Entry> {
    let log = Log::open(dir, config()).await.unwrap();
    assert_eq!(common::read_all(&log), stored, "the data is served as stored");
    check_offset_lookups(&log, stored);
    check_time_lookups(&log, stored);
    log.close().await.unwrap();
    read_entries(dir)
}

/// Runs `case` on a fresh directory holding [`sealed_log`], with the
/// batches it stored and the index entries the log wrote.
fn with_sealed_log<F: Future<Output = ()> + 'static>(
    case: impl FnOnce(PathBuf, Vec<Vec<u8>>, Vec<Entry>) -> F + 'static,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let stored = sealed_log(&path).await;
        let real = read_entries(&path);
        case(path, stored, real).await;
    });
}

#[test]
fn a_running_maximum_the_data_does_not_bear_out_cannot_make_a_time_lookup_skip_batches() {
    with_sealed_log(|path, stored, real| async move {
        // The first entry (right offset, right position) claims that nothing
        // before it holds a timestamp past 0; batch 0 holds 1000. Trusted,
        // a lookup for 990 starts at that entry and answers a later batch.
        let mut stale = real.clone();
        stale[0].2 = 0;
        write_entries(&path, &stale);
        assert_eq!(open_and_check(&path, &stored).await, real, "the index is rebuilt");
    });
}

#[test]
fn an_index_entry_inside_a_batch_cannot_make_reads_of_intact_data_fail() {
    with_sealed_log(|path, stored, real| async move {
        // Position 4 is inside batch 0, where its bytes 4..12 (the low half
        // of base offset 0, then its length field) read as a header whose
        // base offset is that length: an entry claiming that offset there
        // passes a check of "the header at the position has the offset".
        let claimed = u32::try_from(validate(&stored[0]).unwrap().batch_length).unwrap();
        assert!(i64::from(claimed) < validate(&stored[59]).unwrap().base_offset.0);
        write_entries(&path, &[(claimed, 4, i64::MAX)]);
        assert_eq!(open_and_check(&path, &stored).await, real, "the index is rebuilt");
    });
}

#[test]
fn an_index_the_data_bears_out_is_kept_as_written() {
    with_sealed_log(|path, stored, real| async move {
        let inode = std::fs::metadata(index_file(&path)).unwrap().ino();
        assert_eq!(open_and_check(&path, &stored).await, real);
        assert_eq!(
            std::fs::metadata(index_file(&path)).unwrap().ino(),
            inode,
            "a true index is not rewritten"
        );
        // Sparser than the interval asks, but true: kept too (a lookup only
        // scans more headers).
        let sparse: Vec<Entry> = real.iter().copied().step_by(3).collect();
        write_entries(&path, &sparse);
        let inode = std::fs::metadata(index_file(&path)).unwrap().ino();
        assert_eq!(open_and_check(&path, &stored).await, sparse);
        assert_eq!(std::fs::metadata(index_file(&path)).unwrap().ino(), inode);
    });
}
