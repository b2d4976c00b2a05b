//! MQTT 5.0 properties: the block every v5 packet (and a will) carries in
//! its variable header. MQTT 3.1.1 packets have no such block.
//!
//! ```text
//!  +-----------------------------+--------------------------------------------+
//!  | property length             | properties, back to back:                  |
//!  | variable byte integer:      |   identifier (variable byte integer,       |
//!  | bytes of the properties     |   one byte for every defined one)          |
//!  | that follow                 |   value: byte, two-byte, four-byte or      |
//!  |                             |   variable integer, UTF-8 string, binary   |
//!  |                             |   data, or a string pair (user property)   |
//!  +-----------------------------+--------------------------------------------+
//! ```
//!
//! One [`Properties`] type serves every packet; each packet names the
//! identifiers it allows ([`Allowed`]). An identifier the packet does not
//! allow, an unknown one, or one given twice (other than user properties
//! and subscription identifiers) is a protocol error (MQTT-2.2.2-2 and the
//! "It is a Protocol Error to include ... more than once" rules).

use bytes::Bytes;

use super::{
    wire::{put_binary, put_string, put_variable_integer, Reader},
    MqttDecodeError,
};

/// Payload format indicator.
const PAYLOAD_FORMAT: u8 = 0x01;
/// Message expiry interval.
const MESSAGE_EXPIRY: u8 = 0x02;
/// Content type.
const CONTENT_TYPE: u8 = 0x03;
/// Response topic.
const RESPONSE_TOPIC: u8 = 0x08;
/// Correlation data.
const CORRELATION_DATA: u8 = 0x09;
/// Subscription identifier.
const SUBSCRIPTION_ID: u8 = 0x0b;
/// Session expiry interval.
const SESSION_EXPIRY: u8 = 0x11;
/// Assigned client identifier.
const ASSIGNED_CLIENT_ID: u8 = 0x12;
/// Server keep alive.
const SERVER_KEEP_ALIVE: u8 = 0x13;
/// Authentication method.
const AUTH_METHOD: u8 = 0x15;
/// Authentication data.
const AUTH_DATA: u8 = 0x16;
/// Request problem information.
const REQUEST_PROBLEM_INFO: u8 = 0x17;
/// Will delay interval.
const WILL_DELAY: u8 = 0x18;
/// Request response information.
const REQUEST_RESPONSE_INFO: u8 = 0x19;
/// Reason string.
const REASON_STRING: u8 = 0x1f;
/// Receive maximum.
const RECEIVE_MAXIMUM: u8 = 0x21;
/// Topic alias maximum.
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
/// Topic alias.
const TOPIC_ALIAS: u8 = 0x23;
/// Maximum QoS.
const MAXIMUM_QOS: u8 = 0x24;
/// Retain available.
const RETAIN_AVAILABLE: u8 = 0x25;
/// User property.
const USER_PROPERTY: u8 = 0x26;
/// Maximum packet size.
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
/// Wildcard subscription available.
const WILDCARD_AVAILABLE: u8 = 0x28;
/// Subscription identifier available.
const SUBSCRIPTION_IDS_AVAILABLE: u8 = 0x29;
/// Shared subscription available.
const SHARED_AVAILABLE: u8 = 0x2a;

/// Which property identifiers a packet may carry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Allowed(&'static [u8]);

impl Allowed {
    pub(crate) const CONNECT: Allowed = Allowed(&[
        SESSION_EXPIRY,
        AUTH_METHOD,
        AUTH_DATA,
        REQUEST_PROBLEM_INFO,
        REQUEST_RESPONSE_INFO,
        RECEIVE_MAXIMUM,
        TOPIC_ALIAS_MAXIMUM,
        USER_PROPERTY,
        MAXIMUM_PACKET_SIZE,
    ]);
    pub(crate) const WILL: Allowed = Allowed(&[
        PAYLOAD_FORMAT,
        MESSAGE_EXPIRY,
        CONTENT_TYPE,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        WILL_DELAY,
        USER_PROPERTY,
    ]);
    pub(crate) const CONNACK: Allowed = Allowed(&[
        SESSION_EXPIRY,
        ASSIGNED_CLIENT_ID,
        SERVER_KEEP_ALIVE,
        AUTH_METHOD,
        AUTH_DATA,
        REASON_STRING,
        RECEIVE_MAXIMUM,
        TOPIC_ALIAS_MAXIMUM,
        MAXIMUM_QOS,
        RETAIN_AVAILABLE,
        USER_PROPERTY,
        MAXIMUM_PACKET_SIZE,
        WILDCARD_AVAILABLE,
        SUBSCRIPTION_IDS_AVAILABLE,
        SHARED_AVAILABLE,
    ]);
    pub(crate) const PUBLISH: Allowed = Allowed(&[
        PAYLOAD_FORMAT,
        MESSAGE_EXPIRY,
        CONTENT_TYPE,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        SUBSCRIPTION_ID,
        TOPIC_ALIAS,
        USER_PROPERTY,
    ]);
    /// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, UNSUBSCRIBE.
    pub(crate) const ACK: Allowed = Allowed(&[REASON_STRING, USER_PROPERTY]);
    pub(crate) const SUBSCRIBE: Allowed = Allowed(&[SUBSCRIPTION_ID, USER_PROPERTY]);
    pub(crate) const UNSUBSCRIBE: Allowed = Allowed(&[USER_PROPERTY]);
    pub(crate) const DISCONNECT: Allowed = Allowed(&[SESSION_EXPIRY, REASON_STRING, USER_PROPERTY]);
    pub(crate) const AUTH: Allowed = Allowed(&[AUTH_METHOD, AUTH_DATA, REASON_STRING, USER_PROPERTY]);
}

