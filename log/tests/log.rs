//! Behaviour of `Log` through its public API, on real files and io_uring.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::rc::Rc;

use bytes::Bytes;
use common::{batch, read_all, run, small_config, ManualClock};
use shardline_log::{validate, BatchError, Durability, Log, LogConfig, LogError, Offset};

/// Opens the log at `path` with `small_config()` and `Durability::Always`.
async fn open_always(path: &std::path::Path) -> Log {
    Log::open(
        path,
        LogConfig {
            durability: Durability::Always,
            ..small_config()
        },
    )
    .await
    .unwrap()
}

#[test]
fn append_assigns_offsets_in_place_and_reads_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = open_always(&path).await;
        let first = log.append(Bytes::from(batch(3, 1000, 1, 100))).await.unwrap();
        assert_eq!((first.base_offset, first.last_offset), (Offset(0), Offset(2)));
        assert!(first.durable);
        let second = log.append(Bytes::from(batch(2, 2000, 2, 100))).await.unwrap();
        assert_eq!((second.base_offset, second.last_offset), (Offset(3), Offset(4)));
        assert_eq!(log.log_end(), Offset(5));
        assert_eq!(log.durable_end(), Offset(5));

        let read = log.read(Offset(4), 1 << 20, log.log_end()).unwrap();
        assert_eq!(read.next_offset, Offset(5));
        let header = validate(&read.chunks[0]).unwrap();
        assert_eq!(header.base_offset, Offset(3), "the batch holding offset 4 starts at 3");
        let mut expected = batch(2, 2000, 2, 100);
        shardline_log::set_base_offset(&mut expected, Offset(3));
        assert_eq!(&read.chunks[0][..], &expected[..]);
        assert_eq!(log.read(Offset(5), 1 << 20, log.log_end()).unwrap().chunks.len(), 0);
        assert!(matches!(
            log.read(Offset(6), 1, log.log_end()),
            Err(LogError::OffsetOutOfRange { .. })
        ));
    });
}

#[test]
fn several_batches_in_one_append_get_consecutive_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, small_config()).await.unwrap();
        let mut records = batch(2, 1, 1, 10);
        records.extend(batch(5, 2, 2, 10));
        let info = log.append(Bytes::from(records)).await.unwrap();
        assert_eq!((info.base_offset, info.last_offset), (Offset(0), Offset(6)));
        let stored = read_all(&log);
        assert_eq!(stored.len(), 2);
        assert_eq!(validate(&stored[1]).unwrap().base_offset, Offset(2));
    });
}

#[test]
fn bad_batches_are_rejected_with_their_error_and_the_log_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, small_config()).await.unwrap();
        log.append(Bytes::from(batch(1, 1, 1, 50))).await.unwrap();
        let before = (log.log_end(), log.size_bytes(), read_all(&log));

        let good = batch(2, 5, 9, 40);
        let mut wrong_magic = good.clone();
        wrong_magic[16] = 1;
        let mut wrong_crc = good.clone();
        *wrong_crc.last_mut().unwrap() ^= 1;
        let truncated = good[..good.len() - 3].to_vec();
        let mut overflow = good.clone();
        overflow[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        let mut zero_length = good.clone();
        zero_length[8..12].copy_from_slice(&0i32.to_be_bytes());
        // A good batch followed by a bad one: the whole append is refused.
        let mut good_then_bad = good.clone();
        good_then_bad.extend_from_slice(&wrong_crc);

        type Case = (&'static str, Vec<u8>, fn(&BatchError) -> bool);
        let cases: Vec<Case> = vec![
            ("wrong magic", wrong_magic, |e| {
                matches!(e, BatchError::BadMagic { magic: 1 })
            }),
            ("wrong crc", wrong_crc, |e| matches!(e, BatchError::BadCrc { .. })),
            ("truncated", truncated, |e| matches!(e, BatchError::Truncated { .. })),
            ("length overflow", overflow, |e| {
                matches!(e, BatchError::Truncated { .. })
            }),
            ("zero length", zero_length, |e| {
                matches!(e, BatchError::BadLength { batch_length: 0 })
            }),
            ("good then bad", good_then_bad, |e| {
                matches!(e, BatchError::BadCrc { .. })
            }),
            ("empty", Vec::new(), |e| matches!(e, BatchError::Empty)),
        ];
        for (name, bytes, expected) in cases {
            match log.append(Bytes::from(bytes)).await {
                Err(LogError::InvalidBatch(e)) => {
                    assert!(expected(&e), "{name}: unexpected error {e}")
                }
                other => panic!("{name}: expected a batch error, got {other:?}"),
            }
            assert_eq!(
                (log.log_end(), log.size_bytes(), read_all(&log)),
                before,
                "{name} changed the log"
            );
        }
        let too_big = batch(1, 1, 1, 70 << 10);
        assert!(matches!(
            log.append(Bytes::from(too_big)).await,
            Err(LogError::InvalidBatch(BatchError::TooLarge { .. }))
        ));
        // And the log still takes good batches.
        assert_eq!(log.append(Bytes::from(good)).await.unwrap().base_offset, Offset(1));
    });
}

