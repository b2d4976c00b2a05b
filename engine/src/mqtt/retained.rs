//! Durable retained messages: the retained message of each MQTT topic is
//! an entry of the compacted internal Kafka topic [`RETAINED_KAFKA_TOPIC`]
//! (`compacted.rs`), so it survives a restart.
//!
//! ```text
//!  record in __mqtt_retained, partition crc32c(T) mod partitions:
//!     key = MQTT topic T, value = the stored message below (null: T's retained
//!     message is cleared), header mqtt.format = "2"
//!  owner of that partition: table T -> Retained in MqttShard::retained
//!
//!  format 2 value (integers big-endian; bytes: u32 length, then the bytes):
//!  0       1        2              6
//!  +-------+--------+--------------+------------------------------------------+
//!  | 0xB7  | format | crc32c(body) | body                                     |
//!  | magic | 2      | u32 BE       |                                          |
//!  +-------+--------+--------------+------------------------------------------+
//!  body:
//!    u8      QoS (0..=2)
//!    i64     set at, ms since the Unix epoch (its Message Expiry counts from it)
//!    u8      present: bit 0 payload format, bit 1 expiry, bit 2 content type,
//!                bit 3 response topic, bit 4 correlation data (other bits 0)
//!    u8      payload format (0 | 1)          } if bit 0
//!    u32     Message Expiry Interval, s      } if bit 1
//!    bytes   content type (UTF-8)            } if bit 2
//!    bytes   response topic (a topic name)   } if bit 3
//!    bytes   correlation data                } if bit 4
//!    u32     user properties, then each: bytes name, bytes value (UTF-8)
//!    bytes   payload (at least one byte), and nothing after it
//!
//!  format 1 (before v5 properties, still read): no mqtt.format header;
//!     value = the payload, header mqtt.qos = "0" | "1" | "2"
//! ```
//!
//! A format 2 value that does not read (magic, format, checksum, a flag, a
//! length past its end, bytes left over) is refused with a warning: the
//! topic is taken to have no retained message, never a guessed one.
//!
//! A retained PUBLISH is appended to the mapped topic first (what
//! subscribers and Kafka consumers read), then here (what a later
//! subscriber gets), each durable under the topic's policy, and only then
//! acknowledged. A crash between the two appends leaves the previous
//! retained message in place and the client, unacknowledged, publishes
//! again. A retained message whose Message Expiry has passed is not sent,
//! and is dropped from the table when a subscription finds it.

use std::rc::Rc;

use bytes::Bytes;
use shardline_log::Record;
use shardline_net::mqtt::{filter_matches, valid_topic_name, QoS};

use super::{
    compacted::{self, Entry, Table},
    mapping::{self, MessageProperties, Publication, QOS_HEADER},
    stored::{qos_bits, Malformed, Reader},
    MqttShard, RETAINED_TOPICS_MAX,
};
use crate::{error::EngineError, shard::Shard};

/// The internal Kafka topic of retained messages.
pub(crate) const RETAINED_KAFKA_TOPIC: &str = "__mqtt_retained";

/// The record header naming the value's format (absent: format 1).
const FORMAT_HEADER: &str = "mqtt.format";

/// The first byte of a format 2 value.
const MAGIC: u8 = 0xB7;

/// The format written here, as the value and as [`FORMAT_HEADER`] says it.
const FORMAT: u8 = 2;
const FORMAT_NAME: &[u8] = b"2";

/// Bytes before the body: magic, format, checksum.
const HEADER_BYTES: usize = 6;

/// Bits of the body's `present` byte.
const HAS_PAYLOAD_FORMAT: u8 = 1;
const HAS_EXPIRY: u8 = 1 << 1;
const HAS_CONTENT_TYPE: u8 = 1 << 2;
const HAS_RESPONSE_TOPIC: u8 = 1 << 3;
const HAS_CORRELATION: u8 = 1 << 4;
const HAS_ANY: u8 = HAS_PAYLOAD_FORMAT | HAS_EXPIRY | HAS_CONTENT_TYPE | HAS_RESPONSE_TOPIC | HAS_CORRELATION;

