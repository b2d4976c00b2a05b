//! Dispatch between the wire and typed messages: which decoder a request
//! goes to, which encoder a response comes from.
//!
//! ```text
//! request frame  = request header (header.rs) + body
//!   Produce v3..=9           produce.rs (by hand, records stay in the frame)
//!   DescribeConfigs v0       describe_configs_v0.rs (by hand)
//!   everything else          shape.rs checks the body, then kafka-protocol decodes it
//!
//! response frame = length prefix + response header (v0, or v1 for flexible
//!                  versions; always v0 for ApiVersions) + body
//!   ResponseBody::Produce    produce.rs
//!   ResponseBody::Fetch      fetch.rs (record slices passed through)
//!   ResponseBody::Kafka      kafka-protocol (DescribeConfigs v0: by hand)
//! ```
//!
//! A response must be for the request's API: anything else is an
//! [`EncodeError::Mismatch`], which closes the connection (the client could
//! not make sense of it anyway).

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, DescribeTransactionsRequest, EndTxnRequest,
    ListTransactionsRequest, TxnOffsetCommitRequest, WriteTxnMarkersRequest,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterPartitionReassignmentsRequest, DeleteRecordsRequest, DescribeLogDirsRequest,
    DescribeProducersRequest, ElectLeadersRequest, IncrementalAlterConfigsRequest, ListPartitionReassignmentsRequest,
};
use kafka_protocol::messages::{
    ApiVersionsRequest, CreateAclsRequest, CreatePartitionsRequest, CreateTopicsRequest, DeleteAclsRequest,
    DeleteGroupsRequest, DeleteTopicsRequest, DescribeAclsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    DescribeGroupsRequest, FetchRequest, FindCoordinatorRequest, HeartbeatRequest, InitProducerIdRequest,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, OffsetForLeaderEpochRequest, ResponseKind, SaslAuthenticateRequest,
    SaslHandshakeRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::Decodable;

use crate::apis;
use crate::describe_configs_v0;
use crate::error::{DecodeError, EncodeError, NetError};
use crate::fetch::FetchResponse;
use crate::frame::{FrameBuilder, ResponseFrame};
use crate::header::{FixedHeader, RequestHeader};
use crate::produce::{ProduceRequest, ProduceResponse};
use crate::shape;

/// One decoded request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The request header.
    pub header: RequestHeader,
    /// The decoded body, by API.
    pub body: RequestBody,
}

/// A decoded request body. Exhaustive on purpose: when net learns a new API,
/// every handler's `match` stops compiling until it decides what to do.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestBody {
    /// Produce v3..=9, decoded by hand; record sets are slices of the frame.
    Produce(ProduceRequest),
    /// Fetch v4..=12.
    Fetch(FetchRequest),
    /// ApiVersions v0..=3.
    ApiVersions(ApiVersionsRequest),
    /// Metadata v1..=12.
    Metadata(MetadataRequest),
    /// CreateTopics v2..=7.
    CreateTopics(CreateTopicsRequest),
    /// DeleteTopics v1..=6.
    DeleteTopics(DeleteTopicsRequest),
    /// CreatePartitions v0..=3.
    CreatePartitions(CreatePartitionsRequest),
    /// ListOffsets v1..=7.
    ListOffsets(ListOffsetsRequest),
    /// DescribeConfigs v0..=4 (v0 arrives with include_synonyms = false).
    DescribeConfigs(DescribeConfigsRequest),
    /// DescribeCluster v0..=1.
    DescribeCluster(DescribeClusterRequest),
    /// InitProducerId v0..=4.
    InitProducerId(InitProducerIdRequest),
    /// OffsetCommit v2..=8.
    OffsetCommit(OffsetCommitRequest),
    /// OffsetFetch v1..=7.
    OffsetFetch(OffsetFetchRequest),
    /// FindCoordinator v0..=4.
    FindCoordinator(FindCoordinatorRequest),
    /// JoinGroup v0..=7.
    JoinGroup(JoinGroupRequest),
    /// Heartbeat v0..=4.
    Heartbeat(HeartbeatRequest),
    /// LeaveGroup v0..=5.
    LeaveGroup(LeaveGroupRequest),
    /// SyncGroup v0..=5.
    SyncGroup(SyncGroupRequest),
    /// DescribeGroups v0..=5.
    DescribeGroups(DescribeGroupsRequest),
    /// ListGroups v0..=4.
    ListGroups(ListGroupsRequest),
    /// DeleteGroups v0..=2.
    DeleteGroups(DeleteGroupsRequest),
    /// OffsetDelete v0.
    OffsetDelete(OffsetDeleteRequest),
    /// OffsetForLeaderEpoch v2..=4 (followers truncating on leader change; KIP-320 clients).
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest),
    /// SaslHandshake v0..=1: the mechanism a client wants.
    SaslHandshake(SaslHandshakeRequest),
    /// SaslAuthenticate v0..=2: one SASL message.
    SaslAuthenticate(SaslAuthenticateRequest),
    /// DeleteRecords v0..=2.
    DeleteRecords(DeleteRecordsRequest),
    /// AlterConfigs v0..=2.
    AlterConfigs(AlterConfigsRequest),
    /// DescribeLogDirs v1..=4.
    DescribeLogDirs(DescribeLogDirsRequest),
    /// ElectLeaders v0..=2.
    ElectLeaders(ElectLeadersRequest),
    /// IncrementalAlterConfigs v0..=1.
    IncrementalAlterConfigs(IncrementalAlterConfigsRequest),
    /// AlterPartitionReassignments v0..=1.
    AlterPartitionReassignments(AlterPartitionReassignmentsRequest),
    /// ListPartitionReassignments v0.
    ListPartitionReassignments(ListPartitionReassignmentsRequest),
    /// DescribeProducers v0.
    DescribeProducers(DescribeProducersRequest),
    /// DescribeAcls v1..=3.
    DescribeAcls(DescribeAclsRequest),
    /// CreateAcls v1..=3.
    CreateAcls(CreateAclsRequest),
    /// DeleteAcls v1..=3.
    DeleteAcls(DeleteAclsRequest),
    /// DescribeUserScramCredentials v0.
    DescribeUserScramCredentials(kafka_protocol::messages::DescribeUserScramCredentialsRequest),
    /// AlterUserScramCredentials v0.
    AlterUserScramCredentials(kafka_protocol::messages::AlterUserScramCredentialsRequest),
    /// AddPartitionsToTxn v0..=3.
    AddPartitionsToTxn(AddPartitionsToTxnRequest),
    /// AddOffsetsToTxn v0..=3.
    AddOffsetsToTxn(AddOffsetsToTxnRequest),
    /// EndTxn v0..=3.
    EndTxn(EndTxnRequest),
    /// TxnOffsetCommit v0..=3.
    TxnOffsetCommit(TxnOffsetCommitRequest),
    /// WriteTxnMarkers v1 (between brokers).
    WriteTxnMarkers(WriteTxnMarkersRequest),
    /// DescribeTransactions v0.
    DescribeTransactions(DescribeTransactionsRequest),
    /// ListTransactions v0..=1.
    ListTransactions(ListTransactionsRequest),
}

/// What a handler answers with.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one value per response, moved once from the handler to the encoder; boxing would add an allocation"
)]
pub enum ResponseBody {
    /// The answer to a Produce request (hand-encoded).
    Produce(ProduceResponse),
    /// The answer to a Fetch request (hand-framed; record slices untouched).
    Fetch(FetchResponse),
    /// Any other response, encoded by kafka-protocol at the request's
    /// version. Its variant must match the request's API.
    Kafka(ResponseKind),
}

