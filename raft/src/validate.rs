//! Pure validation rules shared by the state machine (which must reject
//! deterministically) and by anyone who wants to check input early.
//!
//! Topic names follow Kafka: 1–249 characters of `[a-zA-Z0-9._-]`, not `.`
//! or `..`. Topic configs accepted (Kafka names plus one of Shardline's):
//!
//! | key | value |
//! | --- | --- |
//! | `retention.ms` | integer ≥ -1 (-1: no time limit) |
//! | `retention.bytes` | integer ≥ -1 (-1: no size limit) |
//! | `segment.bytes` | integer 14..=2147483647 |
//! | `segment.ms` | integer ≥ 1 |
//! | `cleanup.policy` | `delete`, `compact`, or both (`compact,delete`, any order) |
//! | `delete.retention.ms` | integer ≥ 0 (how long a tombstone outlives its first cleaning) |
//! | `min.cleanable.dirty.ratio` | number 0..=1 |
//! | `min.compaction.lag.ms` | integer ≥ 0 |
//! | `max.compaction.lag.ms` | integer ≥ 1 |
//! | `max.message.bytes` | integer 0..=2147483647 |
//! | `message.timestamp.type` | `CreateTime` or `LogAppendTime` |
//! | `message.timestamp.before.max.ms` | integer ≥ 0 (KIP-937) |
//! | `message.timestamp.after.max.ms` | integer ≥ 0 (KIP-937) |
//! | `message.timestamp.difference.max.ms` | integer ≥ 0 (both bounds at once, the older name) |
//! | `shardline.fsync` | `always`, `never` or `interval:<ms>` with ms ≥ 1 |

use crate::error::MetaError;

/// Longest topic name Kafka accepts (its file-name limit minus suffixes).
pub const TOPIC_NAME_LENGTH_MAX: usize = 249;

/// Most partitions one topic may have. Every partition is a directory, a
/// log and a slot in every shard table; this keeps one request from asking
/// for millions of them.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

/// Most configs one request may carry (there are nineteen valid keys; the bound
/// only caps what an invalid request can make the state machine look at).
pub const CONFIG_ENTRIES_MAX: usize = 64;

/// Longest config value accepted.
pub const CONFIG_VALUE_LENGTH_MAX: usize = 1024;

/// The topic config keys this broker understands.
pub const TOPIC_CONFIG_KEYS: [&str; 19] = [
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "cleanup.policy",
    "max.message.bytes",
    "message.timestamp.type",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
    "message.timestamp.difference.max.ms",
    "shardline.fsync",
    "min.insync.replicas",
    "delete.retention.ms",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "shardline.delivery.delay.ms",
    "shardline.delivery.delay.max.ms",
    "shardline.dlq.max.deliveries",
];

/// The policies a `cleanup.policy` value names: (delete, compact); `None`
/// unless it is a non-empty comma-separated list of `delete` and `compact`
/// (spaces around items allowed, as Kafka's list parser does).
pub fn cleanup_policies(value: &str) -> Option<(bool, bool)> {
    let (mut delete, mut compact) = (false, false);
    for item in value.split(',').map(str::trim) {
        match item {
            "delete" => delete = true,
            "compact" => compact = true,
            _ => return None,
        }
    }
    (delete || compact).then_some((delete, compact))
}

/// Checks a topic name against Kafka's rules.
pub fn validate_topic_name(name: &str) -> Result<(), MetaError> {
    let length_ok = !name.is_empty() && name.len() <= TOPIC_NAME_LENGTH_MAX;
    let characters_ok = name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'_' || byte == b'-');
    if !length_ok || !characters_ok || name == "." || name == ".." {
        return Err(MetaError::InvalidTopicName(name.to_owned()));
    }
    Ok(())
}

/// Kafka treats `.` and `_` alike when it names metrics; two topics whose
/// names differ only there collide.
pub(crate) fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

