//! Structural pre-check of control-plane request bodies (and Fetch requests),
//! and of the Fetch, OffsetForLeaderEpoch, SaslHandshake and
//! SaslAuthenticate responses a follower reads from its leader, before kafka-protocol's generated decoders see them.
//!
//! Why: kafka-protocol 0.18 reads an array count and calls
//! `Vec::with_capacity(count)` before reading a single item. A 20-byte
//! Metadata request announcing 2^31 topics would ask the allocator for
//! ~150 GiB, and an allocation failure aborts the process. The walk below
//! reads the same fields in the same order, checks every count against the
//! bytes left (each item takes at least one byte) and walks every item, so by
//! the time kafka-protocol decodes, every count it will read is one that was
//! checked. It allocates nothing.
//!
//! Each schema is the request's field list from Kafka's message JSON, with
//! the version range of each field, restricted to what `SUPPORTED_APIS`
//! serves. The walk is at least as strict as kafka-protocol wherever the two
//! could diverge (it treats every string and array as nullable, which only
//! lets kafka-protocol reject a null it does not allow, without allocating).
//!
//! ```text
//! field kinds          classic                       flexible
//! Int8..Int64, Bool    fixed width                   fixed width
//! Uuid                 16 bytes                      16 bytes
//! Str                  int16 length + bytes          uvarint length+1 + bytes
//! Structs(fields)      int32 count + items           uvarint count+1 + items, each
//!                                                    item ends with tagged fields
//! Int32s               int32 count + 4-byte items    uvarint count+1 + 4-byte items
//! Int64s               int32 count + 8-byte items    uvarint count+1 + 8-byte items
//! Bytes                int32 length + bytes          uvarint length+1 + bytes
//! Strs                 int32 count + strings         uvarint count+1 + compact strings
//! every body ends with a tagged-field section in flexible versions
//! ```
//!
//! Known tagged fields in the supported versions (Fetch v12's top-level
//! `cluster_id`, a string) are skipped by size like unknown ones; the only
//! thing kafka-protocol could read differently there is a string, never an
//! array, so no unchecked count can come from it.

use bytes::Bytes;

use crate::apis;
use crate::cursor::{Cursor, Encoding};
use crate::error::DecodeError;

/// Highest version any field range needs to say "and later".
const LATEST: i16 = i16::MAX;

/// What a field is on the wire.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Int8,
    Int16,
    Int32,
    Int64,
    Bool,
    Uuid,
    /// A string, nullable or not.
    Str,
    /// An array of structs with these fields.
    Structs(&'static [Field]),
    /// An array of int32.
    Int32s,
    /// An array of int64.
    Int64s,
    /// An array of strings.
    Strs,
    /// Nullable bytes (int32 length, or uvarint length+1 when flexible).
    Bytes,
}

/// One field of a schema, present in versions `min..=max`.
#[derive(Debug, Clone, Copy)]
struct Field {
    name: &'static str,
    min: i16,
    max: i16,
    kind: Kind,
}

const fn field(name: &'static str, min: i16, max: i16, kind: Kind) -> Field {
    Field { name, min, max, kind }
}

// ---- Metadata (v1..=12) ----
const METADATA_TOPIC: &[Field] = &[
    field("metadata.topic.topic_id", 10, LATEST, Kind::Uuid),
    field("metadata.topic.name", 0, LATEST, Kind::Str),
];
const METADATA: &[Field] = &[
    field("metadata.topics", 0, LATEST, Kind::Structs(METADATA_TOPIC)),
    field("metadata.allow_auto_topic_creation", 4, LATEST, Kind::Bool),
    field("metadata.include_cluster_authorized_operations", 8, 10, Kind::Bool),
    field("metadata.include_topic_authorized_operations", 8, LATEST, Kind::Bool),
];

// ---- ApiVersions (v0..=3) ----
const API_VERSIONS: &[Field] = &[
    field("api_versions.client_software_name", 3, LATEST, Kind::Str),
    field("api_versions.client_software_version", 3, LATEST, Kind::Str),
];

// ---- CreateTopics (v2..=7) ----
const CREATE_TOPICS_ASSIGNMENT: &[Field] = &[
    field("create_topics.assignment.partition_index", 0, LATEST, Kind::Int32),
    field("create_topics.assignment.broker_ids", 0, LATEST, Kind::Int32s),
];
const CREATE_TOPICS_CONFIG: &[Field] = &[
    field("create_topics.config.name", 0, LATEST, Kind::Str),
    field("create_topics.config.value", 0, LATEST, Kind::Str),
];
const CREATE_TOPICS_TOPIC: &[Field] = &[
    field("create_topics.topic.name", 0, LATEST, Kind::Str),
    field("create_topics.topic.num_partitions", 0, LATEST, Kind::Int32),
    field("create_topics.topic.replication_factor", 0, LATEST, Kind::Int16),
    field(
        "create_topics.topic.assignments",
        0,
        LATEST,
        Kind::Structs(CREATE_TOPICS_ASSIGNMENT),
    ),
    field(
        "create_topics.topic.configs",
        0,
        LATEST,
        Kind::Structs(CREATE_TOPICS_CONFIG),
    ),
];
const CREATE_TOPICS: &[Field] = &[
    field("create_topics.topics", 0, LATEST, Kind::Structs(CREATE_TOPICS_TOPIC)),
    field("create_topics.timeout_ms", 0, LATEST, Kind::Int32),
    field("create_topics.validate_only", 1, LATEST, Kind::Bool),
];

// ---- DeleteTopics (v1..=6) ----
const DELETE_TOPICS_STATE: &[Field] = &[
    field("delete_topics.topic.name", 6, LATEST, Kind::Str),
    field("delete_topics.topic.topic_id", 6, LATEST, Kind::Uuid),
];
const DELETE_TOPICS: &[Field] = &[
    field("delete_topics.topics", 6, LATEST, Kind::Structs(DELETE_TOPICS_STATE)),
    field("delete_topics.topic_names", 0, 5, Kind::Strs),
    field("delete_topics.timeout_ms", 0, LATEST, Kind::Int32),
];

// ---- CreatePartitions (v0..=3) ----
const CREATE_PARTITIONS_ASSIGNMENT: &[Field] = &[field(
    "create_partitions.assignment.broker_ids",
    0,
    LATEST,
    Kind::Int32s,
)];
const CREATE_PARTITIONS_TOPIC: &[Field] = &[
    field("create_partitions.topic.name", 0, LATEST, Kind::Str),
    field("create_partitions.topic.count", 0, LATEST, Kind::Int32),
    field(
        "create_partitions.topic.assignments",
        0,
        LATEST,
        Kind::Structs(CREATE_PARTITIONS_ASSIGNMENT),
    ),
];
const CREATE_PARTITIONS: &[Field] = &[
    field(
        "create_partitions.topics",
        0,
        LATEST,
        Kind::Structs(CREATE_PARTITIONS_TOPIC),
    ),
    field("create_partitions.timeout_ms", 0, LATEST, Kind::Int32),
    field("create_partitions.validate_only", 0, LATEST, Kind::Bool),
];

