//! PUBLISH and its acknowledgements: PUBACK (QoS 1), PUBREC, PUBREL and
//! PUBCOMP (QoS 2).
//!
//! ```text
//!  PUBLISH  (fixed header 0x3F: bits 3 DUP, 2-1 QoS (3 is malformed), 0 RETAIN)
//!  +--------------------+-------------------------+-------------+----------------------+
//!  | topic name         | packet identifier       | properties  | payload              |
//!  | string, no '+'/'#' | u16 ≠ 0, QoS 1 and 2    | v5 only     | the rest of the      |
//!  |                    | only                    |             | packet, any bytes    |
//!  +--------------------+-------------------------+-------------+----------------------+
//!
//!  PUBACK 0x40, PUBREC 0x50, PUBREL 0x62 (flags must be 0b0010), PUBCOMP 0x70
//!  +-------------------------+------------------------------+---------------------+
//!  | packet identifier u16   | reason code u8 (v5; absent   | properties (v5;     |
//!  |                         | when the remaining length is | absent when the     |
//!  |                         | 2, meaning 0 = success)      | length is < 4)      |
//!  +-------------------------+------------------------------+---------------------+
//! ```

use bytes::Bytes;

use super::{
    properties::{Allowed, Properties},
    topic::valid_topic_name,
    wire::{frame, put_string, Reader},
    MqttDecodeError, PacketId, QoS, Version,
};

/// An application message on its way in or out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Whether this is a redelivery (QoS 1 and 2 only).
    pub dup: bool,
    /// Delivery guarantee.
    pub qos: QoS,
    /// Whether the server should retain it.
    pub retain: bool,
    /// Where it is published: a valid topic name, or (v5) empty when a
    /// Topic Alias stands for it.
    pub topic: String,
    /// Its identifier (QoS 1 and 2), `None` at QoS 0.
    pub packet_id: Option<PacketId>,
    /// v5 properties (empty for 3.1.1).
    pub properties: Properties,
    /// The application payload.
    pub payload: Bytes,
}

/// Which acknowledgement an [`Ack`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// PUBACK: QoS 1 delivered.
    PubAck,
    /// PUBREC: QoS 2 received.
    PubRec,
    /// PUBREL: QoS 2 released.
    PubRel,
    /// PUBCOMP: QoS 2 complete.
    PubComp,
}

impl AckKind {
    fn first_byte(self) -> u8 {
        match self {
            AckKind::PubAck => 0x40,
            AckKind::PubRec => 0x50,
            AckKind::PubRel => 0x62,
            AckKind::PubComp => 0x70,
        }
    }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Which one.
    pub kind: AckKind,
    /// The publication it acknowledges.
    pub packet_id: PacketId,
    /// v5 reason code (0: success; always 0 for 3.1.1).
    pub reason: u8,
    /// v5 properties.
    pub properties: Properties,
}

impl Publish {
    pub(crate) fn decode(flags: u8, body: Bytes, version: Version) -> Result<Publish, MqttDecodeError> {
        let dup = flags & 0x08 != 0;
        let qos = QoS::from_bits((flags >> 1) & 0x03)?;
        let retain = flags & 0x01 != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(MqttDecodeError::Malformed {
                field: "publish flags",
                reason: "DUP set at QoS 0",
            });
        }
        let mut reader = Reader::new(body);
        let topic = reader.string("topic name")?;
        let packet_id = match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce | QoS::ExactlyOnce => Some(PacketId::decode(&mut reader)?),
        };
        let properties = match version {
            Version::V5 => Properties::decode(&mut reader, Allowed::PUBLISH)?,
            Version::V311 => Properties::default(),
        };
        // v5 §3.3.2.3.4: an empty topic name stands for the one a Topic
        // Alias was set to.
        let aliased = topic.is_empty() && properties.topic_alias.is_some();
        if !valid_topic_name(&topic) && !aliased {
            return Err(MqttDecodeError::TopicName);
        }
        Ok(Publish {
            dup,
            qos,
            retain,
            topic,
            packet_id,
            properties,
            payload: reader.rest(),
        })
    }

    /// Appends the packet.
    ///
    /// # Panics
    /// If the packet id is missing at QoS 1 or 2 or given at QoS 0 (the
    /// caller's invariant).
    pub(crate) fn encode(&self, version: Version, out: &mut Vec<u8>) {
        assert_eq!(
            self.packet_id.is_some(),
            self.qos != QoS::AtMostOnce,
            "a packet id exactly at QoS 1 and 2"
        );
        let mut body = Vec::with_capacity(self.topic.len() + self.payload.len() + 8);
        put_string(&mut body, &self.topic);
        if let Some(id) = self.packet_id {
            body.extend_from_slice(&id.get().to_be_bytes());
        }
        if version == Version::V5 {
            self.properties.encode(&mut body);
        }
        body.extend_from_slice(&self.payload);
        let flags = (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain);
        frame(0x30 | flags, &body, out);
    }
}

impl Ack {
    pub(crate) fn decode(kind: AckKind, body: Bytes, version: Version) -> Result<Ack, MqttDecodeError> {
        let mut reader = Reader::new(body);
        let packet_id = PacketId::decode(&mut reader)?;
        let (reason, properties) = match version {
            Version::V311 => (0, Properties::default()),
            Version::V5 if reader.is_empty() => (0, Properties::default()),
            Version::V5 => {
                let reason = reader.u8("reason code")?;
                let properties = if reader.is_empty() {
                    Properties::default()
                } else {
                    Properties::decode(&mut reader, Allowed::ACK)?
                };
                (reason, properties)
            }
        };
        if !reader.is_empty() {
            return Err(MqttDecodeError::Malformed {
                field: "acknowledgement",
                reason: "bytes after the properties",
            });
        }
        Ok(Ack {
            kind,
            packet_id,
            reason,
            properties,
        })
    }

    pub(crate) fn encode(&self, version: Version, out: &mut Vec<u8>) {
        let mut body = self.packet_id.get().to_be_bytes().to_vec();
        if version == Version::V5 && (self.reason != 0 || self.properties != Properties::default()) {
            body.push(self.reason);
            if self.properties != Properties::default() {
                self.properties.encode(&mut body);
            }
        }
        frame(self.kind.first_byte(), &body, out);
    }
}