#[test]
fn segments_roll_at_the_size_bound_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, small_config()).await.unwrap();
        let mut expected = Vec::new();
        for i in 0..100u64 {
            let mut b = batch(4, i as i64, i, 2000);
            log.append(Bytes::from(b.clone())).await.unwrap();
            shardline_log::set_base_offset(&mut b, Offset(i as i64 * 4));
            expected.push(b);
        }
        assert!(log.segment_count() >= 3, "100 × 2 KiB into 64 KiB segments must roll");
        assert_eq!(read_all(&log), expected);
        // Offset lookups in the middle of every batch find the right batch.
        for probe in [1i64, 77, 150, 201, 399] {
            let read = log.read(Offset(probe), 1, log.log_end()).unwrap();
            let header = validate(&read.chunks[0]).unwrap();
            assert!(header.base_offset.0 <= probe && probe <= header.last_offset().0);
            assert_eq!(read.chunks.len(), 1, "a 1-byte limit still returns one whole batch");
        }
        // Byte limits cut at batch boundaries.
        let read = log.read(Offset(0), 5000, log.log_end()).unwrap();
        assert_eq!(read.bytes(), expected[0].len() + expected[1].len());
        assert_eq!(read.next_offset, Offset(8));
        // A reopened log reads the same, through loaded indexes.
        drop(log);
        let log = Log::open(&path, small_config()).await.unwrap();
        assert_eq!(read_all(&log), expected);
        assert_eq!(log.log_end(), Offset(400));
    });
}

#[test]
fn reads_stop_at_the_end_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, small_config()).await.unwrap();
        for i in 0..5 {
            log.append(Bytes::from(batch(2, i, i as u64, 10))).await.unwrap();
        }
        let read = log.read(Offset(0), 1 << 20, Offset(4)).unwrap();
        assert_eq!(read.next_offset, Offset(4));
    });
}

#[test]
fn offsets_by_timestamp_follow_list_offsets_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, small_config()).await.unwrap();
        for i in 0..60i64 {
            log.append(Bytes::from(batch(1, 1000 + i * 10, i as u64, 3000)))
                .await
                .unwrap();
        }
        assert!(log.segment_count() > 1);
        let hit = log.offset_for_timestamp(1000).unwrap().unwrap();
        assert_eq!((hit.offset, hit.timestamp_ms), (Offset(0), 1000));
        let hit = log.offset_for_timestamp(1255).unwrap().unwrap();
        assert_eq!((hit.offset, hit.timestamp_ms), (Offset(26), 1260));
        let hit = log.offset_for_timestamp(i64::MIN).unwrap().unwrap();
        assert_eq!(hit.offset, Offset(0));
        assert!(log.offset_for_timestamp(1000 + 60 * 10).unwrap().is_none());
    });
}

/// Issue 17: ListOffsets by time names the first *record* at or after the
/// time (records of a batch need not be in time order), the record with the
/// largest timestamp for -3, the first record of a LogAppendTime batch, and
/// a compressed batch (never decompressed here) as a whole.
#[test]
fn offsets_by_timestamp_name_records() {
    use shardline_log::{build_batch, build_batch_with_timestamps, BatchSpec};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, small_config()).await.unwrap();
        let appends = [
            // offsets 0..=3 at 1030, 1000, 1050, 1010
            build_batch_with_timestamps(1000, &[30, 0, 50, 10], 0),
            // offset 4 at 2000, 5 at 1990
            build_batch_with_timestamps(1990, &[10, 0], 0),
            // offsets 6, 7: LogAppendTime, both stamped 3005
            build_batch_with_timestamps(3000, &[5, 0], 0x08),
            // offsets 8..=10: gzip, records unread
            build_batch(&BatchSpec {
                attributes: 1,
                ..BatchSpec::plain(3, 4000, b"not really gzip")
            }),
        ];
        for batch in appends {
            log.append(Bytes::from(batch)).await.unwrap();
        }
        let found = |t| {
            let hit = log.offset_for_timestamp(t).unwrap().unwrap();
            (hit.offset.0, hit.timestamp_ms, hit.exact)
        };
        assert_eq!(found(900), (0, 1030, true));
        assert_eq!(found(1031), (2, 1050, true));
        assert_eq!(found(1050), (2, 1050, true));
        assert_eq!(found(1051), (4, 2000, true));
        assert_eq!(found(1995), (4, 2000, true));
        assert_eq!(found(3001), (6, 3005, true));
        assert_eq!(found(3006), (8, 4000, false));
        assert!(log.offset_for_timestamp(4001).unwrap().is_none());
        let max = log.offset_of_max_timestamp().unwrap().unwrap();
        assert_eq!((max.offset.0, max.timestamp_ms, max.exact), (8, 4000, false));
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, small_config()).await.unwrap();
        assert!(log.offset_of_max_timestamp().unwrap().is_none());
        log.append(Bytes::from(build_batch_with_timestamps(1000, &[0, 70, 20, 70], 0)))
            .await
            .unwrap();
        let max = log.offset_of_max_timestamp().unwrap().unwrap();
        assert_eq!(
            (max.offset.0, max.timestamp_ms),
            (1, 1070),
            "the first record with the max"
        );
    });
}

