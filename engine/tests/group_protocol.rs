//! The group APIs' bad-input answers, request by request, with kafka-protocol's
//! client encoders against a real engine process: each refusal carries the
//! code Kafka clients expect and leaves the group as it was.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use common::Engine;
use kafka_protocol::{
    messages::{
        create_topics_request::CreatableTopic,
        join_group_request::JoinGroupRequestProtocol,
        leave_group_request::MemberIdentity,
        metadata_request::MetadataRequestTopic,
        offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
        offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic},
        offset_fetch_request::OffsetFetchRequestTopic,
        sync_group_request::SyncGroupRequestAssignment,
        CreateTopicsRequest, DeleteGroupsRequest, DeleteTopicsRequest, DescribeGroupsRequest, FindCoordinatorRequest,
        GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, MetadataRequest,
        OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest, RequestHeader, ResponseHeader, SyncGroupRequest,
        TopicName,
    },
    protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes},
};

const IO_TIMEOUT: Duration = Duration::from_secs(30);

struct Client {
    stream: TcpStream,
    correlation_id: i32,
}

impl Client {
    fn connect(engine: &Engine) -> Client {
        let stream = TcpStream::connect(engine.addr).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Client {
            stream,
            correlation_id: 0,
        }
    }

    fn call<R: Request>(&mut self, version: i16, request: &R) -> R::Response {
        self.correlation_id += 1;
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0; 4]);
        RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("group-protocol-test")))
            .encode(&mut frame, R::header_version(version))
            .unwrap();
        request.encode(&mut frame, version).unwrap();
        let length = i32::try_from(frame.len() - 4).unwrap();
        frame[..4].copy_from_slice(&length.to_be_bytes());
        self.stream.write_all(&frame).unwrap();
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix).unwrap();
        let mut body = vec![0u8; usize::try_from(i32::from_be_bytes(prefix)).unwrap()];
        self.stream.read_exact(&mut body).unwrap();
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version)).unwrap();
        assert_eq!(header.correlation_id, self.correlation_id);
        R::Response::decode(&mut body, version).unwrap()
    }
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn group(s: &str) -> GroupId {
    GroupId(text(s))
}

fn join(client: &mut Client, member_id: &str) -> JoinGroupResponse {
    let request = JoinGroupRequest::default()
        .with_group_id(group("g"))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(text(member_id))
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(text("range"))
            .with_metadata(Bytes::from_static(
                b"\x00\x00\x00\x00\x00\x01\x00\x01t\xff\xff\xff\xff",
            ))]);
    client.call(5, &request)
}

// Kafka error codes.
const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const ILLEGAL_GENERATION: i16 = 22;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const MEMBER_ID_REQUIRED: i16 = 79;

