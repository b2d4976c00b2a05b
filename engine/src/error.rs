//! The engine's error enum, and the one place where errors become Kafka codes.

use std::fmt;

use kafka_protocol::ResponseError;
use shardline_log::{BatchError, LogError};
use shardline_raft::{AclResourceType, MetaError};

/// Why a request (or one partition of it) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum EngineError {
    /// The partition log refused or failed.
    Log(LogError),
    /// The metadata group refused or failed.
    Meta(MetaError),
    /// No such topic or partition.
    UnknownTopicOrPartition,
    /// The partition is not (or no longer) served by this broker/shard.
    NotLeader,
    /// Idempotent producer: a sequence gap.
    OutOfOrderSequence {
        /// Sequence the partition expected.
        expected: i32,
        /// Sequence it got.
        got: i32,
    },
    /// Idempotent producer: an older epoch than the partition has seen.
    ProducerFenced,
    /// Idempotent producer: the same batch is being appended right now.
    DuplicateSequence,
    /// A batch larger than the topic's `max.message.bytes`.
    MessageTooLarge {
        /// Size of the batch.
        batch_bytes: usize,
        /// The bound.
        max_message_bytes: usize,
    },
    /// A produce request whose records are not exactly one valid batch.
    InvalidRecord(String),
    /// Records whose timestamps are outside the topic's
    /// `message.timestamp.before.max.ms` / `after.max.ms` (KIP-937): each
    /// record's index in the partition's data and why (KIP-467's
    /// `record_errors`). Nothing of the batch is stored.
    InvalidTimestamp(Vec<(i32, String)>),
    /// Records the topic's rules refuse (a record without a key on a
    /// compacted topic, `compaction.rs`): each record's index in the
    /// partition's data and why (KIP-467's `record_errors`). Nothing of the
    /// batch is stored.
    RecordsRefused(Vec<(i32, String)>),
    /// A request the engine understands but refuses (bad field values).
    InvalidRequest(String),
    /// The shard that owns the partition did not answer (shutting down).
    ShardUnavailable,
    /// The broker is shutting down.
    ShuttingDown,
    /// A consumer-group request refused by the group coordinator.
    Group(GroupError),
    /// A transaction request refused by the transaction coordinator.
    Txn(TxnError),
    /// A write to an internal topic (`__consumer_offsets`) by a client, or a
    /// change to its partitions.
    InternalTopic(String),
    /// acks=all while the in-sync replicas are fewer than `min.insync.replicas`.
    NotEnoughReplicas {
        /// In-sync replicas now.
        isr: usize,
        /// The topic's `min.insync.replicas`.
        min_isr: usize,
    },
    /// acks=all: the batch was appended and reached the high watermark, but
    /// the in-sync replicas had shrunk below `min.insync.replicas` by then.
    NotEnoughReplicasAfterAppend {
        /// In-sync replicas then.
        isr: usize,
        /// The topic's `min.insync.replicas`.
        min_isr: usize,
    },
    /// acks=all: the in-sync replicas did not all copy the batch within the
    /// request's timeout (it is stored on the leader and may still replicate).
    ReplicationTimedOut,
    /// The request names an older leader epoch than the partition's.
    FencedLeaderEpoch,
    /// The request names a newer leader epoch than this broker knows.
    UnknownLeaderEpoch,
    /// The partition has no leader right now (every in-sync replica is down).
    LeaderNotAvailable,
    /// A request the broker's limits do not allow (more partitions than the
    /// brokers may host).
    PolicyViolation(String),
    /// The SASL exchange refused a request (the codes are chosen in
    /// [`kafka_code`]).
    Sasl(SaslError),
    /// An admin request (config changes, elections, reassignments) refused.
    Admin(AdminError),
    /// The connection's principal may not do this to a resource of this
    /// kind (`acl::Authorizer::authorize` decided).
    NotAuthorized(AclResourceType),
    /// AlterUserScramCredentials or DescribeUserScramCredentials refused
    /// one user's part.
    Credential(CredentialError),
    /// Another broker answered a request this broker made for a client (an
    /// MQTT publish or read forwarded to a partition's leader) with this
    /// Kafka error code ([`from_remote_code`]): passed on as it is.
    Remote(i16),
    /// A Fetch request's incremental session was refused
    /// (`kafka::fetch_session`).
    FetchSession(FetchSessionError),
}