/// Issue 17: a LogAppendTime log stamps each batch with the append's time
/// (the attribute bit and the max timestamp, under a recomputed CRC), says
/// so in the append's answer, finds it by that time, and a follower's
/// replicated copy keeps the leader's stamp byte for byte.
#[test]
fn a_log_append_time_log_stamps_batches() {
    use shardline_log::{build_batch_with_timestamps, validate};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            log_append_time: true,
            ..small_config()
        };
        let clock = Rc::new(ManualClock::default());
        clock.0.set(50_000);
        let leader = Log::open_with_clock(&path.join("leader"), config.clone(), clock.clone())
            .await
            .unwrap();
        let sent = build_batch_with_timestamps(1000, &[0, 5, 3], 0);
        let info = leader.append(Bytes::from(sent.clone())).await.unwrap();
        assert_eq!(info.log_append_time_ms, Some(50_000));
        clock.0.set(60_000);
        let info = leader.append(Bytes::from(sent)).await.unwrap();
        assert_eq!((info.base_offset, info.log_append_time_ms), (Offset(3), Some(60_000)));
        let stored = read_all(&leader);
        assert_eq!(stored.len(), 2);
        for (batch, stamp) in stored.iter().zip([50_000, 60_000]) {
            let header = validate(batch).unwrap();
            assert!(header.log_append_time());
            assert_eq!((header.max_timestamp_ms, header.base_timestamp_ms), (stamp, 1000));
        }
        let hit = leader.offset_for_timestamp(55_000).unwrap().unwrap();
        assert_eq!((hit.offset, hit.timestamp_ms, hit.exact), (Offset(3), 60_000, true));

        let follower = Log::open_with_clock(&path.join("follower"), config, clock.clone())
            .await
            .unwrap();
        clock.0.set(70_000);
        let copied: Vec<u8> = stored.concat();
        let info = follower
            .append_replicated(Bytes::from(copied.clone()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.log_append_time_ms, None, "the leader stamped them");
        assert_eq!(read_all(&follower).concat(), copied, "stored byte for byte");
    });
}

#[test]
fn retention_deletes_whole_sealed_segments_and_old_readers_stay_safe() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let clock = Rc::new(ManualClock::default());
        clock.0.set(1_000_000);
        let config = LogConfig {
            retention_ms_max: Some(10_000),
            ..small_config()
        };
        let log = Log::open_with_clock(&path, config, clock.clone()).await.unwrap();
        for i in 0..40i64 {
            log.append(Bytes::from(batch(1, 1_000_000 + i, i as u64, 4000)))
                .await
                .unwrap();
        }
        let segments = log.segment_count();
        assert!(segments >= 3);
        // A reader holds the first segment's bytes across its deletion.
        let held = log.read(Offset(0), 1 << 20, log.log_end()).unwrap();
        let held_copy: Vec<Vec<u8>> = held.chunks.iter().map(|c| c.to_vec()).collect();
        assert_eq!(log.apply_retention().await.unwrap(), 0, "nothing is old yet");
        clock.0.set(1_000_000 + 10_040);
        assert_eq!(
            log.apply_retention().await.unwrap(),
            segments - 1,
            "every sealed segment expired"
        );
        assert_eq!(log.segment_count(), 1, "the active segment stays");
        assert!(log.log_start() > Offset(0));
        assert!(matches!(
            log.read(Offset(0), 1, log.log_end()),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        // The deleted file's bytes are still readable through the held slice.
        assert_eq!(validate(&held.chunks[0]).unwrap().base_offset, Offset(0));
        let held_now: Vec<Vec<u8>> = held.chunks.iter().map(|c| c.to_vec()).collect();
        assert_eq!(held_now, held_copy);
        let files: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != "recovery-point")
            .collect();
        assert_eq!(files.len(), 1, "only the active segment's file remains: {files:?}");
    });
}

