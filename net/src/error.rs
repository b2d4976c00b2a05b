//! The crate's two error types.
//!
//! - [`DecodeError`]: why a run of bytes is not a valid header or body. It says
//!   which field broke and how; it never carries the bytes themselves.
//! - [`NetError`]: why a connection ended. Every variant keeps its source (the
//!   `io::Error`, the `DecodeError`, kafka-protocol's error) so the caller can
//!   log or classify it; translation to Kafka error codes is not done here,
//!   because a connection-ending error has no response to carry one.

use std::{error::Error, fmt, io};

/// A boxed error from kafka-protocol (it reports through `anyhow`, which does
/// not implement `std::error::Error` itself).
pub type KafkaProtocolError = Box<dyn Error + Send + Sync + 'static>;

/// Why bytes from the wire did not decode. Nothing is partially applied: the
/// whole header or body is rejected.
#[derive(Debug)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside `field`.
    Truncated {
        /// The field being read (a static name, e.g. `"topic.name"`).
        field: &'static str,
        /// Bytes the field needed.
        needed_bytes: usize,
        /// Bytes that were left.
        remaining_bytes: usize,
    },
    /// `field` holds a value the wire format does not allow (a negative
    /// length, a count larger than the bytes left, invalid UTF-8, a varint
    /// longer than five bytes, ...).
    Invalid {
        /// The field being read.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// kafka-protocol's generated decoder rejected a control-plane body.
    KafkaProtocol(KafkaProtocolError),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated {
                field,
                needed_bytes,
                remaining_bytes,
            } => write!(
                f,
                "input ends inside {field}: needs {needed_bytes} bytes, {remaining_bytes} left"
            ),
            DecodeError::Invalid { field, reason } => write!(f, "invalid {field}: {reason}"),
            DecodeError::KafkaProtocol(source) => write!(f, "kafka-protocol decoder: {source}"),
        }
    }
}

impl Error for DecodeError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            DecodeError::KafkaProtocol(source) => Some(source.as_ref()),
            DecodeError::Truncated { .. } | DecodeError::Invalid { .. } => None,
        }
    }
}

/// Why a response could not be encoded. These are programmer errors on the
/// handler side (or a limit of the wire format), never the client's fault.
#[derive(Debug)]
#[non_exhaustive]
pub enum EncodeError {
    /// The handler answered with a body for another API than the request's
    /// (e.g. a `MetadataResponse` to a `Fetch`).
    Mismatch {
        /// The request's API key.
        api_key: i16,
        /// What the handler returned.
        returned: &'static str,
    },
    /// A response frame larger than an `i32` length prefix can describe, or a
    /// field longer than its length field allows.
    TooLarge {
        /// The field or frame that overflowed.
        field: &'static str,
        /// Its size.
        bytes: usize,
    },
    /// kafka-protocol's generated encoder refused the message (typically a
    /// field set that the negotiated version does not have).
    KafkaProtocol(KafkaProtocolError),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Mismatch { api_key, returned } => {
                write!(f, "handler returned {returned} for a request with API key {api_key}")
            }
            EncodeError::TooLarge { field, bytes } => write!(f, "{field} too large to encode: {bytes} bytes"),
            EncodeError::KafkaProtocol(source) => write!(f, "kafka-protocol encoder: {source}"),
        }
    }
}

impl Error for EncodeError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            EncodeError::KafkaProtocol(source) => Some(source.as_ref()),
            EncodeError::Mismatch { .. } | EncodeError::TooLarge { .. } => None,
        }
    }
}

