//! Tables MQTT keeps durably in compacted internal Kafka topics: the
//! retained messages (`__mqtt_retained`, `retained.rs`), the persistent
//! sessions (`__mqtt_sessions`, `sessions.rs`) and the nodes with members
//! of each share (`__mqtt_shares`, `membership.rs`). All work the same way:
//!
//! ```text
//!  record in the table's topic, partition crc32c(K) mod partitions:
//!     key = K (an MQTT topic, a client id), value = the entry (null: K removed),
//!     headers as the entry needs
//!  home of partition p on every node: shard p mod shards, whoever leads p and
//!     wherever; its part of the table K -> entry in its MqttShard, folded from
//!     the log up to the high watermark, and caught up before every use
//! ```
//!
//! A change is appended where the partition is led (this node by message,
//! another node as a Kafka produce, `remote.rs`), durable under the topic's
//! fsync policy and on every in-sync replica, before the home's part takes
//! it and before the caller hears it was stored. Every node folds the same
//! log, so a session saved through one node is found through any other,
//! and a leader change loses nothing a part folded (it reads only below the
//! high watermark). The home's part remembers how far it has folded and,
//! before every read or store, folds what the log holds past it (one read
//! that finds nothing when nothing changed): changes made through other
//! nodes reach it there. The topic is created compacted
//! (`cleanup.policy=compact`): an entry never ages out, and the first
//! catch-up reads about one record per key plus what the cleaner has not
//! reached yet. One catch-up runs at a time per table and shard, and a store
//! waits for it.
//!
//! A part that has folded a key whose tombstone the cleaner then removes
//! (after `delete.retention.ms`, a day by default) without a catch-up in
//! between keeps that key: a home shard catches up at least whenever the
//! table is used, so only a table unused for that long can.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet, HashMap},
    rc::Rc,
    time::Duration,
};

use bytes::Bytes;
use glommio::sync::Semaphore;
use shardline_log::{uncompressed_records, HeaderedRecord, Offset, Record};

use super::{
    feed::{self, Read},
    mapping,
    stored::Claim,
    MqttShard,
};
use crate::{
    error::EngineError,
    remote::{self, Lender, Place},
    shard::Shard,
};

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
    /// Whether this entry may replace `stored`, the one the table holds
    /// under its key (by default, always).
    fn supersedes(&self, _stored: &Self) -> bool {
        true
    }
    /// Whether every node of a cluster follows the table's changes as they
    /// are made (a tail on each partition it has used: [`follow`]), not
    /// only before each use.
    const FOLLOWED: bool = false;
    /// The claim of the connection that wrote `record` (`value`: the entry
    /// it holds, `None` for a removal), for tables whose entries one
    /// connection holds at a time.
    fn claim(_record: &Record<'_>, _value: Option<&Self>) -> Option<Claim> {
        None
    }
    /// After a catch-up (not a part's first load): the keys whose records
    /// folded were written under claims of other nodes, in log order.
    fn claimed_elsewhere(_shard: &Rc<Shard>, _claims: Vec<(String, Claim)>) {}
    /// The part of `key` that chooses its partition (by default, all of
    /// it): keys with the same part are kept together, on one shard.
    fn partition_key(key: &str) -> &str {
        key
    }
}

/// What a store did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    /// Stored, and kept by the home shard's part.
    Kept,
    /// Stored, but not kept: the part holds [`Entry::ENTRIES_MAX`] entries
    /// and the key is new.
    NotKept,
    /// Not stored: the entry under the key does not let this one replace it
    /// ([`Entry::supersedes`]).
    Refused,
}

/// One shard's part of a table: the entries whose partitions it owns.
pub(crate) struct Table<V> {
    entries: RefCell<HashMap<String, V>>,
    /// Per partition homed on this shard: the offset before which its log
    /// is folded into `entries`.
    folded: RefCell<BTreeMap<i32, Offset>>,
    /// One catch-up at a time (a store waits for it).
    loading: Semaphore,
    /// Partitions homed here whose changes a tail follows ([`follow`]).
    followed: RefCell<BTreeSet<i32>>,
}

