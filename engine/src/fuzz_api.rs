//! Entry points for the fuzz targets in `engine/fuzz` (cargo feature
//! `fuzzing`; not part of the crate's API, hidden from its docs). They run
//! the real decoders on the fuzzer's bytes and answer with plain values,
//! so the engine's types never leave the crate:
//! - a stored MQTT session: [`decode_mqtt_session`],
//!   [`reencode_mqtt_session`], and [`sample_mqtt_sessions`] for seeds.
//!
//! Nothing here is used by the broker.

use std::collections::BTreeMap;

use shardline_log::Offset;
use shardline_net::mqtt::{PacketId, QoS, Version};

use crate::mqtt::{
    stored::{StoredInflight, StoredSession},
    Awaiting, Position, Subscription,
};

/// The stored session in `bytes`, as `Debug` text, or why it is refused.
pub fn decode_mqtt_session(bytes: &[u8]) -> Result<String, String> {
    StoredSession::decode(bytes)
        .map(|session| format!("{session:?}"))
        .map_err(|error| error.to_string())
}

/// The stored session in `bytes`, encoded again (`None`: refused).
pub fn reencode_mqtt_session(bytes: &[u8]) -> Option<Vec<u8>> {
    StoredSession::decode(bytes).ok().map(|session| session.encode())
}

/// Stored sessions of every shape, for seed corpora.
pub fn sample_mqtt_sessions() -> Vec<Vec<u8>> {
    let id = |n| PacketId::new(n).unwrap_or_else(|| unreachable!("identifiers above 0"));
    let full = StoredSession {
        version: Version::V5,
        expiry_s: 3600,
        saved_at_ms: 1_765_000_000_000,
        claim: Default::default(),
        kafka_topic: "mqtt".to_string(),
        subscriptions: vec![
            Subscription {
                filter: "sensors/+/temp".to_string(),
                qos: QoS::AtLeastOnce,
                retain_as_published: false,
                no_local: true,
                id: Some(42),
            },
            Subscription {
                filter: "$share/g/alerts/#".to_string(),
                qos: QoS::ExactlyOnce,
                retain_as_published: true,
                no_local: false,
                id: None,
            },
        ],
        cursors: (0..4).map(|p| (p, Offset(i64::from(p) * 1000))).collect(),
        inflight: vec![
            StoredInflight {
                packet_id: id(1),
                awaiting: Awaiting::Acknowledgement,
                position: Some(Position {
                    partition: 2,
                    offset: Offset(1999),
                }),
            },
            StoredInflight {
                packet_id: id(2),
                awaiting: Awaiting::Receipt,
                position: None,
            },
            StoredInflight {
                packet_id: id(3),
                awaiting: Awaiting::Completion,
                position: Some(Position {
                    partition: 0,
                    offset: Offset(7),
                }),
            },
        ],
        releases_pending: vec![id(9), id(10)],
    };
    let empty = StoredSession {
        version: Version::V311,
        expiry_s: u32::MAX,
        saved_at_ms: 0,
        claim: Default::default(),
        kafka_topic: String::new(),
        subscriptions: Vec::new(),
        cursors: BTreeMap::new(),
        inflight: Vec::new(),
        releases_pending: Vec::new(),
    };
    vec![full.encode(), empty.encode()]
}
