//! # MQTT 3.1.1 and 5.0 codec
//!
//! Turns bytes from an MQTT connection into typed [`Packet`]s and packets
//! back into bytes, for both protocol levels the broker speaks: 3.1.1
//! (level 4) and 5.0 (level 5). It owns no state: the engine keeps each
//! connection's buffer and session on the shard that accepted it, and
//! passes the connection's protocol level (known once CONNECT arrived) to
//! every call. One file per packet family, each with its byte layout drawn
//! at its top: `wire.rs` (fixed header and primitives), `properties.rs`
//! (the v5 property block), `connect.rs`, `publish.rs`, `subscribe.rs`,
//! `auth.rs` (v5 enhanced authentication);
//! `topic.rs` holds the topic name and filter rules and filter matching.
//!
//! ## Bad input
//! Every decoder reads through a bounds-checked reader and returns a
//! [`MqttDecodeError`]; nothing panics on input bytes. A packet longer than
//! the caller's `packet_bytes_max` is refused as soon as its fixed header
//! has arrived, before its body is buffered. Invalid UTF-8 (or U+0000) in
//! a string, QoS 3, a wildcard in a PUBLISH topic, reserved flag bits set,
//! an unknown or misplaced v5 property, or bytes left over inside a packet
//! are all decode errors; the engine maps each error to an MQTT reason code
//! in one place and closes only that connection.
//!
//! ## Not decoded
//! Protocol level 3 (MQTT 3.1, protocol name "MQIsdp") is refused as an
//! unsupported protocol version.

mod auth;
mod connect;
mod properties;
mod publish;
mod subscribe;
mod topic;
mod wire;

use std::{fmt, num::NonZeroU16};

use bytes::Bytes;

pub use auth::{Auth, AUTH_CONTINUE, AUTH_REAUTHENTICATE, AUTH_SUCCESS};
pub use connect::{ConnAck, Connect, Will};
pub use properties::{Properties, PropertyFields};
pub use publish::{Ack, AckKind, Publish};
pub use subscribe::{SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe};
pub use topic::{filter_matches, shared_filter, valid_topic_filter, valid_topic_name};

use properties::Allowed;
use wire::{frame, Reader};

/// The protocol level a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// MQTT 3.1.1, protocol level 4.
    V311,
    /// MQTT 5.0, protocol level 5.
    V5,
}

impl Version {
    /// The version of protocol level `level`, if it is one spoken here.
    pub fn from_level(level: u8) -> Option<Version> {
        match level {
            4 => Some(Version::V311),
            5 => Some(Version::V5),
            _ => None,
        }
    }

    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }
}

/// Quality of service of a publication or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// 0: at most once.
    AtMostOnce = 0,
    /// 1: at least once (PUBACK).
    AtLeastOnce = 1,
    /// 2: exactly once (PUBREC, PUBREL, PUBCOMP).
    ExactlyOnce = 2,
}

impl QoS {
    /// QoS from its two wire bits; 3 is malformed.
    pub fn from_bits(bits: u8) -> Result<QoS, MqttDecodeError> {
        match bits {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            _ => Err(MqttDecodeError::Malformed {
                field: "QoS",
                reason: "QoS 3",
            }),
        }
    }
}

/// A packet identifier: non-zero (MQTT-2.2.1-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketId(NonZeroU16);

impl PacketId {
    /// `Some` for every identifier but 0.
    pub fn new(id: u16) -> Option<PacketId> {
        NonZeroU16::new(id).map(PacketId)
    }

    /// The identifier's value.
    pub fn get(self) -> u16 {
        self.0.get()
    }

    fn decode(reader: &mut Reader) -> Result<PacketId, MqttDecodeError> {
        PacketId::new(reader.u16("packet identifier")?).ok_or(MqttDecodeError::Malformed {
            field: "packet identifier",
            reason: "0",
        })
    }
}

/// DISCONNECT, from either side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// v5 reason code (0: normal; 0x04: publish the will); 0 for 3.1.1.
    pub reason: u8,
    /// v5 properties.
    pub properties: Properties,
}

/// One MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (client).
    Connect(Box<Connect>),
    /// CONNACK (server).
    ConnAck(ConnAck),
    /// PUBLISH (both).
    Publish(Publish),
    /// PUBACK, PUBREC, PUBREL, PUBCOMP (both).
    Ack(Ack),
    /// SUBSCRIBE (client).
    Subscribe(Subscribe),
    /// SUBACK (server).
    SubAck(SubAck),
    /// UNSUBSCRIBE (client).
    Unsubscribe(Unsubscribe),
    /// UNSUBACK (server).
    UnsubAck(UnsubAck),
    /// PINGREQ (client).
    PingReq,
    /// PINGRESP (server).
    PingResp,
    /// DISCONNECT (both in v5; client only in 3.1.1).
    Disconnect(Disconnect),
    /// AUTH (both; v5 only).
    Auth(Auth),
}