// ---- ListOffsets (v1..=7) ----
const LIST_OFFSETS_PARTITION: &[Field] = &[
    field("list_offsets.partition.partition_index", 0, LATEST, Kind::Int32),
    field("list_offsets.partition.current_leader_epoch", 4, LATEST, Kind::Int32),
    field("list_offsets.partition.timestamp", 0, LATEST, Kind::Int64),
];
const LIST_OFFSETS_TOPIC: &[Field] = &[
    field("list_offsets.topic.name", 0, LATEST, Kind::Str),
    field(
        "list_offsets.topic.partitions",
        0,
        LATEST,
        Kind::Structs(LIST_OFFSETS_PARTITION),
    ),
];
const LIST_OFFSETS: &[Field] = &[
    field("list_offsets.replica_id", 0, LATEST, Kind::Int32),
    field("list_offsets.isolation_level", 2, LATEST, Kind::Int8),
    field("list_offsets.topics", 0, LATEST, Kind::Structs(LIST_OFFSETS_TOPIC)),
    field("list_offsets.timeout_ms", 10, LATEST, Kind::Int32),
];

// ---- DescribeConfigs (v1..=4; v0 is decoded by hand) ----
const DESCRIBE_CONFIGS_RESOURCE: &[Field] = &[
    field("describe_configs.resource.resource_type", 0, LATEST, Kind::Int8),
    field("describe_configs.resource.resource_name", 0, LATEST, Kind::Str),
    field("describe_configs.resource.configuration_keys", 0, LATEST, Kind::Strs),
];
const DESCRIBE_CONFIGS: &[Field] = &[
    field(
        "describe_configs.resources",
        0,
        LATEST,
        Kind::Structs(DESCRIBE_CONFIGS_RESOURCE),
    ),
    field("describe_configs.include_synonyms", 1, LATEST, Kind::Bool),
    field("describe_configs.include_documentation", 3, LATEST, Kind::Bool),
];

// ---- DescribeCluster (v0..=1) ----
const DESCRIBE_CLUSTER: &[Field] = &[
    field(
        "describe_cluster.include_cluster_authorized_operations",
        0,
        LATEST,
        Kind::Bool,
    ),
    field("describe_cluster.endpoint_type", 1, LATEST, Kind::Int8),
    field("describe_cluster.include_fenced_brokers", 2, LATEST, Kind::Bool),
];

// ---- DeleteRecords (v0..=2) ----
const DELETE_RECORDS_PARTITION: &[Field] = &[
    field("delete_records.partition.partition_index", 0, LATEST, Kind::Int32),
    field("delete_records.partition.offset", 0, LATEST, Kind::Int64),
];
const DELETE_RECORDS_TOPIC: &[Field] = &[
    field("delete_records.topic.name", 0, LATEST, Kind::Str),
    field(
        "delete_records.topic.partitions",
        0,
        LATEST,
        Kind::Structs(DELETE_RECORDS_PARTITION),
    ),
];
const DELETE_RECORDS: &[Field] = &[
    field("delete_records.topics", 0, LATEST, Kind::Structs(DELETE_RECORDS_TOPIC)),
    field("delete_records.timeout_ms", 0, LATEST, Kind::Int32),
];

// ---- AlterConfigs (v0..=2) and IncrementalAlterConfigs (v0..=1) ----
const ALTER_CONFIGS_CONFIG: &[Field] = &[
    field("alter_configs.config.name", 0, LATEST, Kind::Str),
    field("alter_configs.config.value", 0, LATEST, Kind::Str),
];
const ALTER_CONFIGS_RESOURCE: &[Field] = &[
    field("alter_configs.resource.resource_type", 0, LATEST, Kind::Int8),
    field("alter_configs.resource.resource_name", 0, LATEST, Kind::Str),
    field(
        "alter_configs.resource.configs",
        0,
        LATEST,
        Kind::Structs(ALTER_CONFIGS_CONFIG),
    ),
];
const ALTER_CONFIGS: &[Field] = &[
    field(
        "alter_configs.resources",
        0,
        LATEST,
        Kind::Structs(ALTER_CONFIGS_RESOURCE),
    ),
    field("alter_configs.validate_only", 0, LATEST, Kind::Bool),
];
const INCREMENTAL_ALTER_CONFIGS_CONFIG: &[Field] = &[
    field("incremental_alter_configs.config.name", 0, LATEST, Kind::Str),
    field(
        "incremental_alter_configs.config.config_operation",
        0,
        LATEST,
        Kind::Int8,
    ),
    field("incremental_alter_configs.config.value", 0, LATEST, Kind::Str),
];
const INCREMENTAL_ALTER_CONFIGS_RESOURCE: &[Field] = &[
    field(
        "incremental_alter_configs.resource.resource_type",
        0,
        LATEST,
        Kind::Int8,
    ),
    field("incremental_alter_configs.resource.resource_name", 0, LATEST, Kind::Str),
    field(
        "incremental_alter_configs.resource.configs",
        0,
        LATEST,
        Kind::Structs(INCREMENTAL_ALTER_CONFIGS_CONFIG),
    ),
];
const INCREMENTAL_ALTER_CONFIGS: &[Field] = &[
    field(
        "incremental_alter_configs.resources",
        0,
        LATEST,
        Kind::Structs(INCREMENTAL_ALTER_CONFIGS_RESOURCE),
    ),
    field("incremental_alter_configs.validate_only", 0, LATEST, Kind::Bool),
];

// ---- DescribeLogDirs (v1..=4), DescribeProducers (v0) and
// ListPartitionReassignments (v0): topics with partition index arrays ----
const TOPIC_PARTITION_INDEXES: &[Field] = &[
    field("topic.name", 0, LATEST, Kind::Str),
    field("topic.partitions", 0, LATEST, Kind::Int32s),
];
const DESCRIBE_LOG_DIRS: &[Field] = &[field(
    "describe_log_dirs.topics",
    0,
    LATEST,
    Kind::Structs(TOPIC_PARTITION_INDEXES),
)];
const DESCRIBE_PRODUCERS: &[Field] = &[field(
    "describe_producers.topics",
    0,
    LATEST,
    Kind::Structs(TOPIC_PARTITION_INDEXES),
)];
const LIST_PARTITION_REASSIGNMENTS: &[Field] = &[
    field("list_partition_reassignments.timeout_ms", 0, LATEST, Kind::Int32),
    field(
        "list_partition_reassignments.topics",
        0,
        LATEST,
        Kind::Structs(TOPIC_PARTITION_INDEXES),
    ),
];