/// Checks one topic config entry (`value` is `None` for a deletion, which
/// only needs a known key).
pub fn validate_topic_config(key: &str, value: Option<&str>) -> Result<(), MetaError> {
    let invalid = |reason: &str| MetaError::InvalidConfig {
        key: key.to_owned(),
        value: value.map(str::to_owned),
        reason: reason.to_owned(),
    };
    if !TOPIC_CONFIG_KEYS.contains(&key) {
        return Err(invalid("unknown topic config"));
    }
    let Some(value) = value else {
        return Ok(());
    };
    if value.len() > CONFIG_VALUE_LENGTH_MAX {
        return Err(invalid("value too long"));
    }
    let integer_at_least = |minimum: i64, maximum: i64| -> Result<(), MetaError> {
        match value.parse::<i64>() {
            Ok(number) if number >= minimum && number <= maximum => Ok(()),
            Ok(_) => Err(invalid(&format!("must be between {minimum} and {maximum}"))),
            Err(_) => Err(invalid("not an integer")),
        }
    };
    let i32_max = i64::from(i32::MAX);
    match key {
        "retention.ms" | "retention.bytes" => integer_at_least(-1, i64::MAX),
        "segment.bytes" => integer_at_least(14, i32_max),
        "segment.ms" => integer_at_least(1, i64::MAX),
        "max.message.bytes" => integer_at_least(0, i32_max),
        "min.insync.replicas" => integer_at_least(1, i32_max),
        "message.timestamp.before.max.ms"
        | "message.timestamp.after.max.ms"
        | "message.timestamp.difference.max.ms" => integer_at_least(0, i64::MAX),
        "cleanup.policy" if cleanup_policies(value).is_some() => Ok(()),
        "cleanup.policy" => Err(invalid("must be delete, compact or compact,delete")),
        "delete.retention.ms" | "min.compaction.lag.ms" => integer_at_least(0, i64::MAX),
        "shardline.delivery.delay.ms" | "shardline.delivery.delay.max.ms" => integer_at_least(0, i64::MAX),
        "shardline.dlq.max.deliveries" => integer_at_least(0, i32_max),
        "max.compaction.lag.ms" => integer_at_least(1, i64::MAX),
        "min.cleanable.dirty.ratio" => match value.parse::<f64>() {
            Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(()),
            _ => Err(invalid("must be a number between 0 and 1")),
        },
        "message.timestamp.type" if value == "CreateTime" || value == "LogAppendTime" => Ok(()),
        "message.timestamp.type" => Err(invalid("must be CreateTime or LogAppendTime")),
        "shardline.fsync" => validate_fsync(value).map_err(|()| invalid("must be always, never or interval:<ms>")),
        _ => Err(invalid("unknown topic config")),
    }
}

fn validate_fsync(value: &str) -> Result<(), ()> {
    match value {
        "always" | "never" => Ok(()),
        _ => {
            let milliseconds = value.strip_prefix("interval:").ok_or(())?;
            match milliseconds.parse::<u64>() {
                Ok(milliseconds) if milliseconds >= 1 => Ok(()),
                _ => Err(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka() {
        for good in ["a", "orders", "a.b_c-D9", &"x".repeat(249)] {
            assert!(validate_topic_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a b", "ä", "a/b", &"x".repeat(250)] {
            assert!(
                matches!(validate_topic_name(bad), Err(MetaError::InvalidTopicName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn configs_accept_valid_values() {
        let good = [
            ("retention.ms", "-1"),
            ("retention.ms", "604800000"),
            ("retention.bytes", "1073741824"),
            ("segment.bytes", "14"),
            ("segment.ms", "1"),
            ("cleanup.policy", "delete"),
            ("cleanup.policy", "compact"),
            ("cleanup.policy", "compact,delete"),
            ("cleanup.policy", "delete, compact"),
            ("delete.retention.ms", "0"),
            ("min.cleanable.dirty.ratio", "0.5"),
            ("min.cleanable.dirty.ratio", "1"),
            ("min.compaction.lag.ms", "0"),
            ("max.compaction.lag.ms", "1"),
            ("max.message.bytes", "0"),
            ("message.timestamp.type", "CreateTime"),
            ("message.timestamp.type", "LogAppendTime"),
            ("shardline.fsync", "always"),
            ("shardline.fsync", "never"),
            ("shardline.fsync", "interval:5"),
        ];
        for (key, value) in good {
            assert!(validate_topic_config(key, Some(value)).is_ok(), "{key}={value}");
        }
    }

    #[test]
    fn configs_reject_invalid_values() {
        let bad = [
            ("retention.ms", "-2"),
            ("retention.ms", "soon"),
            ("segment.bytes", "13"),
            ("segment.bytes", "2147483648"),
            ("segment.ms", "0"),
            ("cleanup.policy", "shred"),
            ("cleanup.policy", ""),
            ("cleanup.policy", "compact,"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("min.cleanable.dirty.ratio", "NaN"),
            ("max.compaction.lag.ms", "0"),
            ("delete.retention.ms", "-1"),
            ("max.message.bytes", "-1"),
            ("message.timestamp.type", "createtime"),
            ("shardline.fsync", "interval:0"),
            ("shardline.fsync", "interval:"),
            ("shardline.fsync", "sometimes"),
            ("no.such.key", "1"),
        ];
        for (key, value) in bad {
            assert!(
                matches!(
                    validate_topic_config(key, Some(value)),
                    Err(MetaError::InvalidConfig { .. })
                ),
                "{key}={value}"
            );
        }
        assert!(validate_topic_config("retention.ms", None).is_ok());
        assert!(validate_topic_config("no.such.key", None).is_err());
    }
}
