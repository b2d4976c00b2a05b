//! Who may speak on the metadata raft port, and how every frame proves it.
//!
//! A connection to a raft listener starts with a three-message handshake.
//! It proves that both ends hold the cluster secret, binds the connecting
//! end to the node id it claims (which must be a member of the group, not
//! the listener's own), and derives one key per direction from the secret
//! and two fresh nonces. Every frame after it ends with an HMAC-SHA256 tag
//! over its sequence number and payload under its direction's key, so a
//! frame cannot be forged, altered, replayed on the same connection (the
//! sequence number moved on) or on another one (another pair of nonces gave
//! other keys), or reflected back to its sender (each direction has its own
//! key).
//!
//! ## Why an HMAC with a cluster secret rather than mutual TLS
//! The raft thread runs tokio; the Kafka listeners' TLS runs on glommio
//! streams. Mutual TLS here would add a second TLS stack (tokio-rustls), a
//! certificate authority per cluster, and certificate rotation to every
//! node's operations, for traffic that is small (metadata only) and, apart
//! from SCRAM credentials (stored salted and hashed), not secret. A shared
//! secret of at least 32 bytes gives what issue 13 asks for — only members
//! can speak, a forged or replayed frame changes nothing — with one file per
//! node. The limit, stated in docs/security.md: the secret is one for the
//! whole cluster, so a node that holds it can claim any member's id, and
//! frames are authenticated, not encrypted. Run the raft port on a private
//! network if metadata must stay confidential.
//!
//! Without a secret (loopback clusters, tests, `--allow-insecure`) the same
//! handshake runs with an empty key: claims are checked against the member
//! list but nothing is proven.
//!
//! ## The handshake (network byte order)
//! ```text
//! Hello, client → server, 32 bytes
//!  0        4     5        8              16                           32
//!  ┌────────┬─────┬────────┬──────────────┬────────────────────────────┐
//!  │ "SLRH" │ ver │ 0 0 0  │ client node  │ client nonce               │
//!  │        │ u8  │        │ u64          │ 16 random bytes            │
//!  └────────┴─────┴────────┴──────────────┴────────────────────────────┘
//! Challenge, server → client, 64 bytes
//!  0        4     5        8              16               32                 64
//!  ┌────────┬─────┬────────┬──────────────┬────────────────┬──────────────────┐
//!  │ "SLRC" │ ver │ 0 0 0  │ server node  │ server nonce   │ server proof     │
//!  └────────┴─────┴────────┴──────────────┴────────────────┴──────────────────┘
//! Proof, client → server, 40 bytes
//!  0        4     5        8                                 40
//!  ┌────────┬─────┬────────┬─────────────────────────────────┐
//!  │ "SLRP" │ ver │ 0 0 0  │ client proof                    │
//!  └────────┴─────┴────────┴─────────────────────────────────┘
//! transcript    = Hello ‖ Challenge[0..32]
//! server proof  = HMAC(secret, "shardline raft server proof"  ‖ transcript)
//! client proof  = HMAC(secret, "shardline raft client proof"  ‖ transcript)
//! request key   = HMAC(secret, "shardline raft request key"   ‖ transcript)
//! response key  = HMAC(secret, "shardline raft response key"  ‖ transcript)
//! ```
//! The server proves itself first (the client learns it reached a member
//! holding the secret, with the node id it dialled), then the client. Any
//! mismatch closes the connection before a single RPC is read.
//!
//! ## After the handshake
//! Each frame of `tcp.rs` (`len`, `crc32c`, payload) is followed by a
//! 32-byte tag, `HMAC(direction key, seq u64 BE ‖ payload)`, where `seq`
//! counts that direction's frames on the connection from 0.

use std::{collections::BTreeSet, fmt};

use ring::hmac;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{
    network::TransportError,
    tcp::{encode_rpc_frame, read_rpc_frame, FrameError},
    types::NodeId,
};

