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
