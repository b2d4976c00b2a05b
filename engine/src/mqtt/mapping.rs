//! One log for both protocols: how an MQTT message becomes a Kafka record
//! and back (docs/mqtt.md, "Topic mapping").
//!
//! ```text
//!  MQTT PUBLISH topic T, payload P, QoS q
//!    ──► Kafka topic `--mqtt-kafka-topic` (default "mqtt"),
//!        partition crc32c(T) mod partitions   (one MQTT topic, one partition: its order holds)
//!        record: key T, value P, headers mqtt.topic = T, mqtt.qos = q ("0", "1" or "2"),
//!        and mqtt.retain = "1" when published retained
//!  Kafka record on that topic with header mqtt.topic = T (or, without it, a
//!  UTF-8 key that is a valid topic name) ──► MQTT subscribers of filters matching T,
//!        at QoS min(mqtt.qos or 1, granted) (granted is at most 1)
//! ```
//!
//! Pure functions plus [`ensure_topic`], which asks the metadata group (on
//! any shard) to create the Kafka topic the first time MQTT needs it.

use std::rc::Rc;

use bytes::Bytes;
use shardline_log::{uncompressed_records, BatchHeader, Offset};
use shardline_net::mqtt::{valid_topic_name, QoS};
use shardline_raft::MetaError;

use crate::{error::EngineError, shard::Shard};

/// The record header holding the MQTT topic.
pub(crate) const TOPIC_HEADER: &str = "mqtt.topic";
/// The record header holding the QoS the message was published at.
pub(crate) const QOS_HEADER: &str = "mqtt.qos";
/// The record header present (value "1") on a message published retained.
pub(crate) const RETAIN_HEADER: &str = "mqtt.retain";

/// The partition of the mapped Kafka topic that holds MQTT topic `topic`.
///
/// # Panics
/// If `partitions` is 0 (a topic has at least one).
pub(crate) fn partition_of(topic: &str, partitions: usize) -> i32 {
    assert!(partitions > 0, "a topic has partitions");
    let hash = usize::try_from(crc32c::crc32c(topic.as_bytes())).unwrap_or(0);
    i32::try_from(hash % partitions).unwrap_or(0)
}

/// The record batch storing one MQTT message.
pub(crate) fn batch_of(topic: &str, payload: &[u8], qos: QoS, retain: bool, timestamp_ms: i64) -> Bytes {
    let qos: &[u8] = match qos {
        QoS::AtMostOnce => b"0",
        QoS::AtLeastOnce => b"1",
        QoS::ExactlyOnce => b"2",
    };
    let mut headers: Vec<(&str, &[u8])> = vec![(TOPIC_HEADER, topic.as_bytes()), (QOS_HEADER, qos)];
    if retain {
        headers.push((RETAIN_HEADER, b"1"));
    }
    let batch = shardline_log::build_batch_with_headers(timestamp_ms, Some(topic.as_bytes()), payload, &headers);
    Bytes::from(batch)
}

/// One message read back from the log.
#[derive(Debug)]
pub(crate) struct Message {
    /// The MQTT topic.
    pub(crate) topic: Rc<str>,
    /// The payload, a slice of the read chunk (no copy).
    pub(crate) payload: Bytes,
    /// The QoS it was published at (1 for records without the header).
    pub(crate) qos: QoS,
}

/// What walking a read chunk found besides messages.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// Records with no MQTT topic (no header, no usable key).
    pub(crate) untopical: u64,
    /// Compressed batches (the broker does not decompress).
    pub(crate) compressed: u64,
}

