//! The bench's lean Kafka client: blocking TCP (or TLS, `tls.rs`), length-prefixed frames,
//! kafka-protocol's codecs.
//!
//! ```text
//!  request  frame: | length i32 | api key i16 | api version i16 | correlation id i32 | client id (nullable string) | [tagged fields] | body
//!  response frame: | length i32 | correlation id i32 | [tagged fields] | body
//!                    \_ bytes after the length field; big-endian; tagged fields only in flexible header versions
//! ```
//! Request bodies are encoded and response bodies decoded by `kafka_protocol` (its "client" half).
//! Everything read from the socket is bounded: a length prefix outside
//! `4 ..= RESPONSE_FRAME_BYTES_MAX` is refused before anything is allocated for it, and
//! kafka-protocol decoders return errors (never panic) on bytes that run short.
//!
//! A [`Connection`] does one request at a time (setup, consumers). Producers split it into a
//! [`FrameWriter`] and a [`FrameReader`] so several Produce requests can be in flight; Kafka
//! brokers answer requests on one connection in order, so the reader matches each response to the
//! oldest outstanding request and checks the correlation id.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse, FetchRequest,
        FetchResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
        ProduceResponse, RequestHeader, ResponseHeader,
    },
    protocol::{Decodable, Encodable, HeaderVersion, StrBytes},
};

use crate::{error::BenchError, tls::Transport};

/// `client_id` in every request header, so broker logs show who is talking.
pub const CLIENT_ID: &str = "shardline-bench";
/// How long a TCP connect may take before the broker is reported unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long any request may stay unanswered. Kafka clients wait 30 s (`request.timeout.ms`); a
/// bench that waits that long hides a stuck broker behind a slow exit, so it gives up sooner.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response frame accepted. Fetch asks for at most `FETCH_BYTES_MAX` (50 MiB, Kafka's
/// `fetch.max.bytes`) and a broker may exceed it by one batch (KIP-74), so 128 MiB leaves room.
pub const RESPONSE_FRAME_BYTES_MAX: usize = 128 << 20;
/// Bytes of the response header every version has: the correlation id.
const RESPONSE_HEADER_BYTES_MIN: usize = 4;

/// The APIs the bench uses and the versions it can speak. Fetch stops at 12 and Produce at 9
/// because later versions address topics by id; the others stop at what was tested.
const CLIENT_VERSIONS: [(ApiKey, i16, i16); 6] = [
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
];

/// A request the bench sends. kafka-protocol's own `Request` trait also needs the request decoder
/// and the response encoder (its "broker" half), which a client has no use for.
pub trait Request: Encodable + HeaderVersion {
    /// The API key.
    const KEY: i16;
    /// The response type.
    type Response: Decodable + HeaderVersion;
}

macro_rules! client_request {
    ($($request:ty => $response:ty, $key:expr;)*) => {
        $(impl Request for $request {
            const KEY: i16 = $key as i16;
            type Response = $response;
        })*
    };
}

client_request! {
    ProduceRequest => ProduceResponse, ApiKey::Produce;
    FetchRequest => FetchResponse, ApiKey::Fetch;
    ListOffsetsRequest => ListOffsetsResponse, ApiKey::ListOffsets;
    MetadataRequest => MetadataResponse, ApiKey::Metadata;
    ApiVersionsRequest => ApiVersionsResponse, ApiKey::ApiVersions;
    CreateTopicsRequest => CreateTopicsResponse, ApiKey::CreateTopics;
}

/// The ApiVersions version tried first; older brokers answer UNSUPPORTED_VERSION and get v0.
const API_VERSIONS_VERSION: i16 = 3;
/// Kafka's UNSUPPORTED_VERSION error code.
const UNSUPPORTED_VERSION: i16 = 35;

/// One API as the broker advertised it and as the bench will use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSupport {
    /// The API key.
    pub key: i16,
    /// Its name, as Kafka spells it.
    pub name: String,
    /// Lowest version the broker accepts.
    pub broker_min: i16,
    /// Highest version the broker accepts.
    pub broker_max: i16,
    /// The version the bench uses (highest both sides speak), if any.
    pub used: Option<i16>,
}