/// What a frame turned out to be.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per frame and unpacked at once; boxing would add an allocation per request"
)]
pub(crate) enum Decoded {
    /// A request net serves.
    Request(Request),
    /// ApiVersions at a version net does not serve: answered by net itself
    /// with an ApiVersions v0 error response (KIP-511).
    ApiVersionsUnsupported { correlation_id: i32 },
}

fn kafka_protocol<T: Decodable>(body: &Bytes, version: i16) -> Result<T, DecodeError> {
    let mut input = body.clone();
    T::decode(&mut input, version).map_err(|error| DecodeError::KafkaProtocol(error.into()))
}

/// What one request body may hold before it is refused unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyLimits {
    /// Largest body of any API but Produce (decoded control-plane messages
    /// take several times their wire size).
    pub(crate) control_body_bytes_max: usize,
    /// Most entries (array items: topics, partitions, groups, ...) one
    /// request may name.
    pub(crate) entries_max: usize,
}

impl BodyLimits {
    /// No bounds beyond the wire format's own.
    pub(crate) const NONE: BodyLimits = BodyLimits {
        control_body_bytes_max: usize::MAX,
        entries_max: usize::MAX,
    };
}

/// Decodes a request body of `api_key` at `api_version` (a supported pair;
/// see [`SUPPORTED_APIS`](crate::SUPPORTED_APIS)). Produce record sets are
/// zero-copy slices of `body`.
pub fn decode_request_body(api_key: i16, api_version: i16, body: &Bytes) -> Result<RequestBody, DecodeError> {
    decode_request_body_within(api_key, api_version, body, usize::MAX)
}

/// [`decode_request_body`], refusing a body that names more than
/// `entries_max` entries before decoding them.
fn decode_request_body_within(
    api_key: i16,
    api_version: i16,
    body: &Bytes,
    entries_max: usize,
) -> Result<RequestBody, DecodeError> {
    if !apis::is_supported(api_key, api_version) {
        return Err(DecodeError::Invalid {
            field: "header.api_version",
            reason: "API key and version not in SUPPORTED_APIS",
        });
    }
    if api_key == apis::PRODUCE {
        return ProduceRequest::decode_within(body, api_version, entries_max).map(RequestBody::Produce);
    }
    if api_key == apis::DESCRIBE_CONFIGS && api_version == 0 {
        return describe_configs_v0::decode_request(body).map(RequestBody::DescribeConfigs);
    }
    // Every count kafka-protocol is about to allocate for is checked first.
    shape::check_request(api_key, api_version, body, entries_max)?;
    let version = api_version;
    Ok(match api_key {
        apis::FETCH => RequestBody::Fetch(kafka_protocol(body, version)?),
        apis::LIST_OFFSETS => RequestBody::ListOffsets(kafka_protocol(body, version)?),
        apis::METADATA => RequestBody::Metadata(kafka_protocol(body, version)?),
        apis::API_VERSIONS => RequestBody::ApiVersions(kafka_protocol(body, version)?),
        apis::CREATE_TOPICS => RequestBody::CreateTopics(kafka_protocol(body, version)?),
        apis::DELETE_TOPICS => RequestBody::DeleteTopics(kafka_protocol(body, version)?),
        apis::INIT_PRODUCER_ID => RequestBody::InitProducerId(kafka_protocol(body, version)?),
        apis::DESCRIBE_CONFIGS => RequestBody::DescribeConfigs(kafka_protocol(body, version)?),
        apis::CREATE_PARTITIONS => RequestBody::CreatePartitions(kafka_protocol(body, version)?),
        apis::DESCRIBE_CLUSTER => RequestBody::DescribeCluster(kafka_protocol(body, version)?),
        apis::OFFSET_COMMIT => RequestBody::OffsetCommit(kafka_protocol(body, version)?),
        apis::OFFSET_FETCH => RequestBody::OffsetFetch(kafka_protocol(body, version)?),
        apis::FIND_COORDINATOR => RequestBody::FindCoordinator(kafka_protocol(body, version)?),
        apis::JOIN_GROUP => RequestBody::JoinGroup(kafka_protocol(body, version)?),
        apis::HEARTBEAT => RequestBody::Heartbeat(kafka_protocol(body, version)?),
        apis::LEAVE_GROUP => RequestBody::LeaveGroup(kafka_protocol(body, version)?),
        apis::SYNC_GROUP => RequestBody::SyncGroup(kafka_protocol(body, version)?),
        apis::DESCRIBE_GROUPS => RequestBody::DescribeGroups(kafka_protocol(body, version)?),
        apis::LIST_GROUPS => RequestBody::ListGroups(kafka_protocol(body, version)?),
        apis::DELETE_GROUPS => RequestBody::DeleteGroups(kafka_protocol(body, version)?),
        apis::OFFSET_DELETE => RequestBody::OffsetDelete(kafka_protocol(body, version)?),
        apis::OFFSET_FOR_LEADER_EPOCH => RequestBody::OffsetForLeaderEpoch(kafka_protocol(body, version)?),
        apis::SASL_HANDSHAKE => RequestBody::SaslHandshake(kafka_protocol(body, version)?),
        apis::SASL_AUTHENTICATE => RequestBody::SaslAuthenticate(kafka_protocol(body, version)?),
        apis::DELETE_RECORDS => RequestBody::DeleteRecords(kafka_protocol(body, version)?),
        apis::ALTER_CONFIGS => RequestBody::AlterConfigs(kafka_protocol(body, version)?),
        apis::DESCRIBE_LOG_DIRS => RequestBody::DescribeLogDirs(kafka_protocol(body, version)?),
        apis::ELECT_LEADERS => RequestBody::ElectLeaders(kafka_protocol(body, version)?),
        apis::INCREMENTAL_ALTER_CONFIGS => RequestBody::IncrementalAlterConfigs(kafka_protocol(body, version)?),
        apis::ALTER_PARTITION_REASSIGNMENTS => RequestBody::AlterPartitionReassignments(kafka_protocol(body, version)?),
        apis::LIST_PARTITION_REASSIGNMENTS => RequestBody::ListPartitionReassignments(kafka_protocol(body, version)?),
        apis::DESCRIBE_PRODUCERS => RequestBody::DescribeProducers(kafka_protocol(body, version)?),
        apis::DESCRIBE_ACLS => RequestBody::DescribeAcls(kafka_protocol(body, version)?),
        apis::CREATE_ACLS => RequestBody::CreateAcls(kafka_protocol(body, version)?),
        apis::DELETE_ACLS => RequestBody::DeleteAcls(kafka_protocol(body, version)?),
        apis::DESCRIBE_USER_SCRAM_CREDENTIALS => {
            RequestBody::DescribeUserScramCredentials(kafka_protocol(body, version)?)
        }
        apis::ALTER_USER_SCRAM_CREDENTIALS => RequestBody::AlterUserScramCredentials(kafka_protocol(body, version)?),
        apis::ADD_PARTITIONS_TO_TXN => RequestBody::AddPartitionsToTxn(kafka_protocol(body, version)?),
        apis::ADD_OFFSETS_TO_TXN => RequestBody::AddOffsetsToTxn(kafka_protocol(body, version)?),
        apis::END_TXN => RequestBody::EndTxn(kafka_protocol(body, version)?),
        apis::TXN_OFFSET_COMMIT => RequestBody::TxnOffsetCommit(kafka_protocol(body, version)?),
        apis::WRITE_TXN_MARKERS => RequestBody::WriteTxnMarkers(kafka_protocol(body, version)?),
        apis::DESCRIBE_TRANSACTIONS => RequestBody::DescribeTransactions(kafka_protocol(body, version)?),
        apis::LIST_TRANSACTIONS => RequestBody::ListTransactions(kafka_protocol(body, version)?),
        _ => {
            return Err(DecodeError::Invalid {
                field: "header.api_key",
                reason: "in SUPPORTED_APIS but without a decoder",
            })
        }
    })
}