// ---- ElectLeaders (v0..=2) ----
const ELECT_LEADERS: &[Field] = &[
    field("elect_leaders.election_type", 1, LATEST, Kind::Int8),
    field(
        "elect_leaders.topic_partitions",
        0,
        LATEST,
        Kind::Structs(TOPIC_PARTITION_INDEXES),
    ),
    field("elect_leaders.timeout_ms", 0, LATEST, Kind::Int32),
];

// ---- AlterPartitionReassignments (v0..=1) ----
const REASSIGNABLE_PARTITION: &[Field] = &[
    field(
        "alter_partition_reassignments.partition.partition_index",
        0,
        LATEST,
        Kind::Int32,
    ),
    field(
        "alter_partition_reassignments.partition.replicas",
        0,
        LATEST,
        Kind::Int32s,
    ),
];
const REASSIGNABLE_TOPIC: &[Field] = &[
    field("alter_partition_reassignments.topic.name", 0, LATEST, Kind::Str),
    field(
        "alter_partition_reassignments.topic.partitions",
        0,
        LATEST,
        Kind::Structs(REASSIGNABLE_PARTITION),
    ),
];
const ALTER_PARTITION_REASSIGNMENTS: &[Field] = &[
    field("alter_partition_reassignments.timeout_ms", 0, LATEST, Kind::Int32),
    field(
        "alter_partition_reassignments.allow_replication_factor_change",
        1,
        LATEST,
        Kind::Bool,
    ),
    field(
        "alter_partition_reassignments.topics",
        0,
        LATEST,
        Kind::Structs(REASSIGNABLE_TOPIC),
    ),
];

// ---- Transactions: AddPartitionsToTxn, AddOffsetsToTxn, EndTxn,
// TxnOffsetCommit (v0..=3) ----
const ADD_PARTITIONS_TO_TXN: &[Field] = &[
    field("add_partitions_to_txn.transactional_id", 0, 3, Kind::Str),
    field("add_partitions_to_txn.producer_id", 0, 3, Kind::Int64),
    field("add_partitions_to_txn.producer_epoch", 0, 3, Kind::Int16),
    field(
        "add_partitions_to_txn.topics",
        0,
        3,
        Kind::Structs(TOPIC_PARTITION_INDEXES),
    ),
];
const ADD_OFFSETS_TO_TXN: &[Field] = &[
    field("add_offsets_to_txn.transactional_id", 0, LATEST, Kind::Str),
    field("add_offsets_to_txn.producer_id", 0, LATEST, Kind::Int64),
    field("add_offsets_to_txn.producer_epoch", 0, LATEST, Kind::Int16),
    field("add_offsets_to_txn.group_id", 0, LATEST, Kind::Str),
];
const END_TXN: &[Field] = &[
    field("end_txn.transactional_id", 0, LATEST, Kind::Str),
    field("end_txn.producer_id", 0, LATEST, Kind::Int64),
    field("end_txn.producer_epoch", 0, LATEST, Kind::Int16),
    field("end_txn.committed", 0, LATEST, Kind::Bool),
];
const TXN_OFFSET_COMMIT_PARTITION: &[Field] = &[
    field("txn_offset_commit.partition.partition_index", 0, LATEST, Kind::Int32),
    field("txn_offset_commit.partition.committed_offset", 0, LATEST, Kind::Int64),
    field(
        "txn_offset_commit.partition.committed_leader_epoch",
        2,
        LATEST,
        Kind::Int32,
    ),
    field("txn_offset_commit.partition.committed_metadata", 0, LATEST, Kind::Str),
];
const TXN_OFFSET_COMMIT_TOPIC: &[Field] = &[
    field("txn_offset_commit.topic.name", 0, LATEST, Kind::Str),
    field(
        "txn_offset_commit.topic.partitions",
        0,
        LATEST,
        Kind::Structs(TXN_OFFSET_COMMIT_PARTITION),
    ),
];
const TXN_OFFSET_COMMIT: &[Field] = &[
    field("txn_offset_commit.transactional_id", 0, LATEST, Kind::Str),
    field("txn_offset_commit.group_id", 0, LATEST, Kind::Str),
    field("txn_offset_commit.producer_id", 0, LATEST, Kind::Int64),
    field("txn_offset_commit.producer_epoch", 0, LATEST, Kind::Int16),
    field("txn_offset_commit.generation_id", 3, LATEST, Kind::Int32),
    field("txn_offset_commit.member_id", 3, LATEST, Kind::Str),
    field("txn_offset_commit.group_instance_id", 3, LATEST, Kind::Str),
    field(
        "txn_offset_commit.topics",
        0,
        LATEST,
        Kind::Structs(TXN_OFFSET_COMMIT_TOPIC),
    ),
];

// ---- WriteTxnMarkers (v1), request and response ----
const WRITE_TXN_MARKER: &[Field] = &[
    field("write_txn_markers.marker.producer_id", 0, LATEST, Kind::Int64),
    field("write_txn_markers.marker.producer_epoch", 0, LATEST, Kind::Int16),
    field("write_txn_markers.marker.transaction_result", 0, LATEST, Kind::Bool),
    field(
        "write_txn_markers.marker.topics",
        0,
        LATEST,
        Kind::Structs(TOPIC_PARTITION_INDEXES),
    ),
    field("write_txn_markers.marker.coordinator_epoch", 0, LATEST, Kind::Int32),
];
const WRITE_TXN_MARKERS: &[Field] = &[field(
    "write_txn_markers.markers",
    0,
    LATEST,
    Kind::Structs(WRITE_TXN_MARKER),
)];
const WRITE_TXN_MARKERS_RESPONSE_PARTITION: &[Field] = &[
    field(
        "write_txn_markers_response.partition.partition_index",
        0,
        LATEST,
        Kind::Int32,
    ),
    field(
        "write_txn_markers_response.partition.error_code",
        0,
        LATEST,
        Kind::Int16,
    ),
];
const WRITE_TXN_MARKERS_RESPONSE_TOPIC: &[Field] = &[
    field("write_txn_markers_response.topic.name", 0, LATEST, Kind::Str),
    field(
        "write_txn_markers_response.topic.partitions",
        0,
        LATEST,
        Kind::Structs(WRITE_TXN_MARKERS_RESPONSE_PARTITION),
    ),
];
const WRITE_TXN_MARKERS_RESPONSE_MARKER: &[Field] = &[
    field("write_txn_markers_response.marker.producer_id", 0, LATEST, Kind::Int64),
    field(
        "write_txn_markers_response.marker.topics",
        0,
        LATEST,
        Kind::Structs(WRITE_TXN_MARKERS_RESPONSE_TOPIC),
    ),
];
const WRITE_TXN_MARKERS_RESPONSE: &[Field] = &[field(
    "write_txn_markers_response.markers",
    0,
    LATEST,
    Kind::Structs(WRITE_TXN_MARKERS_RESPONSE_MARKER),
)];

