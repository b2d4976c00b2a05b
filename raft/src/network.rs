//! The peer network of the metadata group.
//!
//! openraft talks to peers through [`NetworkFactory`] → [`PeerClient`], which
//! encode each Raft RPC as a FlatBuffers `RpcRequest` (`schema/rpc.fbs`), hand
//! the bytes to a [`RaftTransport`], and decode the `RpcResponse` bytes that
//! come back. The receiving node feeds request bytes to [`serve_rpc`], which
//! decodes them, calls its local Raft and encodes the answer. A transport
//! therefore only moves opaque byte buffers between nodes.
//!
//! Besides Raft's three RPCs the same envelope carries the group's own two:
//! `Forward` (a write made on a follower, proposed by the leader, see
//! `forward.rs`) and `BrokerHeartbeat` (liveness, see `liveness.rs`).
//!
//! A single voter uses [`NoPeers`], which answers every call with
//! "unreachable"; a cluster uses the TCP transport of `tcp.rs`. Unit tests
//! run a three-node group over an in-memory transport.

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use openraft::{
    error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable},
    network::RPCOption,
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
        VoteResponse,
    },
};
use planus::ReadAsRoot;

use crate::{
    codec::{
        entry_from_fb, entry_to_fb, log_id_from_fb, log_id_to_fb, snapshot_meta_from_fb, snapshot_meta_to_fb,
        vote_from_fb, vote_to_fb, DecodeError,
    },
    command::{command_from_fb, command_to_fb, Command},
    forward::{error_to_fb, propose_with_index},
    generated::shardline::meta as fb,
    image::TopicMeta,
    liveness::Liveness,
    snapshot::{topic_from_fb, topic_to_fb, IMAGE_FORMAT_VERSION},
    types::{Node, NodeId, Raft, TypeConfig},
};

/// A boxed, sendable future (what a transport returns).
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a transport call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TransportError {
    /// The peer cannot be reached now; openraft backs off before retrying.
    Unreachable(String),
    /// The call failed in flight (reset, timeout, bad reply); openraft
    /// retries.
    Failed(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Unreachable(reason) => write!(f, "peer unreachable: {reason}"),
            TransportError::Failed(reason) => write!(f, "peer call failed: {reason}"),
        }
    }
}

impl std::error::Error for TransportError {}

/// Moves one encoded `RpcRequest` to a peer and brings back its encoded
/// `RpcResponse`. Implementations must give up after `timeout`.
pub(crate) trait RaftTransport: Send + Sync + 'static {
    /// Sends `request` to `target` (reachable at `node.addr`).
    fn call<'a>(
        &'a self,
        target: NodeId,
        node: &'a Node,
        request: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, TransportError>>;
}

/// The transport of a single-voter group: there is nobody to call.
#[derive(Debug, Default)]
pub(crate) struct NoPeers;

impl RaftTransport for NoPeers {
    fn call<'a>(
        &'a self,
        target: NodeId,
        _node: &'a Node,
        _request: Vec<u8>,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, TransportError>> {
        Box::pin(async move {
            Err(TransportError::Unreachable(format!(
                "no peers: this metadata group has a single voter and no transport to reach node {target}"
            )))
        })
    }
}

/// A peer RPC request, decoded.
#[derive(Debug)]
pub(crate) enum RpcRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Propose this command (the sender is not the leader).
    Forward(Command),
    /// Broker `node_id` is alive.
    BrokerHeartbeat {
        node_id: i32,
    },
}

/// What a forwarded command came to on the leader.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ForwardOutcome {
    /// Applied at log index `index`, answering `topic`.
    Applied { index: u64, topic: Option<TopicMeta> },
    /// Rejected or not proposed; the record maps back to the `MetaError`.
    Failed(fb::MetaErrorRecord),
}