/// Decodes one frame (without its length prefix) within `limits`.
pub(crate) fn decode_frame(frame: &Bytes, limits: BodyLimits) -> Result<Decoded, NetError> {
    let fixed = FixedHeader::decode(frame).map_err(NetError::Header)?;
    if !apis::is_supported(fixed.api_key, fixed.api_version) {
        if fixed.api_key == apis::API_VERSIONS {
            return Ok(Decoded::ApiVersionsUnsupported {
                correlation_id: fixed.correlation_id,
            });
        }
        return Err(NetError::UnsupportedApi {
            api_key: fixed.api_key,
            api_version: fixed.api_version,
        });
    }
    let (header, body) = RequestHeader::decode(frame).map_err(NetError::Header)?;
    let body_error = |source| NetError::Body {
        api_key: fixed.api_key,
        api_version: fixed.api_version,
        source,
    };
    if header.api_key != apis::PRODUCE && body.len() > limits.control_body_bytes_max {
        return Err(body_error(DecodeError::Invalid {
            field: "body",
            reason: "larger than ConnectionConfig::control_body_bytes_max",
        }));
    }
    let body = decode_request_body_within(header.api_key, header.api_version, &body, limits.entries_max)
        .map_err(body_error)?;
    Ok(Decoded::Request(Request { header, body }))
}

/// Decodes a whole request frame (header and body, without the length
/// prefix): what the connection loop does for each frame, available for
/// tests, tools and fuzzing. An unsupported API or version, ApiVersions
/// included, is [`NetError::UnsupportedApi`] here.
pub fn decode_request(frame: &Bytes) -> Result<Request, NetError> {
    match decode_frame(frame, BodyLimits::NONE)? {
        Decoded::Request(request) => Ok(request),
        Decoded::ApiVersionsUnsupported { .. } => {
            let fixed = FixedHeader::decode(frame).map_err(NetError::Header)?;
            Err(NetError::UnsupportedApi {
                api_key: fixed.api_key,
                api_version: fixed.api_version,
            })
        }
    }
}

/// Who a response is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseTo {
    /// The request's API key.
    pub(crate) api_key: i16,
    /// The version to encode the response at (the request's, except for the
    /// unsupported-ApiVersions answer, which is v0).
    pub(crate) api_version: i16,
    /// Echoed from the request.
    pub(crate) correlation_id: i32,
}

impl ResponseTo {
    pub(crate) fn of(header: &RequestHeader) -> Self {
        ResponseTo {
            api_key: header.api_key,
            api_version: header.api_version,
            correlation_id: header.correlation_id,
        }
    }
}

/// The API key a `ResponseKind` answers, for the APIs net serves.
fn response_kind_api_key(kind: &ResponseKind) -> Option<i16> {
    Some(match kind {
        ResponseKind::Produce(_) => apis::PRODUCE,
        ResponseKind::Fetch(_) => apis::FETCH,
        ResponseKind::ListOffsets(_) => apis::LIST_OFFSETS,
        ResponseKind::Metadata(_) => apis::METADATA,
        ResponseKind::ApiVersions(_) => apis::API_VERSIONS,
        ResponseKind::CreateTopics(_) => apis::CREATE_TOPICS,
        ResponseKind::DeleteTopics(_) => apis::DELETE_TOPICS,
        ResponseKind::InitProducerId(_) => apis::INIT_PRODUCER_ID,
        ResponseKind::DescribeConfigs(_) => apis::DESCRIBE_CONFIGS,
        ResponseKind::CreatePartitions(_) => apis::CREATE_PARTITIONS,
        ResponseKind::DescribeCluster(_) => apis::DESCRIBE_CLUSTER,
        ResponseKind::OffsetCommit(_) => apis::OFFSET_COMMIT,
        ResponseKind::OffsetFetch(_) => apis::OFFSET_FETCH,
        ResponseKind::FindCoordinator(_) => apis::FIND_COORDINATOR,
        ResponseKind::JoinGroup(_) => apis::JOIN_GROUP,
        ResponseKind::Heartbeat(_) => apis::HEARTBEAT,
        ResponseKind::LeaveGroup(_) => apis::LEAVE_GROUP,
        ResponseKind::SyncGroup(_) => apis::SYNC_GROUP,
        ResponseKind::DescribeGroups(_) => apis::DESCRIBE_GROUPS,
        ResponseKind::ListGroups(_) => apis::LIST_GROUPS,
        ResponseKind::DeleteGroups(_) => apis::DELETE_GROUPS,
        ResponseKind::OffsetDelete(_) => apis::OFFSET_DELETE,
        ResponseKind::OffsetForLeaderEpoch(_) => apis::OFFSET_FOR_LEADER_EPOCH,
        ResponseKind::SaslHandshake(_) => apis::SASL_HANDSHAKE,
        ResponseKind::SaslAuthenticate(_) => apis::SASL_AUTHENTICATE,
        ResponseKind::DeleteRecords(_) => apis::DELETE_RECORDS,
        ResponseKind::AlterConfigs(_) => apis::ALTER_CONFIGS,
        ResponseKind::DescribeLogDirs(_) => apis::DESCRIBE_LOG_DIRS,
        ResponseKind::ElectLeaders(_) => apis::ELECT_LEADERS,
        ResponseKind::IncrementalAlterConfigs(_) => apis::INCREMENTAL_ALTER_CONFIGS,
        ResponseKind::AlterPartitionReassignments(_) => apis::ALTER_PARTITION_REASSIGNMENTS,
        ResponseKind::ListPartitionReassignments(_) => apis::LIST_PARTITION_REASSIGNMENTS,
        ResponseKind::DescribeProducers(_) => apis::DESCRIBE_PRODUCERS,
        ResponseKind::DescribeAcls(_) => apis::DESCRIBE_ACLS,
        ResponseKind::CreateAcls(_) => apis::CREATE_ACLS,
        ResponseKind::DeleteAcls(_) => apis::DELETE_ACLS,
        ResponseKind::DescribeUserScramCredentials(_) => apis::DESCRIBE_USER_SCRAM_CREDENTIALS,
        ResponseKind::AlterUserScramCredentials(_) => apis::ALTER_USER_SCRAM_CREDENTIALS,
        ResponseKind::AddPartitionsToTxn(_) => apis::ADD_PARTITIONS_TO_TXN,
        ResponseKind::AddOffsetsToTxn(_) => apis::ADD_OFFSETS_TO_TXN,
        ResponseKind::EndTxn(_) => apis::END_TXN,
        ResponseKind::TxnOffsetCommit(_) => apis::TXN_OFFSET_COMMIT,
        ResponseKind::WriteTxnMarkers(_) => apis::WRITE_TXN_MARKERS,
        ResponseKind::DescribeTransactions(_) => apis::DESCRIBE_TRANSACTIONS,
        ResponseKind::ListTransactions(_) => apis::LIST_TRANSACTIONS,
        _ => return None,
    })
}