/// Version of the handshake and frame tags; a peer speaking another one is
/// refused.
const PEER_AUTH_VERSION: u8 = 1;
const HELLO_MAGIC: [u8; 4] = *b"SLRH";
const CHALLENGE_MAGIC: [u8; 4] = *b"SLRC";
const PROOF_MAGIC: [u8; 4] = *b"SLRP";
const NONCE_BYTES: usize = 16;
/// Bytes of an HMAC-SHA256 tag (proofs and frame tags).
pub(crate) const TAG_BYTES: usize = 32;
const HELLO_BYTES: usize = 32;
const CHALLENGE_BODY_BYTES: usize = 32;
const CHALLENGE_BYTES: usize = CHALLENGE_BODY_BYTES + TAG_BYTES;
const PROOF_BYTES: usize = 8 + TAG_BYTES;
const TRANSCRIPT_BYTES: usize = HELLO_BYTES + CHALLENGE_BODY_BYTES;
const _: () = assert!(HELLO_BYTES == 16 + NONCE_BYTES);
const _: () = assert!(CHALLENGE_BODY_BYTES == 16 + NONCE_BYTES);

/// Shortest cluster secret accepted: 256 bits, the HMAC-SHA256 key size.
pub const CLUSTER_SECRET_BYTES_MIN: usize = 32;

/// The secret every member of a metadata group shares. Its bytes never
/// appear in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(Vec<u8>);

impl ClusterSecret {
    /// A secret of at least [`CLUSTER_SECRET_BYTES_MIN`] bytes.
    pub fn new(bytes: Vec<u8>) -> Result<ClusterSecret, String> {
        if bytes.len() < CLUSTER_SECRET_BYTES_MIN {
            return Err(format!(
                "the cluster secret has {} bytes; at least {CLUSTER_SECRET_BYTES_MIN} are needed",
                bytes.len()
            ));
        }
        Ok(ClusterSecret(bytes))
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecret({} bytes)", self.0.len())
    }
}

/// Why a peer was refused.
#[derive(Debug)]
pub(crate) enum AuthError {
    /// The socket failed or closed during the handshake.
    Io(std::io::Error),
    /// A handshake message is not what this version sends.
    Malformed(&'static str),
    /// The peer speaks another handshake version.
    Version(u8),
    /// The client claims a node id that is not a member (or is the
    /// listener's own).
    NotMember(NodeId),
    /// The server answering is not the node the client dialled.
    WrongNode { dialled: NodeId, answered: NodeId },
    /// A proof does not verify: another cluster secret, or a forgery.
    BadProof,
    /// Randomness for a nonce was not available.
    Random,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Io(error) => write!(f, "handshake I/O: {error}"),
            AuthError::Malformed(what) => write!(f, "malformed handshake: {what}"),
            AuthError::Version(version) => {
                write!(
                    f,
                    "peer speaks handshake version {version}, this node {PEER_AUTH_VERSION}"
                )
            }
            AuthError::NotMember(node) => write!(f, "node {node} is not a member this node accepts"),
            AuthError::WrongNode { dialled, answered } => {
                write!(f, "dialled node {dialled} but node {answered} answered")
            }
            AuthError::BadProof => write!(
                f,
                "the peer's proof does not verify (another cluster secret, or forged)"
            ),
            AuthError::Random => write!(f, "no randomness for a handshake nonce"),
        }
    }
}

/// This node's side of peer authentication: who it is, whom it accepts,
/// and the secret.
pub(crate) struct PeerAuth {
    node_id: NodeId,
    members: BTreeSet<NodeId>,
    secret: hmac::Key,
    authenticated: bool,
}

impl PeerAuth {
    /// `members`: every voter, this node included.
    pub(crate) fn new(node_id: NodeId, members: BTreeSet<NodeId>, secret: Option<&ClusterSecret>) -> PeerAuth {
        assert!(
            members.contains(&node_id),
            "node {node_id} must be a member of its own group"
        );
        PeerAuth {
            node_id,
            members,
            secret: hmac::Key::new(hmac::HMAC_SHA256, secret.map_or(&[][..], |secret| &secret.0)),
            authenticated: secret.is_some(),
        }
    }

