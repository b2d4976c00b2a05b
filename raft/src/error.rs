//! The metadata group's error enum. Each variant keeps what caused it; mapping
//! to Kafka error codes happens once, in the engine.
//!
//! Validation errors (`TopicExists` … `InvalidBroker`) are produced
//! deterministically by the state machine's apply, so every replica rejects
//! the same commands with the same error.

use std::{fmt, io, path::PathBuf};

use shardline_replication::PartitionEpoch;

/// Why a metadata operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum MetaError {
    /// A topic with this name already exists.
    TopicExists(String),
    /// No topic has this name.
    UnknownTopic(String),
    /// The partition count asked for is not allowed: below 1, above
    /// [`PARTITIONS_PER_TOPIC_MAX`](crate::PARTITIONS_PER_TOPIC_MAX), or not
    /// above the topic's current count (partitions can only be added).
    InvalidPartitions {
        /// The partition count asked for.
        requested: i32,
        /// The topic's partition count when the command was applied (0 for
        /// a topic being created).
        current: i32,
    },
    /// The replication factor is below 1 (other than -1) or above the number
    /// of registered brokers.
    InvalidReplicationFactor {
        /// The replication factor asked for.
        requested: i16,
        /// Registered brokers when the command was applied.
        brokers: usize,
    },
    /// A topic config key is unknown or its value is invalid.
    InvalidConfig {
        /// The config key.
        key: String,
        /// The value given (`None` for a deletion).
        value: Option<String>,
        /// Why it was refused.
        reason: String,
    },
    /// Topic names are 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
    InvalidTopicName(String),
    /// The name differs from an existing topic's only in `.` versus `_`
    /// (Kafka refuses these: their metric names collide).
    TopicNameCollision {
        /// The name asked for.
        topic: String,
        /// The existing topic it collides with.
        existing: String,
    },
    /// A broker registration was refused (for example zero shards).
    InvalidBroker {
        /// The broker's node id.
        node_id: i32,
        /// Why it was refused.
        reason: String,
    },
    /// No partition of the topic has this index.
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition index asked for.
        partition: i32,
    },
    /// An ISR change came from a broker that no longer leads the partition,
    /// or from an older leader epoch: the caller must refresh its metadata.
    StaleLeaderEpoch {
        /// The topic.
        topic: String,
        /// The partition index.
        partition: i32,
        /// The partition's leader when the command was applied (-1: none).
        leader: i32,
        /// The partition's leader epoch when the command was applied.
        leader_epoch: i32,
    },
    /// An ISR change was based on another partition epoch than the
    /// partition's: the partition changed since (another ISR change, a
    /// fence, a return), or the change is a duplicate or a retry of one
    /// already taken. Not applied; the proposer must wait for the metadata
    /// that moved the partition on (Kafka's INVALID_UPDATE_VERSION).
    StalePartitionEpoch {
        /// The topic.
        topic: String,
        /// The partition index.
        partition: i32,
        /// The partition's partition epoch when the command was applied.
        partition_epoch: PartitionEpoch,
    },
    /// An ISR change was refused: not a subset of the replicas, without the
    /// leader, or adding a fenced broker.
    InvalidIsr {
        /// The topic.
        topic: String,
        /// The partition index.
        partition: i32,
        /// Why it was refused.
        reason: String,
    },
    /// A partition reassignment was refused (bad target, one already in
    /// progress), or cancelled when none was in progress (`reason` says so).
    InvalidReassignment {
        /// The topic.
        topic: String,
        /// The partition index.
        partition: i32,
        /// Why it was refused.
        reason: String,
    },
    /// A cancellation of a partition reassignment when none is in progress.
    NoReassignmentInProgress {
        /// The topic.
        topic: String,
        /// The partition index.
        partition: i32,
    },
    /// An ACL binding was refused (a field out of bounds, a malformed
    /// principal) or the ACL set would pass its bound.
    InvalidAcl {
        /// Why it was refused.
        reason: String,
    },
    /// A SCRAM credential was refused (a bound not kept, a deletion of
    /// one that does not exist) or the credentials would pass their bound.
    InvalidCredential {
        /// Why it was refused.
        reason: String,
    },
    /// This node is not the Raft leader and the write could not be
    /// forwarded to one within the forwarding deadline.
    NotLeader {
        /// The leader's Raft node id, if one is known.
        leader: Option<u64>,
    },
    /// A file operation failed.
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A file in the metadata directory holds bytes that cannot be right
    /// (bad magic, a checksummed record that does not decode, a hole in the
    /// log). Torn tails are not corruption: they are cut on open.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the bad data.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The metadata directory was created by another node id.
    NodeIdMismatch {
        /// The node id stored in the directory.
        stored: u64,
        /// The node id in the config.
        configured: u64,
    },
    /// The group did not get a leader and catch up within the bound.
    StartTimeout {
        /// How long `start` waited.
        waited_ms: u64,
    },
    /// openraft reported an error (storage failure, fatal state, …).
    Raft(String),
    /// The group is shutting down or has stopped.
    ShuttingDown,
}

