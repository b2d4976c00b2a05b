//! How a follower reaches its leader: the inter-broker listener, and a
//! Kafka client connection over it that authenticates as that listener
//! asks (Kafka's `inter.broker.listener.name` and
//! `sasl.mechanism.inter.broker.protocol`).
//!
//! ```text
//! follower shard                                   leader shard's port on listener L
//!   TCP connect ──────────────────────────────────► (L = --inter-broker-listener, from the image)
//!   SSL, SASL_SSL:  TLS handshake; the leader's certificate must chain to --tls-ca,
//!                   --tls-cert is presented if asked (principal User:<its subject>)
//!   SASL_*:         SaslHandshake{mechanism}, SaslAuthenticate × 1 (PLAIN) or × 2 (SCRAM)
//!                   as --inter-broker-user (principal User:<name>); SCRAM checks the leader's
//!                   server signature too
//!   Fetch / OffsetForLeaderEpoch with replica_id = this node ──► (with --authorizer acl:
//!                                                                 ClusterAction on the cluster)
//! ```
//!
//! Who owns what: one [`InterBroker`] is made at start on the main thread
//! (the TLS client configuration, reloaded on SIGHUP with the listeners'
//! certificate, and the login) and shared read-only by every shard; each
//! [`LeaderConnection`] lives in one fetcher task on the follower's shard.
//! Every answer a leader gives is bounded before it is decoded, as a
//! client's request is.

use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::{
    messages::{SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse},
    protocol::{Request, StrBytes},
};
use shardline_net::{TlsClientSettings, TlsConnector};

use crate::{
    config::{EngineConfig, Listener},
    sasl::{Mechanism, ScramClient},
};

/// Largest response a follower accepts (a fetch answer is bounded by
/// FETCH_BYTES_MAX plus one batch past it).
const RESPONSE_BYTES_MAX: usize = 64 << 20;
/// Most entries (topics, partitions, aborted transactions) a leader's
/// response may name: a follower asks about at most its partitions of one
/// leader, far fewer (the bound the broker puts on a client's request).
const RESPONSE_ENTRIES_MAX: usize = 100_000;
/// SaslHandshake version spoken (v1: SaslAuthenticate follows).
const SASL_HANDSHAKE_VERSION: i16 = 1;
/// SaslAuthenticate version spoken.
const SASL_AUTHENTICATE_VERSION: i16 = 2;

/// A byte stream to a leader: TCP, or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin {}
impl<S: AsyncRead + AsyncWrite + Unpin> Stream for S {}

/// The login of a follower on a SASL inter-broker listener.
#[derive(Clone)]
struct Login {
    mechanism: Mechanism,
    user: String,
    password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// How this broker's followers reach leaders; shared by every shard.
#[derive(Debug)]
pub(crate) struct InterBroker {
    /// The listener name followers connect to on the leader.
    listener: String,
    tls: Option<TlsConnector>,
    login: Option<Login>,
}

impl InterBroker {
    /// The inter-broker listener and its credentials, from the flags
    /// (`EngineConfig::inter_broker` has checked they fit together).
    pub(crate) fn new(config: &EngineConfig, listeners: &[Listener]) -> Result<InterBroker, String> {
        let (listener, user) = config.inter_broker(listeners)?;
        // Without --tls-ca (allowed on a single node only, which has no
        // followers) there is no TLS client.
        let tls = match (&config.tls_ca, listener.protocol.tls()) {
            (Some(ca_pem), true) => {
                let identity = config.tls_cert.clone().zip(config.tls_key.clone());
                let settings = TlsClientSettings {
                    ca_pem: ca_pem.clone(),
                    identity,
                };
                Some(TlsConnector::new(settings).map_err(|e| format!("inter-broker TLS: {e}"))?)
            }
            _ => None,
        };
        let login = match user {
            Some(user) => {
                let path = config
                    .sasl_users_file
                    .as_ref()
                    .ok_or("--inter-broker-user needs --sasl-users-file")?;
                let users = crate::sasl::read_users_file(path).map_err(|e| format!("SASL users: {e}"))?;
                let password = users
                    .into_iter()
                    .find(|(name, _)| name == user)
                    .map(|(_, password)| password)
                    .ok_or_else(|| format!("--inter-broker-user {user} is not in {}", path.display()))?;
                Some(Login {
                    mechanism: config.inter_broker_sasl_mechanism,
                    user: user.to_owned(),
                    password,
                })
            }
            None => None,
        };
        Ok(InterBroker {
            listener: listener.name.clone(),
            tls,
            login,
        })
    }

    /// The name of the listener followers connect to.
    pub(crate) fn listener(&self) -> &str {
        &self.listener
    }

    /// The TLS client configuration, for SIGHUP to reload.
    pub(crate) fn tls(&self) -> Option<&TlsConnector> {
        self.tls.as_ref()
    }

