//! The one place MQTT reason codes (5.0) and return codes (3.1.1) are
//! chosen, as `error::kafka_code` is for Kafka: every refusal of the MQTT
//! side is a [`Refusal`], and the functions here turn it into the byte a
//! CONNACK, PUBACK, SUBACK, UNSUBACK or DISCONNECT carries.

use std::sync::Arc;

use shardline_net::mqtt::{MqttDecodeError, QoS, Version};

use crate::error::EngineError;

/// Why the server refuses a packet or ends a connection.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The bytes were not a valid packet.
    Decode(MqttDecodeError),
    /// A second CONNECT on a connection.
    SecondConnect,
    /// A packet only a server sends, or a QoS 2 packet the server never asked for.
    UnexpectedPacket(&'static str),
    /// A client identifier the server does not accept (empty with a kept
    /// session in 3.1.1, or too long).
    ClientIdRejected,
    /// No user name and password, or ones that do not check
    /// (`--mqtt-auth password`), or a SCRAM exchange that failed.
    BadCredentials,
    /// A v5 Authentication Method the server does not offer (SCRAM-SHA-256
    /// and -512 with `--mqtt-auth password`).
    BadAuthenticationMethod,
    /// No packet within one and a half keep-alive periods.
    KeepAliveTimeout,
    /// Another connection connected with the same client identifier.
    TakenOver,
    /// More QoS 2 publications awaiting PUBREL than CONNACK's Receive Maximum.
    ReceiveMaximumExceeded,
    /// A packet that breaks a rule of the protocol (v5: 0x82).
    ProtocolError(&'static str),
    /// A topic alias of 0, above CONNACK's Topic Alias Maximum, or used
    /// before it was set.
    TopicAliasInvalid,
    /// The subscriber fell a whole delivery queue behind.
    SlowSubscriber,
    /// The broker is stopping.
    ServerShuttingDown,
    /// The append of a PUBLISH failed.
    Append(Arc<EngineError>),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Decode(error) => write!(f, "{error}"),
            Refusal::SecondConnect => write!(f, "a second CONNECT"),
            Refusal::UnexpectedPacket(name) => write!(f, "unexpected {name}"),
            Refusal::ClientIdRejected => write!(f, "client identifier rejected"),
            Refusal::BadCredentials => write!(f, "bad user name or password"),
            Refusal::BadAuthenticationMethod => write!(f, "authentication method not offered"),
            Refusal::KeepAliveTimeout => write!(f, "no packet within 1.5 keep-alive periods"),
            Refusal::TakenOver => write!(f, "session taken over by a new connection with the same client id"),
            Refusal::ReceiveMaximumExceeded => write!(f, "more QoS 2 publications in flight than Receive Maximum"),
            Refusal::ProtocolError(what) => write!(f, "protocol error: {what}"),
            Refusal::TopicAliasInvalid => write!(f, "a topic alias of 0, above the maximum, or not set"),
            Refusal::SlowSubscriber => write!(f, "the subscriber's delivery queue is full"),
            Refusal::ServerShuttingDown => write!(f, "the server is shutting down"),
            Refusal::Append(error) => write!(f, "append failed: {error}"),
        }
    }
}

/// 5.0 reason codes (MQTT 5.0 §2.4).
const SUCCESS: u8 = 0x00;
const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
const UNSPECIFIED_ERROR: u8 = 0x80;
const MALFORMED_PACKET: u8 = 0x81;
const PROTOCOL_ERROR: u8 = 0x82;
const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
const CLIENT_ID_NOT_VALID: u8 = 0x85;
const BAD_USER_NAME_OR_PASSWORD: u8 = 0x86;
const BAD_AUTHENTICATION_METHOD: u8 = 0x8c;
const SERVER_UNAVAILABLE: u8 = 0x88;
const SERVER_SHUTTING_DOWN: u8 = 0x8b;
const KEEP_ALIVE_TIMEOUT: u8 = 0x8d;
const SESSION_TAKEN_OVER: u8 = 0x8e;
const TOPIC_FILTER_INVALID: u8 = 0x8f;
const TOPIC_NAME_INVALID: u8 = 0x90;
const PACKET_ID_NOT_FOUND: u8 = 0x92;
const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
const PACKET_TOO_LARGE: u8 = 0x95;
const QUOTA_EXCEEDED: u8 = 0x97;
const NOT_AUTHORIZED: u8 = 0x87;
const TOPIC_ALIAS_INVALID: u8 = 0x94;