    /// Whether a cluster secret proves the peers (false: claims are only
    /// checked against the member list).
    pub(crate) fn authenticated(&self) -> bool {
        self.authenticated
    }

    fn mac(&self, label: &str, transcript: &[u8; TRANSCRIPT_BYTES]) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.secret);
        context.update(label.as_bytes());
        context.update(transcript);
        context.sign()
    }

    fn verify(&self, label: &str, transcript: &[u8; TRANSCRIPT_BYTES], tag: &[u8]) -> Result<(), AuthError> {
        let mut message = Vec::with_capacity(label.len() + TRANSCRIPT_BYTES);
        message.extend_from_slice(label.as_bytes());
        message.extend_from_slice(transcript);
        hmac::verify(&self.secret, &message, tag).map_err(|_| AuthError::BadProof)
    }

    fn keys(&self, transcript: &[u8; TRANSCRIPT_BYTES]) -> (hmac::Key, hmac::Key) {
        let key = |label| hmac::Key::new(hmac::HMAC_SHA256, self.mac(label, transcript).as_ref());
        (key(REQUEST_KEY_LABEL), key(RESPONSE_KEY_LABEL))
    }

    /// The client's handshake with `target`. Returns the sealer of requests
    /// and the opener of responses.
    pub(crate) async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        target: NodeId,
    ) -> Result<(FrameSealer, FrameOpener), AuthError> {
        let hello = encode_header(HELLO_MAGIC, self.node_id, nonce()?);
        stream.write_all(&hello).await.map_err(AuthError::Io)?;
        let mut challenge = [0u8; CHALLENGE_BYTES];
        stream.read_exact(&mut challenge).await.map_err(AuthError::Io)?;
        let (body, server_proof) = challenge.split_at(CHALLENGE_BODY_BYTES);
        let answered = decode_header(body, CHALLENGE_MAGIC)?;
        if answered != target {
            return Err(AuthError::WrongNode {
                dialled: target,
                answered,
            });
        }
        let transcript = transcript(&hello, body);
        self.verify(SERVER_PROOF_LABEL, &transcript, server_proof)?;
        let mut proof = [0u8; PROOF_BYTES];
        proof[..4].copy_from_slice(&PROOF_MAGIC);
        proof[4] = PEER_AUTH_VERSION;
        proof[8..].copy_from_slice(self.mac(CLIENT_PROOF_LABEL, &transcript).as_ref());
        stream.write_all(&proof).await.map_err(AuthError::Io)?;
        let (request_key, response_key) = self.keys(&transcript);
        Ok((FrameSealer::new(request_key), FrameOpener::new(response_key)))
    }

    /// The server's handshake. Returns the authenticated peer, the opener
    /// of its requests and the sealer of responses.
    pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
    ) -> Result<(NodeId, FrameOpener, FrameSealer), AuthError> {
        let mut hello = [0u8; HELLO_BYTES];
        stream.read_exact(&mut hello).await.map_err(AuthError::Io)?;
        let claimed = decode_header(&hello, HELLO_MAGIC)?;
        if claimed == self.node_id || !self.members.contains(&claimed) {
            return Err(AuthError::NotMember(claimed));
        }
        let body = encode_header(CHALLENGE_MAGIC, self.node_id, nonce()?);
        let transcript = transcript(&hello, &body);
        let mut challenge = [0u8; CHALLENGE_BYTES];
        challenge[..CHALLENGE_BODY_BYTES].copy_from_slice(&body);
        challenge[CHALLENGE_BODY_BYTES..].copy_from_slice(self.mac(SERVER_PROOF_LABEL, &transcript).as_ref());
        stream.write_all(&challenge).await.map_err(AuthError::Io)?;
        let mut proof = [0u8; PROOF_BYTES];
        stream.read_exact(&mut proof).await.map_err(AuthError::Io)?;
        if proof[..4] != PROOF_MAGIC {
            return Err(AuthError::Malformed("the proof's magic is not SLRP"));
        }
        if proof[4] != PEER_AUTH_VERSION {
            return Err(AuthError::Version(proof[4]));
        }
        self.verify(CLIENT_PROOF_LABEL, &transcript, &proof[8..])?;
        let (request_key, response_key) = self.keys(&transcript);
        Ok((claimed, FrameOpener::new(request_key), FrameSealer::new(response_key)))
    }
}

