//! Writes from any node: propose locally, and when the local Raft is not the
//! leader, forward the command to the leader.
//!
//! ```text
//!  follower raft thread                           leader raft thread
//!  ────────────────────                           ──────────────────
//!  propose(cmd) ── ForwardToLeader(L) ─┐
//!                                      └─ Forward{cmd} ──TCP──► serve_rpc
//!                                                               raft.client_write(cmd)
//!  wait until local image epoch ≥ index ◄── ForwardResponse ──── {applied index, topic}
//!  answer the caller                         or {MetaErrorRecord}
//! ```
//! A refusal by the leader's apply (e.g. `TopicExists`) travels as a
//! `MetaErrorRecord` and maps back to the same [`MetaError`] variant. A
//! leader that is unreachable, not the leader any more, or shutting down is
//! retried after [`FORWARD_RETRY_DELAY`] with whatever leader the local Raft
//! then knows, until [`FORWARD_DEADLINE`]; then the write fails with
//! `NotLeader`. A write whose answer was lost may have been applied: its
//! retry can then answer, for example, `TopicExists`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::watch;

use crate::{
    command::Command,
    error::MetaError,
    generated::shardline::meta as fb,
    group::fatal_error,
    image::{MetadataImage, TopicMeta},
    network::{
        decode_response, encode_request, ForwardOutcome, RaftTransport, RpcRequest, RpcResponse, TransportError,
    },
    types::{Node, NodeId, Raft},
};

/// How long a write keeps looking for a leader that accepts it.
/// Elections take 0.3–0.6 s (a few rounds when votes split), so 10 s
/// covers a leader crash plus an unlucky election, and bounds a caller's
/// wait when the group has no quorum.
pub const FORWARD_DEADLINE: Duration = Duration::from_secs(10);

/// Pause between forwarding attempts: about one election timeout's worth
/// of polling without flooding a recovering leader.
pub(crate) const FORWARD_RETRY_DELAY: Duration = Duration::from_millis(50);

/// How long a forwarded write waits for the local image to reach the
/// leader's applied index. Replication takes one heartbeat (100 ms); a node
/// lagging more than this answers anyway (with a warning): the write is
/// done, only this node's view is late.
pub(crate) const FORWARD_APPLY_WAIT: Duration = Duration::from_secs(5);

/// Proposes one command on the local Raft and waits until it is applied.
/// Returns the entry's log index and the command's answer.
pub(crate) async fn propose_with_index(raft: &Raft, command: Command) -> Result<(u64, Option<TopicMeta>), MetaError> {
    match raft.client_write(command).await {
        Ok(response) => response.data.0.map(|topic| (response.log_id.index, topic)),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => Err(MetaError::NotLeader {
            leader: forward.leader_id,
        }),
        Err(RaftError::APIError(other)) => Err(MetaError::Raft(other.to_string())),
        Err(RaftError::Fatal(fatal)) => Err(fatal_error(fatal)),
    }
}

/// The other voters, reached over a transport of their own (not openraft's
/// connections, so a slow forwarded write never delays Raft heartbeats).
pub(crate) struct PeerSet {
    /// This node.
    pub(crate) node_id: NodeId,
    /// Raft address of every voter, this node included.
    pub(crate) addresses: BTreeMap<NodeId, String>,
    /// Control connections (Forward, BrokerHeartbeat).
    pub(crate) transport: Arc<dyn RaftTransport>,
}

impl PeerSet {
    /// Sends one request to `target` and decodes the answer.
    pub(crate) async fn call(
        &self,
        target: NodeId,
        request: &RpcRequest,
        timeout: Duration,
    ) -> Result<RpcResponse, TransportError> {
        let addr = self.addresses.get(&target).ok_or_else(|| {
            TransportError::Unreachable(format!("node {target} is not among the configured metadata peers"))
        })?;
        let node = Node::new(addr.clone());
        let bytes = encode_request(self.node_id, request);
        let reply = self.transport.call(target, &node, bytes, timeout).await?;
        decode_response(&reply).map_err(|error| TransportError::Failed(format!("undecodable answer: {error}")))
    }
}

