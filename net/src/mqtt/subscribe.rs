//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK.
//!
//! ```text
//!  SUBSCRIBE  (fixed header 0x82: flags must be 0b0010)
//!  +-------------------+-------------+------------------------------------------+
//!  | packet identifier | properties  | payload: one or more                     |
//!  | u16 ≠ 0           | v5 only     |   topic filter (string), options (u8)    |
//!  +-------------------+-------------+------------------------------------------+
//!  options: bits 1-0 maximum QoS (3 is malformed); v5 only: bit 2 no local,
//!           bit 3 retain as published, bits 5-4 retain handling (3 is
//!           malformed); every other bit reserved (must be 0)
//!
//!  SUBACK  (0x90)        packet identifier u16, properties (v5), one return/reason code per filter
//!  UNSUBSCRIBE  (0xA2)   packet identifier u16, properties (v5), one or more topic filters (strings)
//!  UNSUBACK  (0xB0)      packet identifier u16, properties and one reason code per filter (v5 only)
//! ```
//!
//! Filters are only read here; whether each is a valid filter the engine
//! decides per filter (a v5 SUBACK refuses one filter, not the packet).

use bytes::Bytes;

use super::{
    properties::{Allowed, Properties},
    wire::{frame, put_string, Reader},
    MqttDecodeError, PacketId, QoS, Version,
};

/// What a subscriber asks of one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// Highest QoS it wants messages delivered at.
    pub qos: QoS,
    /// v5: not to receive its own publications.
    pub no_local: bool,
    /// v5: keep the RETAIN flag as published.
    pub retain_as_published: bool,
    /// v5: 0 send retained messages at subscribe, 1 only for a new
    /// subscription, 2 never.
    pub retain_handling: u8,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Identifier the SUBACK answers.
    pub packet_id: PacketId,
    /// v5 properties (a subscription identifier, user properties).
    pub properties: Properties,
    /// The filters, in order, at least one.
    pub filters: Vec<(String, SubscriptionOptions)>,
}

/// SUBACK: one code per filter of the SUBSCRIBE, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The SUBSCRIBE's identifier.
    pub packet_id: PacketId,
    /// v5 properties.
    pub properties: Properties,
    /// Granted QoS (0, 1, 2) or a failure code (0x80 and up).
    pub codes: Vec<u8>,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Identifier the UNSUBACK answers.
    pub packet_id: PacketId,
    /// v5 properties.
    pub properties: Properties,
    /// The filters, in order, at least one.
    pub filters: Vec<String>,
}

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// The UNSUBSCRIBE's identifier.
    pub packet_id: PacketId,
    /// v5 properties.
    pub properties: Properties,
    /// v5: one reason code per filter (0 success, 0x11 no subscription
    /// existed); empty for 3.1.1.
    pub codes: Vec<u8>,
}

/// Reads what every packet of this family starts with: the packet
/// identifier and, in v5, the properties `allowed`; returns the reader at
/// the payload.
fn decode_head(
    body: Bytes,
    version: Version,
    allowed: Allowed,
) -> Result<(Reader, PacketId, Properties), MqttDecodeError> {
    let mut reader = Reader::new(body);
    let packet_id = PacketId::decode(&mut reader)?;
    let properties = match version {
        Version::V5 => Properties::decode(&mut reader, allowed)?,
        Version::V311 => Properties::default(),
    };
    Ok((reader, packet_id, properties))
}

/// The start of a body of this family: the packet identifier and, in v5,
/// the properties.
fn encode_head(packet_id: PacketId, properties: &Properties, version: Version) -> Vec<u8> {
    let mut body = packet_id.get().to_be_bytes().to_vec();
    if version == Version::V5 {
        properties.encode(&mut body);
    }
    body
}

impl SubscriptionOptions {
    fn decode(byte: u8, version: Version) -> Result<SubscriptionOptions, MqttDecodeError> {
        let reserved = match version {
            Version::V311 => 0xfc,
            Version::V5 => 0xc0,
        };
        if byte & reserved != 0 {
            return Err(MqttDecodeError::Malformed {
                field: "subscription options",
                reason: "reserved bits set",
            });
        }
        let retain_handling = (byte >> 4) & 0x03;
        if retain_handling == 3 {
            return Err(MqttDecodeError::Malformed {
                field: "subscription options",
                reason: "retain handling 3",
            });
        }
        Ok(SubscriptionOptions {
            qos: QoS::from_bits(byte & 0x03)?,
            no_local: byte & 0x04 != 0,
            retain_as_published: byte & 0x08 != 0,
            retain_handling,
        })
    }