/// Bytes a stored user property takes at least (two lengths).
const USER_PROPERTY_BYTES_MIN: usize = 8;

/// A retained message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Retained {
    payload: Bytes,
    qos: QoS,
    /// When it was set, ms since the Unix epoch.
    set_at_ms: i64,
    /// Its v5 properties, if it has any.
    properties: Option<Box<MessageProperties>>,
}

/// A retained message found for a subscription, as one shard hands it to
/// the subscriber's.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    /// The QoS to send it at.
    pub(crate) qos: QoS,
    pub(crate) properties: Option<Box<MessageProperties>>,
    /// Seconds left of its Message Expiry Interval, if it has one.
    pub(crate) expiry_left_s: Option<u32>,
}

impl Entry for Retained {
    const TOPIC: &'static str = RETAINED_KAFKA_TOPIC;
    const ENTRIES_MAX: usize = RETAINED_TOPICS_MAX;

    fn table(mqtt: &MqttShard) -> &Table<Retained> {
        &mqtt.retained
    }

    fn decode(record: &Record<'_>) -> Option<Retained> {
        // A null (or empty) value clears.
        let value = record.value.filter(|value| !value.is_empty())?;
        match record.headers.get(FORMAT_HEADER.as_bytes()).flatten() {
            None => Some(Retained {
                payload: Bytes::copy_from_slice(value),
                qos: mapping::qos_of_header(record.headers.get(QOS_HEADER.as_bytes()).flatten()),
                set_at_ms: 0,
                properties: None,
            }),
            Some(FORMAT_NAME) => match Retained::read(value) {
                Ok(retained) => Some(retained),
                Err(Malformed(why)) => {
                    tracing::warn!(why, "a stored MQTT retained message is refused");
                    None
                }
            },
            Some(_) => {
                tracing::warn!("a stored MQTT retained message of an unknown format is refused");
                None
            }
        }
    }

    fn encode(&self) -> (Bytes, Vec<(&'static str, Bytes)>) {
        (
            Bytes::from(self.write()),
            vec![(FORMAT_HEADER, Bytes::from_static(FORMAT_NAME))],
        )
    }
}

impl Retained {
    /// The format 2 value of this message.
    fn write(&self) -> Vec<u8> {
        assert!(!self.payload.is_empty(), "an empty payload clears, it is not stored");
        let mut body = vec![qos_bits(self.qos)];
        body.extend_from_slice(&self.set_at_ms.to_be_bytes());
        let none = MessageProperties::default();
        let props = self.properties.as_deref().unwrap_or(&none);
        let present = [
            (props.payload_format.is_some(), HAS_PAYLOAD_FORMAT),
            (props.expiry_s.is_some(), HAS_EXPIRY),
            (props.content_type.is_some(), HAS_CONTENT_TYPE),
            (props.response_topic.is_some(), HAS_RESPONSE_TOPIC),
            (props.correlation_data.is_some(), HAS_CORRELATION),
        ]
        .into_iter()
        .filter(|(present, _)| *present)
        .fold(0, |bits, (_, bit)| bits | bit);
        body.push(present);
        body.extend(props.payload_format);
        if let Some(expiry_s) = props.expiry_s {
            body.extend_from_slice(&expiry_s.to_be_bytes());
        }
        for text in [&props.content_type, &props.response_topic].into_iter().flatten() {
            long_bytes(&mut body, text.as_bytes());
        }
        if let Some(data) = &props.correlation_data {
            long_bytes(&mut body, data);
        }
        body.extend_from_slice(&length32(props.user.len()).to_be_bytes());
        for (name, value) in &props.user {
            long_bytes(&mut body, name.as_bytes());
            long_bytes(&mut body, value.as_bytes());
        }
        long_bytes(&mut body, &self.payload);
        let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
        out.push(MAGIC);
        out.push(FORMAT);
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        assert!(
            out.len() > HEADER_BYTES + self.payload.len(),
            "the payload is in the value"
        );
        out
    }