/// Proposes `command` on the local Raft or, when it is not the leader, on
/// the leader through `peers` (none: a single voter, which answers
/// `NotLeader` as it is). After a forwarded success, waits until the local
/// image has applied the entry, so the caller sees its change in `image()`.
pub(crate) async fn propose_anywhere(
    raft: &Raft,
    peers: Option<&PeerSet>,
    images: &watch::Receiver<Arc<MetadataImage>>,
    command: Command,
) -> Result<Option<TopicMeta>, MetaError> {
    let deadline = tokio::time::Instant::now() + FORWARD_DEADLINE;
    let mut last_leader = None;
    loop {
        let leader = match propose_with_index(raft, command.clone()).await {
            Err(MetaError::NotLeader { leader }) => leader,
            other => return other.map(|(_, topic)| topic),
        };
        let Some(peers) = peers else {
            return Err(MetaError::NotLeader { leader });
        };
        if let Some(leader) = leader.filter(|leader| *leader != peers.node_id) {
            last_leader = Some(leader);
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match peers
                .call(leader, &RpcRequest::Forward(command.clone()), remaining)
                .await
            {
                Ok(RpcResponse::Forward(ForwardOutcome::Applied { index, topic })) => {
                    wait_applied(images, index).await;
                    return Ok(topic);
                }
                Ok(RpcResponse::Forward(ForwardOutcome::Failed(record))) => match error_from_fb(record) {
                    // Leadership moved on, or the leader is stopping: ask again.
                    MetaError::NotLeader { .. } | MetaError::ShuttingDown => {}
                    error => return Err(error),
                },
                Ok(other) => tracing::debug!(leader, answer = ?other, "forwarded write: unexpected answer"),
                Err(error) => tracing::debug!(leader, %error, "forwarded write: leader not reached"),
            }
        }
        if tokio::time::Instant::now() + FORWARD_RETRY_DELAY >= deadline {
            return Err(MetaError::NotLeader { leader: last_leader });
        }
        tokio::time::sleep(FORWARD_RETRY_DELAY).await;
    }
}

/// Waits (bounded) until the local image's epoch reaches `index`.
async fn wait_applied(images: &watch::Receiver<Arc<MetadataImage>>, index: u64) {
    let mut images = images.clone();
    let reached = matches!(
        tokio::time::timeout(FORWARD_APPLY_WAIT, images.wait_for(|image| image.epoch >= index)).await,
        Ok(Ok(_))
    );
    if !reached {
        tracing::warn!(
            index,
            epoch = images.borrow().epoch,
            "a forwarded write was applied by the leader but not yet here"
        );
    }
}

