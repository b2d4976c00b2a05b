//! Kafka listeners: where each shard takes its connections.
//!
//! With `--shard-listeners own` (the default) shard k has a port of its own,
//! `--listen`'s port + k, bound exclusively here on the main thread before any
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

use crate::{
    config::{EngineConfig, ShardListeners},
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

/// Binds the listeners of `shards` shards, in shard order.
pub(crate) fn bind(config: &EngineConfig, shards: usize) -> Result<Vec<ShardListener>, StartError> {
    let listen = config.listen;
    if config.shard_listeners == ShardListeners::Shared {
        // The shards bind with SO_REUSEPORT, which another process could
        // share too (the kernel would then split clients between two
        // brokers). A bind without it fails if anyone holds the port, so try
        // one first and let it go: a port in use stops the start here.
        if listen.port() != 0 {
            drop(bind_exclusive(listen).map_err(|e| {
                StartError(format!(
                    "binding the shared Kafka listener on {listen}: {e} (another process holds the port)"
                ))
            })?);
        }
        return Ok((0..shards).map(|_| ShardListener::Shared(listen)).collect());
    }
    let mut listeners = Vec::with_capacity(shards);
    for shard in 0..shards {
        let port = shard_port(listen.port(), shard)
            .ok_or_else(|| StartError(format!("--listen port {} + {shard} shards passes 65535", listen.port())))?;
        let address = SocketAddr::new(listen.ip(), port);
        let socket = bind_exclusive(address).map_err(|e| {
            StartError(format!(
                "binding shard {shard}'s Kafka listener on {address}: {e} (shard k listens on --listen's port + k; \
                 use free ports, or --shard-listeners shared for one port)"
            ))
        })?;
        listeners.push(ShardListener::Own(socket));
    }
    assert_eq!(listeners.len(), shards, "one listener per shard");
    Ok(listeners)
}

/// A TCP socket bound to `address` without SO_REUSEPORT, so no other process
/// can share the port (SO_REUSEADDR only lets a restart reuse it while old
/// connections linger in TIME_WAIT).
fn bind_exclusive(address: SocketAddr) -> std::io::Result<Socket> {
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

/// The port clients are told for each shard: the advertised port + k when
/// `--advertised-addr` names one, else the port the shard bound. Empty when
/// shards share one port.
pub(crate) fn advertised_shard_ports(
    config: &EngineConfig,
    listeners: &[ShardListener],
) -> Result<Vec<u16>, StartError> {
    let mut ports = Vec::with_capacity(listeners.len());
    for (shard, listener) in listeners.iter().enumerate() {
        let ShardListener::Own(socket) = listener else {
            return Ok(Vec::new());
        };
        let bound = socket
            .local_addr()
            .ok()
            .and_then(|address| address.as_socket())
            .ok_or_else(|| StartError(format!("shard {shard}'s listener has no address")))?
            .port();
        let port = match config.advertised_port() {
            Some(base) => shard_port(base, shard)
                .ok_or_else(|| StartError(format!("advertised port {base} + {shard} shards passes 65535")))?,
            None => bound,
        };
        ports.push(port);
    }
    assert_eq!(ports.len(), listeners.len(), "a port per shard");
    Ok(ports)
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