/// 3.1.1 CONNACK return codes (MQTT 3.1.1 §3.2.2.3).
const V311_UNACCEPTABLE_PROTOCOL_VERSION: u8 = 0x01;
const V311_IDENTIFIER_REJECTED: u8 = 0x02;
const V311_SERVER_UNAVAILABLE: u8 = 0x03;
const V311_BAD_USER_NAME_OR_PASSWORD: u8 = 0x04;
/// 3.1.1 SUBACK failure.
const V311_SUBSCRIBE_FAILURE: u8 = 0x80;

/// The CONNACK code refusing a CONNECT for `refusal`, if a CONNACK is
/// sent at all (a bad protocol name or a packet before CONNECT closes the
/// connection without one).
pub(crate) fn connack_code(refusal: &Refusal, version: Version) -> Option<u8> {
    let v5 = match refusal {
        Refusal::Decode(MqttDecodeError::UnsupportedVersion { .. }) => {
            // The client's level is not ours: answer in 3.1.1's format,
            // which every MQTT client reads (3.1.1 §3.1.2.2).
            return Some(V311_UNACCEPTABLE_PROTOCOL_VERSION);
        }
        Refusal::Decode(MqttDecodeError::ProtocolName | MqttDecodeError::FirstPacketNotConnect) => return None,
        Refusal::ClientIdRejected => CLIENT_ID_NOT_VALID,
        Refusal::BadCredentials => BAD_USER_NAME_OR_PASSWORD,
        Refusal::BadAuthenticationMethod => BAD_AUTHENTICATION_METHOD,
        Refusal::Decode(error) => decode_code(error),
        Refusal::Append(_) | Refusal::ServerShuttingDown => SERVER_UNAVAILABLE,
        _ => PROTOCOL_ERROR,
    };
    Some(match version {
        Version::V5 => v5,
        Version::V311 => match refusal {
            Refusal::ClientIdRejected => V311_IDENTIFIER_REJECTED,
            Refusal::BadCredentials => V311_BAD_USER_NAME_OR_PASSWORD,
            Refusal::Append(_) | Refusal::ServerShuttingDown => V311_SERVER_UNAVAILABLE,
            // 3.1.1 has no code for a malformed CONNECT: close without one.
            _ => return None,
        },
    })
}

fn decode_code(error: &MqttDecodeError) -> u8 {
    match error {
        MqttDecodeError::Malformed { .. } => MALFORMED_PACKET,
        MqttDecodeError::PacketTooLarge { .. } => PACKET_TOO_LARGE,
        MqttDecodeError::UnsupportedVersion { .. } => UNSUPPORTED_PROTOCOL_VERSION,
        MqttDecodeError::TopicName => TOPIC_NAME_INVALID,
        MqttDecodeError::Protocol { .. } | MqttDecodeError::ProtocolName | MqttDecodeError::FirstPacketNotConnect => {
            PROTOCOL_ERROR
        }
        // The codec's error is non-exhaustive: a new kind is a protocol error
        // until it gets a code of its own here.
        _ => PROTOCOL_ERROR,
    }
}

/// The reason code of the DISCONNECT a v5 connection gets before the
/// server closes it for `refusal`.
pub(crate) fn disconnect_code(refusal: &Refusal) -> u8 {
    match refusal {
        Refusal::Decode(error) => decode_code(error),
        Refusal::SecondConnect | Refusal::UnexpectedPacket(_) | Refusal::ProtocolError(_) => PROTOCOL_ERROR,
        Refusal::ClientIdRejected => CLIENT_ID_NOT_VALID,
        Refusal::BadCredentials => BAD_USER_NAME_OR_PASSWORD,
        Refusal::BadAuthenticationMethod => BAD_AUTHENTICATION_METHOD,
        Refusal::KeepAliveTimeout => KEEP_ALIVE_TIMEOUT,
        Refusal::TakenOver => SESSION_TAKEN_OVER,
        Refusal::ReceiveMaximumExceeded => RECEIVE_MAXIMUM_EXCEEDED,
        Refusal::TopicAliasInvalid => TOPIC_ALIAS_INVALID,
        Refusal::SlowSubscriber => QUOTA_EXCEEDED,
        Refusal::ServerShuttingDown => SERVER_SHUTTING_DOWN,
        Refusal::Append(_) => UNSPECIFIED_ERROR,
    }
}