#[test]
fn retention_by_bytes_keeps_the_newest_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            retention_bytes_max: Some(100 << 10),
            ..small_config()
        };
        let log = Log::open(&path, config).await.unwrap();
        for i in 0..100i64 {
            log.append(Bytes::from(batch(1, i, i as u64, 4000))).await.unwrap();
        }
        let before = log.size_bytes();
        let deleted = log.apply_retention().await.unwrap();
        assert!(deleted > 0);
        assert!(log.size_bytes() >= 100 << 10, "never below the bound");
        assert!(log.size_bytes() < before);
        assert_eq!(log.log_end(), Offset(100));
    });
}

#[test]
fn truncate_to_cuts_at_batch_boundaries_in_active_and_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, small_config()).await.unwrap();
        for i in 0..60i64 {
            log.append(Bytes::from(batch(2, i, i as u64, 3000))).await.unwrap();
        }
        let segments = log.segment_count();
        // Inside the active segment, mid-batch: the whole batch goes.
        assert_eq!(log.truncate_to(Offset(117)).await.unwrap(), Offset(116));
        assert_eq!(log.segment_count(), segments);
        // Into a sealed segment: later segments are deleted, it becomes active.
        assert_eq!(log.truncate_to(Offset(20)).await.unwrap(), Offset(20));
        assert_eq!(log.segment_count(), 1);
        let info = log.append(Bytes::from(batch(1, 99, 99, 100))).await.unwrap();
        assert_eq!(info.base_offset, Offset(20));
        assert_eq!(read_all(&log).len(), 11);
        drop(log);
        let log = Log::open(&path, small_config()).await.unwrap();
        assert_eq!(log.log_end(), Offset(21));
        assert_eq!(read_all(&log).len(), 11);
        // Truncating below the start empties the log and restarts it there.
        assert_eq!(log.truncate_to(Offset(0)).await.unwrap(), Offset(0));
        assert_eq!(log.log_end(), Offset(0));
        assert_eq!(
            log.append(Bytes::from(batch(1, 1, 1, 10))).await.unwrap().base_offset,
            Offset(0)
        );
    });
}

#[test]
fn durability_modes_report_durable_end_separately() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path.join("never"), small_config()).await.unwrap();
        let info = log.append(Bytes::from(batch(1, 1, 1, 10))).await.unwrap();
        assert!(!info.durable);
        assert_eq!((log.log_end(), log.durable_end()), (Offset(1), Offset(0)));
        assert_eq!(log.flush().await.unwrap(), Offset(1));
        assert_eq!(log.durable_end(), Offset(1));

        let config = LogConfig {
            durability: Durability::Interval {
                interval_ms: 20,
                bytes: 1 << 30,
            },
            ..small_config()
        };
        let log = Log::open(&path.join("interval"), config).await.unwrap();
        log.append(Bytes::from(batch(1, 1, 1, 10))).await.unwrap();
        assert_eq!(log.durable_end(), Offset(0));
        glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(log.durable_end(), Offset(1), "the interval timer synced it");

        let config = LogConfig {
            durability: Durability::Interval {
                interval_ms: 60_000,
                bytes: 100,
            },
            ..small_config()
        };
        let log = Log::open(&path.join("bytes"), config).await.unwrap();
        log.append(Bytes::from(batch(1, 1, 1, 200))).await.unwrap();
        assert_eq!(log.durable_end(), Offset(1), "the byte bound synced it");
    });
}

#[test]
fn concurrent_appends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            durability: Durability::Always,
            ..small_config()
        };
        let log = Rc::new(Log::open(&path, config).await.unwrap());
        let tasks: Vec<_> = (0..64u64)
            .map(|i| {
                let log = Rc::clone(&log);
                glommio::spawn_local(async move { log.append(Bytes::from(batch(1, 1, i, 100))).await.unwrap() })
            })
            .collect();
        let mut offsets = Vec::new();
        for task in tasks {
            let info = task.await;
            assert!(info.durable);
            offsets.push(info.base_offset.0);
        }
        offsets.sort();
        assert_eq!(offsets, (0..64).collect::<Vec<_>>(), "every append got its own offset");
        assert!(
            log.sync_count() < 64,
            "64 concurrent appends took {} fsyncs",
            log.sync_count()
        );
        assert_eq!(log.durable_end(), Offset(64));
    });
}

#[test]
fn recovery_cuts_a_torn_tail_and_keeps_everything_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, small_config()).await.unwrap();
        for i in 0..5i64 {
            log.append(Bytes::from(batch(1, i, i as u64, 100))).await.unwrap();
        }
        let good = read_all(&log);
        drop(log);
        // Tear the last batch: flip a byte inside it.
        let segment = path.join("00000000000000000000.log");
        let mut bytes = std::fs::read(&segment).unwrap();
        let last_start: usize = good[..4].iter().map(Vec::len).sum();
        bytes[last_start + 70] ^= 0xff;
        std::fs::write(&segment, &bytes).unwrap();
        let log = Log::open(&path, small_config()).await.unwrap();
        assert_eq!(log.log_end(), Offset(4));
        assert_eq!(read_all(&log), good[..4].to_vec());
        // Appends continue from the cut, and the garbage is gone for good.
        assert_eq!(
            log.append(Bytes::from(batch(1, 9, 9, 10))).await.unwrap().base_offset,
            Offset(4)
        );
        drop(log);
        let log = Log::open(&path, small_config()).await.unwrap();
        assert_eq!(log.log_end(), Offset(5));
    });
}