/// The broker's API table after negotiation.
#[derive(Debug, Clone, Default)]
pub struct ApiTable {
    /// Every API the broker advertised.
    pub apis: Vec<ApiSupport>,
}

impl ApiTable {
    fn from_advertised(advertised: impl Iterator<Item = (i16, i16, i16)>) -> ApiTable {
        let apis = advertised
            .map(|(key, broker_min, broker_max)| {
                let client = CLIENT_VERSIONS.iter().find(|(api, _, _)| *api as i16 == key);
                let used = client.and_then(|(_, client_min, client_max)| {
                    let version = broker_max.min(*client_max);
                    (version >= broker_min.max(*client_min)).then_some(version)
                });
                let name = ApiKey::try_from(key).map_or_else(|_| format!("Api{key}"), |api| format!("{api:?}"));
                ApiSupport {
                    key,
                    name,
                    broker_min,
                    broker_max,
                    used,
                }
            })
            .collect();
        ApiTable { apis }
    }

    /// The version to use for `api`, or an error naming what the broker offers.
    pub fn version(&self, api: ApiKey) -> Result<i16, BenchError> {
        let client = CLIENT_VERSIONS.iter().find(|(key, _, _)| *key == api);
        let (client_min, client_max) = client.map_or((0, -1), |(_, min, max)| (*min, *max));
        match self.apis.iter().find(|support| support.key == api as i16) {
            Some(ApiSupport {
                used: Some(version), ..
            }) => Ok(*version),
            Some(support) => Err(BenchError::Unsupported(format!(
                "the broker speaks {api:?} v{}..v{}, the bench needs v{client_min}..v{client_max}",
                support.broker_min, support.broker_max
            ))),
            None => Err(BenchError::Unsupported(format!(
                "the broker does not offer {api:?} (needed by the bench)"
            ))),
        }
    }
}

/// Resolves `address` and connects, trying each resolved address within [`CONNECT_TIMEOUT`];
/// then the TLS handshake if `--tls-ca` was given.
pub fn connect(address: &str) -> Result<Transport, BenchError> {
    let resolved: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|source| BenchError::Connect {
            address: address.to_string(),
            source,
        })?
        .collect();
    let mut last_error = std::io::Error::new(std::io::ErrorKind::NotFound, "the name resolved to no address");
    for socket_address in resolved {
        match TcpStream::connect_timeout(&socket_address, CONNECT_TIMEOUT) {
            Ok(stream) => {
                let configure = |stream: &TcpStream| -> std::io::Result<()> {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
                    stream.set_write_timeout(Some(REQUEST_TIMEOUT))
                };
                let host = address
                    .rsplit_once(':')
                    .map_or(address, |(host, _)| host.trim_start_matches('[').trim_end_matches(']'));
                let transport = configure(&stream)
                    .and_then(|()| Transport::open(stream, host))
                    .map_err(|source| BenchError::Connect {
                        address: address.to_string(),
                        source,
                    })?;
                return Ok(transport);
            }
            Err(error) => last_error = error,
        }
    }
    Err(BenchError::Connect {
        address: address.to_string(),
        source: last_error,
    })
}

/// Appends one request frame (length, header, body) to `out`.
pub fn encode_request<R: Request>(
    out: &mut BytesMut,
    version: i16,
    correlation_id: i32,
    request: &R,
) -> Result<(), BenchError> {
    let encode_error = |detail: String| BenchError::Internal(format!("encoding {:?}: {detail}", R::KEY));
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let header_version = R::header_version(version);
    let size = header
        .compute_size(header_version)
        .map_err(|e| encode_error(format!("{e:#}")))?
        + request
            .compute_size(version)
            .map_err(|e| encode_error(format!("{e:#}")))?;
    let length = i32::try_from(size).map_err(|_| encode_error(format!("request of {size} bytes")))?;
    out.reserve(4 + size);
    out.extend_from_slice(&length.to_be_bytes());
    let start = out.len();
    header
        .encode(out, header_version)
        .map_err(|e| encode_error(format!("{e:#}")))?;
    request
        .encode(out, version)
        .map_err(|e| encode_error(format!("{e:#}")))?;
    let written = out.len() - start;
    if written != size {
        return Err(encode_error(format!("computed {size} bytes, wrote {written}")));
    }
    Ok(())
}

