//! One log for both protocols: how an MQTT message becomes a Kafka record
//! and back (docs/mqtt.md, "Topic mapping").
//!
//! ```text
//!  MQTT PUBLISH topic T, payload P, QoS q
//!    ──► Kafka topic `--mqtt-kafka-topic` (default "mqtt"),
//!        partition crc32c(T) mod partitions   (one MQTT topic, one partition: its order holds)
//!        record: key T, value P, headers mqtt.topic = T, mqtt.qos = q ("0", "1" or "2"),
//!        mqtt.client = the publisher's client id, mqtt.retain = "1" when published retained;
//!        v5 properties: mqtt.payload_format ("0" | "1"), mqtt.expiry_s (decimal seconds),
//!        mqtt.content_type, mqtt.response_topic, mqtt.correlation_data (raw bytes), and
//!        each user property as a header of its own name (one beginning "mqtt." stored
//!        as "mqtt.user." + its name)
//!  Kafka record on that topic with header mqtt.topic = T (or, without it, a
//!  UTF-8 key that is a valid topic name) ──► MQTT subscribers of filters matching T,
//!        at QoS min(mqtt.qos or 1, granted); its other headers (not "mqtt.") are user
//!        properties of the v5 delivery
//! ```
//!
//! Pure functions plus [`ensure_topic`], which asks the metadata group (on
//! any shard) to create the Kafka topic the first time MQTT needs it.

use std::{collections::BTreeMap, rc::Rc};

use bytes::Bytes;
use shardline_log::{uncompressed_records, BatchHeader, HeaderedRecord, Offset, Record};
use shardline_net::mqtt::{valid_topic_name, QoS};
use shardline_raft::MetaError;

use crate::{error::EngineError, shard::Shard};

/// The record header holding the MQTT topic.
pub(crate) const TOPIC_HEADER: &str = "mqtt.topic";
/// The record header holding the QoS the message was published at.
pub(crate) const QOS_HEADER: &str = "mqtt.qos";
/// The record header present (value "1") on a message published retained.
pub(crate) const RETAIN_HEADER: &str = "mqtt.retain";
/// The record header holding the publisher's client id (for No Local).
pub(crate) const CLIENT_HEADER: &str = "mqtt.client";
/// The v5 Payload Format Indicator ("0" or "1").
const PAYLOAD_FORMAT_HEADER: &str = "mqtt.payload_format";
/// The v5 Message Expiry Interval, decimal seconds from the record's timestamp.
const EXPIRY_HEADER: &str = "mqtt.expiry_s";
/// The v5 Content Type.
const CONTENT_TYPE_HEADER: &str = "mqtt.content_type";
/// The v5 Response Topic.
const RESPONSE_TOPIC_HEADER: &str = "mqtt.response_topic";
/// The v5 Correlation Data.
const CORRELATION_HEADER: &str = "mqtt.correlation_data";
/// Headers whose names begin so are the broker's; a user property named so
/// is stored under [`USER_ESCAPE`] + its name.
const RESERVED_PREFIX: &str = "mqtt.";
/// Where a user property whose name begins with [`RESERVED_PREFIX`] goes.
const USER_ESCAPE: &str = "mqtt.user.";

/// The v5 properties a message carries from its publisher to its
/// subscribers (MQTT 5.0 §3.3.2.3), all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MessageProperties {
    pub(crate) payload_format: Option<u8>,
    /// Seconds it lives after it was published.
    pub(crate) expiry_s: Option<u32>,
    pub(crate) content_type: Option<String>,
    pub(crate) response_topic: Option<String>,
    pub(crate) correlation_data: Option<Bytes>,
    /// In order; names may repeat.
    pub(crate) user: Vec<(String, String)>,
}

impl MessageProperties {
    /// The message properties of a PUBLISH's properties (`None`: none).
    pub(crate) fn of(properties: &shardline_net::mqtt::Properties) -> Option<Box<MessageProperties>> {
        let props = MessageProperties {
            payload_format: properties.payload_format,
            expiry_s: properties.message_expiry_s,
            content_type: properties.content_type.clone(),
            response_topic: properties.response_topic.clone(),
            correlation_data: properties.correlation_data.clone(),
            user: properties.user_properties.clone(),
        };
        (props != MessageProperties::default()).then(|| Box::new(props))
    }