/// Encodes an error for the wire (see `MetaErrorRecord` in rpc.fbs).
pub(crate) fn error_to_fb(error: &MetaError) -> fb::MetaErrorRecord {
    let mut record = fb::MetaErrorRecord {
        kind: fb::MetaErrorKind::Other,
        message: Some(error.to_string()),
        ..Default::default()
    };
    match error {
        MetaError::TopicExists(name) => {
            record.kind = fb::MetaErrorKind::TopicExists;
            record.name = Some(name.clone());
        }
        MetaError::UnknownTopic(name) => {
            record.kind = fb::MetaErrorKind::UnknownTopic;
            record.name = Some(name.clone());
        }
        MetaError::InvalidPartitions { requested, current } => {
            record.kind = fb::MetaErrorKind::InvalidPartitions;
            record.first = i64::from(*requested);
            record.second = i64::from(*current);
        }
        MetaError::InvalidReplicationFactor { requested, brokers } => {
            record.kind = fb::MetaErrorKind::InvalidReplicationFactor;
            record.first = i64::from(*requested);
            record.second = i64::try_from(*brokers).unwrap_or(i64::MAX);
        }
        MetaError::InvalidConfig { key, value, reason } => {
            record.kind = fb::MetaErrorKind::InvalidConfig;
            record.name = Some(key.clone());
            record.other.clone_from(value);
            record.reason = Some(reason.clone());
        }
        MetaError::InvalidTopicName(name) => {
            record.kind = fb::MetaErrorKind::InvalidTopicName;
            record.name = Some(name.clone());
        }
        MetaError::TopicNameCollision { topic, existing } => {
            record.kind = fb::MetaErrorKind::TopicNameCollision;
            record.name = Some(topic.clone());
            record.other = Some(existing.clone());
        }
        MetaError::InvalidBroker { node_id, reason } => {
            record.kind = fb::MetaErrorKind::InvalidBroker;
            record.first = i64::from(*node_id);
            record.reason = Some(reason.clone());
        }
        MetaError::NotLeader { leader } => {
            record.kind = fb::MetaErrorKind::NotLeader;
            record.leader = leader.unwrap_or(0);
            record.has_leader = leader.is_some();
        }
        MetaError::ShuttingDown => record.kind = fb::MetaErrorKind::ShuttingDown,
        MetaError::StaleLeaderEpoch {
            topic,
            partition,
            leader,
            leader_epoch,
        } => {
            record.kind = fb::MetaErrorKind::StaleLeaderEpoch;
            record.name = Some(topic.clone());
            record.first = i64::from(*partition);
            record.second = i64::from(*leader);
            record.third = i64::from(*leader_epoch);
        }
        MetaError::StalePartitionEpoch {
            topic,
            partition,
            partition_epoch,
        } => {
            record.kind = fb::MetaErrorKind::StalePartitionEpoch;
            record.name = Some(topic.clone());
            record.first = i64::from(*partition);
            record.second = i64::from(partition_epoch.0);
        }
        MetaError::UnknownPartition { topic, partition } => {
            record.kind = fb::MetaErrorKind::UnknownPartition;
            record.name = Some(topic.clone());
            record.first = i64::from(*partition);
        }
        MetaError::InvalidIsr {
            topic,
            partition,
            reason,
        } => {
            record.kind = fb::MetaErrorKind::InvalidIsr;
            record.name = Some(topic.clone());
            record.first = i64::from(*partition);
            record.reason = Some(reason.clone());
        }
        MetaError::InvalidReassignment {
            topic,
            partition,
            reason,
        } => {
            record.kind = fb::MetaErrorKind::InvalidReassignment;
            record.name = Some(topic.clone());
            record.first = i64::from(*partition);
            record.reason = Some(reason.clone());
        }
        MetaError::NoReassignmentInProgress { topic, partition } => {
            record.kind = fb::MetaErrorKind::NoReassignmentInProgress;
            record.name = Some(topic.clone());
            record.first = i64::from(*partition);
        }
        MetaError::InvalidAcl { reason } => {
            record.kind = fb::MetaErrorKind::InvalidAcl;
            record.reason = Some(reason.clone());
        }
        MetaError::InvalidCredential { reason } => {
            record.kind = fb::MetaErrorKind::InvalidCredential;
            record.reason = Some(reason.clone());
        }
        MetaError::Io { .. }
        | MetaError::Corrupt { .. }
        | MetaError::NodeIdMismatch { .. }
        | MetaError::StartTimeout { .. }
        | MetaError::Raft(_) => {}
    }
    record
}

/// A wire number narrowed to a field's type; out of range (only from a
/// broken peer) reads as the type's default.
fn narrow<T: TryFrom<i64> + Default>(value: i64) -> T {
    T::try_from(value).unwrap_or_default()
}