#[test]
fn a_torn_index_is_rebuilt_from_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, small_config()).await.unwrap();
        for i in 0..40i64 {
            log.append(Bytes::from(batch(1, i, i as u64, 3000))).await.unwrap();
        }
        let expected = read_all(&log);
        log.close().await.unwrap();
        drop(log);
        let index = path.join("00000000000000000000.index");
        let mut bytes = std::fs::read(&index).unwrap();
        assert!(bytes.len() >= 48);
        bytes[30] ^= 0x55;
        std::fs::write(&index, &bytes).unwrap();
        let log = Log::open(&path, small_config()).await.unwrap();
        assert_eq!(read_all(&log), expected);
        let rebuilt = std::fs::read(&index).unwrap();
        assert_ne!(rebuilt, bytes, "the index file was rewritten");
    });
}

#[test]
fn a_rolled_segment_torn_before_its_seal_ends_the_log_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, small_config()).await.unwrap();
        for i in 0..60i64 {
            log.append(Bytes::from(batch(1, i, i as u64, 3000))).await.unwrap();
        }
        assert!(log.segment_count() >= 3);
        // Drop without close: background seals are cancelled, as in a crash.
        drop(log);
        let mut logs: Vec<_> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".log"))
            .collect();
        logs.sort();
        // Tear the second segment as a machine crash before its seal could:
        // remove its index (if the seal got that far) and lose its end from
        // the middle of a batch on (pages never written back read as zeros).
        // A damaged batch with valid ones after it is another matter: see
        // `corruption.rs`.
        let second = path.join(&logs[1]);
        let _ = std::fs::remove_file(second.with_extension("index"));
        let mut bytes = std::fs::read(&second).unwrap();
        bytes[5000..].fill(0);
        std::fs::write(&second, &bytes).unwrap();
        let log = Log::open(&path, small_config()).await.unwrap();
        let kept = read_all(&log);
        let base = shardline_log::parse_log_name(&logs[1]).unwrap();
        assert!(log.log_end() > base, "batches before the tear in that segment survive");
        assert!(log.log_end() < Offset(60), "the log ends at the tear");
        assert_eq!(kept.len() as i64, log.log_end().0);
        assert_eq!(log.segment_count(), 2, "later segments were removed");
        // And it takes appends again from there.
        let end = log.log_end();
        assert_eq!(
            log.append(Bytes::from(batch(1, 1, 1, 10))).await.unwrap().base_offset,
            end
        );
    });
}

// ---- Leader epochs and replicated appends ----

/// A batch as a leader's log stores it: base offset and leader epoch written in.
fn stored_batch(records: i32, base: i64, epoch: i32, seed: u64, payload_bytes: usize) -> Vec<u8> {
    let mut b = batch(records, 1000, seed, payload_bytes);
    shardline_log::set_base_offset(&mut b, Offset(base));
    shardline_log::set_leader_epoch(&mut b, epoch);
    b
}

fn epochs(log: &Log) -> Vec<(i32, i64)> {
    log.epoch_starts().iter().map(|e| (e.epoch, e.start_offset.0)).collect()
}