impl<V> Default for Table<V> {
    fn default() -> Table<V> {
        Table {
            entries: RefCell::new(HashMap::new()),
            folded: RefCell::new(BTreeMap::new()),
            loading: Semaphore::new(1),
            followed: RefCell::new(BTreeSet::new()),
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

/// The shard of this node that keeps partition `index`'s part of a table,
/// whoever leads the partition and wherever.
pub(crate) fn home_of(index: i32, shards: usize) -> usize {
    assert!(shards > 0, "at least one shard");
    usize::try_from(index).unwrap_or(0) % shards
}

/// Stores `value` (`None`: removes) under `key`, durably, where its
/// partition is led, unless the entry stored under `key` refuses it
/// ([`Entry::supersedes`], judged once the home shard's part has caught up
/// with the log; two stores through two nodes at the same moment are
/// judged each against what its node had folded, and the log's order
/// settles them).
pub(crate) async fn store<V: Entry>(shard: &Rc<Shard>, key: String, value: Option<V>) -> Result<Stored, EngineError> {
    store_with_headers(shard, key, value, Vec::new()).await
}

/// Removes the entry under `key` as [`store`] does, with `headers` on the
/// tombstone (what [`Entry::claim`] reads from a removal).
pub(crate) async fn remove_with_headers<V: Entry>(
    shard: &Rc<Shard>,
    key: String,
    headers: Vec<(&'static str, Bytes)>,
) -> Result<Stored, EngineError> {
    store_with_headers::<V>(shard, key, None, headers).await
}

/// [`store`]; a removal's tombstone carries `removal_headers`.
async fn store_with_headers<V: Entry>(
    shard: &Rc<Shard>,
    key: String,
    value: Option<V>,
    removal_headers: Vec<(&'static str, Bytes)>,
) -> Result<Stored, EngineError> {
    assert!(
        value.is_none() || removal_headers.is_empty(),
        "only a removal takes headers of its own"
    );
    let partitions = mapping::ensure_kafka_topic(shard, V::TOPIC, topic_configs()).await?;
    let index = mapping::partition_of(V::partition_key(&key), partitions);
    let home = home_of(index, shard.shard_count);
    let epoch = crate::kafka::epoch_of(shard);
    shard
        .invoke_on(home, move |s: Rc<Shard>| async move {
            s.wait_for_epoch(epoch).await;
            catch_up::<V>(&s, index).await?;
            follow::<V>(&s, index);
            let table = V::table(&s.mqtt);
            if let (Some(new), Some(stored)) = (&value, table.get(&key)) {
                if !new.supersedes(&stored) {
                    return Ok(Stored::Refused);
                }
            }
            let (bytes, headers) = value.as_ref().map_or((Bytes::new(), removal_headers), Entry::encode);
            let headers: Vec<(&str, &[u8])> = headers.iter().map(|(name, value)| (*name, &value[..])).collect();
            // A removal is a tombstone, which compaction removes in time.
            let record = HeaderedRecord {
                key: Some(key.as_bytes()),
                value: value.is_some().then_some(&bytes[..]),
                headers: &headers,
            };
            let batch = Bytes::from(shardline_log::build_batch_with_headers(
                crate::kafka::unix_now_ms(),
                &[record],
            ));
            append(&s, V::TOPIC, index, batch).await?;
            // Kept now, and folded again in its place in the log at the
            // next catch-up: a store racing another writer's settles there.
            Ok(if V::table(&s.mqtt).keep(key, value) {
                Stored::Kept
            } else {
                Stored::NotKept
            })
        })
        .await?
}

/// Appends `batch` to partition `index` of `topic` where it is led, acks=all.
async fn append(shard: &Rc<Shard>, topic: &'static str, index: i32, batch: Bytes) -> Result<(), EngineError> {
    match remote::place_of(shard, topic, index)? {
        Place::Local(owner) => {
            shard
                .invoke_on(owner, move |s: Rc<Shard>| async move {
                    let partition = super::served_partition(&s, topic, index).await?;
                    partition.produce(batch, -1, super::publish::APPEND_TIMEOUT).await?;
                    Ok(())
                })
                .await?
        }
        Place::Remote(leader) => {
            remote::produce(shard, &leader, topic, index, batch, super::publish::APPEND_TIMEOUT).await
        }
    }
}

/// The entry under `key`, read on its partition's home shard once the part
/// there has caught up with the log (`None` when the topic or the entry
/// does not exist).
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
    let index = mapping::partition_of(V::partition_key(key), partitions);
    let home = home_of(index, shard.shard_count);
    let epoch = crate::kafka::epoch_of(shard);
    let key = key.to_string();
    shard
        .invoke_on(home, move |s: Rc<Shard>| async move {
            s.wait_for_epoch(epoch).await;
            catch_up::<V>(&s, index).await?;
            follow::<V>(&s, index);
            Ok(V::table(&s.mqtt).get(&key))
        })
        .await?
}

/// On a shard: catches up every partition of the table homed here (the
/// rest are other shards' part).
pub(crate) async fn catch_up_homed<V: Entry>(shard: &Rc<Shard>) {
    let partitions = shard
        .image()
        .topics
        .get(V::TOPIC)
        .map_or(0, |topic| topic.partitions.len());
    for index in (0..partitions).filter_map(|index| i32::try_from(index).ok()) {
        if home_of(index, shard.shard_count) != shard.id {
            continue;
        }
        if let Err(error) = catch_up::<V>(shard, index).await {
            tracing::warn!(topic = V::TOPIC, partition = index, %error, "MQTT table not caught up");
        }
    }
}

/// On the partition's home shard: folds what partition `index`'s log holds
/// past the part's last catch-up, up to the high watermark, wherever the
/// partition is led (the first catch-up reads it from the start). Changes
/// come through the log alone, so whoever wrote them — this node, another
/// node, a leader since replaced — the part ends as the log says.
pub(crate) async fn catch_up<V: Entry>(shard: &Rc<Shard>, index: i32) -> Result<(), EngineError> {
    catch_up_from::<V>(shard, index, None).await
}

/// [`catch_up`], starting with `prefetched` (a read asked at the offset
/// given with it) instead of reading again, if the part has not moved
/// since that read was asked.
async fn catch_up_from<V: Entry>(
    shard: &Rc<Shard>,
    index: i32,
    mut prefetched: Option<(Offset, Read)>,
) -> Result<(), EngineError> {
    assert_eq!(
        home_of(index, shard.shard_count),
        shard.id,
        "a part is caught up at home"
    );
    let table = V::table(&shard.mqtt);
    let _loading = table
        .loading
        .acquire_permit(1)
        .await
        .map_err(|_| EngineError::ShuttingDown)?;
    let first = !table.folded.borrow().contains_key(&index);
    let mut offset = table.folded.borrow().get(&index).copied().unwrap_or(Offset(0));
    let mut folded = Folded::default();
    loop {
        let read = match prefetched.take() {
            Some((asked, read)) if asked == offset => read,
            _ => read_table(shard, V::TOPIC, index, offset).await?,
        };
        let next = read
            .chunks
            .iter()
            .map(|chunk| fold(table, chunk, read.from, shard.node_id(), &mut folded))
            .max()
            .unwrap_or(read.from);
        if next <= offset {
            break;
        }
        assert!(next > offset, "a catch-up only moves forward");
        offset = next;
        table.folded.borrow_mut().insert(index, offset);
        glommio::yield_if_needed().await;
    }
    table.folded.borrow_mut().insert(index, offset);
    if first {
        tracing::info!(
            topic = V::TOPIC,
            partition = index,
            records = folded.applied,
            "MQTT table loaded"
        );
    } else if !folded.claims.is_empty() {
        // A part's first load finds no connection that claimed before it:
        // a claim is numbered from what the load found.
        V::claimed_elsewhere(shard, folded.claims);
    }
    if folded.refused > 0 {
        tracing::warn!(
            topic = V::TOPIC,
            partition = index,
            entries = folded.refused,
            "MQTT table full: entries stored but not kept"
        );
    }
    Ok(())
}

/// On partition `index`'s home shard, in a cluster, for a followed table
/// ([`Entry::FOLLOWED`]): starts the tail that folds the partition's
/// changes as other nodes make them, unless it runs. The tail parks a read
/// past what the part has folded (on the owner shard, or as a Fetch on the
/// leader of another node) and folds what it returns (then whatever came
/// since), so a change made through another node reaches this node within
/// one Fetch round trip. It runs until the broker stops.
fn follow<V: Entry>(shard: &Rc<Shard>, index: i32) {
    if !V::FOLLOWED || shard.config.peers.is_none() {
        return;
    }
    assert_eq!(
        home_of(index, shard.shard_count),
        shard.id,
        "a part is followed at home"
    );
    if !V::table(&shard.mqtt).followed.borrow_mut().insert(index) {
        return;
    }
    let shard = Rc::clone(shard);
    glommio::spawn_local(async move {
        let mut held = remote::Held::default();
        while !shard.is_shutting_down() {
            let offset = V::table(&shard.mqtt)
                .folded
                .borrow()
                .get(&index)
                .copied()
                .unwrap_or(Offset(0));
            let news = match feed::read_parked(&shard, &mut held, V::TOPIC, index, offset).await {
                Ok(read) => (!read.chunks.is_empty()).then_some(read),
                Err(error) => {
                    tracing::debug!(topic = V::TOPIC, partition = index, %error, "MQTT table tail read failed");
                    glommio::timer::sleep(feed::FEED_RETRY_INTERVAL).await;
                    None
                }
            };
            if let Some(read) = news {
                // Folded as read, unless a catch-up moved the part meanwhile.
                if let Err(error) = catch_up_from::<V>(&shard, index, Some((offset, read))).await {
                    tracing::debug!(topic = V::TOPIC, partition = index, %error, "MQTT table tail caught up nothing");
                    glommio::timer::sleep(feed::FEED_RETRY_INTERVAL).await;
                }
            }
        }
    })
    .detach();
}

/// Whole batches of a table's partition from `offset` (or its log start)
/// up to the high watermark where it is led (`feed::read_from`, or
/// `feed::read_on_leader` on another node), waiting a moment for a
/// partition just created to be served here.
async fn read_table(shard: &Rc<Shard>, topic: &'static str, index: i32, offset: Offset) -> Result<Read, EngineError> {
    match remote::place_of(shard, topic, index)? {
        Place::Local(owner) => {
            shard
                .invoke_on(owner, move |s: Rc<Shard>| async move {
                    feed::read_from(&*super::served_partition(&s, topic, index).await?, offset)
                })
                .await?
        }
        Place::Remote(leader) => {
            feed::read_on_leader(shard, &mut Lender::Pool, &leader, topic, index, offset, Duration::ZERO).await
        }
    }
}

/// What one catch-up folded.
#[derive(Default)]
struct Folded {
    /// Records applied.
    applied: u64,
    /// New keys the full part did not keep.
    refused: u64,
    /// Keys whose records other nodes' claims wrote ([`Entry::claim`]), in
    /// log order, at most [`CLAIMS_NOTED_MAX`].
    claims: Vec<(String, Claim)>,
}

/// Claims of other nodes one catch-up passes on at most: a catch-up that
/// folds more (a part far behind) passes on the first ones.
const CLAIMS_NOTED_MAX: usize = 10_000;

/// Applies the records of `chunk` at or after `from`, in order, noting the
/// claims of nodes other than `node_id`; returns the offset after its last
/// whole batch (`from` when it holds none).
fn fold<V: Entry>(table: &Table<V>, chunk: &Bytes, from: Offset, node_id: i32, folded: &mut Folded) -> Offset {
    let mut next = from;
    for (header, batch) in mapping::whole_batches(chunk) {
        next = next.max(header.next_offset());
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
            let value = V::decode(&record);
            if let Some(claim) = V::claim(&record, value.as_ref()).filter(|claim| claim.node_id != node_id) {
                if folded.claims.len() < CLAIMS_NOTED_MAX {
                    folded.claims.push((key.to_string(), claim));
                }
            }
            if !table.keep(key.to_string(), value) {
                folded.refused += 1;
            }
            folded.applied += 1;
        }
    }
    next
}

/// For tests: what [`Entry::decode`] makes of a record with `key`, `value`
/// and `headers`, read back from a batch built as a store builds it.
#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
pub(crate) fn decode_record<V: Entry>(key: &str, value: Option<&[u8]>, headers: &[(&str, &[u8])]) -> Option<V> {
    let record = HeaderedRecord {
        key: Some(key.as_bytes()),
        value,
        headers,
    };
    let batch = shardline_log::build_batch_with_headers(1, &[record]);
    let header = shardline_log::BatchHeader::parse(&batch).unwrap();
    let record = uncompressed_records(&batch, &header).unwrap().next().unwrap().unwrap();
    V::decode(&record)
}
