//! Reads come from shared mappings of the segment files (docs/storage.md,
//! Mapping rules): an I/O error under a mapping must fail the read, not kill
//! the process with SIGBUS (issue #12).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{batch, run};
use shardline_log::{Durability, Log, LogConfig, LogError, Offset};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 << 10,
        index_interval_bytes: 1024,
        durability: Durability::Always,
        retention_ms_max: None,
        ..LogConfig::default()
    }
}

/// The stored batch holding `offset`, read alone.
fn read_one(log: &Log, offset: i64) -> Vec<u8> {
    let read = log.read(Offset(offset), 1, log.log_end()).unwrap();
    assert_eq!(read.chunks.len(), 1, "one chunk for offset {offset}");
    read.chunks[0].to_vec()
}

/// Appends `count` one-record batches of `payload_bytes`, payloads derived
/// from `seed`, and returns each as stored.
async fn append_batches(log: &Log, count: i64, payload_bytes: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut stored = Vec::new();
    for i in 0..count {
        let info = log
            .append(Bytes::from(batch(1, 1_000 + i, seed + i as u64, payload_bytes)))
            .await
            .unwrap();
        stored.push(read_one(log, info.base_offset.0));
    }
    stored
}

/// Segment files of `dir`, oldest first.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

fn is_eio_naming(error: &LogError, file: &Path) -> bool {
    matches!(error, LogError::Io { source, path, .. }
        if source.raw_os_error() == Some(libc::EIO) && path == file)
}

#[test]
fn a_segment_shrunk_under_its_mapping_fails_reads_and_the_rest_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, config()).await.unwrap();
        // About 4 KiB a batch: 16 to a 64 KiB segment, so 40 make 3 segments.
        let stored = append_batches(&log, 40, 4000, 0).await;
        let files = segment_files(&path);
        assert!(files.len() >= 3, "the first segment is sealed: {files:?}");
        let first = std::fs::canonicalize(&files[0]).unwrap();
        // Someone else shrinks the sealed first segment: its mapped pages past
        // the new end raise SIGBUS when touched (as a disk I/O error does).
        std::fs::OpenOptions::new()
            .write(true)
            .open(&first)
            .unwrap()
            .set_len(100)
            .unwrap();
        // Offset 5's batch starts past the first page of the file.
        let error = log.read(Offset(5), 1, log.log_end()).unwrap_err();
        assert!(is_eio_naming(&error, &first), "{error}");
        // The segment stays failed: a read of its first batch, whose header
        // is still in the file, fails too.
        let error = log.read(Offset(0), 1 << 20, log.log_end()).unwrap_err();
        assert!(is_eio_naming(&error, &first), "{error}");
        // The other segments serve what was stored, byte for byte.
        let second_base = shardline_log::parse_log_name(&files[1].file_name().unwrap().to_string_lossy())
            .unwrap()
            .0;
        for offset in second_base..40 {
            assert_eq!(read_one(&log, offset), stored[offset as usize], "offset {offset}");
        }
        // Appends go on.
        let info = log.append(Bytes::from(batch(1, 9_000, 99, 100))).await.unwrap();
        assert_eq!(info.base_offset, Offset(40));
        assert_eq!(read_one(&log, 40).len(), batch(1, 9_000, 99, 100).len());
    });
}

/// Every batch of a read, copied out of the log.
fn copied(read: &shardline_log::ReadBatches) -> Vec<Vec<u8>> {
    read.chunks.iter().map(|chunk| chunk.to_vec()).collect()
}

#[test]
fn truncation_does_not_change_bytes_a_reader_still_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, config()).await.unwrap();
        // The first segment (sealed) holds offsets 0..=15, the active one 16..=19.
        append_batches(&log, 20, 4000, 0).await;
        assert!(log.segment_count() >= 2);
        // Each case: a Fetch response still holds slices past the cut (as
        // while it is written to a slow socket); a follower truncates there
        // and appends different batches at the same offsets.
        for cut in [18, 6] {
            let held = log.read(Offset(cut), 1 << 20, log.log_end()).unwrap();
            let before = copied(&held);
            assert!(!before.is_empty());
            assert_eq!(log.truncate_to(Offset(cut)).await.unwrap(), Offset(cut));
            let replaced = append_batches(&log, 20 - cut, 4000, 1_000).await;
            assert!(replaced[0] != before[0][..replaced[0].len()], "the new batches differ");
            let after = copied(&held);
            let changed = (0..before.len()).find(|&i| after[i] != before[i]);
            assert_eq!(
                changed, None,
                "bytes held across truncation to {cut} changed (chunk index)"
            );
            drop(held);
        }
        // And the log itself holds the new batches, across a reopen too.
        let served = copied(&log.read(Offset(6), 1 << 20, log.log_end()).unwrap());
        drop(log);
        let log = Log::open(&path, config()).await.unwrap();
        assert_eq!(copied(&log.read(Offset(6), 1 << 20, log.log_end()).unwrap()), served);
    });
}

#[test]
fn a_copy_left_by_a_crash_during_truncation_is_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, config()).await.unwrap();
        let stored = append_batches(&log, 20, 4000, 0).await;
        let files = segment_files(&path);
        drop(log);
        // A crash before the rename: the old file is whole, the copy partial.
        let mut leftover = files[1].clone().into_os_string();
        leftover.push(".truncating");
        std::fs::write(&leftover, &stored[16][..100]).unwrap();
        let log = Log::open(&path, config()).await.unwrap();
        assert!(!Path::new(&leftover).exists(), "the leftover copy is removed");
        assert_eq!(log.log_end(), Offset(20));
        for (offset, bytes) in stored.iter().enumerate() {
            assert_eq!(&read_one(&log, offset as i64), bytes, "offset {offset}");
        }
    });
}