    fn encode(self, version: Version) -> u8 {
        let qos = self.qos as u8;
        match version {
            Version::V311 => qos,
            Version::V5 => {
                qos | (u8::from(self.no_local) << 2)
                    | (u8::from(self.retain_as_published) << 3)
                    | (self.retain_handling << 4)
            }
        }
    }
}

impl Subscribe {
    pub(crate) fn decode(body: Bytes, version: Version) -> Result<Subscribe, MqttDecodeError> {
        let (mut reader, packet_id, properties) = decode_head(body, version, Allowed::SUBSCRIBE)?;
        if properties.subscription_ids.len() > 1 {
            return Err(MqttDecodeError::Protocol {
                reason: "more than one subscription identifier",
            });
        }
        // Each filter takes at least three bytes, so the packet size bounds this.
        let mut filters = Vec::new();
        while !reader.is_empty() {
            let filter = reader.string("topic filter")?;
            let options = SubscriptionOptions::decode(reader.u8("subscription options")?, version)?;
            filters.push((filter, options));
        }
        if filters.is_empty() {
            return Err(MqttDecodeError::Protocol {
                reason: "SUBSCRIBE without a topic filter",
            });
        }
        Ok(Subscribe {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn encode(&self, version: Version, out: &mut Vec<u8>) {
        let mut body = encode_head(self.packet_id, &self.properties, version);
        for (filter, options) in &self.filters {
            put_string(&mut body, filter);
            body.push(options.encode(version));
        }
        frame(0x82, &body, out);
    }
}

impl SubAck {
    pub(crate) fn decode(body: Bytes, version: Version) -> Result<SubAck, MqttDecodeError> {
        let (mut reader, packet_id, properties) = decode_head(body, version, Allowed::ACK)?;
        let codes = reader.rest().to_vec();
        if codes.is_empty() {
            return Err(MqttDecodeError::Protocol {
                reason: "SUBACK without a code",
            });
        }
        Ok(SubAck {
            packet_id,
            properties,
            codes,
        })
    }

    pub(crate) fn encode(&self, version: Version, out: &mut Vec<u8>) {
        let mut body = encode_head(self.packet_id, &self.properties, version);
        body.extend_from_slice(&self.codes);
        frame(0x90, &body, out);
    }
}

impl Unsubscribe {
    pub(crate) fn decode(body: Bytes, version: Version) -> Result<Unsubscribe, MqttDecodeError> {
        let (mut reader, packet_id, properties) = decode_head(body, version, Allowed::UNSUBSCRIBE)?;
        let mut filters = Vec::new();
        while !reader.is_empty() {
            filters.push(reader.string("topic filter")?);
        }
        if filters.is_empty() {
            return Err(MqttDecodeError::Protocol {
                reason: "UNSUBSCRIBE without a topic filter",
            });
        }
        Ok(Unsubscribe {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn encode(&self, version: Version, out: &mut Vec<u8>) {
        let mut body = encode_head(self.packet_id, &self.properties, version);
        for filter in &self.filters {
            put_string(&mut body, filter);
        }
        frame(0xa2, &body, out);
    }
}

impl UnsubAck {
    pub(crate) fn decode(body: Bytes, version: Version) -> Result<UnsubAck, MqttDecodeError> {
        let (mut reader, packet_id, properties) = decode_head(body, version, Allowed::ACK)?;
        let codes = reader.rest().to_vec();
        if version == Version::V311 && !codes.is_empty() {
            return Err(MqttDecodeError::Malformed {
                field: "unsuback",
                reason: "a payload in 3.1.1",
            });
        }
        Ok(UnsubAck {
            packet_id,
            properties,
            codes,
        })
    }

    pub(crate) fn encode(&self, version: Version, out: &mut Vec<u8>) {
        let mut body = encode_head(self.packet_id, &self.properties, version);
        if version == Version::V5 {
            body.extend_from_slice(&self.codes);
        }
        frame(0xb0, &body, out);
    }
}
