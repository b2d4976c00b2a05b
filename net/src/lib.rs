//! # `shardline-net`: the Kafka wire layer
//!
//! This crate turns a TCP byte stream into typed Kafka requests and typed
//! responses back into bytes. It owns the length-prefixed frames (with a size
//! bound), the request header, the decoding of every request body the broker
//! serves, the encoding of every response, and the per-connection loop that
//! ties them together. It knows nothing about topics, partitions or logs: the
//! engine implements [`Handler`] and calls [`serve_connection`] for each
//! accepted `glommio::net::TcpStream`. It imports no other Shardline crate.
//!
//! ## Where its state lives
//! All state is per connection and lives on the shard (glommio executor,
//! core) that accepted the socket: the read buffer, the queue of in-flight
//! requests, the staging buffer for writes. None of it is `Send` and none of
//! it is shared. Handlers are spawned as local tasks on the same executor, so
//! a handler may hold `Rc`s into shard state; reaching another shard is the
//! engine's business.
//!
//! ## The hot path
//! - **Produce** (v3–v9) is decoded by hand ([`ProduceRequest`]): each
//!   partition's record set is a [`bytes::Bytes`] slice of the received
//!   frame, never copied and never decoded here. The log validates it.
//! - **Fetch** responses (v4–v12) are framed by hand ([`FetchResponse`]):
//!   the handler passes record batches as `Bytes` slices (typically of
//!   memory-mapped segments) and they reach the socket untouched; small
//!   header pieces and small batches are coalesced into one buffer, slices
//!   of 128 KiB or more are written from where they are.
//! - Everything else goes through kafka-protocol's generated codecs, after a
//!   structural walk (`shape.rs`) that checks every array count against the
//!   bytes present, because kafka-protocol allocates for a count before
//!   reading its items.
//!
//! ## Ordering and concurrency
//! Up to [`ConnectionConfig::in_flight_max`] requests per connection are
//! read ahead and handled concurrently; responses go out strictly in request
//! order. A handler returning `None` sends nothing (Produce with `acks = 0`).
//!
//! ## Bad input
//! A frame length below 0 or above [`ConnectionConfig::max_frame_bytes`], a
//! frame cut short, a header or body that does not parse, or an API/version
//! outside [`SUPPORTED_APIS`] ends that connection with one `warn!` line and
//! an `Err` from [`serve_connection`]; nothing else is affected and nothing
//! panics. The exception is ApiVersions at an unsupported version, which is
//! answered with an ApiVersions v0 UNSUPPORTED_VERSION response carrying the
//! supported list, so clients can downgrade (KIP-511).
//!
//! ## Additions to the agreed API
//! - [`ConnectionConfig::control_body_bytes_max`] (default 8 MiB) bounds the
//!   body of every request but Produce; `with_*` builders on the config.
//! - [`ConnectionConfig::capture_dir`] (testing aid, off by default) writes
//!   every request frame received to a directory, to seed the fuzz corpora
//!   with real client traffic (`capture.rs`, net/fuzz/README.md).
//! - [`api_versions_response`] builds the ApiVersions answer from
//!   [`SUPPORTED_APIS`]; [`is_supported`] and [`supported_versions`] read it.
//! - [`decode_request`], [`decode_request_body`], [`RequestHeader::decode`],
//!   [`ProduceRequest::decode`] and [`encode_response_pieces`] are public for
//!   tools, benches, tests and fuzzing.
//! - [`FetchPartitionResponse`] also carries `aborted_transactions` and
//!   `preferred_read_replica`; [`AbortedTransaction`] is their type.
//! - [`NetError::is_bad_input`] and [`NetError::HandlerCancelled`];
//!   [`DecodeError`] and [`EncodeError`] are the sources inside [`NetError`].
//!
//! ## Security
//! - [`TlsAcceptor`] (`tls.rs`): rustls over glommio streams, certificates
//!   from PEM files, optional client certificates, reload without restart.
//!   [`serve_connection`] is generic over [`Transport`] (plain TCP or
//!   [`TlsStream`]), so the plaintext loop is unchanged.
//! - [`serve_authenticated`] runs an [`Authenticator`] (the engine's SASL)
//!   before serving: one request at a time, every frame at most
//!   [`AUTH_FRAME_BYTES_MAX`], at most [`AUTH_ROUNDS_MAX`] requests, within
//!   [`AUTH_TIMEOUT`]; a refusal closes the connection
//!   ([`NetError::Authentication`]). SaslHandshake and SaslAuthenticate
//!   decode through kafka-protocol like the other control-plane APIs.
//!
//! ## Counters
//! [`thread_stats`] reads the calling thread's counts of bytes received and
//! sent on Kafka connections (`stats.rs`): plain per-thread cells, since a
//! connection lives on one shard's thread. The engine's metrics endpoint
//! reads them on each shard.
//!
//! ## MQTT
//! [`mqtt`] is the MQTT 3.1.1 and 5.0 codec (packets in, packets out, no
//! state): the engine runs MQTT sessions on the same shards and stores
//! their messages in the same log (docs/mqtt.md). Its types are reached as
//! `shardline_net::mqtt::...`, apart from the Kafka ones.
//!
//! Byte layouts are drawn at the top of each format's file: `frame.rs`,
//! `cursor.rs` (primitive types), `header.rs`, `produce.rs`, `fetch.rs`,
//! `describe_configs_v0.rs`, `shape.rs`. `docs/kafka-wire.md` has the whole
//! picture and the measurements behind the write strategy.

mod apis;
mod capture;
mod client;
mod codec;
mod conn;
mod cursor;
mod describe_configs_v0;
mod error;
mod fetch;
mod frame;
mod header;
mod limits;
pub mod mqtt;
mod produce;
#[cfg(test)]
mod proptests;
mod put;
mod shape;
mod stats;
mod tls;

pub use apis::{api_versions_response, is_supported, supported_versions, SUPPORTED_APIS, UNSUPPORTED_VERSION};
pub use client::{decode_response, encode_request, ClientFrameError};
pub use codec::{decode_request, decode_request_body, encode_response_pieces, Request, RequestBody, ResponseBody};
pub use conn::{
    serve_authenticated, serve_connection, AuthStep, Authenticator, ConnectionConfig, Handler, NoAuthentication,
    AUTH_FRAME_BYTES_MAX, AUTH_ROUNDS_MAX, AUTH_TIMEOUT,
};
pub use error::{DecodeError, EncodeError, KafkaProtocolError, NetError};
pub use fetch::{AbortedTransaction, FetchPartitionResponse, FetchResponse, FetchTopicResponse};
pub use header::RequestHeader;
pub use limits::{ConnectionActivity, ConnectionShare, RequestMemory};
pub use produce::{
    ProducePartition, ProducePartitionResponse, ProduceRequest, ProduceResponse, ProduceTopic, ProduceTopicResponse,
    RecordError,
};
pub use shape::check_response;
pub use stats::{thread_stats, NetStats};
pub use tls::{
    ClientAuth, TlsAcceptor, TlsClientSettings, TlsClientStream, TlsConnector, TlsError, TlsSettings, TlsStream,
    Transport, TLS_HANDSHAKE_TIMEOUT,
};

/// kafka-protocol, re-exported so the engine builds control-plane responses
/// with exactly the version net encodes with.
pub use kafka_protocol;