fn mismatch(to: ResponseTo, returned: &'static str) -> EncodeError {
    EncodeError::Mismatch {
        api_key: to.api_key,
        returned,
    }
}

/// Encodes `body` as the response frame for `to`.
pub(crate) fn encode_response(to: ResponseTo, body: ResponseBody) -> Result<ResponseFrame, EncodeError> {
    let header_version = apis::response_header_version(to.api_key, to.api_version).ok_or(EncodeError::Mismatch {
        api_key: to.api_key,
        returned: "a response to an API kafka-protocol does not know",
    })?;
    let mut frame = FrameBuilder::new(to.correlation_id, header_version);
    match body {
        ResponseBody::Produce(response) => {
            if to.api_key != apis::PRODUCE {
                return Err(mismatch(to, "ResponseBody::Produce"));
            }
            response.encode(frame.buf(), to.api_version)?;
        }
        ResponseBody::Fetch(response) => {
            if to.api_key != apis::FETCH {
                return Err(mismatch(to, "ResponseBody::Fetch"));
            }
            response.encode(&mut frame, to.api_version)?;
        }
        ResponseBody::Kafka(kind) => {
            if response_kind_api_key(&kind) != Some(to.api_key) {
                return Err(mismatch(to, "a ResponseKind of another API"));
            }
            encode_kafka_protocol(&kind, to, frame.buf())?;
        }
    }
    frame.finish()
}

fn encode_kafka_protocol(kind: &ResponseKind, to: ResponseTo, out: &mut BytesMut) -> Result<(), EncodeError> {
    if let (ResponseKind::DescribeConfigs(response), 0) = (kind, to.api_version) {
        return describe_configs_v0::encode_response(response, out);
    }
    kind.encode(out, to.api_version)
        .map_err(|error| EncodeError::KafkaProtocol(error.into()))
}

/// Encodes `body` as the complete response frame to the request
/// (`api_key`, `api_version`, `correlation_id`): the 4-byte length prefix
/// first, then the pieces to write after it, in order. Fetch record slices
/// appear as pieces of their own, untouched. The connection loop does this
/// internally; this is for tools, benches and tests.
pub fn encode_response_pieces(
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    body: ResponseBody,
) -> Result<Vec<Bytes>, EncodeError> {
    let to = ResponseTo {
        api_key,
        api_version,
        correlation_id,
    };
    let frame = encode_response(to, body)?;
    let mut pieces = Vec::with_capacity(frame.pieces.len() + 1);
    pieces.push(Bytes::copy_from_slice(&frame.prefix));
    pieces.extend(frame.pieces);
    Ok(pieces)
}