/// A peer RPC response, decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RpcResponse {
    AppendEntries(AppendEntriesResponse<NodeId>),
    Vote(VoteResponse<NodeId>),
    InstallSnapshot(InstallSnapshotResponse<NodeId>),
    /// The remote Raft refused the request; the message says why.
    Error(String),
    Forward(ForwardOutcome),
    BrokerHeartbeat {
        is_leader: bool,
    },
}

fn vote_required(vote: Option<fb::Vote>, field: &'static str) -> Result<openraft::Vote<NodeId>, DecodeError> {
    vote.map(vote_from_fb).ok_or_else(|| DecodeError::missing(field))
}

/// Encodes a request from node `from`.
pub(crate) fn encode_request(from: NodeId, request: &RpcRequest) -> Vec<u8> {
    let body = match request {
        RpcRequest::AppendEntries(append) => fb::RpcRequestBody::AppendEntries(Box::new(fb::AppendEntriesRequest {
            vote: Some(vote_to_fb(&append.vote)),
            prev_log_id: append.prev_log_id.as_ref().map(log_id_to_fb),
            entries: Some(append.entries.iter().map(entry_to_fb).collect()),
            leader_commit: append.leader_commit.as_ref().map(log_id_to_fb),
        })),
        RpcRequest::Vote(vote) => fb::RpcRequestBody::Vote(Box::new(fb::VoteRequest {
            vote: Some(vote_to_fb(&vote.vote)),
            last_log_id: vote.last_log_id.as_ref().map(log_id_to_fb),
        })),
        RpcRequest::InstallSnapshot(install) => {
            fb::RpcRequestBody::InstallSnapshot(Box::new(fb::InstallSnapshotRequest {
                vote: Some(vote_to_fb(&install.vote)),
                meta: Some(Box::new(snapshot_meta_to_fb(&install.meta))),
                offset: install.offset,
                data: Some(install.data.clone()),
                done: install.done,
            }))
        }
        RpcRequest::Forward(command) => fb::RpcRequestBody::Forward(Box::new(fb::ForwardRequest {
            command: Some(Box::new(command_to_fb(command))),
        })),
        RpcRequest::BrokerHeartbeat { node_id } => {
            fb::RpcRequestBody::BrokerHeartbeat(Box::new(fb::BrokerHeartbeatRequest { node_id: *node_id }))
        }
    };
    let mut builder = planus::Builder::new();
    builder.finish(fb::RpcRequest { from, body: Some(body) }, None).to_vec()
}

/// Decodes request bytes from a peer (untrusted).
pub(crate) fn decode_request(bytes: &[u8]) -> Result<(NodeId, RpcRequest), DecodeError> {
    let request = fb::RpcRequest::try_from(fb::RpcRequestRef::read_as_root(bytes)?)?;
    let body = request.body.ok_or_else(|| DecodeError::missing("RpcRequest.body"))?;
    let decoded = match body {
        fb::RpcRequestBody::AppendEntries(append) => {
            let mut entries = Vec::new();
            for entry in append.entries.unwrap_or_default() {
                entries.push(entry_from_fb(entry)?);
            }
            RpcRequest::AppendEntries(AppendEntriesRequest {
                vote: vote_required(append.vote, "AppendEntriesRequest.vote")?,
                prev_log_id: append.prev_log_id.map(log_id_from_fb),
                entries,
                leader_commit: append.leader_commit.map(log_id_from_fb),
            })
        }
        fb::RpcRequestBody::Vote(vote) => RpcRequest::Vote(VoteRequest {
            vote: vote_required(vote.vote, "VoteRequest.vote")?,
            last_log_id: vote.last_log_id.map(log_id_from_fb),
        }),
        fb::RpcRequestBody::InstallSnapshot(install) => RpcRequest::InstallSnapshot(InstallSnapshotRequest {
            vote: vote_required(install.vote, "InstallSnapshotRequest.vote")?,
            meta: snapshot_meta_from_fb(
                *install
                    .meta
                    .ok_or_else(|| DecodeError::missing("InstallSnapshotRequest.meta"))?,
            )?,
            offset: install.offset,
            data: install.data.unwrap_or_default(),
            done: install.done,
        }),
        fb::RpcRequestBody::Forward(forward) => RpcRequest::Forward(command_from_fb(
            *forward
                .command
                .ok_or_else(|| DecodeError::missing("ForwardRequest.command"))?,
        )?),
        fb::RpcRequestBody::BrokerHeartbeat(heartbeat) => RpcRequest::BrokerHeartbeat {
            node_id: heartbeat.node_id,
        },
    };
    Ok((request.from, decoded))
}