// ---- DescribeTransactions (v0), ListTransactions (v0..=1) ----
const DESCRIBE_TRANSACTIONS: &[Field] = &[field("describe_transactions.transactional_ids", 0, LATEST, Kind::Strs)];
const LIST_TRANSACTIONS: &[Field] = &[
    field("list_transactions.state_filters", 0, LATEST, Kind::Strs),
    field("list_transactions.producer_id_filters", 0, LATEST, Kind::Int64s),
    field("list_transactions.duration_filter", 1, LATEST, Kind::Int64),
];

// ---- SaslHandshake (v0..=1) ----
const SASL_HANDSHAKE: &[Field] = &[field("sasl_handshake.mechanism", 0, LATEST, Kind::Str)];

// ---- SaslAuthenticate (v0..=2) ----
const SASL_AUTHENTICATE: &[Field] = &[field("sasl_authenticate.auth_bytes", 0, LATEST, Kind::Bytes)];

// ---- DescribeAcls, DeleteAcls filters (v1..=3) ----
const ACL_FILTER: &[Field] = &[
    field("acl_filter.resource_type_filter", 0, LATEST, Kind::Int8),
    field("acl_filter.resource_name_filter", 0, LATEST, Kind::Str),
    field("acl_filter.pattern_type_filter", 1, LATEST, Kind::Int8),
    field("acl_filter.principal_filter", 0, LATEST, Kind::Str),
    field("acl_filter.host_filter", 0, LATEST, Kind::Str),
    field("acl_filter.operation", 0, LATEST, Kind::Int8),
    field("acl_filter.permission_type", 0, LATEST, Kind::Int8),
];
const DELETE_ACLS: &[Field] = &[field("delete_acls.filters", 0, LATEST, Kind::Structs(ACL_FILTER))];

// ---- CreateAcls (v1..=3) ----
const CREATE_ACLS_CREATION: &[Field] = &[
    field("create_acls.creation.resource_type", 0, LATEST, Kind::Int8),
    field("create_acls.creation.resource_name", 0, LATEST, Kind::Str),
    field("create_acls.creation.resource_pattern_type", 1, LATEST, Kind::Int8),
    field("create_acls.creation.principal", 0, LATEST, Kind::Str),
    field("create_acls.creation.host", 0, LATEST, Kind::Str),
    field("create_acls.creation.operation", 0, LATEST, Kind::Int8),
    field("create_acls.creation.permission_type", 0, LATEST, Kind::Int8),
];
const CREATE_ACLS: &[Field] = &[field(
    "create_acls.creations",
    0,
    LATEST,
    Kind::Structs(CREATE_ACLS_CREATION),
)];

// ---- DescribeUserScramCredentials (v0) ----
const DESCRIBE_USER_SCRAM_USER: &[Field] = &[field("describe_user_scram.user.name", 0, LATEST, Kind::Str)];
const DESCRIBE_USER_SCRAM_CREDENTIALS: &[Field] = &[field(
    "describe_user_scram.users",
    0,
    LATEST,
    Kind::Structs(DESCRIBE_USER_SCRAM_USER),
)];

// ---- AlterUserScramCredentials (v0) ----
const ALTER_USER_SCRAM_DELETION: &[Field] = &[
    field("alter_user_scram.deletion.name", 0, LATEST, Kind::Str),
    field("alter_user_scram.deletion.mechanism", 0, LATEST, Kind::Int8),
];
const ALTER_USER_SCRAM_UPSERTION: &[Field] = &[
    field("alter_user_scram.upsertion.name", 0, LATEST, Kind::Str),
    field("alter_user_scram.upsertion.mechanism", 0, LATEST, Kind::Int8),
    field("alter_user_scram.upsertion.iterations", 0, LATEST, Kind::Int32),
    field("alter_user_scram.upsertion.salt", 0, LATEST, Kind::Bytes),
    field("alter_user_scram.upsertion.salted_password", 0, LATEST, Kind::Bytes),
];
const ALTER_USER_SCRAM_CREDENTIALS: &[Field] = &[
    field(
        "alter_user_scram.deletions",
        0,
        LATEST,
        Kind::Structs(ALTER_USER_SCRAM_DELETION),
    ),
    field(
        "alter_user_scram.upsertions",
        0,
        LATEST,
        Kind::Structs(ALTER_USER_SCRAM_UPSERTION),
    ),
];

// ---- InitProducerId (v0..=4) ----
const INIT_PRODUCER_ID: &[Field] = &[
    field("init_producer_id.transactional_id", 0, LATEST, Kind::Str),
    field("init_producer_id.transaction_timeout_ms", 0, LATEST, Kind::Int32),
    field("init_producer_id.producer_id", 3, LATEST, Kind::Int64),
    field("init_producer_id.producer_epoch", 3, LATEST, Kind::Int16),
];

// ---- Fetch (v4..=12) ----
const FETCH_PARTITION: &[Field] = &[
    field("fetch.partition.partition", 0, LATEST, Kind::Int32),
    field("fetch.partition.current_leader_epoch", 9, LATEST, Kind::Int32),
    field("fetch.partition.fetch_offset", 0, LATEST, Kind::Int64),
    field("fetch.partition.last_fetched_epoch", 12, LATEST, Kind::Int32),
    field("fetch.partition.log_start_offset", 5, LATEST, Kind::Int64),
    field("fetch.partition.partition_max_bytes", 0, LATEST, Kind::Int32),
];
const FETCH_TOPIC: &[Field] = &[
    field("fetch.topic.topic", 0, 12, Kind::Str),
    field("fetch.topic.topic_id", 13, LATEST, Kind::Uuid),
    field("fetch.topic.partitions", 0, LATEST, Kind::Structs(FETCH_PARTITION)),
];
const FETCH_FORGOTTEN_TOPIC: &[Field] = &[
    field("fetch.forgotten.topic", 7, 12, Kind::Str),
    field("fetch.forgotten.topic_id", 13, LATEST, Kind::Uuid),
    field("fetch.forgotten.partitions", 7, LATEST, Kind::Int32s),
];
const FETCH: &[Field] = &[
    field("fetch.replica_id", 0, 14, Kind::Int32),
    field("fetch.max_wait_ms", 0, LATEST, Kind::Int32),
    field("fetch.min_bytes", 0, LATEST, Kind::Int32),
    field("fetch.max_bytes", 3, LATEST, Kind::Int32),
    field("fetch.isolation_level", 4, LATEST, Kind::Int8),
    field("fetch.session_id", 7, LATEST, Kind::Int32),
    field("fetch.session_epoch", 7, LATEST, Kind::Int32),
    field("fetch.topics", 0, LATEST, Kind::Structs(FETCH_TOPIC)),
    field(
        "fetch.forgotten_topics_data",
        7,
        LATEST,
        Kind::Structs(FETCH_FORGOTTEN_TOPIC),
    ),
    field("fetch.rack_id", 11, LATEST, Kind::Str),
];

