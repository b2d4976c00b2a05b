//! Log compaction through the public API (`Log::clean`): what a pass
//! keeps, on real files, against a model map.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::{collections::BTreeMap, rc::Rc};

use bytes::Bytes;
use common::{read_records, run, small_config, ManualClock};
use proptest::prelude::*;
use shardline_log::{build_keyed_batch, CleanerConfig, Log, Offset};

/// Cleans whatever is dirty at once; tombstones stay `delete_retention_ms`.
fn eager(delete_retention_ms: i64) -> CleanerConfig {
    CleanerConfig {
        delete_retention_ms,
        min_cleanable_dirty_ratio: 0.0,
        ..CleanerConfig::default()
    }
}

type Stored = Vec<common::StoredRecord>;

/// The model: key → (offset, value) of its latest record.
fn latest_per_key(records: &Stored) -> BTreeMap<Vec<u8>, (i64, Option<Vec<u8>>)> {
    let mut model = BTreeMap::new();
    for (offset, key, value) in records {
        model.insert(key.clone().unwrap(), (*offset, value.clone()));
    }
    model
}

fn as_map(records: &Stored) -> BTreeMap<Vec<u8>, (i64, Option<Vec<u8>>)> {
    let model = latest_per_key(records);
    assert_eq!(model.len(), records.len(), "one record per key after a full clean");
    model
}

#[test]
fn a_cleaned_log_reads_back_the_last_value_per_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, small_config()).await.unwrap();
        for i in 0..3000u32 {
            let key = format!("key-{}", i % 40);
            let value = format!("value-{i}-{}", "x".repeat(64));
            let batch = build_keyed_batch(1_000, &[(Some(key.as_bytes()), Some(value.as_bytes()))]);
            log.append(Bytes::from(batch)).await.unwrap();
        }
        log.roll().await.unwrap();
        let before = read_records(&log);
        let end = log.log_end();
        let size_before = log.size_bytes();
        let report = log.clean(&eager(i64::MAX)).await.unwrap().expect("a pass ran");
        assert!(report.segments_swapped > 0, "{report:?}");
        assert_eq!(report.records_removed, 3000 - 40);
        let after = read_records(&log);
        assert_eq!(
            as_map(&after),
            latest_per_key(&before),
            "the last value per key, at its offset"
        );
        assert_eq!(log.log_end(), end, "offsets never move");
        assert!(
            log.size_bytes() < size_before / 4,
            "{} of {size_before}",
            log.size_bytes()
        );
        assert_eq!(log.first_dirty_offset(), Offset(3000));
        // Nothing new: the next pass has nothing to do.
        assert!(log.clean(&eager(i64::MAX)).await.unwrap().is_none());
        // Appends go on after the cleaned segments.
        let batch = build_keyed_batch(1_000, &[(Some(b"key-0"), Some(b"newest"))]);
        assert_eq!(log.append(Bytes::from(batch)).await.unwrap().base_offset, end);
        log.close().await.unwrap();
        drop(log);
        let log = Log::open(&path, small_config()).await.unwrap();
        let reopened = read_records(&log);
        assert_eq!(
            &reopened[..after.len()],
            &after[..],
            "the cleaned log survives a reopen"
        );
        assert_eq!(log.first_dirty_offset(), Offset(3000), "the checkpoint is durable");
    });
}