/// Encodes a response.
pub(crate) fn encode_response(response: &RpcResponse) -> Vec<u8> {
    let body = match response {
        RpcResponse::AppendEntries(append) => {
            let (outcome, matching, vote) = match append {
                AppendEntriesResponse::Success => (fb::AppendEntriesOutcome::Success, None, None),
                AppendEntriesResponse::PartialSuccess(matching) => (
                    fb::AppendEntriesOutcome::PartialSuccess,
                    matching.as_ref().map(log_id_to_fb),
                    None,
                ),
                AppendEntriesResponse::Conflict => (fb::AppendEntriesOutcome::Conflict, None, None),
                AppendEntriesResponse::HigherVote(vote) => {
                    (fb::AppendEntriesOutcome::HigherVote, None, Some(vote_to_fb(vote)))
                }
            };
            fb::RpcResponseBody::AppendEntries(Box::new(fb::AppendEntriesResponse {
                outcome,
                matching,
                vote,
            }))
        }
        RpcResponse::Vote(vote) => fb::RpcResponseBody::Vote(Box::new(fb::VoteResponse {
            vote: Some(vote_to_fb(&vote.vote)),
            vote_granted: vote.vote_granted,
            last_log_id: vote.last_log_id.as_ref().map(log_id_to_fb),
        })),
        RpcResponse::InstallSnapshot(install) => {
            fb::RpcResponseBody::InstallSnapshot(Box::new(fb::InstallSnapshotResponse {
                vote: Some(vote_to_fb(&install.vote)),
            }))
        }
        RpcResponse::Error(message) => fb::RpcResponseBody::Error(Box::new(fb::RpcError {
            message: Some(message.clone()),
        })),
        RpcResponse::Forward(ForwardOutcome::Applied { index, topic }) => {
            fb::RpcResponseBody::Forward(Box::new(fb::ForwardResponse {
                applied_index: *index,
                topic: topic.as_ref().map(|topic| Box::new(topic_to_fb(topic))),
                error: None,
            }))
        }
        RpcResponse::Forward(ForwardOutcome::Failed(record)) => {
            fb::RpcResponseBody::Forward(Box::new(fb::ForwardResponse {
                applied_index: 0,
                topic: None,
                error: Some(Box::new(record.clone())),
            }))
        }
        RpcResponse::BrokerHeartbeat { is_leader } => {
            fb::RpcResponseBody::BrokerHeartbeat(Box::new(fb::BrokerHeartbeatResponse { is_leader: *is_leader }))
        }
    };
    let mut builder = planus::Builder::new();
    builder.finish(fb::RpcResponse { body: Some(body) }, None).to_vec()
}

