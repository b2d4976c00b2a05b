//! The one table of what net decodes and encodes, and the version facts
//! derived from it.
//!
//! ```text
//! SUPPORTED_APIS row:  (api key: i16, min version: i16, max version: i16)
//! ```
//!
//! Which versions are "flexible" (KIP-482: compact strings and arrays, tagged
//! fields, request header v2 / response header v1) is not restated here: it
//! is taken from kafka-protocol's `header_version` for every API, so the
//! hand-written Produce and Fetch codecs and the generated ones agree on the
//! boundary. The one exception Kafka itself makes, ApiVersions answering with
//! response header v0 at every version, comes from the same place.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// `(api key, min version, max version)` for every API net can decode and
/// answer, sorted by API key. The engine's ApiVersions response advertises
/// exactly this (see [`api_versions_response`]).
pub const SUPPORTED_APIS: &[(i16, i16, i16)] = &[
    (PRODUCE, 3, 9),
    (FETCH, 4, 12),
    (LIST_OFFSETS, 1, 7),
    (METADATA, 1, 12),
    (OFFSET_COMMIT, 2, 8),
    (OFFSET_FETCH, 1, 7),
    (FIND_COORDINATOR, 0, 4),
    (JOIN_GROUP, 0, 7),
    (HEARTBEAT, 0, 4),
    (LEAVE_GROUP, 0, 5),
    (SYNC_GROUP, 0, 5),
    (DESCRIBE_GROUPS, 0, 5),
    (LIST_GROUPS, 0, 4),
    (SASL_HANDSHAKE, 0, 1),
    (API_VERSIONS, 0, 3),
    (CREATE_TOPICS, 2, 7),
    (DELETE_TOPICS, 1, 6),
    (DELETE_RECORDS, 0, 2),
    (INIT_PRODUCER_ID, 0, 4),
    (OFFSET_FOR_LEADER_EPOCH, 2, 4),
    (ADD_PARTITIONS_TO_TXN, 0, 3),
    (ADD_OFFSETS_TO_TXN, 0, 3),
    (END_TXN, 0, 3),
    (WRITE_TXN_MARKERS, 1, 1),
    (TXN_OFFSET_COMMIT, 0, 3),
    (DESCRIBE_ACLS, 1, 3),
    (CREATE_ACLS, 1, 3),
    (DELETE_ACLS, 1, 3),
    (DESCRIBE_CONFIGS, 0, 4),
    (ALTER_CONFIGS, 0, 2),
    (DESCRIBE_LOG_DIRS, 1, 4),
    (SASL_AUTHENTICATE, 0, 2),
    (CREATE_PARTITIONS, 0, 3),
    (DELETE_GROUPS, 0, 2),
    (ELECT_LEADERS, 0, 2),
    (INCREMENTAL_ALTER_CONFIGS, 0, 1),
    (ALTER_PARTITION_REASSIGNMENTS, 0, 1),
    (LIST_PARTITION_REASSIGNMENTS, 0, 0),
    (OFFSET_DELETE, 0, 0),
    (DESCRIBE_USER_SCRAM_CREDENTIALS, 0, 0),
    (ALTER_USER_SCRAM_CREDENTIALS, 0, 0),
    (DESCRIBE_CLUSTER, 0, 1),
    (DESCRIBE_PRODUCERS, 0, 0),
    (DESCRIBE_TRANSACTIONS, 0, 0),
    (LIST_TRANSACTIONS, 0, 1),
];

