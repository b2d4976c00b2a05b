//! Durable retained messages: the retained message of each MQTT topic is
//! an entry of the compacted internal Kafka topic [`RETAINED_KAFKA_TOPIC`]
//! (`compacted.rs`), so it survives a restart.
//!
//! ```text
//!  record in __mqtt_retained, partition crc32c(T) mod partitions:
//!     key = MQTT topic T, value = payload (null: T's retained message is cleared),
//!     header mqtt.qos = "0" | "1" | "2"
//!  owner of that partition: table T -> (payload, QoS) in MqttShard::retained
//! ```
//!
//! A retained PUBLISH is appended to the mapped topic first (what
//! subscribers and Kafka consumers read), then here (what a later
//! subscriber gets), each durable under the topic's policy, and only then
//! acknowledged. A crash between the two appends leaves the previous
//! retained message in place and the client, unacknowledged, publishes
//! again.

use std::rc::Rc;

use bytes::Bytes;
use shardline_log::Record;
use shardline_net::mqtt::{filter_matches, QoS};

use super::{
    compacted::{self, Entry, Table},
    mapping::{self, QOS_HEADER},
    MqttShard, RETAINED_TOPICS_MAX,
};
use crate::{error::EngineError, shard::Shard};

/// The internal Kafka topic of retained messages.
pub(crate) const RETAINED_KAFKA_TOPIC: &str = "__mqtt_retained";

/// A retained message.
#[derive(Debug, Clone)]
pub(crate) struct Retained {
    payload: Bytes,
    qos: QoS,
}

impl Entry for Retained {
    const TOPIC: &'static str = RETAINED_KAFKA_TOPIC;
    const ENTRIES_MAX: usize = RETAINED_TOPICS_MAX;

    fn table(mqtt: &MqttShard) -> &Table<Retained> {
        &mqtt.retained
    }

    fn decode(record: &Record<'_>) -> Option<Retained> {
        // A null (or empty) value clears.
        let payload = record.value.filter(|value| !value.is_empty())?;
        Some(Retained {
            payload: Bytes::copy_from_slice(payload),
            qos: mapping::qos_of_header(record.headers.get(QOS_HEADER.as_bytes()).flatten()),
        })
    }

    fn encode(&self) -> (Bytes, Vec<(&'static str, Bytes)>) {
        let qos = Bytes::from_static(mapping::qos_header(self.qos));
        (self.payload.clone(), vec![(QOS_HEADER, qos)])
    }
}

/// Stores `payload` (empty: none) as the retained message of `topic`,
/// durably, on the owner of its partition of the retained topic.
pub(crate) async fn store(shard: &Rc<Shard>, topic: &str, payload: &Bytes, qos: QoS) -> Result<(), EngineError> {
    let retained = (!payload.is_empty()).then(|| Retained {
        payload: payload.clone(),
        qos,
    });
    if compacted::store(shard, topic.to_string(), retained).await? == compacted::Stored::NotKept {
        tracing::warn!("retained message stored but not kept: the shard keeps its maximum of retained topics");
    }
    Ok(())
}

/// On a shard: the retained messages it keeps matching any of `filters`,
/// each at the highest QoS granted among the filters it matches (capped by
/// its own), after loading the retained-topic partitions it owns.
pub(crate) async fn matching(shard: &Rc<Shard>, filters: &[(String, QoS)]) -> Vec<(String, Bytes, QoS)> {
    compacted::catch_up_homed::<Retained>(shard).await;
    let mut found = Vec::new();
    shard.mqtt.retained.for_each(|topic, retained| {
        let granted = filters
            .iter()
            .filter(|(filter, _)| filter_matches(filter, topic))
            .map(|(_, qos)| *qos)
            .max();
        if let Some(granted) = granted {
            found.push((topic.to_string(), retained.payload.clone(), granted.min(retained.qos)));
        }
    });
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn keep(table: &Table<Retained>, topic: &str, payload: &'static [u8], qos: QoS) -> bool {
        let retained = (!payload.is_empty()).then(|| Retained {
            payload: Bytes::from_static(payload),
            qos,
        });
        table.keep(topic.to_string(), retained)
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
    fn a_retained_message_survives_its_record() {
        let retained = Retained {
            payload: Bytes::from_static(b"21.5"),
            qos: QoS::ExactlyOnce,
        };
        let (value, headers) = retained.encode();
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(name, value)| (*name, &value[..])).collect();
        let back: Retained = compacted::decode_record("t", Some(&value), &headers).unwrap();
        assert_eq!(back.payload, retained.payload);
        assert_eq!(back.qos, QoS::ExactlyOnce);
    }
}