/// Decodes response bytes from a peer (untrusted).
pub(crate) fn decode_response(bytes: &[u8]) -> Result<RpcResponse, DecodeError> {
    let response = fb::RpcResponse::try_from(fb::RpcResponseRef::read_as_root(bytes)?)?;
    let body = response.body.ok_or_else(|| DecodeError::missing("RpcResponse.body"))?;
    Ok(match body {
        fb::RpcResponseBody::AppendEntries(append) => RpcResponse::AppendEntries(match append.outcome {
            fb::AppendEntriesOutcome::Success => AppendEntriesResponse::Success,
            fb::AppendEntriesOutcome::PartialSuccess => {
                AppendEntriesResponse::PartialSuccess(append.matching.map(log_id_from_fb))
            }
            fb::AppendEntriesOutcome::Conflict => AppendEntriesResponse::Conflict,
            fb::AppendEntriesOutcome::HigherVote => {
                AppendEntriesResponse::HigherVote(vote_required(append.vote, "AppendEntriesResponse.vote")?)
            }
        }),
        fb::RpcResponseBody::Vote(vote) => RpcResponse::Vote(VoteResponse {
            vote: vote_required(vote.vote, "VoteResponse.vote")?,
            vote_granted: vote.vote_granted,
            last_log_id: vote.last_log_id.map(log_id_from_fb),
        }),
        fb::RpcResponseBody::InstallSnapshot(install) => RpcResponse::InstallSnapshot(InstallSnapshotResponse {
            vote: vote_required(install.vote, "InstallSnapshotResponse.vote")?,
        }),
        fb::RpcResponseBody::Error(error) => RpcResponse::Error(error.message.unwrap_or_default()),
        fb::RpcResponseBody::Forward(forward) => RpcResponse::Forward(match forward.error {
            Some(record) => ForwardOutcome::Failed(*record),
            None => ForwardOutcome::Applied {
                index: forward.applied_index,
                // The leader encodes topics as the current image format.
                topic: forward
                    .topic
                    .map(|topic| topic_from_fb(*topic, IMAGE_FORMAT_VERSION))
                    .transpose()?,
            },
        }),
        fb::RpcResponseBody::BrokerHeartbeat(heartbeat) => RpcResponse::BrokerHeartbeat {
            is_leader: heartbeat.is_leader,
        },
    })
}

/// Largest snapshot a node accepts from a leader: chunk offset plus chunk
/// length. A metadata image is about 100 bytes per partition, so 256 MiB is
/// millions of partitions; a larger offset is garbage or an attack and must
/// not grow the receive buffer.
pub(crate) const SNAPSHOT_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// Answers one encoded request from a peer with an encoded response.
/// `sender`: the node the connection authenticated as (`None` over the
/// in-memory test transport); a request naming another sender is refused
/// and logged, and changes nothing. Never fails: problems become an error
/// response.
pub(crate) async fn serve_rpc(
    raft: &Raft,
    liveness: Option<&Liveness>,
    sender: Option<NodeId>,
    request: &[u8],
) -> Vec<u8> {
    let decoded = decode_request(request);
    if let (Ok((from, _)), Some(sender)) = (&decoded, sender) {
        if *from != sender {
            tracing::warn!(
                sender,
                claimed = *from,
                "metadata raft: a request names another sender, refused"
            );
            return encode_response(&RpcResponse::Error(format!(
                "the connection authenticated as node {sender}, the request names node {from}"
            )));
        }
    }
    let response = match decoded {
        Err(error) => RpcResponse::Error(format!("undecodable request: {error}")),
        Ok((_from, RpcRequest::AppendEntries(append))) => match raft.append_entries(append).await {
            Ok(response) => RpcResponse::AppendEntries(response),
            Err(error) => RpcResponse::Error(error.to_string()),
        },
        Ok((_from, RpcRequest::Vote(vote))) => match raft.vote(vote).await {
            Ok(response) => RpcResponse::Vote(response),
            Err(error) => RpcResponse::Error(error.to_string()),
        },
        Ok((from, RpcRequest::InstallSnapshot(install))) => {
            let end = install
                .offset
                .saturating_add(u64::try_from(install.data.len()).unwrap_or(u64::MAX));
            if end > SNAPSHOT_BYTES_MAX {
                tracing::warn!(
                    from,
                    end,
                    limit = SNAPSHOT_BYTES_MAX,
                    "metadata raft: snapshot chunk beyond the size bound, refused"
                );
                RpcResponse::Error(format!(
                    "a snapshot chunk ending at byte {end} is beyond the bound of {SNAPSHOT_BYTES_MAX} bytes"
                ))
            } else {
                match raft.install_snapshot(install).await {
                    Ok(response) => RpcResponse::InstallSnapshot(response),
                    Err(error) => RpcResponse::Error(error.to_string()),
                }
            }
        }
        Ok((_from, RpcRequest::Forward(command))) => {
            RpcResponse::Forward(match propose_with_index(raft, command).await {
                Ok((index, topic)) => ForwardOutcome::Applied { index, topic },
                Err(error) => ForwardOutcome::Failed(error_to_fb(&error)),
            })
        }
        Ok((_from, RpcRequest::BrokerHeartbeat { node_id })) => {
            let is_leader = raft.metrics().borrow().current_leader == Some(raft_node_id(raft));
            if let (true, Some(liveness)) = (is_leader, liveness) {
                liveness.heard(node_id, tokio::time::Instant::now());
            }
            RpcResponse::BrokerHeartbeat { is_leader }
        }
    };
    encode_response(&response)
}