    /// Copies them into a delivery's PUBLISH properties, the expiry as
    /// what is left of it.
    pub(crate) fn fill(&self, properties: &mut shardline_net::mqtt::Properties, expiry_left_s: Option<u32>) {
        properties.payload_format = self.payload_format;
        properties.message_expiry_s = expiry_left_s;
        properties.content_type.clone_from(&self.content_type);
        properties.response_topic.clone_from(&self.response_topic);
        properties.correlation_data.clone_from(&self.correlation_data);
        properties.user_properties.clone_from(&self.user);
    }

    /// Bytes they add to a record, at most.
    fn record_bytes_max(&self) -> usize {
        let strings = [&self.content_type, &self.response_topic]
            .into_iter()
            .flatten()
            .map(String::len)
            .sum::<usize>();
        let user: usize = self
            .user
            .iter()
            .map(|(name, value)| name.len() + value.len() + USER_ESCAPE.len() + 10)
            .sum();
        strings + self.correlation_data.as_ref().map_or(0, Bytes::len) + user + 128
    }
}

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
    /// Its publisher's client id.
    pub(crate) client_id: std::sync::Arc<str>,
    /// Its v5 properties, if it has any.
    pub(crate) properties: Option<Box<MessageProperties>>,
}

/// Bytes a record of [`batch_of`] takes beyond its topic (twice: key and
/// header), client id and payload, at most: the varints, the four header
/// names and their values.
const RECORD_OVERHEAD_BYTES_MAX: usize = 80;

impl Publication {
    /// The most bytes this message adds to a batch of [`batch_of`].
    pub(crate) fn record_bytes_max(&self) -> usize {
        2 * self.topic.len()
            + self.client_id.len()
            + self.payload.len()
            + RECORD_OVERHEAD_BYTES_MAX
            + self.properties.as_ref().map_or(0, |p| p.record_bytes_max())
    }

    /// The header values this message's headers borrow that are made here:
    /// its expiry in decimal, and the escaped names of user properties
    /// beginning "mqtt.", in the order [`Publication::push_headers`] takes them.
    fn made_values(&self, out: &mut Vec<String>) {
        let Some(props) = &self.properties else {
            return;
        };
        if let Some(expiry_s) = props.expiry_s {
            out.push(expiry_s.to_string());
        }
        for (name, _) in &props.user {
            if name.starts_with(RESERVED_PREFIX) {
                out.push(format!("{USER_ESCAPE}{name}"));
            }
        }
    }

    /// Appends this message's record headers to `out`, taking the values
    /// [`Publication::made_values`] made for it from `made`.
    fn push_headers<'a>(&'a self, made: &mut impl Iterator<Item = &'a String>, out: &mut Vec<(&'a str, &'a [u8])>) {
        out.extend([
            (TOPIC_HEADER, self.topic.as_bytes()),
            (QOS_HEADER, qos_header(self.qos)),
            (CLIENT_HEADER, self.client_id.as_bytes()),
        ]);
        if self.retain {
            out.push((RETAIN_HEADER, b"1"));
        }
        let Some(props) = &self.properties else {
            return;
        };
        if let Some(format) = props.payload_format {
            out.push((PAYLOAD_FORMAT_HEADER, if format == 1 { b"1" } else { b"0" }));
        }
        if props.expiry_s.is_some() {
            if let Some(expiry) = made.next() {
                out.push((EXPIRY_HEADER, expiry.as_bytes()));
            }
        }
        if let Some(content_type) = &props.content_type {
            out.push((CONTENT_TYPE_HEADER, content_type.as_bytes()));
        }
        if let Some(response_topic) = &props.response_topic {
            out.push((RESPONSE_TOPIC_HEADER, response_topic.as_bytes()));
        }
        if let Some(correlation) = &props.correlation_data {
            out.push((CORRELATION_HEADER, correlation));
        }
        for (name, value) in &props.user {
            let name = if name.starts_with(RESERVED_PREFIX) {
                made.next().map_or(name.as_str(), String::as_str)
            } else {
                name.as_str()
            };
            out.push((name, value.as_bytes()));
        }
    }
}