#[test]
fn append_with_epoch_stamps_every_batch_and_the_cache_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, small_config()).await.unwrap();
        assert_eq!(log.latest_epoch(), None);
        assert_eq!(log.end_offset_for_epoch(0), None);
        // Written before stamping: the client's -1 stays.
        log.append(Bytes::from(batch(2, 1, 1, 100))).await.unwrap();
        let mut two = batch(3, 2, 2, 100);
        two.extend(batch(1, 3, 3, 100));
        let info = log.append_with_epoch(Bytes::from(two), 3).await.unwrap();
        assert_eq!((info.base_offset, info.last_offset), (Offset(2), Offset(5)));
        log.roll().await.unwrap();
        log.append_with_epoch(Bytes::from(batch(2, 4, 4, 100)), 3)
            .await
            .unwrap();
        // An older epoch is stored as given but starts no entry.
        log.append_with_epoch(Bytes::from(batch(1, 5, 5, 100)), 2)
            .await
            .unwrap();
        log.append_with_epoch(Bytes::from(batch(2, 6, 6, 100)), 5)
            .await
            .unwrap();
        let stored: Vec<(i64, i32)> = read_all(&log)
            .iter()
            .map(|b| {
                let header = validate(b).unwrap(); // the CRC still holds
                (header.base_offset.0, header.partition_leader_epoch)
            })
            .collect();
        assert_eq!(stored, vec![(0, -1), (2, 3), (5, 3), (6, 3), (8, 2), (9, 5)]);
        let expected = vec![(-1, 0), (3, 2), (5, 9)];
        assert_eq!(epochs(&log), expected);
        assert_eq!(log.latest_epoch(), Some(5));
        assert_eq!(log.end_offset_for_epoch(3), Some((3, Offset(9))));
        assert_eq!(log.end_offset_for_epoch(4), Some((3, Offset(9))));
        assert_eq!(log.end_offset_for_epoch(5), Some((5, Offset(11))));
        assert_eq!(log.end_offset_for_epoch(-1), Some((-1, Offset(2))));
        assert_eq!(log.end_offset_for_epoch(-2), None);
        drop(log);
        let log = Log::open(&path, small_config()).await.unwrap();
        assert_eq!(epochs(&log), expected, "rebuilt from the batch headers");
        assert_eq!(log.end_offset_for_epoch(5), Some((5, Offset(11))));
    });
}

#[test]
fn replicated_appends_keep_offsets_and_epochs_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            durability: Durability::Always,
            ..small_config()
        };
        let leader = Log::open(&path.join("leader"), config.clone()).await.unwrap();
        let follower = Log::open(&path.join("follower"), config).await.unwrap();
        for i in 0..40i64 {
            let epoch = if i < 15 { 1 } else { 4 };
            leader
                .append_with_epoch(Bytes::from(batch(3, i, i as u64, 3000)), epoch)
                .await
                .unwrap();
        }
        assert!(leader.segment_count() > 1);
        // Fetch as a follower does: whatever a read returns, appended as is.
        let syncs_before = follower.sync_count();
        while follower.log_end() < leader.log_end() {
            let read = leader.read(follower.log_end(), 20_000, leader.log_end()).unwrap();
            let bytes: Vec<u8> = read.chunks.iter().flat_map(|c| c.iter().copied()).collect();
            let info = follower.append_replicated(Bytes::from(bytes)).await.unwrap().unwrap();
            assert!(info.durable);
            assert_eq!(info.last_offset, Offset(read.next_offset.0 - 1));
            assert_eq!(follower.log_end(), read.next_offset);
            assert_eq!(follower.durable_end(), follower.log_end());
        }
        assert!(follower.sync_count() > syncs_before);
        assert_eq!(read_all(&follower), read_all(&leader));
        assert_eq!(epochs(&follower), vec![(1, 0), (4, 45)]);
        assert_eq!(epochs(&follower), epochs(&leader));
        assert_eq!(follower.end_offset_for_epoch(1), Some((1, Offset(45))));
        drop(follower);
        let follower = Log::open(&path.join("follower"), small_config()).await.unwrap();
        assert_eq!(read_all(&follower), read_all(&leader));
        assert_eq!(epochs(&follower), epochs(&leader));
    });
}

#[test]
fn a_replicated_append_that_does_not_continue_the_log_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, small_config()).await.unwrap();
        // Not at the log end.
        let err = log
            .append_replicated(Bytes::from(stored_batch(2, 5, 1, 1, 50)))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                LogError::OffsetMismatch {
                    expected: Offset(0),
                    got: Offset(5)
                }
            ),
            "{err}"
        );
        // A gap between two batches: the good first one is not stored either.
        let mut gap = stored_batch(2, 0, 1, 1, 50);
        gap.extend(stored_batch(2, 3, 1, 2, 50));
        let err = log.append_replicated(Bytes::from(gap)).await.unwrap_err();
        assert!(
            matches!(
                err,
                LogError::OffsetMismatch {
                    expected: Offset(2),
                    got: Offset(3)
                }
            ),
            "{err}"
        );
        // A bad CRC anywhere rejects the whole append.
        let mut bad_crc = stored_batch(2, 0, 1, 1, 50);
        let mut second = stored_batch(1, 2, 1, 2, 50);
        let last = second.len() - 1;
        second[last] ^= 1;
        bad_crc.extend(second);
        assert!(matches!(
            log.append_replicated(Bytes::from(bad_crc)).await,
            Err(LogError::InvalidBatch(BatchError::BadCrc { .. }))
        ));
        // An offset whose batch would run past i64::MAX cannot continue any log.
        assert!(matches!(
            log.append_replicated(Bytes::from(stored_batch(2, i64::MAX, 1, 1, 50)))
                .await,
            Err(LogError::OffsetMismatch { .. })
        ));
        assert_eq!(log.log_end(), Offset(0));
        assert!(read_all(&log).is_empty());
        assert_eq!(log.latest_epoch(), None);
        // Then the right batch goes in, and sending it again is a mismatch.
        let good = Bytes::from(stored_batch(2, 0, 1, 1, 50));
        log.append_replicated(good.clone()).await.unwrap().unwrap();
        assert!(matches!(
            log.append_replicated(good).await,
            Err(LogError::OffsetMismatch {
                expected: Offset(2),
                got: Offset(0)
            })
        ));
        assert_eq!(log.log_end(), Offset(2));
        assert_eq!(epochs(&log), vec![(1, 0)]);
    });
}