/// Why a Fetch request's session (KIP-227) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchSessionError {
    /// No session with this id belongs to the connection.
    IdNotFound,
    /// The session expects another epoch.
    InvalidEpoch,
}

/// Why a SCRAM credential change or description was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialError {
    /// The user has no (such) credential.
    NotFound,
    /// The request names a user (or user and mechanism) twice.
    Duplicate,
    /// Out of bounds: iterations, salt, salted password length, name.
    Unacceptable(String),
    /// A mechanism other than SCRAM-SHA-256 and SCRAM-SHA-512.
    UnsupportedMechanism,
}

/// Why an admin request was refused (the codes are chosen in [`kafka_code`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminError {
    /// A config change the broker does not take: a read-only or unknown key,
    /// an operation that does not apply to it, a value it does not honour.
    InvalidConfig(String),
    /// ElectLeaders: the preferred replica already leads the partition.
    ElectionNotNeeded,
    /// ElectLeaders: the preferred replica is fenced or out of sync.
    PreferredLeaderNotAvailable,
    /// AlterPartitionReassignments: a target the request itself forbids
    /// (a replication factor change without `allow_replication_factor_change`).
    InvalidReplicaAssignment(String),
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::InvalidConfig(why) => write!(f, "invalid config: {why}"),
            AdminError::ElectionNotNeeded => write!(f, "the preferred replica already leads the partition"),
            AdminError::PreferredLeaderNotAvailable => write!(f, "the preferred replica is fenced or not in sync"),
            AdminError::InvalidReplicaAssignment(why) => write!(f, "invalid replica assignment: {why}"),
        }
    }
}

/// Why a SASL exchange refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslError {
    /// SaslHandshake named a mechanism this listener does not offer.
    UnsupportedMechanism,
    /// A SASL request out of turn (SaslAuthenticate before SaslHandshake, a
    /// second handshake, either on a connection already served).
    IllegalState,
    /// The credentials were refused. Which part was wrong (user, password,
    /// proof, nonce) is never said.
    AuthenticationFailed,
}

/// Why the group coordinator refused a request (Kafka's classic group
/// protocol errors; the codes are chosen in [`kafka_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupError {
    /// The group's coordinator partition is not open on this broker (yet).
    NotCoordinator,
    /// No coordinator can serve the group right now (no internal topic, or a
    /// write to it failed); clients look the coordinator up again and retry.
    CoordinatorNotAvailable,
    /// The coordinator partition is being replayed.
    LoadInProgress,
    /// The member id is not (or no longer) in the group.
    UnknownMemberId,
    /// The request's generation is not the group's.
    IllegalGeneration,
    /// The group is rebalancing: rejoin.
    RebalanceInProgress,
    /// Protocol type or protocols do not match the group's members.
    InconsistentGroupProtocol,
    /// JoinGroup v4+: a new member must rejoin with the member id it was given.
    MemberIdRequired,
    /// Session timeout outside the broker's bounds.
    InvalidSessionTimeout,
    /// The group has as many members as it may.
    GroupMaxSizeReached,
    /// Another member holds this static member's `group.instance.id`.
    FencedInstanceId,
    /// No such group.
    GroupIdNotFound,
    /// DeleteGroups on a group that still has members.
    NonEmptyGroup,
    /// OffsetDelete of a topic the group's members are assigned.
    SubscribedToTopic,
    /// Commit metadata longer than the bound.
    OffsetMetadataTooLarge,
    /// A commit would grow the group's offsets past the bound.
    TooManyOffsets,
    /// OffsetFetch asking for stable offsets (v7, KIP-447) of a partition
    /// whose commit is still being stored: retry.
    UnstableOffsetCommit,
}

