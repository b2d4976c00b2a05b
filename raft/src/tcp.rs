//! The TCP transport of the metadata group: every peer RPC (Raft's, plus
//! `Forward` and `BrokerHeartbeat`) is one request frame answered by one
//! response frame on a connection to the peer's raft address.
//!
//! ## The frame
//! ```text
//!  0          4            8                          8 + len
//!  ┌──────────┬────────────┬──────────────────────────┐
//!  │ len      │ crc32c     │ payload                  │
//!  │ u32 BE   │ u32 BE     │ len bytes                │
//!  └──────────┴────────────┴──────────────────────────┘
//!  len     payload length, 1 ..= RPC_FRAME_PAYLOAD_BYTES_MAX
//!  crc32c  CRC-32C (Castagnoli) of the payload bytes
//!  payload one FlatBuffers buffer: RpcRequest (client → server) or
//!          RpcResponse (server → client), schema/rpc.fbs
//! ```
//! On a connection every frame is followed by a 32-byte HMAC-SHA256 tag,
//! and the connection begins with the peer handshake; both are drawn in
//! `peer_auth.rs`.
//! Network byte order, unlike the little-endian frames of the files
//! (`codec.rs`). A connection carries one request at a time: the client
//! writes a request frame and reads the response frame before the next.
//!
//! ## Client ([`TcpTransport`])
//! One connection per peer, opened on first use (`TCP_NODELAY`, then the
//! peer handshake, which checks the answering node is the one dialled and
//! holds the cluster secret), kept while
//! calls succeed, dropped on any error or timeout (the stream is taken out
//! of its slot for the call, so a call abandoned half way can never leave a
//! half-read response for the next one) and reopened by the next call. A
//! tokio mutex per peer serialises the calls. Connect failures are
//! `Unreachable`, everything else `Failed`.
//!
//! ## Server ([`serve`])
//! A tokio listener on `raft_listen`, on the raft thread's runtime. Each
//! accepted connection (at most [`RPC_CONNECTIONS_MAX`] at once) first
//! passes the peer handshake within [`HANDSHAKE_DEADLINE`] (a non-member,
//! another cluster secret or a stalled client is logged and closed before
//! any RPC is read), then loops: read a frame (within [`PEER_IDLE_DEADLINE`]
//! of the previous one), hand it to `serve_rpc` with the authenticated node
//! id, write the answer. A frame with a bad length, checksum or tag closes
//! that connection with a warning; nothing a peer sends can panic the node.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use crate::{
    liveness::Liveness,
    network::{serve_rpc, BoxFuture, RaftTransport, TransportError},
    peer_auth::{FrameOpener, FrameSealer, PeerAuth},
    types::{Node, NodeId, Raft},
};

/// Bytes of an RPC frame header (`len` + `crc32c`).
pub(crate) const RPC_FRAME_HEADER_BYTES: usize = 8;
const _: () = assert!(RPC_FRAME_HEADER_BYTES == 2 * std::mem::size_of::<u32>());

/// Largest RPC payload sent or accepted. openraft sends snapshots in chunks
/// (3 MiB by default) and AppendEntries in batches of at most 300 small
/// entries, so 64 MiB is far above any honest frame; a larger length is
/// garbage or an attack and must not become an allocation.
pub(crate) const RPC_FRAME_PAYLOAD_BYTES_MAX: u32 = 64 * 1024 * 1024;

/// Inbound connections served at once. A peer holds two (Raft traffic and
/// control traffic) and briefly a third while reconnecting; 64 covers a
/// five-voter group many times over and caps what a stray client can take.
pub const RPC_CONNECTIONS_MAX: usize = 64;

/// Time an accepted connection has to complete the peer handshake.
pub(crate) const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

/// Longest a peer connection may stay silent between frames, or take to
/// send one. Peers send heartbeats several times a second and reconnect on
/// demand, so a connection quiet this long is abandoned or hostile.
pub(crate) const PEER_IDLE_DEADLINE: Duration = Duration::from_secs(30);

/// Pause after a failed `accept` (for example out of file descriptors), so
/// the loop does not spin.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The socket failed or closed mid-frame.
    Io(std::io::Error),
    /// The length field is 0 or above [`RPC_FRAME_PAYLOAD_BYTES_MAX`].
    Length(u32),
    /// The payload does not match its checksum.
    Checksum { stored: u32, computed: u32 },
    /// The frame's tag does not verify: forged, altered, replayed or out
    /// of order (`seq` is the sequence number expected).
    Tag { seq: u64 },
    /// Nothing arrived within [`PEER_IDLE_DEADLINE`].
    Idle,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Io(error) => write!(f, "{error}"),
            FrameError::Length(length) => write!(f, "frame length {length} outside 1..={RPC_FRAME_PAYLOAD_BYTES_MAX}"),
            FrameError::Checksum { stored, computed } => {
                write!(f, "crc32c {computed:#010x} does not match the frame's {stored:#010x}")
            }
            FrameError::Tag { seq } => write!(
                f,
                "frame {seq}'s HMAC tag does not verify (forged, altered or replayed)"
            ),
            FrameError::Idle => write!(f, "no frame within {} s", PEER_IDLE_DEADLINE.as_secs()),
        }
    }
}

