//! What `cleanup.policy` means to the engine, and the produce-side rule of
//! a compacted topic.
//!
//! A topic's `cleanup.policy` is `delete` (the default: retention by time
//! and size), `compact` (the log's cleaner keeps the latest record per
//! key; no retention deletes anything), or both. The cleaner itself is the
//! log's (`shardline_log::Log::clean`); each shard runs it over its own
//! partitions from a low-priority task queue (`runtime.rs`), with the
//! settings read here from the topic's configs when they change
//! ([`Compaction::of`], kept in `PartitionSettings`). `__consumer_offsets`
//! is always compacted, whatever its stored configs say (`shard.rs`).
//!
//! On a compacted topic a record without a key could never be cleaned
//! away, so produce refuses it with INVALID_RECORD, naming each such record
//! (KIP-467 `record_errors`), as Kafka does. The records of an uncompressed
//! batch are each checked; a compressed batch is not decompressed (the
//! broker never does), so its records are taken as they come — the cleaner
//! keeps compressed batches whole.

use std::collections::BTreeMap;

use bytes::Bytes;
use shardline_log::CleanerConfig;

use crate::{
    error::EngineError,
    record_walk::{refusals, Seen},
};

/// A topic's `cleanup.policy`, parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Compaction {
    /// `delete` is named too: retention applies as well.
    pub(crate) delete: bool,
    /// The cleaner's settings from the topic's configs.
    pub(crate) cleaner: CleanerConfig,
}

impl Compaction {
    /// The compaction a topic's configs ask for; `None` for `delete` only
    /// (or an unparsable value, which the metadata group refuses anyway).
    pub(crate) fn of(configs: &BTreeMap<String, String>) -> Option<Compaction> {
        let policy = configs.get("cleanup.policy").map_or("delete", String::as_str);
        let (delete, compact) = shardline_raft::cleanup_policies(policy)?;
        compact.then(|| Compaction {
            delete,
            cleaner: cleaner_config(configs),
        })
    }

    /// The compaction of `__consumer_offsets`: always on, never retention.
    pub(crate) fn internal(configs: &BTreeMap<String, String>) -> Compaction {
        Compaction {
            delete: false,
            cleaner: cleaner_config(configs),
        }
    }
}

/// The cleaner's settings from a topic's configs over Kafka's defaults.
fn cleaner_config(configs: &BTreeMap<String, String>) -> CleanerConfig {
    let defaults = CleanerConfig::default();
    let integer = |key: &str, default: i64| configs.get(key).and_then(|v| v.parse::<i64>().ok()).unwrap_or(default);
    CleanerConfig {
        delete_retention_ms: integer("delete.retention.ms", defaults.delete_retention_ms),
        min_cleanable_dirty_ratio: configs
            .get("min.cleanable.dirty.ratio")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|ratio| (0.0..=1.0).contains(ratio))
            .unwrap_or(defaults.min_cleanable_dirty_ratio),
        min_compaction_lag_ms: integer("min.compaction.lag.ms", defaults.min_compaction_lag_ms),
        max_compaction_lag_ms: integer("max.compaction.lag.ms", defaults.max_compaction_lag_ms),
    }
}

/// Refuses `records` (a produce's batches) if an uncompressed batch holds a
/// record without a key, naming each (`record_walk.rs`).
pub(crate) fn check_keys(records: &Bytes) -> Result<(), EngineError> {
    let errors = refusals(records, |_, seen| match seen {
        Seen::Record(record) if record.key.is_none() => {
            Some("Compacted topic cannot accept message without key".to_string())
        }
        Seen::Record(_) | Seen::CompressedFirst | Seen::CompressedLast => None,
    });
    if errors.is_empty() {
        Ok(())
    } else {
        Err(EngineError::RecordsRefused(errors))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn the_policy_and_its_settings_come_from_the_topic_configs() {
        assert_eq!(Compaction::of(&configs(&[])), None);
        assert_eq!(Compaction::of(&configs(&[("cleanup.policy", "delete")])), None);
        let compact = Compaction::of(&configs(&[
            ("cleanup.policy", "compact"),
            ("delete.retention.ms", "5"),
            ("min.cleanable.dirty.ratio", "0.25"),
            ("min.compaction.lag.ms", "7"),
        ]))
        .unwrap();
        assert!(!compact.delete);
        assert_eq!(compact.cleaner.delete_retention_ms, 5);
        assert!((compact.cleaner.min_cleanable_dirty_ratio - 0.25).abs() < f64::EPSILON);
        assert_eq!(compact.cleaner.min_compaction_lag_ms, 7);
        assert_eq!(compact.cleaner.max_compaction_lag_ms, i64::MAX);
        assert!(
            Compaction::of(&configs(&[("cleanup.policy", "compact,delete")]))
                .unwrap()
                .delete
        );
    }

    #[test]
    fn a_record_without_a_key_is_refused_by_its_index() {
        let keyed = shardline_log::build_keyed_batch(1, &[(Some(b"k"), Some(b"v")), (None, Some(b"v"))]);
        let mut records = keyed.clone();
        records.extend_from_slice(&shardline_log::build_keyed_batch(1, &[(None, None)]));
        match check_keys(&Bytes::from(records)) {
            Err(EngineError::RecordsRefused(errors)) => {
                assert_eq!(errors.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 2]);
            }
            other => panic!("{other:?}"),
        }
        let all_keyed = shardline_log::build_keyed_batch(1, &[(Some(b"k"), None)]);
        assert!(check_keys(&Bytes::from(all_keyed)).is_ok(), "a tombstone has a key");
    }
}