/// The record batch storing `messages`, one record each, in order.
///
/// # Panics
/// If `messages` is empty (the caller appends at least one).
pub(crate) fn batch_of(messages: &[Publication], timestamp_ms: i64) -> Bytes {
    // One buffer of headers for the whole batch, sliced per record.
    let mut made = Vec::new();
    for message in messages {
        message.made_values(&mut made);
    }
    let mut made = made.iter();
    let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(messages.len() * 4);
    let mut ends = Vec::with_capacity(messages.len());
    for message in messages {
        message.push_headers(&mut made, &mut headers);
        ends.push(headers.len());
    }
    let records: Vec<HeaderedRecord<'_>> = messages
        .iter()
        .zip(ends.iter().enumerate())
        .map(|(message, (at, &end))| {
            let start = at
                .checked_sub(1)
                .and_then(|before| ends.get(before))
                .copied()
                .unwrap_or(0);
            HeaderedRecord {
                key: Some(message.topic.as_bytes()),
                value: Some(&message.payload),
                headers: headers.get(start..end).unwrap_or_default(),
            }
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
    /// Its publisher's client id, if the record names one (a slice of the
    /// chunk).
    pub(crate) publisher: Option<Bytes>,
    /// When it was stored, ms since the Unix epoch (the record's timestamp).
    pub(crate) timestamp_ms: i64,
    /// Its v5 properties (and a Kafka record's own headers as user
    /// properties), if it has any.
    pub(crate) properties: Option<Rc<MessageProperties>>,
}

impl Message {
    /// Seconds left of its Message Expiry Interval at `now_ms` (`None`: it
    /// does not expire), or `Err` when it has expired and must not be
    /// delivered (MQTT 5.0 §3.3.2.3.3).
    pub(crate) fn expiry_left_s(&self, now_ms: i64) -> Result<Option<u32>, ()> {
        expiry_left_s(
            self.properties.as_ref().and_then(|p| p.expiry_s),
            self.timestamp_ms,
            now_ms,
        )
    }
}

/// Seconds left at `now_ms` of a Message Expiry Interval of `expiry_s`
/// (`None`: it does not expire) counted from `since_ms`, or `Err` when it
/// has passed.
pub(crate) fn expiry_left_s(expiry_s: Option<u32>, since_ms: i64, now_ms: i64) -> Result<Option<u32>, ()> {
    let Some(expiry_s) = expiry_s else {
        return Ok(None);
    };
    let elapsed_s = now_ms.saturating_sub(since_ms).max(0) / 1000;
    let left = i64::from(expiry_s) - elapsed_s;
    if left <= 0 {
        return Err(());
    }
    let left = u32::try_from(left).unwrap_or(expiry_s);
    assert!(left <= expiry_s, "what is left of an expiry is at most all of it");
    Ok(Some(left))
}

/// The MQTT properties a record's headers carry, beyond topic, QoS, retain
/// and publisher (`None`: none).
fn properties_of(headers: shardline_log::Headers<'_>) -> Option<MessageProperties> {
    let mut props: Option<MessageProperties> = None;
    for (name, value) in headers {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if matches!(name, TOPIC_HEADER | QOS_HEADER | RETAIN_HEADER | CLIENT_HEADER) {
            continue;
        }
        let props = props.get_or_insert_with(MessageProperties::default);
        let text = value.and_then(|value| std::str::from_utf8(value).ok());
        match name {
            PAYLOAD_FORMAT_HEADER => props.payload_format = text.and_then(|t| t.parse().ok()),
            EXPIRY_HEADER => props.expiry_s = text.and_then(|t| t.parse().ok()),
            CONTENT_TYPE_HEADER => props.content_type = text.map(str::to_string),
            RESPONSE_TOPIC_HEADER => props.response_topic = text.filter(|t| valid_topic_name(t)).map(str::to_string),
            CORRELATION_HEADER => props.correlation_data = value.map(Bytes::copy_from_slice),
            _ => {
                // Other broker headers are not the user's; a user property
                // named "mqtt..." was stored escaped.
                let user = match name.strip_prefix(USER_ESCAPE) {
                    Some(escaped) => escaped,
                    None if name.starts_with(RESERVED_PREFIX) => continue,
                    None => name,
                };
                if let Some(text) = text {
                    props.user.push((user.to_string(), text.to_string()));
                }
            }
        }
    }
    props.filter(|props| *props != MessageProperties::default())
}

/// The MQTT topic of a record of the mapped topic: its [`TOPIC_HEADER`],
/// or else a UTF-8 key that is a valid topic name.
fn topic_of<'a>(record: &Record<'a>) -> Option<&'a str> {
    record
        .headers
        .get(TOPIC_HEADER.as_bytes())
        .flatten()
        .or(record.key)
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .filter(|topic| valid_topic_name(topic))
}