#[test]
fn tombstones_go_once_delete_retention_has_passed_since_they_were_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let clock = Rc::new(ManualClock::default());
        clock.0.set(10_000);
        let log = Log::open_with_clock(&path, small_config(), clock.clone())
            .await
            .unwrap();
        for (key, value) in [
            (b"a", Some(&b"1"[..])),
            (b"b", Some(b"1")),
            (b"a", None),
            (b"c", Some(b"1")),
        ] {
            let batch = build_keyed_batch(10_000, &[(Some(&key[..]), value)]);
            log.append(Bytes::from(batch)).await.unwrap();
        }
        log.roll().await.unwrap();
        log.clean(&eager(1_000)).await.unwrap().expect("a pass ran");
        let keys: Vec<_> = read_records(&log)
            .into_iter()
            .map(|(o, k, v)| (o, k.unwrap(), v))
            .collect();
        assert_eq!(
            keys,
            vec![
                (1, b"b".to_vec(), Some(b"1".to_vec())),
                (2, b"a".to_vec(), None),
                (3, b"c".to_vec(), Some(b"1".to_vec()))
            ],
            "the tombstone stays, the value it deletes goes"
        );
        // New dirty data, so that passes run; the horizon is 11 000.
        let append_dirty = || async {
            log.append(Bytes::from(build_keyed_batch(10_000, &[(Some(b"d"), Some(b"1"))])))
                .await
                .unwrap();
            log.roll().await.unwrap();
        };
        clock.0.set(10_999);
        append_dirty().await;
        log.clean(&eager(1_000)).await.unwrap().expect("a pass ran");
        assert!(
            read_records(&log).iter().any(|(_, _, v)| v.is_none()),
            "before the horizon"
        );
        clock.0.set(11_000);
        append_dirty().await;
        let report = log.clean(&eager(1_000)).await.unwrap().expect("a pass ran");
        assert_eq!(report.tombstones_removed, 1);
        assert!(read_records(&log).iter().all(|(_, _, v)| v.is_some()), "after it");
    });
}

#[test]
fn a_lookup_by_time_skips_what_the_cleaner_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let log = Log::open(&path, small_config()).await.unwrap();
        for (timestamp_ms, key) in [(1_000, b"a"), (2_000, b"a"), (3_000, b"b")] {
            let batch = build_keyed_batch(timestamp_ms, &[(Some(&key[..]), Some(b"v"))]);
            log.append(Bytes::from(batch)).await.unwrap();
        }
        log.roll().await.unwrap();
        log.clean(&eager(i64::MAX)).await.unwrap().expect("a pass ran");
        // Offset 0 (a at 1 000) is gone; its batch is an empty one that
        // keeps its max timestamp: the lookup goes on to the next record.
        let found = log.offset_for_timestamp(900).unwrap().unwrap();
        assert_eq!(
            (found.offset, found.timestamp_ms, found.exact),
            (Offset(1), 2_000, true)
        );
    });
}

/// One step of a random history: a record (key, value or tombstone), or a roll.
#[derive(Debug, Clone)]
enum Step {
    Put(u8, Option<u16>),
    Roll,
    Clean,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u8..12, proptest::option::weighted(0.8, any::<u16>())).prop_map(|(k, v)| Step::Put(k, v)),
        1 => Just(Step::Roll),
        1 => Just(Step::Clean),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random puts, tombstones, rolls and passes: the log read back always
    /// holds the model's latest record per key at its offset (a key may
    /// still show older records not yet cleaned, never a wrong latest), and
    /// after a final roll and pass exactly one record per key remains.
    #[test]
    fn the_cleaner_agrees_with_a_model_map(steps in proptest::collection::vec(step(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let log = Log::open(&path, small_config()).await.unwrap();
            let mut written: Stored = Vec::new();
            for step in steps {
                match step {
                    Step::Put(key, value) => {
                        let key = [key];
                        let value = value.map(u16::to_be_bytes);
                        let batch = build_keyed_batch(1_000, &[(Some(&key[..]), value.as_ref().map(|v| &v[..]))]);
                        let info = log.append(Bytes::from(batch)).await.unwrap();
                        written.push((info.base_offset.0, Some(key.to_vec()), value.map(|v| v.to_vec())));
                    }
                    Step::Roll => log.roll().await.unwrap(),
                    Step::Clean => {
                        log.clean(&eager(i64::MAX)).await.unwrap();
                    }
                }
                let stored = read_records(&log);
                assert_eq!(latest_per_key(&stored), latest_per_key(&written));
                let all: std::collections::BTreeSet<_> = written.iter().cloned().collect();
                assert!(stored.iter().all(|r| all.contains(r)), "only records written, at their offsets");
            }
            log.roll().await.unwrap();
            log.clean(&eager(i64::MAX)).await.unwrap();
            assert_eq!(as_map(&read_records(&log)), latest_per_key(&written));
        });
    }
}