#[test]
fn queued_replicated_appends_are_checked_against_the_end_the_writer_sees() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = open_always(&path).await;
        // Queued together: the second continues the first, the third repeats it.
        let first = log.append_replicated(Bytes::from(stored_batch(2, 0, 1, 1, 50)));
        let second = log.append_replicated(Bytes::from(stored_batch(3, 2, 2, 2, 50)));
        let stale = log.append_replicated(Bytes::from(stored_batch(2, 0, 1, 1, 50)));
        let ((first, second), stale) = futures_lite::future::zip(futures_lite::future::zip(first, second), stale).await;
        assert_eq!(first.unwrap().unwrap().base_offset, Offset(0));
        let second = second.unwrap().unwrap();
        assert_eq!((second.base_offset, second.last_offset), (Offset(2), Offset(4)));
        assert!(second.durable);
        assert!(matches!(
            stale,
            Err(LogError::OffsetMismatch {
                expected: Offset(5),
                got: Offset(0)
            })
        ));
        assert_eq!(log.log_end(), Offset(5));
        assert_eq!(read_all(&log).len(), 2);
        assert_eq!(epochs(&log), vec![(1, 0), (2, 2)]);
    });
}

#[test]
fn a_partial_trailing_batch_of_a_fetch_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, small_config()).await.unwrap();
        assert_eq!(log.append_replicated(Bytes::new()).await.unwrap(), None);
        let whole = stored_batch(2, 0, 1, 1, 50);
        let next = stored_batch(3, 2, 1, 2, 50);
        // Only part of a batch (short header, then short body): nothing changes.
        for cut in [10, whole.len() - 1] {
            assert_eq!(
                log.append_replicated(Bytes::copy_from_slice(&whole[..cut]))
                    .await
                    .unwrap(),
                None
            );
        }
        assert_eq!(log.log_end(), Offset(0));
        // A whole batch and part of the next: the whole one is appended.
        let mut fetched = whole.clone();
        fetched.extend_from_slice(&next[..next.len() / 2]);
        let info = log.append_replicated(Bytes::from(fetched)).await.unwrap().unwrap();
        assert_eq!((info.base_offset, info.last_offset), (Offset(0), Offset(1)));
        assert_eq!(log.log_end(), Offset(2));
        assert_eq!(read_all(&log), vec![whole]);
        // The next fetch brings it whole.
        log.append_replicated(Bytes::from(next.clone())).await.unwrap().unwrap();
        assert_eq!(read_all(&log)[1], next);
    });
}

#[test]
fn a_diverged_follower_truncates_to_the_leaders_epoch_end_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let leader = Log::open(&path.join("leader"), small_config()).await.unwrap();
        let follower = Log::open(&path.join("follower"), small_config()).await.unwrap();
        // Epoch 1: both logs agree on offsets 0..60.
        for i in 0..20i64 {
            let bytes = Bytes::from(batch(3, i, i as u64, 3000));
            let info = leader.append_with_epoch(bytes, 1).await.unwrap();
            let read = leader.read(info.base_offset, 1, leader.log_end()).unwrap();
            follower
                .append_replicated(read.chunks[0].clone())
                .await
                .unwrap()
                .unwrap();
        }
        // Epoch 2: the follower led briefly and wrote what never replicated,
        // across a segment boundary.
        for i in 0..20i64 {
            follower
                .append_with_epoch(Bytes::from(batch(2, i, 100 + i as u64, 3000)), 2)
                .await
                .unwrap();
        }
        assert_eq!(epochs(&follower), vec![(1, 0), (2, 60)]);
        // Epoch 3: the old leader leads again and writes more.
        for i in 0..10i64 {
            leader
                .append_with_epoch(Bytes::from(batch(1, i, 200 + i as u64, 3000)), 3)
                .await
                .unwrap();
        }
        let segments_before = follower.segment_count();
        // The follower asks where its latest epoch ended on the leader.
        let (epoch, end) = leader.end_offset_for_epoch(follower.latest_epoch().unwrap()).unwrap();
        assert_eq!((epoch, end), (1, Offset(60)));
        assert_eq!(follower.truncate_to(end).await.unwrap(), Offset(60));
        assert!(follower.segment_count() < segments_before, "later segments went");
        assert_eq!(epochs(&follower), vec![(1, 0)]);
        assert_eq!(follower.end_offset_for_epoch(2), Some((1, Offset(60))));
        // Catch up from there, the same offsets written again.
        while follower.log_end() < leader.log_end() {
            let read = leader.read(follower.log_end(), 5000, leader.log_end()).unwrap();
            let bytes: Vec<u8> = read.chunks.iter().flat_map(|c| c.iter().copied()).collect();
            follower.append_replicated(Bytes::from(bytes)).await.unwrap().unwrap();
        }
        assert_eq!(read_all(&follower), read_all(&leader));
        assert_eq!(epochs(&follower), vec![(1, 0), (3, 60)]);
        drop(follower);
        let follower = Log::open(&path.join("follower"), small_config()).await.unwrap();
        assert_eq!(read_all(&follower), read_all(&leader));
        assert_eq!(epochs(&follower), epochs(&leader));
        // And it goes on replicating after the reopen.
        let info = leader
            .append_with_epoch(Bytes::from(batch(1, 9, 9, 10)), 3)
            .await
            .unwrap();
        let read = leader.read(info.base_offset, 1, leader.log_end()).unwrap();
        follower
            .append_replicated(read.chunks[0].clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(follower.log_end(), leader.log_end());
    });
}