/// Encodes one frame holding `payload`.
pub(crate) fn encode_rpc_frame(payload: &[u8]) -> Result<Vec<u8>, TransportError> {
    let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    if !(1..=RPC_FRAME_PAYLOAD_BYTES_MAX).contains(&length) {
        return Err(TransportError::Failed(format!(
            "an RPC of {} bytes does not fit a frame (1..={RPC_FRAME_PAYLOAD_BYTES_MAX})",
            payload.len()
        )));
    }
    let mut frame = Vec::with_capacity(RPC_FRAME_HEADER_BYTES + payload.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    frame.extend_from_slice(payload);
    assert_eq!(frame.len(), RPC_FRAME_HEADER_BYTES + payload.len());
    Ok(frame)
}

/// Checks a frame header; returns the payload length.
pub(crate) fn parse_rpc_header(header: [u8; RPC_FRAME_HEADER_BYTES]) -> Result<(u32, u32), FrameError> {
    let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
    let length = u32::from_be_bytes([l0, l1, l2, l3]);
    let crc = u32::from_be_bytes([c0, c1, c2, c3]);
    if length == 0 || length > RPC_FRAME_PAYLOAD_BYTES_MAX {
        return Err(FrameError::Length(length));
    }
    Ok((length, crc))
}

/// Reads one frame. `Ok(None)`: the peer closed the connection between
/// frames.
pub(crate) async fn read_rpc_frame<R: AsyncRead + Unpin>(stream: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; RPC_FRAME_HEADER_BYTES];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(FrameError::Io(error)),
    }
    let (length, stored) = parse_rpc_header(header)?;
    let length = usize::try_from(length).map_err(|_| FrameError::Length(length))?;
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await.map_err(FrameError::Io)?;
    let computed = crc32c::crc32c(&payload);
    if computed != stored {
        return Err(FrameError::Checksum { stored, computed });
    }
    Ok(Some(payload))
}

/// An authenticated connection to a peer.
struct PeerConnection {
    stream: TcpStream,
    requests: FrameSealer,
    responses: FrameOpener,
}

/// One peer's connection slot: empty until the first call and after errors.
type Slot = Arc<tokio::sync::Mutex<Option<PeerConnection>>>;

/// The client side: a [`RaftTransport`] over one TCP connection per peer.
pub(crate) struct TcpTransport {
    auth: Arc<PeerAuth>,
    slots: Mutex<BTreeMap<NodeId, Slot>>,
}

impl TcpTransport {
    pub(crate) fn new(auth: Arc<PeerAuth>) -> Self {
        TcpTransport {
            auth,
            slots: Mutex::default(),
        }
    }

    async fn connect(&self, target: NodeId, addr: &str) -> Result<PeerConnection, TransportError> {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|error| TransportError::Unreachable(format!("connect to node {target} at {addr}: {error}")))?;
        stream
            .set_nodelay(true)
            .map_err(|error| TransportError::Failed(format!("TCP_NODELAY to node {target}: {error}")))?;
        let (requests, responses) =
            self.auth.connect(&mut stream, target).await.map_err(|error| {
                TransportError::Failed(format!("peer handshake with node {target} at {addr}: {error}"))
            })?;
        Ok(PeerConnection {
            stream,
            requests,
            responses,
        })
    }

    fn slot(&self, target: NodeId) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(slots.entry(target).or_default())
    }

    async fn round_trip(&self, target: NodeId, addr: &str, request: &[u8]) -> Result<Vec<u8>, TransportError> {
        let slot = self.slot(target);
        let mut guard = slot.lock().await;
        // Taken out: only a call that completes puts the connection back.
        let mut connection = match guard.take() {
            Some(connection) => connection,
            None => self.connect(target, addr).await?,
        };
        let frame = connection.requests.seal(request)?;
        connection
            .stream
            .write_all(&frame)
            .await
            .map_err(|error| TransportError::Failed(format!("send to node {target} at {addr}: {error}")))?;
        let reply = match connection.responses.read(&mut connection.stream).await {
            Ok(Some(reply)) => reply,
            Ok(None) => {
                return Err(TransportError::Failed(format!(
                    "node {target} at {addr} closed the connection"
                )))
            }
            Err(error) => {
                return Err(TransportError::Failed(format!(
                    "bad answer from node {target} at {addr}: {error}"
                )))
            }
        };
        *guard = Some(connection);
        Ok(reply)
    }
}