/// Why the transaction coordinator refused a request (KIP-98's errors;
/// the codes are chosen in [`kafka_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnError {
    /// The id's `__transaction_state` partition is not open on this broker.
    NotCoordinator,
    /// No coordinator can serve the id right now (no internal topic, a
    /// failed write, a full table): look it up again and retry.
    CoordinatorNotAvailable,
    /// The coordinator partition is being replayed.
    LoadInProgress,
    /// Another change to the id (or its markers) is in progress: retry.
    ConcurrentTransactions,
    /// A newer instance of the producer (a higher epoch) exists.
    ProducerFenced,
    /// The producer id is not the one the transactional id has.
    InvalidProducerIdMapping,
    /// The request does not fit the transaction's state (EndTxn with no
    /// transaction, or the other way than it ended).
    InvalidTxnState,
    /// `transaction.timeout.ms` outside 1 ..= the broker's maximum.
    InvalidTransactionTimeout,
    /// A transaction over its bound of partitions or groups.
    TooManyPartitions,
    /// AddPartitionsToTxn: this partition was fine, but another of the
    /// request was refused, so none was added.
    OperationNotAttempted,
    /// A marker from a coordinator older than one that already wrote a
    /// marker for the producer (it lost its partition but still writes).
    CoordinatorFenced,
    /// DescribeTransactions of an id its coordinator does not know.
    TransactionalIdNotFound,
}

impl fmt::Display for TxnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<shardline_groups::Refusal> for GroupError {
    /// The group rules' refusals, as the coordinator's errors (whose Kafka
    /// codes [`kafka_code`] chooses).
    fn from(refusal: shardline_groups::Refusal) -> GroupError {
        use shardline_groups::Refusal;
        match refusal {
            Refusal::NotCoordinator => GroupError::NotCoordinator,
            Refusal::CoordinatorNotAvailable => GroupError::CoordinatorNotAvailable,
            Refusal::UnknownMemberId => GroupError::UnknownMemberId,
            Refusal::IllegalGeneration => GroupError::IllegalGeneration,
            Refusal::RebalanceInProgress => GroupError::RebalanceInProgress,
            Refusal::InconsistentGroupProtocol => GroupError::InconsistentGroupProtocol,
            Refusal::MemberIdRequired => GroupError::MemberIdRequired,
            Refusal::InvalidSessionTimeout => GroupError::InvalidSessionTimeout,
            Refusal::GroupMaxSizeReached => GroupError::GroupMaxSizeReached,
            Refusal::FencedInstanceId => GroupError::FencedInstanceId,
            Refusal::UnstableOffsetCommit => GroupError::UnstableOffsetCommit,
        }
    }
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Log(e) => write!(f, "{e}"),
            EngineError::Meta(e) => write!(f, "{e}"),
            EngineError::UnknownTopicOrPartition => write!(f, "unknown topic or partition"),
            EngineError::NotLeader => write!(f, "partition not served here"),
            EngineError::OutOfOrderSequence { expected, got } => {
                write!(f, "out of order sequence: expected {expected}, got {got}")
            }
            EngineError::ProducerFenced => write!(f, "producer epoch is older than the partition's"),
            EngineError::DuplicateSequence => write!(f, "duplicate of a batch still being appended"),
            EngineError::MessageTooLarge {
                batch_bytes,
                max_message_bytes,
            } => {
                write!(
                    f,
                    "batch of {batch_bytes} bytes exceeds max.message.bytes {max_message_bytes}"
                )
            }
            EngineError::InvalidRecord(why) => write!(f, "invalid record: {why}"),
            EngineError::InvalidTimestamp(records) => {
                write!(f, "{} record timestamps out of the topic's bounds", records.len())?;
                if let Some((index, why)) = records.first() {
                    write!(f, " (record {index}: {why})")?;
                }
                Ok(())
            }
            EngineError::RecordsRefused(records) => {
                write!(f, "{} records refused", records.len())?;
                if let Some((index, why)) = records.first() {
                    write!(f, " (record {index}: {why})")?;
                }
                Ok(())
            }
            EngineError::InvalidRequest(why) => write!(f, "invalid request: {why}"),
            EngineError::ShardUnavailable => write!(f, "owning shard unavailable"),
            EngineError::ShuttingDown => write!(f, "broker shutting down"),
            EngineError::Group(e) => write!(f, "group coordinator: {e}"),
            EngineError::Txn(e) => write!(f, "transaction coordinator: {e}"),
            EngineError::InternalTopic(topic) => write!(f, "{topic} is an internal topic"),
            EngineError::NotEnoughReplicas { isr, min_isr } => {
                write!(f, "{isr} in-sync replicas, min.insync.replicas is {min_isr}")
            }
            EngineError::NotEnoughReplicasAfterAppend { isr, min_isr } => write!(
                f,
                "appended, but the in-sync replicas shrank to {isr}, below min.insync.replicas {min_isr}"
            ),
            EngineError::ReplicationTimedOut => write!(f, "in-sync replicas did not copy the batch in time"),
            EngineError::FencedLeaderEpoch => write!(f, "request names an older leader epoch"),
            EngineError::UnknownLeaderEpoch => write!(f, "request names a leader epoch this broker does not know"),
            EngineError::LeaderNotAvailable => write!(f, "partition has no leader"),
            EngineError::PolicyViolation(why) => write!(f, "refused by the broker's limits: {why}"),
            EngineError::Sasl(e) => write!(f, "SASL: {e:?}"),
            EngineError::Admin(e) => write!(f, "{e}"),
            EngineError::NotAuthorized(kind) => write!(f, "not authorized to access this {}", kind.name()),
            EngineError::Credential(CredentialError::NotFound) => write!(f, "no such SCRAM credential"),
            EngineError::Credential(CredentialError::Duplicate) => write!(f, "a user or credential named twice"),
            EngineError::Credential(CredentialError::Unacceptable(why)) => write!(f, "unacceptable credential: {why}"),
            EngineError::Credential(CredentialError::UnsupportedMechanism) => {
                write!(f, "unsupported SCRAM mechanism (SCRAM-SHA-256 and SCRAM-SHA-512 are)")
            }
            EngineError::Remote(code) => match ResponseError::try_from_code(*code) {
                Some(error) => write!(f, "the partition's leader answered {error:?}"),
                None => write!(f, "the partition's leader answered error code {code}"),
            },
            EngineError::FetchSession(e) => write!(f, "fetch session: {e:?}"),
        }
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EngineError::Log(e) => Some(e),
            EngineError::Meta(e) => Some(e),
            _ => None,
        }
    }
}