// ---- FindCoordinator (v0..=4) ----
const FIND_COORDINATOR: &[Field] = &[
    field("find_coordinator.key", 0, 3, Kind::Str),
    field("find_coordinator.key_type", 1, LATEST, Kind::Int8),
    field("find_coordinator.coordinator_keys", 4, LATEST, Kind::Strs),
];

// ---- JoinGroup (v0..=7) ----
const JOIN_GROUP_PROTOCOL: &[Field] = &[
    field("join_group.protocol.name", 0, LATEST, Kind::Str),
    field("join_group.protocol.metadata", 0, LATEST, Kind::Bytes),
];
const JOIN_GROUP: &[Field] = &[
    field("join_group.group_id", 0, LATEST, Kind::Str),
    field("join_group.session_timeout_ms", 0, LATEST, Kind::Int32),
    field("join_group.rebalance_timeout_ms", 1, LATEST, Kind::Int32),
    field("join_group.member_id", 0, LATEST, Kind::Str),
    field("join_group.group_instance_id", 5, LATEST, Kind::Str),
    field("join_group.protocol_type", 0, LATEST, Kind::Str),
    field("join_group.protocols", 0, LATEST, Kind::Structs(JOIN_GROUP_PROTOCOL)),
    field("join_group.reason", 8, LATEST, Kind::Str),
];

// ---- SyncGroup (v0..=5) ----
const SYNC_GROUP_ASSIGNMENT: &[Field] = &[
    field("sync_group.assignment.member_id", 0, LATEST, Kind::Str),
    field("sync_group.assignment.assignment", 0, LATEST, Kind::Bytes),
];
const SYNC_GROUP: &[Field] = &[
    field("sync_group.group_id", 0, LATEST, Kind::Str),
    field("sync_group.generation_id", 0, LATEST, Kind::Int32),
    field("sync_group.member_id", 0, LATEST, Kind::Str),
    field("sync_group.group_instance_id", 3, LATEST, Kind::Str),
    field("sync_group.protocol_type", 5, LATEST, Kind::Str),
    field("sync_group.protocol_name", 5, LATEST, Kind::Str),
    field(
        "sync_group.assignments",
        0,
        LATEST,
        Kind::Structs(SYNC_GROUP_ASSIGNMENT),
    ),
];

// ---- Heartbeat (v0..=4) ----
const HEARTBEAT: &[Field] = &[
    field("heartbeat.group_id", 0, LATEST, Kind::Str),
    field("heartbeat.generation_id", 0, LATEST, Kind::Int32),
    field("heartbeat.member_id", 0, LATEST, Kind::Str),
    field("heartbeat.group_instance_id", 3, LATEST, Kind::Str),
];

// ---- LeaveGroup (v0..=5) ----
const LEAVE_GROUP_MEMBER: &[Field] = &[
    field("leave_group.member.member_id", 3, LATEST, Kind::Str),
    field("leave_group.member.group_instance_id", 3, LATEST, Kind::Str),
    field("leave_group.member.reason", 5, LATEST, Kind::Str),
];
const LEAVE_GROUP: &[Field] = &[
    field("leave_group.group_id", 0, LATEST, Kind::Str),
    field("leave_group.member_id", 0, 2, Kind::Str),
    field("leave_group.members", 3, LATEST, Kind::Structs(LEAVE_GROUP_MEMBER)),
];

// ---- OffsetCommit (v2..=8) ----
const OFFSET_COMMIT_PARTITION: &[Field] = &[
    field("offset_commit.partition.partition_index", 0, LATEST, Kind::Int32),
    field("offset_commit.partition.committed_offset", 0, LATEST, Kind::Int64),
    field("offset_commit.partition.committed_leader_epoch", 6, LATEST, Kind::Int32),
    field("offset_commit.partition.commit_timestamp", 1, 1, Kind::Int64),
    field("offset_commit.partition.committed_metadata", 0, LATEST, Kind::Str),
];
const OFFSET_COMMIT_TOPIC: &[Field] = &[
    field("offset_commit.topic.name", 0, LATEST, Kind::Str),
    field(
        "offset_commit.topic.partitions",
        0,
        LATEST,
        Kind::Structs(OFFSET_COMMIT_PARTITION),
    ),
];
const OFFSET_COMMIT: &[Field] = &[
    field("offset_commit.group_id", 0, LATEST, Kind::Str),
    field("offset_commit.generation_id", 1, LATEST, Kind::Int32),
    field("offset_commit.member_id", 1, LATEST, Kind::Str),
    field("offset_commit.group_instance_id", 7, LATEST, Kind::Str),
    field("offset_commit.retention_time_ms", 2, 4, Kind::Int64),
    field("offset_commit.topics", 0, LATEST, Kind::Structs(OFFSET_COMMIT_TOPIC)),
];

// ---- OffsetFetch (v1..=7) ----
const OFFSET_FETCH_TOPIC: &[Field] = &[
    field("offset_fetch.topic.name", 0, 7, Kind::Str),
    field("offset_fetch.topic.partition_indexes", 0, 7, Kind::Int32s),
];
const OFFSET_FETCH: &[Field] = &[
    field("offset_fetch.group_id", 0, 7, Kind::Str),
    field("offset_fetch.topics", 0, 7, Kind::Structs(OFFSET_FETCH_TOPIC)),
    field("offset_fetch.require_stable", 7, LATEST, Kind::Bool),
];

// ---- DescribeGroups (v0..=5) ----
const DESCRIBE_GROUPS: &[Field] = &[
    field("describe_groups.groups", 0, LATEST, Kind::Strs),
    field("describe_groups.include_authorized_operations", 3, LATEST, Kind::Bool),
];