/// The frame net sends, without involving the handler, to an ApiVersions
/// request at a version it does not serve: ApiVersions v0 with
/// UNSUPPORTED_VERSION and the supported list (KIP-511).
pub(crate) fn api_versions_unsupported_frame(correlation_id: i32) -> Result<ResponseFrame, EncodeError> {
    let to = ResponseTo {
        api_key: apis::API_VERSIONS,
        api_version: 0,
        correlation_id,
    };
    let body = ResponseKind::ApiVersions(apis::api_versions_response(apis::UNSUPPORTED_VERSION));
    encode_response(to, ResponseBody::Kafka(body))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::BufMut;
    use kafka_protocol::messages::create_partitions_request::{CreatePartitionsAssignment, CreatePartitionsTopic};
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
    };
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{ApiVersionsResponse, BrokerId, MetadataResponse, RequestKind, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn name(text: &'static str) -> TopicName {
        TopicName(StrBytes::from_static_str(text))
    }

    /// A populated request of every supported API at `version`, encoded by
    /// kafka-protocol's client-side encoders: the reference the decoders and
    /// the shape checker are held to. Also used by the proptests.
    pub(crate) fn sample_request(api_key: i16, version: i16) -> RequestKind {
        match api_key {
            apis::FETCH => RequestKind::Fetch(
                FetchRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_max_wait_ms(500)
                    .with_min_bytes(1)
                    .with_max_bytes(1 << 20)
                    .with_session_epoch(if version >= 7 { 3 } else { -1 })
                    .with_topics(vec![FetchTopic::default().with_topic(name("orders")).with_partitions(
                        vec![
                            FetchPartition::default()
                                .with_partition(0)
                                .with_fetch_offset(42)
                                .with_partition_max_bytes(1 << 16),
                            FetchPartition::default().with_partition(5).with_fetch_offset(7),
                        ],
                    )])
                    .with_forgotten_topics_data(if version >= 7 {
                        vec![ForgottenTopic::default()
                            .with_topic(name("old"))
                            .with_partitions(vec![1, 2])]
                    } else {
                        vec![]
                    })
                    .with_rack_id(StrBytes::from_static_str(if version >= 11 { "rack-a" } else { "" })),
            ),
            apis::LIST_OFFSETS => {
                RequestKind::ListOffsets(ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(
                    vec![ListOffsetsTopic::default().with_name(name("orders")).with_partitions(vec![
                        ListOffsetsPartition::default().with_partition_index(2).with_timestamp(-1),
                    ])],
                ))
            }
            apis::METADATA => RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name("orders"))),
                MetadataRequestTopic::default().with_name(Some(name("payments"))),
            ]))),
            apis::API_VERSIONS => RequestKind::ApiVersions(if version >= 3 {
                ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str("librdkafka"))
                    .with_client_software_version(StrBytes::from_static_str("2.16.0"))
            } else {
                ApiVersionsRequest::default()
            }),
            apis::CREATE_TOPICS => {
                RequestKind::CreateTopics(CreateTopicsRequest::default().with_timeout_ms(1000).with_topics(
                    vec![CreatableTopic::default()
                        .with_name(name("orders"))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                        .with_assignments(vec![CreatableReplicaAssignment::default()
                            .with_partition_index(0)
                            .with_broker_ids(vec![BrokerId(1), BrokerId(2)])])
                        .with_configs(vec![CreatableTopicConfig::default()
                            .with_name(StrBytes::from_static_str("retention.ms"))
                            .with_value(Some(StrBytes::from_static_str("1000")))])],
                ))
            }
            apis::DELETE_TOPICS => RequestKind::DeleteTopics(if version >= 6 {
                DeleteTopicsRequest::default()
                    .with_timeout_ms(1000)
                    .with_topics(vec![DeleteTopicState::default().with_name(Some(name("orders")))])
            } else {
                DeleteTopicsRequest::default()
                    .with_timeout_ms(1000)
                    .with_topic_names(vec![name("orders"), name("b")])
            }),
            apis::INIT_PRODUCER_ID => RequestKind::InitProducerId(
                InitProducerIdRequest::default()
                    .with_transactional_id(Some(StrBytes::from_static_str("txn").into()))
                    .with_transaction_timeout_ms(60_000),
            ),
            apis::DESCRIBE_CONFIGS => {
                RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("orders"))
                    .with_configuration_keys(Some(vec![StrBytes::from_static_str("retention.ms")])),
            ]))
            }
            apis::CREATE_PARTITIONS => {
                RequestKind::CreatePartitions(CreatePartitionsRequest::default().with_timeout_ms(1000).with_topics(
                    vec![CreatePartitionsTopic::default()
                        .with_name(name("orders"))
                        .with_count(4)
                        .with_assignments(Some(vec![
                            CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(1)])
                        ]))],
                ))
            }
            apis::DESCRIBE_CLUSTER => RequestKind::DescribeCluster(DescribeClusterRequest::default()),
            apis::PRODUCE => {
                use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
                RequestKind::Produce(
                    kafka_protocol::messages::ProduceRequest::default()
                        .with_acks(1)
                        .with_timeout_ms(100)
                        .with_topic_data(vec![TopicProduceData::default()
                            .with_name(name("orders"))
                            .with_partition_data(vec![PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(Bytes::from_static(b"batch-bytes")))])]),
                )
            }
            other => group_sample_request(other, version),
        }
    }

    fn text(value: &'static str) -> StrBytes {
        StrBytes::from_static_str(value)
    }

    /// Samples of the consumer-group requests, with every field the version
    /// has set to a non-default value.
    fn group_sample_request(api_key: i16, version: i16) -> RequestKind {
        use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
        use kafka_protocol::messages::leave_group_request::MemberIdentity;
        use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
        use kafka_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
        use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
        use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
        use kafka_protocol::messages::GroupId;
        let group = GroupId(text("payments-readers"));
        let instance = (version >= 5).then(|| text("instance-1"));
        match api_key {
            apis::FIND_COORDINATOR => {
                let request = FindCoordinatorRequest::default();
                RequestKind::FindCoordinator(if version >= 4 {
                    request.with_coordinator_keys(vec![text("g1"), text("g2")])
                } else {
                    request.with_key(text("g1"))
                })
            }
            apis::JOIN_GROUP => RequestKind::JoinGroup(
                JoinGroupRequest::default()
                    .with_group_id(group)
                    .with_session_timeout_ms(10_000)
                    .with_rebalance_timeout_ms(if version >= 1 { 30_000 } else { -1 })
                    .with_member_id(text("member-1"))
                    .with_group_instance_id(instance)
                    .with_protocol_type(text("consumer"))
                    .with_protocols(vec![
                        JoinGroupRequestProtocol::default()
                            .with_name(text("range"))
                            .with_metadata(Bytes::from_static(b"\x00\x01subscription")),
                        JoinGroupRequestProtocol::default().with_name(text("roundrobin")),
                    ]),
            ),
            apis::SYNC_GROUP => RequestKind::SyncGroup(
                SyncGroupRequest::default()
                    .with_group_id(group)
                    .with_generation_id(3)
                    .with_member_id(text("member-1"))
                    .with_group_instance_id((version >= 3).then(|| text("instance-1")))
                    .with_protocol_type((version >= 5).then(|| text("consumer")))
                    .with_protocol_name((version >= 5).then(|| text("range")))
                    .with_assignments(vec![SyncGroupRequestAssignment::default()
                        .with_member_id(text("member-1"))
                        .with_assignment(Bytes::from_static(b"assignment"))]),
            ),
            apis::HEARTBEAT => RequestKind::Heartbeat(
                HeartbeatRequest::default()
                    .with_group_id(group)
                    .with_generation_id(3)
                    .with_member_id(text("member-1"))
                    .with_group_instance_id((version >= 3).then(|| text("instance-1"))),
            ),
            apis::LEAVE_GROUP => RequestKind::LeaveGroup(if version >= 3 {
                LeaveGroupRequest::default()
                    .with_group_id(group)
                    .with_members(vec![MemberIdentity::default()
                        .with_member_id(text("member-1"))
                        .with_group_instance_id(Some(text("instance-1")))
                        .with_reason((version >= 5).then(|| text("shutting down")))])
            } else {
                LeaveGroupRequest::default()
                    .with_group_id(group)
                    .with_member_id(text("member-1"))
            }),
            apis::OFFSET_COMMIT => RequestKind::OffsetCommit(
                OffsetCommitRequest::default()
                    .with_group_id(group)
                    .with_generation_id_or_member_epoch(3)
                    .with_member_id(text("member-1"))
                    .with_group_instance_id((version >= 7).then(|| text("instance-1")))
                    .with_retention_time_ms(if version <= 4 { 60_000 } else { -1 })
                    .with_topics(vec![OffsetCommitRequestTopic::default()
                        .with_name(name("orders"))
                        .with_partitions(vec![OffsetCommitRequestPartition::default()
                            .with_partition_index(2)
                            .with_committed_offset(42)
                            .with_committed_leader_epoch(if version >= 6 { 1 } else { -1 })
                            .with_committed_metadata(Some(text("meta")))])]),
            ),
            apis::OFFSET_FETCH => RequestKind::OffsetFetch(
                OffsetFetchRequest::default()
                    .with_group_id(group)
                    .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                        .with_name(name("orders"))
                        .with_partition_indexes(vec![0, 1, 2])]))
                    .with_require_stable(version >= 7),
            ),
            apis::DESCRIBE_GROUPS => RequestKind::DescribeGroups(
                DescribeGroupsRequest::default()
                    .with_groups(vec![group, GroupId(text("other"))])
                    .with_include_authorized_operations(version >= 3),
            ),
            apis::LIST_GROUPS => {
                RequestKind::ListGroups(ListGroupsRequest::default().with_states_filter(if version >= 4 {
                    vec![text("Stable"), text("Empty")]
                } else {
                    vec![]
                }))
            }
            apis::DELETE_GROUPS => {
                RequestKind::DeleteGroups(DeleteGroupsRequest::default().with_groups_names(vec![group]))
            }
            apis::OFFSET_DELETE => {
                RequestKind::OffsetDelete(OffsetDeleteRequest::default().with_group_id(group).with_topics(
                    vec![OffsetDeleteRequestTopic::default()
                    .with_name(name("orders"))
                    .with_partitions(vec![OffsetDeleteRequestPartition::default().with_partition_index(1)])],
                ))
            }
            apis::OFFSET_FOR_LEADER_EPOCH => {
                use kafka_protocol::messages::offset_for_leader_epoch_request::{
                    OffsetForLeaderPartition, OffsetForLeaderTopic,
                };
                RequestKind::OffsetForLeaderEpoch(
                    OffsetForLeaderEpochRequest::default()
                        .with_replica_id(if version >= 3 { BrokerId(2) } else { BrokerId(-2) })
                        .with_topics(vec![OffsetForLeaderTopic::default()
                            .with_topic(name("orders"))
                            .with_partitions(vec![OffsetForLeaderPartition::default()
                                .with_partition(1)
                                .with_current_leader_epoch(4)
                                .with_leader_epoch(3)])]),
                )
            }
            apis::SASL_HANDSHAKE => RequestKind::SaslHandshake(
                kafka_protocol::messages::SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256")),
            ),
            apis::SASL_AUTHENTICATE => RequestKind::SaslAuthenticate(
                kafka_protocol::messages::SaslAuthenticateRequest::default()
                    .with_auth_bytes(Bytes::from_static(b"n,,n=alice,r=nonce")),
            ),
            apis::DESCRIBE_ACLS => RequestKind::DescribeAcls(
                kafka_protocol::messages::DescribeAclsRequest::default()
                    .with_resource_type_filter(2)
                    .with_resource_name_filter(Some(StrBytes::from_static_str("orders")))
                    .with_pattern_type_filter(2)
                    .with_principal_filter(None)
                    .with_host_filter(Some(StrBytes::from_static_str("*")))
                    .with_operation(1)
                    .with_permission_type(3),
            ),
            apis::CREATE_ACLS => RequestKind::CreateAcls(
                kafka_protocol::messages::CreateAclsRequest::default().with_creations(vec![
                    kafka_protocol::messages::create_acls_request::AclCreation::default()
                        .with_resource_type(2)
                        .with_resource_name(StrBytes::from_static_str("app-"))
                        .with_resource_pattern_type(4)
                        .with_principal(StrBytes::from_static_str("User:alice"))
                        .with_host(StrBytes::from_static_str("*"))
                        .with_operation(4)
                        .with_permission_type(3),
                ]),
            ),
            apis::DELETE_ACLS => RequestKind::DeleteAcls(
                kafka_protocol::messages::DeleteAclsRequest::default().with_filters(vec![
                    kafka_protocol::messages::delete_acls_request::DeleteAclsFilter::default()
                        .with_resource_type_filter(1)
                        .with_resource_name_filter(None)
                        .with_pattern_type_filter(1)
                        .with_principal_filter(Some(StrBytes::from_static_str("User:alice")))
                        .with_host_filter(None)
                        .with_operation(1)
                        .with_permission_type(1),
                ]),
            ),
            apis::DESCRIBE_USER_SCRAM_CREDENTIALS => RequestKind::DescribeUserScramCredentials(
                kafka_protocol::messages::DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
                    kafka_protocol::messages::describe_user_scram_credentials_request::UserName::default()
                        .with_name(StrBytes::from_static_str("carol")),
                ])),
            ),
            apis::ALTER_USER_SCRAM_CREDENTIALS => RequestKind::AlterUserScramCredentials(
                kafka_protocol::messages::AlterUserScramCredentialsRequest::default()
                    .with_deletions(vec![
                        kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialDeletion::default()
                            .with_name(StrBytes::from_static_str("dave"))
                            .with_mechanism(2),
                    ])
                    .with_upsertions(vec![
                        kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
                            .with_name(StrBytes::from_static_str("carol"))
                            .with_mechanism(1)
                            .with_iterations(8192)
                            .with_salt(Bytes::from_static(b"salt"))
                            .with_salted_password(Bytes::from_static(&[7; 32])),
                    ]),
            ),
            other => admin_sample_request(other, version),
        }
    }

    /// Samples of the admin APIs (DeleteRecords, AlterConfigs, ...).
    fn admin_sample_request(api_key: i16, version: i16) -> RequestKind {
        use kafka_protocol::messages::{
            alter_configs_request as legacy, alter_partition_reassignments_request as reassign,
            delete_records_request as delete, describe_log_dirs_request as dirs,
            describe_producers_request as producers, elect_leaders_request as elect,
            incremental_alter_configs_request as incremental, list_partition_reassignments_request as list,
        };
        let text = StrBytes::from_static_str;
        match api_key {
            apis::DELETE_RECORDS => {
                RequestKind::DeleteRecords(DeleteRecordsRequest::default().with_timeout_ms(1000).with_topics(vec![
                    delete::DeleteRecordsTopic::default()
                        .with_name(name("orders"))
                        .with_partitions(vec![delete::DeleteRecordsPartition::default()
                            .with_partition_index(1)
                            .with_offset(42)]),
                ]))
            }
            apis::ALTER_CONFIGS => RequestKind::AlterConfigs(AlterConfigsRequest::default().with_resources(vec![
                legacy::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(text("orders"))
                    .with_configs(vec![legacy::AlterableConfig::default()
                        .with_name(text("retention.ms"))
                        .with_value(Some(text("1000")))]),
            ])),
            apis::DESCRIBE_LOG_DIRS => RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(
                Some(vec![dirs::DescribableLogDirTopic::default()
                    .with_topic(name("orders"))
                    .with_partitions(vec![0, 1])]),
            )),
            apis::ELECT_LEADERS => RequestKind::ElectLeaders(
                ElectLeadersRequest::default()
                    .with_election_type(if version >= 1 { 1 } else { 0 })
                    .with_timeout_ms(1000)
                    .with_topic_partitions(Some(vec![elect::TopicPartitions::default()
                        .with_topic(name("orders"))
                        .with_partitions(vec![0, 2])])),
            ),
            apis::INCREMENTAL_ALTER_CONFIGS => {
                RequestKind::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default().with_resources(vec![
                    incremental::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(text("orders"))
                        .with_configs(vec![incremental::AlterableConfig::default()
                            .with_name(text("retention.ms"))
                            .with_config_operation(0)
                            .with_value(Some(text("1000")))]),
                ]))
            }
            apis::ALTER_PARTITION_REASSIGNMENTS => RequestKind::AlterPartitionReassignments(
                AlterPartitionReassignmentsRequest::default()
                    .with_timeout_ms(1000)
                    .with_allow_replication_factor_change(true)
                    .with_topics(vec![reassign::ReassignableTopic::default()
                        .with_name(name("orders"))
                        .with_partitions(vec![reassign::ReassignablePartition::default()
                            .with_partition_index(0)
                            .with_replicas(Some(vec![BrokerId(2), BrokerId(3)]))])]),
            ),
            apis::LIST_PARTITION_REASSIGNMENTS => RequestKind::ListPartitionReassignments(
                ListPartitionReassignmentsRequest::default()
                    .with_timeout_ms(1000)
                    .with_topics(Some(vec![list::ListPartitionReassignmentsTopics::default()
                        .with_name(name("orders"))
                        .with_partition_indexes(vec![0])])),
            ),
            apis::DESCRIBE_PRODUCERS => {
                RequestKind::DescribeProducers(DescribeProducersRequest::default().with_topics(vec![
                    producers::TopicRequest::default()
                        .with_name(name("orders"))
                        .with_partition_indexes(vec![0, 1]),
                ]))
            }
            apis::ADD_PARTITIONS_TO_TXN => {
                use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
                use kafka_protocol::messages::{ProducerId, TransactionalId};
                RequestKind::AddPartitionsToTxn(
                    kafka_protocol::messages::AddPartitionsToTxnRequest::default()
                        .with_v3_and_below_transactional_id(TransactionalId(text("txn-1")))
                        .with_v3_and_below_producer_id(ProducerId(42))
                        .with_v3_and_below_producer_epoch(3)
                        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                            .with_name(name("orders"))
                            .with_partitions(vec![0, 2])]),
                )
            }
            apis::ADD_OFFSETS_TO_TXN => RequestKind::AddOffsetsToTxn(
                kafka_protocol::messages::AddOffsetsToTxnRequest::default()
                    .with_transactional_id(kafka_protocol::messages::TransactionalId(text("txn-1")))
                    .with_producer_id(kafka_protocol::messages::ProducerId(42))
                    .with_producer_epoch(3)
                    .with_group_id(kafka_protocol::messages::GroupId(text("payments-readers"))),
            ),
            apis::END_TXN => RequestKind::EndTxn(
                kafka_protocol::messages::EndTxnRequest::default()
                    .with_transactional_id(kafka_protocol::messages::TransactionalId(text("txn-1")))
                    .with_producer_id(kafka_protocol::messages::ProducerId(42))
                    .with_producer_epoch(3)
                    .with_committed(true),
            ),
            apis::TXN_OFFSET_COMMIT => {
                use kafka_protocol::messages::txn_offset_commit_request::{
                    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
                };
                use kafka_protocol::messages::{ProducerId, TransactionalId};
                let mut request = kafka_protocol::messages::TxnOffsetCommitRequest::default()
                    .with_transactional_id(TransactionalId(text("txn-1")))
                    .with_group_id(kafka_protocol::messages::GroupId(text("payments-readers")))
                    .with_producer_id(ProducerId(42))
                    .with_producer_epoch(3)
                    .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                        .with_name(name("orders"))
                        .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(1)
                            .with_committed_offset(17)
                            .with_committed_leader_epoch(if version >= 2 { 4 } else { -1 })
                            .with_committed_metadata(Some(text("meta")))])]);
                if version >= 3 {
                    request = request
                        .with_generation_id(5)
                        .with_member_id(text("member-1"))
                        .with_group_instance_id(Some(text("instance-1")));
                }
                RequestKind::TxnOffsetCommit(request)
            }
            apis::WRITE_TXN_MARKERS => {
                use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
                RequestKind::WriteTxnMarkers(WriteTxnMarkersRequest::default().with_markers(vec![
                    WritableTxnMarker::default()
                        .with_producer_id(kafka_protocol::messages::ProducerId(42))
                        .with_producer_epoch(3)
                        .with_transaction_result(true)
                        .with_topics(vec![WritableTxnMarkerTopic::default()
                            .with_name(name("orders"))
                            .with_partition_indexes(vec![0, 4])])
                        .with_coordinator_epoch(2),
                ]))
            }
            apis::DESCRIBE_TRANSACTIONS => {
                RequestKind::DescribeTransactions(DescribeTransactionsRequest::default().with_transactional_ids(vec![
                    kafka_protocol::messages::TransactionalId(text("txn-1")),
                    kafka_protocol::messages::TransactionalId(text("txn-2")),
                ]))
            }
            apis::LIST_TRANSACTIONS => RequestKind::ListTransactions(
                ListTransactionsRequest::default()
                    .with_state_filters(vec![text("Ongoing")])
                    .with_producer_id_filters(vec![kafka_protocol::messages::ProducerId(42)])
                    .with_duration_filter(if version >= 1 { 60_000 } else { -1 }),
            ),
            other => panic!("no sample for API {other}"),
        }
    }

    /// `sample_request` encoded at `version`, without header.
    pub(crate) fn sample_body(api_key: i16, version: i16) -> Bytes {
        let mut out = BytesMut::new();
        if api_key == apis::DESCRIBE_CONFIGS && version == 0 {
            // v0 = v1 without the trailing include_synonyms byte.
            sample_request(api_key, 1).encode(&mut out, 1).unwrap();
            out.truncate(out.len() - 1);
        } else {
            sample_request(api_key, version)
                .encode(&mut out, version)
                .unwrap_or_else(|error| panic!("api {api_key} v{version}: {error}"));
        }
        out.freeze()
    }

    /// A whole request frame payload (header + body) for `api_key`/`version`.
    pub(crate) fn sample_frame(api_key: i16, version: i16, correlation_id: i32) -> Bytes {
        use kafka_protocol::messages::RequestHeader as ReferenceHeader;
        let header_version = apis::request_header_version(api_key, version).unwrap_or(1);
        let mut out = BytesMut::new();
        ReferenceHeader::default()
            .with_request_api_key(api_key)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("test")))
            .encode(&mut out, header_version)
            .unwrap();
        out.extend_from_slice(&sample_body(api_key, version));
        out.freeze()
    }

    fn body_as_kind(body: RequestBody) -> RequestKind {
        match body {
            RequestBody::Produce(_) => panic!("produce is checked in produce.rs"),
            RequestBody::Fetch(request) => RequestKind::Fetch(request),
            RequestBody::ApiVersions(request) => RequestKind::ApiVersions(request),
            RequestBody::Metadata(request) => RequestKind::Metadata(request),
            RequestBody::CreateTopics(request) => RequestKind::CreateTopics(request),
            RequestBody::DeleteTopics(request) => RequestKind::DeleteTopics(request),
            RequestBody::CreatePartitions(request) => RequestKind::CreatePartitions(request),
            RequestBody::ListOffsets(request) => RequestKind::ListOffsets(request),
            RequestBody::DescribeConfigs(request) => RequestKind::DescribeConfigs(request),
            RequestBody::DescribeCluster(request) => RequestKind::DescribeCluster(request),
            RequestBody::InitProducerId(request) => RequestKind::InitProducerId(request),
            RequestBody::DeleteRecords(request) => RequestKind::DeleteRecords(request),
            RequestBody::AlterConfigs(request) => RequestKind::AlterConfigs(request),
            RequestBody::DescribeLogDirs(request) => RequestKind::DescribeLogDirs(request),
            RequestBody::ElectLeaders(request) => RequestKind::ElectLeaders(request),
            RequestBody::IncrementalAlterConfigs(request) => RequestKind::IncrementalAlterConfigs(request),
            RequestBody::AlterPartitionReassignments(request) => RequestKind::AlterPartitionReassignments(request),
            RequestBody::ListPartitionReassignments(request) => RequestKind::ListPartitionReassignments(request),
            RequestBody::DescribeProducers(request) => RequestKind::DescribeProducers(request),
            RequestBody::OffsetCommit(request) => RequestKind::OffsetCommit(request),
            RequestBody::OffsetFetch(request) => RequestKind::OffsetFetch(request),
            RequestBody::FindCoordinator(request) => RequestKind::FindCoordinator(request),
            RequestBody::JoinGroup(request) => RequestKind::JoinGroup(request),
            RequestBody::Heartbeat(request) => RequestKind::Heartbeat(request),
            RequestBody::LeaveGroup(request) => RequestKind::LeaveGroup(request),
            RequestBody::SyncGroup(request) => RequestKind::SyncGroup(request),
            RequestBody::DescribeGroups(request) => RequestKind::DescribeGroups(request),
            RequestBody::ListGroups(request) => RequestKind::ListGroups(request),
            RequestBody::DeleteGroups(request) => RequestKind::DeleteGroups(request),
            RequestBody::OffsetDelete(request) => RequestKind::OffsetDelete(request),
            RequestBody::OffsetForLeaderEpoch(request) => RequestKind::OffsetForLeaderEpoch(request),
            RequestBody::SaslHandshake(request) => RequestKind::SaslHandshake(request),
            RequestBody::SaslAuthenticate(request) => RequestKind::SaslAuthenticate(request),
            RequestBody::DescribeAcls(request) => RequestKind::DescribeAcls(request),
            RequestBody::CreateAcls(request) => RequestKind::CreateAcls(request),
            RequestBody::DeleteAcls(request) => RequestKind::DeleteAcls(request),
            RequestBody::DescribeUserScramCredentials(request) => RequestKind::DescribeUserScramCredentials(request),
            RequestBody::AlterUserScramCredentials(request) => RequestKind::AlterUserScramCredentials(request),
            RequestBody::AddPartitionsToTxn(request) => RequestKind::AddPartitionsToTxn(request),
            RequestBody::AddOffsetsToTxn(request) => RequestKind::AddOffsetsToTxn(request),
            RequestBody::EndTxn(request) => RequestKind::EndTxn(request),
            RequestBody::TxnOffsetCommit(request) => RequestKind::TxnOffsetCommit(request),
            RequestBody::WriteTxnMarkers(request) => RequestKind::WriteTxnMarkers(request),
            RequestBody::DescribeTransactions(request) => RequestKind::DescribeTransactions(request),
            RequestBody::ListTransactions(request) => RequestKind::ListTransactions(request),
        }
    }

    #[test]
    fn every_supported_request_decodes_like_the_reference_and_the_shape_walk_consumes_it_all() {
        for &(api_key, min, max) in apis::SUPPORTED_APIS {
            for version in min..=max {
                let body = sample_body(api_key, version);
                if api_key != apis::PRODUCE && !(api_key == apis::DESCRIBE_CONFIGS && version == 0) {
                    assert_eq!(
                        shape::check_request(api_key, version, &body, usize::MAX).unwrap(),
                        body.len(),
                        "api {api_key} v{version}: shape walk must consume exactly the body"
                    );
                }
                let decoded = decode_request_body(api_key, version, &body)
                    .unwrap_or_else(|error| panic!("api {api_key} v{version}: {error}"));
                if api_key == apis::PRODUCE {
                    assert!(matches!(decoded, RequestBody::Produce(_)));
                    continue;
                }
                let expected = if api_key == apis::DESCRIBE_CONFIGS && version == 0 {
                    sample_request(api_key, 1)
                } else {
                    sample_request(api_key, version)
                };
                assert_eq!(body_as_kind(decoded), expected, "api {api_key} v{version}");
            }
        }
    }

    #[test]
    fn every_truncated_body_is_an_error_not_a_panic() {
        for &(api_key, min, max) in apis::SUPPORTED_APIS {
            for version in min..=max {
                let body = sample_body(api_key, version);
                for length in 0..body.len() {
                    // Some prefixes are valid requests in their own right
                    // (e.g. a body that ends where optional data starts);
                    // the point is that none panics.
                    let _ = decode_request_body(api_key, version, &body.slice(..length));
                }
            }
        }
    }

    #[test]
    fn a_huge_array_count_is_refused_before_kafka_protocol_allocates() {
        // Metadata v1: topics count 2^31 - 1, then nothing. Without the shape
        // walk kafka-protocol would call Vec::with_capacity(2^31 - 1).
        for version in [1, 4, 8] {
            let mut body = BytesMut::new();
            body.put_i32(i32::MAX);
            let error = decode_request_body(apis::METADATA, version, &body.freeze()).unwrap_err();
            assert!(
                matches!(
                    error,
                    DecodeError::Truncated {
                        field: "metadata.topics",
                        ..
                    }
                ),
                "{error}"
            );
        }
        // Flexible: compact count 2^32 - 2.
        let body = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode_request_body(apis::METADATA, 12, &body).is_err());
        // Nested: CreateTopics v2 with one topic whose broker id list claims 2^31 - 1 entries.
        let mut body = BytesMut::new();
        body.put_i32(1);
        body.put_i16(1);
        body.put_u8(b't');
        body.put_i32(1);
        body.put_i16(1);
        body.put_i32(1);
        body.put_i32(0);
        body.put_i32(i32::MAX);
        assert!(decode_request_body(apis::CREATE_TOPICS, 2, &body.freeze()).is_err());
    }

    #[test]
    fn decode_frame_classifies_unsupported_apis() {
        let frame = sample_frame(apis::METADATA, 13, 1);
        assert!(matches!(
            decode_frame(&frame, BodyLimits::NONE),
            Err(NetError::UnsupportedApi {
                api_key: 3,
                api_version: 13
            })
        ));
        let mut unknown = BytesMut::new();
        unknown.put_i16(9999);
        unknown.put_i16(0);
        unknown.put_i32(5);
        unknown.put_i16(-1);
        assert!(matches!(
            decode_frame(&unknown.freeze(), BodyLimits::NONE),
            Err(NetError::UnsupportedApi { api_key: 9999, .. })
        ));
        let mut api_versions = BytesMut::new();
        api_versions.put_i16(apis::API_VERSIONS);
        api_versions.put_i16(99);
        api_versions.put_i32(77);
        assert!(matches!(
            decode_frame(&api_versions.freeze(), BodyLimits::NONE),
            Ok(Decoded::ApiVersionsUnsupported { correlation_id: 77 })
        ));
        let frame = sample_frame(apis::METADATA, 12, 1);
        let small = BodyLimits {
            control_body_bytes_max: 4,
            ..BodyLimits::NONE
        };
        assert!(matches!(decode_frame(&frame, small), Err(NetError::Body { .. })));
        let frame = sample_frame(apis::PRODUCE, 9, 1);
        assert!(matches!(decode_frame(&frame, small), Ok(Decoded::Request(_))));
        // The sample Fetch names a topic with two partitions and one
        // forgotten topic: four entries.
        let fetch = sample_frame(apis::FETCH, 12, 9);
        let entries = |entries_max| BodyLimits {
            entries_max,
            ..BodyLimits::NONE
        };
        assert!(matches!(decode_frame(&fetch, entries(4)), Ok(Decoded::Request(_))));
        assert!(matches!(decode_frame(&fetch, entries(3)), Err(NetError::Body { .. })));
        assert!(decode_request(&frame).is_ok());
    }

    #[test]
    fn produce_records_in_a_whole_frame_point_into_that_frame() {
        for version in 3..=9 {
            let frame = sample_frame(apis::PRODUCE, version, 1);
            let request = decode_request(&frame).unwrap();
            let RequestBody::Produce(produce) = request.body else {
                panic!("produce expected");
            };
            let records = produce.topics[0].partitions[0].records.clone().unwrap();
            assert_eq!(&records[..], b"batch-bytes");
            let frame_start = frame.as_ptr() as usize;
            let records_start = records.as_ptr() as usize;
            assert!(
                records_start >= frame_start && records_start + records.len() <= frame_start + frame.len(),
                "v{version}: records are a slice of the frame"
            );
        }
    }

    #[test]
    fn api_versions_error_frame_is_v0_with_the_supported_list() {
        let frame = api_versions_unsupported_frame(123).unwrap();
        let wire = Bytes::from(frame.to_vec());
        let mut body = wire.slice(4..);
        let header = kafka_protocol::messages::ResponseHeader::decode(&mut body, 0).unwrap();
        assert_eq!(header.correlation_id, 123);
        let response = ApiVersionsResponse::decode(&mut body, 0).unwrap();
        assert!(body.is_empty());
        assert_eq!(response.error_code, apis::UNSUPPORTED_VERSION);
        let listed: Vec<(i16, i16, i16)> = response
            .api_keys
            .iter()
            .map(|api| (api.api_key, api.min_version, api.max_version))
            .collect();
        assert_eq!(listed, apis::SUPPORTED_APIS);
    }

    #[test]
    fn control_plane_responses_use_the_right_header_and_mismatches_are_refused() {
        for version in 1..=12 {
            let to = ResponseTo {
                api_key: apis::METADATA,
                api_version: version,
                correlation_id: 9,
            };
            let response = MetadataResponse::default().with_cluster_id(None);
            let frame = encode_response(to, ResponseBody::Kafka(ResponseKind::Metadata(response.clone()))).unwrap();
            let wire = Bytes::from(frame.to_vec());
            let mut body = wire.slice(4..);
            let header_version = if version >= 9 { 1 } else { 0 };
            let header = kafka_protocol::messages::ResponseHeader::decode(&mut body, header_version).unwrap();
            assert_eq!(header.correlation_id, 9);
            assert_eq!(MetadataResponse::decode(&mut body, version).unwrap(), response);
            assert!(body.is_empty());
        }
        let to = ResponseTo {
            api_key: apis::FETCH,
            api_version: 12,
            correlation_id: 1,
        };
        let wrong = ResponseBody::Kafka(ResponseKind::Metadata(MetadataResponse::default()));
        assert!(matches!(encode_response(to, wrong), Err(EncodeError::Mismatch { .. })));
        let wrong = ResponseBody::Produce(ProduceResponse::default());
        assert!(matches!(encode_response(to, wrong), Err(EncodeError::Mismatch { .. })));
    }
}