impl MetaError {
    /// Builds an [`MetaError::Io`] from a context and the error.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        MetaError::Io {
            context: context.into(),
            source,
        }
    }

    /// Builds a [`MetaError::Corrupt`].
    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        MetaError::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaError::TopicExists(name) => write!(f, "topic '{name}' already exists"),
            MetaError::UnknownTopic(name) => write!(f, "unknown topic '{name}'"),
            MetaError::InvalidPartitions { requested, current } => {
                let maximum = crate::validate::PARTITIONS_PER_TOPIC_MAX;
                if *requested < 1 {
                    write!(f, "invalid partition count {requested}: a topic needs at least one partition")
                } else if *requested > maximum {
                    write!(f, "invalid partition count {requested}: at most {maximum} partitions per topic")
                } else {
                    write!(
                        f,
                        "invalid partition count {requested}: the topic has {current} and partitions can only be added"
                    )
                }
            }
            MetaError::InvalidReplicationFactor { requested, brokers } => write!(
                f,
                "invalid replication factor {requested}: must be -1 (default 1) or between 1 and the {brokers} registered broker(s)"
            ),
            MetaError::InvalidConfig { key, value, reason } => match value {
                Some(value) => write!(f, "invalid topic config {key}={value}: {reason}"),
                None => write!(f, "invalid topic config {key}: {reason}"),
            },
            MetaError::InvalidTopicName(name) => write!(
                f,
                "invalid topic name '{name}': use 1 to 249 characters of [a-zA-Z0-9._-], not '.' or '..'"
            ),
            MetaError::TopicNameCollision { topic, existing } => write!(
                f,
                "topic '{topic}' collides with existing topic '{existing}' ('.' and '_' are treated alike)"
            ),
            MetaError::InvalidBroker { node_id, reason } => {
                write!(f, "invalid registration of broker {node_id}: {reason}")
            }
            MetaError::UnknownPartition { topic, partition } => {
                write!(f, "topic '{topic}' has no partition {partition}")
            }
            MetaError::StaleLeaderEpoch {
                topic,
                partition,
                leader,
                leader_epoch,
            } => write!(
                f,
                "partition {topic}-{partition} is led by broker {leader} at leader epoch {leader_epoch}; \
                 the request was made for another leader or epoch: refresh the metadata"
            ),
            MetaError::StalePartitionEpoch {
                topic,
                partition,
                partition_epoch,
            } => write!(
                f,
                "partition {topic}-{partition} is at partition epoch {partition_epoch}; the ISR change was based \
                 on another state of the partition: refresh the metadata"
            ),
            MetaError::InvalidIsr {
                topic,
                partition,
                reason,
            } => write!(f, "invalid ISR for partition {topic}-{partition}: {reason}"),
            MetaError::InvalidReassignment {
                topic,
                partition,
                reason,
            } => write!(f, "cannot reassign partition {topic}-{partition}: {reason}"),
            MetaError::NoReassignmentInProgress { topic, partition } => {
                write!(f, "no reassignment of partition {topic}-{partition} is in progress")
            }
            MetaError::InvalidAcl { reason } => write!(f, "invalid ACL: {reason}"),
            MetaError::InvalidCredential { reason } => write!(f, "invalid SCRAM credential: {reason}"),
            MetaError::NotLeader { leader: Some(leader) } => {
                write!(f, "this node is not the metadata leader; node {leader} is")
            }
            MetaError::NotLeader { leader: None } => {
                write!(f, "this node is not the metadata leader and no leader is known")
            }
            MetaError::Io { context, source } => write!(f, "{context}: {source}"),
            MetaError::Corrupt { path, offset, reason } => write!(
                f,
                "corrupt metadata file {} at byte {offset}: {reason}; restore the directory from a replica or a backup",
                path.display()
            ),
            MetaError::NodeIdMismatch { stored, configured } => write!(
                f,
                "metadata directory belongs to node {stored} but this node is configured as {configured}; \
                 fix --node-id or point the node at its own directory"
            ),
            MetaError::StartTimeout { waited_ms } => write!(
                f,
                "metadata group found no leader and did not catch up within {waited_ms} ms"
            ),
            MetaError::Raft(message) => write!(f, "metadata raft: {message}"),
            MetaError::ShuttingDown => write!(f, "metadata group is shutting down"),
        }
    }
}

impl std::error::Error for MetaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MetaError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_keeps_its_source() {
        let error = MetaError::io("open /x", io::Error::new(io::ErrorKind::NotFound, "gone"));
        assert!(std::error::Error::source(&error).is_some());
        assert!(error.to_string().contains("open /x"));
    }

    #[test]
    fn messages_name_the_fix() {
        let message = MetaError::InvalidTopicName("a b".into()).to_string();
        assert!(message.contains("[a-zA-Z0-9._-]"));
        let message = MetaError::NodeIdMismatch {
            stored: 1,
            configured: 2,
        }
        .to_string();
        assert!(message.contains("node-id"));
    }
}
