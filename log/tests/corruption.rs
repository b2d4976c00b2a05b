//! Corruption in the middle of a segment is not a torn tail: recovery keeps
//! the valid batches after a damaged one, never serves the damaged range, and
//! still cuts a real torn tail (issue #12).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::path::Path;

use bytes::Bytes;
use common::{batch, run};
use shardline_log::{Durability, Log, LogConfig, Offset};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 10,
        index_interval_bytes: 1024,
        durability: Durability::Always,
        retention_ms_max: None,
        // Damage in fsynced data is told from a torn tail only below the
        // recovery point: write it after every sync here.
        recovery_point_interval_ms: 0,
        ..LogConfig::default()
    }
}

/// The stored batch holding `offset`, read alone.
fn read_one(log: &Log, offset: i64) -> Vec<u8> {
    let read = log.read(Offset(offset), 1, log.log_end()).unwrap();
    assert_eq!(read.chunks.len(), 1, "one chunk for offset {offset}");
    read.chunks[0].to_vec()
}

/// Appends `count` one-record batches of `payload_bytes` and returns each as stored.
async fn append_batches(log: &Log, count: i64, payload_bytes: usize) -> Vec<Vec<u8>> {
    let mut stored = Vec::new();
    for i in 0..count {
        let info = log
            .append(Bytes::from(batch(1, 1_000 + i, i as u64, payload_bytes)))
            .await
            .unwrap();
        assert_eq!(info.base_offset, Offset(i));
        stored.push(read_one(log, i));
    }
    stored
}

/// Segment files of `dir`, oldest first.
fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

fn flip_byte(path: &Path, position: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[position] ^= 0x5a;
    std::fs::write(path, &bytes).unwrap();
}

/// Checks what a log with offset `bad` damaged serves: everything before it,
/// an error at it, and everything after it byte for byte.
fn assert_served_around(log: &Log, stored: &[Vec<u8>], bad: i64) {
    assert!(
        log.log_end() >= Offset(stored.len() as i64),
        "nothing after the damage is cut"
    );
    let before = log.read(Offset(0), 1 << 20, log.log_end()).unwrap();
    let served: Vec<u8> = before.chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let expected: Vec<u8> = stored[..bad as usize].concat();
    assert!(
        served.len() <= expected.len() && served[..] == expected[..served.len()],
        "a read from the start serves only batches before the damage"
    );
    assert!(before.next_offset <= Offset(bad));
    assert!(
        log.read(Offset(bad), 1 << 20, log.log_end()).is_err(),
        "the damaged offset is never served as data"
    );
    for (offset, bytes) in stored.iter().enumerate().skip(bad as usize + 1) {
        assert_eq!(&read_one(log, offset as i64), bytes, "offset {offset} after the damage");
    }
}

#[test]
fn a_damaged_batch_in_the_middle_of_the_active_segment_keeps_the_batches_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, config()).await.unwrap();
        let stored = append_batches(&log, 10, 100).await;
        // The active segment is recovered by scanning it after a close too;
        // the close records the recovery point past every batch, so the
        // damage lies before it. (After a crash the point may lag the last
        // syncs — its write is not waited for, and a crash right after the
        // appends can find it at the open — and damage past it is a torn
        // tail, cut: recovery_point.rs.)
        log.close().await.unwrap();
        drop(log);
        let position: usize = stored[..4].iter().map(Vec::len).sum();
        flip_byte(&segment_files(&path)[0], position + 70); // a payload byte of offset 4
        let log = Log::open(&path, config()).await.unwrap();
        assert_eq!(log.log_end(), Offset(10));
        assert_served_around(&log, &stored, 4);
        let next = log.append(Bytes::from(batch(1, 5_000, 99, 10))).await.unwrap();
        assert_eq!(next.base_offset, Offset(10), "appends go on after the kept batches");
        drop(log);
        let log = Log::open(&path, config()).await.unwrap();
        assert_served_around(&log, &stored, 4);
        assert_eq!(log.log_end(), Offset(11));
    });
}

#[test]
fn a_damaged_header_in_a_sealed_segment_keeps_the_batches_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, config()).await.unwrap();
        let stored = append_batches(&log, 60, 3000).await;
        assert!(log.segment_count() >= 3);
        log.close().await.unwrap();
        drop(log);
        // Offset 3 sits in the first (sealed, indexed) segment: damage its magic byte.
        let position: usize = stored[..3].iter().map(Vec::len).sum();
        flip_byte(&segment_files(&path)[0], position + 16);
        let log = Log::open(&path, config()).await.unwrap();
        assert_served_around(&log, &stored, 3);
    });
}

#[test]
fn a_damaged_batch_in_a_rolled_unsealed_segment_keeps_the_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, config()).await.unwrap();
        let stored = append_batches(&log, 60, 3000).await;
        let segments_before = log.segment_count();
        assert!(segments_before >= 3);
        log.close().await.unwrap();
        drop(log);
        // The second segment loses its index and a payload byte of its third
        // batch: its end still meets the next segment, so this is damage, not
        // a segment torn before its seal.
        let second = &segment_files(&path)[1];
        std::fs::remove_file(second.with_extension("index")).unwrap();
        let base = shardline_log::parse_log_name(&second.file_name().unwrap().to_string_lossy())
            .unwrap()
            .0;
        let bad = base + 2;
        let position: usize = stored[base as usize..bad as usize].iter().map(Vec::len).sum();
        flip_byte(second, position + 1000);
        let log = Log::open(&path, config()).await.unwrap();
        assert_eq!(log.segment_count(), segments_before, "no segment was removed");
        assert_served_around(&log, &stored, bad);
    });
}