/// Reads one response frame (without its length prefix).
pub fn read_frame(stream: &mut impl Read, address: &str, context: &str) -> Result<Bytes, BenchError> {
    let mut length = [0u8; 4];
    stream
        .read_exact(&mut length)
        .map_err(|source| BenchError::from_io(address, context, source, REQUEST_TIMEOUT))?;
    let length = i32::from_be_bytes(length);
    let length = usize::try_from(length)
        .ok()
        .filter(|len| (RESPONSE_HEADER_BYTES_MIN..=RESPONSE_FRAME_BYTES_MAX).contains(len))
        .ok_or_else(|| BenchError::Protocol {
            address: address.to_string(),
            detail: format!(
                "response length {length} outside {RESPONSE_HEADER_BYTES_MIN}..={RESPONSE_FRAME_BYTES_MAX} \
                 while {context}"
            ),
        })?;
    let mut body = vec![0u8; length];
    stream
        .read_exact(&mut body)
        .map_err(|source| BenchError::from_io(address, context, source, REQUEST_TIMEOUT))?;
    Ok(Bytes::from(body))
}

/// Decodes a response frame to request `R` sent at `version` with `correlation_id`.
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
    correlation_id: i32,
    address: &str,
) -> Result<R::Response, BenchError> {
    let protocol_error = |detail: String| BenchError::Protocol {
        address: address.to_string(),
        detail,
    };
    let header = ResponseHeader::decode(&mut frame, <R::Response as HeaderVersion>::header_version(version))
        .map_err(|e| protocol_error(format!("{:?} v{version} response header: {e:#}", R::KEY)))?;
    if header.correlation_id != correlation_id {
        return Err(protocol_error(format!(
            "{:?} response has correlation id {}, expected {correlation_id} (responses out of order)",
            ApiKey::try_from(R::KEY).map_or_else(|_| R::KEY.to_string(), |api| format!("{api:?}")),
            header.correlation_id
        )));
    }
    let response = R::Response::decode(&mut frame, version)
        .map_err(|e| protocol_error(format!("{:?} v{version} response body: {e:#}", R::KEY)))?;
    Ok(response)
}

/// A connection doing one request at a time.
pub struct Connection {
    stream: Transport,
    address: String,
    next_correlation_id: i32,
    /// The broker's APIs and the versions the bench uses.
    pub apis: ApiTable,
}

impl Connection {
    /// Connects and negotiates API versions (ApiVersions v3, falling back to v0).
    pub fn open(address: &str) -> Result<Connection, BenchError> {
        let stream = connect(address)?;
        let mut connection = Connection {
            stream,
            address: address.to_string(),
            next_correlation_id: 1,
            apis: ApiTable::default(),
        };
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut response = connection.call(&request, API_VERSIONS_VERSION, "negotiating API versions")?;
        if response.error_code == UNSUPPORTED_VERSION {
            response = connection.call(&ApiVersionsRequest::default(), 0, "negotiating API versions (v0)")?;
        }
        BenchError::check_code("ApiVersions", || format!("broker {address}"), response.error_code, None)?;
        connection.apis = ApiTable::from_advertised(
            response
                .api_keys
                .iter()
                .map(|api| (api.api_key, api.min_version, api.max_version)),
        );
        Ok(connection)
    }

    /// The broker's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `request` at `version` and waits for its response.
    pub fn call<R: Request>(&mut self, request: &R, version: i16, context: &str) -> Result<R::Response, BenchError> {
        self.call_timed(request, version, context).map(|(response, _)| response)
    }