/// The v5 PUBACK reason code for an append's outcome.
pub(crate) fn puback_code(outcome: &Result<(), Arc<EngineError>>) -> u8 {
    match outcome.as_ref().map_err(|error| &**error) {
        Ok(()) => SUCCESS,
        Err(EngineError::MessageTooLarge { .. }) => PACKET_TOO_LARGE,
        Err(EngineError::NotAuthorized(_)) => NOT_AUTHORIZED,
        Err(_) => UNSPECIFIED_ERROR,
    }
}

/// The code of the PUBACK (PUBREC) answering a PUBLISH `--mqtt-acl-file`
/// does not allow: v5 0x87; 3.1.1 acks carry no code, so the message is
/// acknowledged and dropped (as mosquitto does).
pub(crate) fn topic_refused_ack_code(version: Version) -> u8 {
    match version {
        Version::V5 => NOT_AUTHORIZED,
        Version::V311 => SUCCESS,
    }
}

/// The reason code of a PUBCOMP answering a PUBREL, or of a PUBREL
/// answering a PUBREC: whether its identifier was in the exchange (3.1.1
/// acks carry no code: 0).
pub(crate) fn packet_id_code(found: bool, version: Version) -> u8 {
    match (version, found) {
        (Version::V311, _) | (Version::V5, true) => SUCCESS,
        (Version::V5, false) => PACKET_ID_NOT_FOUND,
    }
}

/// Why one filter of a SUBSCRIBE is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterRefusal {
    /// Not a valid topic filter.
    Invalid,
    /// The connection holds its maximum of subscriptions.
    Quota,
    /// The connection's principal may not read the mapped Kafka topic.
    NotAuthorized,
}

/// The SUBACK code of one filter: the granted QoS, or why it was refused.
pub(crate) fn suback_code(outcome: Result<QoS, FilterRefusal>, version: Version) -> u8 {
    match (outcome, version) {
        (Ok(qos), _) => qos as u8,
        (Err(_), Version::V311) => V311_SUBSCRIBE_FAILURE,
        (Err(FilterRefusal::Invalid), Version::V5) => TOPIC_FILTER_INVALID,
        (Err(FilterRefusal::Quota), Version::V5) => QUOTA_EXCEEDED,
        (Err(FilterRefusal::NotAuthorized), Version::V5) => NOT_AUTHORIZED,
    }
}

/// The v5 UNSUBACK code of one filter.
pub(crate) fn unsuback_code(existed: bool) -> u8 {
    if existed {
        SUCCESS
    } else {
        NO_SUBSCRIPTION_EXISTED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connack_codes_per_version() {
        let version = Refusal::Decode(MqttDecodeError::UnsupportedVersion { level: 3 });
        assert_eq!(connack_code(&version, Version::V311), Some(0x01));
        assert_eq!(connack_code(&version, Version::V5), Some(0x01));
        assert_eq!(connack_code(&Refusal::ClientIdRejected, Version::V311), Some(0x02));
        assert_eq!(connack_code(&Refusal::ClientIdRejected, Version::V5), Some(0x85));
        assert_eq!(connack_code(&Refusal::BadAuthenticationMethod, Version::V5), Some(0x8c));
        assert_eq!(connack_code(&Refusal::BadCredentials, Version::V5), Some(0x86));
        assert_eq!(disconnect_code(&Refusal::BadCredentials), 0x86);
        assert_eq!(
            connack_code(&Refusal::Decode(MqttDecodeError::ProtocolName), Version::V5),
            None
        );
    }

    #[test]
    fn disconnect_codes_name_the_cause() {
        let qos3 = Refusal::Decode(MqttDecodeError::Malformed {
            field: "QoS",
            reason: "QoS 3",
        });
        assert_eq!(disconnect_code(&qos3), 0x81);
        assert_eq!(disconnect_code(&Refusal::SecondConnect), 0x82);
        assert_eq!(disconnect_code(&Refusal::KeepAliveTimeout), 0x8d);
        assert_eq!(disconnect_code(&Refusal::TakenOver), 0x8e);
        let big = Refusal::Decode(MqttDecodeError::PacketTooLarge {
            packet_bytes: 2,
            packet_bytes_max: 1,
        });
        assert_eq!(disconnect_code(&big), 0x95);
    }
}