impl Packet {
    /// The packet's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::Ack(ack) => match ack.kind {
                AckKind::PubAck => "PUBACK",
                AckKind::PubRec => "PUBREC",
                AckKind::PubRel => "PUBREL",
                AckKind::PubComp => "PUBCOMP",
            },
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}

/// Why bytes from an MQTT connection are not a valid packet. Nothing is
/// partially applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MqttDecodeError {
    /// The packet breaks the format: `field` is wrong for `reason`.
    Malformed {
        /// The field being read.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The packet is well formed but breaks a protocol rule.
    Protocol {
        /// Which rule.
        reason: &'static str,
    },
    /// The fixed header announces a packet longer than the bound.
    PacketTooLarge {
        /// The packet's size, fixed header included.
        packet_bytes: usize,
        /// The bound.
        packet_bytes_max: usize,
    },
    /// CONNECT names a protocol level other than 4 or 5.
    UnsupportedVersion {
        /// The level given.
        level: u8,
    },
    /// CONNECT's protocol name is not "MQTT".
    ProtocolName,
    /// A PUBLISH or will topic is empty or holds a wildcard.
    TopicName,
    /// The first packet of a connection is not CONNECT.
    FirstPacketNotConnect,
}

impl fmt::Display for MqttDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MqttDecodeError::Malformed { field, reason } => write!(f, "malformed {field}: {reason}"),
            MqttDecodeError::Protocol { reason } => write!(f, "protocol error: {reason}"),
            MqttDecodeError::PacketTooLarge {
                packet_bytes,
                packet_bytes_max,
            } => write!(
                f,
                "packet of {packet_bytes} bytes, above the {packet_bytes_max}-byte bound"
            ),
            MqttDecodeError::UnsupportedVersion { level } => write!(f, "unsupported protocol level {level}"),
            MqttDecodeError::ProtocolName => write!(f, "protocol name is not MQTT"),
            MqttDecodeError::TopicName => write!(f, "invalid topic name"),
            MqttDecodeError::FirstPacketNotConnect => write!(f, "the first packet is not CONNECT"),
        }
    }
}

impl std::error::Error for MqttDecodeError {}

/// Packet types (the high nibble of the first byte).
const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBSCRIBE: u8 = 10;
const UNSUBACK: u8 = 11;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;
const AUTH: u8 = 15;

/// Decodes the first packet of `input`, if all of it has arrived.
///
/// `version` is the connection's protocol level, `None` until CONNECT was
/// decoded (then only CONNECT is accepted: it carries its own level).
/// Returns the packet and how many bytes of `input` it took, `Ok(None)`
/// when more bytes are needed (never when the announced size is above
/// `packet_bytes_max`: that is an error at once).
pub fn decode_packet(
    input: &Bytes,
    version: Option<Version>,
    packet_bytes_max: usize,
) -> Result<Option<(Packet, usize)>, MqttDecodeError> {
    let Some(&first) = input.first() else {
        return Ok(None);
    };
    // The remaining length: up to four bytes after the first.
    let mut remaining = 0usize;
    let mut header_bytes = None;
    for index in 0..4usize {
        let Some(&byte) = input.get(1 + index) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            header_bytes = Some(2 + index);
            break;
        }
    }
    let header_bytes = header_bytes.ok_or(MqttDecodeError::Malformed {
        field: "remaining length",
        reason: "longer than four bytes",
    })?;
    let packet_bytes = header_bytes + remaining;
    if packet_bytes > packet_bytes_max {
        return Err(MqttDecodeError::PacketTooLarge {
            packet_bytes,
            packet_bytes_max,
        });
    }
    let kind = first >> 4;
    let flags = first & 0x0f;
    if version.is_none() && kind != CONNECT {
        return Err(MqttDecodeError::FirstPacketNotConnect);
    }
    if input.len() < packet_bytes {
        return Ok(None);
    }
    let body = input.slice(header_bytes..packet_bytes);
    let packet = decode_body(kind, flags, body, version)?;
    Ok(Some((packet, packet_bytes)))
}

/// The flags every packet type but PUBLISH must carry.
fn fixed_flags(kind: u8) -> u8 {
    match kind {
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => 0x02,
        _ => 0x00,
    }
}

