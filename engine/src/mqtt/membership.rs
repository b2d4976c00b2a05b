//! Which nodes of a cluster have members of each shared subscription, so
//! that a share gets each message once across the cluster, not once per
//! node (`shared.rs` says who delivers what; this is how a node learns it).
//!
//! ```text
//!  record in __mqtt_shares (compacted, `compacted.rs`), partition crc32c("Name/filter") mod partitions:
//!     key   = "{node id}/{Name}/{filter}"   e.g. "2/workers/jobs/#"
//!     value = byte 0: format, 1
//!             bytes 1..5: the node id again, i32 big-endian (must match the key's)
//!     null value (tombstone): that node has no member of the share any more
//! ```
//!
//! A share's records are in the partition its own name chooses
//! ([`Entry::partition_key`]), so one read finds every node's record of it.
//! A node writes its own keys only: on the share's home shard, the first
//! member's SUBSCRIBE stores the record (before its SUBACK) and the last
//! member's leaving stores the tombstone ([`settle`], one store at a time
//! per shard). Every [`SHARE_VIEW_REFRESH_INTERVAL`] the home shard of
//! each share with members reads the records of its shares and keeps the
//! other nodes that have one and are registered and not fenced in the
//! metadata image as the share's view ([`refresh`]). A node that restarts
//! tombstones the records an earlier run of it left for shares it has no
//! member of now ([`upkeep`]).
//!
//! A key is the node id first: a share name holds no `/` (MQTT 5.0
//! §4.8.2), so "node/Name/filter" reads back unambiguously. The records
//! live in a topic of their own rather than among the sessions: no client
//! id can collide with them, the session table's bound does not count
//! them, and a node that never serves a share in a cluster never creates
//! it. A single node (no other broker registered) stores no record and
//! delivers every message, as before.

use std::{collections::BTreeMap, collections::BTreeSet, rc::Rc, time::Duration};

use bytes::Bytes;
use shardline_log::Record;

use super::{
    compacted::{self, Entry, Stored, Table},
    mapping, shared, MqttShard,
};
use crate::{error::EngineError, shard::Shard};

/// The internal Kafka topic of share membership records.
pub(crate) const SHARES_KAFKA_TOPIC: &str = "__mqtt_shares";

/// Membership records one shard keeps at most (for the shares of the
/// partitions it owns; one per share and node with members): a record
/// beyond it is stored but not kept, so the node it names is not seen as a
/// member (its partitions are delivered twice, not lost).
pub(crate) const SHARE_RECORDS_MAX: usize = 100_000;

/// How often the home shard of a share re-reads which nodes have members:
/// the longest another node's joining or leaving goes unseen here (plus
/// the read itself). Below [`shared::SHARE_HANDOVER_GRACE`], so a node that
/// hands partitions over keeps them until the others have read the change.
pub(crate) const SHARE_VIEW_REFRESH_INTERVAL: Duration = Duration::from_millis(500);

/// The format byte of a record's value.
const RECORD_FORMAT: u8 = 1;

/// A record's value: the format byte and the node id.
const RECORD_BYTES: usize = 5;

const _: () = assert!(
    SHARE_VIEW_REFRESH_INTERVAL.as_millis() * 2 < shared::SHARE_HANDOVER_GRACE.as_millis(),
    "the grace outlasts two refreshes"
);

/// One node's record that it has members of a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShareRecord {
    node_id: i32,
}

/// The key of node `node_id`'s record of `share` ("Name/filter").
fn record_key(node_id: i32, share: &str) -> String {
    format!("{node_id}/{share}")
}

/// The node and share ("Name/filter") a record's key names.
fn parse_key(key: &str) -> Option<(i32, &str)> {
    let (node, share) = key.split_once('/')?;
    Some((node.parse().ok()?, share))
}

impl Entry for ShareRecord {
    const TOPIC: &'static str = SHARES_KAFKA_TOPIC;
    const ENTRIES_MAX: usize = SHARE_RECORDS_MAX;

    fn table(mqtt: &MqttShard) -> &Table<ShareRecord> {
        &mqtt.share_records
    }