// ---- ListGroups (v0..=4) ----
const LIST_GROUPS: &[Field] = &[
    field("list_groups.states_filter", 4, LATEST, Kind::Strs),
    field("list_groups.types_filter", 5, LATEST, Kind::Strs),
];

// ---- DeleteGroups (v0..=2) ----
const DELETE_GROUPS: &[Field] = &[field("delete_groups.groups_names", 0, LATEST, Kind::Strs)];

// ---- OffsetDelete (v0) ----
const OFFSET_DELETE_PARTITION: &[Field] = &[field("offset_delete.partition.partition_index", 0, LATEST, Kind::Int32)];
const OFFSET_DELETE_TOPIC: &[Field] = &[
    field("offset_delete.topic.name", 0, LATEST, Kind::Str),
    field(
        "offset_delete.topic.partitions",
        0,
        LATEST,
        Kind::Structs(OFFSET_DELETE_PARTITION),
    ),
];
const OFFSET_DELETE: &[Field] = &[
    field("offset_delete.group_id", 0, LATEST, Kind::Str),
    field("offset_delete.topics", 0, LATEST, Kind::Structs(OFFSET_DELETE_TOPIC)),
];

// ---- OffsetForLeaderEpoch (v2..=4) ----
const OFFSET_FOR_LEADER_EPOCH_PARTITION: &[Field] = &[
    field("offset_for_leader_epoch.partition.partition", 0, LATEST, Kind::Int32),
    field(
        "offset_for_leader_epoch.partition.current_leader_epoch",
        2,
        LATEST,
        Kind::Int32,
    ),
    field("offset_for_leader_epoch.partition.leader_epoch", 0, LATEST, Kind::Int32),
];
const OFFSET_FOR_LEADER_EPOCH_TOPIC: &[Field] = &[
    field("offset_for_leader_epoch.topic.topic", 0, LATEST, Kind::Str),
    field(
        "offset_for_leader_epoch.topic.partitions",
        0,
        LATEST,
        Kind::Structs(OFFSET_FOR_LEADER_EPOCH_PARTITION),
    ),
];
const OFFSET_FOR_LEADER_EPOCH: &[Field] = &[
    field("offset_for_leader_epoch.replica_id", 3, LATEST, Kind::Int32),
    field(
        "offset_for_leader_epoch.topics",
        0,
        LATEST,
        Kind::Structs(OFFSET_FOR_LEADER_EPOCH_TOPIC),
    ),
];

// ---- Responses a follower reads from its leader ----
// Fetch (v4..=12) and OffsetForLeaderEpoch (v2..=4) responses, which the
// engine's replica fetcher decodes with kafka-protocol: a peer's frame must
// pass the same walk as a client's before it is decoded.
const FETCH_RESPONSE_ABORTED: &[Field] = &[
    field("fetch_response.aborted.producer_id", 4, LATEST, Kind::Int64),
    field("fetch_response.aborted.first_offset", 4, LATEST, Kind::Int64),
];
const FETCH_RESPONSE_PARTITION: &[Field] = &[
    field("fetch_response.partition.partition_index", 0, LATEST, Kind::Int32),
    field("fetch_response.partition.error_code", 0, LATEST, Kind::Int16),
    field("fetch_response.partition.high_watermark", 0, LATEST, Kind::Int64),
    field("fetch_response.partition.last_stable_offset", 4, LATEST, Kind::Int64),
    field("fetch_response.partition.log_start_offset", 5, LATEST, Kind::Int64),
    field(
        "fetch_response.partition.aborted_transactions",
        4,
        LATEST,
        Kind::Structs(FETCH_RESPONSE_ABORTED),
    ),
    field(
        "fetch_response.partition.preferred_read_replica",
        11,
        LATEST,
        Kind::Int32,
    ),
    field("fetch_response.partition.records", 0, LATEST, Kind::Bytes),
];
const FETCH_RESPONSE_TOPIC: &[Field] = &[
    field("fetch_response.topic.topic", 0, 12, Kind::Str),
    field("fetch_response.topic.topic_id", 13, LATEST, Kind::Uuid),
    field(
        "fetch_response.topic.partitions",
        0,
        LATEST,
        Kind::Structs(FETCH_RESPONSE_PARTITION),
    ),
];
const FETCH_RESPONSE: &[Field] = &[
    field("fetch_response.throttle_time_ms", 1, LATEST, Kind::Int32),
    field("fetch_response.error_code", 7, LATEST, Kind::Int16),
    field("fetch_response.session_id", 7, LATEST, Kind::Int32),
    field(
        "fetch_response.responses",
        0,
        LATEST,
        Kind::Structs(FETCH_RESPONSE_TOPIC),
    ),
];
const OFFSET_FOR_LEADER_EPOCH_RESPONSE_PARTITION: &[Field] = &[
    field(
        "offset_for_leader_epoch_response.partition.error_code",
        0,
        LATEST,
        Kind::Int16,
    ),
    field(
        "offset_for_leader_epoch_response.partition.partition",
        0,
        LATEST,
        Kind::Int32,
    ),
    field(
        "offset_for_leader_epoch_response.partition.leader_epoch",
        1,
        LATEST,
        Kind::Int32,
    ),
    field(
        "offset_for_leader_epoch_response.partition.end_offset",
        0,
        LATEST,
        Kind::Int64,
    ),
];
const OFFSET_FOR_LEADER_EPOCH_RESPONSE_TOPIC: &[Field] = &[
    field("offset_for_leader_epoch_response.topic.topic", 0, LATEST, Kind::Str),
    field(
        "offset_for_leader_epoch_response.topic.partitions",
        0,
        LATEST,
        Kind::Structs(OFFSET_FOR_LEADER_EPOCH_RESPONSE_PARTITION),
    ),
];
const OFFSET_FOR_LEADER_EPOCH_RESPONSE: &[Field] = &[
    field(
        "offset_for_leader_epoch_response.throttle_time_ms",
        2,
        LATEST,
        Kind::Int32,
    ),
    field(
        "offset_for_leader_epoch_response.topics",
        0,
        LATEST,
        Kind::Structs(OFFSET_FOR_LEADER_EPOCH_RESPONSE_TOPIC),
    ),
];

