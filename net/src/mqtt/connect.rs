//! CONNECT and CONNACK, MQTT 3.1.1 (protocol level 4) and 5.0 (level 5).
//!
//! ```text
//!  CONNECT  (fixed header 0x10: flags must be 0)
//!  +-----------------+-------+-------+------------+-------------+------------------------------+
//!  | protocol name   | level | flags | keep alive | properties  | payload                      |
//!  | string "MQTT"   | u8    | u8    | u16 (s)    | v5 only     | client id (string),          |
//!  |                 | 4 / 5 |       |            |             | [will properties (v5 only),  |
//!  |                 |       |       |            |             |  will topic, will payload],  |
//!  |                 |       |       |            |             | [user name], [password]      |
//!  +-----------------+-------+-------+------------+-------------+------------------------------+
//!  flags: bit 7 user name, 6 password, 5 will retain, 4-3 will QoS, 2 will,
//!         1 clean session (3.1.1) / clean start (5.0), 0 reserved (must be 0)
//!
//!  CONNACK  (fixed header 0x20)
//!  +------------------------------+-------------------------------+-------------+
//!  | acknowledge flags u8         | return code (3.1.1) /         | properties  |
//!  | bit 0 session present, 7-1 0 | reason code (5.0), u8         | v5 only     |
//!  +------------------------------+-------------------------------+-------------+
//! ```

use bytes::Bytes;

use super::{
    properties::{Allowed, Properties},
    topic::valid_topic_name,
    wire::{frame, put_binary, put_string, Reader},
    MqttDecodeError, QoS, Version,
};

/// The protocol name of 3.1.1 and 5.0.
const PROTOCOL_NAME: &str = "MQTT";

/// A client's will: published by the server when the connection ends
/// without a DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Where it is published.
    pub topic: String,
    /// What is published.
    pub payload: Bytes,
    /// At which QoS.
    pub qos: QoS,
    /// Whether it is retained.
    pub retain: bool,
    /// Its v5 properties (will delay, expiry, ...).
    pub properties: Properties,
}

/// CONNECT: the first packet of every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol level the client speaks.
    pub version: Version,
    /// Clean session (3.1.1) / clean start (5.0).
    pub clean_start: bool,
    /// Seconds the client promises between two packets (0: no keep alive).
    pub keep_alive_s: u16,
    /// The client identifier (may be empty).
    pub client_id: String,
    /// The will, if the client left one.
    pub will: Option<Will>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Bytes>,
    /// v5 properties (empty for 3.1.1).
    pub properties: Properties,
}

/// CONNACK: the server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server resumed a session it kept.
    pub session_present: bool,
    /// 3.1.1 return code or 5.0 reason code (0: accepted).
    pub code: u8,
    /// v5 properties (ignored for 3.1.1).
    pub properties: Properties,
}

impl Connect {
    /// Decodes a CONNECT body (after the fixed header).
    pub(crate) fn decode(body: Bytes) -> Result<Connect, MqttDecodeError> {
        let mut reader = Reader::new(body);
        let name = reader.binary("protocol name")?;
        if name.as_ref() != PROTOCOL_NAME.as_bytes() {
            return Err(MqttDecodeError::ProtocolName);
        }
        let level = reader.u8("protocol level")?;
        let version = Version::from_level(level).ok_or(MqttDecodeError::UnsupportedVersion { level })?;
        let flags = reader.u8("connect flags")?;
        if flags & 0x01 != 0 {
            return Err(MqttDecodeError::Malformed {
                field: "connect flags",
                reason: "reserved bit set",
            });
        }
        let has_username = flags & 0x80 != 0;
        let has_password = flags & 0x40 != 0;
        let will_retain = flags & 0x20 != 0;
        let will_qos = (flags >> 3) & 0x03;
        let has_will = flags & 0x04 != 0;
        let clean_start = flags & 0x02 != 0;
        let will_qos = QoS::from_bits(will_qos)?;
        if !has_will && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(MqttDecodeError::Malformed {
                field: "connect flags",
                reason: "will QoS or retain without a will",
            });
        }
        if version == Version::V311 && has_password && !has_username {
            return Err(MqttDecodeError::Malformed {
                field: "connect flags",
                reason: "a password without a user name (3.1.1)",
            });
        }
        let keep_alive_s = reader.u16("keep alive")?;
        let properties = match version {
            Version::V5 => Properties::decode(&mut reader, Allowed::CONNECT)?,
            Version::V311 => Properties::default(),
        };
        let client_id = reader.string("client id")?;
        let will = if has_will {
            let properties = match version {
                Version::V5 => Properties::decode(&mut reader, Allowed::WILL)?,
                Version::V311 => Properties::default(),
            };
            let topic = reader.string("will topic")?;
            if !valid_topic_name(&topic) {
                return Err(MqttDecodeError::TopicName);
            }
            let payload = reader.binary("will payload")?;
            Some(Will {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = has_username.then(|| reader.string("user name")).transpose()?;
        let password = has_password.then(|| reader.binary("password")).transpose()?;
        if !reader.is_empty() {
            return Err(MqttDecodeError::Malformed {
                field: "connect",
                reason: "bytes after the payload",
            });
        }
        Ok(Connect {
            version,
            clean_start,
            keep_alive_s,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::new();
        put_string(&mut body, PROTOCOL_NAME);
        body.push(self.version.level());
        let mut flags = 0u8;
        if self.username.is_some() {
            flags |= 0x80;
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if let Some(will) = &self.will {
            flags |= 0x04 | ((will.qos as u8) << 3);
            if will.retain {
                flags |= 0x20;
            }
        }
        if self.clean_start {
            flags |= 0x02;
        }
        body.push(flags);
        body.extend_from_slice(&self.keep_alive_s.to_be_bytes());
        if self.version == Version::V5 {
            self.properties.encode(&mut body);
        }
        put_string(&mut body, &self.client_id);
        if let Some(will) = &self.will {
            if self.version == Version::V5 {
                will.properties.encode(&mut body);
            }
            put_string(&mut body, &will.topic);
            put_binary(&mut body, &will.payload);
        }
        if let Some(username) = &self.username {
            put_string(&mut body, username);
        }
        if let Some(password) = &self.password {
            put_binary(&mut body, password);
        }
        frame(0x10, &body, out);
    }
}

impl ConnAck {
    pub(crate) fn decode(body: Bytes, version: Version) -> Result<ConnAck, MqttDecodeError> {
        let mut reader = Reader::new(body);
        let flags = reader.u8("acknowledge flags")?;
        if flags & 0xfe != 0 {
            return Err(MqttDecodeError::Malformed {
                field: "acknowledge flags",
                reason: "reserved bits set",
            });
        }
        let code = reader.u8("connect reason code")?;
        let properties = match version {
            Version::V5 => Properties::decode(&mut reader, Allowed::CONNACK)?,
            Version::V311 => Properties::default(),
        };
        if !reader.is_empty() {
            return Err(MqttDecodeError::Malformed {
                field: "connack",
                reason: "bytes after the properties",
            });
        }
        Ok(ConnAck {
            session_present: flags & 0x01 != 0,
            code,
            properties,
        })
    }

    pub(crate) fn encode(&self, version: Version, out: &mut Vec<u8>) {
        let mut body = vec![u8::from(self.session_present), self.code];
        if version == Version::V5 {
            self.properties.encode(&mut body);
        }
        frame(0x20, &body, out);
    }
}
