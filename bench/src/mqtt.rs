//! The MQTT 3.1.1 client side `bench --protocol mqtt` speaks: the packets a
//! publisher and a subscriber need, encoded and decoded here so the bench
//! stays a pure client of any MQTT broker (mosquitto, Shardline, …).
//!
//! ```text
//! fixed header:  | type (4 bits) | flags (4 bits) | remaining length: 1–4 bytes, 7 bits each, low first |
//! CONNECT   (1)  | 0x0004 "MQTT" | level 4 | flags 0x02 (clean session) | keep-alive u16 | client id (u16 len + bytes) |
//! CONNACK   (2)  | session present u8 | return code u8 (0 = accepted) |
//! PUBLISH   (3)  flags: DUP(3) QoS(2..1) RETAIN(0) | topic (u16 len + bytes) | packet id u16 if QoS > 0 | payload |
//! PUBACK    (4)  | packet id u16 |
//! SUBSCRIBE (8)  flags 0b0010 | packet id u16 | filter (u16 len + bytes) | requested QoS u8 |
//! SUBACK    (9)  | packet id u16 | granted QoS u8 (0x80 = refused) |
//! PINGREQ  (12), PINGRESP (13), DISCONNECT (14): no body
//! ```
//!
//! Every length read from the broker is bounded ([`PACKET_BYTES_MAX`]);
//! a packet that does not parse is a [`BenchError::Protocol`].

use std::io::{Read, Write};

use crate::error::BenchError;

/// Largest packet accepted from the broker: the largest message the bench
/// sends plus headers.
pub const PACKET_BYTES_MAX: usize = crate::cli::MESSAGE_BYTES_MAX + 64 * 1024;

/// Keep-alive asked in CONNECT (s); the bench sends something far more often.
const KEEP_ALIVE_S: u16 = 60;

/// MQTT 3.1.1's protocol level.
const PROTOCOL_LEVEL_311: u8 = 4;

/// A packet the bench reads.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// CONNACK with its return code.
    ConnAck(u8),
    /// SUBACK: packet id and the granted QoS (0x80: refused).
    SubAck(u16, u8),
    /// PUBLISH: QoS, packet id (QoS > 0), payload.
    Publish {
        qos: u8,
        packet_id: Option<u16>,
        payload: Vec<u8>,
    },
    /// PUBACK for a packet id.
    PubAck(u16),
    /// PINGRESP.
    PingResp,
    /// Any other packet type (ignored).
    Other(u8),
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    let length = u16::try_from(text.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(text.as_bytes().get(..usize::from(length)).unwrap_or_default());
}

