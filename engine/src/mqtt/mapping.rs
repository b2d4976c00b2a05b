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
//!        at QoS min(mqtt.qos or 1, granted)
//! ```
//!
//! Pure functions plus [`ensure_topic`], which asks the metadata group (on
//! any shard) to create the Kafka topic the first time MQTT needs it.

use std::{collections::BTreeMap, rc::Rc};

use bytes::Bytes;
use shardline_log::{uncompressed_records, BatchHeader, HeaderedRecord, Offset};
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

/// One MQTT message on its way into the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Publication {
    /// The MQTT topic.
    pub(crate) topic: String,
    /// The payload.
    pub(crate) payload: Bytes,
    /// The QoS it was published at.
    pub(crate) qos: QoS,
    /// Its RETAIN flag.
    pub(crate) retain: bool,
}

/// Bytes a record of [`batch_of`] takes beyond its topic (twice: key and
/// header) and payload, at most: the varints, the three header names and
/// their values.
const RECORD_OVERHEAD_BYTES_MAX: usize = 64;

impl Publication {
    /// The most bytes this message adds to a batch of [`batch_of`].
    pub(crate) fn record_bytes_max(&self) -> usize {
        2 * self.topic.len() + self.payload.len() + RECORD_OVERHEAD_BYTES_MAX
    }
}

/// The record batch storing `messages`, one record each, in order.
///
/// # Panics
/// If `messages` is empty (the caller appends at least one).
pub(crate) fn batch_of(messages: &[Publication], timestamp_ms: i64) -> Bytes {
    let headers: Vec<[(&str, &[u8]); 3]> = messages
        .iter()
        .map(|message| {
            [
                (TOPIC_HEADER, message.topic.as_bytes()),
                (QOS_HEADER, qos_header(message.qos)),
                (RETAIN_HEADER, b"1"),
            ]
        })
        .collect();
    let records: Vec<HeaderedRecord<'_>> = messages
        .iter()
        .zip(&headers)
        .map(|(message, headers)| HeaderedRecord {
            key: Some(message.topic.as_bytes()),
            value: Some(&message.payload),
            // The retain header only on a retained message.
            headers: headers.get(..if message.retain { 3 } else { 2 }).unwrap_or_default(),
        })
        .collect();
    let batch = shardline_log::build_batch_with_headers(timestamp_ms, &records);
    assert!(
        batch.len()
            <= shardline_log::BATCH_HEADER_BYTES + messages.iter().map(Publication::record_bytes_max).sum::<usize>(),
        "a batch is within the bound appends are split by"
    );
    Bytes::from(batch)
}

/// `messages` cut into consecutive runs whose batches stay within
/// `batch_bytes_max` (a topic's max.message.bytes), so that gathering
/// messages never makes one too large; a message too large alone is a run
/// of its own (and refused as such).
pub(crate) fn runs(messages: &[Publication], batch_bytes_max: usize) -> Vec<&[Publication]> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut bytes = shardline_log::BATCH_HEADER_BYTES;
    for (at, message) in messages.iter().enumerate() {
        let more = message.record_bytes_max();
        if at > start && bytes + more > batch_bytes_max {
            runs.push(messages.get(start..at).unwrap_or_default());
            start = at;
            bytes = shardline_log::BATCH_HEADER_BYTES;
        }
        bytes += more;
    }
    if start < messages.len() {
        runs.push(messages.get(start..).unwrap_or_default());
    }
    assert_eq!(
        runs.iter().map(|run| run.len()).sum::<usize>(),
        messages.len(),
        "runs cover every message"
    );
    runs
}

/// The value of the [`QOS_HEADER`] for `qos`.
pub(crate) fn qos_header(qos: QoS) -> &'static [u8] {
    match qos {
        QoS::AtMostOnce => b"0",
        QoS::AtLeastOnce => b"1",
        QoS::ExactlyOnce => b"2",
    }
}

/// The QoS a [`QOS_HEADER`] value names (1 without one, as for a record a
/// Kafka client produced).
pub(crate) fn qos_of_header(value: Option<&[u8]>) -> QoS {
    match value {
        Some(b"0") => QoS::AtMostOnce,
        Some(b"2") => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

/// One message read back from the log.
#[derive(Debug)]
pub(crate) struct Message {
    /// Its offset in its partition.
    pub(crate) offset: Offset,
    /// The MQTT topic.
    pub(crate) topic: Rc<str>,
    /// The payload, a slice of the read chunk (no copy).
    pub(crate) payload: Bytes,
    /// The QoS it was published at (1 for records without the header).
    pub(crate) qos: QoS,
    /// Whether it was published retained.
    pub(crate) retain: bool,
}

/// What walking a read chunk found besides messages.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// Records with no MQTT topic (no header, no usable key).
    pub(crate) untopical: u64,
    /// Compressed batches (the broker does not decompress).
    pub(crate) compressed: u64,
}

/// The whole batches of a read chunk, in order, each with its header (a
/// chunk holds whole batches; anything after the last whole one is left).
pub(crate) fn whole_batches(chunk: &Bytes) -> impl Iterator<Item = (BatchHeader, Bytes)> {
    let mut rest = chunk.clone();
    std::iter::from_fn(move || {
        let header = BatchHeader::parse(&rest)?;
        let total = header.total_bytes();
        if total > rest.len() || total == 0 {
            return None;
        }
        Some((header, rest.split_to(total)))
    })
}

/// The messages at or after `from` in `chunk` (whole batches, as the log
/// reads them), in order; returns the offset after the last batch walked.
pub(crate) fn messages(chunk: &Bytes, from: Offset, out: &mut Vec<Message>, skipped: &mut Skipped) -> Offset {
    let mut next = from;
    for (header, batch) in whole_batches(chunk) {
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
            let qos = qos_of_header(record.headers.get(QOS_HEADER.as_bytes()).flatten());
            let retain = record.headers.get(RETAIN_HEADER.as_bytes()).flatten() == Some(b"1");
            let payload = record.value.map_or_else(Bytes::new, |value| batch.slice_ref(value));
            out.push(Message {
                offset,
                topic: Rc::from(topic),
                payload,
                qos,
                retain,
            });
        }
    }
    next
}