/// Decodes a wire error (untrusted) into the variant it was.
pub(crate) fn error_from_fb(record: fb::MetaErrorRecord) -> MetaError {
    let name = record.name.unwrap_or_default();
    let reason = record.reason.unwrap_or_default();
    match record.kind {
        fb::MetaErrorKind::Other => {
            MetaError::Raft(format!("the leader answered: {}", record.message.unwrap_or_default()))
        }
        fb::MetaErrorKind::TopicExists => MetaError::TopicExists(name),
        fb::MetaErrorKind::UnknownTopic => MetaError::UnknownTopic(name),
        fb::MetaErrorKind::InvalidPartitions => MetaError::InvalidPartitions {
            requested: narrow(record.first),
            current: narrow(record.second),
        },
        fb::MetaErrorKind::InvalidReplicationFactor => MetaError::InvalidReplicationFactor {
            requested: narrow(record.first),
            brokers: narrow(record.second),
        },
        fb::MetaErrorKind::InvalidConfig => MetaError::InvalidConfig {
            key: name,
            value: record.other,
            reason,
        },
        fb::MetaErrorKind::InvalidTopicName => MetaError::InvalidTopicName(name),
        fb::MetaErrorKind::TopicNameCollision => MetaError::TopicNameCollision {
            topic: name,
            existing: record.other.unwrap_or_default(),
        },
        fb::MetaErrorKind::InvalidBroker => MetaError::InvalidBroker {
            node_id: narrow(record.first),
            reason,
        },
        fb::MetaErrorKind::NotLeader => MetaError::NotLeader {
            leader: record.has_leader.then_some(record.leader),
        },
        fb::MetaErrorKind::ShuttingDown => MetaError::ShuttingDown,
        fb::MetaErrorKind::StaleLeaderEpoch => MetaError::StaleLeaderEpoch {
            topic: name,
            partition: narrow(record.first),
            leader: narrow(record.second),
            leader_epoch: narrow(record.third),
        },
        fb::MetaErrorKind::StalePartitionEpoch => MetaError::StalePartitionEpoch {
            topic: name,
            partition: narrow(record.first),
            partition_epoch: crate::image::PartitionEpoch(narrow(record.second)),
        },
        fb::MetaErrorKind::UnknownPartition => MetaError::UnknownPartition {
            topic: name,
            partition: narrow(record.first),
        },
        fb::MetaErrorKind::InvalidIsr => MetaError::InvalidIsr {
            topic: name,
            partition: narrow(record.first),
            reason,
        },
        fb::MetaErrorKind::InvalidReassignment => MetaError::InvalidReassignment {
            topic: name,
            partition: narrow(record.first),
            reason,
        },
        fb::MetaErrorKind::NoReassignmentInProgress => MetaError::NoReassignmentInProgress {
            topic: name,
            partition: narrow(record.first),
        },
        fb::MetaErrorKind::InvalidAcl => MetaError::InvalidAcl { reason },
        fb::MetaErrorKind::InvalidCredential => MetaError::InvalidCredential { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_variant_across_the_wire() {
        let errors = vec![
            MetaError::InvalidReassignment {
                topic: "t".into(),
                partition: 2,
                reason: "r".into(),
            },
            MetaError::NoReassignmentInProgress {
                topic: "t".into(),
                partition: 1,
            },
            MetaError::TopicExists("t".into()),
            MetaError::UnknownTopic("t".into()),
            MetaError::InvalidPartitions {
                requested: 3,
                current: 5,
            },
            MetaError::InvalidReplicationFactor {
                requested: 4,
                brokers: 3,
            },
            MetaError::InvalidConfig {
                key: "k".into(),
                value: Some("v".into()),
                reason: "r".into(),
            },
            MetaError::InvalidConfig {
                key: "k".into(),
                value: None,
                reason: "r".into(),
            },
            MetaError::InvalidTopicName("a b".into()),
            MetaError::TopicNameCollision {
                topic: "a.b".into(),
                existing: "a_b".into(),
            },
            MetaError::InvalidBroker {
                node_id: 7,
                reason: "r".into(),
            },
            MetaError::NotLeader { leader: Some(2) },
            MetaError::NotLeader { leader: None },
            MetaError::ShuttingDown,
            MetaError::StaleLeaderEpoch {
                topic: "t".into(),
                partition: 1,
                leader: 2,
                leader_epoch: 3,
            },
            MetaError::StalePartitionEpoch {
                topic: "t".into(),
                partition: 1,
                partition_epoch: crate::image::PartitionEpoch(4),
            },
            MetaError::UnknownPartition {
                topic: "t".into(),
                partition: 9,
            },
            MetaError::InvalidIsr {
                topic: "t".into(),
                partition: 0,
                reason: "r".into(),
            },
            MetaError::InvalidAcl { reason: "r".into() },
            MetaError::InvalidCredential { reason: "r".into() },
        ];
        for error in errors {
            let decoded = error_from_fb(error_to_fb(&error));
            assert_eq!(decoded.to_string(), error.to_string());
            assert_eq!(
                std::mem::discriminant(&decoded),
                std::mem::discriminant(&error),
                "{error}"
            );
        }
        let other = error_from_fb(error_to_fb(&MetaError::Raft("disk on fire".into())));
        assert!(matches!(other, MetaError::Raft(message) if message.contains("disk on fire")));
    }
}