/// The schema of `api_key`'s response body, for the responses a follower
/// reads.
/// SaslHandshake's answer, as a follower logging in to its leader reads it.
const SASL_HANDSHAKE_RESPONSE: &[Field] = &[
    field("sasl_handshake_response.error_code", 0, LATEST, Kind::Int16),
    field("sasl_handshake_response.mechanisms", 0, LATEST, Kind::Strs),
];
/// SaslAuthenticate's answer.
const SASL_AUTHENTICATE_RESPONSE: &[Field] = &[
    field("sasl_authenticate_response.error_code", 0, LATEST, Kind::Int16),
    field("sasl_authenticate_response.error_message", 0, LATEST, Kind::Str),
    field("sasl_authenticate_response.auth_bytes", 0, LATEST, Kind::Bytes),
    field("sasl_authenticate_response.session_lifetime_ms", 1, LATEST, Kind::Int64),
];

/// Whether responses of `api_key` have a schema [`check_response`] walks.
pub(crate) fn has_response_schema(api_key: i16) -> bool {
    response_schema(api_key).is_some()
}

fn response_schema(api_key: i16) -> Option<&'static [Field]> {
    match api_key {
        apis::FETCH => Some(FETCH_RESPONSE),
        apis::WRITE_TXN_MARKERS => Some(WRITE_TXN_MARKERS_RESPONSE),
        apis::OFFSET_FOR_LEADER_EPOCH => Some(OFFSET_FOR_LEADER_EPOCH_RESPONSE),
        apis::SASL_HANDSHAKE => Some(SASL_HANDSHAKE_RESPONSE),
        apis::SASL_AUTHENTICATE => Some(SASL_AUTHENTICATE_RESPONSE),
        _ => None,
    }
}

/// The schema of `api_key`'s request body, for the APIs kafka-protocol decodes.
fn schema(api_key: i16) -> Option<&'static [Field]> {
    match api_key {
        apis::FETCH => Some(FETCH),
        apis::LIST_OFFSETS => Some(LIST_OFFSETS),
        apis::METADATA => Some(METADATA),
        apis::API_VERSIONS => Some(API_VERSIONS),
        apis::CREATE_TOPICS => Some(CREATE_TOPICS),
        apis::DELETE_TOPICS => Some(DELETE_TOPICS),
        apis::INIT_PRODUCER_ID => Some(INIT_PRODUCER_ID),
        apis::DESCRIBE_CONFIGS => Some(DESCRIBE_CONFIGS),
        apis::CREATE_PARTITIONS => Some(CREATE_PARTITIONS),
        apis::DESCRIBE_CLUSTER => Some(DESCRIBE_CLUSTER),
        apis::FIND_COORDINATOR => Some(FIND_COORDINATOR),
        apis::JOIN_GROUP => Some(JOIN_GROUP),
        apis::SYNC_GROUP => Some(SYNC_GROUP),
        apis::HEARTBEAT => Some(HEARTBEAT),
        apis::LEAVE_GROUP => Some(LEAVE_GROUP),
        apis::OFFSET_COMMIT => Some(OFFSET_COMMIT),
        apis::OFFSET_FETCH => Some(OFFSET_FETCH),
        apis::DESCRIBE_GROUPS => Some(DESCRIBE_GROUPS),
        apis::LIST_GROUPS => Some(LIST_GROUPS),
        apis::DELETE_GROUPS => Some(DELETE_GROUPS),
        apis::OFFSET_DELETE => Some(OFFSET_DELETE),
        apis::OFFSET_FOR_LEADER_EPOCH => Some(OFFSET_FOR_LEADER_EPOCH),
        apis::SASL_HANDSHAKE => Some(SASL_HANDSHAKE),
        apis::SASL_AUTHENTICATE => Some(SASL_AUTHENTICATE),
        apis::DELETE_RECORDS => Some(DELETE_RECORDS),
        apis::ALTER_CONFIGS => Some(ALTER_CONFIGS),
        apis::DESCRIBE_LOG_DIRS => Some(DESCRIBE_LOG_DIRS),
        apis::ELECT_LEADERS => Some(ELECT_LEADERS),
        apis::INCREMENTAL_ALTER_CONFIGS => Some(INCREMENTAL_ALTER_CONFIGS),
        apis::ALTER_PARTITION_REASSIGNMENTS => Some(ALTER_PARTITION_REASSIGNMENTS),
        apis::LIST_PARTITION_REASSIGNMENTS => Some(LIST_PARTITION_REASSIGNMENTS),
        apis::DESCRIBE_PRODUCERS => Some(DESCRIBE_PRODUCERS),
        apis::DESCRIBE_ACLS => Some(ACL_FILTER),
        apis::CREATE_ACLS => Some(CREATE_ACLS),
        apis::DELETE_ACLS => Some(DELETE_ACLS),
        apis::DESCRIBE_USER_SCRAM_CREDENTIALS => Some(DESCRIBE_USER_SCRAM_CREDENTIALS),
        apis::ALTER_USER_SCRAM_CREDENTIALS => Some(ALTER_USER_SCRAM_CREDENTIALS),
        apis::ADD_PARTITIONS_TO_TXN => Some(ADD_PARTITIONS_TO_TXN),
        apis::ADD_OFFSETS_TO_TXN => Some(ADD_OFFSETS_TO_TXN),
        apis::END_TXN => Some(END_TXN),
        apis::TXN_OFFSET_COMMIT => Some(TXN_OFFSET_COMMIT),
        apis::WRITE_TXN_MARKERS => Some(WRITE_TXN_MARKERS),
        apis::DESCRIBE_TRANSACTIONS => Some(DESCRIBE_TRANSACTIONS),
        apis::LIST_TRANSACTIONS => Some(LIST_TRANSACTIONS),
        _ => None,
    }
}

/// Nesting bound: the deepest schema above is three levels; anything deeper
/// is a bug in a table, caught by the `assert!` in `walk_struct`.
const DEPTH_MAX: usize = 4;

/// Walks `body` as a request of `api_key` at `api_version`, checking every
/// length and count, and that it names at most `entries_max` entries (array
/// items) in all; returns the bytes consumed. Trailing bytes are allowed
/// (kafka-protocol ignores them, and so does Kafka).
pub(crate) fn check_request(
    api_key: i16,
    api_version: i16,
    body: &Bytes,
    entries_max: usize,
) -> Result<usize, DecodeError> {
    let Some(fields) = schema(api_key) else {
        return Err(DecodeError::Invalid {
            field: "api_key",
            reason: "no request schema for this API",
        });
    };
    walk_body(fields, api_key, api_version, body, entries_max)
}

/// Walks `body` as a response of `api_key` at `api_version` (after its
/// response header) as [`check_request`] walks requests: every length and
/// count checked against the bytes left, at most `entries_max` entries in
/// all, nothing allocated. For the responses an engine reads from another
/// broker (Fetch, OffsetForLeaderEpoch) before kafka-protocol decodes them;
/// any other API is refused. Returns the bytes consumed.
pub fn check_response(api_key: i16, api_version: i16, body: &Bytes, entries_max: usize) -> Result<usize, DecodeError> {
    let Some(fields) = response_schema(api_key) else {
        return Err(DecodeError::Invalid {
            field: "api_key",
            reason: "no response schema for this API",
        });
    };
    walk_body(fields, api_key, api_version, body, entries_max)
}

