//! Tables MQTT keeps durably in compacted internal Kafka topics: the
//! retained messages (`__mqtt_retained`, `retained.rs`) and the persistent
//! sessions (`__mqtt_sessions`, `sessions.rs`). Both work the same way:
//!
//! ```text
//!  record in the table's topic, partition crc32c(K) mod partitions:
//!     key = K (an MQTT topic, a client id), value = the entry (null: K removed),
//!     headers as the entry needs
//!  owner of that partition: the table K -> entry in its MqttShard,
//!     folded from the partition's log the first time the shard needs it
//! ```
//!
//! A change is appended on the partition's owner, durable under the
//! topic's fsync policy (and, in a cluster, on every in-sync replica),
//! before the owner's table takes it and before the caller hears it was
//! stored. The topic is created compacted (`cleanup.policy=compact`): an
//! entry never ages out, and the replay at load reads about one record per
//! key plus what the cleaner has not reached yet. One load runs at a time
//! per table and shard, and a store waits for it, so a replay never folds
//! an older record over a newer store.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet, HashMap},
    rc::Rc,
};

use bytes::Bytes;
use glommio::sync::Semaphore;
use shardline_log::{uncompressed_records, HeaderedRecord, Offset, Record};

use super::{mapping, MqttShard};
use crate::{error::EngineError, shard::Shard};

/// Bytes read from a table's log at once while loading it.
const LOAD_READ_BYTES_MAX: usize = 1 << 20;

