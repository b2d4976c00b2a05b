//! A batch's record timestamps against the topic's bounds (KIP-937):
//! `message.timestamp.before.max.ms` and `message.timestamp.after.max.ms`
//! (and the older `message.timestamp.difference.max.ms`, both at once).
//! A record further before or after the broker's time than allowed makes
//! its partition's data be refused with INVALID_TIMESTAMP, naming each such
//! record (KIP-467 `record_errors`); nothing of it is stored. The bounds are
//! read from the topic's configs when they change (`PartitionSettings`) and
//! checked by the partition before it appends, on its owner shard;
//! unbounded topics (the default) and LogAppendTime topics are not walked
//! at all.
//!
//! The records of an uncompressed batch are each checked. A compressed
//! batch is not decompressed (the broker never does): its first record's
//! timestamp and its max timestamp stand for its records.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::{
    error::EngineError,
    record_walk::{refusals, Seen},
};

/// How far a record's timestamp may be from the broker's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimestampBounds {
    before_ms: i64,
    after_ms: i64,
}

impl TimestampBounds {
    /// The bounds a topic's configs set; `None` when there are none to
    /// check (unbounded, or LogAppendTime: the broker's own time is kept).
    pub(crate) fn of(configs: &BTreeMap<String, String>) -> Option<TimestampBounds> {
        if configs.get("message.timestamp.type").map(String::as_str) == Some("LogAppendTime") {
            return None;
        }
        let value = |key: &str| configs.get(key).and_then(|v| v.parse::<i64>().ok()).unwrap_or(i64::MAX);
        let difference = value("message.timestamp.difference.max.ms");
        let bounds = TimestampBounds {
            before_ms: value("message.timestamp.before.max.ms").min(difference),
            after_ms: value("message.timestamp.after.max.ms").min(difference),
        };
        (bounds.before_ms < i64::MAX || bounds.after_ms < i64::MAX).then_some(bounds)
    }

    /// Why `timestamp_ms` is out of bounds at `now_ms`, if it is.
    fn violation(&self, timestamp_ms: i64, now_ms: i64) -> Option<String> {
        if now_ms.saturating_sub(timestamp_ms) > self.before_ms {
            return Some(format!(
                "timestamp {timestamp_ms} is more than message.timestamp.before.max.ms={} before the broker's time {now_ms}",
                self.before_ms
            ));
        }
        if timestamp_ms.saturating_sub(now_ms) > self.after_ms {
            return Some(format!(
                "timestamp {timestamp_ms} is more than message.timestamp.after.max.ms={} after the broker's time {now_ms}",
                self.after_ms
            ));
        }
        None
    }

    /// Checks every record of `records` (a produce's batches). Bytes that
    /// are not whole batches are left to the log, which refuses them.
    pub(crate) fn check(&self, records: &Bytes, now_ms: i64) -> Result<(), EngineError> {
        let errors = refusals(records, |header, seen| {
            let timestamp_ms = match seen {
                Seen::Record(record) => header.base_timestamp_ms.saturating_add(record.timestamp_delta_ms),
                Seen::CompressedFirst => header.base_timestamp_ms,
                Seen::CompressedLast => header.max_timestamp_ms,
            };
            self.violation(timestamp_ms, now_ms)
        });
        if errors.is_empty() {
            Ok(())
        } else {
            Err(EngineError::InvalidTimestamp(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use shardline_log::{build_batch, build_batch_with_timestamps, BatchSpec};

    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn unbounded_and_log_append_time_topics_are_not_checked() {
        assert_eq!(TimestampBounds::of(&configs(&[])), None);
        let stamped = [
            ("message.timestamp.type", "LogAppendTime"),
            ("message.timestamp.before.max.ms", "10"),
        ];
        assert_eq!(TimestampBounds::of(&configs(&stamped)), None);
        let older = TimestampBounds::of(&configs(&[("message.timestamp.difference.max.ms", "50")])).unwrap();
        assert_eq!((older.before_ms, older.after_ms), (50, 50));
    }

    #[test]
    fn each_record_out_of_bounds_is_named() {
        let bounds = TimestampBounds::of(&configs(&[
            ("message.timestamp.before.max.ms", "1000"),
            ("message.timestamp.after.max.ms", "100"),
        ]))
        .unwrap();
        let now_ms = 10_000;
        // Records at 9500 (fine), 8000 (too old), 10_050 (fine), 10_500 (too new).
        let mut records = build_batch_with_timestamps(8_000, &[1_500, 0, 2_050, 2_500], 0);
        records.extend(build_batch_with_timestamps(9_999, &[0], 0));
        let Err(EngineError::InvalidTimestamp(errors)) = bounds.check(&Bytes::from(records), now_ms) else {
            panic!("refused");
        };
        let named: Vec<i32> = errors.iter().map(|(index, _)| *index).collect();
        assert_eq!(named, vec![1, 3]);
        assert!(errors[0].1.contains("before"), "{errors:?}");
        assert!(errors[1].1.contains("after"), "{errors:?}");
        let fine = build_batch_with_timestamps(9_900, &[0, 150], 0);
        assert!(bounds.check(&Bytes::from(fine), now_ms).is_ok());
        // A compressed batch: its first and max timestamps stand for it.
        let compressed = build_batch(&BatchSpec {
            attributes: 1,
            ..BatchSpec::plain(3, 5_000, b"opaque")
        });
        let Err(EngineError::InvalidTimestamp(errors)) = bounds.check(&Bytes::from(compressed), now_ms) else {
            panic!("refused");
        };
        assert_eq!(errors.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 2]);
        // Bytes that are no batch are the log's to refuse.
        assert!(bounds.check(&Bytes::from_static(b"junk"), now_ms).is_ok());
    }
}