    /// Connects to a leader at `host:port`, as node `node_id`, and logs in
    /// as the listener asks.
    pub(crate) async fn connect(&self, host: &str, port: u16, node_id: i32) -> Result<LeaderConnection, String> {
        let address = format!("{host}:{port}");
        let tcp = glommio::timer::timeout(CONNECT_TIMEOUT, async { TcpStream::connect(address.as_str()).await })
            .await
            .map_err(|e| format!("connecting to {address}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match &self.tls {
            Some(tls) => Box::new(
                tls.connect(host, tcp)
                    .await
                    .map_err(|e| format!("TLS with {address}: {e}"))?,
            ),
            None => Box::new(tcp),
        };
        let mut connection = LeaderConnection {
            stream,
            correlation_id: 0,
            client_id: format!("shardline-replica-{node_id}"),
        };
        if let Some(login) = &self.login {
            connection
                .log_in(login)
                .await
                .map_err(|e| format!("logging in to {address} as {}: {e}", login.user))?;
        }
        Ok(connection)
    }
}

/// Bound on connecting to a leader.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on one request/response exchange (a parked fetch waits up to
/// FETCH_WAIT_MAX_MS on the leader).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A Kafka client connection of a follower to a leader, authenticated as
/// the inter-broker listener asks.
pub(crate) struct LeaderConnection {
    stream: Box<dyn Stream>,
    correlation_id: i32,
    client_id: String,
}

impl LeaderConnection {
    /// SaslHandshake, then the mechanism's SaslAuthenticate rounds.
    async fn log_in(&mut self, login: &Login) -> Result<(), String> {
        let mut handshake = SaslHandshakeRequest::default();
        handshake.mechanism = StrBytes::from_static_str(login.mechanism.name());
        let answer: SaslHandshakeResponse = self.call(SASL_HANDSHAKE_VERSION, &handshake).await?;
        if answer.error_code != 0 {
            return Err(format!("SaslHandshake refused with code {}", answer.error_code));
        }
        if login.mechanism == Mechanism::Plain {
            let token = format!("\0{}\0{}", login.user, login.password);
            self.authenticate(token.into_bytes()).await?;
            return Ok(());
        }
        let (client, first) =
            ScramClient::start(login.mechanism, &login.user, &login.password).map_err(|e| format!("SCRAM: {}", e.0))?;
        let server_first = self.authenticate(first).await?;
        let (client, last) = client.respond(&server_first).map_err(|e| format!("SCRAM: {}", e.0))?;
        let server_final = self.authenticate(last).await?;
        client.verify(&server_final).map_err(|e| format!("SCRAM: {}", e.0))
    }

    /// One SaslAuthenticate round; the server's bytes.
    async fn authenticate(&mut self, token: Vec<u8>) -> Result<Bytes, String> {
        let mut request = SaslAuthenticateRequest::default();
        request.auth_bytes = Bytes::from(token);
        let answer: SaslAuthenticateResponse = self.call(SASL_AUTHENTICATE_VERSION, &request).await?;
        if answer.error_code != 0 {
            let message = answer.error_message.as_ref().map_or("", |m| m.as_str());
            return Err(format!(
                "SaslAuthenticate refused with code {}: {message}",
                answer.error_code
            ));
        }
        Ok(answer.auth_bytes)
    }

    /// One request/response exchange; returns the response body.
    pub(crate) async fn call<R: Request>(&mut self, version: i16, request: &R) -> Result<R::Response, String> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let frame = shardline_net::encode_request(version, correlation_id, &self.client_id, request)
            .map_err(|e| e.to_string())?;
        let stream = &mut self.stream;
        let body = glommio::timer::timeout(CALL_TIMEOUT, async {
            stream.write_all(&frame).await.map_err(std::io::Error::other)?;
            let mut prefix = [0u8; 4];
            stream.read_exact(&mut prefix).await.map_err(std::io::Error::other)?;
            let length = usize::try_from(i32::from_be_bytes(prefix))
                .ok()
                .filter(|l| *l <= RESPONSE_BYTES_MAX)
                .ok_or_else(|| std::io::Error::other("response length out of bounds"))?;
            let mut body = vec![0u8; length];
            stream.read_exact(&mut body).await.map_err(std::io::Error::other)?;
            Ok(body)
        })
        .await
        .map_err(|e| format!("exchange with leader: {e}"))?;
        // The same structural walk a client's request gets before
        // kafka-protocol decodes it: a lying count must not make it allocate.
        let response =
            shardline_net::decode_response::<R>(version, correlation_id, Bytes::from(body), RESPONSE_ENTRIES_MAX)
                .map_err(|e| e.to_string())?;
        Ok(response)
    }
}
