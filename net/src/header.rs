//! Request and response headers.
//!
//! ```text
//! request header v1 (non-flexible requests)
//! +-------------+-----------------+--------------------+------------------------------------+
//! | api_key i16 | api_version i16 | correlation_id i32 | client_id: nullable string (int16) |
//! +-------------+-----------------+--------------------+------------------------------------+
//!
//! request header v2 (flexible requests): v1, then a tagged-field section.
//! client_id stays a classic int16-length string even in v2 (KIP-482 kept it
//! readable by brokers that do not know the API).
//!
//! response header v0: | correlation_id i32 |
//! response header v1: | correlation_id i32 | tagged fields (always 0 = none) |
//! ```
//!
//! The first eight bytes ([`FixedHeader`]) are the same in every version, so
//! the connection can decide whether it serves the API before it knows which
//! header version the rest uses.

use bytes::{BufMut, Bytes, BytesMut};

use crate::apis;
use crate::cursor::{Cursor, Encoding};
use crate::error::DecodeError;

/// A parsed request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// Which API (Produce = 0, Fetch = 1, ...).
    pub api_key: i16,
    /// Version of that API the body is encoded in.
    pub api_version: i16,
    /// Echoed in the response so the client can match it.
    pub correlation_id: i32,
    /// Free-form client name; `None` when the client sent null.
    pub client_id: Option<String>,
}

/// The first eight bytes of every request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FixedHeader {
    pub(crate) api_key: i16,
    pub(crate) api_version: i16,
    pub(crate) correlation_id: i32,
}

impl FixedHeader {
    /// Reads the fixed part from the start of `frame`.
    pub(crate) fn decode(frame: &Bytes) -> Result<Self, DecodeError> {
        let mut cursor = Cursor::new(frame);
        Ok(FixedHeader {
            api_key: cursor.i16("header.api_key")?,
            api_version: cursor.i16("header.api_version")?,
            correlation_id: cursor.i32("header.correlation_id")?,
        })
    }
}

impl RequestHeader {
    /// Parses the header at the start of `frame` (the frame without its
    /// length prefix) and returns it with the body that follows, as a
    /// zero-copy slice of `frame`.
    ///
    /// The header version (1 or 2) comes from kafka-protocol's
    /// `request_header_version` for the API key and version; an API key
    /// kafka-protocol does not know is read as header v1.
    pub fn decode(frame: &Bytes) -> Result<(RequestHeader, Bytes), DecodeError> {
        let mut cursor = Cursor::new(frame);
        let api_key = cursor.i16("header.api_key")?;
        let api_version = cursor.i16("header.api_version")?;
        let correlation_id = cursor.i32("header.correlation_id")?;
        let client_id = cursor
            .nullable_str(Encoding::Classic, "header.client_id")?
            .map(str::to_owned);
        let flexible = apis::request_header_version(api_key, api_version) == Some(2);
        cursor.skip_tagged_fields(Encoding::from_flexible(flexible), "header.tagged_fields")?;
        let header = RequestHeader {
            api_key,
            api_version,
            correlation_id,
            client_id,
        };
        Ok((header, cursor.rest_bytes()))
    }
}

/// Appends a response header of `header_version` (0 or 1) to `out`.
pub(crate) fn encode_response_header(out: &mut BytesMut, correlation_id: i32, header_version: i16) {
    out.put_i32(correlation_id);
    if header_version >= 1 {
        // An empty tagged-field section.
        out.put_u8(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::RequestHeader as ReferenceHeader;
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    fn reference_frame(api_key: i16, api_version: i16, client_id: Option<&str>, body: &[u8]) -> Bytes {
        let header_version = apis::request_header_version(api_key, api_version).unwrap();
        let header = ReferenceHeader::default()
            .with_request_api_key(api_key)
            .with_request_api_version(api_version)
            .with_correlation_id(0x0102_0304)
            .with_client_id(client_id.map(|id| StrBytes::from_string(id.to_owned())));
        let mut out = BytesMut::new();
        header.encode(&mut out, header_version).unwrap();
        out.extend_from_slice(body);
        out.freeze()
    }

    #[test]
    fn round_trips_every_supported_version_flexible_or_not() {
        for &(api_key, min, max) in apis::SUPPORTED_APIS {
            for api_version in min..=max {
                for client_id in [None, Some(""), Some("rdkafka-é")] {
                    let frame = reference_frame(api_key, api_version, client_id, b"BODY");
                    let (header, body) = RequestHeader::decode(&frame).unwrap();
                    assert_eq!(header.api_key, api_key);
                    assert_eq!(header.api_version, api_version);
                    assert_eq!(header.correlation_id, 0x0102_0304);
                    assert_eq!(header.client_id.as_deref(), client_id);
                    assert_eq!(&body[..], b"BODY", "api {api_key} v{api_version}");
                    assert_eq!(FixedHeader::decode(&frame).unwrap().api_version, api_version);
                }
            }
        }
    }

    #[test]
    fn flexible_header_skips_tagged_fields() {
        // Metadata v12 uses header v2: one tagged field (tag 7, 2 bytes) after client_id.
        let mut frame = BytesMut::new();
        frame.put_i16(3);
        frame.put_i16(12);
        frame.put_i32(9);
        frame.put_i16(1);
        frame.put_u8(b'c');
        frame.extend_from_slice(&[1, 7, 2, 0xaa, 0xbb]);
        frame.extend_from_slice(b"rest");
        let (header, body) = RequestHeader::decode(&frame.freeze()).unwrap();
        assert_eq!(header.client_id.as_deref(), Some("c"));
        assert_eq!(&body[..], b"rest");
    }

    #[test]
    fn short_or_broken_headers_are_errors() {
        let full = reference_frame(3, 12, Some("client"), b"");
        for length in 0..full.len() {
            assert!(
                RequestHeader::decode(&full.slice(..length)).is_err(),
                "prefix of {length} bytes"
            );
        }
        let mut bad_utf8 = BytesMut::new();
        bad_utf8.put_i16(3);
        bad_utf8.put_i16(1);
        bad_utf8.put_i32(1);
        bad_utf8.put_i16(1);
        bad_utf8.put_u8(0xff);
        assert!(matches!(
            RequestHeader::decode(&bad_utf8.freeze()),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn response_headers_decode_with_kafka_protocol() {
        use kafka_protocol::messages::ResponseHeader;
        for header_version in [0, 1] {
            let mut out = BytesMut::new();
            encode_response_header(&mut out, -7, header_version);
            let mut bytes = out.freeze();
            let decoded = ResponseHeader::decode(&mut bytes, header_version).unwrap();
            assert_eq!(decoded.correlation_id, -7);
            assert!(bytes.is_empty());
        }
    }
}