/// The number of partitions of the mapped Kafka topic, creating it (with
/// the broker's default partitions and replication) if it does not exist.
pub(crate) async fn ensure_topic(shard: &Rc<Shard>) -> Result<usize, EngineError> {
    let name = shard.config.mqtt_kafka_topic.clone();
    ensure_kafka_topic(shard, &name, BTreeMap::new()).await
}

/// The number of partitions of the Kafka topic `name`, creating it (with
/// the broker's default partitions and replication, and `configs`) if it
/// does not exist.
pub(crate) async fn ensure_kafka_topic(
    shard: &Rc<Shard>,
    name: &str,
    configs: BTreeMap<String, String>,
) -> Result<usize, EngineError> {
    if let Some(topic) = shard.image().topics.get(name) {
        return Ok(topic.partitions.len());
    }
    let topic = shardline_raft::NewTopic {
        configs,
        ..shard.default_topic(name)
    };
    match shard.meta.create_topic(topic).await {
        Ok(_) => tracing::info!(topic = %name, "created a Kafka topic for MQTT"),
        Err(MetaError::TopicExists(_)) => {}
        Err(e) => return Err(EngineError::Meta(e)),
    }
    crate::kafka::wait_all_shards(shard, shard.meta.image().epoch).await;
    shard
        .image()
        .topics
        .get(name)
        .map(|topic| topic.partitions.len())
        .filter(|partitions| *partitions > 0)
        .ok_or(EngineError::UnknownTopicOrPartition)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]
    use super::*;

    fn publication(topic: &str, payload: &'static [u8], qos: QoS, retain: bool) -> Publication {
        Publication {
            topic: topic.to_string(),
            payload: Bytes::from_static(payload),
            qos,
            retain,
        }
    }

    #[test]
    fn messages_of_one_batch_come_back_in_order() {
        let sent = [
            publication("a", b"1", QoS::AtLeastOnce, false),
            publication("b/c", b"22", QoS::AtMostOnce, true),
            publication("a", b"333", QoS::ExactlyOnce, false),
        ];
        let batch = batch_of(&sent, 1);
        let mut out = Vec::new();
        let mut skipped = Skipped::default();
        assert_eq!(messages(&batch, Offset(0), &mut out, &mut skipped), Offset(3));
        let got: Vec<(&str, &[u8])> = out.iter().map(|m| (&*m.topic, m.payload.as_ref())).collect();
        assert_eq!(got, vec![("a", &b"1"[..]), ("b/c", &b"22"[..]), ("a", &b"333"[..])]);
        assert_eq!(out[1].qos, QoS::AtMostOnce);
        // Only the retained one carries the retain header.
        let header = BatchHeader::parse(&batch).unwrap();
        let retained: Vec<bool> = uncompressed_records(&batch, &header)
            .unwrap()
            .map(|record| record.unwrap().headers.get(RETAIN_HEADER.as_bytes()).is_some())
            .collect();
        assert_eq!(retained, vec![false, true, false]);
    }

    #[test]
    fn runs_keep_every_batch_within_the_bound() {
        let small = publication("t", &[0; 100], QoS::AtLeastOnce, false);
        let big = publication("t", &[0; 1000], QoS::AtLeastOnce, false);
        let messages = vec![small.clone(), small.clone(), big, small.clone()];
        let bound = shardline_log::BATCH_HEADER_BYTES + 2 * small.record_bytes_max();
        let runs = runs(&messages, bound);
        let lengths: Vec<usize> = runs.iter().map(|run| run.len()).collect();
        assert_eq!(lengths, vec![2, 1, 1], "the big one alone, the rest as far as they fit");
        for run in runs.iter().filter(|run| run.len() > 1) {
            assert!(batch_of(run, 1).len() <= bound);
        }
        assert_eq!(super::runs(&[], 10).len(), 0);
    }

    #[test]
    fn a_message_survives_the_log_format() {
        let batch = batch_of(&[publication("a/b", b"payload", QoS::AtMostOnce, true)], 1);
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
        let mut chunk = batch_of(&[publication("x", b"1", QoS::AtLeastOnce, false)], 1).to_vec();
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
