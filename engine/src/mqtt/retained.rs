//! Durable retained messages: the retained message of each MQTT topic is
//! a record of the internal Kafka topic [`RETAINED_KAFKA_TOPIC`], so it
//! survives a restart.
//!
//! ```text
//!  record in __mqtt_retained, partition crc32c(T) mod partitions:
//!     key = MQTT topic T, value = payload (null: T's retained message is cleared),
//!     header mqtt.qos = "0" | "1" | "2"
//!  owner of that partition: table T -> (payload, QoS) in MqttShard::retained,
//!     rebuilt from the partition's log the first time the shard needs it
//! ```
//!
//! A retained PUBLISH is appended to the mapped topic first (what
//! subscribers and Kafka consumers read), then here (what a later
//! subscriber gets), each durable under the topic's policy, and only then
//! acknowledged; the owner updates its table after the append. A crash
//! between the two appends leaves the previous retained message in place
//! and the client, unacknowledged, publishes again. The topic is created
//! compacted (`cleanup.policy=compact`): a retained message does not age
//! out, and the replay at load reads about one record per retained topic
//! plus what the cleaner has not reached yet.

use std::rc::Rc;

use bytes::Bytes;
use shardline_log::{uncompressed_records, HeaderedRecord, Offset};
use shardline_net::mqtt::QoS;

use super::mapping::{self, QOS_HEADER};
use crate::{error::EngineError, shard::Shard};

/// The internal Kafka topic of retained messages.
pub(crate) const RETAINED_KAFKA_TOPIC: &str = "__mqtt_retained";

/// Bytes read from the retained topic's log at once while loading.
const LOAD_READ_BYTES_MAX: usize = 1 << 20;

/// The configs the retained topic is created with: compacted (the last
/// record per MQTT topic stays, a cleared one goes after
/// delete.retention.ms), so nothing ages out and its replay stays bounded.
fn topic_configs() -> std::collections::BTreeMap<String, String> {
    [("cleanup.policy", "compact")]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// Stores `payload` (empty: none) as the retained message of `topic`,
/// durably, on the owner of its partition of the retained topic.
pub(crate) async fn store(shard: &Rc<Shard>, topic: &str, payload: &Bytes, qos: QoS) -> Result<(), EngineError> {
    let partitions = mapping::ensure_kafka_topic(shard, RETAINED_KAFKA_TOPIC, topic_configs()).await?;
    let index = mapping::partition_of(topic, partitions);
    let owner = shard.owner_of(RETAINED_KAFKA_TOPIC, index)?;
    let epoch = crate::kafka::epoch_of(shard);
    let (topic, payload) = (topic.to_string(), payload.clone());
    shard
        .invoke_on(owner, move |s: Rc<Shard>| async move {
            s.wait_for_epoch(epoch).await;
            load(&s, index).await?;
            let partition = super::served_partition(&s, RETAINED_KAFKA_TOPIC, index).await?;
            let headers: [(&str, &[u8]); 1] = [(QOS_HEADER, mapping::qos_header(qos))];
            // An empty payload clears: a tombstone, which compaction removes.
            let record = HeaderedRecord {
                key: Some(topic.as_bytes()),
                value: (!payload.is_empty()).then_some(&payload[..]),
                headers: &headers,
            };
            let batch = shardline_log::build_batch_with_headers(crate::kafka::unix_now_ms(), &[record]);
            partition
                .produce(Bytes::from(batch), -1, super::publish::APPEND_TIMEOUT)
                .await?;
            if !s.mqtt.keep_retained(topic, payload, qos) {
                tracing::warn!("retained message stored but not kept: the shard keeps its maximum of retained topics");
            }
            Ok(())
        })
        .await?
}

/// On a shard: the retained messages it keeps matching any of `filters`,
/// after loading the retained-topic partitions it owns.
pub(crate) async fn matching(shard: &Rc<Shard>, filters: &[(String, QoS)]) -> Vec<(String, Bytes, QoS)> {
    let partitions = shard
        .image()
        .topics
        .get(RETAINED_KAFKA_TOPIC)
        .map_or(0, |topic| topic.partitions.len());
    for index in (0..partitions).filter_map(|index| i32::try_from(index).ok()) {
        if shard.owner_of(RETAINED_KAFKA_TOPIC, index).ok() != Some(shard.id) {
            continue;
        }
        if let Err(error) = load(shard, index).await {
            tracing::warn!(partition = index, %error, "retained messages not loaded");
        }
    }
    shard.mqtt.retained_matching(filters)
}

/// On the partition's owner: folds partition `index` of the retained topic
/// into this shard's table, once (later changes come through [`store`]).
async fn load(shard: &Rc<Shard>, index: i32) -> Result<(), EngineError> {
    if shard.mqtt.retained_loaded.borrow().contains(&index) {
        return Ok(());
    }
    // One load at a time: a store never runs beside a load that could fold
    // an older record over its newer one.
    let _loading = shard
        .mqtt
        .retained_loading
        .acquire_permit(1)
        .await
        .map_err(|_| EngineError::ShuttingDown)?;
    if shard.mqtt.retained_loaded.borrow().contains(&index) {
        return Ok(());
    }
    let partition = super::served_partition(shard, RETAINED_KAFKA_TOPIC, index).await?;
    let end = partition.high_watermark();
    let mut offset = partition.log.log_start();
    let mut kept = 0u64;
    while offset < end {
        let read = partition.read(offset, LOAD_READ_BYTES_MAX, end)?;
        if read.next_offset <= offset {
            break;
        }
        for chunk in &read.chunks {
            kept += fold(shard, chunk, offset);
        }
        offset = read.next_offset;
        glommio::yield_if_needed().await;
    }
    shard.mqtt.retained_loaded.borrow_mut().insert(index);
    tracing::info!(partition = index, records = kept, "MQTT retained messages loaded");
    Ok(())
}

/// Applies the retained-message records of `chunk` at or after `from`, in
/// order; returns how many it applied.
fn fold(shard: &Shard, chunk: &Bytes, from: Offset) -> u64 {
    let mut applied = 0;
    for (header, batch) in mapping::whole_batches(chunk) {
        let Some(records) = uncompressed_records(&batch, &header).filter(|_| !header.is_control()) else {
            continue;
        };
        for record in records.flatten() {
            let offset = Offset(header.base_offset.0 + i64::from(record.offset_delta));
            let Some(topic) = record.key.and_then(|key| std::str::from_utf8(key).ok()) else {
                continue;
            };
            if offset < from {
                continue;
            }
            let qos = mapping::qos_of_header(record.headers.get(QOS_HEADER.as_bytes()).flatten());
            let payload = Bytes::copy_from_slice(record.value.unwrap_or_default());
            shard.mqtt.keep_retained(topic.to_string(), payload, qos);
            applied += 1;
        }
    }
    applied
}