    /// [`Connection::call`], also returning when the whole response had been read (before decoding).
    pub fn call_timed<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        context: &str,
    ) -> Result<(R::Response, Instant), BenchError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let mut frame = BytesMut::new();
        encode_request(&mut frame, version, correlation_id, request)?;
        self.stream
            .write_all(&frame)
            .map_err(|source| BenchError::from_io(&self.address, context, source, REQUEST_TIMEOUT))?;
        let response = read_frame(&mut self.stream, &self.address, context)?;
        let received_at = Instant::now();
        decode_response::<R>(response, version, correlation_id, &self.address).map(|response| (response, received_at))
    }

    /// Splits into a writer and a reader for pipelined requests.
    pub fn split(self) -> Result<(FrameWriter, FrameReader), BenchError> {
        let reader_stream = self.stream.try_clone().map_err(|source| BenchError::Io {
            address: self.address.clone(),
            context: "cloning the socket".to_string(),
            source,
        })?;
        Ok((
            FrameWriter {
                stream: self.stream,
                address: self.address.clone(),
                next_correlation_id: self.next_correlation_id,
            },
            FrameReader {
                stream: reader_stream,
                address: self.address,
            },
        ))
    }
}

/// The sending half of a split connection.
pub struct FrameWriter {
    stream: Transport,
    address: String,
    next_correlation_id: i32,
}

impl FrameWriter {
    /// The broker's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The correlation id the next request gets.
    pub fn take_correlation_id(&mut self) -> i32 {
        let id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        id
    }

    /// Writes one encoded frame.
    pub fn write_frame(&mut self, frame: &[u8], context: &str) -> Result<(), BenchError> {
        self.stream
            .write_all(frame)
            .map_err(|source| BenchError::from_io(&self.address, context, source, REQUEST_TIMEOUT))
    }

    /// Shuts the socket down in both directions, which also wakes the reader half if it is blocked.
    pub fn shutdown_both(&self) {
        let _ = self.stream.socket().shutdown(std::net::Shutdown::Both);
    }
}

/// The receiving half of a split connection.
pub struct FrameReader {
    stream: Transport,
    address: String,
}

impl FrameReader {
    /// The broker's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Reads the next response frame.
    pub fn read_frame(&mut self, context: &str) -> Result<Bytes, BenchError> {
        read_frame(&mut self.stream, &self.address, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        let table = ApiTable::from_advertised(
            [
                (0i16, 3i16, 9i16),
                (1, 4, 17),
                (2, 0, 0),
                (3, 1, 12),
                (18, 0, 3),
                (999, 0, 1),
            ]
            .into_iter(),
        );
        assert_eq!(table.version(ApiKey::Produce).unwrap(), 9);
        assert_eq!(
            table.version(ApiKey::Fetch).unwrap(),
            12,
            "capped at the last topic-name version"
        );
        let error = table.version(ApiKey::ListOffsets).unwrap_err().to_string();
        assert!(error.contains("v0..v0") && error.contains("v1..v7"), "{error}");
        let error = table.version(ApiKey::CreateTopics).unwrap_err().to_string();
        assert!(error.contains("does not offer CreateTopics"), "{error}");
        assert_eq!(table.apis.iter().find(|a| a.key == 999).unwrap().name, "Api999");
    }

    #[test]
    fn request_frames_carry_length_header_and_body() {
        let mut out = BytesMut::new();
        encode_request(&mut out, 12, 7, &MetadataRequest::default()).unwrap();
        let length = i32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(length, out.len() - 4);
        assert_eq!(i16::from_be_bytes(out[4..6].try_into().unwrap()), 3, "api key");
        assert_eq!(i16::from_be_bytes(out[6..8].try_into().unwrap()), 12, "api version");
        assert_eq!(i32::from_be_bytes(out[8..12].try_into().unwrap()), 7, "correlation id");
    }

    #[test]
    fn mismatched_correlation_id_is_a_protocol_error() {
        // A flexible (header v1) Metadata v12 response: correlation id 5, empty tagged fields, then
        // a body that is never reached.
        let frame = Bytes::from_static(&[0, 0, 0, 5, 0]);
        let error = decode_response::<MetadataRequest>(frame, 12, 6, "b:1").unwrap_err();
        assert!(error.to_string().contains("correlation id 5, expected 6"), "{error}");
        let truncated = Bytes::from_static(&[0, 0, 0, 6, 0, 0]);
        let result: Result<MetadataResponse, _> = decode_response::<MetadataRequest>(truncated, 12, 6, "b:1");
        assert!(matches!(result, Err(BenchError::Protocol { .. })));
    }
}
