//! Authorization (`--authorizer acl`) against real clients and raw frames:
//! a principal limited to a prefix (librdkafka's and kafka-python's view),
//! deny over allow, DescribeAcls/DeleteAcls filters, and follower-only
//! requests (`replica_id` ≥ 0) refused to a client that is no broker; and
//! SCRAM users stored through the metadata group (AlterUserScramCredentials)
//! logging in with librdkafka. Every network call goes to 127.0.0.1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a test failure"
)]

mod common;

use common::{python_script_output, Engine, KafkaConnection};
use kafka_protocol::messages::{
    fetch_request::{FetchPartition, FetchTopic},
    metadata_request::MetadataRequestTopic,
    offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic},
    BrokerId, CreateAclsRequest, FetchRequest, MetadataRequest, OffsetForLeaderEpochRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;

/// The secured engine of these tests: admin (super user) and alice.
fn secured_engine(dir: &std::path::Path, extra: &[&str]) -> Engine {
    Engine::start_secured(dir, "admin:admin-secret\nalice:alice-secret\n", extra)
}

#[test]
fn a_principal_limited_to_a_prefix_works_there_and_nowhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let engine = secured_engine(dir.path(), &["--auto-create-topics"]);
    let bootstrap = engine.listener_addr("SASL").to_string();
    let (ok, output) = python_script_output("acl_client.py", &[&bootstrap, "acls"]);
    assert!(ok, "{output}\nengine log:\n{}", engine.log());
    assert!(output.contains("acl scenario ok"), "{output}");
}

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

#[test]
fn follower_requests_from_a_client_are_refused_and_it_sees_no_topics() {
    let dir = tempfile::tempdir().unwrap();
    // `--listen` (PLAINTEXT) authenticates no one: its clients are User:ANONYMOUS.
    let engine = secured_engine(dir.path(), &[]);
    let mut connection = KafkaConnection::connect(engine.bootstrap().parse().unwrap()).unwrap();

    let mut partition = FetchPartition::default();
    partition.partition = 0;
    partition.partition_max_bytes = 1 << 20;
    let mut fetched = FetchTopic::default();
    fetched.topic = topic("t");
    fetched.partitions = vec![partition];
    let mut fetch = FetchRequest::default();
    fetch.replica_id = BrokerId(1);
    fetch.max_wait_ms = 0;
    fetch.topics = vec![fetched];
    let answer = connection.request(12, &fetch).unwrap();
    assert_eq!(answer.error_code, CLUSTER_AUTHORIZATION_FAILED);
    assert_eq!(
        answer.responses[0].partitions[0].error_code,
        CLUSTER_AUTHORIZATION_FAILED
    );
    // Fetch v4 has no top-level error: the partition carries it.
    let answer = connection.request(4, &fetch).unwrap();
    assert_eq!(
        answer.responses[0].partitions[0].error_code,
        CLUSTER_AUTHORIZATION_FAILED
    );

    let mut epoch_partition = OffsetForLeaderPartition::default();
    epoch_partition.partition = 0;
    let mut epoch_topic = OffsetForLeaderTopic::default();
    epoch_topic.topic = topic("t");
    epoch_topic.partitions = vec![epoch_partition];
    let mut epochs = OffsetForLeaderEpochRequest::default();
    epochs.replica_id = BrokerId(1);
    epochs.topics = vec![epoch_topic];
    let answer = connection.request(4, &epochs).unwrap();
    assert_eq!(answer.topics[0].partitions[0].error_code, CLUSTER_AUTHORIZATION_FAILED);

    // A consumer fetch of a topic it may not read: TOPIC_AUTHORIZATION_FAILED.
    fetch.replica_id = BrokerId(-1);
    let answer = connection.request(12, &fetch).unwrap();
    assert_eq!(answer.error_code, 0);
    assert_eq!(answer.responses[0].partitions[0].error_code, TOPIC_AUTHORIZATION_FAILED);

    // Metadata names no topic it may not describe, and refuses a named one.
    let all = connection.request(12, &MetadataRequest::default()).unwrap();
    assert!(all.topics.is_empty(), "{:?}", all.topics);
    let mut named = MetadataRequest::default();
    let mut wanted = MetadataRequestTopic::default();
    wanted.name = Some(topic("t"));
    named.topics = Some(vec![wanted]);
    let answer = connection.request(12, &named).unwrap();
    assert_eq!(answer.topics[0].error_code, TOPIC_AUTHORIZATION_FAILED);

    // ACLs are changed only with Alter on the cluster.
    let create = connection.request(3, &CreateAclsRequest::default()).unwrap();
    assert!(create.results.is_empty());
    let mut creation = kafka_protocol::messages::create_acls_request::AclCreation::default();
    creation.resource_type = 2;
    creation.resource_name = StrBytes::from_static_str("t");
    creation.resource_pattern_type = 3;
    creation.principal = StrBytes::from_static_str("User:ANONYMOUS");
    creation.host = StrBytes::from_static_str("*");
    creation.operation = 2;
    creation.permission_type = 3;
    let mut create = CreateAclsRequest::default();
    create.creations = vec![creation];
    let answer = connection.request(3, &create).unwrap();
    assert_eq!(answer.results[0].error_code, CLUSTER_AUTHORIZATION_FAILED);
    assert!(
        engine.log().lines().all(|line| !line.contains("panicked")),
        "{}",
        engine.log()
    );
}

#[test]
fn transactions_need_write_on_their_transactional_id() {
    use kafka_protocol::messages::{
        EndTxnRequest, FindCoordinatorRequest, InitProducerIdRequest, ProducerId, TransactionalId,
    };
    const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    let dir = tempfile::tempdir().unwrap();
    // `--listen` (PLAINTEXT): User:ANONYMOUS, granted nothing.
    let engine = secured_engine(dir.path(), &[]);
    let mut connection = KafkaConnection::connect(engine.bootstrap().parse().unwrap()).unwrap();
    let id = TransactionalId(StrBytes::from_static_str("app"));

    let mut init = InitProducerIdRequest::default();
    init.transactional_id = Some(id.clone());
    init.transaction_timeout_ms = 60_000;
    let answer = connection.request(4, &init).unwrap();
    assert_eq!(answer.error_code, TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    assert_eq!(answer.producer_id, ProducerId(-1));

    let mut find = FindCoordinatorRequest::default();
    find.key_type = 1;
    find.key = StrBytes::from_static_str("app");
    let answer = connection.request(3, &find).unwrap();
    assert_eq!(answer.error_code, TRANSACTIONAL_ID_AUTHORIZATION_FAILED);

    let mut end = EndTxnRequest::default();
    end.transactional_id = id;
    end.producer_id = ProducerId(1);
    end.committed = true;
    let answer = connection.request(3, &end).unwrap();
    assert_eq!(answer.error_code, TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
}

#[test]
fn scram_users_stored_through_raft_log_in_with_librdkafka() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "admin:admin-secret\n").unwrap();
    let users = users.display().to_string();
    let engine = Engine::start_with_listeners(
        &[("SASL", "SASL_PLAINTEXT")],
        &[
            "--shards",
            "2",
            "--fsync",
            "never",
            "--auto-create-topics",
            "--sasl-users-file",
            &users,
        ],
    );
    let bootstrap = engine.listener_addr("SASL").to_string();
    let (ok, output) = python_script_output("acl_client.py", &[&bootstrap, "scram-users"]);
    assert!(ok, "{output}\nengine log:\n{}", engine.log());
    assert!(output.contains("scram users ok"), "{output}");
}