/// The retained messages that records a Kafka client produced to the
/// mapped topic set (an empty payload: clear), in order: those with
/// [`RETAIN_HEADER`] "1" and an MQTT topic as the feed finds it. Records
/// with a [`CLIENT_HEADER`] are an MQTT publisher's, whose retained copy
/// the MQTT path stores; compressed batches are not read (the broker does
/// not decompress) and transactional ones set nothing (they may abort).
pub(crate) fn produced_retained(records: &Bytes) -> Vec<Publication> {
    let mut found = Vec::new();
    for (header, batch) in whole_batches(records) {
        if header.is_control() || header.is_transactional() {
            continue;
        }
        let Some(records) = uncompressed_records(&batch, &header) else {
            continue;
        };
        for record in records.flatten() {
            let retain = record.headers.get(RETAIN_HEADER.as_bytes()).flatten() == Some(b"1");
            if !retain || record.headers.get(CLIENT_HEADER.as_bytes()).is_some() {
                continue;
            }
            let Some(topic) = topic_of(&record) else {
                continue;
            };
            found.push(Publication {
                topic: topic.to_string(),
                payload: record.value.map_or_else(Bytes::new, |value| batch.slice_ref(value)),
                qos: qos_of_header(record.headers.get(QOS_HEADER.as_bytes()).flatten()),
                retain,
                client_id: std::sync::Arc::from(""),
                properties: properties_of(record.headers).map(Box::new),
            });
        }
    }
    found
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
            let Some(topic) = topic_of(&record) else {
                skipped.untopical += 1;
                continue;
            };
            let qos = qos_of_header(record.headers.get(QOS_HEADER.as_bytes()).flatten());
            let retain = record.headers.get(RETAIN_HEADER.as_bytes()).flatten() == Some(b"1");
            let publisher = record
                .headers
                .get(CLIENT_HEADER.as_bytes())
                .flatten()
                .map(|id| batch.slice_ref(id));
            let payload = record.value.map_or_else(Bytes::new, |value| batch.slice_ref(value));
            out.push(Message {
                offset,
                topic: Rc::from(topic),
                payload,
                qos,
                retain,
                publisher,
                timestamp_ms: header.base_timestamp_ms.saturating_add(record.timestamp_delta_ms),
                properties: properties_of(record.headers).map(Rc::new),
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
            client_id: std::sync::Arc::from("dev-1"),
            properties: None,
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
    fn v5_properties_and_the_publisher_survive_the_log_format() {
        let props = MessageProperties {
            payload_format: Some(1),
            expiry_s: Some(30),
            content_type: Some("application/json".to_string()),
            response_topic: Some("replies/7".to_string()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user: vec![
                ("site".to_string(), "a".to_string()),
                ("mqtt.qos".to_string(), "not the broker's".to_string()),
                ("site".to_string(), "b".to_string()),
            ],
        };
        let mut message = publication("t", b"{}", QoS::AtLeastOnce, false);
        message.properties = Some(Box::new(props.clone()));
        let batch = batch_of(std::slice::from_ref(&message), 1_000);
        assert!(batch.len() <= shardline_log::BATCH_HEADER_BYTES + message.record_bytes_max());
        let mut out = Vec::new();
        messages(&batch, Offset(0), &mut out, &mut Skipped::default());
        assert_eq!(
            out[0].qos,
            QoS::AtLeastOnce,
            "a user property never passes for the broker's header"
        );
        assert_eq!(out[0].publisher.as_deref(), Some(&b"dev-1"[..]));
        assert_eq!(out[0].properties.as_deref(), Some(&props));
        // The expiry counts from the record's timestamp.
        assert_eq!(out[0].expiry_left_s(1_000), Ok(Some(30)));
        assert_eq!(out[0].expiry_left_s(11_999), Ok(Some(20)));
        assert_eq!(out[0].expiry_left_s(31_000), Err(()));
    }

    #[test]
    fn a_kafka_records_own_headers_become_user_properties() {
        let headers: [(&str, &[u8]); 3] = [(TOPIC_HEADER, b"k/t"), ("trace-id", b"abc"), ("mqtt.unknown", b"x")];
        let record = HeaderedRecord {
            key: None,
            value: Some(b"v"),
            headers: &headers,
        };
        let batch = Bytes::from(shardline_log::build_batch_with_headers(1, &[record]));
        let mut out = Vec::new();
        messages(&batch, Offset(0), &mut out, &mut Skipped::default());
        let props = out[0].properties.as_deref().unwrap();
        assert_eq!(props.user, vec![("trace-id".to_string(), "abc".to_string())]);
        assert_eq!(out[0].publisher, None);
        // A plain MQTT message has no properties at all.
        let batch = batch_of(&[publication("t", b"x", QoS::AtMostOnce, true)], 1);
        out.clear();
        messages(&batch, Offset(0), &mut out, &mut Skipped::default());
        assert!(out[0].properties.is_none());
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
