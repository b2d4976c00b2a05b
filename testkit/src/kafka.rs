//! One Kafka request and its response on a fresh connection, every step
//! bounded, and the mapping from Kafka broker ids (one per shard) back to
//! nodes.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use kafka_protocol::{
    messages::{RequestHeader, ResponseHeader},
    protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes},
};

/// Bound on connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Bound on each read and write of an exchange. A CreateTopics waits for the
/// metadata group and every shard: on 2 loaded cores (a full test run beside
/// builds) that took over 3 s.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response read.
const RESPONSE_BYTES_MAX: usize = 16 << 20;

/// The node of a Kafka broker id: every shard of a node is a broker of its
/// own to clients, with id node + 1000 × shard (-1, no broker, stays -1).
/// The harness speaks node ids.
pub fn node_of(broker_id: i32) -> i32 {
    if broker_id < 0 {
        broker_id
    } else {
        broker_id % 1000
    }
}

/// One request and its response on a fresh connection, every step bounded.
/// Any failure (refused, timed out, undecodable) is an `Err`: callers poll.
pub fn call<R: Request>(addr: SocketAddr, version: i16, request: &R) -> std::io::Result<R::Response> {
    KafkaConnection::connect(addr)?.request(version, request)
}

/// A Kafka connection for several requests in turn (e.g. a SASL exchange),
/// every read and write bounded by `IO_TIMEOUT`.
pub struct KafkaConnection {
    stream: TcpStream,
    correlation_id: i32,
}

impl KafkaConnection {
    /// Connects within `CONNECT_TIMEOUT`.
    pub fn connect(addr: SocketAddr) -> std::io::Result<KafkaConnection> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(KafkaConnection {
            stream,
            correlation_id: 0,
        })
    }

    /// `request` as a whole frame (length prefix, header, body).
    pub fn frame<R: Request>(&mut self, version: i16, request: &R) -> std::io::Result<Vec<u8>> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        self.correlation_id += 1;
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0; 4]);
        RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("shardline-testkit")))
            .encode(&mut frame, R::header_version(version))
            .map_err(|e| invalid(e.to_string()))?;
        request
            .encode(&mut frame, version)
            .map_err(|e| invalid(e.to_string()))?;
        let length = i32::try_from(frame.len() - 4).unwrap();
        frame[..4].copy_from_slice(&length.to_be_bytes());
        Ok(frame.to_vec())
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends `request` and reads its response.
    pub fn request<R: Request>(&mut self, version: i16, request: &R) -> std::io::Result<R::Response> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let frame = self.frame(version, request)?;
        self.stream.write_all(&frame)?;
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix)?;
        let length = usize::try_from(i32::from_be_bytes(prefix)).map_err(|e| invalid(e.to_string()))?;
        if length > RESPONSE_BYTES_MAX {
            return Err(invalid(format!("response of {length} bytes")));
        }
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body)?;
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| invalid(e.to_string()))?;
        if header.correlation_id != self.correlation_id {
            return Err(invalid(format!("correlation id {}", header.correlation_id)));
        }
        R::Response::decode(&mut body, version).map_err(|e| invalid(e.to_string()))
    }

    /// True when the peer has closed the connection (reads end of stream or
    /// a reset within `IO_TIMEOUT`); false if bytes arrive or the read times out.
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }
}