/// Produce (hand-decoded, zero-copy records).
pub(crate) const PRODUCE: i16 = ApiKey::Produce as i16;
/// Fetch (request through kafka-protocol, response hand-framed).
pub(crate) const FETCH: i16 = ApiKey::Fetch as i16;
pub(crate) const LIST_OFFSETS: i16 = ApiKey::ListOffsets as i16;
pub(crate) const METADATA: i16 = ApiKey::Metadata as i16;
pub(crate) const API_VERSIONS: i16 = ApiKey::ApiVersions as i16;
pub(crate) const CREATE_TOPICS: i16 = ApiKey::CreateTopics as i16;
pub(crate) const DELETE_TOPICS: i16 = ApiKey::DeleteTopics as i16;
pub(crate) const INIT_PRODUCER_ID: i16 = ApiKey::InitProducerId as i16;
pub(crate) const DESCRIBE_CONFIGS: i16 = ApiKey::DescribeConfigs as i16;
pub(crate) const CREATE_PARTITIONS: i16 = ApiKey::CreatePartitions as i16;
pub(crate) const DESCRIBE_CLUSTER: i16 = ApiKey::DescribeCluster as i16;
// The classic consumer-group protocol (client-side assignors). OffsetCommit
// stops at v8 and OffsetFetch at v7: later versions belong to the KIP-848
// protocol (member epochs) and batched multi-group fetches.
pub(crate) const OFFSET_COMMIT: i16 = ApiKey::OffsetCommit as i16;
pub(crate) const OFFSET_FETCH: i16 = ApiKey::OffsetFetch as i16;
pub(crate) const FIND_COORDINATOR: i16 = ApiKey::FindCoordinator as i16;
pub(crate) const JOIN_GROUP: i16 = ApiKey::JoinGroup as i16;
pub(crate) const HEARTBEAT: i16 = ApiKey::Heartbeat as i16;
pub(crate) const LEAVE_GROUP: i16 = ApiKey::LeaveGroup as i16;
pub(crate) const SYNC_GROUP: i16 = ApiKey::SyncGroup as i16;
pub(crate) const DESCRIBE_GROUPS: i16 = ApiKey::DescribeGroups as i16;
pub(crate) const LIST_GROUPS: i16 = ApiKey::ListGroups as i16;
pub(crate) const DELETE_GROUPS: i16 = ApiKey::DeleteGroups as i16;
pub(crate) const OFFSET_DELETE: i16 = ApiKey::OffsetDelete as i16;
// Authentication (SASL_PLAINTEXT and SASL_SSL listeners). SaslHandshake v0
// is listed because Kafka lists it, but only the framed exchange
// (SaslAuthenticate after the handshake, KIP-152) is served: a v0 client
// that then sends raw SASL tokens is closed as bad input.
pub(crate) const SASL_HANDSHAKE: i16 = ApiKey::SaslHandshake as i16;
pub(crate) const SASL_AUTHENTICATE: i16 = ApiKey::SaslAuthenticate as i16;
// Admin APIs operators' tools use (kafka-configs, kafka-log-dirs,
// kafka-delete-records, kafka-leader-election, kafka-reassign-partitions,
// kafka-transactions describe-producers). DescribeLogDirs starts at v1:
// kafka-protocol 0.18 has no v0 (Kafka 4.0 removed it, KIP-896).
pub(crate) const DELETE_RECORDS: i16 = ApiKey::DeleteRecords as i16;
pub(crate) const ALTER_CONFIGS: i16 = ApiKey::AlterConfigs as i16;
pub(crate) const DESCRIBE_LOG_DIRS: i16 = ApiKey::DescribeLogDirs as i16;
pub(crate) const ELECT_LEADERS: i16 = ApiKey::ElectLeaders as i16;
pub(crate) const INCREMENTAL_ALTER_CONFIGS: i16 = ApiKey::IncrementalAlterConfigs as i16;
pub(crate) const ALTER_PARTITION_REASSIGNMENTS: i16 = ApiKey::AlterPartitionReassignments as i16;
pub(crate) const LIST_PARTITION_REASSIGNMENTS: i16 = ApiKey::ListPartitionReassignments as i16;
pub(crate) const DESCRIBE_PRODUCERS: i16 = ApiKey::DescribeProducers as i16;
// kafka-transactions.sh describe / list (KIP-664). ListTransactions v2
// (a transactional id pattern) is not served.
pub(crate) const DESCRIBE_TRANSACTIONS: i16 = ApiKey::DescribeTransactions as i16;
pub(crate) const LIST_TRANSACTIONS: i16 = ApiKey::ListTransactions as i16;
// Authorization: ACL management (v0, without pattern types, is not served;
// kafka-protocol 0.18 dropped it, KIP-896).
pub(crate) const DESCRIBE_ACLS: i16 = ApiKey::DescribeAcls as i16;
pub(crate) const CREATE_ACLS: i16 = ApiKey::CreateAcls as i16;
pub(crate) const DELETE_ACLS: i16 = ApiKey::DeleteAcls as i16;
// SCRAM credentials kept by the metadata group (KIP-554).
pub(crate) const DESCRIBE_USER_SCRAM_CREDENTIALS: i16 = ApiKey::DescribeUserScramCredentials as i16;
pub(crate) const ALTER_USER_SCRAM_CREDENTIALS: i16 = ApiKey::AlterUserScramCredentials as i16;
// Transactions (KIP-98), to the versions before KIP-890's broker-side
// verification (AddPartitionsToTxn v4+, EndTxn v4+, TxnOffsetCommit v4+).
pub(crate) const ADD_PARTITIONS_TO_TXN: i16 = ApiKey::AddPartitionsToTxn as i16;
pub(crate) const ADD_OFFSETS_TO_TXN: i16 = ApiKey::AddOffsetsToTxn as i16;
pub(crate) const END_TXN: i16 = ApiKey::EndTxn as i16;
pub(crate) const TXN_OFFSET_COMMIT: i16 = ApiKey::TxnOffsetCommit as i16;
/// Between brokers: a transaction coordinator asks a partition's leader to
/// write markers (v0 is gone from kafka-protocol 0.18, KIP-896).
pub(crate) const WRITE_TXN_MARKERS: i16 = ApiKey::WriteTxnMarkers as i16;
/// Replication: a follower (or a KIP-320 client) asks where a leader epoch ends.
pub(crate) const OFFSET_FOR_LEADER_EPOCH: i16 = ApiKey::OffsetForLeaderEpoch as i16;

