//! The MQTT listener: one socket, bound exclusively on the main thread at
//! start (a port in use stops the start before the data directory is
//! touched), shared by every shard. Each shard accepts on its own copy of
//! the descriptor once its partitions are open, so the kernel hands each
//! new connection to whichever shard is waiting: MQTT clients cannot name
//! a core the way Kafka clients do (one port per shard), and their
//! messages reach the partition's owner by message anyway.

use std::{os::fd::IntoRawFd, rc::Rc, sync::Arc};

use socket2::Socket;

use crate::{config::EngineConfig, listeners::bind_exclusive, runtime::StartError, sasl::SaslSettings, shard::Shard};

/// Connections the kernel queues for the MQTT socket before a shard
/// accepts them.
const ACCEPT_BACKLOG: i32 = 1024;

/// One shard's copy of the MQTT socket (bound, not yet listening), and
/// the users CONNECTs are checked against (`--mqtt-auth password`).
#[derive(Debug)]
pub(crate) struct MqttSocket(Socket, Option<Arc<SaslSettings>>);

impl MqttSocket {
    /// This socket, its CONNECTs checked against `users` (`None`: not checked).
    pub(crate) fn with_users(self, users: Option<Arc<SaslSettings>>) -> MqttSocket {
        MqttSocket(self.0, users)
    }
}

/// Binds `--mqtt-listen` and gives each of `shards` shards a copy; none
/// when MQTT is off.
pub(crate) fn bind(config: &EngineConfig, shards: usize) -> Result<Vec<Option<MqttSocket>>, StartError> {
    let Some(address) = config.mqtt_listen.0 else {
        return Ok((0..shards).map(|_| None).collect());
    };
    let socket = bind_exclusive(address).map_err(|e| {
        StartError(format!(
            "binding the MQTT listener on {address}: {e} (another process holds the port? \
             --mqtt-listen HOST:PORT picks another, --mqtt-listen off turns MQTT off)"
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
        let copy = socket
            .try_clone()
            .map_err(|e| StartError(format!("copying the MQTT socket for a shard: {e}")))?;
        copies.push(Some(MqttSocket(copy, None)));
    }
    copies.insert(0, Some(MqttSocket(socket, None)));
    assert_eq!(copies.len(), shards, "one copy of the MQTT socket per shard");
    Ok(copies)
}

/// The address the MQTT socket is bound to, for the start-up line.
pub(crate) fn describe(sockets: &[Option<MqttSocket>]) -> String {
    sockets
        .first()
        .and_then(Option::as_ref)
        .and_then(|socket| socket.0.local_addr().ok())
        .and_then(|address| address.as_socket())
        .map_or_else(|| "off".to_string(), |address| address.to_string())
}

/// Accepts MQTT connections on this shard until `stopped` says so, then
/// tells every MQTT connection of the shard to close.
pub(crate) async fn accept_loop(
    shard: Rc<Shard>,
    socket: MqttSocket,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    socket
        .0
        .listen(ACCEPT_BACKLOG)
        .map_err(|e| format!("listening on the MQTT socket: {e}"))?;
    let MqttSocket(socket, socket_users) = socket;
    // SAFETY: the descriptor is a bound, listening TCP socket whose
    // ownership moves here (`into_raw_fd` gives it up).
    let listener = unsafe {
        use std::os::fd::FromRawFd;
        glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd())
    };
    tracing::info!(
        shard = shard.id,
        address = %listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        "MQTT listener listening"
    );
    let serving = Rc::clone(&shard);
    let users = socket_users;
    crate::runtime::accept_until_stopped(shard.id, &listener, "MQTT", stopped, |stream| {
        super::connection::start(&serving, stream, users.clone());
    })
    .await;
    shard.mqtt.close_all();
    Ok(())
}