#[test]
fn every_bad_group_request_gets_the_code_clients_expect_and_changes_nothing() {
    let engine = Engine::start(&["--shards", "2", "--fsync", "never"]);
    let mut client = Client::connect(&engine);
    let created = client.call(
        5,
        &CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(text("t")))
            .with_num_partitions(2)
            .with_replication_factor(1)]),
    );
    assert_eq!(created.topics[0].error_code, NONE);

    let found = client.call(3, &FindCoordinatorRequest::default().with_key(text("g")));
    // The coordinator is the shard that owns the group's offsets partition:
    // one of the engine's shard ports.
    assert_eq!(found.error_code, NONE);
    let shard_ports: Vec<i32> = engine.shard_addrs().iter().map(|a| i32::from(a.port())).collect();
    assert!(
        shard_ports.contains(&found.port),
        "{} not in {shard_ports:?}",
        found.port
    );

    // Unknown group: heartbeats and syncs name an unknown member.
    let heartbeat = |generation, member: &str| {
        HeartbeatRequest::default()
            .with_group_id(group("g"))
            .with_generation_id(generation)
            .with_member_id(text(member))
    };
    assert_eq!(client.call(3, &heartbeat(1, "nobody")).error_code, UNKNOWN_MEMBER_ID);

    // Join: first MEMBER_ID_REQUIRED, then a generation of one member.
    let first = join(&mut client, "");
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    let member = first.member_id.to_string();
    assert!(!member.is_empty());
    assert_eq!(join(&mut client, "stranger").error_code, UNKNOWN_MEMBER_ID);
    let joined = join(&mut client, &member);
    assert_eq!((joined.error_code, joined.generation_id), (NONE, 1));
    assert_eq!(joined.leader.as_str(), member);
    assert_eq!(joined.members.len(), 1);

    let bad_timeout = JoinGroupRequest::default()
        .with_group_id(group("g"))
        .with_session_timeout_ms(10)
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(text("range"))]);
    assert_eq!(client.call(5, &bad_timeout).error_code, INVALID_SESSION_TIMEOUT);
    let other_protocol = JoinGroupRequest::default()
        .with_group_id(group("g"))
        .with_session_timeout_ms(10_000)
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(text("roundrobin"))]);
    assert_eq!(client.call(2, &other_protocol).error_code, INCONSISTENT_GROUP_PROTOCOL);

    let sync = |generation, member: &str| {
        SyncGroupRequest::default()
            .with_group_id(group("g"))
            .with_generation_id(generation)
            .with_member_id(text(member))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(text(member))
                .with_assignment(Bytes::from_static(b"mine"))])
    };
    assert_eq!(client.call(3, &sync(7, &member)).error_code, ILLEGAL_GENERATION);
    assert_eq!(client.call(3, &sync(1, "nobody")).error_code, UNKNOWN_MEMBER_ID);
    let synced = client.call(3, &sync(1, &member));
    assert_eq!((synced.error_code, &synced.assignment[..]), (NONE, &b"mine"[..]));
    assert_eq!(client.call(3, &heartbeat(1, &member)).error_code, NONE);
    assert_eq!(client.call(3, &heartbeat(0, &member)).error_code, ILLEGAL_GENERATION);
    assert_eq!(client.call(3, &heartbeat(1, "nobody")).error_code, UNKNOWN_MEMBER_ID);

    // Commits: per partition, unknown topics and partitions are refused, the rest stored.
    let commit = |generation, member: &str| {
        OffsetCommitRequest::default()
            .with_group_id(group("g"))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(text(member))
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(text("t")))
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(5),
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(9)
                            .with_committed_offset(5),
                    ]),
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(text("missing")))
                    .with_partitions(vec![OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1)]),
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(text("__consumer_offsets")))
                    .with_partitions(vec![OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1)]),
            ])
    };
    let codes = |response: kafka_protocol::messages::OffsetCommitResponse| -> Vec<i16> {
        response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect()
    };
    assert_eq!(
        codes(client.call(8, &commit(1, &member))),
        [
            NONE,
            UNKNOWN_TOPIC_OR_PARTITION,
            UNKNOWN_TOPIC_OR_PARTITION,
            UNKNOWN_TOPIC_OR_PARTITION
        ]
    );
    let refused = codes(client.call(8, &commit(4, &member)));
    assert_eq!(refused[0], ILLEGAL_GENERATION);
    let refused = codes(client.call(8, &commit(1, "nobody")));
    assert_eq!(refused[0], UNKNOWN_MEMBER_ID);
    let refused = codes(client.call(8, &commit(-1, "")));
    assert_eq!(refused[0], UNKNOWN_MEMBER_ID, "simple commits need an empty group");

    // Only the accepted commit is stored.
    let fetched = client.call(
        7,
        &OffsetFetchRequest::default()
            .with_group_id(group("g"))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(text("t")))
                .with_partition_indexes(vec![0, 1])])),
    );
    let offsets: Vec<i64> = fetched.topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect();
    assert_eq!((fetched.error_code, offsets), (NONE, vec![5, -1]));

    // DeleteGroups needs an empty group; OffsetDelete an unassigned topic.
    let delete = || DeleteGroupsRequest::default().with_groups_names(vec![group("g")]);
    assert_eq!(client.call(2, &delete()).results[0].error_code, NON_EMPTY_GROUP);
    let described = client.call(5, &DescribeGroupsRequest::default().with_groups(vec![group("g")]));
    assert_eq!(described.groups[0].group_state.as_str(), "Stable");
    assert_eq!(described.groups[0].members.len(), 1);

    let leave = LeaveGroupRequest::default()
        .with_group_id(group("g"))
        .with_members(vec![
            MemberIdentity::default().with_member_id(text(&member)),
            MemberIdentity::default().with_member_id(text("nobody")),
        ]);
    let left = client.call(3, &leave);
    let codes: Vec<i16> = left.members.iter().map(|m| m.error_code).collect();
    assert_eq!(codes, [NONE, UNKNOWN_MEMBER_ID]);
    let described = client.call(5, &DescribeGroupsRequest::default().with_groups(vec![group("g")]));
    assert_eq!(described.groups[0].group_state.as_str(), "Empty");

    let offset_delete = OffsetDeleteRequest::default()
        .with_group_id(group("g"))
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(TopicName(text("t")))
            .with_partitions(vec![
                OffsetDeleteRequestPartition::default().with_partition_index(0)
            ])]);
    let deleted = client.call(0, &offset_delete);
    assert_eq!(
        (deleted.error_code, deleted.topics[0].partitions[0].error_code),
        (NONE, NONE)
    );
    assert_eq!(client.call(2, &delete()).results[0].error_code, NONE);
    assert_eq!(client.call(2, &delete()).results[0].error_code, GROUP_ID_NOT_FOUND);
    let described = client.call(5, &DescribeGroupsRequest::default().with_groups(vec![group("g")]));
    assert_eq!(described.groups[0].group_state.as_str(), "Dead");

    // The internal topic: hidden from "all topics", internal by name, not deletable.
    let all = client.call(12, &MetadataRequest::default().with_topics(None));
    assert!(all
        .topics
        .iter()
        .all(|t| t.name.as_ref().unwrap().0.as_str() != "__consumer_offsets"));
    let named = client.call(
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(text("__consumer_offsets"))))
        ])),
    );
    assert!(named.topics[0].is_internal);
    assert_eq!(named.topics[0].partitions.len(), 4, "2 per shard");
    let deleted = client.call(
        4,
        &DeleteTopicsRequest::default().with_topic_names(vec![TopicName(text("__consumer_offsets"))]),
    );
    assert_eq!(deleted.responses[0].error_code, INVALID_TOPIC_EXCEPTION);
}
