//! The MQTT listeners: `--mqtt-listen` (plain TCP) and `--mqtt-tls-listen`
//! (MQTT over TLS), each one socket, bound exclusively on the main thread
//! at start (a port in use stops the start before the data directory is
//! touched), shared by every shard. Each shard accepts on its own copy of
//! each descriptor once its partitions are open, so the kernel hands each
//! new connection to whichever shard is waiting: MQTT clients cannot name
//! a core the way Kafka clients do (one port per shard), and their
//! messages reach the partition's owner by message anyway. A TLS
//! connection's handshake runs on the shard that accepted it, through the
//! same acceptor (certificate, key, client CA) as the Kafka TLS listeners.

use std::{net::SocketAddr, os::fd::IntoRawFd, rc::Rc, sync::Arc};

use shardline_net::TlsAcceptor;
use socket2::Socket;

use super::TopicAcl;
use crate::{config::EngineConfig, listeners::bind_exclusive, runtime::StartError, sasl::SaslSettings, shard::Shard};

/// Connections the kernel queues for an MQTT socket before a shard
/// accepts them.
const ACCEPT_BACKLOG: i32 = 1024;

/// One shard's copy of an MQTT socket (bound, not yet listening), whether
/// it speaks TLS, and the users CONNECTs are checked against
/// (`--mqtt-auth password`).
#[derive(Debug)]
pub(crate) struct MqttSocket {
    socket: Socket,
    /// Whether this is the `--mqtt-tls-listen` socket.
    speaks_tls: bool,
    /// Its TLS acceptor (set with the security, for the TLS socket).
    tls: Option<TlsAcceptor>,
    users: Option<Arc<SaslSettings>>,
    /// The rules of `--mqtt-acl-file`, if given.
    topic_acl: Option<Arc<TopicAcl>>,
}

impl MqttSocket {
    /// This socket with what its connections are checked with: `users` for
    /// passwords (`None`: none checked), if it is the TLS socket, `tls`, and
    /// the per-topic rules of `--mqtt-acl-file`.
    pub(crate) fn with_security(
        self,
        users: Option<Arc<SaslSettings>>,
        tls: Option<TlsAcceptor>,
        topic_acl: Option<Arc<TopicAcl>>,
    ) -> MqttSocket {
        MqttSocket {
            tls: tls.filter(|_| self.speaks_tls),
            users,
            topic_acl,
            ..self
        }
    }
}

/// Binds `--mqtt-listen` and `--mqtt-tls-listen` and gives each of
/// `shards` shards a copy of each bound one (none when both are off).
pub(crate) fn bind(config: &EngineConfig, shards: usize) -> Result<Vec<Vec<MqttSocket>>, StartError> {
    let mut per_shard: Vec<Vec<MqttSocket>> = (0..shards).map(|_| Vec::new()).collect();
    let wanted = [(config.mqtt_listen.0, false), (config.mqtt_tls_listen.0, true)];
    for (address, speaks_tls) in wanted {
        let Some(address) = address else {
            continue;
        };
        for (copies, socket) in per_shard.iter_mut().zip(bind_one(address, speaks_tls, shards)?) {
            copies.push(MqttSocket {
                socket,
                speaks_tls,
                tls: None,
                users: None,
                topic_acl: None,
            });
        }
    }
    Ok(per_shard)
}

/// One bound socket at `address` and a copy per further shard.
fn bind_one(address: SocketAddr, speaks_tls: bool, shards: usize) -> Result<Vec<Socket>, StartError> {
    let flag = if speaks_tls {
        "--mqtt-tls-listen"
    } else {
        "--mqtt-listen"
    };
    let socket = bind_exclusive(address).map_err(|e| {
        StartError(format!(
            "binding the MQTT listener on {address}: {e} (another process holds the port? \
             {flag} HOST:PORT picks another, {flag} off turns it off)"
        ))
    })?;
    // Non-blocking for good: O_NONBLOCK belongs to the open file, which
    // every shard's copy shares. glommio's accept first tries a direct
    // accept(2), setting O_NONBLOCK around it and restoring the old flags
    // after; with a blocking socket, one shard restoring "blocking" while
    // another is inside accept(2) leaves that shard's whole executor stuck
    // in the syscall until a client connects (seen in the test suite).
    socket
        .set_nonblocking(true)
        .map_err(|e| StartError(format!("making the MQTT socket non-blocking: {e}")))?;
    let mut copies = Vec::with_capacity(shards);
    for _ in 1..shards {
        copies.push(
            socket
                .try_clone()
                .map_err(|e| StartError(format!("copying the MQTT socket for a shard: {e}")))?,
        );
    }
    copies.insert(0, socket);
    assert_eq!(copies.len(), shards, "one copy of the MQTT socket per shard");
    Ok(copies)
}

/// The addresses the MQTT sockets are bound to, for the start-up line.
pub(crate) fn describe(sockets: &[Vec<MqttSocket>]) -> String {
    let bound: Vec<String> = sockets
        .first()
        .map(|first| {
            first
                .iter()
                .filter_map(|socket| {
                    let address = socket.socket.local_addr().ok()?.as_socket()?;
                    Some(if socket.speaks_tls {
                        format!("{address} (TLS)")
                    } else {
                        address.to_string()
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    if bound.is_empty() {
        "off".to_string()
    } else {
        bound.join(", ")
    }
}

/// Accepts MQTT connections on this shard until `stopped` says so, then
/// tells every MQTT connection of the shard to close.
pub(crate) async fn accept_loop(
    shard: Rc<Shard>,
    socket: MqttSocket,
    stopped: tokio::sync::watch::Receiver<bool>,
    authorizer: Rc<crate::acl::Authorizer>,
) -> Result<(), String> {
    socket
        .socket
        .listen(ACCEPT_BACKLOG)
        .map_err(|e| format!("listening on the MQTT socket: {e}"))?;
    if socket.speaks_tls && socket.tls.is_none() {
        return Err("the MQTT TLS socket has no TLS acceptor (--tls-cert, --tls-key)".to_string());
    }
    let MqttSocket {
        socket,
        tls,
        users,
        topic_acl,
        ..
    } = socket;
    // SAFETY: the descriptor is a bound, listening TCP socket whose
    // ownership moves here (`into_raw_fd` gives it up).
    let listener = unsafe {
        use std::os::fd::FromRawFd;
        glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd())
    };
    tracing::info!(
        shard = shard.id,
        address = %listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        tls = tls.is_some(),
        "MQTT listener listening"
    );
    let serving = Rc::clone(&shard);
    let name = if tls.is_some() { "MQTT TLS" } else { "MQTT" };
    crate::runtime::accept_until_stopped(shard.id, &listener, name, stopped, |stream| {
        let security = super::connection::Security {
            users: users.clone(),
            tls: tls.clone(),
            topic_acl: topic_acl.clone(),
            authorizer: Rc::clone(&authorizer),
        };
        super::connection::start(&serving, stream, security);
    })
    .await;
    shard.mqtt.close_all();
    Ok(())
}