/// Why [`serve_connection`](crate::serve_connection) ended a connection.
///
/// [`NetError::is_bad_input`] tells the client's faults apart; for those the
/// connection loop has already logged one `warn!` line with the peer address.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetError {
    /// Reading from or writing to the socket failed (reset, timeout, ...).
    Io(io::Error),
    /// A frame's length prefix is negative or above `max_frame_bytes`.
    FrameLength {
        /// The prefix as read.
        length: i32,
        /// The configured bound.
        max_frame_bytes: usize,
    },
    /// The peer closed the connection in the middle of a frame.
    FrameTruncated {
        /// Bytes the frame (prefix included) should have had.
        expected_bytes: usize,
        /// Bytes that arrived.
        received_bytes: usize,
    },
    /// The request header does not parse.
    Header(DecodeError),
    /// An API key net does not serve, or a version outside
    /// [`SUPPORTED_APIS`](crate::SUPPORTED_APIS) for an API other than
    /// ApiVersions.
    UnsupportedApi {
        /// API key from the header.
        api_key: i16,
        /// API version from the header.
        api_version: i16,
    },
    /// The request body does not parse.
    Body {
        /// API key from the header.
        api_key: i16,
        /// API version from the header.
        api_version: i16,
        /// What was wrong.
        source: DecodeError,
    },
    /// A handler task was cancelled before it answered (the executor is
    /// shutting down); the connection cannot answer in order any more.
    HandlerCancelled {
        /// API key of the unanswered request.
        api_key: i16,
        /// Its correlation id.
        correlation_id: i32,
    },
    /// The handler's response could not be encoded.
    Encode {
        /// API key of the request being answered.
        api_key: i16,
        /// API version of the request being answered.
        api_version: i16,
        /// What was wrong.
        source: EncodeError,
    },
    /// The peer did not authenticate: refused credentials, a request other
    /// than the SASL exchange before authenticating, too many rounds, or
    /// too slow. The reason is for the log; the client learns only the
    /// error code its answer carried, if any.
    Authentication {
        /// Why, for the log.
        reason: String,
    },
}

impl NetError {
    /// True when the client sent something net refuses (bad frame, header,
    /// body, unsupported API): the connection was closed because of the peer,
    /// not because of the socket or the handler.
    pub fn is_bad_input(&self) -> bool {
        match self {
            NetError::FrameLength { .. }
            | NetError::FrameTruncated { .. }
            | NetError::Header(_)
            | NetError::UnsupportedApi { .. }
            | NetError::Body { .. }
            | NetError::Authentication { .. } => true,
            NetError::Io(_) | NetError::HandlerCancelled { .. } | NetError::Encode { .. } => false,
        }
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Io(source) => write!(f, "socket: {source}"),
            NetError::FrameLength {
                length,
                max_frame_bytes,
            } => write!(f, "frame length {length} outside 0..={max_frame_bytes}"),
            NetError::FrameTruncated {
                expected_bytes,
                received_bytes,
            } => write!(
                f,
                "connection closed mid-frame: {received_bytes} of {expected_bytes} bytes received"
            ),
            NetError::Header(source) => write!(f, "request header: {source}"),
            NetError::UnsupportedApi { api_key, api_version } => {
                write!(f, "unsupported API key {api_key} version {api_version}")
            }
            NetError::Body {
                api_key,
                api_version,
                source,
            } => write!(f, "request body (API key {api_key} v{api_version}): {source}"),
            NetError::HandlerCancelled {
                api_key,
                correlation_id,
            } => write!(
                f,
                "handler for API key {api_key} (correlation id {correlation_id}) was cancelled"
            ),
            NetError::Encode {
                api_key,
                api_version,
                source,
            } => write!(f, "response (API key {api_key} v{api_version}): {source}"),
            NetError::Authentication { reason } => write!(f, "authentication refused: {reason}"),
        }
    }
}

impl Error for NetError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            NetError::Io(source) => Some(source),
            NetError::Header(source) | NetError::Body { source, .. } => Some(source),
            NetError::Encode { source, .. } => Some(source),
            NetError::FrameLength { .. }
            | NetError::FrameTruncated { .. }
            | NetError::UnsupportedApi { .. }
            | NetError::HandlerCancelled { .. }
            | NetError::Authentication { .. } => None,
        }
    }
}

impl From<io::Error> for NetError {
    fn from(source: io::Error) -> Self {
        NetError::Io(source)
    }
}
