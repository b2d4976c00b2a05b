//! The client side of the Kafka framing, for the two clients inside the
//! workspace: a follower fetching from its leader (engine's
//! `inter_broker.rs`, async over glommio) and `shardctl` (tools, blocking).
//! Each does its own I/O; this module makes the bytes and reads them, so the
//! framing and its checks live in one place.
//!
//! ```text
//! request frame:   | length i32 | request header (v1, or v2 when flexible) | body |
//! response frame:  | length i32 | response header (v0, or v1 when flexible) | body |
//!                    └ read by the caller, bounded; `decode_response` gets the rest
//! ```
//!
//! A response is checked before kafka-protocol decodes it: its correlation
//! id must be the request's, its body must walk (`shape::check_response`,
//! where net has the schema: a lying count cannot make the decoder
//! allocate), and nothing may be left after it.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::{
    messages::{RequestHeader, ResponseHeader},
    protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes},
};

/// Why a request could not be framed or its response read.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientFrameError {
    /// kafka-protocol could not encode the request.
    Encode(String),
    /// The request is larger than a frame's i32 length can say.
    TooLarge(usize),
    /// The response header or body does not decode.
    Decode(String),
    /// The response answers another request.
    Correlation {
        /// The request's correlation id.
        expected: i32,
        /// The response's.
        received: i32,
    },
    /// The response body failed its structural walk.
    Shape(crate::DecodeError),
    /// Bytes left after the response body.
    Trailing(usize),
}

impl fmt::Display for ClientFrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientFrameError::Encode(reason) => write!(f, "encoding the request: {reason}"),
            ClientFrameError::TooLarge(bytes) => write!(f, "a request of {bytes} bytes does not fit a frame"),
            ClientFrameError::Decode(reason) => write!(f, "decoding the response: {reason}"),
            ClientFrameError::Correlation { expected, received } => {
                write!(f, "response correlation id {received} for request {expected}")
            }
            ClientFrameError::Shape(source) => write!(f, "checking the response: {source}"),
            ClientFrameError::Trailing(bytes) => write!(f, "{bytes} bytes left after the response"),
        }
    }
}

impl std::error::Error for ClientFrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientFrameError::Shape(source) => Some(source),
            _ => None,
        }
    }
}

/// `request` at `version` as a whole frame: length prefix, header (with
/// `correlation_id` and `client_id`), body.
pub fn encode_request<R: Request>(
    version: i16,
    correlation_id: i32,
    client_id: &str,
    request: &R,
) -> Result<BytesMut, ClientFrameError> {
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_string(client_id.to_owned()));
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&[0; 4]);
    header
        .encode(&mut frame, R::header_version(version))
        .map_err(|e| ClientFrameError::Encode(e.to_string()))?;
    request
        .encode(&mut frame, version)
        .map_err(|e| ClientFrameError::Encode(e.to_string()))?;
    let body_bytes = frame.len() - 4;
    let length = i32::try_from(body_bytes).map_err(|_| ClientFrameError::TooLarge(body_bytes))?;
    frame
        .get_mut(..4)
        .ok_or(ClientFrameError::TooLarge(body_bytes))?
        .copy_from_slice(&length.to_be_bytes());
    assert!(frame.len() >= 4 + 8, "a frame holds its prefix and a header");
    Ok(frame)
}

/// Reads the response to the request `correlation_id` of type `R` at
/// `version` from `frame` (everything after the length prefix). Responses
/// net has a schema for are walked first, each array bounded by
/// `entries_max` entries in all.
pub fn decode_response<R: Request>(
    version: i16,
    correlation_id: i32,
    mut frame: Bytes,
    entries_max: usize,
) -> Result<R::Response, ClientFrameError> {
    let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))
        .map_err(|e| ClientFrameError::Decode(e.to_string()))?;
    if header.correlation_id != correlation_id {
        return Err(ClientFrameError::Correlation {
            expected: correlation_id,
            received: header.correlation_id,
        });
    }
    // Without a schema kafka-protocol decodes the answer as it is
    // (shardctl's control-plane answers, from a broker it chose to ask).
    if crate::shape::has_response_schema(R::KEY) {
        crate::shape::check_response(R::KEY, version, &frame, entries_max).map_err(ClientFrameError::Shape)?;
    }
    let response = R::Response::decode(&mut frame, version).map_err(|e| ClientFrameError::Decode(e.to_string()))?;
    if frame.has_remaining() {
        return Err(ClientFrameError::Trailing(frame.remaining()));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use kafka_protocol::messages::{SaslHandshakeRequest, SaslHandshakeResponse};

    use super::*;

    fn answer(correlation_id: i32, response: &SaslHandshakeResponse, trailing: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        let mut header = ResponseHeader::default();
        header.correlation_id = correlation_id;
        header.encode(&mut out, 0).unwrap();
        response.encode(&mut out, 1).unwrap();
        out.extend_from_slice(trailing);
        out.freeze()
    }

    #[test]
    fn a_request_frames_and_its_answer_is_checked() {
        let mut request = SaslHandshakeRequest::default();
        request.mechanism = StrBytes::from_static_str("PLAIN");
        let frame = encode_request(1, 7, "test", &request).unwrap();
        let length = i32::from_be_bytes(frame[..4].try_into().unwrap());
        assert_eq!(usize::try_from(length).unwrap(), frame.len() - 4);
        let decoded = crate::decode_request(&frame.clone().freeze().slice(4..)).unwrap();
        assert_eq!(decoded.header.correlation_id, 7);

        let mut response = SaslHandshakeResponse::default();
        response.mechanisms = vec![StrBytes::from_static_str("PLAIN")];
        let read = decode_response::<SaslHandshakeRequest>(1, 7, answer(7, &response, b""), 100).unwrap();
        assert_eq!(read.mechanisms, response.mechanisms);
        assert!(matches!(
            decode_response::<SaslHandshakeRequest>(1, 8, answer(7, &response, b""), 100),
            Err(ClientFrameError::Correlation {
                expected: 8,
                received: 7
            })
        ));
        assert!(matches!(
            decode_response::<SaslHandshakeRequest>(1, 7, answer(7, &response, b"xy"), 100),
            Err(ClientFrameError::Trailing(2))
        ));
        assert!(decode_response::<SaslHandshakeRequest>(1, 7, Bytes::from_static(b"\0\0"), 100).is_err());
    }
}