fn raft_node_id(raft: &Raft) -> NodeId {
    raft.metrics().borrow().id
}

/// Makes one [`PeerClient`] per peer for openraft.
pub(crate) struct NetworkFactory {
    from: NodeId,
    transport: Arc<dyn RaftTransport>,
}

impl NetworkFactory {
    pub(crate) fn new(from: NodeId, transport: Arc<dyn RaftTransport>) -> Self {
        NetworkFactory { from, transport }
    }
}

impl openraft::RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        PeerClient {
            from: self.from,
            target,
            node: node.clone(),
            transport: Arc::clone(&self.transport),
        }
    }
}

/// openraft's handle on one peer.
pub(crate) struct PeerClient {
    from: NodeId,
    target: NodeId,
    node: Node,
    transport: Arc<dyn RaftTransport>,
}

fn rpc_error<E: std::error::Error, S: std::error::Error + 'static>(
    error: &S,
    unreachable: bool,
) -> RPCError<NodeId, Node, E> {
    if unreachable {
        RPCError::Unreachable(Unreachable::new(error))
    } else {
        RPCError::Network(NetworkError::new(error))
    }
}

impl PeerClient {
    async fn round_trip<E: std::error::Error>(
        &self,
        request: RpcRequest,
        option: &RPCOption,
    ) -> Result<RpcResponse, RPCError<NodeId, Node, E>> {
        let bytes = encode_request(self.from, &request);
        let reply = self
            .transport
            .call(self.target, &self.node, bytes, option.hard_ttl())
            .await
            .map_err(|error| {
                let unreachable = matches!(error, TransportError::Unreachable(_));
                rpc_error(&error, unreachable)
            })?;
        match decode_response(&reply) {
            Ok(RpcResponse::Error(message)) => Err(rpc_error(
                &TransportError::Failed(format!("node {} refused: {message}", self.target)),
                false,
            )),
            Ok(response) => Ok(response),
            Err(error) => Err(rpc_error(&error, false)),
        }
    }
}

fn unexpected<E: std::error::Error>(target: NodeId, wanted: &str) -> RPCError<NodeId, Node, E> {
    rpc_error(
        &TransportError::Failed(format!("node {target} answered a {wanted} request with another kind")),
        false,
    )
}