#[test]
fn retention_clamps_the_epoch_covering_the_new_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = LogConfig {
            retention_bytes_max: Some(100 << 10),
            ..small_config()
        };
        let log = Log::open(&path, config.clone()).await.unwrap();
        for i in 0..80i64 {
            let epoch = (i / 20) as i32; // 0, 1, 2, 3: 20 batches each
            log.append_with_epoch(Bytes::from(batch(1, i, i as u64, 4000)), epoch)
                .await
                .unwrap();
        }
        assert_eq!(epochs(&log), vec![(0, 0), (1, 20), (2, 40), (3, 60)]);
        assert!(log.apply_retention().await.unwrap() > 0);
        let start = log.log_start();
        assert!(start.0 % 20 != 0, "the start falls inside an epoch: {start}");
        let covering = (start.0 / 20) as i32;
        assert!(covering > 0 && covering < 3, "log start {start}");
        let mut expected = vec![(covering, start.0)];
        expected.extend((covering + 1..4).map(|epoch| (epoch, i64::from(epoch) * 20)));
        assert_eq!(epochs(&log), expected);
        assert_eq!(log.end_offset_for_epoch(covering - 1), None);
        let covering_end = Offset(i64::from(covering + 1) * 20);
        assert_eq!(log.end_offset_for_epoch(covering), Some((covering, covering_end)));
        drop(log);
        let log = Log::open(&path, config).await.unwrap();
        assert_eq!(epochs(&log), expected, "the rebuild agrees");
    });
}

#[test]
fn under_fsync_always_nothing_unsynced_is_visible_and_under_never_everything_written_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Rc::new(open_always(&path.join("always")).await);
        let sampler_log = Rc::clone(&log);
        let done = Rc::new(std::cell::Cell::new(false));
        let sampling = Rc::clone(&done);
        // Samples the ends between every step of the appends below.
        let sampler = glommio::spawn_local(async move {
            let mut samples = 0u64;
            let mut written_not_visible = 0u64;
            while !sampling.get() {
                let (visible, durable, end) = (
                    sampler_log.visible_end(),
                    sampler_log.durable_end(),
                    sampler_log.log_end(),
                );
                assert!(visible <= durable, "visible {visible:?} past durable {durable:?}");
                assert!(durable <= end);
                if end > visible {
                    written_not_visible += 1;
                }
                samples += 1;
                glommio::yield_if_needed().await;
                glommio::executor().yield_task_queue_now().await;
            }
            (samples, written_not_visible)
        })
        .detach();
        let appends: Vec<_> = (0..40)
            .map(|i| {
                let log = Rc::clone(&log);
                glommio::spawn_local(async move {
                    log.append(Bytes::from(batch(1, 1000 + i, i as u64, 200)))
                        .await
                        .unwrap()
                })
                .detach()
            })
            .collect();
        for append in appends {
            append.await.unwrap();
        }
        done.set(true);
        let (samples, written_not_visible) = sampler.await.unwrap();
        assert!(samples > 0);
        println!("{samples} samples, {written_not_visible} with written but not yet visible data");
        assert_eq!(log.visible_end(), Offset(40), "everything is visible once synced");

        let never = Log::open(&path.join("never"), small_config()).await.unwrap();
        never.append(Bytes::from(batch(2, 1000, 1, 100))).await.unwrap();
        assert_eq!(
            never.visible_end(),
            never.log_end(),
            "without fsync, written is visible"
        );
    });
}