    /// The message a format 2 value holds.
    fn read(bytes: &[u8]) -> Result<Retained, Malformed> {
        let mut reader = Reader(bytes);
        if reader.u8()? != MAGIC {
            return Err(Malformed("magic"));
        }
        if reader.u8()? != FORMAT {
            return Err(Malformed("unknown format"));
        }
        let checksum = reader.u32()?;
        if crc32c::crc32c(reader.0) != checksum {
            return Err(Malformed("checksum"));
        }
        let qos = QoS::from_bits(reader.u8()?).map_err(|_| Malformed("QoS"))?;
        let set_at_ms = reader.i64()?;
        let present = reader.u8()?;
        if present & !HAS_ANY != 0 {
            return Err(Malformed("property flags"));
        }
        let mut props = MessageProperties::default();
        if present & HAS_PAYLOAD_FORMAT != 0 {
            props.payload_format = Some(reader.u8()?).filter(|format| *format <= 1);
            if props.payload_format.is_none() {
                return Err(Malformed("payload format"));
            }
        }
        if present & HAS_EXPIRY != 0 {
            props.expiry_s = Some(reader.u32()?);
        }
        if present & HAS_CONTENT_TYPE != 0 {
            props.content_type = Some(read_text(&mut reader)?);
        }
        if present & HAS_RESPONSE_TOPIC != 0 {
            let topic = read_text(&mut reader)?;
            if !valid_topic_name(&topic) {
                return Err(Malformed("response topic"));
            }
            props.response_topic = Some(topic);
        }
        if present & HAS_CORRELATION != 0 {
            props.correlation_data = Some(Bytes::copy_from_slice(read_long(&mut reader)?));
        }
        let count = usize::try_from(reader.u32()?).map_err(|_| Malformed("user properties"))?;
        if count > reader.0.len() / USER_PROPERTY_BYTES_MIN {
            return Err(Malformed("more user properties than bytes"));
        }
        props.user.reserve_exact(count);
        for _ in 0..count {
            let name = read_text(&mut reader)?;
            props.user.push((name, read_text(&mut reader)?));
        }
        let payload = read_long(&mut reader)?;
        if payload.is_empty() {
            return Err(Malformed("empty payload"));
        }
        if !reader.0.is_empty() {
            return Err(Malformed("bytes after the payload"));
        }
        Ok(Retained {
            payload: Bytes::copy_from_slice(payload),
            qos,
            set_at_ms,
            properties: (props != MessageProperties::default()).then(|| Box::new(props)),
        })
    }
}

/// A length the stored message bounds below 2^32 (a record is smaller).
fn length32(length: usize) -> u32 {
    u32::try_from(length).unwrap_or(u32::MAX)
}

/// Writes `bytes` as a u32 length and the bytes.
fn long_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    assert!(u32::try_from(bytes.len()).is_ok(), "a record field is below 4 GiB");
    out.extend_from_slice(&length32(bytes.len()).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Reads a u32 length and that many bytes.
fn read_long<'a>(reader: &mut Reader<'a>) -> Result<&'a [u8], Malformed> {
    let length = usize::try_from(reader.u32()?).map_err(|_| Malformed("length"))?;
    reader.bytes(length)
}

/// Reads a u32 length and that many bytes of UTF-8.
fn read_text(reader: &mut Reader<'_>) -> Result<String, Malformed> {
    let bytes = read_long(reader)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| Malformed("UTF-8"))
}