fn decode_body(kind: u8, flags: u8, body: Bytes, version: Option<Version>) -> Result<Packet, MqttDecodeError> {
    if kind != PUBLISH && flags != fixed_flags(kind) {
        return Err(MqttDecodeError::Malformed {
            field: "fixed header flags",
            reason: "reserved flags are not as the packet type requires",
        });
    }
    if kind == CONNECT {
        return Connect::decode(body).map(|connect| Packet::Connect(Box::new(connect)));
    }
    let version = version.ok_or(MqttDecodeError::FirstPacketNotConnect)?;
    let empty = |packet: Packet, body: &Bytes| {
        if body.is_empty() {
            Ok(packet)
        } else {
            Err(MqttDecodeError::Malformed {
                field: packet.name(),
                reason: "a body where none belongs",
            })
        }
    };
    match kind {
        CONNACK => ConnAck::decode(body, version).map(Packet::ConnAck),
        PUBLISH => Publish::decode(flags, body, version).map(Packet::Publish),
        PUBACK => Ack::decode(AckKind::PubAck, body, version).map(Packet::Ack),
        PUBREC => Ack::decode(AckKind::PubRec, body, version).map(Packet::Ack),
        PUBREL => Ack::decode(AckKind::PubRel, body, version).map(Packet::Ack),
        PUBCOMP => Ack::decode(AckKind::PubComp, body, version).map(Packet::Ack),
        SUBSCRIBE => Subscribe::decode(body, version).map(Packet::Subscribe),
        SUBACK => SubAck::decode(body, version).map(Packet::SubAck),
        UNSUBSCRIBE => Unsubscribe::decode(body, version).map(Packet::Unsubscribe),
        UNSUBACK => UnsubAck::decode(body, version).map(Packet::UnsubAck),
        PINGREQ => empty(Packet::PingReq, &body),
        PINGRESP => empty(Packet::PingResp, &body),
        DISCONNECT => decode_disconnect(body, version),
        AUTH if version == Version::V5 => Auth::decode(body).map(Packet::Auth),
        _ => Err(MqttDecodeError::Malformed {
            field: "packet type",
            reason: "reserved packet type",
        }),
    }
}

fn decode_disconnect(body: Bytes, version: Version) -> Result<Packet, MqttDecodeError> {
    let mut reader = Reader::new(body);
    let mut disconnect = Disconnect {
        reason: 0,
        properties: Properties::default(),
    };
    if version == Version::V5 && !reader.is_empty() {
        disconnect.reason = reader.u8("disconnect reason code")?;
        if !reader.is_empty() {
            disconnect.properties = Properties::decode(&mut reader, Allowed::DISCONNECT)?;
        }
    }
    if !reader.is_empty() {
        return Err(MqttDecodeError::Malformed {
            field: "DISCONNECT",
            reason: "bytes after the properties",
        });
    }
    Ok(Packet::Disconnect(disconnect))
}

/// Appends `packet` as `version` frames it. The caller keeps within the
/// sizes the format can say (strings under 64 KiB, packets under 256 MiB).
pub fn encode_packet(packet: &Packet, version: Version, out: &mut Vec<u8>) {
    let before = out.len();
    match packet {
        Packet::Connect(connect) => connect.encode(out),
        Packet::ConnAck(connack) => connack.encode(version, out),
        Packet::Publish(publish) => publish.encode(version, out),
        Packet::Ack(ack) => ack.encode(version, out),
        Packet::Subscribe(subscribe) => subscribe.encode(version, out),
        Packet::SubAck(suback) => suback.encode(version, out),
        Packet::Unsubscribe(unsubscribe) => unsubscribe.encode(version, out),
        Packet::UnsubAck(unsuback) => unsuback.encode(version, out),
        Packet::PingReq => frame(PINGREQ << 4, &[], out),
        Packet::PingResp => frame(PINGRESP << 4, &[], out),
        Packet::Disconnect(disconnect) => {
            let mut body = Vec::new();
            if version == Version::V5 && (disconnect.reason != 0 || disconnect.properties != Properties::default()) {
                body.push(disconnect.reason);
                if disconnect.properties != Properties::default() {
                    disconnect.properties.encode(&mut body);
                }
            }
            frame(DISCONNECT << 4, &body, out);
        }
        Packet::Auth(auth) => auth.encode(out),
    }
    assert!(out.len() >= before + 2, "every packet has a fixed header");
}

#[cfg(test)]
mod tests;