impl RaftTransport for TcpTransport {
    fn call<'a>(
        &'a self,
        target: NodeId,
        node: &'a Node,
        request: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, TransportError>> {
        Box::pin(async move {
            match tokio::time::timeout(timeout, self.round_trip(target, &node.addr, &request)).await {
                Ok(result) => result,
                Err(_) => Err(TransportError::Failed(format!(
                    "no answer from node {target} at {} within {} ms",
                    node.addr,
                    timeout.as_millis()
                ))),
            }
        })
    }
}

/// Binds the raft listener.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves peer RPCs on `listener` until the task is aborted (or the runtime
/// dropped).
pub(crate) async fn serve(listener: TcpListener, raft: Raft, liveness: Arc<Liveness>, auth: Arc<PeerAuth>) {
    let permits = Arc::new(Semaphore::new(RPC_CONNECTIONS_MAX));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metadata raft listener: accept failed");
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(%peer, limit = RPC_CONNECTIONS_MAX, "metadata raft listener: too many connections, closing this one");
            continue;
        };
        let raft = raft.clone();
        let liveness = Arc::clone(&liveness);
        let auth = Arc::clone(&auth);
        tokio::spawn(async move {
            serve_connection(stream, peer, &raft, &liveness, &auth).await;
            drop(permit);
        });
    }
}

async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, raft: &Raft, liveness: &Liveness, auth: &PeerAuth) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "TCP_NODELAY failed");
    }
    let (node, mut requests, mut responses) = match tokio::time::timeout(HANDSHAKE_DEADLINE, auth.accept(&mut stream))
        .await
    {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(error)) => {
            tracing::warn!(%peer, %error, "metadata raft connection refused: peer handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, deadline_ms = HANDSHAKE_DEADLINE.as_millis(), "metadata raft connection refused: no handshake in time");
            return;
        }
    };
    loop {
        let request = match tokio::time::timeout(PEER_IDLE_DEADLINE, requests.read(&mut stream)).await {
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) => return,
            Ok(Err(error)) => {
                tracing::warn!(%peer, node, %error, "metadata raft connection: bad frame, closing it");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, node, error = %FrameError::Idle, "metadata raft connection: idle, closing it");
                return;
            }
        };
        let response = serve_rpc(raft, Some(liveness), Some(node), &request).await;
        let frame = match responses.seal(&response) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::warn!(%peer, %error, "metadata raft connection: answer too large, closing it");
                return;
            }
        };
        if let Err(error) = stream.write_all(&frame).await {
            tracing::debug!(%peer, %error, "metadata raft connection: send failed, closing it");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_checked() {
        let frame = encode_rpc_frame(b"hello").unwrap();
        let header: [u8; RPC_FRAME_HEADER_BYTES] = frame[..RPC_FRAME_HEADER_BYTES].try_into().unwrap();
        let (length, crc) = parse_rpc_header(header).unwrap();
        assert_eq!(length, 5);
        assert_eq!(crc, crc32c::crc32c(b"hello"));
        assert!(matches!(parse_rpc_header([0; 8]), Err(FrameError::Length(0))));
        let huge = (RPC_FRAME_PAYLOAD_BYTES_MAX + 1).to_be_bytes();
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&huge);
        assert!(matches!(parse_rpc_header(header), Err(FrameError::Length(_))));
        assert!(encode_rpc_frame(b"").is_err());
    }

    /// A server that gets garbage closes the connection; a client whose
    /// peer is down gets `Unreachable`.
    #[tokio::test(flavor = "current_thread")]
    async fn bad_frames_close_the_connection_and_dead_peers_are_unreachable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let result = read_rpc_frame(&mut stream).await;
            assert!(matches!(result, Err(FrameError::Checksum { .. })), "{result:?}");
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut frame = encode_rpc_frame(b"payload").unwrap();
        if let Some(last) = frame.last_mut() {
            *last ^= 1;
        }
        client.write_all(&frame).await.unwrap();
        server.await.unwrap();

        let members = [1, 2].into_iter().collect();
        let transport = TcpTransport::new(Arc::new(PeerAuth::new(1, members, None)));
        let node = Node::new(addr.to_string());
        let result = transport.call(2, &node, vec![1], Duration::from_secs(2)).await;
        assert!(matches!(result, Err(TransportError::Unreachable(_))), "{result:?}");
    }
}
