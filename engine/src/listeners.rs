//! Kafka listeners: where each shard takes its connections.
//!
//! An engine serves up to `LISTENERS_MAX` named listeners (`--listen` is the
//! one named PLAINTEXT, `--listener NAME=PROTOCOL://HOST:PORT` the others),
//! each with its own security protocol (docs/security.md); every shard
//! accepts on every listener. Per listener:
//! with `--shard-listeners own` (the default) shard k has a port of its own,
//! the listener's port + k, bound exclusively here on the main thread before any
//! shard starts: a port held by another process stops the start with a clear
//! error, and a port of 0 gives every shard an ephemeral port. A shard starts
//! listening only once its partitions are open, so a client that connects
//! before then is refused rather than left waiting. Metadata then
//! names each shard as a broker (`kafka::brokers`), so clients connect to the
//! core that owns their partitions. With `shared` every shard binds
//! `--listen` itself with SO_REUSEPORT and the kernel picks a shard per
//! connection (requests for other shards' partitions then cross cores); the
//! port is first bound once without SO_REUSEPORT, so a port another process
//! holds (another engine included) stops the start instead of being shared.

use std::{net::SocketAddr, os::fd::IntoRawFd};

use socket2::{Domain, Protocol, Socket, Type};

use shardline_raft::BrokerListener;

use crate::{
    config::{EngineConfig, Listener, ShardListeners},
    runtime::StartError,
};

/// Connections the kernel queues for a shard's listener before it accepts
/// them (glommio's own listeners use the same).
const ACCEPT_BACKLOG: i32 = 1024;

/// Where one shard accepts Kafka connections.
#[derive(Debug)]
pub(crate) enum ShardListener {
    /// A socket of the shard's own, bound, not yet listening.
    Own(Socket),
    /// The address every shard binds with SO_REUSEPORT.
    Shared(SocketAddr),
}

impl ShardListener {
    /// Starts listening; the glommio listener is made on the shard's executor.
    pub(crate) fn listen(self) -> std::io::Result<glommio::net::TcpListener> {
        match self {
            ShardListener::Own(socket) => {
                use std::os::fd::FromRawFd;
                socket.listen(ACCEPT_BACKLOG)?;
                // SAFETY: the descriptor is a bound, listening TCP socket whose
                // ownership moves here (`into_raw_fd` gives it up).
                Ok(unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) })
            }
            ShardListener::Shared(address) => {
                glommio::net::TcpListener::bind(address).map_err(|e| std::io::Error::other(e.to_string()))
            }
        }
    }
}

/// One named listener's sockets, one per shard, in shard order.
#[derive(Debug)]
pub(crate) struct BoundListener {
    /// The listener as configured.
    pub(crate) listener: Listener,
    /// Shard k's socket (or shared address).
    pub(crate) shards: Vec<ShardListener>,
}

/// Binds every listener of `listeners` for `shards` shards.
pub(crate) fn bind_all(
    config: &EngineConfig,
    listeners: &[Listener],
    shards: usize,
) -> Result<Vec<BoundListener>, StartError> {
    assert!(listeners.len() <= crate::config::LISTENERS_MAX, "listeners are bounded");
    listeners
        .iter()
        .map(|listener| {
            Ok(BoundListener {
                listener: listener.clone(),
                shards: bind(config, listener, shards)?,
            })
        })
        .collect()
}

/// Binds the sockets of one listener for `shards` shards, in shard order.
fn bind(config: &EngineConfig, listener: &Listener, shards: usize) -> Result<Vec<ShardListener>, StartError> {
    let listen = listener.address;
    let name = &listener.name;
    if config.shard_listeners == ShardListeners::Shared {
        // The shards bind with SO_REUSEPORT, which another process could
        // share too (the kernel would then split clients between two
        // brokers). A bind without it fails if anyone holds the port, so try
        // one first and let it go: a port in use stops the start here.
        if listen.port() != 0 {
            drop(bind_exclusive(listen).map_err(|e| {
                StartError(format!(
                    "binding the shared Kafka listener {name} on {listen}: {e} (another process holds the port)"
                ))
            })?);
        }
        return Ok((0..shards).map(|_| ShardListener::Shared(listen)).collect());
    }
    let mut sockets = Vec::with_capacity(shards);
    for shard in 0..shards {
        let port = shard_port(listen.port(), shard).ok_or_else(|| {
            StartError(format!(
                "listener {name}: port {} + {shard} shards passes 65535",
                listen.port()
            ))
        })?;
        let address = SocketAddr::new(listen.ip(), port);
        let socket = bind_exclusive(address).map_err(|e| {
            StartError(format!(
                "binding shard {shard}'s Kafka listener {name} on {address}: {e} (shard k listens on the \
                 listener's port + k; use free ports, or --shard-listeners shared for one port)"
            ))
        })?;
        sockets.push(ShardListener::Own(socket));
    }
    assert_eq!(sockets.len(), shards, "one socket per shard");
    Ok(sockets)
}

/// A TCP socket bound to `address` without SO_REUSEPORT, so no other process
/// can share the port (SO_REUSEADDR only lets a restart reuse it while old
/// connections linger in TIME_WAIT).
pub(crate) fn bind_exclusive(address: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    Ok(socket)
}

/// Port of shard `shard` when `--listen` has port `base` (0: ephemeral).
fn shard_port(base: u16, shard: usize) -> Option<u16> {
    if base == 0 {
        return Some(0);
    }
    u16::try_from(shard).ok().and_then(|k| base.checked_add(k))
}

/// How clients of `bound` are told to reach it: its advertised host (or
/// bound address), shard 0's port, and each shard's port (the advertised
/// port + k when one is named, else the port the shard bound; empty when
/// shards share one port).
pub(crate) fn advertised(bound: &BoundListener) -> Result<BrokerListener, StartError> {
    let listener = &bound.listener;
    let name = &listener.name;
    let mut ports = Vec::with_capacity(bound.shards.len());
    for (shard, socket) in bound.shards.iter().enumerate() {
        let ShardListener::Own(socket) = socket else {
            ports.clear();
            break;
        };
        let bound_port = socket
            .local_addr()
            .ok()
            .and_then(|address| address.as_socket())
            .ok_or_else(|| StartError(format!("shard {shard}'s listener {name} has no address")))?
            .port();
        let port = match listener.advertised.as_ref().and_then(|(_, port)| *port) {
            Some(base) => shard_port(base, shard).ok_or_else(|| {
                StartError(format!(
                    "listener {name}: advertised port {base} + {shard} shards passes 65535"
                ))
            })?,
            None => bound_port,
        };
        ports.push(port);
    }
    assert!(
        ports.is_empty() || ports.len() == bound.shards.len(),
        "a port per shard, or none"
    );
    let host = listener
        .advertised
        .as_ref()
        .map_or_else(|| listener.address.ip().to_string(), |(host, _)| host.clone());
    let port = ports.first().copied().unwrap_or_else(|| {
        listener
            .advertised
            .as_ref()
            .and_then(|(_, port)| *port)
            .unwrap_or(listener.address.port())
    });
    Ok(BrokerListener {
        name: name.clone(),
        host,
        port,
        shard_ports: ports,
    })
}

#[cfg(test)]
mod tests {
    use super::shard_port;

    #[test]
    fn shard_ports_count_up_from_the_listen_port() {
        assert_eq!(shard_port(9092, 0), Some(9092));
        assert_eq!(shard_port(9092, 3), Some(9095));
        assert_eq!(shard_port(0, 3), Some(0), "ephemeral stays ephemeral");
        assert_eq!(shard_port(65535, 1), None);
    }
}