fn walk_body(
    fields: &'static [Field],
    api_key: i16,
    api_version: i16,
    body: &Bytes,
    entries_max: usize,
) -> Result<usize, DecodeError> {
    let encoding = Encoding::from_flexible(apis::is_flexible(api_key, api_version));
    let mut cursor = Cursor::new(body);
    let mut walk = Walk {
        version: api_version,
        encoding,
        entries: 0,
        entries_max,
    };
    walk_struct(&mut cursor, fields, &mut walk, 0)?;
    assert!(walk.entries <= entries_max, "the walk stops at the entry bound");
    Ok(cursor.position())
}

/// What one walk reads with, and the entries counted so far.
struct Walk {
    version: i16,
    encoding: Encoding,
    entries: usize,
    entries_max: usize,
}

impl Walk {
    fn count(&mut self, count: usize, field: &'static str) -> Result<(), DecodeError> {
        self.entries = crate::cursor::count_entries(self.entries, count, self.entries_max, field)?;
        Ok(())
    }
}

fn walk_struct(
    cursor: &mut Cursor<'_>,
    fields: &'static [Field],
    walk: &mut Walk,
    depth: usize,
) -> Result<(), DecodeError> {
    let (version, encoding) = (walk.version, walk.encoding);
    assert!(depth < DEPTH_MAX, "schema nesting deeper than DEPTH_MAX");
    for field in fields.iter().filter(|field| (field.min..=field.max).contains(&version)) {
        let name = field.name;
        match field.kind {
            Kind::Int8 | Kind::Bool => cursor.skip(1, name)?,
            Kind::Int16 => cursor.skip(2, name)?,
            Kind::Int32 => cursor.skip(4, name)?,
            Kind::Int64 => cursor.skip(8, name)?,
            Kind::Uuid => cursor.skip(16, name)?,
            Kind::Str => {
                cursor.nullable_str(encoding, name)?;
            }
            Kind::Int32s => {
                let count = cursor.nullable_array_len(encoding, 4, name)?.unwrap_or(0);
                cursor.skip(count.saturating_mul(4), name)?;
            }
            Kind::Int64s => {
                let count = cursor.nullable_array_len(encoding, 8, name)?.unwrap_or(0);
                cursor.skip(count.saturating_mul(8), name)?;
            }
            Kind::Bytes => {
                cursor.nullable_bytes(encoding, name)?;
            }
            Kind::Strs => {
                let count = cursor.nullable_array_len(encoding, 1, name)?.unwrap_or(0);
                walk.count(count, name)?;
                for _ in 0..count {
                    cursor.nullable_str(encoding, name)?;
                }
            }
            Kind::Structs(item_fields) => {
                let count = cursor.nullable_array_len(encoding, 1, name)?.unwrap_or(0);
                walk.count(count, name)?;
                for _ in 0..count {
                    walk_struct(cursor, item_fields, walk, depth + 1)?;
                }
            }
        }
    }
    cursor.skip_tagged_fields(encoding, "tagged_fields")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use bytes::BytesMut;
    use kafka_protocol::{
        messages::{
            fetch_response::{FetchableTopicResponse, PartitionData},
            offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult},
            FetchResponse, OffsetForLeaderEpochResponse, SaslAuthenticateResponse, SaslHandshakeResponse, TopicName,
        },
        protocol::{Encodable, StrBytes},
    };

    use super::*;

    fn encoded<M: Encodable>(message: &M, version: i16) -> Bytes {
        let mut out = BytesMut::new();
        message.encode(&mut out, version).unwrap();
        out.freeze()
    }

    /// Every answer a follower reads, as kafka-protocol encodes it, walks to
    /// its last byte.
    #[test]
    fn a_followers_answers_walk_whole() {
        let mut handshake = SaslHandshakeResponse::default();
        handshake.mechanisms = vec![
            StrBytes::from_static_str("PLAIN"),
            StrBytes::from_static_str("SCRAM-SHA-512"),
        ];
        let mut authenticate = SaslAuthenticateResponse::default();
        authenticate.error_message = Some(StrBytes::from_static_str("no"));
        authenticate.auth_bytes = Bytes::from_static(b"r=abc,s=c2FsdA==,i=4096");
        authenticate.session_lifetime_ms = 3_600_000;
        let mut partition = PartitionData::default();
        partition.records = Some(Bytes::from_static(&[7; 40]));
        let mut topic = FetchableTopicResponse::default();
        topic.topic = TopicName(StrBytes::from_static_str("t"));
        topic.partitions = vec![partition];
        let mut fetch = FetchResponse::default();
        fetch.responses = vec![topic];
        let mut epoch_topic = OffsetForLeaderTopicResult::default();
        epoch_topic.topic = TopicName(StrBytes::from_static_str("t"));
        epoch_topic.partitions = vec![EpochEndOffset::default(); 3];
        let mut epochs = OffsetForLeaderEpochResponse::default();
        epochs.topics = vec![epoch_topic];
        let cases: Vec<(i16, i16, Bytes)> = vec![
            (apis::SASL_HANDSHAKE, 1, encoded(&handshake, 1)),
            (apis::SASL_AUTHENTICATE, 0, encoded(&authenticate, 0)),
            (apis::SASL_AUTHENTICATE, 2, encoded(&authenticate, 2)),
            (apis::FETCH, 12, encoded(&fetch, 12)),
            (apis::FETCH, 4, encoded(&fetch, 4)),
            (apis::OFFSET_FOR_LEADER_EPOCH, 3, encoded(&epochs, 3)),
        ];
        for (api_key, version, body) in cases {
            assert_eq!(
                check_response(api_key, version, &body, 1_000).unwrap(),
                body.len(),
                "api {api_key} v{version}"
            );
        }
    }

    /// A leader announcing more mechanisms than its answer holds is refused
    /// before anything is allocated for them.
    #[test]
    fn a_lying_count_in_an_answer_is_refused() {
        let mut body = BytesMut::new();
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&i32::MAX.to_be_bytes());
        body.extend_from_slice(b"\x00\x05PLAIN");
        let body = body.freeze();
        assert!(check_response(apis::SASL_HANDSHAKE, 1, &body, 1_000).is_err());
        assert!(
            check_response(apis::METADATA, 12, &body, 1_000).is_err(),
            "no schema: refused"
        );
    }
}