const SERVER_PROOF_LABEL: &str = "shardline raft server proof";
const CLIENT_PROOF_LABEL: &str = "shardline raft client proof";
const REQUEST_KEY_LABEL: &str = "shardline raft request key";
const RESPONSE_KEY_LABEL: &str = "shardline raft response key";

fn nonce() -> Result<[u8; NONCE_BYTES], AuthError> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::getrandom(&mut nonce).map_err(|_| AuthError::Random)?;
    Ok(nonce)
}

/// Hello, or the body of a Challenge: magic, version, node, nonce.
fn encode_header(magic: [u8; 4], node: NodeId, nonce: [u8; NONCE_BYTES]) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&magic);
    bytes[4] = PEER_AUTH_VERSION;
    bytes[8..16].copy_from_slice(&node.to_be_bytes());
    bytes[16..].copy_from_slice(&nonce);
    bytes
}

/// The node id of a Hello or Challenge body, once its magic, version and
/// padding check.
fn decode_header(bytes: &[u8], magic: [u8; 4]) -> Result<NodeId, AuthError> {
    let (Some(found), Some(&version), Some(padding), Some(node)) =
        (bytes.get(..4), bytes.get(4), bytes.get(5..8), bytes.get(8..16))
    else {
        return Err(AuthError::Malformed("short handshake message"));
    };
    if found != magic {
        return Err(AuthError::Malformed("wrong magic (not a Shardline raft peer)"));
    }
    if version != PEER_AUTH_VERSION {
        return Err(AuthError::Version(version));
    }
    if padding != [0, 0, 0] {
        return Err(AuthError::Malformed("non-zero padding"));
    }
    let node: [u8; 8] = node.try_into().map_err(|_| AuthError::Malformed("short node id"))?;
    Ok(u64::from_be_bytes(node))
}

fn transcript(hello: &[u8], challenge_body: &[u8]) -> [u8; TRANSCRIPT_BYTES] {
    let mut transcript = [0u8; TRANSCRIPT_BYTES];
    transcript[..HELLO_BYTES].copy_from_slice(hello);
    transcript[HELLO_BYTES..].copy_from_slice(challenge_body);
    transcript
}

fn frame_tag(key: &hmac::Key, seq: u64, payload: &[u8]) -> hmac::Tag {
    let mut context = hmac::Context::with_key(key);
    context.update(&seq.to_be_bytes());
    context.update(payload);
    context.sign()
}

/// Frames and tags what one direction of a connection sends.
pub(crate) struct FrameSealer {
    key: hmac::Key,
    next_seq: u64,
}

impl FrameSealer {
    fn new(key: hmac::Key) -> FrameSealer {
        FrameSealer { key, next_seq: 0 }
    }

    /// The frame of `payload` with its tag; counts it.
    pub(crate) fn seal(&mut self, payload: &[u8]) -> Result<Vec<u8>, TransportError> {
        let mut frame = encode_rpc_frame(payload)?;
        let length = frame.len();
        frame.extend_from_slice(frame_tag(&self.key, self.next_seq, payload).as_ref());
        self.next_seq += 1;
        assert_eq!(frame.len(), length + TAG_BYTES);
        Ok(frame)
    }
}

/// Reads and checks what the other direction of a connection sends.
pub(crate) struct FrameOpener {
    key: hmac::Key,
    next_seq: u64,
}

impl FrameOpener {
    fn new(key: hmac::Key) -> FrameOpener {
        FrameOpener { key, next_seq: 0 }
    }