impl From<LogError> for EngineError {
    fn from(e: LogError) -> Self {
        EngineError::Log(e)
    }
}

impl From<MetaError> for EngineError {
    fn from(e: MetaError) -> Self {
        EngineError::Meta(e)
    }
}

/// The Kafka error code for an error: the only place this mapping is made,
/// and so the place where errors are counted for `/metrics` (by code, under
/// the API of the request being served: `metrics::probe::count_error`).
pub fn kafka_code(error: &EngineError) -> i16 {
    if let EngineError::Remote(code) = error {
        crate::metrics::probe::count_error(*code);
        return *code;
    }
    let e = match error {
        EngineError::Remote(_) => ResponseError::UnknownServerError,
        EngineError::Log(log) => match log {
            LogError::InvalidBatch(batch) => match batch {
                BatchError::BadCrc { .. } | BatchError::Truncated { .. } | BatchError::BadLength { .. } => {
                    ResponseError::CorruptMessage
                }
                BatchError::BadMagic { .. } => ResponseError::UnsupportedForMessageFormat,
                BatchError::TooLarge { .. } => ResponseError::RecordListTooLarge,
                // A header its records do not bear out (Kafka's InvalidRecordException).
                BatchError::BadRecordCount { .. }
                | BatchError::BadRecords { .. }
                | BatchError::BadTimestamp { .. }
                | BatchError::TooManyRecords { .. }
                | BatchError::TooManyOffsets { .. } => ResponseError::InvalidRecord,
                _ => ResponseError::InvalidRecord,
            },
            // Offsets in a damaged range of a segment: not served, as a
            // Kafka broker answers a fetch of a corrupt batch.
            LogError::CorruptRange { .. } => ResponseError::CorruptMessage,
            LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            LogError::Closed => ResponseError::NotLeaderOrFollower,
            // Disk full, failed sync, corruption: the partition's storage failed.
            _ => ResponseError::KafkaStorageError,
        },
        EngineError::Meta(meta) => match meta {
            MetaError::TopicExists(_) => ResponseError::TopicAlreadyExists,
            MetaError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
            MetaError::InvalidPartitions { .. } => ResponseError::InvalidPartitions,
            MetaError::InvalidReplicationFactor { .. } => ResponseError::InvalidReplicationFactor,
            MetaError::InvalidConfig { .. } => ResponseError::InvalidConfig,
            MetaError::InvalidTopicName(_) | MetaError::TopicNameCollision { .. } => {
                ResponseError::InvalidTopicException
            }
            MetaError::NotLeader { .. } => ResponseError::NotController,
            MetaError::StaleLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
            MetaError::StalePartitionEpoch { .. } => ResponseError::InvalidUpdateVersion,
            MetaError::InvalidReassignment { .. } => ResponseError::InvalidReplicaAssignment,
            MetaError::NoReassignmentInProgress { .. } => ResponseError::NoReassignmentInProgress,
            MetaError::InvalidAcl { .. } => ResponseError::InvalidRequest,
            MetaError::InvalidCredential { .. } => ResponseError::UnacceptableCredential,
            _ => ResponseError::UnknownServerError,
        },
        EngineError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        EngineError::NotLeader | EngineError::ShardUnavailable => ResponseError::NotLeaderOrFollower,
        EngineError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        EngineError::ProducerFenced => ResponseError::InvalidProducerEpoch,
        EngineError::DuplicateSequence => ResponseError::DuplicateSequenceNumber,
        EngineError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        EngineError::InvalidRecord(_) | EngineError::RecordsRefused(_) => ResponseError::InvalidRecord,
        EngineError::InvalidTimestamp(_) => ResponseError::InvalidTimestamp,
        EngineError::InvalidRequest(_) => ResponseError::InvalidRequest,
        EngineError::ShuttingDown => ResponseError::BrokerNotAvailable,
        // Kafka refuses client writes to internal topics with INVALID_TOPIC_EXCEPTION.
        EngineError::InternalTopic(_) => ResponseError::InvalidTopicException,
        EngineError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        EngineError::NotEnoughReplicasAfterAppend { .. } => ResponseError::NotEnoughReplicasAfterAppend,
        EngineError::ReplicationTimedOut => ResponseError::RequestTimedOut,
        EngineError::FencedLeaderEpoch => ResponseError::FencedLeaderEpoch,
        EngineError::UnknownLeaderEpoch => ResponseError::UnknownLeaderEpoch,
        EngineError::LeaderNotAvailable => ResponseError::LeaderNotAvailable,
        EngineError::PolicyViolation(_) => ResponseError::PolicyViolation,
        EngineError::NotAuthorized(kind) => match kind {
            AclResourceType::Topic => ResponseError::TopicAuthorizationFailed,
            AclResourceType::Group => ResponseError::GroupAuthorizationFailed,
            AclResourceType::Cluster => ResponseError::ClusterAuthorizationFailed,
            AclResourceType::TransactionalId => ResponseError::TransactionalIdAuthorizationFailed,
        },
        EngineError::Credential(credential) => match credential {
            CredentialError::NotFound => ResponseError::ResourceNotFound,
            CredentialError::Duplicate => ResponseError::DuplicateResource,
            CredentialError::Unacceptable(_) => ResponseError::UnacceptableCredential,
            CredentialError::UnsupportedMechanism => ResponseError::UnsupportedSaslMechanism,
        },
        EngineError::Sasl(sasl) => match sasl {
            SaslError::UnsupportedMechanism => ResponseError::UnsupportedSaslMechanism,
            SaslError::IllegalState => ResponseError::IllegalSaslState,
            SaslError::AuthenticationFailed => ResponseError::SaslAuthenticationFailed,
        },
        EngineError::FetchSession(session) => match session {
            FetchSessionError::IdNotFound => ResponseError::FetchSessionIdNotFound,
            FetchSessionError::InvalidEpoch => ResponseError::InvalidFetchSessionEpoch,
        },
        EngineError::Admin(admin) => match admin {
            AdminError::InvalidConfig(_) => ResponseError::InvalidConfig,
            AdminError::ElectionNotNeeded => ResponseError::ElectionNotNeeded,
            AdminError::PreferredLeaderNotAvailable => ResponseError::PreferredLeaderNotAvailable,
            AdminError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        },
        EngineError::Group(group) => match group {
            GroupError::NotCoordinator => ResponseError::NotCoordinator,
            GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
            GroupError::LoadInProgress => ResponseError::CoordinatorLoadInProgress,
            GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
            GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
            GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
            GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
            GroupError::MemberIdRequired => ResponseError::MemberIdRequired,
            GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
            GroupError::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
            GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
            GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
            GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
            GroupError::SubscribedToTopic => ResponseError::GroupSubscribedToTopic,
            GroupError::OffsetMetadataTooLarge => ResponseError::OffsetMetadataTooLarge,
            GroupError::TooManyOffsets => ResponseError::InvalidCommitOffsetSize,
            GroupError::UnstableOffsetCommit => ResponseError::UnstableOffsetCommit,
        },
        EngineError::Txn(txn) => match txn {
            TxnError::NotCoordinator => ResponseError::NotCoordinator,
            TxnError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
            TxnError::LoadInProgress => ResponseError::CoordinatorLoadInProgress,
            TxnError::ConcurrentTransactions => ResponseError::ConcurrentTransactions,
            TxnError::ProducerFenced => ResponseError::ProducerFenced,
            TxnError::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
            TxnError::InvalidTxnState => ResponseError::InvalidTxnState,
            TxnError::InvalidTransactionTimeout => ResponseError::InvalidTransactionTimeout,
            TxnError::TooManyPartitions => ResponseError::PolicyViolation,
            TxnError::OperationNotAttempted => ResponseError::OperationNotAttempted,
            TxnError::CoordinatorFenced => ResponseError::TransactionCoordinatorFenced,
            TxnError::TransactionalIdNotFound => ResponseError::TransactionalIdNotFound,
        },
    };
    let code = e.code();
    crate::metrics::probe::count_error(code);
    code
}