    fn decode(record: &Record<'_>) -> Option<ShareRecord> {
        let value = record.value?;
        let key = record.key.and_then(|key| std::str::from_utf8(key).ok())?;
        let (node_id, _) = parse_key(key)?;
        let decoded = match value {
            [RECORD_FORMAT, a, b, c, d] => Some(i32::from_be_bytes([*a, *b, *c, *d])),
            _ => None,
        }
        .filter(|stored| *stored == node_id);
        if decoded.is_none() {
            tracing::warn!(key, "an MQTT share record that does not check is ignored");
        }
        decoded.map(|node_id| ShareRecord { node_id })
    }

    fn encode(&self) -> (Bytes, Vec<(&'static str, Bytes)>) {
        let mut value = Vec::with_capacity(RECORD_BYTES);
        value.push(RECORD_FORMAT);
        value.extend_from_slice(&self.node_id.to_be_bytes());
        assert_eq!(value.len(), RECORD_BYTES, "a share record's layout");
        (Bytes::from(value), Vec::new())
    }

    fn partition_key(key: &str) -> &str {
        parse_key(key).map_or(key, |(_, share)| share)
    }
}

/// Whether another broker is registered: only then are records kept.
fn in_cluster(shard: &Shard) -> bool {
    let me = shard.node_id();
    shard.image().brokers.keys().any(|node| *node != me)
}

/// On the share's home shard: stores this node's record of the share if it
/// has members and its record does not say so, or a tombstone if it has
/// none and its record says (or may say) so. Returns whether it stored one.
pub(crate) async fn settle(shard: &Rc<Shard>, name: &str, filter: &str) -> bool {
    assert_eq!(
        shared::home_of(name, filter, shard.shard_count),
        shard.id,
        "a share is settled at home"
    );
    let Ok(_permit) = shard.mqtt.share_settling.acquire_permit(1).await else {
        return false;
    };
    let (members, recorded) = {
        let shares = shard.mqtt.shares.borrow();
        (shares.has_members(name, filter), shares.is_recorded(name, filter))
    };
    if members == recorded || (members && !in_cluster(shard)) {
        return false;
    }
    let node_id = shard.node_id();
    let key = record_key(node_id, &format!("{name}/{filter}"));
    let record = members.then_some(ShareRecord { node_id });
    match compacted::store(shard, key, record).await {
        Ok(stored) => {
            if stored == Stored::NotKept {
                tracing::warn!(
                    share = name,
                    filter,
                    "MQTT share record stored but not kept: the shard keeps its maximum"
                );
            }
            assert!(stored != Stored::Refused, "a share record replaces any other");
            shard.mqtt.shares.borrow_mut().set_recorded(name, filter, members);
            true
        }
        Err(error) => {
            tracing::warn!(share = name, filter, %error, "MQTT share record not stored; retried later");
            false
        }
    }
}

/// On the home shard of the shares `keys`: reads which other nodes have
/// members of each (registered and not fenced) and takes that as its view.
/// A share whose records cannot be read keeps its view until the next
/// refresh.
pub(crate) async fn refresh(shard: &Rc<Shard>, keys: &[(String, String)]) {
    let me = shard.node_id();
    let image = shard.image();
    let now_ms = crate::kafka::unix_now_ms();
    let partitions = image
        .topics
        .get(SHARES_KAFKA_TOPIC)
        .map_or(0, |topic| topic.partitions.len());
    let mut by_partition: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for (name, filter) in keys {
        if !shard.mqtt.shares.borrow().has_members(name, filter) {
            continue;
        }
        if partitions == 0 || !in_cluster(shard) {
            // Nobody else has recorded a member: this node delivers all.
            shard
                .mqtt
                .shares
                .borrow_mut()
                .set_view(name, filter, BTreeSet::new(), now_ms);
            continue;
        }
        let share = format!("{name}/{filter}");
        let index = mapping::partition_of(&share, partitions);
        by_partition.entry(index).or_default().push(share);
    }
    let epoch = crate::kafka::epoch_of(shard);
    for (index, wanted) in by_partition {
        let asked = wanted.clone();
        let found = shard
            .invoke_on(
                compacted::home_of(index, shard.shard_count),
                move |s: Rc<Shard>| async move {
                    s.wait_for_epoch(epoch).await;
                    compacted::catch_up::<ShareRecord>(&s, index).await?;
                    let mut found: Vec<(String, i32)> = Vec::new();
                    s.mqtt.share_records.for_each(|key, record| {
                        if let Some((_, share)) = parse_key(key).filter(|(_, share)| asked.iter().any(|a| a == share)) {
                            found.push((share.to_string(), record.node_id));
                        }
                    });
                    Ok::<_, EngineError>(found)
                },
            )
            .await
            .and_then(|found| found);
        let found = match found {
            Ok(found) => found,
            Err(error) => {
                tracing::debug!(partition = index, %error, "MQTT share records not read; view kept");
                continue;
            }
        };
        for share in &wanted {
            let others: BTreeSet<i32> = found
                .iter()
                .filter(|(of, node)| {
                    of == share && *node != me && image.brokers.get(node).is_some_and(|broker| !broker.fenced)
                })
                .map(|(_, node)| *node)
                .collect();
            if let Some((name, filter)) = share.split_once('/') {
                shard.mqtt.shares.borrow_mut().set_view(name, filter, others, now_ms);
            }
        }
    }
}

/// A shard's upkeep of the shares homed on it, for as long as it runs:
/// every [`SHARE_VIEW_REFRESH_INTERVAL`], settle every share's record (a
/// store that failed is retried here) and refresh their views; first, once,
/// tombstone what an earlier run of this node recorded.
pub(crate) async fn upkeep(shard: Rc<Shard>) {
    let mut cleaned = false;
    while !shard.is_shutting_down() {
        glommio::timer::sleep(SHARE_VIEW_REFRESH_INTERVAL).await;
        if !cleaned {
            cleaned = clean_earlier_records(&shard).await;
        }
        let keys = shard.mqtt.shares.borrow().keys();
        if keys.is_empty() {
            continue;
        }
        for (name, filter) in &keys {
            settle(&shard, name, filter).await;
        }
        refresh(&shard, &keys).await;
    }
}

/// For the record partitions homed on this shard: has every share this
/// node has a record of settled on its home shard, so a record an earlier
/// run left for a share with no member now is tombstoned. True once done.
async fn clean_earlier_records(shard: &Rc<Shard>) -> bool {
    let partitions = shard
        .image()
        .topics
        .get(SHARES_KAFKA_TOPIC)
        .map_or(0, |topic| topic.partitions.len());
    let me = shard.node_id();
    let mut ours: Vec<String> = Vec::new();
    for index in (0..partitions).filter_map(|index| i32::try_from(index).ok()) {
        if compacted::home_of(index, shard.shard_count) != shard.id {
            continue;
        }
        if let Err(error) = compacted::catch_up::<ShareRecord>(shard, index).await {
            tracing::debug!(partition = index, %error, "MQTT share records not read yet");
            return false;
        }
    }
    shard.mqtt.share_records.for_each(|key, _| {
        if let Some((node, share)) = parse_key(key) {
            if node == me {
                ours.push(share.to_string());
            }
        }
    });
    for share in ours {
        let Some((name, filter)) = share.split_once('/').map(|(n, f)| (n.to_string(), f.to_string())) else {
            continue;
        };
        let home = shared::home_of(&name, &filter, shard.shard_count);
        let _ = shard
            .invoke_on(home, move |s: Rc<Shard>| async move {
                s.mqtt.shares.borrow_mut().set_recorded(&name, &filter, true);
                settle(&s, &name, &filter).await;
            })
            .await;
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn record(key: &str, value: Option<&[u8]>) -> Option<ShareRecord> {
        compacted::decode_record(key, value, &[])
    }

    #[test]
    fn a_record_survives_its_bytes_and_bad_ones_are_ignored() {
        let key = record_key(3, "workers/jobs/#");
        assert_eq!(key, "3/workers/jobs/#");
        assert_eq!(parse_key(&key), Some((3, "workers/jobs/#")));
        assert_eq!(ShareRecord::partition_key(&key), "workers/jobs/#");
        let (value, headers) = ShareRecord { node_id: 3 }.encode();
        assert!(headers.is_empty());
        assert_eq!(record(&key, Some(&value)), Some(ShareRecord { node_id: 3 }));
        // A tombstone, another node's id, a wrong format, a cut value, a bad key.
        assert_eq!(record(&key, None), None);
        assert_eq!(record(&record_key(4, "workers/jobs/#"), Some(&value)), None);
        assert_eq!(record(&key, Some(&[2, 0, 0, 0, 3])), None);
        assert_eq!(record(&key, Some(&value[..4])), None);
        assert_eq!(record("x/workers/jobs", Some(&value)), None);
        assert_eq!(parse_key("nothing"), None);
    }
}