/// The properties of one v5 packet, held out of line ([`PropertyFields`]
/// behind a box, none when the packet has none): every 3.1.1 packet and
/// most v5 ones carry no property, and a packet value stays small as it
/// moves from the decoder through a session's events and actions. Reads go
/// through `Deref` (an absent block reads as empty); the first write
/// through `DerefMut` makes the block.
#[derive(Clone, Default)]
pub struct Properties(Option<Box<PropertyFields>>);

/// What no property given reads as.
static EMPTY: PropertyFields = PropertyFields {
    payload_format: None,
    message_expiry_s: None,
    content_type: None,
    response_topic: None,
    correlation_data: None,
    subscription_ids: Vec::new(),
    session_expiry_s: None,
    assigned_client_id: None,
    server_keep_alive_s: None,
    auth_method: None,
    auth_data: None,
    request_problem_info: None,
    will_delay_s: None,
    request_response_info: None,
    reason_string: None,
    receive_maximum: None,
    topic_alias_maximum: None,
    topic_alias: None,
    maximum_qos: None,
    retain_available: None,
    user_properties: Vec::new(),
    maximum_packet_size: None,
    wildcard_available: None,
    subscription_ids_available: None,
    shared_available: None,
};

impl std::ops::Deref for Properties {
    type Target = PropertyFields;