/// The error for a Kafka error code another broker answered (non-zero):
/// the codes the engine acts on become their own variants (so a forwarded
/// MQTT publish is retried, refused or told apart as a local one is), the
/// rest stay [`EngineError::Remote`].
pub(crate) fn from_remote_code(code: i16) -> EngineError {
    assert!(code != 0, "only an error code is an error");
    match ResponseError::try_from_code(code) {
        Some(ResponseError::NotLeaderOrFollower | ResponseError::FencedLeaderEpoch) => EngineError::NotLeader,
        Some(ResponseError::LeaderNotAvailable) => EngineError::LeaderNotAvailable,
        Some(ResponseError::UnknownTopicOrPartition) => EngineError::UnknownTopicOrPartition,
        Some(ResponseError::TopicAuthorizationFailed) => EngineError::NotAuthorized(AclResourceType::Topic),
        Some(ResponseError::ClusterAuthorizationFailed) => EngineError::NotAuthorized(AclResourceType::Cluster),
        Some(ResponseError::RequestTimedOut) => EngineError::ReplicationTimedOut,
        Some(ResponseError::BrokerNotAvailable) => EngineError::ShuttingDown,
        _ => EngineError::Remote(code),
    }
}

/// [`kafka_code`] for a transaction API answered at a version older than
/// PRODUCER_FENCED (KIP-588: InitProducerId v4, AddPartitionsToTxn,
/// AddOffsetsToTxn and EndTxn v2, TxnOffsetCommit v3): those clients are
/// told INVALID_PRODUCER_EPOCH instead, as Kafka tells them.
pub(crate) fn kafka_code_at(error: &EngineError, knows_producer_fenced: bool) -> i16 {
    if !knows_producer_fenced && matches!(error, EngineError::Txn(TxnError::ProducerFenced)) {
        return kafka_code(&EngineError::ProducerFenced);
    }
    kafka_code(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_another_broker_answered_is_acted_on_or_passed_on_unchanged() {
        assert!(matches!(from_remote_code(6), EngineError::NotLeader));
        assert!(matches!(from_remote_code(5), EngineError::LeaderNotAvailable));
        assert!(matches!(
            from_remote_code(29),
            EngineError::NotAuthorized(AclResourceType::Topic)
        ));
        // Codes the engine does not act on keep their value end to end.
        for code in [10, 19, 56, 87] {
            assert_eq!(kafka_code(&from_remote_code(code)), code);
        }
    }

    #[test]
    fn batch_errors_map_to_the_codes_clients_expect() {
        let crc = EngineError::Log(LogError::InvalidBatch(BatchError::BadCrc { stored: 1, computed: 2 }));
        assert_eq!(kafka_code(&crc), 2, "CORRUPT_MESSAGE");
        assert_eq!(kafka_code(&EngineError::UnknownTopicOrPartition), 3);
        assert_eq!(kafka_code(&EngineError::OutOfOrderSequence { expected: 1, got: 3 }), 45);
        assert_eq!(kafka_code(&EngineError::ProducerFenced), 47);
        let full = EngineError::Log(LogError::Io {
            context: "writing segment",
            path: "x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        });
        assert_eq!(kafka_code(&full), 56, "KAFKA_STORAGE_ERROR");
        let lying = EngineError::Log(LogError::InvalidBatch(BatchError::BadRecords {
            record: 0,
            reason: "bad record length",
        }));
        assert_eq!(kafka_code(&lying), 87, "INVALID_RECORD");
        let damaged = EngineError::Log(LogError::CorruptRange {
            path: "x".into(),
            range: shardline_log::BadRange {
                start: shardline_log::Position(0),
                end: shardline_log::Position(100),
                first_offset: shardline_log::Offset(3),
                next_offset: shardline_log::Offset(5),
                reason: BatchError::BadCrc { stored: 1, computed: 2 },
            },
        });
        assert_eq!(kafka_code(&damaged), 2, "CORRUPT_MESSAGE");
    }

    #[test]
    fn replication_errors_map_to_the_codes_clients_expect() {
        assert_eq!(kafka_code(&EngineError::NotLeader), 6, "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(kafka_code(&EngineError::ReplicationTimedOut), 7, "REQUEST_TIMED_OUT");
        assert_eq!(kafka_code(&EngineError::NotEnoughReplicas { isr: 1, min_isr: 2 }), 19);
        assert_eq!(
            kafka_code(&EngineError::NotEnoughReplicasAfterAppend { isr: 1, min_isr: 2 }),
            20
        );
        assert_eq!(kafka_code(&EngineError::LeaderNotAvailable), 5);
        assert_eq!(kafka_code(&EngineError::FencedLeaderEpoch), 74);
        assert_eq!(kafka_code(&EngineError::UnknownLeaderEpoch), 75);
        let stale = EngineError::Meta(MetaError::StalePartitionEpoch {
            topic: "t".into(),
            partition: 0,
            partition_epoch: shardline_raft::PartitionEpoch(3),
        });
        assert_eq!(kafka_code(&stale), 95, "INVALID_UPDATE_VERSION");
    }

    #[test]
    fn sasl_errors_map_to_the_codes_clients_expect() {
        let code = |e| kafka_code(&EngineError::Sasl(e));
        assert_eq!(code(SaslError::UnsupportedMechanism), 33);
        assert_eq!(code(SaslError::IllegalState), 34);
        assert_eq!(code(SaslError::AuthenticationFailed), 58);
    }

    #[test]
    fn admin_errors_map_to_the_codes_clients_expect() {
        let code = |e| kafka_code(&EngineError::Admin(e));
        assert_eq!(code(AdminError::InvalidConfig("x".into())), 40);
        assert_eq!(code(AdminError::InvalidReplicaAssignment("x".into())), 39);
        assert_eq!(code(AdminError::PreferredLeaderNotAvailable), 80);
        assert_eq!(code(AdminError::ElectionNotNeeded), 84);
        let none = EngineError::Meta(MetaError::NoReassignmentInProgress {
            topic: "t".into(),
            partition: 0,
        });
        assert_eq!(kafka_code(&none), 85);
        let refused = EngineError::Meta(MetaError::InvalidReassignment {
            topic: "t".into(),
            partition: 0,
            reason: "r".into(),
        });
        assert_eq!(kafka_code(&refused), 39);
        let invalid = EngineError::Meta(MetaError::InvalidConfig {
            key: "retention.ms".into(),
            value: Some("soon".into()),
            reason: "not an integer".into(),
        });
        assert_eq!(kafka_code(&invalid), 40);
    }

    #[test]
    fn authorization_errors_map_to_the_codes_clients_expect() {
        let code = |kind| kafka_code(&EngineError::NotAuthorized(kind));
        assert_eq!(code(AclResourceType::Topic), 29, "TOPIC_AUTHORIZATION_FAILED");
        assert_eq!(code(AclResourceType::Group), 30, "GROUP_AUTHORIZATION_FAILED");
        assert_eq!(code(AclResourceType::Cluster), 31, "CLUSTER_AUTHORIZATION_FAILED");
        assert_eq!(code(AclResourceType::TransactionalId), 53);
        let invalid = EngineError::Meta(MetaError::InvalidAcl { reason: "r".into() });
        assert_eq!(kafka_code(&invalid), 42, "INVALID_REQUEST");
        let credential = |e| kafka_code(&EngineError::Credential(e));
        assert_eq!(credential(CredentialError::NotFound), 91, "RESOURCE_NOT_FOUND");
        assert_eq!(credential(CredentialError::Duplicate), 92, "DUPLICATE_RESOURCE");
        assert_eq!(credential(CredentialError::Unacceptable("x".into())), 93);
        assert_eq!(credential(CredentialError::UnsupportedMechanism), 33);
    }

    #[test]
    fn group_errors_map_to_the_codes_clients_expect() {
        let code = |e| kafka_code(&EngineError::Group(e));
        assert_eq!(code(GroupError::CoordinatorNotAvailable), 15);
        assert_eq!(code(GroupError::NotCoordinator), 16);
        assert_eq!(code(GroupError::IllegalGeneration), 22);
        assert_eq!(code(GroupError::InconsistentGroupProtocol), 23);
        assert_eq!(code(GroupError::UnknownMemberId), 25);
        assert_eq!(code(GroupError::RebalanceInProgress), 27);
        assert_eq!(code(GroupError::NonEmptyGroup), 68);
        assert_eq!(code(GroupError::GroupIdNotFound), 69);
        assert_eq!(code(GroupError::MemberIdRequired), 79);
        assert_eq!(code(GroupError::FencedInstanceId), 82);
        assert_eq!(code(GroupError::UnstableOffsetCommit), 88);
        assert_eq!(kafka_code(&EngineError::InternalTopic("__consumer_offsets".into())), 17);
    }

    #[test]
    fn fetch_session_errors_map_to_the_codes_clients_expect() {
        let code = |e| kafka_code(&EngineError::FetchSession(e));
        assert_eq!(code(FetchSessionError::IdNotFound), 70);
        assert_eq!(code(FetchSessionError::InvalidEpoch), 71);
    }

    #[test]
    fn transaction_errors_map_to_the_codes_clients_expect() {
        let code = |e| kafka_code(&EngineError::Txn(e));
        assert_eq!(code(TxnError::NotCoordinator), 16);
        assert_eq!(code(TxnError::InvalidTxnState), 48);
        assert_eq!(code(TxnError::InvalidProducerIdMapping), 49);
        assert_eq!(code(TxnError::InvalidTransactionTimeout), 50);
        assert_eq!(code(TxnError::ConcurrentTransactions), 51);
        assert_eq!(code(TxnError::ProducerFenced), 90);
        assert_eq!(code(TxnError::CoordinatorFenced), 52);
        assert_eq!(code(TxnError::TransactionalIdNotFound), 105);
        let fenced = EngineError::Txn(TxnError::ProducerFenced);
        assert_eq!(
            kafka_code_at(&fenced, false),
            47,
            "INVALID_PRODUCER_EPOCH before KIP-588"
        );
        assert_eq!(kafka_code_at(&fenced, true), 90);
    }
}