/// Kafka error code UNSUPPORTED_VERSION.
pub const UNSUPPORTED_VERSION: i16 = 35;

/// The `(min, max)` versions net supports for `api_key`, if any.
pub fn supported_versions(api_key: i16) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(key, _, _)| *key == api_key)
        .map(|&(_, min, max)| (min, max))
}

/// True when net can decode `api_key` at `api_version`.
pub fn is_supported(api_key: i16, api_version: i16) -> bool {
    supported_versions(api_key).is_some_and(|(min, max)| (min..=max).contains(&api_version))
}

/// Request header version (1 or 2) for a supported API and version; `None`
/// for an API kafka-protocol does not know.
pub(crate) fn request_header_version(api_key: i16, api_version: i16) -> Option<i16> {
    ApiKey::try_from(api_key)
        .ok()
        .map(|key| key.request_header_version(api_version))
}

/// Response header version (0 or 1). ApiVersions is always 0.
pub(crate) fn response_header_version(api_key: i16, api_version: i16) -> Option<i16> {
    ApiKey::try_from(api_key)
        .ok()
        .map(|key| key.response_header_version(api_version))
}

/// True when the body of `api_key` at `api_version` uses the flexible
/// encoding; by definition exactly when its request header is v2.
pub(crate) fn is_flexible(api_key: i16, api_version: i16) -> bool {
    request_header_version(api_key, api_version) == Some(2)
}