/// The messages at or after `from` in `chunk` (whole batches, as the log
/// reads them), in order; returns the offset after the last batch walked.
pub(crate) fn messages(chunk: &Bytes, from: Offset, out: &mut Vec<Message>, skipped: &mut Skipped) -> Offset {
    let mut next = from;
    let mut rest = chunk.clone();
    while let Some(header) = BatchHeader::parse(&rest) {
        let total = header.total_bytes();
        if total > rest.len() || total == 0 {
            break;
        }
        let batch = rest.split_to(total);
        next = next.max(header.next_offset());
        if header.is_control() {
            continue;
        }
        let Some(records) = uncompressed_records(&batch, &header) else {
            skipped.compressed += 1;
            continue;
        };
        for record in records.flatten() {
            let offset = Offset(header.base_offset.0 + i64::from(record.offset_delta));
            if offset < from {
                continue;
            }
            let topic = record
                .headers
                .get(TOPIC_HEADER.as_bytes())
                .flatten()
                .or(record.key)
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
                .filter(|topic| valid_topic_name(topic));
            let Some(topic) = topic else {
                skipped.untopical += 1;
                continue;
            };
            let qos = match record.headers.get(QOS_HEADER.as_bytes()).flatten() {
                Some(b"0") => QoS::AtMostOnce,
                _ => QoS::AtLeastOnce,
            };
            let payload = record.value.map_or_else(Bytes::new, |value| batch.slice_ref(value));
            out.push(Message {
                topic: Rc::from(topic),
                payload,
                qos,
            });
        }
    }
    next
}

/// The number of partitions of the mapped Kafka topic, creating it (with
/// the broker's default partitions and replication) if it does not exist.
pub(crate) async fn ensure_topic(shard: &Rc<Shard>) -> Result<usize, EngineError> {
    let name = shard.config.mqtt_kafka_topic.clone();
    if let Some(topic) = shard.image().topics.get(&name) {
        return Ok(topic.partitions.len());
    }
    let topic = shard.default_topic(&name);
    match shard.meta.create_topic(topic).await {
        Ok(_) => tracing::info!(topic = %name, "created the Kafka topic of MQTT messages"),
        Err(MetaError::TopicExists(_)) => {}
        Err(e) => return Err(EngineError::Meta(e)),
    }
    crate::kafka::wait_all_shards(shard, shard.meta.image().epoch).await;
    shard
        .image()
        .topics
        .get(&name)
        .map(|topic| topic.partitions.len())
        .filter(|partitions| *partitions > 0)
        .ok_or(EngineError::UnknownTopicOrPartition)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]
    use super::*;

    #[test]
    fn a_message_survives_the_log_format() {
        let batch = batch_of("a/b", b"payload", QoS::AtMostOnce, true, 1);
        let mut out = Vec::new();
        let mut skipped = Skipped::default();
        let next = messages(&batch, Offset(0), &mut out, &mut skipped);
        assert_eq!(next, Offset(1));
        assert_eq!(out.len(), 1);
        assert_eq!(&*out[0].topic, "a/b");
        assert_eq!(out[0].payload.as_ref(), b"payload");
        assert_eq!(out[0].qos, QoS::AtMostOnce);
        assert_eq!(skipped, Skipped::default());
    }

    #[test]
    fn records_before_from_and_without_a_topic_are_skipped() {
        let mut chunk = batch_of("x", b"1", QoS::AtLeastOnce, false, 1).to_vec();
        let mut second = shardline_log::build_batch_from_values(1, &[b"no topic"]);
        shardline_log::set_base_offset(&mut second, Offset(1));
        chunk.extend_from_slice(&second);
        let chunk = Bytes::from(chunk);
        let mut out = Vec::new();
        let mut skipped = Skipped::default();
        assert_eq!(messages(&chunk, Offset(1), &mut out, &mut skipped), Offset(2));
        assert!(out.is_empty());
        assert_eq!(skipped.untopical, 1);
    }

    #[test]
    fn one_topic_one_partition() {
        for topic in ["a", "a/b", "sensors/kitchen/temp"] {
            let p = partition_of(topic, 3);
            assert!((0..3).contains(&p));
            assert_eq!(p, partition_of(topic, 3));
        }
        assert_eq!(partition_of("anything", 1), 0);
    }
}