    fn deref(&self) -> &PropertyFields {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl std::ops::DerefMut for Properties {
    fn deref_mut(&mut self) -> &mut PropertyFields {
        self.0.get_or_insert_with(Box::default)
    }
}

impl PartialEq for Properties {
    fn eq(&self, other: &Properties) -> bool {
        **self == **other
    }
}

impl Eq for Properties {}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl From<PropertyFields> for Properties {
    fn from(fields: PropertyFields) -> Properties {
        if fields == EMPTY {
            Properties(None)
        } else {
            Properties(Some(Box::new(fields)))
        }
    }
}

impl Properties {
    /// Reads a property block (its length first) allowed by `allowed`.
    pub(crate) fn decode(reader: &mut Reader, allowed: Allowed) -> Result<Properties, MqttDecodeError> {
        PropertyFields::decode(reader, allowed).map(Properties::from)
    }
}

/// The properties of one v5 packet; `None` / empty for those not given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertyFields {
    /// 0x01: 0 = unspecified bytes, 1 = UTF-8 text.
    pub payload_format: Option<u8>,
    /// 0x02: seconds a message lives.
    pub message_expiry_s: Option<u32>,
    /// 0x03: the payload's content type.
    pub content_type: Option<String>,
    /// 0x08: request/response: where to answer.
    pub response_topic: Option<String>,
    /// 0x09: request/response: what to answer with.
    pub correlation_data: Option<Bytes>,
    /// 0x0B: subscription identifiers (several on a forwarded PUBLISH).
    pub subscription_ids: Vec<u32>,
    /// 0x11: seconds a session outlives its connection.
    pub session_expiry_s: Option<u32>,
    /// 0x12: the client id the server chose.
    pub assigned_client_id: Option<String>,
    /// 0x13: the keep alive the server imposes (seconds).
    pub server_keep_alive_s: Option<u16>,
    /// 0x15: extended authentication method.
    pub auth_method: Option<String>,
    /// 0x16: extended authentication data.
    pub auth_data: Option<Bytes>,
    /// 0x17: whether the client wants reason strings and user properties on failures.
    pub request_problem_info: Option<u8>,
    /// 0x18: seconds to wait before publishing a will.
    pub will_delay_s: Option<u32>,
    /// 0x19: whether the client wants response information.
    pub request_response_info: Option<u8>,
    /// 0x1F: a human-readable reason.
    pub reason_string: Option<String>,
    /// 0x21: QoS 1 and 2 publications the sender accepts unacknowledged.
    pub receive_maximum: Option<u16>,
    /// 0x22: highest topic alias the sender accepts.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23: a topic alias.
    pub topic_alias: Option<u16>,
    /// 0x24: highest QoS the server supports.
    pub maximum_qos: Option<u8>,
    /// 0x25: whether the server keeps retained messages.
    pub retain_available: Option<u8>,
    /// 0x26: user properties, in order.
    pub user_properties: Vec<(String, String)>,
    /// 0x27: the largest packet the sender accepts.
    pub maximum_packet_size: Option<u32>,
    /// 0x28: whether wildcard subscriptions are supported.
    pub wildcard_available: Option<u8>,
    /// 0x29: whether subscription identifiers are supported.
    pub subscription_ids_available: Option<u8>,
    /// 0x2A: whether shared subscriptions are supported.
    pub shared_available: Option<u8>,
}

/// Sets `slot` once; a second value is a protocol error.
fn once<T>(slot: &mut Option<T>, value: T) -> Result<(), MqttDecodeError> {
    if slot.is_some() {
        return Err(MqttDecodeError::Protocol {
            reason: "a property given twice",
        });
    }
    *slot = Some(value);
    Ok(())
}

/// A byte property that must be 0 or 1.
fn flag(reader: &mut Reader, field: &'static str) -> Result<u8, MqttDecodeError> {
    let value = reader.u8(field)?;
    if value > 1 {
        return Err(MqttDecodeError::Protocol {
            reason: "a boolean property other than 0 or 1",
        });
    }
    Ok(value)
}

impl PropertyFields {
    /// Reads a property block (its length first) allowed by `allowed`.
    fn decode(reader: &mut Reader, allowed: Allowed) -> Result<PropertyFields, MqttDecodeError> {
        let length = reader.variable_integer("property length")?;
        let block = reader.take(usize::try_from(length).unwrap_or(usize::MAX), "properties")?;
        let mut block = Reader::new(block);
        let mut properties = PropertyFields::default();
        while !block.is_empty() {
            let id = block.variable_integer("property identifier")?;
            let id = u8::try_from(id).map_err(|_| MqttDecodeError::Protocol {
                reason: "unknown property identifier",
            })?;
            if !allowed.0.contains(&id) {
                return Err(MqttDecodeError::Protocol {
                    reason: "a property this packet may not carry",
                });
            }
            properties.decode_one(id, &mut block)?;
        }
        Ok(properties)
    }

    fn decode_one(&mut self, id: u8, block: &mut Reader) -> Result<(), MqttDecodeError> {
        match id {
            PAYLOAD_FORMAT => once(&mut self.payload_format, flag(block, "payload format")?),
            MESSAGE_EXPIRY => once(&mut self.message_expiry_s, block.u32("message expiry")?),
            CONTENT_TYPE => once(&mut self.content_type, block.string("content type")?),
            RESPONSE_TOPIC => once(&mut self.response_topic, block.string("response topic")?),
            CORRELATION_DATA => once(&mut self.correlation_data, block.binary("correlation data")?),
            SUBSCRIPTION_ID => {
                let id = block.variable_integer("subscription identifier")?;
                if id == 0 {
                    return Err(MqttDecodeError::Protocol {
                        reason: "subscription identifier 0",
                    });
                }
                self.subscription_ids.push(id);
                Ok(())
            }
            SESSION_EXPIRY => once(&mut self.session_expiry_s, block.u32("session expiry")?),
            ASSIGNED_CLIENT_ID => once(&mut self.assigned_client_id, block.string("assigned client id")?),
            SERVER_KEEP_ALIVE => once(&mut self.server_keep_alive_s, block.u16("server keep alive")?),
            AUTH_METHOD => once(&mut self.auth_method, block.string("authentication method")?),
            AUTH_DATA => once(&mut self.auth_data, block.binary("authentication data")?),
            REQUEST_PROBLEM_INFO => once(&mut self.request_problem_info, flag(block, "request problem info")?),
            WILL_DELAY => once(&mut self.will_delay_s, block.u32("will delay")?),
            REQUEST_RESPONSE_INFO => once(&mut self.request_response_info, flag(block, "request response info")?),
            REASON_STRING => once(&mut self.reason_string, block.string("reason string")?),
            RECEIVE_MAXIMUM => {
                let value = block.u16("receive maximum")?;
                if value == 0 {
                    return Err(MqttDecodeError::Protocol {
                        reason: "receive maximum 0",
                    });
                }
                once(&mut self.receive_maximum, value)
            }
            TOPIC_ALIAS_MAXIMUM => once(&mut self.topic_alias_maximum, block.u16("topic alias maximum")?),
            TOPIC_ALIAS => once(&mut self.topic_alias, block.u16("topic alias")?),
            MAXIMUM_QOS => once(&mut self.maximum_qos, flag(block, "maximum qos")?),
            RETAIN_AVAILABLE => once(&mut self.retain_available, flag(block, "retain available")?),
            USER_PROPERTY => {
                let key = block.string("user property key")?;
                let value = block.string("user property value")?;
                self.user_properties.push((key, value));
                Ok(())
            }
            MAXIMUM_PACKET_SIZE => {
                let value = block.u32("maximum packet size")?;
                if value == 0 {
                    return Err(MqttDecodeError::Protocol {
                        reason: "maximum packet size 0",
                    });
                }
                once(&mut self.maximum_packet_size, value)
            }
            WILDCARD_AVAILABLE => once(&mut self.wildcard_available, flag(block, "wildcard available")?),
            SUBSCRIPTION_IDS_AVAILABLE => once(
                &mut self.subscription_ids_available,
                flag(block, "subscription ids available")?,
            ),
            SHARED_AVAILABLE => once(&mut self.shared_available, flag(block, "shared available")?),
            _ => Err(MqttDecodeError::Protocol {
                reason: "unknown property identifier",
            }),
        }
    }