    /// The next frame's payload once its tag verifies. `Ok(None)`: the
    /// peer closed the connection between frames.
    pub(crate) async fn read<R: AsyncRead + Unpin>(&mut self, stream: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(payload) = read_rpc_frame(stream).await? else {
            return Ok(None);
        };
        let mut tag = [0u8; TAG_BYTES];
        stream.read_exact(&mut tag).await.map_err(FrameError::Io)?;
        let mut message = Vec::with_capacity(8 + payload.len());
        message.extend_from_slice(&self.next_seq.to_be_bytes());
        message.extend_from_slice(&payload);
        hmac::verify(&self.key, &message, &tag).map_err(|_| FrameError::Tag { seq: self.next_seq })?;
        self.next_seq += 1;
        Ok(Some(payload))
    }
}

/// Reads a client's Hello from `bytes` as the server does (for the fuzz
/// target): the claimed node id, or why it is refused.
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_hello(bytes: &[u8]) -> Result<NodeId, String> {
    decode_header(bytes.get(..HELLO_BYTES).unwrap_or(bytes), HELLO_MAGIC).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use super::*;

    fn members() -> BTreeSet<NodeId> {
        [1, 2, 3].into_iter().collect()
    }

    fn secret(byte: u8) -> ClusterSecret {
        ClusterSecret::new(vec![byte; CLUSTER_SECRET_BYTES_MIN]).unwrap()
    }

    /// Runs a client handshake against a server handshake over an
    /// in-memory pipe.
    async fn handshake(
        client: &PeerAuth,
        target: NodeId,
        server: &PeerAuth,
    ) -> (
        Result<(FrameSealer, FrameOpener), AuthError>,
        Result<(NodeId, FrameOpener, FrameSealer), AuthError>,
    ) {
        // Each side drops its end when it is done, so the other never waits
        // for bytes that cannot come.
        let (mut a, mut b) = duplex(1024);
        tokio::join!(async move { client.connect(&mut a, target).await }, async move {
            server.accept(&mut b).await
        })
    }

    #[test]
    fn short_secrets_are_refused_and_never_printed() {
        assert!(ClusterSecret::new(vec![7; CLUSTER_SECRET_BYTES_MIN - 1]).is_err());
        let printed = format!("{:?}", secret(b'x'));
        assert_eq!(printed, "ClusterSecret(32 bytes)");
        assert!(!printed.contains("xxxx"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn members_with_the_secret_talk_and_frames_verify() {
        let client = PeerAuth::new(2, members(), Some(&secret(1)));
        let server = PeerAuth::new(1, members(), Some(&secret(1)));
        let (client_side, server_side) = handshake(&client, 1, &server).await;
        let (mut sealer, mut response_opener) = client_side.unwrap();
        let (peer, mut opener, mut response_sealer) = server_side.unwrap();
        assert_eq!(peer, 2);
        for payload in [&b"first"[..], b"second"] {
            let frame = sealer.seal(payload).unwrap();
            let mut read = &frame[..];
            assert_eq!(opener.read(&mut read).await.unwrap().as_deref(), Some(payload));
            assert!(read.is_empty());
        }
        let answer = response_sealer.seal(b"answer").unwrap();
        assert_eq!(
            response_opener.read(&mut &answer[..]).await.unwrap().as_deref(),
            Some(&b"answer"[..])
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn another_secret_a_stranger_or_a_wrong_node_is_refused() {
        let server = PeerAuth::new(1, members(), Some(&secret(1)));
        let wrong_secret = PeerAuth::new(2, members(), Some(&secret(2)));
        let (client_side, _) = handshake(&wrong_secret, 1, &server).await;
        assert!(
            matches!(client_side, Err(AuthError::BadProof)),
            "{:?}",
            client_side.err()
        );

        let stranger = PeerAuth::new(9, [1, 9].into_iter().collect(), Some(&secret(1)));
        let (_, server_side) = handshake(&stranger, 1, &server).await;
        assert!(
            matches!(server_side, Err(AuthError::NotMember(9))),
            "{:?}",
            server_side.err()
        );

        let impostor_of_self = PeerAuth::new(1, members(), Some(&secret(1)));
        let (_, server_side) = handshake(&impostor_of_self, 1, &server).await;
        assert!(
            matches!(server_side, Err(AuthError::NotMember(1))),
            "{:?}",
            server_side.err()
        );

        let client = PeerAuth::new(2, members(), Some(&secret(1)));
        let (client_side, _) = handshake(&client, 3, &server).await;
        assert!(
            matches!(
                client_side,
                Err(AuthError::WrongNode {
                    dialled: 3,
                    answered: 1
                })
            ),
            "{:?}",
            client_side.err()
        );
    }

    /// A server with a secret refuses a client without one, and the other
    /// way round.
    #[tokio::test(flavor = "current_thread")]
    async fn a_secret_on_one_side_only_is_refused() {
        let with = PeerAuth::new(1, members(), Some(&secret(1)));
        let without = PeerAuth::new(2, members(), None);
        assert!(!without.authenticated() && with.authenticated());
        let (client_side, _) = handshake(&without, 1, &with).await;
        assert!(matches!(client_side, Err(AuthError::BadProof)));
        let server_without = PeerAuth::new(1, members(), None);
        let client_with = PeerAuth::new(2, members(), Some(&secret(1)));
        let (client_side, _) = handshake(&client_with, 1, &server_without).await;
        assert!(matches!(client_side, Err(AuthError::BadProof)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn replayed_altered_or_reflected_frames_are_refused() {
        let client = PeerAuth::new(2, members(), Some(&secret(1)));
        let server = PeerAuth::new(1, members(), Some(&secret(1)));
        let (client_side, server_side) = handshake(&client, 1, &server).await;
        let (mut sealer, mut response_opener) = client_side.unwrap();
        let (_, mut opener, _) = server_side.unwrap();
        let first = sealer.seal(b"delete everything").unwrap();
        assert!(opener.read(&mut &first[..]).await.unwrap().is_some());
        // The same bytes again: the sequence number moved on.
        let replay = opener.read(&mut &first[..]).await;
        assert!(matches!(replay, Err(FrameError::Tag { seq: 1 })), "{replay:?}");

        let mut altered = sealer.seal(b"harmless").unwrap();
        let last = altered.len() - TAG_BYTES - 1;
        altered[last] ^= 1;
        // Fix the CRC so only the tag can catch it.
        let crc = crc32c::crc32c(&altered[8..altered.len() - TAG_BYTES]);
        altered[4..8].copy_from_slice(&crc.to_be_bytes());
        let altered_read = opener.read(&mut &altered[..]).await;
        assert!(
            matches!(altered_read, Err(FrameError::Tag { seq: 1 })),
            "{altered_read:?}"
        );

        // A request frame sent back to the client as if it were an answer.
        let reflected = sealer.seal(b"echo").unwrap();
        assert!(matches!(
            response_opener.read(&mut &reflected[..]).await,
            Err(FrameError::Tag { .. })
        ));
    }

    #[test]
    fn malformed_hellos_are_refused() {
        let good = encode_header(HELLO_MAGIC, 2, [0; NONCE_BYTES]);
        assert_eq!(decode_header(&good, HELLO_MAGIC).unwrap(), 2);
        assert!(matches!(
            decode_header(&good[..10], HELLO_MAGIC),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            decode_header(&good, CHALLENGE_MAGIC),
            Err(AuthError::Malformed(_))
        ));
        let mut version = good;
        version[4] = 9;
        assert!(matches!(
            decode_header(&version, HELLO_MAGIC),
            Err(AuthError::Version(9))
        ));
        let mut padding = good;
        padding[6] = 1;
        assert!(matches!(
            decode_header(&padding, HELLO_MAGIC),
            Err(AuthError::Malformed(_))
        ));
    }
}