/// `first` byte, remaining length and `body` as one packet.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    let mut length = body.len();
    loop {
        let mut byte = u8::try_from(length % 128).unwrap_or(0);
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if length == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// CONNECT with a clean session.
pub fn connect(client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_string(&mut body, "MQTT");
    body.push(PROTOCOL_LEVEL_311);
    body.push(0x02);
    body.extend_from_slice(&KEEP_ALIVE_S.to_be_bytes());
    put_string(&mut body, client_id);
    packet(0x10, &body)
}

/// SUBSCRIBE to one filter.
pub fn subscribe(packet_id: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    put_string(&mut body, filter);
    body.push(qos);
    packet(0x82, &body)
}

/// PUBLISH at `qos` (a packet id is sent only with QoS > 0).
pub fn publish(topic: &str, qos: u8, packet_id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
    put_string(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// PUBACK of a received QoS 1 publication.
pub fn puback(packet_id: u16) -> Vec<u8> {
    packet(0x40, &packet_id.to_be_bytes())
}

/// PINGREQ.
pub fn pingreq() -> Vec<u8> {
    packet(0xC0, &[])
}

/// DISCONNECT.
pub fn disconnect() -> Vec<u8> {
    packet(0xE0, &[])
}

/// Reads one packet from `stream`; `Ok(None)` if the broker closed it
/// between packets.
pub fn read_packet(stream: &mut impl Read, address: &str) -> Result<Option<Incoming>, BenchError> {
    let protocol = |detail: String| BenchError::Protocol {
        address: address.to_string(),
        detail,
    };
    let io = |source: std::io::Error| BenchError::Io {
        address: address.to_string(),
        context: "reading an MQTT packet".to_string(),
        source,
    };
    let mut first = [0u8; 1];
    match stream.read(&mut first) {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(io(e)),
    }
    let mut length = 0usize;
    for shift in 0..4 {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).map_err(io)?;
        length |= usize::from(byte[0] & 0x7f) << (7 * shift);
        if byte[0] & 0x80 == 0 {
            break;
        }
        if shift == 3 {
            return Err(protocol("remaining length longer than 4 bytes".into()));
        }
    }
    if length > PACKET_BYTES_MAX {
        return Err(protocol(format!("a packet of {length} bytes")));
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).map_err(io)?;
    let kind = first[0] >> 4;
    let u16_at = |at: usize| -> Result<u16, BenchError> {
        body.get(at..at + 2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_be_bytes)
            .ok_or_else(|| protocol(format!("packet type {kind} too short")))
    };
    Ok(Some(match kind {
        2 => Incoming::ConnAck(*body.get(1).ok_or_else(|| protocol("short CONNACK".into()))?),
        9 => Incoming::SubAck(u16_at(0)?, *body.get(2).ok_or_else(|| protocol("short SUBACK".into()))?),
        3 => {
            let qos = (first[0] >> 1) & 0x03;
            let topic_length = usize::from(u16_at(0)?);
            let mut at = 2 + topic_length;
            let packet_id = if qos > 0 {
                let id = u16_at(at)?;
                at += 2;
                Some(id)
            } else {
                None
            };
            let payload = body
                .get(at..)
                .ok_or_else(|| protocol("PUBLISH topic past its end".into()))?
                .to_vec();
            Incoming::Publish {
                qos,
                packet_id,
                payload,
            }
        }
        4 => Incoming::PubAck(u16_at(0)?),
        13 => Incoming::PingResp,
        other => Incoming::Other(other),
    }))
}

/// Writes `bytes` whole.
pub fn send(stream: &mut impl Write, bytes: &[u8], address: &str) -> Result<(), BenchError> {
    stream.write_all(bytes).map_err(|source| BenchError::Io {
        address: address.to_string(),
        context: "writing an MQTT packet".to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;

    #[test]
    fn packets_read_back_as_written() {
        let payload = vec![7u8; 300];
        let mut wire = publish("a/b", 1, 513, &payload);
        wire.extend(publish("a/b", 0, 0, b"x"));
        wire.extend(packet(0x40, &9u16.to_be_bytes()));
        wire.extend(packet(0x20, &[0, 0]));
        wire.extend(packet(0x90, &[0, 5, 1]));
        let mut reader = wire.as_slice();
        let read = |r: &mut &[u8]| read_packet(r, "test").unwrap().unwrap();
        assert_eq!(
            read(&mut reader),
            Incoming::Publish {
                qos: 1,
                packet_id: Some(513),
                payload
            }
        );
        assert_eq!(
            read(&mut reader),
            Incoming::Publish {
                qos: 0,
                packet_id: None,
                payload: b"x".to_vec()
            }
        );
        assert_eq!(read(&mut reader), Incoming::PubAck(9));
        assert_eq!(read(&mut reader), Incoming::ConnAck(0));
        assert_eq!(read(&mut reader), Incoming::SubAck(5, 1));
        assert!(read_packet(&mut reader, "test").unwrap().is_none());
    }

    #[test]
    fn lying_lengths_are_errors() {
        let mut too_long: &[u8] = &[0x30, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(read_packet(&mut too_long, "test").is_err());
        let mut huge: &[u8] = &[0x30, 0xff, 0xff, 0xff, 0x7f];
        assert!(read_packet(&mut huge, "test").is_err());
        let mut short_topic: &[u8] = &[0x30, 0x02, 0x00, 0x09];
        assert!(read_packet(&mut short_topic, "test").is_err());
    }
}