/// An entry of a table kept in a compacted internal topic.
pub(crate) trait Entry: Clone + Send + 'static {
    /// The internal Kafka topic.
    const TOPIC: &'static str;
    /// Entries one shard keeps at most.
    const ENTRIES_MAX: usize;
    /// The table on a shard.
    fn table(mqtt: &MqttShard) -> &Table<Self>;
    /// The entry a record holds (`None`: a removal, or a record that holds
    /// no usable entry).
    fn decode(record: &Record<'_>) -> Option<Self>;
    /// The record value and headers that store this entry.
    fn encode(&self) -> (Bytes, Vec<(&'static str, Bytes)>);
}

/// One shard's part of a table: the entries whose partitions it owns.
pub(crate) struct Table<V> {
    entries: RefCell<HashMap<String, V>>,
    /// Partitions already folded into `entries`.
    loaded: RefCell<BTreeSet<i32>>,
    /// One load at a time (a store waits for it).
    loading: Semaphore,
}

impl<V> Default for Table<V> {
    fn default() -> Table<V> {
        Table {
            entries: RefCell::new(HashMap::new()),
            loaded: RefCell::new(BTreeSet::new()),
            loading: Semaphore::new(1),
        }
    }
}

impl<V: Entry> Table<V> {
    /// Keeps `value` under `key` (`None` removes it). Returns false when
    /// the table holds [`Entry::ENTRIES_MAX`] entries and `key` is new.
    pub(crate) fn keep(&self, key: String, value: Option<V>) -> bool {
        let mut entries = self.entries.borrow_mut();
        let Some(value) = value else {
            entries.remove(&key);
            return true;
        };
        if entries.len() >= V::ENTRIES_MAX && !entries.contains_key(&key) {
            return false;
        }
        entries.insert(key, value);
        assert!(entries.len() <= V::ENTRIES_MAX, "a compacted table is bounded");
        true
    }

    /// The entry under `key`, if the table holds one.
    pub(crate) fn get(&self, key: &str) -> Option<V> {
        self.entries.borrow().get(key).cloned()
    }

    /// Calls `visit` on every entry.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(&str, &V)) {
        for (key, value) in self.entries.borrow().iter() {
            visit(key, value);
        }
    }
}

/// The configs a table's topic is created with: compacted, so nothing
/// ages out and its replay stays bounded.
fn topic_configs() -> BTreeMap<String, String> {
    [("cleanup.policy", "compact")]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// Stores `value` (`None`: removes) under `key`, durably, on the owner of
/// its partition; returns whether the owner's table kept it (false: the
/// table is full and the key new; the record is stored all the same).
pub(crate) async fn store<V: Entry>(shard: &Rc<Shard>, key: String, value: Option<V>) -> Result<bool, EngineError> {
    let partitions = mapping::ensure_kafka_topic(shard, V::TOPIC, topic_configs()).await?;
    let index = mapping::partition_of(&key, partitions);
    let owner = shard.owner_of(V::TOPIC, index)?;
    let epoch = crate::kafka::epoch_of(shard);
    shard
        .invoke_on(owner, move |s: Rc<Shard>| async move {
            s.wait_for_epoch(epoch).await;
            load::<V>(&s, index).await?;
            let partition = super::served_partition(&s, V::TOPIC, index).await?;
            let (bytes, headers) = value.as_ref().map(Entry::encode).unwrap_or_default();
            let headers: Vec<(&str, &[u8])> = headers.iter().map(|(name, value)| (*name, &value[..])).collect();
            // A removal is a tombstone, which compaction removes in time.
            let record = HeaderedRecord {
                key: Some(key.as_bytes()),
                value: value.is_some().then_some(&bytes[..]),
                headers: &headers,
            };
            let batch = shardline_log::build_batch_with_headers(crate::kafka::unix_now_ms(), &[record]);
            partition
                .produce(Bytes::from(batch), -1, super::publish::APPEND_TIMEOUT)
                .await?;
            Ok(V::table(&s.mqtt).keep(key, value))
        })
        .await?
}

/// The entry under `key`, read on the owner of its partition (`None` when
/// the topic or the entry does not exist).
pub(crate) async fn get<V: Entry>(shard: &Rc<Shard>, key: &str) -> Result<Option<V>, EngineError> {
    let Some(partitions) = shard
        .image()
        .topics
        .get(V::TOPIC)
        .map(|topic| topic.partitions.len())
        .filter(|partitions| *partitions > 0)
    else {
        return Ok(None);
    };
    let index = mapping::partition_of(key, partitions);
    let owner = shard.owner_of(V::TOPIC, index)?;
    let epoch = crate::kafka::epoch_of(shard);
    let key = key.to_string();
    shard
        .invoke_on(owner, move |s: Rc<Shard>| async move {
            s.wait_for_epoch(epoch).await;
            load::<V>(&s, index).await?;
            Ok(V::table(&s.mqtt).get(&key))
        })
        .await?
}

/// On a shard: loads every partition of the table it owns (the rest are
/// other shards' part).
pub(crate) async fn load_owned<V: Entry>(shard: &Rc<Shard>) {
    let partitions = shard
        .image()
        .topics
        .get(V::TOPIC)
        .map_or(0, |topic| topic.partitions.len());
    for index in (0..partitions).filter_map(|index| i32::try_from(index).ok()) {
        if shard.owner_of(V::TOPIC, index).ok() != Some(shard.id) {
            continue;
        }
        if let Err(error) = load::<V>(shard, index).await {
            tracing::warn!(topic = V::TOPIC, partition = index, %error, "MQTT table not loaded");
        }
    }
}

/// On the partition's owner: folds partition `index` into this shard's
/// table, once (later changes come through [`store`]).
async fn load<V: Entry>(shard: &Rc<Shard>, index: i32) -> Result<(), EngineError> {
    let table = V::table(&shard.mqtt);
    if table.loaded.borrow().contains(&index) {
        return Ok(());
    }
    let _loading = table
        .loading
        .acquire_permit(1)
        .await
        .map_err(|_| EngineError::ShuttingDown)?;
    if table.loaded.borrow().contains(&index) {
        return Ok(());
    }
    let partition = super::served_partition(shard, V::TOPIC, index).await?;
    let end = partition.high_watermark();
    let mut offset = partition.log.log_start();
    let mut applied = 0u64;
    let mut refused = 0u64;
    while offset < end {
        let read = partition.read(offset, LOAD_READ_BYTES_MAX, end)?;
        if read.next_offset <= offset {
            break;
        }
        for chunk in &read.chunks {
            fold(table, chunk, offset, &mut applied, &mut refused);
        }
        offset = read.next_offset;
        glommio::yield_if_needed().await;
    }
    table.loaded.borrow_mut().insert(index);
    tracing::info!(
        topic = V::TOPIC,
        partition = index,
        records = applied,
        "MQTT table loaded"
    );
    if refused > 0 {
        tracing::warn!(
            topic = V::TOPIC,
            partition = index,
            entries = refused,
            "MQTT table full: entries stored but not kept"
        );
    }
    Ok(())
}

/// Applies the records of `chunk` at or after `from`, in order.
fn fold<V: Entry>(table: &Table<V>, chunk: &Bytes, from: Offset, applied: &mut u64, refused: &mut u64) {
    for (header, batch) in mapping::whole_batches(chunk) {
        let Some(records) = uncompressed_records(&batch, &header).filter(|_| !header.is_control()) else {
            continue;
        };
        for record in records.flatten() {
            let offset = Offset(header.base_offset.0 + i64::from(record.offset_delta));
            let Some(key) = record.key.and_then(|key| std::str::from_utf8(key).ok()) else {
                continue;
            };
            if offset < from {
                continue;
            }
            if !table.keep(key.to_string(), V::decode(&record)) {
                *refused += 1;
            }
            *applied += 1;
        }
    }
}