/// Stores `publication`'s payload (empty: none) with its QoS and v5
/// properties as the retained message of its topic, set at `now_ms`,
/// durably, on the owner of its partition of the retained topic.
pub(crate) async fn store(shard: &Rc<Shard>, publication: Publication, now_ms: i64) -> Result<(), EngineError> {
    let Publication {
        topic,
        payload,
        qos,
        properties,
        ..
    } = publication;
    let retained = (!payload.is_empty()).then_some(Retained {
        payload,
        qos,
        set_at_ms: now_ms,
        properties,
    });
    if compacted::store(shard, topic, retained).await? == compacted::Stored::NotKept {
        tracing::warn!("retained message stored but not kept: the shard keeps its maximum of retained topics");
    }
    Ok(())
}

/// After a Kafka produce to the mapped topic was appended: stores, in
/// order, the retained messages its records set or clear
/// ([`mapping::produced_retained`]), before the producer is answered.
pub(crate) async fn store_produced(shard: &Rc<Shard>, records: &Bytes) -> Result<(), EngineError> {
    for publication in mapping::produced_retained(records) {
        store(shard, publication, crate::kafka::unix_now_ms()).await?;
    }
    Ok(())
}

/// On a shard: the retained messages it keeps matching any of `filters`,
/// each at the highest QoS granted among the filters it matches (capped by
/// its own), after loading the retained-topic partitions it owns. One
/// whose Message Expiry has passed at `now_ms` is not found, and leaves
/// the table.
pub(crate) async fn matching(shard: &Rc<Shard>, filters: &[(String, QoS)], now_ms: i64) -> Vec<Found> {
    compacted::catch_up_homed::<Retained>(shard).await;
    let mut found = Vec::new();
    let mut expired = Vec::new();
    shard.mqtt.retained.for_each(|topic, retained| {
        let granted = filters
            .iter()
            .filter(|(filter, _)| filter_matches(filter, topic))
            .map(|(_, qos)| *qos)
            .max();
        let Some(granted) = granted else {
            return;
        };
        let expiry_s = retained.properties.as_ref().and_then(|props| props.expiry_s);
        match mapping::expiry_left_s(expiry_s, retained.set_at_ms, now_ms) {
            Ok(expiry_left_s) => found.push(Found {
                topic: topic.to_string(),
                payload: retained.payload.clone(),
                qos: granted.min(retained.qos),
                properties: retained.properties.clone(),
                expiry_left_s,
            }),
            Err(()) => expired.push(topic.to_string()),
        }
    });
    for topic in expired {
        shard.mqtt.retained.keep(topic, None);
    }
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]
    use proptest::prelude::*;

    use super::*;

    fn retained(payload: &'static [u8], qos: QoS) -> Retained {
        Retained {
            payload: Bytes::from_static(payload),
            qos,
            set_at_ms: 1_700_000_000_000,
            properties: None,
        }
    }

    fn with_properties() -> Retained {
        Retained {
            properties: Some(Box::new(MessageProperties {
                payload_format: Some(1),
                expiry_s: Some(60),
                content_type: Some("text/plain".into()),
                response_topic: Some("reply/to".into()),
                correlation_data: Some(Bytes::from_static(b"\x00\x01")),
                user: vec![("site".into(), "north".into()), ("site".into(), "south".into())],
            })),
            ..retained(b"21.5", QoS::ExactlyOnce)
        }
    }

    fn keep(table: &Table<Retained>, topic: &str, payload: &'static [u8], qos: QoS) -> bool {
        table.keep(topic.to_string(), (!payload.is_empty()).then(|| retained(payload, qos)))
    }

    fn matching_in(table: &Table<Retained>, filter: &str, qos: QoS) -> Vec<(String, Vec<u8>)> {
        let mut found = Vec::new();
        table.for_each(|topic, retained| {
            if filter_matches(filter, topic) {
                found.push((topic.to_string(), retained.payload.to_vec()));
                assert!(retained.qos.min(qos) <= qos);
            }
        });
        found.sort();
        found
    }

    /// The entry a record of `value` and `headers` holds, through a real
    /// batch.
    fn through_a_record(value: &[u8], headers: &[(&str, &[u8])]) -> Option<Retained> {
        let record = shardline_log::HeaderedRecord {
            key: Some(b"t"),
            value: Some(value),
            headers,
        };
        let batch = shardline_log::build_batch_with_headers(1, &[record]);
        let header = shardline_log::BatchHeader::parse(&batch).unwrap();
        let record = shardline_log::uncompressed_records(&batch, &header)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        Retained::decode(&record)
    }

    #[test]
    fn retained_messages_are_kept_replaced_cleared_and_matched() {
        let table = Table::<Retained>::default();
        assert!(keep(&table, "r/a", b"on", QoS::AtLeastOnce));
        assert!(keep(&table, "r/b", b"x", QoS::AtMostOnce));
        assert!(keep(&table, "r/a", b"off", QoS::AtLeastOnce));
        assert_eq!(
            matching_in(&table, "r/+", QoS::AtLeastOnce),
            vec![("r/a".to_string(), b"off".to_vec()), ("r/b".to_string(), b"x".to_vec())]
        );
        assert!(keep(&table, "r/a", b"", QoS::AtMostOnce), "an empty payload clears");
        assert_eq!(matching_in(&table, "r/a", QoS::AtLeastOnce), vec![]);
        assert_eq!(matching_in(&table, "#", QoS::AtMostOnce).len(), 1);
    }

    #[test]
    fn a_retained_message_and_its_properties_survive_their_record() {
        for message in [retained(b"21.5", QoS::AtMostOnce), with_properties()] {
            let (value, headers) = message.encode();
            let headers: Vec<(&str, &[u8])> = headers.iter().map(|(name, value)| (*name, &value[..])).collect();
            assert_eq!(through_a_record(&value, &headers), Some(message));
        }
    }

    #[test]
    fn a_format_1_record_still_reads() {
        let back = through_a_record(b"on", &[(QOS_HEADER, b"2")]).unwrap();
        assert_eq!(
            (&back.payload[..], back.qos, back.properties),
            (&b"on"[..], QoS::ExactlyOnce, None)
        );
        // Even one that happens to begin like format 2: no header, format 1.
        let bytes = with_properties().write();
        assert_eq!(through_a_record(&bytes, &[]).unwrap().payload, Bytes::from(bytes));
        assert_eq!(
            through_a_record(b"on", &[(FORMAT_HEADER, b"9")]),
            None,
            "unknown format"
        );
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_refused() {
        let bytes = with_properties().write();
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x20;
            assert!(Retained::read(&flipped).is_err(), "a flip at {at} is caught");
            assert!(Retained::read(&bytes[..at]).is_err(), "a cut at {at} is caught");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Retained::read(&longer).is_err(), "a byte after the payload is caught");
    }

    #[test]
    fn the_expiry_counts_from_when_it_was_set() {
        let message = with_properties();
        let set = message.set_at_ms;
        let expiry_s = message.properties.as_ref().and_then(|props| props.expiry_s);
        assert_eq!(mapping::expiry_left_s(expiry_s, set, set + 1_500), Ok(Some(59)));
        assert_eq!(mapping::expiry_left_s(expiry_s, set, set + 60_000), Err(()));
        assert_eq!(mapping::expiry_left_s(None, set, set + 60_000), Ok(None));
    }

    proptest! {
        #[test]
        fn garbage_is_refused_or_reads_to_what_it_rewrites_to(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(message) = Retained::read(&bytes) {
                prop_assert_eq!(Retained::read(&message.write()), Ok(message));
            }
        }

        #[test]
        fn garbage_behind_a_valid_header_is_refused_without_a_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = vec![MAGIC, FORMAT];
            bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
            bytes.extend_from_slice(&body);
            if let Ok(message) = Retained::read(&bytes) {
                prop_assert_eq!(Retained::read(&message.write()), Ok(message));
            }
        }
    }
}
