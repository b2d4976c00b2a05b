//! A minimal blocking Kafka client for `shardctl group` and `shardctl topic`:
//! one TCP connection, one request at a time, kafka-protocol's client-side
//! encoders and decoders; and what every such command shares (the
//! `--bootstrap` flag, strings for requests, a refusal as an error). With
//! `SHARDCTL_SASL_USER` and `SHARDCTL_SASL_PASSWORD` in the environment a
//! connection logs in with SASL PLAIN first (SASL_PLAINTEXT and SASL_SSL
//! listeners; the password stays off the command line); with
//! `SHARDCTL_TLS_CA` it speaks TLS (`tls.rs`: SSL and SASL_SSL listeners).
//!
//! The frames are made and read by net (`shardline_net::encode_request`,
//! `decode_response`, which also serve the engine's follower client); this
//! module does the blocking I/O around them.

use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs},
    time::Duration,
};

use bytes::Bytes;
use kafka_protocol::{
    messages::{
        metadata_request::MetadataRequestTopic, MetadataRequest, MetadataResponse, SaslAuthenticateRequest,
        SaslHandshakeRequest, TopicName,
    },
    protocol::{Request, StrBytes},
    ResponseError,
};

use crate::error::ToolError;

/// Longest the tool waits to connect, or for any one answer.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// The SASL PLAIN user every connection logs in as, when set.
const SASL_USER_VARIABLE: &str = "SHARDCTL_SASL_USER";
/// Its password.
const SASL_PASSWORD_VARIABLE: &str = "SHARDCTL_SASL_PASSWORD";
/// Largest response accepted (a DescribeGroups of a large group is far below).
const RESPONSE_BYTES_MAX: usize = 64 << 20;
/// Most entries a response may name where net walks it before decoding.
const RESPONSE_ENTRIES_MAX: usize = 1_000_000;
/// The client id every request carries.
const CLIENT_ID: &str = "shardctl";

/// Metadata version asked (every Shardline broker serves v12).
const METADATA_VERSION: i16 = 12;

/// Metadata from the broker at `bootstrap`: every topic (`None`) or one;
/// never creates the topic.
pub(crate) fn metadata(bootstrap: &str, topic: Option<&str>) -> Result<MetadataResponse, ToolError> {
    let mut request = MetadataRequest::default();
    request.topics = topic.map(|name| {
        let mut t = MetadataRequestTopic::default();
        t.name = Some(TopicName(text(name)));
        vec![t]
    });
    request.allow_auto_topic_creation = false;
    Client::connect(bootstrap)?.call("Metadata", METADATA_VERSION, &request)
}

/// Where the broker is: the flag every command that talks to one takes.
#[derive(Debug, clap::Args)]
pub(crate) struct BrokerArgs {
    /// A broker's Kafka address.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub(crate) bootstrap: String,
}

/// A request string.
pub(crate) fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The broker's refusal of `what`: its error by name and code, and its
/// message when it sent one.
pub(crate) fn refused(what: &str, code: i16, message: Option<&StrBytes>) -> ToolError {
    let name = ResponseError::try_from_code(code).map_or_else(|| format!("error {code}"), |e| format!("{e:?}"));
    let detail = message
        .map(|m| m.as_str())
        .filter(|m| !m.is_empty())
        .map_or_else(String::new, |m| format!(": {m}"));
    ToolError::Refused(format!("{what}: the broker answered {name} ({code}){detail}"))
}

/// One connection to a broker.
pub(crate) struct Client {
    stream: crate::tls::Stream,
    addr: String,
    correlation_id: i32,
}

impl Client {
    /// Connects to `addr` (`host:port`).
    pub(crate) fn connect(addr: &str) -> Result<Client, ToolError> {
        let broker = |reason: String| ToolError::Broker {
            context: "connecting",
            addr: addr.to_string(),
            reason,
        };
        let resolved = addr
            .to_socket_addrs()
            .map_err(|e| broker(e.to_string()))?
            .next()
            .ok_or_else(|| broker("no address".into()))?;
        let stream = TcpStream::connect_timeout(&resolved, IO_TIMEOUT).map_err(|e| broker(e.to_string()))?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(|e| broker(e.to_string()))?;
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let stream = crate::tls::open(stream, host).map_err(broker)?;
        let mut client = Client {
            stream,
            addr: addr.to_string(),
            correlation_id: 0,
        };
        if let Ok(user) = std::env::var(SASL_USER_VARIABLE) {
            let password = std::env::var(SASL_PASSWORD_VARIABLE).map_err(|_| {
                broker(format!(
                    "{SASL_USER_VARIABLE} is set but {SASL_PASSWORD_VARIABLE} is not"
                ))
            })?;
            client.log_in(&user, &password)?;
        }
        Ok(client)
    }

    /// SASL PLAIN (SaslHandshake v1, then one SaslAuthenticate v2), as a
    /// SASL_PLAINTEXT listener asks before anything else.
    fn log_in(&mut self, user: &str, password: &str) -> Result<(), ToolError> {
        let mut handshake = SaslHandshakeRequest::default();
        handshake.mechanism = text("PLAIN");
        let answer = self.call("SaslHandshake", 1, &handshake)?;
        if answer.error_code != 0 {
            return Err(refused("SASL handshake (PLAIN)", answer.error_code, None));
        }
        let mut token = Vec::with_capacity(user.len() + password.len() + 2);
        token.push(0);
        token.extend_from_slice(user.as_bytes());
        token.push(0);
        token.extend_from_slice(password.as_bytes());
        let mut authenticate = SaslAuthenticateRequest::default();
        authenticate.auth_bytes = Bytes::from(token);
        let answer = self.call("SaslAuthenticate", 2, &authenticate)?;
        if answer.error_code != 0 {
            return Err(refused(
                &format!("logging in as {user}"),
                answer.error_code,
                answer.error_message.as_ref(),
            ));
        }
        Ok(())
    }

    /// Sends `request` at `version` and reads its response.
    pub(crate) fn call<R: Request>(
        &mut self,
        context: &'static str,
        version: i16,
        request: &R,
    ) -> Result<R::Response, ToolError> {
        let broker = |reason: String, addr: &str| ToolError::Broker {
            context,
            addr: addr.to_string(),
            reason,
        };
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let frame = shardline_net::encode_request(version, self.correlation_id, CLIENT_ID, request)
            .map_err(|e| broker(e.to_string(), &self.addr))?;
        self.stream
            .write_all(&frame)
            .map_err(|e| broker(format!("sending: {e}"), &self.addr))?;
        let mut prefix = [0u8; 4];
        self.stream
            .read_exact(&mut prefix)
            .map_err(|e| broker(format!("reading: {e}"), &self.addr))?;
        let length = usize::try_from(i32::from_be_bytes(prefix))
            .ok()
            .filter(|l| *l <= RESPONSE_BYTES_MAX)
            .ok_or_else(|| broker("response length out of bounds".into(), &self.addr))?;
        let mut body = vec![0u8; length];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| broker(format!("reading: {e}"), &self.addr))?;
        shardline_net::decode_response::<R>(version, self.correlation_id, Bytes::from(body), RESPONSE_ENTRIES_MAX)
            .map_err(|e| broker(e.to_string(), &self.addr))
    }
}