    /// Appends the block (its length first).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let mut block = Vec::new();
        let byte = |block: &mut Vec<u8>, id: u8, value: Option<u8>| {
            if let Some(value) = value {
                block.extend_from_slice(&[id, value]);
            }
        };
        let two = |block: &mut Vec<u8>, id: u8, value: Option<u16>| {
            if let Some(value) = value {
                block.push(id);
                block.extend_from_slice(&value.to_be_bytes());
            }
        };
        let four = |block: &mut Vec<u8>, id: u8, value: Option<u32>| {
            if let Some(value) = value {
                block.push(id);
                block.extend_from_slice(&value.to_be_bytes());
            }
        };
        let string = |block: &mut Vec<u8>, id: u8, value: &Option<String>| {
            if let Some(value) = value {
                block.push(id);
                put_string(block, value);
            }
        };
        let binary = |block: &mut Vec<u8>, id: u8, value: &Option<Bytes>| {
            if let Some(value) = value {
                block.push(id);
                put_binary(block, value);
            }
        };
        byte(&mut block, PAYLOAD_FORMAT, self.payload_format);
        four(&mut block, MESSAGE_EXPIRY, self.message_expiry_s);
        string(&mut block, CONTENT_TYPE, &self.content_type);
        string(&mut block, RESPONSE_TOPIC, &self.response_topic);
        binary(&mut block, CORRELATION_DATA, &self.correlation_data);
        for id in &self.subscription_ids {
            block.push(SUBSCRIPTION_ID);
            put_variable_integer(&mut block, *id);
        }
        four(&mut block, SESSION_EXPIRY, self.session_expiry_s);
        string(&mut block, ASSIGNED_CLIENT_ID, &self.assigned_client_id);
        two(&mut block, SERVER_KEEP_ALIVE, self.server_keep_alive_s);
        string(&mut block, AUTH_METHOD, &self.auth_method);
        binary(&mut block, AUTH_DATA, &self.auth_data);
        byte(&mut block, REQUEST_PROBLEM_INFO, self.request_problem_info);
        four(&mut block, WILL_DELAY, self.will_delay_s);
        byte(&mut block, REQUEST_RESPONSE_INFO, self.request_response_info);
        string(&mut block, REASON_STRING, &self.reason_string);
        two(&mut block, RECEIVE_MAXIMUM, self.receive_maximum);
        two(&mut block, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        two(&mut block, TOPIC_ALIAS, self.topic_alias);
        byte(&mut block, MAXIMUM_QOS, self.maximum_qos);
        byte(&mut block, RETAIN_AVAILABLE, self.retain_available);
        for (key, value) in &self.user_properties {
            block.push(USER_PROPERTY);
            put_string(&mut block, key);
            put_string(&mut block, value);
        }
        four(&mut block, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        byte(&mut block, WILDCARD_AVAILABLE, self.wildcard_available);
        byte(&mut block, SUBSCRIPTION_IDS_AVAILABLE, self.subscription_ids_available);
        byte(&mut block, SHARED_AVAILABLE, self.shared_available);
        put_variable_integer(out, u32::try_from(block.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(&block);
    }
}
