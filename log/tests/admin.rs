//! What the Kafka admin APIs ask of a `Log`: DeleteRecords (a durable low
//! watermark inside a segment) and config changes while the log is open.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use bytes::Bytes;
use common::{batch, run, small_config};
use shardline_log::{Durability, Log, LogConfig, LogError, Offset};

#[test]
fn delete_records_moves_the_log_start_durably_and_deletes_segments_below() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, small_config()).await.unwrap();
        // 60 batches of 2 records, ~3 KiB each: several 64 KiB segments.
        for i in 0..60i64 {
            log.append(Bytes::from(batch(2, i, i as u64, 3000))).await.unwrap();
        }
        let segments = log.segment_count();
        assert!(segments > 2, "{segments} segments");
        assert_eq!(
            log.delete_records_before(Offset(0)).await.unwrap(),
            Offset(0),
            "no change"
        );
        assert!(matches!(
            log.delete_records_before(Offset(121)).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        // Offset 51 is inside a batch (50, 51) of a middle segment.
        assert_eq!(log.delete_records_before(Offset(51)).await.unwrap(), Offset(51));
        assert_eq!(log.log_start(), Offset(51));
        assert!(log.segment_count() < segments, "segments wholly below are deleted");
        assert!(matches!(
            log.read(Offset(50), 1 << 20, log.log_end()),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        let read = log.read(Offset(51), 1 << 20, log.log_end()).unwrap();
        assert!(!read.chunks.is_empty());
        assert_eq!(
            log.delete_records_before(Offset(40)).await.unwrap(),
            Offset(51),
            "never back"
        );
        log.close().await.unwrap();
        drop(log);

        let log = Log::open(&path, small_config()).await.unwrap();
        assert_eq!(log.log_start(), Offset(51), "the low watermark survives a restart");
        assert!(matches!(
            log.read(Offset(50), 1 << 20, log.log_end()),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        // Up to the log end: the whole log is deleted but the active segment stays.
        assert_eq!(log.delete_records_before(Offset(120)).await.unwrap(), Offset(120));
        assert_eq!(log.log_start(), log.log_end());
        let next = log.append(Bytes::from(batch(1, 99, 99, 100))).await.unwrap();
        assert_eq!(next.base_offset, Offset(120));
        assert_eq!(log.read(Offset(120), 1 << 20, log.log_end()).unwrap().chunks.len(), 1);
    });
}

#[test]
fn reconfigure_changes_retention_and_segment_size_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, small_config()).await.unwrap();
        for i in 0..40i64 {
            log.append(Bytes::from(batch(1, i, i as u64, 4000))).await.unwrap();
        }
        assert_eq!(log.apply_retention().await.unwrap(), 0, "no retention configured");
        let segments = log.segment_count();
        log.reconfigure(LogConfig {
            retention_bytes_max: Some(64 << 10),
            ..small_config()
        })
        .await
        .unwrap();
        assert!(
            log.apply_retention().await.unwrap() > 0,
            "the new bound applies at once"
        );
        assert!(log.segment_count() < segments);

        // A bigger segment bound: the next segments take more batches.
        log.roll().await.unwrap();
        log.reconfigure(LogConfig {
            segment_bytes_max: 1 << 20,
            durability: Durability::Always,
            ..small_config()
        })
        .await
        .unwrap();
        let before = log.segment_count();
        let big: Vec<u8> = batch(1, 100, 7, 200 << 10);
        let info = log.append(Bytes::from(big)).await.unwrap();
        assert!(info.durable, "durability always now applies");
        for i in 0..3i64 {
            log.append(Bytes::from(batch(1, 200 + i, 8, 100 << 10))).await.unwrap();
        }
        assert_eq!(log.segment_count(), before, "500 KiB fit one 1 MiB segment");
        assert_eq!(log.durable_end(), log.log_end());
    });
}