/// An ApiVersions response listing [`SUPPORTED_APIS`] with `error_code`
/// (0 for success). Encodable at every ApiVersions version; a handler answers
/// ApiVersions with it, adding throttle or feature fields if it wants to.
pub fn api_versions_response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|&(api_key, min, max)| {
            ApiVersion::default()
                .with_api_key(api_key)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{
        ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest, DeleteGroupsRequest, DeleteTopicsRequest,
        DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest, FetchRequest, FindCoordinatorRequest,
        HeartbeatRequest, InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
        ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest,
        OffsetForLeaderEpochRequest, ProduceRequest, SyncGroupRequest,
    };
    use kafka_protocol::protocol::{Message, VersionRange};

    fn kafka_protocol_range(api_key: i16) -> VersionRange {
        match api_key {
            PRODUCE => ProduceRequest::VERSIONS,
            FETCH => FetchRequest::VERSIONS,
            LIST_OFFSETS => ListOffsetsRequest::VERSIONS,
            METADATA => MetadataRequest::VERSIONS,
            API_VERSIONS => ApiVersionsRequest::VERSIONS,
            CREATE_TOPICS => CreateTopicsRequest::VERSIONS,
            DELETE_TOPICS => DeleteTopicsRequest::VERSIONS,
            INIT_PRODUCER_ID => InitProducerIdRequest::VERSIONS,
            DESCRIBE_CONFIGS => DescribeConfigsRequest::VERSIONS,
            CREATE_PARTITIONS => CreatePartitionsRequest::VERSIONS,
            DESCRIBE_CLUSTER => DescribeClusterRequest::VERSIONS,
            OFFSET_COMMIT => OffsetCommitRequest::VERSIONS,
            OFFSET_FETCH => OffsetFetchRequest::VERSIONS,
            FIND_COORDINATOR => FindCoordinatorRequest::VERSIONS,
            JOIN_GROUP => JoinGroupRequest::VERSIONS,
            HEARTBEAT => HeartbeatRequest::VERSIONS,
            LEAVE_GROUP => LeaveGroupRequest::VERSIONS,
            SYNC_GROUP => SyncGroupRequest::VERSIONS,
            DESCRIBE_GROUPS => DescribeGroupsRequest::VERSIONS,
            LIST_GROUPS => ListGroupsRequest::VERSIONS,
            DELETE_GROUPS => DeleteGroupsRequest::VERSIONS,
            OFFSET_DELETE => OffsetDeleteRequest::VERSIONS,
            OFFSET_FOR_LEADER_EPOCH => OffsetForLeaderEpochRequest::VERSIONS,
            SASL_HANDSHAKE => kafka_protocol::messages::SaslHandshakeRequest::VERSIONS,
            SASL_AUTHENTICATE => kafka_protocol::messages::SaslAuthenticateRequest::VERSIONS,
            DELETE_RECORDS => kafka_protocol::messages::DeleteRecordsRequest::VERSIONS,
            ALTER_CONFIGS => kafka_protocol::messages::AlterConfigsRequest::VERSIONS,
            DESCRIBE_LOG_DIRS => kafka_protocol::messages::DescribeLogDirsRequest::VERSIONS,
            ELECT_LEADERS => kafka_protocol::messages::ElectLeadersRequest::VERSIONS,
            INCREMENTAL_ALTER_CONFIGS => kafka_protocol::messages::IncrementalAlterConfigsRequest::VERSIONS,
            ALTER_PARTITION_REASSIGNMENTS => kafka_protocol::messages::AlterPartitionReassignmentsRequest::VERSIONS,
            LIST_PARTITION_REASSIGNMENTS => kafka_protocol::messages::ListPartitionReassignmentsRequest::VERSIONS,
            DESCRIBE_PRODUCERS => kafka_protocol::messages::DescribeProducersRequest::VERSIONS,
            ADD_PARTITIONS_TO_TXN => kafka_protocol::messages::AddPartitionsToTxnRequest::VERSIONS,
            ADD_OFFSETS_TO_TXN => kafka_protocol::messages::AddOffsetsToTxnRequest::VERSIONS,
            END_TXN => kafka_protocol::messages::EndTxnRequest::VERSIONS,
            TXN_OFFSET_COMMIT => kafka_protocol::messages::TxnOffsetCommitRequest::VERSIONS,
            WRITE_TXN_MARKERS => kafka_protocol::messages::WriteTxnMarkersRequest::VERSIONS,
            DESCRIBE_TRANSACTIONS => kafka_protocol::messages::DescribeTransactionsRequest::VERSIONS,
            LIST_TRANSACTIONS => kafka_protocol::messages::ListTransactionsRequest::VERSIONS,
            DESCRIBE_ACLS => kafka_protocol::messages::DescribeAclsRequest::VERSIONS,
            CREATE_ACLS => kafka_protocol::messages::CreateAclsRequest::VERSIONS,
            DELETE_ACLS => kafka_protocol::messages::DeleteAclsRequest::VERSIONS,
            DESCRIBE_USER_SCRAM_CREDENTIALS => kafka_protocol::messages::DescribeUserScramCredentialsRequest::VERSIONS,
            ALTER_USER_SCRAM_CREDENTIALS => kafka_protocol::messages::AlterUserScramCredentialsRequest::VERSIONS,
            other => panic!("no kafka-protocol type for {other}"),
        }
    }

    #[test]
    fn table_is_sorted_unique_and_within_kafka_protocol_except_describe_configs_v0() {
        for pair in SUPPORTED_APIS.windows(2) {
            assert!(pair[0].0 < pair[1].0, "sorted by key, no duplicates");
        }
        for &(api_key, min, max) in SUPPORTED_APIS {
            assert!(min <= max);
            let range = kafka_protocol_range(api_key);
            assert!(max <= range.max, "api {api_key}");
            if api_key == DESCRIBE_CONFIGS {
                // kafka-protocol 0.18 dropped v0 (KIP-896); net codes it by hand.
                assert_eq!((min, range.min), (0, 1));
            } else {
                assert!(min >= range.min, "api {api_key}");
            }
        }
    }

    #[test]
    fn flexible_boundaries_match_the_kafka_schemas() {
        let first_flexible = [
            (PRODUCE, 9),
            (FETCH, 12),
            (LIST_OFFSETS, 6),
            (METADATA, 9),
            (API_VERSIONS, 3),
            (CREATE_TOPICS, 5),
            (DELETE_TOPICS, 4),
            (INIT_PRODUCER_ID, 2),
            (DESCRIBE_CONFIGS, 4),
            (CREATE_PARTITIONS, 2),
            (DESCRIBE_CLUSTER, 0),
            (OFFSET_COMMIT, 8),
            (OFFSET_FETCH, 6),
            (FIND_COORDINATOR, 3),
            (JOIN_GROUP, 6),
            (HEARTBEAT, 4),
            (LEAVE_GROUP, 4),
            (SYNC_GROUP, 4),
            (DESCRIBE_GROUPS, 5),
            (LIST_GROUPS, 3),
            (DELETE_GROUPS, 2),
            (OFFSET_DELETE, i16::MAX),
            (DELETE_RECORDS, 2),
            (ALTER_CONFIGS, 2),
            (DESCRIBE_LOG_DIRS, 2),
            (ELECT_LEADERS, 2),
            (INCREMENTAL_ALTER_CONFIGS, 1),
            (ALTER_PARTITION_REASSIGNMENTS, 0),
            (LIST_PARTITION_REASSIGNMENTS, 0),
            (DESCRIBE_PRODUCERS, 0),
            (ADD_PARTITIONS_TO_TXN, 3),
            (ADD_OFFSETS_TO_TXN, 3),
            (END_TXN, 3),
            (TXN_OFFSET_COMMIT, 3),
            (WRITE_TXN_MARKERS, 1),
            (DESCRIBE_TRANSACTIONS, 0),
            (LIST_TRANSACTIONS, 0),
            (DESCRIBE_ACLS, 2),
            (CREATE_ACLS, 2),
            (DELETE_ACLS, 2),
            (DESCRIBE_USER_SCRAM_CREDENTIALS, 0),
            (ALTER_USER_SCRAM_CREDENTIALS, 0),
        ];
        for (api_key, boundary) in first_flexible {
            let (min, max) = supported_versions(api_key).unwrap();
            for version in min..=max {
                assert_eq!(
                    is_flexible(api_key, version),
                    version >= boundary,
                    "api {api_key} v{version}"
                );
                let response_header = response_header_version(api_key, version).unwrap();
                if api_key == API_VERSIONS {
                    assert_eq!(response_header, 0);
                } else {
                    assert_eq!(response_header, i16::from(version >= boundary));
                }
            }
        }
    }

    #[test]
    fn support_lookups() {
        assert!(is_supported(PRODUCE, 3));
        assert!(is_supported(PRODUCE, 9));
        assert!(!is_supported(PRODUCE, 10));
        assert!(!is_supported(PRODUCE, 2));
        assert!(!is_supported(9999, 0));
        assert_eq!(api_versions_response(0).api_keys.len(), SUPPORTED_APIS.len());
    }
}
