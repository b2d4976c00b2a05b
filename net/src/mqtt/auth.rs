//! AUTH (MQTT 5.0 §3.15): the packet of enhanced authentication, sent by
//! either side while a challenge/response exchange (SASL SCRAM, say) runs:
//! between CONNECT and CONNACK, or later to re-authenticate. 3.1.1 has no
//! AUTH: type 15 is reserved there.
//!
//! ```text
//!  AUTH  (fixed header 0xF0: the flags must be 0)
//!  +--------------------------------------+------------------------------------+
//!  | reason code u8                       | properties                         |
//!  |   0x00 success (server: done)        |   0x15 Authentication Method       |
//!  |   0x18 continue authentication       |   0x16 Authentication Data         |
//!  |   0x19 re-authenticate (client)      |   0x1F Reason String               |
//!  | absent when the remaining length is  |   0x26 User Property               |
//!  | 0: success, no properties            | absent when the remaining length   |
//!  |                                      | is 1: no properties                |
//!  +--------------------------------------+------------------------------------+
//! ```

use super::{
    properties::{Allowed, Properties},
    wire::{frame, Reader},
    MqttDecodeError,
};

/// Authentication is complete (from the server: the client is who it says).
pub const AUTH_SUCCESS: u8 = 0x00;
/// Continue authentication: another step of the exchange follows.
pub const AUTH_CONTINUE: u8 = 0x18;
/// Re-authenticate: the client starts a new exchange on a connection
/// already authenticated.
pub const AUTH_REAUTHENTICATE: u8 = 0x19;

/// The fixed header's first byte.
const AUTH_FIRST_BYTE: u8 = 0xf0;

/// An AUTH packet (v5 only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// [`AUTH_SUCCESS`], [`AUTH_CONTINUE`] or [`AUTH_REAUTHENTICATE`].
    pub reason: u8,
    /// Authentication Method and Data, Reason String, User Properties.
    pub properties: Properties,
}

impl Auth {
    pub(crate) fn decode(body: bytes::Bytes) -> Result<Auth, MqttDecodeError> {
        let mut reader = Reader::new(body);
        let mut auth = Auth {
            reason: AUTH_SUCCESS,
            properties: Properties::default(),
        };
        if !reader.is_empty() {
            auth.reason = reader.u8("AUTH reason code")?;
            if !reader.is_empty() {
                auth.properties = Properties::decode(&mut reader, Allowed::AUTH)?;
            }
        }
        if !matches!(auth.reason, AUTH_SUCCESS | AUTH_CONTINUE | AUTH_REAUTHENTICATE) {
            return Err(MqttDecodeError::Malformed {
                field: "AUTH reason code",
                reason: "not 0x00, 0x18 or 0x19",
            });
        }
        if !reader.is_empty() {
            return Err(MqttDecodeError::Malformed {
                field: "AUTH",
                reason: "bytes after the properties",
            });
        }
        Ok(auth)
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::new();
        let bare = self.properties == Properties::default();
        if self.reason != AUTH_SUCCESS || !bare {
            body.push(self.reason);
            if !bare {
                self.properties.encode(&mut body);
            }
        }
        assert_eq!(
            body.is_empty(),
            self.reason == AUTH_SUCCESS && bare,
            "only a bare success omits the reason code"
        );
        frame(AUTH_FIRST_BYTE, &body, out);
    }
}