impl openraft::RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        match self.round_trip(RpcRequest::AppendEntries(rpc), &option).await? {
            RpcResponse::AppendEntries(response) => Ok(response),
            _ => Err(unexpected(self.target, "AppendEntries")),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>> {
        match self.round_trip(RpcRequest::InstallSnapshot(rpc), &option).await? {
            RpcResponse::InstallSnapshot(response) => Ok(response),
            _ => Err(unexpected(self.target, "InstallSnapshot")),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        match self.round_trip(RpcRequest::Vote(rpc), &option).await? {
            RpcResponse::Vote(response) => Ok(response),
            _ => Err(unexpected(self.target, "Vote")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{command::Command, types::Entry};

    fn log_id(term: u64, index: u64) -> openraft::LogId<NodeId> {
        openraft::LogId::new(openraft::CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn append_entries_round_trips() {
        let request = RpcRequest::AppendEntries(AppendEntriesRequest {
            vote: openraft::Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(2, 9)),
            entries: vec![
                Entry {
                    log_id: log_id(3, 10),
                    payload: openraft::EntryPayload::Blank,
                },
                Entry {
                    log_id: log_id(3, 11),
                    payload: openraft::EntryPayload::Normal(Command::DeleteTopic { name: "t".into() }),
                },
            ],
            leader_commit: Some(log_id(2, 9)),
        });
        let (from, decoded) = decode_request(&encode_request(7, &request)).unwrap();
        assert_eq!(from, 7);
        let (RpcRequest::AppendEntries(original), RpcRequest::AppendEntries(decoded)) = (request, decoded) else {
            panic!("kind changed");
        };
        assert_eq!(original.vote, decoded.vote);
        assert_eq!(original.prev_log_id, decoded.prev_log_id);
        assert_eq!(original.entries, decoded.entries);
        assert_eq!(original.leader_commit, decoded.leader_commit);
    }

    #[test]
    fn responses_round_trip() {
        let responses = [
            RpcResponse::AppendEntries(AppendEntriesResponse::Success),
            RpcResponse::AppendEntries(AppendEntriesResponse::PartialSuccess(Some(log_id(1, 4)))),
            RpcResponse::AppendEntries(AppendEntriesResponse::PartialSuccess(None)),
            RpcResponse::AppendEntries(AppendEntriesResponse::Conflict),
            RpcResponse::AppendEntries(AppendEntriesResponse::HigherVote(openraft::Vote::new(9, 2))),
            RpcResponse::Vote(VoteResponse {
                vote: openraft::Vote::new(4, 3),
                vote_granted: true,
                last_log_id: Some(log_id(3, 3)),
            }),
            RpcResponse::InstallSnapshot(InstallSnapshotResponse {
                vote: openraft::Vote::new_committed(4, 3),
            }),
            RpcResponse::Error("stopped".into()),
            RpcResponse::Forward(ForwardOutcome::Applied { index: 9, topic: None }),
            RpcResponse::Forward(ForwardOutcome::Applied {
                index: 10,
                topic: Some(TopicMeta {
                    name: "t".into(),
                    id: [5; 16],
                    partitions: Vec::new(),
                    configs: [("retention.ms".to_owned(), "5".to_owned())].into(),
                }),
            }),
            RpcResponse::Forward(ForwardOutcome::Failed(error_to_fb(
                &crate::error::MetaError::TopicExists("t".into()),
            ))),
            RpcResponse::BrokerHeartbeat { is_leader: true },
        ];
        for response in responses {
            assert_eq!(decode_response(&encode_response(&response)).unwrap(), response);
        }
    }

    #[test]
    fn forward_and_heartbeat_requests_round_trip() {
        let command = Command::FenceBroker { node_id: 4 };
        let (from, decoded) = decode_request(&encode_request(2, &RpcRequest::Forward(command.clone()))).unwrap();
        assert_eq!(from, 2);
        assert!(matches!(decoded, RpcRequest::Forward(decoded) if decoded == command));
        let (_, decoded) = decode_request(&encode_request(2, &RpcRequest::BrokerHeartbeat { node_id: 3 })).unwrap();
        assert!(matches!(decoded, RpcRequest::BrokerHeartbeat { node_id: 3 }));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_peers_is_unreachable() {
        let transport = NoPeers;
        let node = Node::new("");
        let result = transport.call(2, &node, vec![1, 2, 3], Duration::from_millis(10)).await;
        assert!(matches!(result, Err(TransportError::Unreachable(_))));
    }
}
